"""Each run's events, kept in a Redis stream so late or reconnecting pages replay them.

Events get sequential ids 1, 2, 3… (the SSE ``id:``); a Lua script takes the next number
and appends in one step, so writers never interleave. A worker appends through the same
script with the run's cancel flag as a third key: the check and the append are one step, so
nothing of a cancelled run lands after the ``done`` its cancel wrote. A reader asks for
everything after the last id it saw and then blocks for more: replay and live tail are the
same call.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

TERMINAL = "done"  # the last event of every run
KEEP_SECONDS = 7 * 24 * 3600  # how long a finished run's events stay replayable

_APPEND = """
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then
  return 0
end
local n = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], n .. '-1', 'kind', ARGV[1], 'data', ARGV[2])
if ARGV[1] == 'done' then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return n
"""


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]

    def sse(self, data: str | None = None) -> str:
        """This event as one Server-Sent Events frame (``data`` replaces the JSON)."""
        body = json.dumps(self.data) if data is None else data
        lines = "".join(f"data: {line}\n" for line in body.splitlines() or [""])
        return f"id: {self.id}\nevent: {self.kind}\n{lines}\n"


def stream_key(run_id: object) -> str:
    return f"fp:run:{run_id}:events"


def _seq_key(run_id: object) -> str:
    return f"fp:run:{run_id}:seq"


def cancel_key(run_id: object) -> str:
    return f"fp:run:{run_id}:cancel"


@cache
def client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=10)


def append(run_id: object, kind: str, **data: Any) -> int:
    """Append one event to the run's stream; return its id."""
    keys = [stream_key(run_id), _seq_key(run_id)]
    return int(client().eval(_APPEND, 2, *keys, kind, json.dumps(data), KEEP_SECONDS))


def append_unless_cancelled(run_id: object, kind: str, **data: Any) -> int:
    """``append``, unless the run's cancel was requested: then append nothing, return 0."""
    keys = [stream_key(run_id), _seq_key(run_id), cancel_key(run_id)]
    return int(client().eval(_APPEND, 3, *keys, kind, json.dumps(data), KEEP_SECONDS))


def history(run_id: object, after: int = 0) -> list[Event]:
    entries = client().xrange(stream_key(run_id), min=f"({after}-1", max="+")
    return [_event(entry_id, fields) for entry_id, fields in entries]


def request_cancel(run_id: object) -> None:
    client().set(cancel_key(run_id), 1, ex=KEEP_SECONDS)


def _event(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Event:
    entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return Event(
        id=int(entry.split("-")[0]),
        kind=fields[b"kind"].decode(),
        data=json.loads(fields[b"data"]),
    )


async def follow(
    run_id: object, after: int = 0, *, idle: float = 15.0
) -> AsyncIterator[Event | None]:
    """Yield the run's events after id ``after``, then new ones as they come, until ``done``.

    Yields ``None`` after ``idle`` seconds without an event, so callers can send a heartbeat
    (and check the run has not been abandoned).
    """
    conn = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=idle + 10)
    last = f"{after}-1" if after else "0-0"
    try:
        while True:
            reply = await conn.xread({stream_key(run_id): last}, block=int(idle * 1000), count=100)
            if not reply:
                yield None
                continue
            for entry_id, fields in reply[0][1]:
                event = _event(entry_id, fields)
                last = f"{event.id}-1"
                yield event
                if event.kind == TERMINAL:
                    return
    finally:
        await conn.aclose()
