"""Handlers of the transformer playgrounds (chapters 4-5) and the quantization lab.

SmolLM2 is loaded once per worker process (``modelcache.smollm2``); every handler records
the device its numbers were measured on.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import cache
from typing import Any

from learn.lab.events import Emit, scaled_emit
from learn.models import Run
from workers import modelcache

MAX_PROMPT_TOKENS = 1_024
ATTENTION_TOKENS = 160  # (heads, T, T) weights go to the browser: keep T small


def _prompt(text: str, *, chat: bool = True, limit: int = MAX_PROMPT_TOKENS) -> list[int]:
    from learn.lab.llama import chat_prompt
    from workers.tasks import PlaygroundError

    _, tokenizer = modelcache.smollm2()
    ids = chat_prompt(tokenizer, text) if chat else tokenizer.encode(text).ids
    if len(ids) > limit:
        raise PlaygroundError(
            f"The text is {len(ids)} tokens; this playground takes {limit}. Shorten it."
        )
    return ids


def _generation(gen: Any) -> dict[str, Any]:
    out = asdict(gen)
    out["token_ms"] = [round(ms, 3) for ms in gen.token_ms]
    for key in ("ttft_ms", "total_ms", "tokens_per_s", "decode_tokens_per_s"):
        out[key] = round(out[key], 3)
    return out


def generate(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.generation import generate as decode

    p = run.params
    emit("progress", pct=2, message="Loading SmolLM2")
    model, tokenizer = modelcache.smollm2()
    ids = _prompt(p["prompt"])
    emit("progress", pct=5, message=f"Prompt: {len(ids)} tokens; generating")
    steps = iter(range(1, p["max_new_tokens"] + 1))

    def relay(kind: str, /, **data: Any) -> None:
        if kind == "partial":
            step = next(steps)
            emit("progress", pct=5 + 95 * step / p["max_new_tokens"], message=f"token {step}")
        emit(kind, **data)

    gen = decode(
        model,
        ids,
        p["max_new_tokens"],
        temperature=p["temperature"],
        top_k=p["top_k"] or None,
        top_p=p["top_p"] if p["top_p"] < 1 else None,
        seed=p["seed"],
        tokenizer=tokenizer,
        emit=relay,
    )
    return {**_generation(gen), "prompt": p["prompt"]}


def attention(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    import torch

    p = run.params
    emit("progress", pct=5, message="Loading SmolLM2")
    model, tokenizer = modelcache.smollm2()
    ids = _prompt(p["prompt"], chat=p["chat"], limit=ATTENTION_TOKENS)
    emit("progress", pct=30, message=f"One forward pass over {len(ids)} tokens")
    with torch.inference_mode():
        x = torch.tensor([ids], device=model.device)
        logits, weights = model.forward_with_attention(x, p["layer"])  # (1,T,V), (1,nh,T,T)
    last = logits[0, -1].float()
    temperatures = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
    top = last.topk(20).indices
    probs = {
        str(t): [round(float(v), 5) for v in (last / t).softmax(-1)[top]] for t in temperatures
    }
    cfg = model.config
    return {
        "tokens": [tokenizer.decode([t], skip_special_tokens=False) for t in ids],
        "layer": p["layer"],
        "heads": cfg.n_heads,
        "kv_heads": cfg.n_kv_heads,
        "group": cfg.n_heads // cfg.n_kv_heads,
        "attention": [
            [[round(float(v), 4) for v in row] for row in head] for head in weights[0].float().cpu()
        ],
        "next": {
            "ids": top.tolist(),
            "tokens": [tokenizer.decode([t], skip_special_tokens=False) for t in top.tolist()],
            "probs": probs,
            "temperatures": temperatures,
        },
        "device": str(model.device),
    }


def positions(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.attention import position_similarity, rope_scores_by_distance
    from learn.lab.attention import sinusoidal_positions as sinusoidal

    p = run.params
    pe = sinusoidal(p["positions"], p["dims"])  # (n, d)
    shown = min(p["positions"], 128)
    return {
        "positions": p["positions"],
        "dims": p["dims"],
        "encoding": [[round(float(v), 3) for v in row] for row in pe[:shown]],
        "similarity": [
            [round(float(v), 3) for v in row] for row in position_similarity(pe[:shown])
        ],
        "rope_by_distance": [
            round(float(v), 4)
            for v in rope_scores_by_distance(p["dims"], p["positions"] - 1, p["rope_base"])
        ],
        "rope_base": p["rope_base"],
        "device": "cpu",
    }


def kv_cache(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.generation import kv_cache_comparison

    p = run.params
    emit("progress", pct=2, message="Loading SmolLM2")
    model, tokenizer = modelcache.smollm2()
    ids = _prompt(p["prompt"])
    n = p["max_new_tokens"]

    def relay(kind: str, /, **data: Any) -> None:
        if kind == "partial":
            done = data["step"] + 1 + (n if data["mode"] == "cache" else 0)
            emit("progress", pct=100 * done / (2 * n), message=f"{data['mode']}: token {done}")
        emit(kind, **data)

    result = kv_cache_comparison(model, ids, n, tokenizer=tokenizer, emit=relay)
    prompt = len(ids)
    per_pos = result["cache_bytes_per_position"]
    return {
        "cache": _generation(result["cache"]),
        "no_cache": _generation(result["no_cache"]),
        "same_tokens": result["same_tokens"],
        "speedup": round(result["speedup"], 3),
        "cache_bytes_per_position": per_pos,
        "cache_bytes_by_position": [per_pos * (prompt + i + 1) for i in range(n)],
        "prompt_tokens": prompt,
        "device": result["device"],
    }


def paged_kv(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    import random

    from learn.lab.generation import KVCache, OutOfBlocks, Request, simulate_paged
    from workers.tasks import PlaygroundError

    p = run.params
    rng = random.Random(p["seed"])
    requests = [
        Request(
            prompt_tokens=rng.randint(16, 256) + (p["shared_prefix"] if i < p["sharers"] else 0),
            output_tokens=rng.randint(8, 256),
            arrival_step=rng.randint(0, 64),
            shares_prefix=i < p["sharers"],
        )
        for i in range(p["requests"])
    ]
    per_slot = KVCache.bytes_for(30, 3, 64, 1, 4)  # SmolLM2's K and V per token, fp32
    snapshot: dict[str, Any] = {}
    try:
        history = simulate_paged(
            requests,
            block_size=p["block_size"],
            num_blocks=p["num_blocks"],
            max_len=p["max_len"],
            shared_prefix=p["shared_prefix"],
            bytes_per_slot=per_slot,
            peak=snapshot,
            emit=scaled_emit(emit, 0, 100),
        )
    except OutOfBlocks as exc:
        raise PlaygroundError(
            f"The pool ran out: {exc}. Give it more blocks or serve fewer requests; "
            "a real server would make a request wait or preempt one."
        ) from exc
    peak = max(history, key=lambda s: s.allocated_slots)
    return {
        "requests": [asdict(r) for r in requests],
        "steps": [asdict(s) for s in history],
        "peak": asdict(peak),
        "snapshot": snapshot,
        "waste_paged": peak.waste_slots / max(peak.allocated_slots, 1),
        "waste_contiguous": peak.contiguous_waste_slots / max(peak.contiguous_slots, 1),
        "bytes_per_slot": per_slot,
        "device": "cpu",
    }


def tiled_attention(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    import torch

    from learn.lab.attention import measure, naive_attention, sdpa, tiled_attention

    p = run.params
    rows = []
    total = len(p["seq_lens"]) * 3
    for i, n in enumerate(p["seq_lens"]):
        for j, method in enumerate(("naive", "tiled", "sdpa")):
            emit("progress", pct=100 * (3 * i + j) / total, message=f"{method} at n={n}")
            m = measure(
                method,
                n,
                p["d"] * p["heads"],  # the model width, split into heads of p["d"]
                p["heads"],
                device,
                causal=p["causal"],
                block_size=p["block_size"],
            )
            rows.append(asdict(m))
            emit("partial", row=rows[-1])
    g = torch.Generator().manual_seed(0)
    n = min(p["seq_lens"])
    q, k, v = (torch.randn(1, p["heads"], n, p["d"], generator=g) for _ in range(3))
    reference = sdpa(q, k, v, p["causal"])
    diffs = {
        "naive": float((naive_attention(q, k, v, p["causal"]) - reference).abs().max()),
        "tiled": float(
            (tiled_attention(q, k, v, p["causal"], p["block_size"]) - reference).abs().max()
        ),
    }
    return {"rows": rows, "max_abs_diff": diffs, "diff_at": n, "device": device, **p}


def speculative(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.generation import generate as decode
    from learn.lab.generation import speculative_draft_model, speculative_prompt_lookup
    from learn.lab.llama import truncated

    p = run.params
    emit("progress", pct=2, message="Loading SmolLM2")
    model, tokenizer = modelcache.smollm2()
    ids = _prompt(p["prompt"])
    n = p["max_new_tokens"]
    emit("progress", pct=5, message="Plain greedy decoding (the reference)")
    plain = decode(model, ids, n, tokenizer=tokenizer)
    emit("progress", pct=35, message="Prompt-lookup speculation")

    def tagged(method: str) -> Emit:
        def fn(kind: str, /, **data: Any) -> None:
            emit(kind, method=method, **data) if kind == "partial" else emit(kind, **data)

        return fn

    lookup = speculative_prompt_lookup(
        model, ids, n, p["ngram"], p["num_draft"], tokenizer=tokenizer, emit=tagged("lookup")
    )
    if p.get("draft", "fp16") == "fp16":
        label = "an fp16 copy of the model"
        draft = _fp16_draft(model)
    else:
        label = f"the first {p['draft_layers']} layers"
        draft = truncated(model, p["draft_layers"])
    emit("progress", pct=65, message=f"Draft model: {label}")
    drafted = speculative_draft_model(
        model, draft, ids, n, min(p["num_draft"], 8), tokenizer=tokenizer, emit=tagged("draft")
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
        return out

    return {
        "plain": _generation(plain),
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


def sparse_attention(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.quantbench import HELD_OUT
    from learn.lab.sparse import window_mask, window_quality

    p = run.params
    emit("progress", pct=2, message="Loading SmolLM2")
    model = modelcache.smollm2()[0]
    text = p.get("text") or HELD_OUT.read_text()
    ids = _prompt(text, chat=False, limit=512)
    result = window_quality(model, ids, sorted(set(p["windows"])), sinks=p["sinks"], emit=emit)
    shown = 24  # a corner of the mask, for the picture
    result["masks"] = {
        str(w): window_mask(shown, w, p["sinks"]).int().tolist() for w in sorted(set(p["windows"]))
    }
    result["sink_count"] = p["sinks"]
    return result


def moe(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.moe import moe_demo

    p = run.params
    result = moe_demo(
        p["tokens"],
        p["dim"],
        p["experts"],
        p["top_k"],
        router_skew=p["router_skew"],
        capacity_factor=p["capacity_factor"],
        seed=p["seed"],
        device=device,
        emit=emit,
    )
    return {**result, "stats": asdict(result["stats"]), "top_k": p["top_k"]}


def quantize(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.quantbench import bench_minilm, bench_smollm2

    p = run.params
    if p["model"] == "minilm":
        rows = bench_minilm(p["variants"], device=device, sentences=p["sentences"], emit=emit)
    else:
        rows = bench_smollm2(
            p["variants"],
            device=device,
            group_size=p["group_size"],
            new_tokens=p["new_tokens"],
            emit=emit,
        )
    return {"model": p["model"], "rows": rows, "group_size": p["group_size"], "device": device}


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


def weight_inspect(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.quantize import inspect_weight, linear_weight

    p = run.params
    emit("progress", pct=10, message="Loading the model")
    model = modelcache.smollm2()[0] if p["model"] == "smollm2" else modelcache.encoder().model
    name = MATRICES[p["model"]][p["matrix"]].format(p["layer"])
    found = linear_weight(model.get_submodule(name))
    assert found is not None, name
    report = inspect_weight(found[0], p["scheme"], p["group_size"])
    return {**report, "model": p["model"], "name": name, "device": "cpu"}


def mcts(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.mcts import mcts as search
    from learn.lab.mcts import play, winner

    p = run.params
    found = search(p["board"], p["simulations"], p["c"], p["seed"], emit=emit)
    after = play(p["board"], found.move, found.player)
    return {
        **asdict(found),
        "board": p["board"],
        "after": after,
        "winner": winner(after),
        "device": "cpu",
    }
