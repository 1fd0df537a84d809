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


def cluster_sums(x: np.ndarray, ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sum of the rows of ``x`` (n, d) in each cluster -> (k, d) float64 (zeros where
    empty). Rows sorted by cluster, then one ``reduceat`` over each cluster's run: the
    same as ``np.add.at(sums, ids, x)``, ten times faster."""
    order = np.argsort(ids, kind="stable")  # (n,) rows grouped by cluster
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # (k,) first row of each run
    sums = np.zeros((len(counts), x.shape[1]), dtype=np.float64)
    nonempty = counts > 0
    if nonempty.any():
        sums[nonempty] = np.add.reduceat(x[order].astype(np.float64), starts[nonempty], axis=0)
    return sums


def split_empty(centroids: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> int:
    """FAISS's fix for empty clusters: each empty one takes half of a big cluster.

    A donor is drawn with probability ∝ (size - 1); the empty centroid becomes a copy of
    it, and the two are nudged apart by ±1/1024 of each coordinate (opposite signs), so
    the next assignment splits the donor's points between them. ``centroids`` (k, d) and
    ``counts`` (k,) are updated in place. Returns how many clusters were split.
    """
    eps = 1.0 / 1024
    k = len(counts)
    sign = np.where(np.arange(centroids.shape[1]) % 2 == 0, eps, -eps)  # (d,) +, -, +, ...
    split = 0
    for c in np.flatnonzero(counts == 0):
        weights = np.maximum(counts - 1, 0).astype(np.float64)  # (k,)
        donor = int(rng.choice(k, p=weights / weights.sum()))
        centroids[c] = centroids[donor] * (1 + sign)
        centroids[donor] = centroids[donor] * (1 - sign)
        counts[c] = counts[donor] // 2
        counts[donor] -= counts[c]
        split += 1
    return split


def kmeans(
    x: np.ndarray,
    k: int,
    *,
    iters: int = 25,
    seed: int = 0,
    max_points_per_centroid: int = MAX_POINTS_PER_CENTROID,
    tol: float = 0.0,
    emit: Emit = no_emit,
) -> KMeans:
    """Cluster the rows of ``x`` (n, d) into ``k`` groups, the way FAISS's ``Clustering``
    does (its defaults: 25 iterations, every one run, at most 256 points per centroid).

    Trains on a seeded sample of at most ``max_points_per_centroid * k`` rows (more adds
    time, not quality), starting from k-means++ seeds, then assigns every row. With
    ``tol > 0`` stops early when the inertia improves by less than ``tol`` (relative).
    An empty cluster takes half of a big one (:func:`split_empty`), as in FAISS.
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
        nonempty = counts > 0
        sums = cluster_sums(sample, ids, counts)  # (k, d) float64
        centroids[nonempty] = (sums[nonempty] / counts[nonempty, None]).astype(np.float32)
        split = split_empty(centroids, counts, rng) if not nonempty.all() else 0
        inertia = float(dists.sum())
        emit("progress", pct=100.0 * (it + 1) / iters, message=f"k-means iteration {it + 1}")
        if tol > 0 and prev - inertia <= tol * max(prev, 1e-12) and split == 0:
            break
        prev = inertia

    ids, dists = assign(x, centroids)
    return KMeans(centroids, ids, float(dists.sum()))
