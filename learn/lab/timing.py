"""One timer for the lab and the benches: best of N wall-clock runs.

The minimum, not the mean, because noise on a shared machine only ever adds time
(the convention of Python's ``timeit``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def best_of(fn: Callable[[], T], repeats: int = 3) -> tuple[float, T]:
    """Call ``fn`` ``repeats`` times (at least once); return (best seconds, last result)."""
    best = float("inf")
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out
