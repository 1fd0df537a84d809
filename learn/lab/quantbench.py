"""Quantized-model benchmarks: each precision's size, speed and quality against fp32.

One function per model. Each runs the chosen variants in turn on one device and emits a
``partial`` event with the row as soon as that variant is measured, so a table and a chart
can fill in while the rest run. Rows are plain dicts (JSON-able)::

    {variant, label, weight_bytes, size_ratio, convert_s, speed, speed_unit, speedup,
     quality: {...}, device, skipped}

``skipped`` holds a reason when a variant cannot run on this device (fp16 on a CPU).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from learn.lab.events import Emit, no_emit, scaled_emit
from learn.lab.quality import agreement, kl_divergence, perplexity
from learn.lab.quantized_models import VARIANTS, activation_absmax, quantized_copy, weight_bytes
from learn.lab.smoothquant import folded_int8_bert
from learn.lab.timing import best_of
from learn.lab.vindex.recall import recall_at_k


@cache
def paragraphs(limit: int = 600) -> tuple[str, ...]:
    """Paragraphs of Python's documentation topics (ships with Python), 80-1,000 chars."""
    import pydoc_data.topics

    found = []
    for topic in sorted(pydoc_data.topics.topics):
        for block in pydoc_data.topics.topics[topic].split("\n\n"):
            text = " ".join(block.split())
            if 80 <= len(text) <= 1_000:
                found.append(text)
    return tuple(found[:limit])


CPU_ONLY = ("int8-dynamic", "int8-smooth")  # int8 × int8 matmuls: CPU kernels
CALIBRATION = 64  # texts (from the end of ``paragraphs``, never scored) to calibrate on


def calibration_texts() -> list[str]:
    """The paragraphs ``int8-smooth`` measures activation ranges on: the last ones, which
    the quality measures (the first ≤ 512) never use."""
    return list(paragraphs()[-CALIBRATION:])


def _skip_reason(variant: str, device: str) -> str | None:
    if VARIANTS[variant].needs_cuda and device != "cuda":
        return "fp16 matmuls need a CUDA device; this worker has none"
    if variant in CPU_ONLY and device != "cpu":
        return "the dynamic int8 layers (PyTorch's and ours) run on the CPU only"
    return None


def _recall_at(reference: np.ndarray, other: np.ndarray, queries: int, k: int = 10) -> float:
    """Share of fp32's top-k neighbours the variant's embeddings find, over ``queries``."""
    queries, k = min(queries, len(reference)), min(k, len(reference) - 1)
    ref_top = np.argsort(-(reference[:queries] @ reference.T), axis=1)[:, 1 : k + 1]
    other_top = np.argsort(-(other[:queries] @ other.T), axis=1)[:, 1 : k + 1]
    return recall_at_k(other_top, ref_top, k)


TIMED_TEXTS = 64  # MiniLM: texts in the timed batches (the first of those scored)
ROUNDS = 3  # timed runs of each side; the best counts


def token_batches(encoder: Any, texts: list[str], batch_size: int) -> list[dict[str, torch.Tensor]]:
    """``texts`` tokenized and padded once, as ``Encoder.encode`` batches them (longest
    first): the model's inputs, so that a timing covers the model and nothing else."""
    ids = encoder.tokenizer(
        list(texts), truncation=True, max_length=encoder.max_length, return_attention_mask=False
    )["input_ids"]
    ids = sorted(ids, key=len, reverse=True)
    pad_id = encoder.tokenizer.pad_token_id or 0
    out = []
    for b in range(0, len(ids), batch_size):
        rows = ids[b : b + batch_size]
        width = len(rows[0])
        x = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows])  # (B, T)
        mask = (torch.arange(width) < torch.tensor([len(r) for r in rows])[:, None]).long()
        out.append({"input_ids": x, "attention_mask": mask, "token_type_ids": torch.zeros_like(x)})
    return out


@torch.inference_mode()
def forward_all(model: nn.Module, batches: list[dict[str, torch.Tensor]], device: str) -> None:
    """Run every batch through ``model`` and bring the pooled vectors back to the CPU
    (which also waits for a GPU to finish)."""
    for batch in batches:
        inputs = {k: v.to(device) for k, v in batch.items()}
        hidden = model(**inputs).last_hidden_state.float()  # (B, T, d)
        m = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        ((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)).cpu()  # (B, d), as encode pools


def paired_timing(
    fns: list[Callable[[], object]], rounds: int = ROUNDS, clock: Callable[[], float] | None = None
) -> list[float]:
    """Best seconds of each of ``fns`` over ``rounds`` rounds, one call of each per round
    (after one untimed warm-up call each), so that load on the machine hits them alike."""
    clock = clock or time.perf_counter
    for fn in fns:
        fn()  # warm-up: first-call allocations, kernel selection, thread pool start
    best = [float("inf")] * len(fns)
    for _ in range(max(rounds, 1)):
        for i, fn in enumerate(fns):
            start = clock()
            fn()
            best[i] = min(best[i], clock() - start)
    return best


def bench_minilm(
    variants: list[str],
    *,
    device: str = "cpu",
    sentences: int = 256,
    queries: int = 50,
    timed: int = TIMED_TEXTS,
    rounds: int = ROUNDS,
    emit: Emit = no_emit,
) -> list[dict[str, Any]]:
    """all-MiniLM-L6-v2 at each precision: sentences/s, cosine to fp32, recall@10.

    Quality is measured on ``sentences`` paragraphs of Python's docs: mean and minimum
    cosine between each paragraph's fp32 and quantized embedding, and recall@10 of the
    fp32 neighbours for the first ``queries`` paragraphs.

    Speed: the first ``timed`` paragraphs, tokenized and padded once (batches of 32),
    through the model alone; each variant is timed in ``rounds`` rounds alternating with
    fp32 (both warmed up first, best round of each), and its ``speedup`` is fp32's time
    over its own in those same rounds, so a busy moment on the machine slows both sides.
    """
    from learn.lab.embeddings import Encoder

    texts = list(paragraphs())[:sentences]
    encoder = Encoder(device=device)
    base_model = encoder.model
    batches = token_batches(encoder, texts[:timed], batch_size=32)

    def calibrate(model: nn.Module) -> None:  # int8-smooth: run the fp32 copy on the CPU
        encoder.model, encoder.device = model, "cpu"
        encoder.encode(calibration_texts(), batch_size=32)

    rows: list[dict[str, Any]] = []
    reference: np.ndarray | None = None
    fp32: tuple[nn.Module, str] | None = None
    for variant, target, step in _runnable(variants, device, "MiniLM", rows, emit):
        if variant == "int8-smooth":  # SmoothQuant folded into the weights, then fbgemm
            convert_s, model = best_of(lambda: folded_int8_minilm(base_model.cpu(), calibrate), 1)
        else:  # int4 de-quantizes per call on big batches: the float matmul is faster there
            convert_s, model = _convert(
                base_model.cpu(), variant, target, skip=("pooler",), fused=False
            )
        encoder.model, encoder.device = model, target
        scoring = scaled_emit(step, 10, 50, f"embedding {len(texts)} texts")
        vectors = encoder.encode(texts, batch_size=32, emit=scoring)
        if reference is None:
            reference, fp32 = vectors, (model, target)
        n = len(batches)
        step("progress", pct=55, message=f"timing {n} batch{'es' * (n != 1)} against fp32")
        ref_model, ref_device = fp32 if fp32 is not None else (model, target)
        sides = [lambda m=model, d=target: forward_all(m, batches, d)]
        if ref_model is not model:  # fp32 alongside, in the same rounds
            sides.append(lambda m=ref_model, d=ref_device: forward_all(m, batches, d))
        seconds = paired_timing(sides, rounds)
        cos = np.sum(reference * vectors, axis=1)
        quality = {
            "cosine_mean": round(float(cos.mean()), 5),
            "cosine_min": round(float(cos.min()), 5),
            "recall_at_10": round(_recall_at(reference, vectors, queries), 4),
        }
        speedup = seconds[-1] / seconds[0]  # fp32's time / this variant's (1 for fp32)
        _measured(
            rows,
            emit,
            variant,
            target,
            model,
            convert_s,
            min(timed, len(texts)) / seconds[0],
            "sentences/s",
            quality,
            speedup=speedup,
        )
    encoder.model = base_model
    return rows


def folded_int8_minilm(model: nn.Module, calibrate: Callable[[nn.Module], object]) -> nn.Module:
    """MiniLM's ``int8-smooth``: activation ranges measured on the calibration texts,
    SmoothQuant's factors folded into the weights, PyTorch's one-op dynamic int8 (the
    FFN output per token); the pooler, unused by mean pooling, stays float
    (``learn.lab.smoothquant.folded_int8_bert``)."""
    fp32 = model.float().cpu().eval()
    return folded_int8_bert(fp32, activation_absmax(fp32, calibrate), skip=("pooler",))


REPORT_EVERY = 0.5  # seconds between progress events while a generation is timed
HELD_OUT = Path(__file__).parent / "data" / "heldout.txt"  # written for this project
BENCH_PROMPT = "Write a short story about a lighthouse keeper and her notebooks."


def bench_smollm2(
    variants: list[str],
    *,
    device: str = "cpu",
    group_size: int = 64,
    new_tokens: int = 32,
    emit: Emit = no_emit,
) -> list[dict[str, Any]]:
    """SmolLM2-135M-Instruct at each precision: tokens/s, perplexity, agreement, KL.

    Speed: greedy decoding of ``new_tokens`` after a fixed chat prompt (the end-of-turn
    token does not stop it), decode tokens per second, the better of two runs. Quality on
    ``heldout.txt``: its perplexity (exp of the mean next-token NLL), top-1 agreement with
    fp32's next-token choice and mean KL(fp32 ‖ variant) over its positions. Note: the fp32
    reference is itself the GGUF's de-quantized Q4_1/Q8_0 weights, the only copy this project
    ships.
    """
    from learn.lab.decoding import generate
    from learn.lab.llama_gguf import chat_prompt, load_llama, load_tokenizer

    tokenizer = load_tokenizer()
    text_ids = torch.tensor([tokenizer.encode(HELD_OUT.read_text()).ids])  # (1, T)
    prompt = chat_prompt(tokenizer, BENCH_PROMPT)
    base = load_llama("cpu", torch.float32)
    calibration = torch.tensor([tokenizer.encode(" ".join(calibration_texts())).ids[:512]])
    rows: list[dict[str, Any]] = []
    reference: torch.Tensor | None = None
    for variant, target, step in _runnable(variants, device, "SmolLM2", rows, emit):
        # weight-only: the packed decode kernels; int8-smooth: 8-bit activations through
        # torch._int_mm, as fbgemm's 7-bit ones cost SmolLM2 a few % of perplexity
        fused = variant != "int8-smooth"
        convert_s, model = _convert(
            base,
            variant,
            target,
            group_size=group_size,
            fused=fused,
            calibrate=lambda m: m(calibration),
        )
        with torch.inference_mode(), _per_block(model, step, 10, 60, "scoring held-out text"):
            logits = model(text_ids.to(target))[0, :-1].float().cpu()  # (T-1, vocab)
        targets = text_ids[0, 1:]
        if reference is None:
            reference = logits
        step("progress", pct=62, message="warming up")
        generate(model, prompt, 4, stop_ids=())  # warm-up
        timing = _per_token(step, 65, 100, new_tokens)
        run = generate(model, prompt, new_tokens, stop_ids=(), tokenizer=tokenizer, emit=timing)
        again = generate(model, prompt, new_tokens, stop_ids=())  # best of two: less noise
        quality = {
            "perplexity": round(perplexity(logits, targets), 4),
            "top1_agreement": round(agreement(reference, logits), 4),
            "kl_nats": round(kl_divergence(reference, logits), 5),
            "sample": run.text[:160],
        }
        speed = max(run.decode_tokens_per_s, again.decode_tokens_per_s)
        _measured(rows, emit, variant, target, model, convert_s, speed, "tokens/s", quality)
        del model
    return rows


def _runnable(
    variants: list[str], device: str, model: str, rows: list[dict[str, Any]], emit: Emit
) -> Iterator[tuple[str, str, Emit]]:
    """fp32 first (the reference), then the others: ``(variant, device to run it on, emit
    for this variant's share of the progress bar)``.

    Reports progress, and records (and emits) a skipped row for each variant this device
    cannot run.
    """
    order = ["fp32", *[v for v in variants if v != "fp32"]]
    for i, variant in enumerate(order):
        label = f"{model} in {VARIANTS[variant].label}"
        step = scaled_emit(emit, 100 * i / len(order), 100 * (i + 1) / len(order), label)
        step("progress", pct=0, message="converting the weights")
        reason = _skip_reason(variant, device)
        if reason:
            rows.append(_row(variant, device, skipped=reason))
            emit("partial", row=rows[-1])
            continue
        yield variant, "cpu" if variant in CPU_ONLY else device, step


@contextmanager
def _per_block(model: nn.Module, step: Emit, lo: float, hi: float, what: str) -> Iterator[None]:
    """Progress after each transformer block of a forward pass (``lo``-``hi`` % of ``step``):
    one pass over a long text through int4 layers on a CPU takes tens of seconds."""
    blocks = list(getattr(model, "layers", []))

    def hook(i: int) -> Callable[..., None]:
        def report(*_: Any) -> None:
            pct = lo + (hi - lo) * (i + 1) / len(blocks)
            step("progress", pct=pct, message=f"{what}: block {i + 1} of {len(blocks)}")

        return report

    handles = [block.register_forward_hook(hook(i)) for i, block in enumerate(blocks)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _per_token(step: Emit, lo: float, hi: float, total: int) -> Emit:
    """Progress as a timed generation makes its tokens (``lo``-``hi`` % of ``step``), at most
    every REPORT_EVERY seconds, so that reporting costs the timing next to nothing."""
    made = iter(range(1, total + 1))
    last = [0.0]

    def relay(kind: str, /, **data: Any) -> None:
        if kind != "partial":
            return
        n, now = next(made, total), time.perf_counter()
        if now - last[0] >= REPORT_EVERY or n == total:
            last[0] = now
            pct = lo + (hi - lo) * n / total
            step("progress", pct=pct, message=f"timing generation: token {n} of {total}")

    return relay


def _convert(
    model: nn.Module, variant: str, device: str, **options: Any
) -> tuple[float, nn.Module]:
    """``(seconds, quantized_copy(model, variant, **options) on device)``."""
    return best_of(lambda: quantized_copy(model, variant, **options).to(device), 1)


def _measured(
    rows: list[dict[str, Any]],
    emit: Emit,
    variant: str,
    device: str,
    model: nn.Module,
    convert_s: float,
    speed: float,
    speed_unit: str,
    quality: dict[str, Any],
    speedup: float | None = None,
) -> None:
    """Record a measured variant's row, with its ratios to fp32, and emit it. ``speedup``:
    measured against fp32 in the same rounds; without it, this speed over fp32's row's."""
    measured = {"convert_s": convert_s, "speed": speed, "speed_unit": speed_unit}
    row = _row(variant, device, weight_bytes=weight_bytes(model), quality=quality, **measured)
    if speedup is not None:
        row["speedup"] = round(speedup, 3)
    rows.append(row)
    _relative(rows)
    emit("partial", row=row)


def _row(variant: str, device: str, *, skipped: str | None = None, **measured: Any) -> dict:
    row = {
        "variant": variant,
        "label": VARIANTS[variant].label,
        "device": device,
        "skipped": skipped,
        "weight_bytes": None,
        "convert_s": None,
        "speed": None,
        "speed_unit": None,
        "quality": {},
    }
    row.update(measured)
    for key in ("convert_s", "speed"):
        if row[key] is not None:
            row[key] = round(float(row[key]), 4)
    return row


def _relative(rows: list[dict[str, Any]]) -> None:
    """Fill size_ratio (fp32 bytes / these bytes) and, where a row has none measured in
    pairs, speedup (this speed / fp32's)."""
    base = rows[0]
    for row in rows:
        if row["skipped"]:
            continue
        row["size_ratio"] = round(base["weight_bytes"] / row["weight_bytes"], 3)
        if row.get("speedup") is None:
            row["speedup"] = round(row["speed"] / base["speed"], 3)
