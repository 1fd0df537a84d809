"""Seeded k-means (Lloyd's algorithm with k-means++ starts), the trainer behind IVF and PQ.

IVF uses it to cut space into ``nlist`` cells; PQ uses it once per sub-vector to learn
a codebook of ``2**nbits`` centroids. Same seed and data, same centroids.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from learn.lab.events import Emit, no_emit
from learn.lab.vindex.base import as_matrix, pairwise_sq_l2

CHUNK = 4096  # rows per distance block: caps temporary memory at CHUNK * k floats
MAX_POINTS_PER_CENTROID = 256  # training sample cap per centroid, as in FAISS


class KMeans(NamedTuple):
    centroids: np.ndarray  # (k, d) float32
    assignments: np.ndarray  # (n,) int64, the nearest centroid of each training row
    inertia: float  # sum of squared distances to the assigned centroid


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row of ``x`` (n, d) -> (ids (n,) int64, sq. dists (n,) f32)."""
    c_norms = np.einsum("kd,kd->k", centroids, centroids)
    ids = np.empty(len(x), dtype=np.int64)
    dists = np.empty(len(x), dtype=np.float32)
    for s in range(0, len(x), CHUNK):
        dist = pairwise_sq_l2(x[s : s + CHUNK], centroids, c_norms)  # (chunk, k)
        ids[s : s + CHUNK] = dist.argmin(axis=1)
        dists[s : s + CHUNK] = np.take_along_axis(dist, ids[s : s + CHUNK, None], 1)[:, 0]
    return ids, dists


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ starts: each next centre is drawn with probability ∝ squared distance
    to the nearest centre so far, which spreads the starts out. -> (k, d)"""
    n = len(x)
    centers = np.empty((k, x.shape[1]), dtype=np.float32)
    centers[0] = x[rng.integers(n)]
    closest = np.einsum("nd,nd->n", x - centers[0], x - centers[0])  # (n,)
    for i in range(1, k):
        total = float(closest.sum())
        j = rng.choice(n, p=closest / total) if total > 0 else rng.integers(n)
        centers[i] = x[j]
        diff = x - centers[i]
        np.minimum(closest, np.einsum("nd,nd->n", diff, diff), out=closest)
    return centers


def kmeans(
    x: np.ndarray,
    k: int,
    *,
    iters: int = 20,
    seed: int = 0,
    max_points_per_centroid: int = MAX_POINTS_PER_CENTROID,
    tol: float = 1e-4,
    emit: Emit = no_emit,
) -> KMeans:
    """Cluster the rows of ``x`` (n, d) into ``k`` groups.

    Like FAISS, trains on a seeded sample of at most ``max_points_per_centroid * k`` rows
    (more adds time, not quality), then assigns every row. Stops early when the
    inertia improves by less than ``tol`` (relative). An empty cluster is re-seeded with
    the training row farthest from its centroid.
    """
    x = as_matrix(x)
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of rows ({n}), got {k}")
    rng = np.random.default_rng(seed)
    sample = x
    if n > max_points_per_centroid * k:
        sample = x[np.sort(rng.choice(n, max_points_per_centroid * k, replace=False))]

    centroids = kmeans_plus_plus(sample, k, rng)
    prev = np.inf
    for it in range(iters):
        ids, dists = assign(sample, centroids)
        counts = np.bincount(ids, minlength=k)  # (k,)
        sums = np.zeros_like(centroids, dtype=np.float64)
        np.add.at(sums, ids, sample)
        nonempty = counts > 0
        centroids[nonempty] = (sums[nonempty] / counts[nonempty, None]).astype(np.float32)
        for c in np.flatnonzero(~nonempty):  # rare: steal the worst-served point
            far = int(dists.argmax())
            centroids[c] = sample[far]
            dists[far] = 0.0
        inertia = float(dists.sum())
        emit("progress", pct=100.0 * (it + 1) / iters, message=f"k-means iteration {it + 1}")
        if prev - inertia <= tol * max(prev, 1e-12) and nonempty.all():
            break
        prev = inertia

    ids, dists = assign(x, centroids)
    return KMeans(centroids, ids, float(dists.sum()))
