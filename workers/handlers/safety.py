"""Chapter 6, safety: prompt injection under each mitigation, and the PII redactor.

The injection run retrieves from a small poisoned collection (BM25 over its passages),
builds each variant's prompt (``learn.lab.injection``), lets SmolLM2 answer it (streamed,
greedy, so a run is repeatable), and judges what the user would be shown. The PII run
scores the redactor on the labelled sample, or redacts the learner's own text.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from learn.playgrounds import PlaygroundError
from learn.playgrounds.safety import InjectionParams, PiiParams
from workers import modelcache
from workers.handlers import Job


def injection(p: InjectionParams, job: Job) -> dict[str, Any]:
    from learn.lab import injection as lab
    from workers.llm_client import LLMClient, local_chat

    question, collection, attack, canary = p.poisoned()
    chosen = lab.retrieve(question, collection, p.k)
    passages = [collection[i] for i in chosen]
    attack_at = collection.index(attack)
    llm = LLMClient.from_env()
    answers: dict[str, Any] = {}  # prompt text -> Completion: "checked" reuses "plain"'s
    rows: list[dict[str, Any]] = []
    variants = [v for v in lab.VARIANTS if v in p.variants]  # plain before checked
    for n, variant in enumerate(variants):
        prompt = lab.build(variant, question, passages)
        job.emit(
            "progress",
            pct=100 * n / len(variants),
            message=f"{variant}: SmolLM2 answers ({n + 1} of {len(variants)})",
        )
        job.emit("partial", variant=variant, target="prompt", text=_shown(prompt))

        def relay(delta: str, variant: str = variant) -> None:
            job.emit("partial", variant=variant, target="answer", text=delta)

        key = repr(prompt.messages)
        note = ""
        if variant == "schema":
            if llm.remote:
                rows.append(
                    {
                        "variant": variant,
                        "prompt": asdict(prompt),
                        "skipped": "constrained decoding needs SmolLM2 on the worker; "
                        "FP_LLM_BASE_URL points at a server",
                    }
                )
                continue
            from learn.lab.constrained import json_constraint

            schema = {**lab.ANSWER_SCHEMA}
            schema["properties"] = {
                **schema["properties"],
                "sources": {
                    **schema["properties"]["sources"],
                    "items": {"type": "integer", "minimum": 1, "maximum": len(passages)},
                },
            }
            _, tokenizer = modelcache.smollm2()
            completion = local_chat(
                prompt.messages,
                max_tokens=p.max_new_tokens,
                constraint=json_constraint(schema, tokenizer),
                on_delta=relay,
            )
        elif key in answers:
            completion = answers[key]
            relay(completion.text)
        else:
            completion = llm.chat(prompt.messages, max_tokens=p.max_new_tokens, on_delta=relay)
        if variant == "checked":
            note = "the plain prompt's answer, checked against the passages before it is shown"
        answers[key] = completion
        judged = lab.verdict(variant, completion.text, passages, canary)
        rows.append(
            {
                "variant": variant,
                "prompt": asdict(prompt),
                "answer": asdict(completion),
                "note": note,
                **judged,
            }
        )
        job.emit("partial", variant=variant, target="verdict", took=judged["took"])
    document_calls = [asdict(c) for c in lab.tool_calls(attack)]
    return {
        "doc": p.doc,
        "question": question,
        "canary": canary,
        "attack": attack,
        "collection": collection,
        "retrieved": chosen,
        "attack_rank": chosen.index(attack_at) + 1 if attack_at in chosen else None,
        "passages": passages,
        "order_sentences": [attack[a:b].strip() for a, b in lab.orders(attack)],
        "document_calls": document_calls,
        "allowed_tools": list(lab.ALLOWED_TOOLS),
        "variants": rows,
        "took": {r["variant"]: r.get("took") for r in rows},
        "device": next((r["answer"]["device"] for r in rows if "answer" in r), modelcache.device()),
    }


def _shown(prompt: Any) -> str:
    return f"[system]\n{prompt.system}\n\n[user]\n{prompt.user}"


def pii(p: PiiParams, job: Job) -> dict[str, Any]:
    from learn.lab import pii as lab

    started = time.perf_counter()
    if p.text is None:
        samples = lab.sample()
        if set(p.kinds) != set(lab.KINDS):  # score only the kinds asked for
            samples = [{**s, "pii": [g for g in s["pii"] if g["kind"] in p.kinds]} for s in samples]
        scored = lab.score(samples, kinds=p.kinds)
        result: dict[str, Any] = {"source": "sample", **scored}
    else:
        red = lab.redact(p.text, p.kinds)
        if len(red.found) > 2_000:
            raise PlaygroundError("More than 2,000 finds: paste less text.")
        result = {
            "source": "own",
            "redacted": red.text,
            "counts": red.counts(),
            "samples": [
                {
                    "text": p.text,
                    "note": "",
                    "gold": [],
                    "found": [{**asdict(f), "status": "found"} for f in red.found],
                    "pieces": lab.pieces(p.text, [], red.found, labelled=False),
                }
            ],
        }
    result["kinds"] = list(p.kinds)
    result["ms"] = round(1000 * (time.perf_counter() - started), 2)
    result["device"] = "cpu"
    return result
