"""Vectors to index: seeded synthetic clusters, and the handwritten digits that ship with
scikit-learn. Nothing here downloads.
"""

from __future__ import annotations

import importlib.util
from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    data: np.ndarray  # (n, d) float32, the vectors to index
    queries: np.ndarray  # (q, d) float32, held out: not rows of ``data``
    name: str


def clustered(
    n: int,
    d: int,
    clusters: int = 20,
    seed: int = 0,
    *,
    n_queries: int = 200,
    intrinsic_dim: int | None = 8,
    spread: float = 1.0,
    separation: float = 2.0,
) -> Dataset:
    """A mixture of Gaussian clusters in ``d`` dimensions, with held-out queries.

    Cluster centres are drawn from N(0, separation²·I); each point is its centre plus
    Gaussian noise (at the defaults, centres are 4-5 cluster radii apart: distinct
    clusters, but a point near an edge can have neighbours in the next one).
    Real embeddings are not round blobs: they vary along a few directions.
    So with ``intrinsic_dim`` set, each cluster's noise has a random orientation and a
    decaying spectrum (standard deviation ``spread / sqrt(1 + i / intrinsic_dim)`` along
    its i-th axis), which puts most of the variance in roughly ``intrinsic_dim``
    directions; ``None`` gives round clusters (``spread`` on every axis), which are the
    hard case for every index since distances concentrate as ``d`` grows.
    Queries are drawn from the same mixture, so they are new points, not copies.
    """
    if n < 1 or d < 1 or clusters < 1 or n_queries < 0:
        raise ValueError("n, d and clusters must be >= 1 and n_queries >= 0")
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, separation, size=(clusters, d))  # (c, d)
    if intrinsic_dim is None:
        scales = np.full(d, spread)
    else:
        scales = spread / np.sqrt(1.0 + np.arange(d) / max(intrinsic_dim, 1))  # (d,)
    # one random rotation per cluster: the QR of a Gaussian matrix is a uniform rotation
    rotations = [np.linalg.qr(rng.normal(size=(d, d)))[0] for _ in range(clusters)]

    def draw(m: int) -> np.ndarray:
        labels = rng.integers(clusters, size=m)  # (m,)
        noise = rng.normal(size=(m, d)) * scales  # (m, d), axis-aligned spectrum
        out = np.empty((m, d))
        for c in range(clusters):
            rows = labels == c
            out[rows] = centres[c] + noise[rows] @ rotations[c].T
        return out.astype(np.float32)

    data, queries = draw(n), draw(n_queries)
    return Dataset(data, queries, f"clustered(n={n}, d={d}, clusters={clusters}, seed={seed})")


def has_digits() -> bool:
    """True when scikit-learn (which bundles the digits data) is installed."""
    return importlib.util.find_spec("sklearn") is not None


def digits(n_queries: int = 97, seed: int = 0) -> Dataset:
    """The 1,797 8×8 handwritten digits bundled with scikit-learn, as (n, 64) float32
    pixel intensities 0-16, with ``n_queries`` seeded rows held out as queries."""
    if not has_digits():
        raise ModuleNotFoundError("digits needs scikit-learn: `pip install scikit-learn`")
    from sklearn.datasets import load_digits  # lazy: only this function needs sklearn

    x = load_digits().data.astype(np.float32)  # (1797, 64)
    order = np.random.default_rng(seed).permutation(len(x))
    q, rest = order[:n_queries], np.sort(order[n_queries:])
    return Dataset(x[rest], x[q], "sklearn digits (8x8)")
