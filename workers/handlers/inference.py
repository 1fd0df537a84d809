"""Chapter 5's handlers: KV cache, paged KV, tiled attention, quantization, the weight
inspector, speculative decoding, sliding-window attention, mixture of experts.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import cache
from types import ModuleType
from typing import Any

from learn.lab.events import Emit, scaled_emit
from learn.lab.facts import SMOLLM2
from learn.playgrounds import PlaygroundError
from learn.playgrounds.inference import (
    KVCacheParams,
    MoEParams,
    PagedKVParams,
    QuantizeParams,
    SparseAttentionParams,
    SpeculativeParams,
    TiledAttentionParams,
    WeightInspectParams,
)
from workers import modelcache
from workers.handlers import Job
from workers.handlers.transformers import generation_summary, prompt_ids

MODE_WORDS = {"cache": "with the KV cache", "no_cache": "recomputing everything"}


def kv_cache(p: KVCacheParams, job: Job) -> dict[str, Any]:
    from learn.lab.decoding import kv_cache_comparison

    job.emit("progress", pct=2, message="Loading SmolLM2")
    model, tokenizer = modelcache.smollm2()
    ids = prompt_ids(p.prompt)
    n = p.max_new_tokens

    def relay(kind: str, /, **data: Any) -> None:
        if kind == "partial":
            done = data["step"] + 1 + (n if data["mode"] == "cache" else 0)
            job.emit(
                "progress",
                pct=100 * done / (2 * n),
                message=f"{MODE_WORDS[data['mode']]}: token {done} of {2 * n}",
            )
        job.emit(kind, **data)

    result = kv_cache_comparison(model, ids, n, tokenizer=tokenizer, emit=relay)
    prompt = len(ids)
    per_pos = result["cache_bytes_per_position"]
    return {
        "cache": generation_summary(result["cache"]),
        "no_cache": generation_summary(result["no_cache"]),
        "same_tokens": result["same_tokens"],
        "speedup": round(result["speedup"], 3),
        "cache_bytes_per_position": per_pos,
        "cache_bytes_by_position": [per_pos * (prompt + i + 1) for i in range(n)],
        "prompt_tokens": prompt,
        "device": result["device"],
    }


def paged_kv(p: PagedKVParams, job: Job) -> dict[str, Any]:
    import random

    from learn.lab.kvcache import KVCache
    from learn.lab.paged import OutOfBlocks, Request, simulate_paged

    rng = random.Random(p.seed)
    requests = [
        Request(
            prompt_tokens=rng.randint(16, 256) + (p.shared_prefix if i < p.sharers else 0),
            output_tokens=rng.randint(8, 256),
            arrival_step=rng.randint(0, 64),
            shares_prefix=i < p.sharers,
        )
        for i in range(p.requests)
    ]
    per_slot = KVCache.bytes_for(  # SmolLM2's K and V per token, fp32
        SMOLLM2.n_layers, SMOLLM2.n_kv_heads, SMOLLM2.head_dim, 1, 4
    )
    snapshot: dict[str, Any] = {}
    try:
        history = simulate_paged(
            requests,
            block_size=p.block_size,
            num_blocks=p.num_blocks,
            max_len=p.max_len,
            shared_prefix=p.shared_prefix,
            bytes_per_slot=per_slot,
            peak=snapshot,
            emit=scaled_emit(job.emit, 0, 50 if p.decode_concurrency else 100),
        )
    except OutOfBlocks as exc:
        raise PlaygroundError(
            f"The pool ran out: {exc}. Give it more blocks or serve fewer requests; "
            "a real server would make a request wait or preempt one."
        ) from exc
    peak = max(history, key=lambda s: s.allocated_slots)
    decode = paged_decode(p, job) if p.decode_concurrency else None
    return {
        "requests": [asdict(r) for r in requests],
        "steps": [asdict(s) for s in history],
        "peak": asdict(peak),
        "snapshot": snapshot,
        "waste_paged": peak.waste_slots / max(peak.allocated_slots, 1),
        "waste_contiguous": peak.contiguous_waste_slots / max(peak.contiguous_slots, 1),
        "bytes_per_slot": per_slot,
        "decode": decode,
        "device": decode["device"] if decode else "cpu",
    }


PAGED_OWNER_CELLS = 60_000  # steps x blocks of the block-occupancy picture, at most
PAGED_PROMPTS = (  # different lengths, so requests need different numbers of blocks
    "What is the capital of France?",
    "Write a haiku about autumn leaves falling in a quiet park at dusk.",
    "Explain gravity to a child.",
    "List three uses of a paper clip, one per line, and say which one is most surprising.",
    "Why is the sky blue?",
    "Give me a short recipe for pancakes.",
)


def paged_decode(p: PagedKVParams, job: Job) -> dict[str, Any]:
    """SmolLM2 serving 2 x N requests, N at a time, from a paged cache, for each N asked:
    tokens/s, KV bytes paged vs contiguous, and the largest N's blocks over its steps."""
    from learn.lab.decoding import generate
    from learn.lab.paged_decode import concurrency_sweep

    job.emit("progress", pct=50, message="Loading SmolLM2 for the real decode")
    model, _ = modelcache.smollm2()
    prompts = [prompt_ids(t) for t in PAGED_PROMPTS]
    n = p.decode_tokens
    peer = generate(model, prompts[0], n, stop_ids=())  # batch 1: what batching is measured by
    largest = max(p.decode_concurrency)
    rows = concurrency_sweep(
        model,
        prompts,
        p.decode_concurrency,
        n,
        rounds=2,
        vary_lengths=True,
        block_size=p.block_size,
        seed=p.seed,
        record_owners_for=largest,
        emit=scaled_emit(job.emit, 55, 100, "real decode"),
    )
    timeline = next(r for r in rows if r["concurrency"] == largest)
    steps = timeline.pop("timeline")
    per_request = timeline.pop("per_request")
    for row in rows:
        row.pop("timeline", None)
        row.pop("per_request", None)
        row["vs_generate_batch1"] = round(row["tokens_per_s"] / peer.tokens_per_s, 3)
    return {
        "rows": rows,
        "generate_tokens_per_s": round(peer.tokens_per_s, 2),
        "tokens": n,
        "block_size": p.block_size,
        "timeline": {
            "concurrency": largest,
            "num_blocks": timeline["num_blocks"],
            "requests": per_request,
            "batch": [s["batch"] for s in steps],
            "kv_bytes": [s["kv_bytes"] for s in steps],
            "contiguous_bytes": [s["contiguous_bytes"] for s in steps],
            "tokens_bytes": [s["tokens_held"] * timeline["bytes_per_slot"] for s in steps],
            # block -> request per step; left out when too many cells to send and draw
            "owners": [s["owners"] for s in steps]
            if len(steps) * timeline["num_blocks"] <= PAGED_OWNER_CELLS
            else None,
        },
        "device": rows[0]["device"],
        "dtype": rows[0]["dtype"],
    }


def _flash_kernel(device: str) -> ModuleType | None:
    """``learn.lab.flash_triton`` when ``device`` is a GPU and Triton imports, else None:
    on a CPU worker the kernel would only run under Triton's (slow) interpreter."""
    if not device.startswith("cuda"):
        return None
    try:
        from learn.lab import flash_triton
    except ImportError:
        return None
    return flash_triton


def tiled_attention(p: TiledAttentionParams, job: Job) -> dict[str, Any]:
    import torch

    from learn.lab.attention import measure, naive_attention, sdpa, tiled_attention

    flash = _flash_kernel(job.device)  # our Triton kernel, on a GPU with Triton installed
    methods = ("naive", "tiled", "sdpa", "triton") if flash else ("naive", "tiled", "sdpa")
    width = p.d * p.heads  # the model width, split into heads of p.d
    rows = []
    total = len(p.seq_lens) * len(methods)
    for i, n in enumerate(p.seq_lens):
        for j, method in enumerate(methods):
            done = len(methods) * i + j
            job.emit("progress", pct=100 * done / total, message=f"{method} at n={n}")
            if method == "triton":
                m = flash.measure(n, width, p.heads, job.device, causal=p.causal)
            else:
                m = measure(
                    method, n, width, p.heads, job.device, causal=p.causal, block_size=p.block_size
                )
            rows.append(asdict(m))
            job.emit("partial", row=rows[-1])
    g = torch.Generator().manual_seed(0)
    n = min(p.seq_lens)
    q, k, v = (torch.randn(1, p.heads, n, p.d, generator=g) for _ in range(3))
    reference = sdpa(q, k, v, p.causal)
    diffs = {
        "naive": float((naive_attention(q, k, v, p.causal) - reference).abs().max()),
        "tiled": float((tiled_attention(q, k, v, p.causal, p.block_size) - reference).abs().max()),
    }
    if flash:  # fp32 inputs: the GPU runs the kernel's dots in tf32, hence ~1e-3
        on = [t.to(job.device) for t in (q, k, v)]
        diffs["triton"] = float(
            (flash.flash_attention(*on, p.causal).cpu() - reference).abs().max()
        )
    return {
        "rows": rows,
        "max_abs_diff": diffs,
        "diff_at": n,
        "device": job.device,
        **p.model_dump(),
    }


def speculative(p: SpeculativeParams, job: Job) -> dict[str, Any]:
    from learn.lab.decoding import generate as decode
    from learn.lab.llama import truncated
    from learn.lab.speculative import speculative_draft_model, speculative_prompt_lookup

    job.emit("progress", pct=2, message="Loading SmolLM2")
    model, tokenizer = modelcache.smollm2()
    ids = prompt_ids(p.prompt)
    n = p.max_new_tokens
    job.emit("progress", pct=5, message="Plain greedy decoding (the reference)")
    plain = decode(model, ids, n, tokenizer=tokenizer)
    job.emit("progress", pct=35, message="Prompt-lookup speculation")

    def tagged(method: str) -> Emit:
        def fn(kind: str, /, **data: Any) -> None:
            job.emit(kind, method=method, **data) if kind == "partial" else job.emit(kind, **data)

        return fn

    lookup = speculative_prompt_lookup(
        model,
        ids,
        n,
        max(p.ngram, 3),  # fixed: the tail's last 3 tokens, down to ngram, as first written
        p.num_draft,
        adaptive=p.adaptive,
        min_ngram=p.ngram,
        tokenizer=tokenizer,
        emit=tagged("lookup"),
    )
    if p.draft == "fp16":
        label = "an fp16 copy of the model"
        draft = _fp16_draft(model)
    else:
        label = f"the first {p['draft_layers']} layers"
        draft = truncated(model, p.draft_layers)
    job.emit("progress", pct=65, message=f"Draft model: {label}")
    drafted = speculative_draft_model(
        model, draft, ids, n, min(p.num_draft, 8), tokenizer=tokenizer, emit=tagged("draft")
    )

    def summary(spec: Any) -> dict[str, Any]:
        out = asdict(spec)
        out["acceptance_rate"] = round(spec.acceptance_rate, 4)
        out["speedup"] = round(plain.total_ms / spec.total_ms, 3) if spec.total_ms else 0.0
        out["same_as_greedy"] = spec.tokens == plain.tokens
        out["pieces"] = [
            {"text": tokenizer.decode(step_tokens), "accepted": accepted}
            for step_tokens, accepted in _pieces(spec)
        ]
        decode_steps = spec.steps[1:]  # step 0 is the prefill
        out["longest_draft"] = max([s.drafted for s in decode_steps], default=0)
        out["speculated_steps"] = sum(s.drafted > 0 for s in decode_steps)
        return out

    return {
        "plain": generation_summary(plain),
        "lookup": summary(lookup),
        "draft": summary(drafted),
        "draft_label": label,
        "device": str(model.device),
    }


@cache
def _fp16_draft(model: Any) -> Any:
    """SmolLM2 in fp16, made once per worker: same tokenizer, half the bytes per step."""
    from learn.lab.llama import half_precision

    return half_precision(model)


def _pieces(spec: Any) -> list[tuple[list[int], bool]]:
    """Cut the output into runs: the drafted tokens each step kept (accepted) and the one
    token the target model added itself."""
    out, at = [], 0
    for step in spec.steps:
        if step.accepted:
            out.append((spec.tokens[at : at + step.accepted], True))
            at += step.accepted
        if at < len(spec.tokens):
            out.append((spec.tokens[at : at + 1], False))
            at += 1
    return out


def sparse_attention(p: SparseAttentionParams, job: Job) -> dict[str, Any]:
    from learn.lab.quantbench import HELD_OUT
    from learn.lab.sparse import window_mask, window_quality

    job.emit("progress", pct=2, message="Loading SmolLM2")
    model = modelcache.smollm2()[0]
    text = p.text or HELD_OUT.read_text()
    ids = prompt_ids(text, chat=False, limit=512)
    result = window_quality(model, ids, sorted(set(p.windows)), sinks=p.sinks, emit=job.emit)
    shown = 24  # a corner of the mask, for the picture
    result["masks"] = {
        str(w): window_mask(shown, w, p.sinks).int().tolist() for w in sorted(set(p.windows))
    }
    result["sink_count"] = p.sinks
    return result


def moe(p: MoEParams, job: Job) -> dict[str, Any]:
    from learn.lab.moe import moe_demo

    result = moe_demo(
        p.tokens,
        p.dim,
        p.experts,
        p.top_k,
        router_skew=p.router_skew,
        capacity_factor=p.capacity_factor,
        seed=p.seed,
        device=job.device,
        emit=job.emit,
    )
    return {**result, "stats": asdict(result["stats"]), "top_k": p.top_k}


def quantize(p: QuantizeParams, job: Job) -> dict[str, Any]:
    from learn.lab.quantbench import bench_minilm, bench_smollm2

    if p.model == "minilm":
        rows = bench_minilm(p.variants, device=job.device, sentences=p.sentences, emit=job.emit)
    else:
        rows = bench_smollm2(
            p.variants,
            device=job.device,
            group_size=p.group_size,
            new_tokens=p.new_tokens,
            emit=job.emit,
        )
    by = {r["variant"]: r for r in rows if not r["skipped"]}
    # PyTorch's one-scale-per-tensor int8 next to ours (per token, after SmoothQuant)
    pair = [by[v] for v in ("int8-dynamic", "int8-smooth") if v in by]
    outliers = {"problem": pair[0], "fix": pair[1]} if len(pair) == 2 else None
    return {
        "model": p.model,
        "rows": rows,
        "group_size": p.group_size,
        "device": job.device,
        "outliers": outliers,
    }


MATRICES = {
    "smollm2": {
        "attention-in": "layers.{}.attention.wqkv",
        "attention-out": "layers.{}.attention.wo",
        "mlp-in": "layers.{}.feed_forward.w13",
        "mlp-out": "layers.{}.feed_forward.w2",
    },
    "minilm": {
        "attention-in": "encoder.layer.{}.attention.self.query",
        "attention-out": "encoder.layer.{}.attention.output.dense",
        "mlp-in": "encoder.layer.{}.intermediate.dense",
        "mlp-out": "encoder.layer.{}.output.dense",
    },
}


def weight_inspect(p: WeightInspectParams, job: Job) -> dict[str, Any]:
    from learn.lab.quality import inspect_weight
    from learn.lab.quantized_models import linear_weight

    job.emit("progress", pct=10, message="Loading the model")
    model = modelcache.smollm2()[0] if p.model == "smollm2" else modelcache.encoder().model
    name = MATRICES[p.model][p.matrix].format(p.layer)
    found = linear_weight(model.get_submodule(name))
    assert found is not None, name
    report = inspect_weight(found[0], p.scheme, p.group_size)
    return {**report, "model": p.model, "name": name, "device": "cpu"}
