"""PCA as compression: keep the ``dims`` directions of largest variance, search there.

Fitting centres the data and takes the top eigenvectors of its covariance. A vector is
stored as its ``dims`` coordinates along them (``4 * dims`` bytes instead of ``4 d``);
distances in that subspace drop whatever lies outside it, which is little when the data
really varies along a few directions, as embeddings do.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from learn.lab.events import Emit
from learn.lab.vindex.base import (
    BaseIndex,
    as_matrix,
    check_metric,
    pairwise_sq_l2,
    scan_blocks,
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


class PCAIndex(BaseIndex):
    """Flat search on PCA coordinates: ``4 * dims`` bytes a vector."""

    name = "pca"

    def __init__(self, dims: int = 16, metric: str = "l2") -> None:
        self.dims = dims
        self.metric = check_metric(metric)
        self.pca: PCA | None = None
        self.codes = np.empty((0, dims), dtype=np.float32)  # (n, dims)

    def _build(self, x: np.ndarray, emit: Emit) -> str:
        self.pca = fit_pca(x, self.dims)
        self.codes = self.pca.project(x)
        return f"{self.dims} dims keep {float(self.pca.explained.sum()):.1%} of variance"

    def _search(self, qs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact search among the projected vectors. No search parameters."""
        assert self.pca is not None
        codes = self.codes
        return scan_blocks(
            self.pca.project(qs), k, len(codes), lambda b: top_k(pairwise_sq_l2(b, codes), k)
        )

    @property
    def nbytes(self) -> int:
        extra = 0 if self.pca is None else self.pca.mean.nbytes + self.pca.components.nbytes
        return self.codes.nbytes + extra

    @property
    def bytes_per_vector(self) -> float:
        return 4.0 * self.dims
