"""Inverted file (IVF): cut space into ``nlist`` cells with k-means, search only a few.

Build: k-means finds ``nlist`` centroids (the *coarse quantizer*); every vector goes in
the list of its nearest centroid. Search: rank the centroids by distance to the query,
scan only the ``nprobe`` nearest cells, keep the ``k`` best. A true neighbour is missed
exactly when it sits in a cell that was not probed: ``trace`` shows which.

- :class:`IVFFlatIndex` stores the vectors themselves in the lists (exact within a cell).
- :class:`IVFPQIndex` stores PQ codes of the *residual* ``x - centroid`` (the residuals
  of one cell are small and alike, so PQ codes them more precisely than raw vectors),
  and can re-rank its best candidates with exact distances if it keeps the vectors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from learn.lab.events import Emit, scaled_emit
from learn.lab.vindex.base import (
    BaseIndex,
    check_metric,
    no_hits,
    pairwise_sq_l2,
    prepare,
    top_k,
)
from learn.lab.vindex.kmeans import kmeans
from learn.lab.vindex.pq import ProductQuantizer


@dataclass
class ProbedCell:
    cell: int
    centroid_distance: float  # query to this cell's centroid (the index's metric)
    size: int  # vectors stored in the cell, all of them scanned


@dataclass
class TrueNeighbour:
    id: int
    distance: float  # exact distance to the query
    cell: int  # the cell whose list holds this vector
    probed: bool  # was that cell scanned?
    found: bool  # is the id in the returned top k?


@dataclass
class IVFTrace:
    """What one IVF query did: the cells it scanned and where its true neighbours live."""

    nprobe: int
    nlist: int
    cells: list[ProbedCell]  # in probe order, nearest centroid first; len == nprobe
    neighbours: list[TrueNeighbour]  # exact top k, nearest first
    ids: list[int]  # the index's answer
    distances: list[float]
    scanned: int  # vectors compared with the query
    recall: float  # fraction of the true top k that was returned

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _IVF(BaseIndex):
    """The coarse quantizer and the inverted lists, shared by IVF-Flat and IVF-PQ.

    Lists are stored back to back, sorted by cell: cell ``c`` owns positions
    ``offsets[c]:offsets[c + 1]`` of ``list_ids`` (and of the vectors or codes).
    """

    name = "ivf"
    search_params: tuple[str, ...] = ("nprobe",)

    def __init__(
        self,
        nlist: int = 100,
        metric: str = "l2",
        *,
        nprobe: int = 1,
        seed: int = 0,
        iters: int = 20,
    ) -> None:
        if nlist < 1 or nprobe < 1:
            raise ValueError(f"nlist and nprobe must be >= 1, got {nlist}, {nprobe}")
        self.nlist, self.nprobe, self.seed, self.iters = nlist, nprobe, seed, iters
        self.metric = check_metric(metric)
        self.centroids: np.ndarray | None = None  # (nlist, d) float32
        self.offsets = np.zeros(nlist + 1, dtype=np.int64)  # (nlist + 1,)
        self.list_ids = np.empty(0, dtype=np.int64)  # (n,) original row of each position
        # (n, d) the vectors in list order: IVF-Flat's lists; IVF-PQ's only with keep_vectors
        self.vectors: np.ndarray | None = None

    def _train_lists(self, x: np.ndarray, emit: Emit) -> np.ndarray:
        """k-means, then lay the rows out cell by cell. Returns the cell of each row (n,)."""
        if len(x) < self.nlist:
            raise ValueError(f"nlist={self.nlist} is more than the {len(x)} vectors")
        km = kmeans(x, self.nlist, iters=self.iters, seed=self.seed, emit=scaled_emit(emit, 0, 60))
        self.centroids = km.centroids
        self.list_ids = np.argsort(km.assignments, kind="stable")  # (n,) grouped by cell
        counts = np.bincount(km.assignments, minlength=self.nlist)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return km.assignments

    def _probe(self, qs: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``nprobe`` nearest cells of each query -> (distances, cells), both (q, nprobe)."""
        assert self.centroids is not None
        return top_k(pairwise_sq_l2(qs, self.centroids), min(nprobe, self.nlist))

    def _positions(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """List positions covered by ``cells`` (p,), concatenated in probe order.

        Returns ``(positions, owner)``, both (m,): ``owner[i]`` is the index in ``cells``
        of the cell that position ``i`` belongs to.
        """
        starts, ends = self.offsets[cells], self.offsets[cells + 1]  # (p,)
        ranges = [np.arange(s, e) for s, e in zip(starts, ends, strict=True)]
        positions = np.concatenate(ranges) if ranges else np.empty(0, dtype=np.int64)
        owner = np.repeat(np.arange(len(cells)), ends - starts)  # (m,)
        return positions, owner

    def _scan(
        self, q: np.ndarray, cells: np.ndarray, k: int, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Distances (m,) and list positions (m,) of the best candidates in ``cells``."""
        raise NotImplementedError

    def _search(
        self, qs: np.ndarray, k: int, *, nprobe: int | None = None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scan the ``nprobe`` (default: the constructor's) nearest cells of each query."""
        nprobe = self.nprobe if nprobe is None else int(nprobe)
        if nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        _, cells = self._probe(qs, nprobe)  # (q, nprobe)
        out_d, out_i = no_hits(len(qs), k)
        for i, q in enumerate(qs):
            dist, pos = self._scan(q, cells[i], k, **params)
            best_d, cols = top_k(dist[None, :], k)  # (1, k)
            ok = cols[0] >= 0
            out_d[i] = best_d[0]
            out_i[i, ok] = self.list_ids[pos[cols[0, ok]]]
        return out_d, out_i

    def cell_of(self) -> np.ndarray:
        """The cell holding each original row (n,) int64, recovered from the list layout."""
        cells = np.empty(len(self.list_ids), dtype=np.int64)
        sizes = np.diff(self.offsets)
        cells[self.list_ids] = np.repeat(np.arange(self.nlist), sizes)
        return cells

    def trace(
        self,
        query: np.ndarray,
        k: int = 10,
        *,
        nprobe: int | None = None,
        data: np.ndarray | None = None,
        **params: Any,
    ) -> IVFTrace:
        """Search one query and explain the answer.

        ``data`` (n, d) is the indexed matrix, needed to find the exact neighbours when the
        index keeps no raw vectors (IVF-PQ without ``keep_vectors``).
        """
        self._check_built()
        nprobe = min(self.nprobe if nprobe is None else int(nprobe), self.nlist)
        q = prepare(query, self.metric, self.d, "query")
        hits = self.search(q, k, nprobe=nprobe, **params)
        probe_d, cells = self._probe(q, nprobe)
        raw = self._raw_vectors() if data is None else prepare(data, self.metric, self.d, "data")
        if raw is None:
            raise ValueError("this index keeps no vectors: pass data= to find true neighbours")
        true_d, true_i = top_k(pairwise_sq_l2(q, raw), k)
        cell_of = self.cell_of()
        probed = {int(c) for c in cells[0]}
        found = {int(i) for i in hits.ids[0] if i >= 0}
        scale = 0.5 if self.metric == "cosine" else 1.0  # report 1 - cos, as search does
        neighbours = [
            TrueNeighbour(
                int(i),
                float(dd) * scale,
                int(cell_of[i]),
                int(cell_of[i]) in probed,
                int(i) in found,
            )
            for dd, i in zip(true_d[0], true_i[0], strict=True)
            if i >= 0
        ]
        return IVFTrace(
            nprobe=nprobe,
            nlist=self.nlist,
            cells=[
                ProbedCell(int(c), float(dd) * scale, int(self.offsets[c + 1] - self.offsets[c]))
                for dd, c in zip(probe_d[0], cells[0], strict=True)
            ],
            neighbours=neighbours,
            ids=[int(i) for i in hits.ids[0]],
            distances=[float(dd) for dd in hits.distances[0]],
            scanned=int(sum(self.offsets[c + 1] - self.offsets[c] for c in cells[0])),
            recall=sum(n.found for n in neighbours) / max(len(neighbours), 1),
        )

    def _raw_vectors(self) -> np.ndarray | None:
        """The indexed vectors in original row order, if the index keeps them."""
        if self.vectors is None:
            return None
        out = np.empty_like(self.vectors)
        out[self.list_ids] = self.vectors
        return out


class IVFFlatIndex(_IVF):
    """IVF with the full float32 vectors in the lists: exact inside the probed cells."""

    name = "ivf_flat"
    norms = np.empty(0, dtype=np.float32)  # (n,) squared norms of the vectors, list order

    def _build(self, x: np.ndarray, emit: Emit) -> str:
        self._train_lists(x, emit)
        self.vectors = x[self.list_ids]
        self.norms = np.einsum("nd,nd->n", self.vectors, self.vectors)
        return f"{len(x)} vectors in {self.nlist} lists"

    def _scan(self, q: np.ndarray, cells: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.vectors is not None
        pos, _ = self._positions(cells)  # (m,)
        dist = self.norms[pos] - 2.0 * (self.vectors[pos] @ q) + q @ q  # (m,) |x - q|²
        return np.maximum(dist, 0.0), pos

    @property
    def nbytes(self) -> int:
        centroids = 0 if self.centroids is None else self.centroids.nbytes
        vectors = 0 if self.vectors is None else self.vectors.nbytes
        return vectors + self.norms.nbytes + self.list_ids.nbytes + centroids


class IVFPQIndex(_IVF):
    """IVF whose lists hold PQ codes of residuals; ``m * nbits / 8`` bytes a vector
    (+ 8 for its id, + ``4 d`` if ``keep_vectors`` for exact re-ranking)."""

    name = "ivf_pq"
    search_params = ("nprobe", "rerank")

    def __init__(
        self,
        nlist: int = 100,
        m: int = 8,
        nbits: int = 8,
        metric: str = "l2",
        *,
        nprobe: int = 1,
        rerank: int = 0,
        keep_vectors: bool = False,
        seed: int = 0,
        iters: int = 20,
    ) -> None:
        super().__init__(nlist, metric, nprobe=nprobe, seed=seed, iters=iters)
        self.pq = ProductQuantizer(m, nbits, seed=seed + 1, iters=iters)
        self.rerank = rerank
        self.keep_vectors = keep_vectors
        self.codes = np.empty((0, m), dtype=np.uint8)  # (n, m) in list order

    def _build(self, x: np.ndarray, emit: Emit) -> str:
        cells = self._train_lists(x, emit)
        assert self.centroids is not None
        residuals = x - self.centroids[cells]  # (n, d): what PQ has to encode
        self.pq.train(residuals, emit=scaled_emit(emit, 60, 95))
        self.codes = self.pq.encode(residuals[self.list_ids])
        self.vectors = x[self.list_ids] if self.keep_vectors else None
        return f"{len(x)} codes in {self.nlist} lists"

    def _scan(
        self, q: np.ndarray, cells: np.ndarray, k: int, *, rerank: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """ADC against the residual codes of the probed cells; optionally re-rank exactly.

        ``rerank`` (default: the constructor's): how many ADC candidates to re-score with
        exact distances, 0 for none; needs ``keep_vectors=True``.
        """
        assert self.centroids is not None
        rerank = self.rerank if rerank is None else int(rerank)
        pos, owner = self._positions(cells)  # (m,) each
        if len(pos) == 0:
            return np.empty(0, dtype=np.float32), pos
        # one table per probed cell, for the query's residual from that centroid
        tables = self.pq.distance_tables(q[None, :] - self.centroids[cells])  # (p, M, ksub)
        codes = self.codes[pos]  # (m, M)
        dist = np.zeros(len(pos), dtype=np.float32)
        for j in range(self.pq.m):
            dist += tables[owner, j, codes[:, j]]
        if rerank <= 0:
            return dist, pos
        if self.vectors is None:
            raise ValueError("rerank needs an index built with keep_vectors=True")
        _, cand = top_k(dist[None, :], min(max(rerank, k), len(pos)))
        pos = pos[cand[0]]
        diff = self.vectors[pos] - q
        return np.einsum("md,md->m", diff, diff), pos

    @property
    def nbytes(self) -> int:
        centroids = 0 if self.centroids is None else self.centroids.nbytes
        n = len(self.list_ids)
        raw = 0 if self.vectors is None else self.vectors.nbytes
        return (
            int(np.ceil(n * self.pq.code_bytes))
            + self.list_ids.nbytes
            + centroids
            + self.pq.nbytes
            + raw
        )
