"""The OpenAI-compatible API's handlers: SmolLM2 chat completions and MiniLM embeddings.

The web side (learn/openai_api.py) relays these runs' events: each ``partial`` carries
one piece of the answer's ``text``, in order, as the decode loop makes it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from learn.playgrounds.serving import EMBED_MODEL, ChatCompletionParams, EmbeddingsParams
from workers import modelcache
from workers.handlers import Job
from workers.llm_client import ContextTooLong, local_chat


def chat_completion(p: ChatCompletionParams, job: Job) -> dict[str, Any]:
    """Always SmolLM2 on this worker: /v1 must not follow FP_LLM_BASE_URL (it may be /v1)."""
    messages = [m.model_dump() for m in p.messages]
    try:
        done = local_chat(
            messages,
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            seed=p.seed,
            on_delta=lambda text: job.emit("partial", text=text),
        )
    except ContextTooLong as exc:  # the web side answers 400 with this code
        job.emit("log", message=str(exc), code=exc.code)
        raise
    out = asdict(done)
    out["ms"], out["first_token_ms"] = round(done.ms, 3), round(done.first_token_ms, 3)
    return out


def embeddings(p: EmbeddingsParams, job: Job) -> dict[str, Any]:
    """(n, 384) unit vectors as lists, and the WordPiece tokens they took (for ``usage``)."""
    encoder = modelcache.encoder()
    vectors = encoder.encode(p.input, emit=job.emit)  # (n, 384) float32
    ids = encoder.tokenizer(p.input, truncation=True, max_length=encoder.max_length)["input_ids"]
    return {
        "embeddings": vectors.tolist(),
        "prompt_tokens": sum(len(row) for row in ids),
        "model": EMBED_MODEL,
        "device": encoder.device,
    }
