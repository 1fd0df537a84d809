"""Chapter 6, structured output: free vs grammar-constrained answers from SmolLM2.

Always SmolLM2 on this worker, even when ``FP_LLM_BASE_URL`` points elsewhere: masking
needs the logits of every step, which a remote chat API does not hand out.
"""

from __future__ import annotations

from typing import Any

from learn.playgrounds import PlaygroundError
from learn.playgrounds.serving import CHAT_MODEL, CONTEXT_TOKENS
from learn.playgrounds.structured import MAX_PROMPT_TOKENS, StructuredParams
from workers import modelcache
from workers.handlers import Job


def structured_output(p: StructuredParams, job: Job) -> dict[str, Any]:
    from learn.lab.constrained import engine_version
    from learn.lab.llama_gguf import chat_ids
    from learn.lab.structured import compare, instructions

    job.emit("progress", pct=1, message="Loading SmolLM2 and the structured-output engine")
    model, tokenizer = modelcache.smollm2()
    n_prompt = len(tokenizer.encode(p.prompt, add_special_tokens=False).ids)
    if n_prompt > MAX_PROMPT_TOKENS:
        raise PlaygroundError(
            f"The prompt is {n_prompt} SmolLM2 tokens; shorten it to at most {MAX_PROMPT_TOKENS}."
        )
    total = len(chat_ids(tokenizer, instructions(p.prompt, p.answer_schema))) + p.max_new_tokens
    if total > CONTEXT_TOKENS:
        raise PlaygroundError(
            f"The prompt with the schema and {p.max_new_tokens} new tokens needs {total} "
            f"tokens; SmolLM2 here takes {CONTEXT_TOKENS}. Shorten the schema or the prompt."
        )
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
