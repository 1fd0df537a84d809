"""Scoring a retriever against questions whose answer is known to live in one chunk.

For each question the retriever returns chunk ids, best first, and one id is the gold
chunk (the one the question was written from). Two standard measures:

- hit@k (recall@k with one relevant item): 1 if the gold chunk is among the first k;
- reciprocal rank: 1 / (position of the gold chunk), 0 if it is missing; its mean over
  questions is the MRR (Voorhees, TREC-8 question answering track, 1999).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def hit_at(ranked: Sequence[str], gold: str, k: int) -> float:
    """1.0 if ``gold`` is among the first ``k`` of ``ranked``, else 0.0."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    return 1.0 if gold in ranked[:k] else 0.0


def reciprocal_rank(ranked: Sequence[str], gold: str) -> float:
    """1 / (1-based position of ``gold`` in ``ranked``), 0.0 if it is not there."""
    for i, doc in enumerate(ranked, start=1):
        if doc == gold:
            return 1.0 / i
    return 0.0


def summarise(rows: Sequence[Mapping[str, Any] | tuple[Sequence[str], str]]) -> dict[str, Any]:
    """Recall@1, recall@5 and MRR over questions, and which questions missed at 5.

    A row is one question: ``{"ranked": [...], "gold": "..."}`` or a ``(ranked, gold)``
    pair. Returns ``{"n", "recall@1", "recall@5", "mrr", "missed@5"}``; ``missed@5``
    lists the indices (into ``rows``) of the questions whose gold chunk is not in the top 5.
    With no rows every mean is 0.0.
    """
    pairs = [(r["ranked"], r["gold"]) if isinstance(r, Mapping) else r for r in rows]
    n = len(pairs)
    hits1 = [hit_at(ranked, gold, 1) for ranked, gold in pairs]
    hits5 = [hit_at(ranked, gold, 5) for ranked, gold in pairs]
    rr = [reciprocal_rank(ranked, gold) for ranked, gold in pairs]

    def mean(xs: list[float]) -> float:
        return sum(xs) / n if n else 0.0

    return {
        "n": n,
        "recall@1": mean(hits1),
        "recall@5": mean(hits5),
        "mrr": mean(rr),
        "missed@5": [i for i, h in enumerate(hits5) if h == 0.0],
    }
