"""Product quantization: cut each vector into ``m`` sub-vectors and store, for each, the
number of its nearest centroid in a small learned codebook.

With ``d = m * dsub`` and ``ksub = 2**nbits`` centroids per sub-space::

    x  = [x_0 | x_1 | ... | x_{m-1}]          # m sub-vectors of dsub floats
    code_j = argmin_c |x_j - C_j[c]|²          # nbits each: m * nbits / 8 bytes in all
    x̂  = [C_0[code_0] | ... | C_{m-1}[code_{m-1}]]

Search never decodes: for a query it fills a table ``T[j, c] = |q_j - C_j[c]|²``
(m × ksub numbers), then the distance to any stored vector is ``Σ_j T[j, code_j]``,
m look-ups and adds (asymmetric distance computation, "ADC": the query stays exact).
"""

from __future__ import annotations

import numpy as np

from learn.lab.events import Emit, no_emit
from learn.lab.vindex.base import (
    BaseIndex,
    as_matrix,
    check_metric,
    pairwise_sq_l2,
    scan_blocks,
    top_k,
)
from learn.lab.vindex.kmeans import assign, kmeans


class ProductQuantizer:
    """The trainer and codec: ``m`` codebooks of ``2**nbits`` centroids each."""

    def __init__(self, m: int, nbits: int = 8, *, seed: int = 0, iters: int = 20) -> None:
        if m < 1:
            raise ValueError(f"m must be >= 1, got {m}")
        if not 1 <= nbits <= 8:
            raise ValueError(f"nbits must be between 1 and 8 (codes are uint8), got {nbits}")
        self.m, self.nbits, self.seed, self.iters = m, nbits, seed, iters
        self.ksub = 2**nbits
        self.d = 0
        self.dsub = 0
        self.codebooks: np.ndarray | None = None  # (m, ksub, dsub) float32

    def _split(self, x: np.ndarray) -> np.ndarray:
        """(n, d) -> (m, n, dsub): sub-vector j of every row is ``out[j]``."""
        return x.reshape(len(x), self.m, self.dsub).transpose(1, 0, 2)

    def train(self, x: np.ndarray, *, emit: Emit = no_emit) -> ProductQuantizer:
        x = as_matrix(x)
        n, d = x.shape
        if d % self.m:
            raise ValueError(f"dimension {d} is not divisible by m={self.m}")
        if n < self.ksub:
            raise ValueError(f"need at least 2**nbits = {self.ksub} training rows, got {n}")
        self.d, self.dsub = d, d // self.m
        subs = self._split(x)
        books = np.empty((self.m, self.ksub, self.dsub), dtype=np.float32)
        for j in range(self.m):
            sub = np.ascontiguousarray(subs[j])
            books[j] = kmeans(sub, self.ksub, iters=self.iters, seed=self.seed + j).centroids
            emit("progress", pct=100.0 * (j + 1) / self.m, message=f"PQ codebook {j + 1}/{self.m}")
        self.codebooks = books
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, d) float32 -> (n, m) uint8: the nearest centroid in each sub-space."""
        assert self.codebooks is not None, "train first"
        subs = self._split(as_matrix(x, self.d))
        codes = np.empty((subs.shape[1], self.m), dtype=np.uint8)
        for j in range(self.m):
            codes[:, j] = assign(np.ascontiguousarray(subs[j]), self.codebooks[j])[0]
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, m) uint8 -> (n, d) float32: the concatenated chosen centroids."""
        assert self.codebooks is not None, "train first"
        parts = self.codebooks[np.arange(self.m), codes.astype(np.int64)]  # (n, m, dsub)
        return parts.reshape(len(codes), self.d)

    def distance_tables(self, queries: np.ndarray) -> np.ndarray:
        """(q, d) -> (q, m, ksub): ``T[i, j, c] = |q_i,j - C_j[c]|²``."""
        assert self.codebooks is not None, "train first"
        subs = self._split(as_matrix(queries, self.d))
        tables = np.empty((subs.shape[1], self.m, self.ksub), dtype=np.float32)
        for j in range(self.m):
            tables[:, j, :] = pairwise_sq_l2(np.ascontiguousarray(subs[j]), self.codebooks[j])
        return tables

    def adc(self, tables: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Approximate squared distances from table look-ups.

        ``tables`` (q, m, ksub), ``codes`` (n, m) uint8 -> (q, n) float32.
        """
        dist = np.zeros((len(tables), len(codes)), dtype=np.float32)
        for j in range(self.m):
            dist += tables[:, j, codes[:, j]]  # (q, n): look up each row's code j
        return dist

    @property
    def code_bytes(self) -> float:
        """Bytes per encoded vector if codes were bit-packed: ``m * nbits / 8``."""
        return self.m * self.nbits / 8

    @property
    def nbytes(self) -> int:
        return 0 if self.codebooks is None else self.codebooks.nbytes


class PQIndex(BaseIndex):
    """Flat scan over PQ codes with asymmetric distances: ``m * nbits / 8`` bytes a vector."""

    name = "pq"

    def __init__(self, m: int = 8, nbits: int = 8, metric: str = "l2", *, seed: int = 0) -> None:
        self.metric = check_metric(metric)
        self.pq = ProductQuantizer(m, nbits, seed=seed)
        self.codes: np.ndarray | None = None  # (n, m) uint8

    def _build(self, x: np.ndarray, emit: Emit) -> str:
        self.pq.train(x, emit=emit)
        self.codes = self.pq.encode(x)
        return f"encoded {len(x)} vectors"

    def _search(self, qs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Scan every code with ADC. No search parameters."""
        assert self.codes is not None
        codes = self.codes
        return scan_blocks(
            qs, k, len(codes), lambda b: top_k(self.pq.adc(self.pq.distance_tables(b), codes), k)
        )

    @property
    def nbytes(self) -> int:
        n = 0 if self.codes is None else len(self.codes)
        return int(np.ceil(n * self.pq.code_bytes)) + self.pq.nbytes

    @property
    def bytes_per_vector(self) -> float:
        return self.pq.code_bytes
