"""Structured output's goals, measured with the worker's own code on SmolLM2-135M-Instruct.

    python bench/structured.py [--n 3] [--max-new-tokens 128] [--device cpu]

For each built-in example schema (learn.lab.json_schema.EXAMPLES) and its prompt: ``n``
free answers and ``n`` answers under llguidance's mask (learn.lab.structured.compare,
the function the playground's handler calls), temperature 0.7. Reports per schema and in
all: the valid-JSON rate of each side, decode ms per token of each side, the mask's own
ms per token, and the ratio. Ends with ``RESULT <json>``.

Goals (issue 12): constrained valid rate 100%; constrained time per token ≤ 1.3× plain.
No database or queue: the lab only, so ``measure()`` can be imported (bench/agents.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GOAL_RATIO = 1.3


def measure(
    n: int = 3, max_new_tokens: int = 128, temperature: float = 0.7, device: str | None = None
) -> dict[str, Any]:
    """Valid rate and time per token, constrained vs plain, over the example schemas.

    Returns {"schemas": {key: summary}, "valid_rate": {"plain", "constrained"},
    "ms_per_token": {"plain", "constrained", "mask"}, "ratio", "mask_ratio", "goals", "device"}:
    ``ratio`` is constrained ÷ plain decode ms per token (both measured); ``mask_ratio`` is
    (plain + mask) ÷ plain, the same overhead from the mask's own timing, less noisy.
    """
    from learn.lab.embeddings import pick_device
    from learn.lab.json_schema import EXAMPLES
    from learn.lab.llama_gguf import load_smollm2
    from learn.lab.structured import Answer, compare, summarise

    model, tokenizer = load_smollm2(device or pick_device())
    compare(model, tokenizer, EXAMPLES["person"]["schema"], "Warm up.", 1, 8, 0.0, 0)
    per_schema: dict[str, Any] = {}
    every: list[Answer] = []
    for key, example in EXAMPLES.items():
        result = compare(
            model, tokenizer, example["schema"], example["prompt"], n, max_new_tokens,
            temperature, seed=0,
        )  # fmt: skip
        answers = [Answer(**a) for a in result["answers"]]
        every += answers
        per_schema[key] = result["summary"]
    total = summarise(every)
    plain, constrained = total["plain"], total["constrained"]
    ratio = constrained["ms_per_token"] / plain["ms_per_token"]
    mask_ratio = (plain["ms_per_token"] + constrained["mask_ms_per_token"]) / plain["ms_per_token"]
    return {
        "schemas": per_schema,
        "answers_per_side": len(every) // 2,
        "valid_rate": {"plain": plain["valid_share"], "constrained": constrained["valid_share"]},
        "ms_per_token": {
            "plain": plain["ms_per_token"],
            "constrained": constrained["ms_per_token"],
            "mask": constrained["mask_ms_per_token"],
        },
        "ratio": round(ratio, 3),
        "mask_ratio": round(mask_ratio, 3),
        "goals": {
            "constrained_valid_100pct": constrained["valid_share"] == 1.0,
            "overhead_le_1_3x": ratio <= GOAL_RATIO,
        },
        "device": str(model.device),
    }


def table(result: dict[str, Any]) -> str:
    """The side-by-side table the script prints."""
    lines = [
        f"{'schema':<10} {'valid plain':>12} {'valid constr.':>14} "
        f"{'ms/tok plain':>13} {'ms/tok constr.':>15} {'mask ms/tok':>12}"
    ]
    rows = {**result["schemas"], "ALL": None}
    for key, s in rows.items():
        if s is None:
            v, ms = result["valid_rate"], result["ms_per_token"]
            cells = (v["plain"], v["constrained"], ms["plain"], ms["constrained"], ms["mask"])
        else:
            p, c = s["plain"], s["constrained"]
            cells = (
                p["valid_share"], c["valid_share"], p["ms_per_token"], c["ms_per_token"],
                c["mask_ms_per_token"],
            )  # fmt: skip
        lines.append(
            f"{key:<10} {cells[0]:>12.0%} {cells[1]:>14.0%} {cells[2]:>13.2f} "
            f"{cells[3]:>15.2f} {cells[4]:>12.3f}"
        )
    met = "met" if result["goals"]["overhead_le_1_3x"] else "MISSED"
    valid = "met" if result["goals"]["constrained_valid_100pct"] else "MISSED"
    lines.append(
        f"constrained / plain time per token: {result['ratio']:.3f}x (goal <= {GOAL_RATIO}x: "
        f"{met}); from the mask's own timing: {result['mask_ratio']:.3f}x"
    )
    lines.append(f"constrained valid rate 100%: {valid}; device {result['device']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3, help="answers per side per schema")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda if present)")
    args = parser.parse_args()
    result = measure(args.n, args.max_new_tokens, device=args.device)
    print(table(result))
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
