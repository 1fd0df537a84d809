"""The one client chapter 6's playgrounds generate text through.

``LLMClient.from_env()`` decides where text comes from:

- ``FP_LLM_BASE_URL`` unset: SmolLM2-135M-Instruct on this worker (``local_chat``: our
  decode loop, greedy at temperature 0, each text delta passed to ``on_delta`` as made);
- ``FP_LLM_BASE_URL`` set: any OpenAI-compatible server (vLLM, llama.cpp server, Ollama,
  or this site's own ``/v1``) through the official ``openai`` package, streamed, with
  ``FP_LLM_MODEL`` (default ``smollm2-135m-instruct``) and ``FP_LLM_API_KEY``.

Either way ``chat`` returns a ``Completion`` with token counts and timings, so a
playground shows the same numbers whichever backend answered.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from learn.playgrounds import PlaygroundError
from learn.playgrounds.serving import CHAT_MODEL, CONTEXT_TOKENS
from workers import modelcache

if TYPE_CHECKING:
    from learn.lab.constrained import Constraint

Message = Mapping[str, str]  # {"role": "system" | "user" | "assistant", "content": …}
OnDelta = Callable[[str], None]


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int  # the end-of-turn token included, as servers count it
    ms: float  # wall time of the whole call
    first_token_ms: float  # wall time until the first piece of text
    model: str
    device: str  # "cpu" / "cuda" in-process; the server's host:port otherwise
    finish_reason: str = "stop"  # "stop" (end of turn) | "length" (max_tokens reached)


class ContextTooLong(PlaygroundError):
    """The prompt and the tokens asked for do not fit in the model's context."""

    code = "context_length_exceeded"

    def __init__(self, prompt_tokens: int, max_tokens: int, limit: int = CONTEXT_TOKENS) -> None:
        super().__init__(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, "
            f"{max_tokens} in the completion). Please reduce the length of the messages "
            "or completion."
        )
        self.prompt_tokens, self.max_tokens = prompt_tokens, max_tokens


def _ignore(_: str) -> None:
    """The default ``on_delta``."""


def local_chat(
    messages: Sequence[Message],
    *,
    max_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    on_delta: OnDelta = _ignore,
    constraint: Constraint | None = None,
) -> Completion:
    """SmolLM2 on this worker: the chat template over ``messages``, then our decode loop.

    A ``constraint`` (``learn.lab.constrained.json_constraint(schema, tokenizer)``, built
    with the tokenizer of ``modelcache.smollm2()``) masks every step's logits; the reply
    then ends when the grammar allows nothing more (finish reason "stop").

    Raises ``ContextTooLong`` when prompt tokens + ``max_tokens`` exceed ``CONTEXT_TOKENS``.
    Without a ``seed``, sampling draws one (a fresh torch Generator always starts the same).
    """
    from learn.lab.decoding import generate
    from learn.lab.llama_gguf import chat_ids

    model, tokenizer = modelcache.smollm2()
    ids = chat_ids(tokenizer, messages)
    if len(ids) + max_tokens > CONTEXT_TOKENS:
        raise ContextTooLong(len(ids), max_tokens)
    t0 = time.perf_counter()
    first_ms: float | None = None

    def relay(kind: str, /, **data: Any) -> None:
        nonlocal first_ms
        if kind == "partial" and data.get("text"):
            if first_ms is None:
                first_ms = (time.perf_counter() - t0) * 1e3
            on_delta(data["text"])

    gen = generate(
        model,
        ids,
        max_tokens,
        temperature=temperature,
        top_p=top_p if top_p < 1 else None,
        seed=seed if seed is not None else secrets.randbelow(2**31),
        tokenizer=tokenizer,
        emit=relay,
        constraint=constraint,
    )
    ms = (time.perf_counter() - t0) * 1e3
    return Completion(
        text=gen.text,
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=len(gen.tokens),
        ms=ms,
        first_token_ms=first_ms if first_ms is not None else ms,
        model=CHAT_MODEL,
        device=gen.device,
        finish_reason="length" if gen.stop_reason == "length" else "stop",
    )


class LLMClient:
    """Chat completions from SmolLM2 in-process (``base_url=None``) or from a server."""

    def __init__(
        self,
        base_url: str | None = None,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.model = model or CHAT_MODEL
        self.api_key = api_key
        self.timeout = timeout
        self._client: Any = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LLMClient:
        """From ``FP_LLM_BASE_URL`` (unset or empty: in-process), ``FP_LLM_MODEL`` and
        ``FP_LLM_API_KEY``."""
        env = os.environ if env is None else env
        return cls(
            env.get("FP_LLM_BASE_URL") or None,
            model=env.get("FP_LLM_MODEL") or None,
            api_key=env.get("FP_LLM_API_KEY") or None,
        )

    @property
    def remote(self) -> bool:
        return self.base_url is not None

    def __repr__(self) -> str:
        where = self.base_url or "in-process"
        return f"LLMClient({where}, model={self.model!r})"

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int | None = None,
        on_delta: OnDelta | None = None,
    ) -> Completion:
        """Answer the conversation ``messages`` with at most ``max_tokens`` new tokens,
        passing each piece of text to ``on_delta`` as it arrives. ``seed`` makes SmolLM2's
        sampling here reproducible; a server seeds its own sampling."""
        on_delta = on_delta or _ignore
        if self.base_url is None:
            return local_chat(
                messages,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
                on_delta=on_delta,
            )
        return self._remote_chat(messages, max_tokens, temperature, on_delta)

    def _openai(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                base_url=self.base_url,
                api_key=self.api_key or "none",  # llama.cpp and Ollama ask for none
                timeout=self.timeout,
                max_retries=1,
            )
        return self._client

    def _remote_chat(
        self, messages: Sequence[Message], max_tokens: int, temperature: float, on_delta: OnDelta
    ) -> Completion:
        import openai

        t0 = time.perf_counter()
        first_ms: float | None = None
        parts: list[str] = []
        finish, usage = "stop", None
        try:
            stream = self._openai().chat.completions.create(
                model=self.model,
                messages=[{"role": m["role"], "content": m["content"]} for m in messages],
                max_tokens=max_tokens,
                temperature=temperature,
                stream=True,
                stream_options={"include_usage": True},
            )
            for chunk in stream:
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        if first_ms is None:
                            first_ms = (time.perf_counter() - t0) * 1e3
                        parts.append(choice.delta.content)
                        on_delta(choice.delta.content)
                    finish = choice.finish_reason or finish
        except openai.APIConnectionError as exc:
            raise PlaygroundError(
                f"Cannot reach the model server at {self.base_url} (FP_LLM_BASE_URL): {exc}"
            ) from exc
        except openai.APIError as exc:
            raise PlaygroundError(
                f"The model server at {self.base_url} refused the request: {exc}"
            ) from exc
        ms = (time.perf_counter() - t0) * 1e3
        return Completion(
            text="".join(parts),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else len(parts),
            ms=ms,
            first_token_ms=first_ms if first_ms is not None else ms,
            model=self.model,
            device=urlsplit(self.base_url or "").netloc or "remote",
            finish_reason=finish,
        )
