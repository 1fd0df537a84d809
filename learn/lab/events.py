"""The callback every long lab computation takes to report what it is doing.

A lab function accepts a keyword-only ``emit`` that defaults to :func:`no_emit`.
It calls ``emit(kind, **data)`` with one of these kinds:

- ``"progress"``: ``pct`` (float, 0-100) and ``message`` (str);
- ``"partial"``: a piece of the result as it becomes known (any JSON-able fields);
- ``"log"``: ``message`` (str), a line worth showing the learner.

The worker passes a callback that appends each event to the run's Redis stream and
raises when the run was cancelled, so emitting is also where a run can be stopped.
"""

from __future__ import annotations

from typing import Any, Protocol


class Emit(Protocol):
    def __call__(self, kind: str, /, **data: Any) -> None: ...


def no_emit(kind: str, /, **data: Any) -> None:
    """The default callback: report nothing."""


def scaled_emit(emit: Emit, lo: float, hi: float, label: str = "") -> Emit:
    """An ``emit`` for one step of a longer job: the step's own 0-100 % progress is mapped
    into ``lo``-``hi`` % of the whole, and ``label`` (if any) prefixes its messages."""

    def inner(kind: str, /, **data: Any) -> None:
        if kind == "progress":
            data["pct"] = round(lo + (hi - lo) * float(data.get("pct", 0)) / 100, 1)
            if label:
                data["message"] = f"{label}: {data.get('message', '')}".rstrip(": ")
        emit(kind, **data)

    return inner
