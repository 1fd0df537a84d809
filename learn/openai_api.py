"""An OpenAI-compatible API under ``/v1``: chat completions, embeddings, models.

Any OpenAI client works against it (``base_url=".../v1"``, ``api_key="fp-…"``). Each
request is a Run of a hidden playground (learn/playgrounds/serving.py) queued on "gpu";
the web process loads no model, it relays the run's events (``learn.events.follow``):
each ``partial`` is one piece of the answer, sent on as a ``chat.completion.chunk`` when
streaming. Errors use OpenAI's body, ``{"error": {message, type, param, code}}``.

Only ``Authorization: Bearer <key>`` opens it (no session), so CSRF does not apply; each
key has its own requests-per-minute limit (``learn.ratelimit``, 429 with Retry-After).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import sys
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from learn import events, owners, ratelimit, services
from learn.models import ApiKey, Run
from learn.openai_requests import (
    MODELS,
    ApiError,
    ChatFields,
    EmbeddingFields,
    read_body,
    validated,
)
from learn.playgrounds import PLAYGROUNDS, PlaygroundParams
from learn.playgrounds.serving import (
    CHAT_MODEL,
    EMBED_MODEL,
    ChatCompletionParams,
    EmbeddingsParams,
)

log = logging.getLogger(__name__)

CREATED = 1_735_689_600  # 2025-01-01, the `created` /v1/models reports
WAIT_SECONDS = 180.0  # from the request to the run's end, queue wait included
IDLE_SECONDS = 5.0  # a stream's keep-alive interval (and how often the deadline is checked)


def _authorized(request: HttpRequest) -> ApiKey:
    """The request's active key, its request counted against its per-minute limit."""
    plaintext = owners.bearer_key(request)
    if plaintext is None:
        raise ApiError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer fp-…'; "
            "staff create keys in the admin or with `manage.py create_api_key`.",
            code="invalid_api_key",
        )
    key = owners.api_key(plaintext)
    if key is None:
        shown = plaintext[:6] + "…" if len(plaintext) > 6 else "…"
        raise ApiError(
            401,
            f"Incorrect API key provided: {shown}. It is unknown or was deactivated; "
            "ask the site's staff for a key.",
            code="invalid_api_key",
        )
    decision = ratelimit.check("v1", str(key.pk), limit=key.requests_per_minute, per=60)
    if not decision.allowed:
        raise ApiError(
            429,
            f"Rate limit reached for this API key: {decision.limit} requests per minute. "
            f"Try again in {decision.retry_after} s.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(decision.retry_after)},
        )
    return key


View = Callable[..., Awaitable[HttpResponse]]


def endpoint(method: str | None) -> Callable[[View], View]:
    """A /v1 view answering ``method`` (None: any): bearer key and rate limit first, every
    failure in OpenAI's format."""

    def wrap(view: View) -> View:
        @functools.wraps(view)
        async def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                if method is not None and request.method != method:
                    raise ApiError(405, f"{request.method} is not allowed here; use {method}.")
                key = await sync_to_async(_authorized)(request)
                return await view(request, key, *args, **kwargs)
            except ApiError as err:
                return err.response()
            except Exception:
                log.exception("/v1 request failed")
                return ApiError(
                    500, "The server failed to handle this request; try again.", type="server_error"
                ).response()

        return csrf_exempt(inner)

    return wrap


# ------------------------------------------------------------------- runs and their events


async def _start(slug: str, params: PlaygroundParams, key: ApiKey) -> str:
    owner = owners.Owner("key", str(key.pk)).tag
    try:
        run = await sync_to_async(services.create_run)(PLAYGROUNDS[slug], params, owner=owner)
    except services.QueueUnavailable:
        raise ApiError(
            503, "The job queue is not reachable right now; try again shortly.", type="server_error"
        ) from None
    return str(run.id)


def _cancel(run_id: str) -> None:
    run = Run.objects.filter(pk=run_id).first()
    if run is not None and run.is_active:
        services.cancel_run(run)


async def _follow(run_id: str, deadline: float) -> AsyncIterator[str | dict[str, Any] | None]:
    """The run's text pieces (str) and keep-alives (None), then its result (dict).

    Raises ApiError when the run fails, is cancelled, or passes ``deadline``.
    """
    code = None
    async for event in events.follow(run_id, idle=IDLE_SECONDS):
        if time.monotonic() > deadline:
            raise ApiError(
                504,
                f"No complete answer within {WAIT_SECONDS:.0f} s; ask for fewer tokens "
                "or try again when the workers are less busy.",
                type="server_error",
                code="timeout",
            )
        if event is None:
            yield None
        elif event.kind == "partial" and event.data.get("text"):
            yield str(event.data["text"])
        elif event.kind == "log" and event.data.get("code"):
            code = str(event.data["code"])
        elif event.kind == events.TERMINAL:
            run = await Run.objects.filter(pk=run_id).values("status", "result", "error").afirst()
            if run and run["status"] == Run.Status.SUCCEEDED:
                yield run["result"]
                return
            error = run["error"] if run else ""
            if code == "context_length_exceeded":
                raise ApiError(400, error, param="messages", code=code)
            why = error or "it was cancelled"
            raise ApiError(500, f"The model could not answer: {why}", type="server_error")


def _usage(result: dict[str, Any]) -> dict[str, int]:
    counts = {k: int(result[k]) for k in ("prompt_tokens", "completion_tokens")}
    return {**counts, "total_tokens": sum(counts.values())}


def _completion(run_id: str, kind: str, created: int, **fields: Any) -> dict[str, Any]:
    """The fields every ``chat.completion`` and ``chat.completion.chunk`` share."""
    return {
        "id": f"chatcmpl-{run_id.replace('-', '')}",
        "object": kind,
        "created": created,
        "model": CHAT_MODEL,
        "system_fingerprint": None,
        **fields,
    }


def _chunk(run_id: str, created: int, delta: dict[str, Any], finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return _sse(_completion(run_id, "chat.completion.chunk", created, choices=[choice]))


def _sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


async def _close(relay: AsyncIterator[Any], run_id: str, finished: bool) -> None:
    """Stop following the run; if it had not finished (the client left, or the deadline
    passed), cancel it so the worker stops generating."""
    with suppress(Exception):
        await relay.aclose()  # type: ignore[attr-defined]
    if not finished:
        with suppress(Exception):
            await sync_to_async(_cancel)(run_id)


async def _stream(
    run_id: str, relay: AsyncIterator[Any], first: Any, include_usage: bool
) -> AsyncIterator[str]:
    """SSE frames: role, text pieces as they come, finish_reason, usage, ``[DONE]``."""
    created, finished = int(time.time()), False
    try:
        yield _chunk(run_id, created, {"role": "assistant", "content": ""})
        item = first
        while not isinstance(item, dict):
            yield ": keep-alive\n\n" if item is None else _chunk(run_id, created, {"content": item})
            item = await anext(relay)
        finished = True
        yield _chunk(run_id, created, {}, item["finish_reason"])
        if include_usage:
            kind = "chat.completion.chunk"
            yield _sse(_completion(run_id, kind, created, choices=[], usage=_usage(item)))
        yield "data: [DONE]\n\n"
    except ApiError as err:  # the status line is sent: the error goes in the stream
        yield _sse(err.body())
    finally:
        await _close(relay, run_id, finished)


# ------------------------------------------------------------------- views


@endpoint("GET")
async def list_models(request: HttpRequest, key: ApiKey) -> HttpResponse:
    return JsonResponse({"object": "list", "data": [_model(name) for name in MODELS]})


@endpoint("GET")
async def get_model(request: HttpRequest, key: ApiKey, model_id: str) -> HttpResponse:
    if model_id not in MODELS:
        raise ApiError(
            404, f"The model '{model_id}' does not exist.", param="model", code="model_not_found"
        )
    return JsonResponse(_model(model_id))


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": CREATED, "owned_by": "forward-pass"}


@endpoint("POST")
async def chat_completions(request: HttpRequest, key: ApiKey) -> HttpResponse:
    head, rest = read_body(request, ChatFields, CHAT_MODEL)
    if head.stream_options is not None and not head.stream:
        raise ApiError(400, "stream_options is only allowed with stream: true.", param="stream")
    params = validated(ChatCompletionParams, rest)
    deadline = time.monotonic() + WAIT_SECONDS
    run_id = await _start("chat-completion", params, key)
    relay = _follow(run_id, deadline)
    done = streaming = False
    try:
        item = await anext(relay)
        while head.stream and item is None:  # no status line before the first piece
            item = await anext(relay)
        if head.stream:
            include_usage = bool(head.stream_options and head.stream_options.include_usage)
            response = StreamingHttpResponse(
                _stream(run_id, relay, item, include_usage), content_type="text/event-stream"
            )
            response["Cache-Control"] = "no-cache"
            response["X-Accel-Buffering"] = "no"
            streaming = True  # from here the stream closes the relay (and cancels if cut)
            return response
        while not isinstance(item, dict):
            item = await anext(relay)
        done = True
    finally:
        if not streaming:
            await _close(relay, run_id, done)
    message = {"role": "assistant", "content": item["text"], "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None}
    choice["finish_reason"] = item["finish_reason"]
    body = _completion(run_id, "chat.completion", int(time.time()), choices=[choice])
    return JsonResponse({**body, "usage": _usage(item)})


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    """A vector as JSON numbers, or as OpenAI's base64 of little-endian float32."""
    if encoding == "float":
        return vector
    packed = array("f", vector)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


@endpoint("POST")
async def embeddings(request: HttpRequest, key: ApiKey) -> HttpResponse:
    head, rest = read_body(request, EmbeddingFields, EMBED_MODEL)
    params = validated(EmbeddingsParams, rest)
    run_id = await _start("embeddings", params, key)
    relay = _follow(run_id, time.monotonic() + WAIT_SECONDS)
    result: dict[str, Any] = {}
    try:
        async for item in relay:
            if isinstance(item, dict):
                result = item
                break
    finally:
        await _close(relay, run_id, bool(result))
    vectors = result["embeddings"]  # (n, 384)
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(v, head.encoding_format)}
        for i, v in enumerate(vectors)
    ]
    tokens = int(result["prompt_tokens"])
    return JsonResponse(
        {
            "object": "list",
            "data": data,
            "model": EMBED_MODEL,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


@endpoint(None)
async def unknown(request: HttpRequest, key: ApiKey, rest: str) -> HttpResponse:
    raise ApiError(404, f"No endpoint /v1/{rest}; this site serves /v1/chat/completions, "
                   "/v1/embeddings and /v1/models.", code="unknown_url")  # fmt: skip


urlpatterns = [
    path("models", list_models, name="v1-models"),
    path("models/<str:model_id>", get_model, name="v1-model"),
    path("chat/completions", chat_completions, name="v1-chat-completions"),
    path("embeddings", embeddings, name="v1-embeddings"),
    path("<path:rest>", unknown),
]
