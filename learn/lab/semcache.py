"""A semantic cache's one dial: the similarity above which two prompts count as "the same".

A semantic cache embeds each incoming prompt and, when a cached prompt is similar enough,
returns the cached answer instead of calling the model. Too low a threshold serves wrong
answers ("What is the capital of France?" ~ "What is the capital of Spain?"); too high and
it rarely hits. Given labelled prompt pairs (their cosine similarity, and whether they
truly mean the same), sweeping the threshold shows the trade-off:

- precision: of the pairs that would hit, the share that truly mean the same (1.0 when
  nothing hits: no wrong answer is served);
- recall: of the pairs that mean the same, the share that would hit (1.0 when there are
  none);
- hit rate: the share of all pairs that would hit, i.e. model calls saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def threshold_sweep(
    similarities: np.ndarray, same: np.ndarray, thresholds: Sequence[float]
) -> list[dict[str, Any]]:
    """One row per threshold t, in the order given; a pair hits when similarity >= t.

    ``similarities`` (n,) float, cosine similarity of each pair; ``same`` (n,) bool, whether
    the pair truly means the same. Each row: ``threshold``, ``precision``, ``recall``,
    ``hit_rate``, ``hits`` (count) and ``false_hits`` (indices of different-meaning pairs
    that hit: the wrong answers the cache would serve).
    """
    sim = np.asarray(similarities, dtype=np.float64)
    truth = np.asarray(same, dtype=bool)
    if sim.ndim != 1 or sim.shape != truth.shape:
        raise ValueError(
            f"similarities and same must be 1-D and the same length, got {sim.shape} and "
            f"{truth.shape}."
        )
    n, n_same = len(sim), int(truth.sum())
    rows = []
    for t in thresholds:
        hit = sim >= t  # (n,) bool
        n_hits, true_hits = int(hit.sum()), int((hit & truth).sum())
        rows.append(
            {
                "threshold": float(t),
                "precision": true_hits / n_hits if n_hits else 1.0,
                "recall": true_hits / n_same if n_same else 1.0,
                "hit_rate": n_hits / n if n else 0.0,
                "hits": n_hits,
                "false_hits": np.flatnonzero(hit & ~truth).tolist(),
            }
        )
    return rows


def default_threshold(sweep: Sequence[dict[str, Any]], min_precision: float = 0.95) -> float:
    """The lowest swept threshold whose precision reaches ``min_precision``: the most hits
    the cache can have while serving few enough wrong answers. If none reaches it, the
    highest threshold swept (the most cautious one on offer)."""
    if not sweep:
        raise ValueError("The sweep is empty: give at least one threshold.")
    good = [row["threshold"] for row in sweep if row["precision"] >= min_precision]
    return float(min(good)) if good else float(max(row["threshold"] for row in sweep))
