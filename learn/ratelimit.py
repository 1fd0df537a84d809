"""Rate limits in Redis: a fixed window per (what, who), shared by every web process.

``check("runs", "ip:1.2.3.4", limit=30, per=60)`` counts one request; past ``limit`` in
the current ``per``-second window it says how many seconds until the window turns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from learn import events

_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    count: int
    limit: int
    retry_after: int  # seconds until the window turns (0 when allowed)


def check(what: str, who: str, *, limit: int, per: int = 60) -> Decision:
    """Count one request of ``who`` against ``limit`` per ``per`` seconds."""
    window = int(time.time()) // per
    key = f"fp:rate:{what}:{who}:{window}"
    count = int(events.client().eval(_HIT, 1, key, per + 1))
    retry_after = 0 if count <= limit else per - int(time.time()) % per
    return Decision(count <= limit, count, limit, retry_after)


def client_ip(request) -> str:
    """The client's address. Behind proxies listed in ``FP_TRUSTED_PROXIES`` (settings),
    the nearest ``X-Forwarded-For`` entry that is not one of them; otherwise the peer's
    address (a header anyone can send is never trusted on its own)."""
    from django.conf import settings

    peer = request.META.get("REMOTE_ADDR") or "unknown"
    trusted = set(getattr(settings, "FP_TRUSTED_PROXIES", ()))
    if peer not in trusted:
        return peer
    hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    for hop in reversed([h for h in hops if h]):
        if hop not in trusted:
            return hop
    return peer
