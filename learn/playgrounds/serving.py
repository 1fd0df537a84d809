"""The OpenAI-compatible API's jobs (``/v1``, learn/openai_api.py) as hidden playgrounds.

Each /v1 request is one Run of ``chat-completion`` or ``embeddings``, queued like any
playground and relayed from its event stream; ``hidden`` keeps them off the lesson pages.
The bounds here are the API's: a request past them is a 400 before anything is queued.
Prompt lengths in tokens are checked by the worker (the web process loads no tokenizer).
"""

from __future__ import annotations

from typing import Any, Literal

from ninja import Schema
from pydantic import Field, field_validator

from learn.lab.facts import MINILM_DIM
from learn.playgrounds.base import Playground, PlaygroundParams, Seed, register

CHAT_MODEL = "smollm2-135m-instruct"  # the ids /v1/models lists
EMBED_MODEL = "all-minilm-l6-v2"
CONTEXT_TOKENS = 2_048  # prompt + max_tokens; beyond: 400 context_length_exceeded
EMBED_DIM = MINILM_DIM  # 384


class ChatMessage(Schema):
    """One turn; OpenAI's content parts (``[{"type": "text", "text": …}]``) are joined."""

    model_config = {"extra": "ignore"}  # e.g. "name": accepted, not used

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=8_000)

    @field_validator("role", mode="before")
    @classmethod
    def developer_is_system(cls, role: Any) -> Any:
        return "system" if role == "developer" else role  # OpenAI's newer name for it

    @field_validator("content", mode="before")
    @classmethod
    def text_parts(cls, content: Any) -> Any:
        if content is None:
            return ""
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                raise ValueError("only text content parts are supported (type 'text')")
            return "".join(str(p.get("text", "")) for p in content)
        return content


class ChatCompletionParams(PlaygroundParams):
    messages: list[ChatMessage] = Field(min_length=1, max_length=32)
    max_tokens: int = Field(default=256, ge=1, le=512, description="new tokens at most")
    temperature: float = Field(default=1.0, ge=0, le=2, description="0 = greedy")
    top_p: float = Field(default=1.0, gt=0, le=1, description="1 = off")
    seed: Seed | None = None


class EmbeddingsParams(PlaygroundParams):
    input: list[str] = Field(min_length=1, max_length=64)

    @field_validator("input", mode="before")
    @classmethod
    def one_or_many(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and not all(isinstance(v, str) for v in value):
            raise ValueError("send text (a string or a list of strings), not token ids")
        return value

    @field_validator("input")
    @classmethod
    def short_enough(cls, texts: list[str]) -> list[str]:
        for i, text in enumerate(texts):
            if len(text) > 2_000:
                raise ValueError(f"input {i} has {len(text)} characters; the limit is 2000")
        return texts


HANDLERS = "workers.handlers.serving"

register(
    Playground(
        slug="chat-completion",
        title="Chat completion (/v1/chat/completions)",
        chapter="rag-agents",
        summary="SmolLM2-135M-Instruct answering an OpenAI-style chat request.",
        params=ChatCompletionParams,
        handler=f"{HANDLERS}:chat_completion",
        queue="gpu",
        time_limit=120,
        hidden=True,
    ),
    Playground(
        slug="embeddings",
        title="Embeddings (/v1/embeddings)",
        chapter="rag-agents",
        summary="all-MiniLM-L6-v2 sentence vectors for an OpenAI-style embeddings request.",
        params=EmbeddingsParams,
        handler=f"{HANDLERS}:embeddings",
        queue="gpu",
        time_limit=60,
        hidden=True,
    ),
)
