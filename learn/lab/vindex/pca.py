"""PCA as compression: keep the ``dims`` directions of largest variance, search there.

Fitting centres the data and takes the top eigenvectors of its covariance. A vector is
stored as its ``dims`` coordinates along them (``4 * dims`` bytes instead of ``4 d``);
distances in that subspace drop whatever lies outside it, which is little when the data
really varies along a few directions, as embeddings do.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from learn.lab.events import Emit, no_emit
from learn.lab.vindex.base import (
    SCAN_ELEMENTS,
    Hits,
    as_matrix,
    check_k,
    check_metric,
    finish,
    pairwise_sq_l2,
    prepare,
    require_built,
    top_k,
)


class PCA(NamedTuple):
    mean: np.ndarray  # (d,) float32
    components: np.ndarray  # (dims, d) float32, orthonormal rows, largest variance first
    explained: np.ndarray  # (dims,) fraction of the total variance along each component

    def project(self, x: np.ndarray) -> np.ndarray:
        """(n, d) -> (n, dims) coordinates."""
        return ((as_matrix(x) - self.mean) @ self.components.T).astype(np.float32)


def fit_pca(x: np.ndarray, dims: int) -> PCA:
    """Top ``dims`` principal directions of the rows of ``x`` (n, d)."""
    x = as_matrix(x)
    if not 1 <= dims <= x.shape[1]:
        raise ValueError(f"dims must be between 1 and {x.shape[1]}, got {dims}")
    mean = x.mean(axis=0, dtype=np.float64)
    centred = x - mean
    cov = centred.T.astype(np.float64) @ centred / max(len(x) - 1, 1)  # (d, d)
    values, vectors = np.linalg.eigh(cov)  # ascending eigenvalues
    top = np.argsort(values)[::-1][:dims]
    explained = values[top] / max(values.sum(), 1e-12)
    return PCA(
        mean.astype(np.float32), vectors[:, top].T.astype(np.float32), explained.astype(np.float32)
    )


def project_2d(x: np.ndarray) -> np.ndarray:
    """(n, d) -> (n, 2) float32: the plane of the two largest-variance directions, for plots."""
    return fit_pca(x, min(2, as_matrix(x).shape[1])).project(x)


class PCAIndex:
    """Flat search on PCA coordinates: ``4 * dims`` bytes a vector."""

    name = "pca"

    def __init__(self, dims: int = 16, metric: str = "l2") -> None:
        self.dims = dims
        self.metric = check_metric(metric)
        self.pca: PCA | None = None
        self.codes = np.empty((0, dims), dtype=np.float32)  # (n, dims)
        self.d = 0

    def build(self, x: np.ndarray, *, emit: Emit = no_emit) -> None:
        x = prepare(x, self.metric)
        self.d = x.shape[1]
        self.pca = fit_pca(x, self.dims)
        self.codes = self.pca.project(x)
        kept = float(self.pca.explained.sum())
        emit("progress", pct=100.0, message=f"pca: {self.dims} dims keep {kept:.1%} of variance")

    def search(self, queries: np.ndarray, k: int, **params: Any) -> Hits:
        """Exact search among the projected vectors. No search parameters."""
        require_built(self, self.pca is not None)
        assert self.pca is not None
        if params:
            raise TypeError(f"pca search takes no parameters, got {sorted(params)}")
        k = check_k(k)
        qs = self.pca.project(prepare(queries, self.metric, self.d, "queries"))
        block = max(1, SCAN_ELEMENTS // max(len(self.codes), 1))
        out_d = np.empty((len(qs), k), dtype=np.float32)
        out_i = np.empty((len(qs), k), dtype=np.int64)
        for s in range(0, len(qs), block):
            out_d[s : s + block], out_i[s : s + block] = top_k(
                pairwise_sq_l2(qs[s : s + block], self.codes), k
            )
        return finish(out_d, out_i, self.metric)

    @property
    def nbytes(self) -> int:
        extra = 0 if self.pca is None else self.pca.mean.nbytes + self.pca.components.nbytes
        return self.codes.nbytes + extra

    @property
    def bytes_per_vector(self) -> float:
        return 4.0 * self.dims
