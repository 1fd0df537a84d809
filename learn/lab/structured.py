"""Structured output, measured: the same prompt answered freely and under a JSON-schema
grammar, each answer parsed and validated, with the cost of the masks.

``compare`` runs ``n`` pairs: answer ``i`` of each side samples with seed ``seed + i``, so
the two sides start from the same random draws and differ only by the mask. Both sides
see the same messages: the prompt, then the schema and a request for JSON only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from learn.lab.constrained import json_constraint
from learn.lab.decoding import generate
from learn.lab.events import Emit, no_emit
from learn.lab.json_schema import check_answer, instructions
from learn.lab.llama_gguf import chat_ids

SIDES = ("plain", "constrained")


@dataclass(frozen=True)
class Answer:
    side: str  # "plain" | "constrained"
    index: int
    seed: int
    text: str
    tokens: int  # new tokens, the stop token included
    ms: float  # wall time of the whole answer (prefill included)
    decode_ms: float  # of which after the first token (the prompt's prefill left out)
    ms_per_token: float  # decode_ms / (tokens - 1): the per-token cost masking adds to
    mask_ms: float  # of which computing and applying masks (0 for plain)
    stop_reason: str  # "stop_token" | "grammar" | "length"
    parses: bool
    valid: bool
    error: str
    buried: bool  # invalid as it stands, but a valid object can be cut out of the text


def answer(
    model: Any,
    tokenizer: Any,
    ids: list[int],
    schema: dict[str, Any],
    side: str,
    index: int,
    seed: int,
    max_new_tokens: int,
    temperature: float,
    *,
    emit: Emit = no_emit,
) -> Answer:
    """One answer of one side; emits ``partial`` text pieces with ``side`` and ``index``."""
    constraint = json_constraint(schema, tokenizer) if side == "constrained" else None

    def relay(kind: str, /, **data: Any) -> None:
        if kind == "partial" and data.get("text"):
            emit("partial", event="text", side=side, index=index, text=data["text"])

    gen = generate(
        model,
        ids,
        max_new_tokens,
        temperature=temperature,
        seed=seed,
        tokenizer=tokenizer,
        emit=relay,
        constraint=constraint,
    )
    check = check_answer(gen.text, schema)
    return Answer(
        side=side,
        index=index,
        seed=seed,
        text=gen.text,
        tokens=len(gen.tokens),
        ms=round(gen.total_ms, 2),
        decode_ms=round(sum(gen.token_ms[1:]), 2),
        ms_per_token=round(sum(gen.token_ms[1:]) / max(len(gen.tokens) - 1, 1), 3),
        mask_ms=round(constraint.mask_ms, 3) if constraint else 0.0,
        stop_reason=gen.stop_reason,
        parses=check.parses,
        valid=check.valid,
        error=check.error,
        buried=check.buried,
    )


def summarise(answers: list[Answer]) -> dict[str, dict[str, Any]]:
    """Per side: count, valid / parses / buried shares, tokens, ms per token, mask ms per
    token. Time per token is decode time over decode tokens, summed over the answers (long
    answers weigh more; each answer's first token, which carries the prefill, left out)."""
    out: dict[str, dict[str, Any]] = {}
    for side in SIDES:
        mine = [a for a in answers if a.side == side]
        n, tokens = len(mine), sum(a.tokens for a in mine)
        decode_tokens = sum(max(a.tokens - 1, 0) for a in mine)
        decode_ms = sum(a.decode_ms for a in mine)
        out[side] = {
            "n": n,
            "valid": sum(a.valid for a in mine),
            "valid_share": round(sum(a.valid for a in mine) / n, 4) if n else 0.0,
            "parses_share": round(sum(a.parses for a in mine) / n, 4) if n else 0.0,
            "buried_share": round(sum(a.buried for a in mine) / n, 4) if n else 0.0,
            "cut_off": sum(a.stop_reason == "length" for a in mine),
            "tokens": tokens,
            "ms_per_token": round(decode_ms / decode_tokens, 3) if decode_tokens else 0.0,
            "mask_ms_per_token": round(sum(a.mask_ms for a in mine) / tokens, 4) if tokens else 0.0,
        }
    return out


def compare(
    model: Any,
    tokenizer: Any,
    schema: dict[str, Any],
    prompt: str,
    n: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    *,
    emit: Emit = no_emit,
) -> dict[str, Any]:
    """``n`` free answers and ``n`` constrained ones, interleaved (pair i shares a seed).

    Emits ``partial`` events: ``event="start"`` (side, index), ``"text"`` (each new piece)
    and ``"done"`` (the answer's fields); and ``progress``. Raises ValueError when the
    engine rejects the schema. Returns answers, per-side summary, overhead and device.
    """
    json_constraint(schema, tokenizer)  # the engine's verdict before any generation
    ids = chat_ids(tokenizer, instructions(prompt, schema))
    answers: list[Answer] = []
    for i in range(n):
        for s, side in enumerate(SIDES):
            emit("progress", pct=100 * (2 * i + s) / (2 * n), message=f"{side} answer {i + 1}")
            emit("partial", event="start", side=side, index=i)
            a = answer(
                model,
                tokenizer,
                ids,
                schema,
                side,
                i,
                seed + i,
                max_new_tokens,
                temperature,
                emit=emit,
            )
            answers.append(a)
            emit("partial", event="done", **asdict(a))
    summary = summarise(answers)
    plain, constrained = summary["plain"]["ms_per_token"], summary["constrained"]["ms_per_token"]
    return {
        "answers": [asdict(a) for a in answers],
        "summary": summary,
        "overhead": round(constrained / plain, 3) if plain else None,
        "prompt_tokens": len(ids),
        "device": str(model.device),
    }
