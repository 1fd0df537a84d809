"""Inverted file (IVF): cut space into ``nlist`` cells with k-means, search only a few.

Build: k-means finds ``nlist`` centroids (the *coarse quantizer*); every vector goes in
the list of its nearest centroid. Search: rank the centroids by distance to the query,
scan only the ``nprobe`` nearest cells, keep the ``k`` best. A true neighbour is missed
exactly when it sits in a cell that was not probed: ``trace`` shows which.

- :class:`IVFFlatIndex` stores the vectors themselves in the lists (exact within a cell).
- :class:`IVFPQIndex` stores PQ codes of the *residual* ``x - centroid`` (the residuals
  of one cell are small and alike, so PQ codes them more precisely than raw vectors),
  and can re-rank its best candidates with exact distances if it keeps the vectors.

The scans over the probed cells are compiled loops, in ``ivfscan.py``; k-means, the
list layout and the trace stay here, in numpy.
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
from learn.lab.vindex.ivfscan import TERMS_LIMIT, rescore, scan_flat, scan_pq
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

    def _scan(
        self, qs: np.ndarray, cells: np.ndarray, coarse: np.ndarray, k: int, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scan the lists of ``cells`` (q, nprobe) for each query (q, d), ``coarse`` (q,
        nprobe) being |q - centroid|² of those cells: the ``k`` best ``(distances, list
        positions)``, both (q, k), nearest first, +inf / -1 padded."""
        raise NotImplementedError

    def _search(
        self, qs: np.ndarray, k: int, *, nprobe: int | None = None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scan the ``nprobe`` (default: the constructor's) nearest cells of each query."""
        nprobe = self.nprobe if nprobe is None else int(nprobe)
        if nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        coarse, cells = self._probe(qs, nprobe)  # (q, nprobe) each
        out_d, pos = self._scan(qs, cells, coarse, k, **params)  # (q, k) each
        out_i = np.where(pos >= 0, self.list_ids[np.maximum(pos, 0)], -1)  # rows of x
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
    """IVF with the full float32 vectors in the lists: exact inside the probed cells.

    ``device``: where searches run. On the CPU the compiled scan of ``ivfscan.py``; on a
    GPU (``"cuda"``) the lists are copied there once and searched in torch
    (``ivftorch.py``): the same answers. ``engine="torch"`` picks the torch search on the
    CPU too (how the tests check it without a GPU); ``"compiled"`` the CPU scan.
    """

    name = "ivf_flat"

    def __init__(
        self,
        nlist: int = 100,
        metric: str = "l2",
        *,
        nprobe: int = 1,
        seed: int = 0,
        iters: int = 20,
        device: str = "cpu",
        engine: str = "auto",
    ) -> None:
        super().__init__(nlist, metric, nprobe=nprobe, seed=seed, iters=iters)
        if engine not in ("auto", "compiled", "torch"):
            raise ValueError(f"engine must be auto, compiled or torch, got {engine!r}")
        self.device = device
        if engine == "auto":
            engine = "compiled" if device == "cpu" else "torch"
        if engine == "compiled" and device != "cpu":
            raise ValueError("the compiled scan runs on the CPU only: use engine='torch'")
        self.engine = engine
        self._lists: Any = None  # ivftorch.DeviceLists, made at the first torch search

    def _build(self, x: np.ndarray, emit: Emit) -> str:
        self._train_lists(x, emit)
        self.vectors = x[self.list_ids]
        self._lists = None
        return f"{len(x)} vectors in {self.nlist} lists"

    def _search(
        self, qs: np.ndarray, k: int, *, nprobe: int | None = None, **params: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.engine == "compiled":
            return super()._search(qs, k, nprobe=nprobe, **params)
        import torch

        from learn.lab.vindex.ivftorch import DeviceLists, search_flat

        nprobe = self.nprobe if nprobe is None else int(nprobe)
        if nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        assert self.centroids is not None and self.vectors is not None
        if self._lists is None:
            device = torch.device(self.device)
            self._lists = DeviceLists.of(self.centroids, self.vectors, self.offsets, device)
        out_d, pos = search_flat(self._lists, qs, nprobe, k)
        out_i = np.where(pos >= 0, self.list_ids[np.maximum(pos, 0)], -1)
        return out_d, out_i

    def _scan(
        self, qs: np.ndarray, cells: np.ndarray, coarse: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self.vectors is not None
        out_d, out_p = no_hits(len(qs), k)
        scan_flat(qs, cells, self.offsets, self.vectors, out_d, out_p)
        return out_d, out_p

    @property
    def nbytes(self) -> int:
        centroids = 0 if self.centroids is None else self.centroids.nbytes
        vectors = 0 if self.vectors is None else self.vectors.nbytes
        return vectors + self.list_ids.nbytes + centroids


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
        self.cell_terms = np.empty((0, m, 2**nbits), dtype=np.float32)  # see _cell_terms

    def _build(self, x: np.ndarray, emit: Emit) -> str:
        cells = self._train_lists(x, emit)
        assert self.centroids is not None
        residuals = x - self.centroids[cells]  # (n, d): what PQ has to encode
        self.pq.train(residuals, emit=scaled_emit(emit, 60, 95))
        self.codes = self.pq.encode(residuals[self.list_ids])
        self.vectors = x[self.list_ids] if self.keep_vectors else None
        self.cell_terms = self._cell_terms()
        return f"{len(x)} codes in {self.nlist} lists"

    def _cell_terms(self) -> np.ndarray:
        """FAISS's precomputed table: ``T1[c, j, r] = |C_j[r]|² + 2 <c_j, C_j[r]>`` (nlist,
        m, ksub), the part of ``|q - c - C_j[r]|²`` that does not depend on the query.

        Then ``|q - c - r|² = |q - c|² + T1[c] - 2 <q, r>``: a query needs one table of
        ``-2 <q_j, C_j[r]>`` (m, ksub), not one per probed cell. Empty (0, m, ksub) when
        it would take more than ``TERMS_LIMIT`` bytes; the scan then computes each
        cell's table directly.
        """
        assert self.centroids is not None and self.pq.codebooks is not None
        books = self.pq.codebooks  # (m, ksub, dsub)
        if self.nlist * books.shape[0] * books.shape[1] * 4 > TERMS_LIMIT:
            return np.empty((0, *books.shape[:2]), dtype=np.float32)
        cents = self.centroids.reshape(self.nlist, self.pq.m, self.pq.dsub)  # (nlist, m, dsub)
        norms = np.einsum("jrs,jrs->jr", books, books)  # (m, ksub)
        return (norms[None] + 2 * np.einsum("cjs,jrs->cjr", cents, books)).astype(np.float32)

    def _scan(
        self,
        qs: np.ndarray,
        cells: np.ndarray,
        coarse: np.ndarray,
        k: int,
        *,
        rerank: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """ADC against the residual codes of the probed cells; optionally re-rank exactly.

        ``rerank`` (default: the constructor's): how many ADC candidates to re-score with
        exact distances, 0 for none; needs ``keep_vectors=True``.
        """
        assert self.centroids is not None and self.pq.codebooks is not None
        rerank = self.rerank if rerank is None else int(rerank)
        if rerank > 0 and self.vectors is None:
            raise ValueError("rerank needs an index built with keep_vectors=True")
        books = self.pq.codebooks  # (m, ksub, dsub)
        books_t = np.ascontiguousarray(books.transpose(0, 2, 1))  # (m, dsub, ksub)
        r = max(rerank, k)
        out_d, out_p = no_hits(len(qs), r)
        scan_pq(
            qs,
            cells,
            coarse,
            self.offsets,
            self.codes,
            self.cell_terms,
            self.centroids,
            books,
            books_t,
            out_d,
            out_p,
        )
        if rerank <= 0:
            return out_d, out_p
        assert self.vectors is not None
        best_d, best_p = no_hits(len(qs), k)
        rescore(qs, out_p, self.vectors, best_d, best_p)
        return best_d, best_p

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
