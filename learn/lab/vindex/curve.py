"""The recall/speed curve of a built index: search once per value of one search
parameter (``ef_search``, ``nprobe``) and score each against exact search."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from learn.lab.events import Emit, no_emit
from learn.lab.timing import best_of
from learn.lab.vindex.base import Hits, Index
from learn.lab.vindex.recall import recall_at_k


def sweep(
    index: Index,
    queries: np.ndarray,
    truth: Hits | np.ndarray,
    k: int,
    param_name: str | None,
    values: Sequence[Any],
    emit: Emit = no_emit,
    *,
    repeats: int = 1,
) -> list[dict[str, Any]]:
    """Search a built index once per value of one search parameter; score each.

    ``truth`` is exact search's ``Hits`` (or its ids). Emits every point as it is
    measured, ``emit("partial", point={param, value, recall, qps, ms_per_query})``, and
    returns the list of points; the time is the best of ``repeats`` searches of all the
    queries. ``param_name=None`` measures the index as it is, once (``values`` is then
    ignored), for indexes with no search knob.
    """
    true_ids = truth.ids if isinstance(truth, Hits) else np.asarray(truth)
    runs: list[tuple[str | None, Any]] = (
        [(None, None)] if param_name is None else [(param_name, v) for v in values]
    )
    points = []
    # one untimed search first: the first call pays for lazy set-up (caches, allocators)
    warm = {} if runs[0][0] is None else {runs[0][0]: runs[0][1]}
    index.search(queries[: min(len(queries), 8)], k, **warm)
    for i, (name, value) in enumerate(runs):
        params = {} if name is None else {name: value}
        secs, hits = best_of(lambda params=params: index.search(queries, k, **params), repeats)
        point = {
            "param": name,
            "value": value,
            "recall": round(recall_at_k(hits.ids, true_ids, k), 4),
            "qps": round(len(queries) / max(secs, 1e-9), 1),
            "ms_per_query": round(1000 * secs / max(len(queries), 1), 4),
        }
        points.append(point)
        emit("partial", point=point)
        emit(
            "progress",
            pct=100.0 * (i + 1) / len(runs),
            message=f"{index.name}: {name}={value} recall {point['recall']:.3f}",
        )
    return points
