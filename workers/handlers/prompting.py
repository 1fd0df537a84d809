"""Chapter 6's prompt lab: every chosen style on the chosen items, scored as each ends.

Generation goes through ``LLMClient``: SmolLM2 on this worker (seeded, so
self-consistency's samples are reproducible), or an OpenAI-compatible server when
``FP_LLM_BASE_URL`` is set (which samples with its own seeding).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from learn.playgrounds.prompting import PromptLabParams
from workers import modelcache
from workers.handlers import Job


class Backend:
    """The ``learn.lab.prompting.Complete`` this worker uses; ``device`` says where the
    last reply was made (cpu / cuda, or the server's host:port)."""

    def __init__(self) -> None:
        from workers.llm_client import LLMClient

        self.llm = LLMClient.from_env()
        self.where = self.llm.base_url or "SmolLM2 on this worker"
        self.device = modelcache.device() if not self.llm.remote else "remote"

    def __call__(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        temperature: float,
        seed: int,
        max_tokens: int,
    ) -> Any:
        from learn.lab.prompting import Reply

        done = self.llm.chat(messages, max_tokens=max_tokens, temperature=temperature, seed=seed)
        self.device = done.device
        return Reply(done.text, done.completion_tokens, done.ms, done.prompt_tokens)


def prompt_lab(p: PromptLabParams, job: Job) -> dict[str, Any]:
    from learn.lab.prompting import Settings, as_json, evaluate, pick_items, task_sets

    task = task_sets()[p.eval_set]
    items = pick_items(task, p.items, p.seed)
    settings = Settings(
        shots=p.shots,
        k=p.k,
        temperature=p.temperature,
        answer_tokens=p.answer_tokens,
        max_tokens=p.max_tokens,
        seed=p.seed,
        system=p.system_prompt or None,
        base=p.system_on,
    )
    complete = Backend()
    job.emit("log", message=f"{len(items)} items × {len(p.styles)} styles: {complete.where}")
    numbers = {item["id"]: i + 1 for i, item in enumerate(items)}

    def stream(r: Any) -> None:
        job.emit(
            "partial",
            row={
                "number": numbers[r.item],
                "item": r.item,
                "style": r.style,
                "parsed": r.parsed,
                "gold": r.gold,
                "correct": r.correct,
                "tokens": r.tokens,
                "ms": r.ms,
            },
        )

    started = time.perf_counter()
    results, summary = evaluate(
        task, items, p.styles, complete, settings, on_result=stream, emit=job.emit
    )
    total_s = time.perf_counter() - started
    most = {key: max(r[key] for r in summary) or 1 for key in ("mean_tokens", "mean_prompt_tokens")}
    charts = {  # the page's bar charts: bar lengths in % of the longest bar, labels pre-formatted
        "accuracy": [
            {"label": r["style"], "pct": 100 * r["accuracy"], "text": f"{r['accuracy']:.0%}"}
            for r in summary
        ],
        "tokens": [
            {
                "label": r["style"],
                "pct": 100 * r["mean_tokens"] / most["mean_tokens"],
                "text": f"{r['mean_tokens']:.1f}",
            }
            for r in summary
        ],
        "prompt": [
            {
                "label": r["style"],
                "pct": 100 * r["mean_prompt_tokens"] / most["mean_prompt_tokens"],
                "text": f"{r['mean_prompt_tokens']:.0f}",
            }
            for r in summary
        ],
    }
    by_item: dict[str, list[dict[str, Any]]] = {item["id"]: [] for item in items}
    for r in results:
        by_item[r.item].append(as_json(r))
    return {
        "eval_set": task.name,
        "title": task.title,
        "kind": task.kind,
        "labels": list(task.labels),
        "styles": summary,
        "charts": charts,
        "items": [
            {
                "number": i + 1,
                "id": item["id"],
                "text": item["text"],
                "gold": item["answer"],
                "runs": by_item[item["id"]],
            }
            for i, item in enumerate(items)
        ],
        "settings": {**p.model_dump(), "source": complete.where},
        "total_s": round(total_s, 2),
        "device": complete.device,
    }
