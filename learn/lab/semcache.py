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

A cosine threshold alone cannot reach a high precision on hard pairs: a bag-of-meaning
embedding puts "from Paris to New York" and "from New York to Paris" at ≈ 1.0. So a hit
can also require a second check (``learn.lab.semcache_verify``): pass ``verified``, and a
pair hits only when its similarity reaches the threshold *and* the check passed it.

Choosing the threshold on the same pairs one then reports flatters it, so ``halves``
splits the pairs in two by a hash of their text: the threshold is chosen on one half
("tune") and its precision is reported on the other ("report"), which played no part in
the choice.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np


def threshold_sweep(
    similarities: np.ndarray,
    same: np.ndarray,
    thresholds: Sequence[float],
    *,
    verified: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One row per threshold t, in the order given; a pair hits when similarity >= t (and,
    given ``verified``, the second check passed it).

    ``similarities`` (n,) float, cosine similarity of each pair; ``same`` (n,) bool, whether
    the pair truly means the same; ``verified`` (n,) bool or None (no second check). Each
    row: ``threshold``, ``precision``, ``recall``, ``hit_rate``, ``hits`` (count) and
    ``false_hits`` (indices of different-meaning pairs that hit: the wrong answers the
    cache would serve).
    """
    sim = np.asarray(similarities, dtype=np.float64)
    truth = np.asarray(same, dtype=bool)
    passed = np.ones_like(truth) if verified is None else np.asarray(verified, dtype=bool)
    if sim.ndim != 1 or sim.shape != truth.shape or passed.shape != truth.shape:
        raise ValueError(
            f"similarities, same and verified must be 1-D and the same length, got "
            f"{sim.shape}, {truth.shape} and {passed.shape}."
        )
    n, n_same = len(sim), int(truth.sum())
    rows = []
    for t in thresholds:
        hit = (sim >= t) & passed  # (n,) bool
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


def halves(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """(n,) bool: True for the "tune" half, False for the "report" half. Fixed by a CRC-32
    of each pair's text, so adding pairs never moves the old ones between halves."""
    return np.array([zlib.crc32(f"{a}\n{b}".encode()) % 2 == 0 for a, b in pairs], dtype=bool)
