"""Chapter 6, structured output: free vs grammar-constrained answers from SmolLM2.

Always SmolLM2 on this worker, even when ``FP_LLM_BASE_URL`` points elsewhere: masking
needs the logits of every step, which a remote chat API does not hand out.
"""

from __future__ import annotations

from typing import Any

from learn.playgrounds import PlaygroundError
from learn.playgrounds.serving import CHAT_MODEL
from learn.playgrounds.structured import StructuredParams
from workers import modelcache
from workers.handlers import Job


def structured_output(p: StructuredParams, job: Job) -> dict[str, Any]:
    from learn.lab.constrained import engine_version
    from learn.lab.structured import compare

    job.emit("progress", pct=1, message="Loading SmolLM2 and the structured-output engine")
    model, tokenizer = modelcache.smollm2()
    try:
        result = compare(
            model,
            tokenizer,
            p.answer_schema,
            p.prompt,
            p.n,
            p.max_new_tokens,
            p.temperature,
            p.seed,
            emit=job.emit,
        )
    except ValueError as exc:  # the engine refused a schema the form let through
        raise PlaygroundError(str(exc)) from exc
    return {
        **result,
        "schema": p.answer_schema,
        "prompt": p.prompt,
        "temperature": p.temperature,
        "max_new_tokens": p.max_new_tokens,
        "model": CHAT_MODEL,
        "engine": f"llguidance {engine_version()}",
    }
