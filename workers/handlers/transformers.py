"""Chapter 4's handlers: attention inside SmolLM2, positional encodings, generation.

SmolLM2 is loaded once per worker process (``modelcache.smollm2``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from learn.playgrounds import PlaygroundError
from learn.playgrounds.transformers import AttentionParams, GenerateParams, PositionsParams
from workers import modelcache
from workers.handlers import Job

MAX_PROMPT_TOKENS = 1_024
ATTENTION_TOKENS = 160  # (heads, T, T) weights go to the browser: keep T small
TEMPERATURES = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)  # the attention page's slider stops


def prompt_ids(text: str, *, chat: bool = True, limit: int = MAX_PROMPT_TOKENS) -> list[int]:
    """SmolLM2's token ids for ``text`` (in the chat template unless ``chat=False``)."""
    from learn.lab.llama_gguf import chat_prompt

    _, tokenizer = modelcache.smollm2()
    ids = chat_prompt(tokenizer, text) if chat else tokenizer.encode(text).ids
    if len(ids) > limit:
        raise PlaygroundError(
            f"The text is {len(ids)} tokens; this playground takes {limit}. Shorten it."
        )
    return ids


def generation_summary(gen: Any) -> dict[str, Any]:
    """A ``Generation`` as JSON, its timings rounded to microseconds."""
    out = asdict(gen)
    out["token_ms"] = [round(ms, 3) for ms in gen.token_ms]
    for key in ("ttft_ms", "total_ms", "tokens_per_s", "decode_tokens_per_s"):
        out[key] = round(out[key], 3)
    return out


def generate(p: GenerateParams, job: Job) -> dict[str, Any]:
    from learn.lab.decoding import generate as decode

    job.emit("progress", pct=2, message="Loading SmolLM2")
    model, tokenizer = modelcache.smollm2()
    ids = prompt_ids(p.prompt)
    job.emit("progress", pct=5, message=f"Prompt: {len(ids)} tokens; generating")
    steps = iter(range(1, p.max_new_tokens + 1))

    def relay(kind: str, /, **data: Any) -> None:
        if kind == "partial":
            step = next(steps)
            pct = 5 + 95 * step / p.max_new_tokens
            job.emit("progress", pct=pct, message=f"token {step} of {p.max_new_tokens}")
        job.emit(kind, **data)

    gen = decode(
        model,
        ids,
        p.max_new_tokens,
        temperature=p.temperature,
        top_k=p.top_k or None,
        top_p=p.top_p if p.top_p < 1 else None,
        seed=p.seed,
        tokenizer=tokenizer,
        emit=relay,
    )
    return {**generation_summary(gen), "prompt": p.prompt}


def attention(p: AttentionParams, job: Job) -> dict[str, Any]:
    from learn.lab.llama import inspect_next_token

    job.emit("progress", pct=5, message="Loading SmolLM2")
    model, tokenizer = modelcache.smollm2()
    ids = prompt_ids(p.prompt, chat=p.chat, limit=ATTENTION_TOKENS)
    job.emit("progress", pct=30, message=f"One forward pass over {len(ids)} tokens")
    view = inspect_next_token(model, tokenizer, ids, p.layer, temperatures=TEMPERATURES)
    cfg = model.config
    return {
        "tokens": view.tokens,
        "layer": p.layer,
        "heads": cfg.n_heads,
        "kv_heads": cfg.n_kv_heads,
        "group": cfg.n_heads // cfg.n_kv_heads,
        "attention": [[[round(v, 4) for v in row] for row in head] for head in view.attention],
        "next": {
            "ids": [t for t, _, _ in view.top],
            "tokens": [text for _, text, _ in view.top],
            "probs": {str(t): [round(q, 5) for q in probs] for t, probs in view.probs_at.items()},
            "temperatures": list(TEMPERATURES),
        },
        "device": view.device,
    }


def positions(p: PositionsParams, job: Job) -> dict[str, Any]:
    from learn.lab.attention import position_similarity, rope_scores_by_distance
    from learn.lab.attention import sinusoidal_positions as sinusoidal

    pe = sinusoidal(p.positions, p.dims)  # (n, d)
    shown = min(p.positions, 128)
    return {
        "positions": p.positions,
        "dims": p.dims,
        "encoding": [[round(float(v), 3) for v in row] for row in pe[:shown]],
        "similarity": [
            [round(float(v), 3) for v in row] for row in position_similarity(pe[:shown])
        ],
        "rope_by_distance": [
            round(float(v), 4)
            for v in rope_scores_by_distance(p.dims, p.positions - 1, p.rope_base)
        ],
        "rope_base": p.rope_base,
        "device": "cpu",
    }
