"""Chapter 6's agent: SmolLM2 on this worker runs ``learn.lab.agent``'s loop, with the
course retriever (``workers.retrieval``) as its search tool.

The model is always the in-process SmolLM2 (``local_chat``), never a remote server:
constrained calls mask the model's logits with the call's JSON schema
(``learn.lab.constrained``), which needs the logits here.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

from learn.playgrounds import PlaygroundError
from learn.playgrounds.agents import AgentParams
from workers import modelcache
from workers.handlers import Job

EVAL_SECONDS = 540  # the evaluation stops taking new tasks after this (time limit: 600)
EVAL_STEPS = 3  # per task in the evaluation: one call, one answer, one spare
CONFIGS = (  # (name, tools, constrained), the evaluation's four columns
    ("tools, constrained", True, True),
    ("tools, free text", True, False),
    ("no tools, constrained", False, True),
    ("no tools, free text", False, False),
)


class _Model:
    """``complete`` and ``count_tokens`` for the lab loop, over SmolLM2 on this worker."""

    def __init__(self) -> None:
        self.model, self.tokenizer = modelcache.smollm2()
        self.device = str(self.model.device)
        self.mask_ms = 0.0

    def count_tokens(self, messages: list[dict[str, str]]) -> int:
        from learn.lab.llama_gguf import chat_ids

        return len(chat_ids(self.tokenizer, messages))

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any] | None) -> Any:
        from learn.lab.agent import STEP_TOKENS, Reply
        from learn.lab.constrained import json_constraint
        from workers.llm_client import local_chat

        constraint = json_constraint(schema, self.tokenizer) if schema is not None else None
        done = local_chat(messages, max_tokens=STEP_TOKENS, temperature=0.0, constraint=constraint)
        if constraint is not None:
            self.mask_ms += constraint.mask_ms
        return Reply(done.text, done.completion_tokens, done.ms)


def _search(job: Job) -> Callable[[str], str]:
    """The course search tool: the five best hybrid-ranked chunks of the lessons, and from
    them the sentence nearest the query (``best_passage``). The course is ingested on
    first use only."""
    from learn import queries
    from learn.lab.agent import ToolError, best_passage
    from workers import retrieval

    collection: list[str] = []

    def search(query: str) -> str:
        if not query.strip():
            raise ToolError("give some words to search the course for")
        if not collection:
            collection.append(retrieval.course_collection(job.emit))
        found = retrieval.retrieve(collection[0], "recursive", query[:300], n=5)
        if not found.hybrid:
            return "nothing found"
        ranked = [chunk for chunk, _ in found.hybrid]
        texts = {row["id"]: row["text"] for row in queries.chunks_of_ids(ranked)}
        return best_passage([texts[c] for c in ranked if c in texts], query)

    return search


def _tools(enabled: bool, today: dt.date, job: Job) -> dict[str, Any]:
    from learn.lab.agent import standard_tools

    return standard_tools(today, _search(job)) if enabled else {}


def agent(p: AgentParams, job: Job) -> dict[str, Any]:
    return evaluate(p, job) if p.mode == "evaluate" else run(p, job)


def run(p: AgentParams, job: Job) -> dict[str, Any]:
    from learn.lab.agent import is_correct, run_agent, task_set, task_today

    # your own task when you wrote one; otherwise the built-in task picked
    item = None if p.task else next(t for t in task_set()["tasks"] if t["id"] == p.task_id)
    task = item["task"] if item else p.task
    # a built-in task is asked on the set's fixed "today"; your own on today's date (UTC)
    today = task_today() if item else dt.datetime.now(dt.UTC).date()
    job.emit("progress", pct=2, message="Loading SmolLM2")
    model = _Model()
    job.emit("progress", pct=10, message=f"Step 1 of at most {p.max_steps}")

    def relay(kind: str, /, **data: Any) -> None:
        if kind == "partial":
            index = data["step"]["index"]
            job.emit("progress", pct=10 + 90 * index / p.max_steps, message=f"Step {index} done")
        job.emit(kind, **data)

    try:
        done = run_agent(
            task,
            _tools(p.tools, today, job),
            model.complete,
            constrained=p.constrained,
            max_steps=p.max_steps,
            budget=p.memory_budget,
            count_tokens=model.count_tokens,
            emit=relay,
        )
    except ValueError as exc:  # e.g. a prompt over the model's context
        raise PlaygroundError(str(exc)) from exc
    return {
        **done.as_dict(),
        "task_id": item["id"] if item else None,
        "expected": item["answer"] if item else None,
        "correct": is_correct(done.answer, item) if item else None,
        "today": today.isoformat(),
        "mask_ms": round(model.mask_ms, 1),
        "device": model.device,
    }


def evaluate(p: AgentParams, job: Job) -> dict[str, Any]:
    """The first ``eval_tasks`` tasks under each configuration, streamed as table rows."""
    from learn.lab.agent import is_correct, run_agent, task_set, task_today

    items = task_set()["tasks"][: p.eval_tasks]
    today = task_today()
    model = _Model()
    toolsets = {True: _tools(True, today, job), False: {}}
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    stopped_early = False
    for i, item in enumerate(items):
        if time.perf_counter() - started > EVAL_SECONDS:
            stopped_early = True
            job.emit("log", message=f"Stopped after {i} tasks: the evaluation's time is up")
            break
        job.emit("progress", pct=100 * i / len(items), message=f"Task {i + 1} of {len(items)}")
        row: dict[str, Any] = {"id": item["id"], "kind": item["kind"], "task": item["task"]}
        row["expected"], row["cells"] = item["answer"], []
        for name, tools, constrained in CONFIGS:
            done = run_agent(
                item["task"],
                toolsets[tools],
                model.complete,
                constrained=constrained,
                max_steps=EVAL_STEPS if tools else 1,
                budget=p.memory_budget,
                count_tokens=model.count_tokens,
            )
            row["cells"].append(
                {
                    "config": name,
                    "answer": done.answer,
                    "correct": is_correct(done.answer, item),
                    "steps": len(done.steps),
                    "failed_steps": sum(s.failed for s in done.steps),
                    "calls": [s.call for s in done.steps],
                    "tokens": done.tokens,
                    "ms": round(done.ms, 1),
                }
            )
        rows.append(row)
        job.emit("partial", row=row, summary=_summary(rows))
    return {
        "mode": "evaluate",
        "today": today.isoformat(),
        "configs": [name for name, _, _ in CONFIGS],
        "rows": rows,
        "summary": _summary(rows),
        "stopped_early": stopped_early,
        "mask_ms": round(model.mask_ms, 1),
        "device": model.device,
    }


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration: tasks solved, success rate, steps that failed, mean ms per task."""
    out = []
    for c, (name, tools, constrained) in enumerate(CONFIGS):
        cells = [row["cells"][c] for row in rows]
        solved = sum(cell["correct"] for cell in cells)
        out.append(
            {
                "config": name,
                "tools": tools,
                "constrained": constrained,
                "tasks": len(cells),
                "solved": solved,
                "rate": round(solved / len(cells), 4) if cells else 0.0,
                "failed_steps": sum(cell["failed_steps"] for cell in cells),
                "steps": sum(cell["steps"] for cell in cells),
                "ms_per_task": round(sum(cell["ms"] for cell in cells) / max(len(cells), 1), 1),
            }
        )
    return out
