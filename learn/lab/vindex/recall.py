"""Scoring an approximate index: recall against exact search, and the recall/speed curve.

``recall@k`` is the fraction of the true ``k`` nearest neighbours that the index
returned in its own top ``k`` (what FAISS calls intersection recall, and what ANN
benchmarks plot): 1.0 means it found every one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from learn.lab.events import Emit, no_emit
from learn.lab.vindex.base import Hits, Index


def recall_at_k(found_ids: np.ndarray, true_ids: np.ndarray, k: int | None = None) -> float:
    """Mean over queries of ``|found[:k] ∩ true[:k]| / k``.

    ``found_ids`` and ``true_ids`` are (q, ≥k) int arrays (``Hits.ids``); ``k`` defaults
    to the width of ``true_ids``. ``-1`` (nothing found) never matches.
    """
    found = np.asarray(found_ids)
    true = np.asarray(true_ids)
    k = true.shape[1] if k is None else k
    if found.shape[0] != true.shape[0]:
        raise ValueError(f"{found.shape[0]} result rows for {true.shape[0]} queries")
    if found.shape[1] < k or true.shape[1] < k:
        raise ValueError(f"need at least k={k} columns, got {found.shape[1]} and {true.shape[1]}")
    f, t = found[:, :k], true[:, :k]
    # (q, k, k) comparison: fine for k in the tens; counts each true id found once
    hit = (f[:, :, None] == t[:, None, :]) & (t[:, None, :] >= 0)
    return float(hit.any(axis=1).sum() / t.size)


def timed_search(
    index: Index, queries: np.ndarray, k: int, repeats: int = 1, **params: Any
) -> tuple[Hits, float]:
    """Search all queries ``repeats`` times; returns the hits and the best wall time (s)."""
    best = float("inf")
    hits = None
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        hits = index.search(queries, k, **params)
        best = min(best, time.perf_counter() - t0)
    assert hits is not None
    return hits, best


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
    returns the list of points. ``param_name=None`` measures the index as it is, once
    (``values`` is then ignored), for indexes with no search knob.
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
        hits, secs = timed_search(index, queries, k, repeats, **params)
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
