"""Reciprocal-rank fusion: one ranking from several (keyword and vector search, say).

From Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and
individual Rank Learning Methods" (SIGIR 2009). Each document scores

    RRF(d) = sum over rankings r that contain d of 1 / (k + rank_r(d)),   rank from 1

and the fused list sorts by that score. It uses ranks only, never the retrievers' raw
scores, so a BM25 score (unbounded) and a cosine similarity (-1..1) fuse without any
normalisation; k (60 in the paper) damps how much the very top ranks dominate.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

Id = TypeVar("Id", bound=Hashable)

DEFAULT_K = 60  # Cormack et al.'s constant


def rrf(rankings: Sequence[Sequence[Id]], *, k: int = DEFAULT_K) -> list[tuple[Id, float]]:
    """(id, fused score) for every id in any ranking, best first.

    Each ranking lists ids best first. Ties keep the order in which ids first appear
    (ranking by ranking, top to bottom). An id listed twice in one ranking counts once,
    at its better rank.
    """
    if k < 0:
        raise ValueError(f"The RRF constant k must be 0 or more, got {k}.")
    scores: dict[Id, float] = {}  # insertion order = first appearance
    for ranking in rankings:
        seen: set[Id] = set()
        for rank, doc in enumerate(ranking, start=1):
            if doc in seen:
                continue
            seen.add(doc)
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])  # stable sort keeps ties' order
