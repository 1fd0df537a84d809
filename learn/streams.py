"""Server-Sent Events for a run: the JSON stream for scripts and the HTML one for htmx.

Both relay the run's Redis stream (``learn.events``) from the client's Last-Event-ID,
so a reconnecting page gets only what it missed and a late one gets the whole history.

A stream may stay open for many minutes, so it holds no database connection while it
waits: the run is read once (:func:`get_run`) and every later database touch goes
through :func:`in_db`, which gives the connection back (to the pool) before returning.
Waiting is on Redis only. Open streams are capped per client address and overall,
counted in Redis so every web process shares the count (:class:`Slot`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404
from redis.exceptions import RedisError

from learn import events, ratelimit, services
from learn.events import Event
from learn.models import Run

log = logging.getLogger(__name__)
T = TypeVar("T")
Render = Callable[[Event], Awaitable[list[str]]]

MAX_EVENT_ID = 2**63 - 1  # Redis stream ids are 64-bit; ours never come near
OPEN = "fp:streams"  # sorted set: stream token -> unix time its slot was last renewed
SLOT_SECONDS = 60  # a slot not renewed for this long is free (its web process died)
PENDING_SECONDS = 10  # …and one whose stream has not started yet, after this long
RENEW_SECONDS = 20
LOST_CHECK = "fp:streams:lost-check"  # held for a minute by whoever sweeps lost runs
LOST_CHECK_SECONDS = 60
REDIS_CONNECTIONS = 50  # per web process, for slots and the lost-run check (not the tails)

# KEYS: all streams, this address's streams. ARGV: its score, stale before, per-address limit,
# overall limit, token. 0: taken; 1: this address is at its limit; 2: the site is.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then return 2 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return 0
"""


class BadRequest(ValueError):
    """The request cannot be served as sent; the message says what to change."""


def last_event_id(request: HttpRequest) -> int:
    """The id of the last event the client saw (0: none); BadRequest unless a whole
    number from 0 to 2^63 - 1 (an SSE client only ever echoes an id we sent)."""
    raw = (request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or "0").strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or int(raw) > MAX_EVENT_ID:
        raise BadRequest(
            f"Last-Event-ID must be the id of an event of this stream, a whole number from 0 "
            f"to {MAX_EVENT_ID}; got {raw[:40]!r}. Leave it out to start from the beginning."
        )
    return int(raw)


async def in_db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in this request's worker thread; its database connection goes back to
    the pool (or is closed) before this returns, so no stream keeps one while it waits."""

    def call() -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    return await sync_to_async(call)()


async def get_run(run_id: uuid.UUID) -> Run:
    """The run (Http404 if there is none), read without keeping a connection."""
    return await in_db(get_object_or_404, Run, pk=run_id)


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
    weakref.WeakKeyDictionary()
)


def _redis() -> aioredis.Redis:
    """One async Redis client per event loop (a client belongs to the loop it was made on).

    Its pool blocks rather than fails when busy: hundreds of streams starting at once wait
    a moment for one of REDIS_CONNECTIONS connections instead of getting an error."""
    loop = asyncio.get_running_loop()
    if loop not in _clients:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL, max_connections=REDIS_CONNECTIONS, timeout=10, socket_timeout=10
        )
        _clients[loop] = aioredis.Redis(connection_pool=pool)
    return _clients[loop]


def _per_address(ip: str) -> str:
    return f"{OPEN}:ip:{ip}"


class Slot:
    """One open stream's place in the per-address and overall counts."""

    def __init__(self, ip: str) -> None:
        self.token = uuid.uuid4().hex
        self.keys = [OPEN, _per_address(ip)]
        self.renewed = 0.0

    async def take(self) -> int:
        """0 when taken; 1 when the address is at its limit; 2 when the whole site is.

        A slot is taken back-dated, so that it lapses after PENDING_SECONDS unless its
        stream starts (and renews it): a client that leaves before the first byte, whose
        stream never runs, does not hold a place for a whole SLOT_SECONDS."""
        now = time.time()
        args = [now - SLOT_SECONDS + PENDING_SECONDS, now - SLOT_SECONDS]
        limits = [settings.FP_STREAMS_PER_IP, settings.FP_STREAMS_MAX]
        script_args = [*args, *limits, self.token, 2 * SLOT_SECONDS]
        return int(await _redis().eval(_ACQUIRE, 2, *self.keys, *script_args))

    async def renew(self, *, unless_recent: bool = False) -> None:
        now = time.time()
        if unless_recent and now - self.renewed < RENEW_SECONDS:
            return
        self.renewed = now
        pipe = _redis().pipeline(transaction=False)
        for key in self.keys:
            pipe.zadd(key, {self.token: now}, xx=True)
        await pipe.execute()

    async def release(self) -> None:
        try:
            pipe = _redis().pipeline(transaction=False)
            for key in self.keys:
                pipe.zrem(key, self.token)
            await pipe.execute()
        except Exception:  # Redis gone or the task cancelled: the slot lapses by itself
            pass


def open_streams() -> int:
    """Streams open now over every web process (slots renewed within SLOT_SECONDS)."""
    return int(events.client().zcount(OPEN, time.time() - SLOT_SECONDS, "+inf"))


async def _sweep_lost_runs() -> None:
    """Fail runs whose worker vanished, at most once a minute across all web processes."""
    if await _redis().set(LOST_CHECK, 1, nx=True, ex=LOST_CHECK_SECONDS):
        await in_db(services.fail_lost_runs)


async def as_json(event: Event) -> list[str]:
    return [event.sse()]


async def _frames(run: Run, after: int, render: Render, slot: Slot) -> AsyncGenerator[str, None]:
    try:
        await slot.renew()  # started: the slot now lasts while the stream renews it
        yield "retry: 2000\n\n"
        if not run.is_active and not await sync_to_async(events.history)(run.id, after):
            if after == 0:  # events expired long ago: the stored run still says how it ended
                for frame in await render(Event(1, "done", {"status": run.status})):
                    yield frame
            return
        async with contextlib.aclosing(events.follow(run.id, after)) as tail:
            async for event in tail:
                await slot.renew(unless_recent=True)
                if event is None:
                    await _sweep_lost_runs()
                    yield ": keep-alive\n\n"
                    continue
                for frame in await render(event):
                    yield frame
    finally:
        await slot.release()


class EventStream(StreamingHttpResponse):
    """A text/event-stream response that closes its generator when the response ends.

    Django closes only its own wrapper around the content when a client goes away, which
    would leave ours, with its stream slot and its Redis connection, open until garbage
    collection: under load, that is thousands of slots counted against the caps.
    """

    def __init__(self, frames: AsyncGenerator[str, None]) -> None:
        super().__init__(frames, content_type="text/event-stream")
        self.frames = frames
        self["Cache-Control"] = "no-cache"
        self["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in super().__aiter__():
                yield part
        finally:
            await self.frames.aclose()


def _refused(status: int, message: str, retry_after: int) -> JsonResponse:
    response = JsonResponse({"message": message, "detail": []}, status=status)
    response["Retry-After"] = str(retry_after)
    return response


async def sse_response(run: Run, request: HttpRequest, render: Render = as_json) -> HttpResponse:
    """The run's event stream, or a JSON refusal: 400 for a bad Last-Event-ID, 429 when
    this address has FP_STREAMS_PER_IP streams open, 503 when the site has FP_STREAMS_MAX."""
    try:
        after = last_event_id(request)
    except BadRequest as exc:
        return JsonResponse({"message": str(exc), "detail": []}, status=400)
    slot = Slot(ratelimit.client_ip(request))
    try:
        taken = await slot.take()
    except RedisError as exc:
        log.warning("no stream slot for run %s: %r", run.id, exc)
        return _refused(503, "Run events are not reachable right now; try again shortly.", 15)
    if taken == 1:
        return _refused(
            429,
            f"You already have {settings.FP_STREAMS_PER_IP} event streams open from this "
            "address; close one (or wait for a run to end) and try again.",
            5,
        )
    if taken == 2:
        return _refused(
            503,
            "The site is serving as many event streams as it can; try again in a moment. "
            "GET /api/runs/<id> tells a run's status without a stream.",
            15,
        )
    return EventStream(_frames(run, after, render, slot))
