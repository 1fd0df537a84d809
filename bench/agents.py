"""Chapter 6, part 2 in numbers: the agent task set with tools and without, constrained
calls and free ones; structured output (``bench.structured``) and the prompt lab
(``bench.prompting``) when those are present.

    python bench/agents.py [--tasks 32] [--skip-structured] [--skip-prompting]

The agent runs ``learn.lab.agent``'s loop on SmolLM2-135M-Instruct in this process (the
same loop the worker runs), greedy, at most 3 steps per task with tools and one answer
without. The search tool here is lexical (our BM25 over the lessons' paragraphs), not
the worker's hybrid retriever over pgvector, so that the bench needs no database.
Ends with ``RESULT <json>``.

Goals (from the chapter 6 issue): success with tools ≥ success without + 30 points
(constrained calls on both sides); constrained vs free calls reported as measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIGS = (  # (name, tools, constrained)
    ("tools, constrained", True, True),
    ("tools, free text", True, False),
    ("no tools, constrained", False, True),
    ("no tools, free text", False, False),
)
GOAL_POINTS = 0.30


def course_search() -> Callable[[str], str]:
    """Lexical search over the lessons: BM25 over paragraphs, and from the best five the
    one sentence nearest the query (``best_passage``), as the worker's tool does."""
    import django

    django.setup()
    from learn.knowledge import course_lessons
    from learn.lab.agent import best_passage
    from learn.lab.bm25 import BM25, tokens

    paragraphs = [
        p.strip() for lesson in course_lessons() for p in lesson.text.split("\n\n") if p.strip()
    ]
    index = BM25([tokens(p) for p in paragraphs])

    def search(query: str) -> str:
        top = index.top(tokens(query), 5, positive_only=True)
        found = [paragraphs[int(i)] for i in top.ids]
        return best_passage(found, query) if found else "nothing found"

    return search


def measure(tasks: int = 32, device: str | None = None) -> dict[str, Any]:
    """Success rate per configuration on the first ``tasks`` tasks of the set."""
    import torch

    from learn.lab import agent
    from learn.lab.constrained import json_constraint
    from learn.lab.decoding import generate
    from learn.lab.embeddings import pick_device
    from learn.lab.llama_gguf import chat_ids, load_smollm2

    device = device or pick_device()
    model, tokenizer = load_smollm2(device)
    mask_ms = 0.0

    def complete(messages: list[dict[str, str]], schema: dict[str, Any] | None) -> agent.Reply:
        nonlocal mask_ms
        constraint = json_constraint(schema, tokenizer) if schema is not None else None
        out = generate(
            model,
            chat_ids(tokenizer, messages),
            agent.STEP_TOKENS,
            tokenizer=tokenizer,
            constraint=constraint,
        )
        mask_ms += constraint.mask_ms if constraint is not None else 0.0
        return agent.Reply(out.text, len(out.tokens), out.total_ms)

    items = agent.task_set()["tasks"][:tasks]
    toolsets = {True: agent.standard_tools(agent.task_today(), course_search()), False: {}}
    rows: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    with torch.inference_mode():
        for name, tools, constrained in CONFIGS:
            solved, steps, failed, ms, by_kind = 0, 0, 0, 0.0, {}
            for item in items:
                run = agent.run_agent(
                    item["task"],
                    toolsets[tools],
                    complete,
                    constrained=constrained,
                    max_steps=3 if tools else 1,
                )
                ok = agent.is_correct(run.answer, item)
                solved += ok
                steps += len(run.steps)
                failed += sum(s.failed for s in run.steps)
                ms += run.ms
                kind = by_kind.setdefault(item["kind"], [0, 0])
                kind[0] += ok
                kind[1] += 1
            rows[name] = {
                "tools": tools,
                "constrained": constrained,
                "solved": solved,
                "rate": round(solved / len(items), 4),
                "failed_steps": failed,
                "steps": steps,
                "ms_per_task": round(ms / len(items), 1),
                "by_kind": {k: round(v[0] / v[1], 4) for k, v in by_kind.items()},
            }
            print(f"  {name}: {solved}/{len(items)}", file=sys.stderr, flush=True)
    gain = rows["tools, constrained"]["rate"] - rows["no tools, constrained"]["rate"]
    return {
        "tasks": len(items),
        "configs": rows,
        "tools_gain_points": round(gain, 4),
        "constrained_gain_points": round(
            rows["tools, constrained"]["rate"] - rows["tools, free text"]["rate"], 4
        ),
        "goal_tools_gain": GOAL_POINTS,
        "goal_met": gain >= GOAL_POINTS,
        "mask_ms": round(mask_ms, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "device": device,
    }


def _other(module: str, **kwargs: Any) -> dict[str, Any]:
    """Another bench's ``measure()``, or a note that it is not available."""
    try:
        bench = __import__(f"bench.{module}", fromlist=["measure"])
    except ImportError as exc:
        return {"available": False, "note": f"not available ({exc})"}
    try:
        return {"available": True, **bench.measure(**kwargs)}
    except TypeError:  # its parameters changed: run it as it stands
        return {"available": True, **bench.measure()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=32, help="the first K tasks of the set")
    parser.add_argument("--skip-structured", action="store_true")
    parser.add_argument("--skip-prompting", action="store_true")
    args = parser.parse_args()

    result: dict[str, Any] = {"agents": measure(args.tasks)}
    result["structured"] = (
        {"available": False, "note": "skipped"} if args.skip_structured else _other("structured")
    )
    result["prompting"] = (
        {"available": False, "note": "skipped"}
        if args.skip_prompting
        else _other("prompting", items=10)
    )

    a = result["agents"]
    print(f"\nAgent task set: {a['tasks']} tasks on {a['device']}, {a['seconds']} s")
    print(f"{'configuration':<24}{'solved':>8}{'rate':>8}{'failed steps':>14}{'ms/task':>10}")
    for name, row in a["configs"].items():
        failed = f"{row['failed_steps']}/{row['steps']}"
        print(
            f"{name:<24}{row['solved']:>8}{row['rate']:>8.0%}{failed:>14}{row['ms_per_task']:>10.0f}"
        )
    verdict = "met" if a["goal_met"] else "MISSED"
    print(f"tools vs none (constrained): {a['tools_gain_points']:+.0%}, goal +30 points: {verdict}")
    print(f"constrained vs free calls (with tools): {a['constrained_gain_points']:+.0%}")
    s = result["structured"]
    if s.get("available"):
        print(f"Structured output: valid rate {s.get('valid_rate')}, time ratio {s.get('ratio')}")
    else:
        print(f"Structured output: {s['note']}")
    p = result["prompting"]
    if p.get("available"):
        for name, block in p.get("sets", {}).items():
            styles = ", ".join(f"{r.get('style')} {r.get('accuracy')}" for r in block["styles"])
            print(f"Prompt lab, {name}: {styles}")
    else:
        print(f"Prompt lab: {p['note']}")
    print("RESULT " + json.dumps(result, default=str))


if __name__ == "__main__":
    main()
