"""Server-Sent Events for a run: the JSON stream for scripts and the HTML one for htmx.

Both relay the run's Redis stream (``learn.events``) from the client's Last-Event-ID,
so a reconnecting page gets only what it missed and a late one gets the whole history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from asgiref.sync import sync_to_async
from django.http import HttpRequest, StreamingHttpResponse

from learn import events, services
from learn.events import Event
from learn.models import Run

Render = Callable[[Event], Awaitable[list[str]]]


def last_event_id(request: HttpRequest) -> int:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or "0"
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


async def as_json(event: Event) -> list[str]:
    return [event.sse()]


async def _frames(run: Run, after: int, render: Render) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    if not run.is_active and not await sync_to_async(events.history)(run.id, after):
        if after == 0:  # events expired long ago: the stored run still says how it ended
            for frame in await render(Event(1, "done", {"status": run.status})):
                yield frame
        return
    async for event in events.follow(run.id, after):
        if event is None:
            await sync_to_async(services.fail_lost_runs)()
            yield ": keep-alive\n\n"
            continue
        for frame in await render(event):
            yield frame


def sse_response(run: Run, request: HttpRequest, render: Render = as_json) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        _frames(run, last_event_id(request), render), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response
