"""Recall: how many of the true nearest neighbours an index returned. Defined once here,
with numpy only (no torch), so the web process can score results too.

``recall@k`` is, for each query, the share of its true ``k`` nearest neighbours that the
index returned in its own top ``k`` (what FAISS calls intersection recall, and what ANN
benchmarks plot), averaged over the queries: 1.0 means it found every one.

``-1`` is "no neighbour" on both sides, as in :class:`~learn.lab.vindex.base.Hits`:
a ``-1`` in a found row never matches, and a ``-1`` in a truth row is not a neighbour to
find, so a query whose exact search found only ``t < k`` rows is scored out of ``t``, and
a query with no true neighbour at all is left out of the mean (1.0 if every query is).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IdRows = np.ndarray | Sequence[Sequence[int]]  # (q, k) ids, or one list of ids per query


def recall_at_k(found: IdRows, truth: IdRows, k: int | None = None) -> float:
    """Mean over queries of ``|found[:k] ∩ truth[:k]| / |truth[:k]|``, ``-1`` not counted.

    ``found`` and ``truth`` hold one row of ids per query: (q, ≥k) int arrays such as
    ``Hits.ids``, or ragged lists (a database may return fewer than ``k`` rows).
    ``k`` defaults to the width of ``truth`` (for lists: each row whole). Where ``truth``
    has no ``-1`` the denominator is ``k`` for every query.

    >>> recall_at_k([[4, 3, 9], [5], [7]], [[1, 2, 3, 4], [5, 6, -1, -1], [-1, -1, -1, -1]])
    0.5
    """
    if len(found) != len(truth):
        raise ValueError(f"{len(found)} result rows for {len(truth)} queries")
    if isinstance(found, np.ndarray) and isinstance(truth, np.ndarray):
        hits, wanted = _count_arrays(found, truth, k)
    else:
        hits, wanted = _count_rows(found, truth, k)
    scored = wanted > 0  # queries with at least one true neighbour
    if not scored.any():
        return 1.0
    if np.all(wanted[scored] == wanted[scored][0]):  # one denominator: a single division
        return float(hits[scored].sum() / wanted[scored].sum())
    return float(np.mean(hits[scored] / wanted[scored]))


def _count_arrays(
    found: np.ndarray, truth: np.ndarray, k: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """(true neighbours found, true neighbours) per query (q,), for (q, ≥k) arrays."""
    k = truth.shape[1] if k is None else k
    if found.shape[1] < k or truth.shape[1] < k:
        raise ValueError(f"need at least k={k} columns, got {found.shape[1]} and {truth.shape[1]}")
    f, t = found[:, :k], truth[:, :k]  # (q, k) each
    real = t >= 0  # (q, k): true ids that are neighbours, not padding
    # (q, k, k) comparison: fine for k in the tens; counts each true id found once
    hit = (f[:, :, None] == t[:, None, :]).any(axis=1) & real  # (q, k)
    return hit.sum(axis=1), real.sum(axis=1)


def _count_rows(found: IdRows, truth: IdRows, k: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(true neighbours found, true neighbours) per query (q,), one row at a time."""
    hits, wanted = [], []
    for got, true in zip(found, truth, strict=True):
        want = {int(i) for i in true[:k] if i >= 0}
        hits.append(len(want & {int(i) for i in got[:k]}))
        wanted.append(len(want))
    return np.array(hits, dtype=np.int64), np.array(wanted, dtype=np.int64)
