"""The prompt lab's numbers: accuracy, new tokens, prompt tokens and time per prompt style
on each built-in eval set, with SmolLM2-135M-Instruct, as measured (no goal).

    python bench/prompting.py [--items 10] [--sets sentiment arithmetic] [--device cpu]

Loads SmolLM2 in this process and runs ``learn.lab.prompting.evaluate`` with our decode
loop (the code a worker runs; no Django, no queue). Ends with ``RESULT <json>``.
``measure()`` is also imported by ``bench/agents.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learn.lab.prompting import BASE_STYLES, Reply, Settings, evaluate, pick_items, task_sets


def _model(device: str | None) -> tuple[Any, Any, str]:
    from learn.lab.embeddings import pick_device
    from learn.lab.llama_gguf import load_smollm2

    device = device or pick_device()
    model, tokenizer = load_smollm2(device)
    return model, tokenizer, device


def measure(
    *,
    items: int = 10,
    sets: Sequence[str] = ("sentiment", "arithmetic"),
    styles: Sequence[str] = BASE_STYLES,
    settings: Settings | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Every style on the first ``items`` of each set's seeded shuffle. Returns
    ``{"model", "device", "items", "settings", "sets": {name: {"styles": [per-style
    summary rows], "seconds"}}}``; accuracy in 0-1, tokens per item, ms per item."""
    from learn.lab.decoding import generate
    from learn.lab.llama_gguf import chat_ids

    settings = settings or Settings(shots=3, k=3, answer_tokens=8, max_tokens=96)
    model, tokenizer, device = _model(device)

    def complete(
        messages: Sequence[Mapping[str, str]], *, temperature: float, seed: int, max_tokens: int
    ) -> Reply:
        ids = chat_ids(tokenizer, messages)
        gen = generate(
            model, ids, max_tokens, temperature=temperature, seed=seed, tokenizer=tokenizer
        )
        return Reply(gen.text, len(gen.tokens), gen.total_ms, gen.prompt_tokens)

    complete([{"role": "user", "content": "Hi"}], temperature=0.0, seed=0, max_tokens=2)  # warm
    out: dict[str, Any] = {}
    for name in sets:
        task = task_sets()[name]
        started = time.perf_counter()
        _, summary = evaluate(
            task, pick_items(task, items, settings.seed), styles, complete, settings
        )
        out[name] = {"styles": summary, "seconds": round(time.perf_counter() - started, 2)}
    return {
        "model": "SmolLM2-135M-Instruct",
        "device": device,
        "items": items,
        "settings": {
            "shots": settings.shots,
            "k": settings.k,
            "temperature": settings.temperature,
            "answer_tokens": settings.answer_tokens,
            "max_tokens": settings.max_tokens,
            "seed": settings.seed,
        },
        "sets": out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10, help="items per set")
    parser.add_argument("--sets", nargs="+", default=["sentiment", "arithmetic"])
    parser.add_argument("--styles", nargs="+", default=list(BASE_STYLES))
    parser.add_argument("--max-tokens", type=int, default=96, help="new tokens for reasoning")
    parser.add_argument("--k", type=int, default=3, help="self-consistency samples")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    args = parser.parse_args()
    settings = Settings(shots=3, k=args.k, answer_tokens=8, max_tokens=args.max_tokens)
    result = measure(
        items=args.items, sets=args.sets, styles=args.styles, settings=settings, device=args.device
    )
    print(f"SmolLM2-135M-Instruct on {result['device']}, {args.items} items per set")
    head = (
        f"{'set':<11} {'style':<17} {'accuracy':>8} {'new tok':>8} {'prompt tok':>10} "
        f"{'ms/item':>8}"
    )
    print(head)
    print("-" * len(head))
    for name, body in result["sets"].items():
        for row in body["styles"]:
            print(
                f"{name:<11} {row['style']:<17} {row['accuracy']:>8.2f} {row['mean_tokens']:>8.1f} "
                f"{row['mean_prompt_tokens']:>10.0f} {row['mean_ms']:>8.0f}"
            )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
