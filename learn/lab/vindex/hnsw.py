"""HNSW from scratch: a hierarchy of proximity graphs searched greedily from the top.

Malkov & Yashunin, "Efficient and robust approximate nearest neighbor search using
Hierarchical Navigable Small World graphs" (2016); the same choices as hnswlib.

- Every vector gets a random level ``floor(-ln U / ln M)``: all are on layer 0, about
  1 in ``M`` also on layer 1, 1 in ``M²`` on layer 2, ... The top layers are sparse
  "express lanes", layer 0 holds everyone.
- Each node keeps at most ``M`` links per layer (``2 M`` on layer 0).
- Search: start at the single entry point on the top layer, walk greedily to the
  nearest node on each layer (beam width 1), drop a layer, repeat; on layer 0 run a
  beam search that keeps the ``ef`` best nodes seen and stops when the nearest unexpanded
  candidate is farther than the worst of those.
- Insert: search for the new vector with beam ``ef_construction``, then link it to up to
  ``M`` of the candidates picked by the *heuristic*: take candidates nearest first and
  skip any that is closer to an already chosen neighbour than to the new node. That
  keeps links pointing in different directions, so the graph stays navigable across
  clusters. A neighbour whose list overflows is pruned with the same rule.

Distances are squared L2 (``metric="cosine"`` normalises and reports ``1 - cos``).
Each expansion computes the distances to all unvisited neighbours of a node in one
numpy call; the heap bookkeeping stays plain Python so the algorithm reads as written.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from learn.lab.events import Emit
from learn.lab.vindex.base import (
    BaseIndex,
    check_k,
    check_metric,
    no_hits,
    pairwise_sq_l2,
    prepare,
    sq_l2,
    sq_l2_rows,
)


@dataclass
class Hop:
    node: int
    distance: float  # to the query


@dataclass
class LayerTrace:
    layer: int
    hops: list[Hop]  # the nearest node found so far, each time it changes; starts at entry
    visited: int  # distance computations made on this layer


@dataclass
class HNSWTrace:
    """The path one query took: per layer, top first, the successive nearest nodes.

    The last hop on layer 0 is the nearest node found, i.e. ``ids[0]``.
    """

    entry: int
    max_level: int
    ef: int
    layers: list[LayerTrace]
    ids: list[int]
    distances: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def select_neighbours(ids: np.ndarray, dists: np.ndarray, x: np.ndarray, m: int) -> np.ndarray:
    """The neighbour-selection heuristic (HNSW paper, algorithm 4; hnswlib's version).

    ``ids`` (c,) are candidates sorted by ``dists`` (c,), their distance to the base point.
    Walk them nearest first and keep one unless a kept neighbour is closer to it than
    the base point is; stop at ``m``. Returns the kept ids (≤ m,), nearest first.
    """
    if len(ids) <= m:
        return ids
    vecs = x[ids]  # (c, d)
    between = pairwise_sq_l2(vecs, vecs)  # (c, c) candidate-to-candidate
    # shadows[a, s]: candidate s is closer to candidate a than the base point is
    shadows = between < dists[:, None]
    blocked = np.zeros(len(ids), dtype=bool)
    kept: list[int] = []
    a = 0
    while True:
        kept.append(a)
        if len(kept) == m:
            break
        blocked |= shadows[:, a]  # everyone that a shadows is out
        rest = np.flatnonzero(~blocked[a + 1 :])
        if len(rest) == 0:
            break
        a = a + 1 + int(rest[0])
    return ids[kept]


class HNSWIndex(BaseIndex):
    """Hierarchical navigable small world graph. Build once; ``ef_search`` per search."""

    name = "hnsw"
    search_params = ("ef_search",)

    def __init__(
        self,
        M: int = 16,
        ef_construction: int = 100,
        metric: str = "l2",
        *,
        ef_search: int = 50,
        seed: int = 0,
    ) -> None:
        if M < 2 or ef_construction < 1 or ef_search < 1:
            raise ValueError("need M >= 2, ef_construction >= 1 and ef_search >= 1")
        self.M, self.M0 = M, 2 * M  # links per node on upper layers / on layer 0
        self.ef_construction, self.ef_search, self.seed = ef_construction, ef_search, seed
        self.metric = check_metric(metric)
        self.level_mult = 1.0 / math.log(M)  # mL in the paper
        self.x = np.empty((0, 0), dtype=np.float32)  # (n, d)
        self.levels = np.empty(0, dtype=np.int8)  # (n,) top layer of each node
        self.links0 = np.empty((0, self.M0), dtype=np.int32)  # (n, 2M) layer-0 links, -1 pad
        self.degree0 = np.empty(0, dtype=np.int32)  # (n,) links used in each links0 row
        self.upper: list[dict[int, np.ndarray]] = []  # upper[l - 1][node]: links on layer l
        self.entry = -1
        self.max_level = -1
        self._visited = np.empty(0, dtype=np.int32)  # visit tag per node, see _new_tag
        self._tag = 0

    # -- graph storage ----------------------------------------------------------------
    def neighbours(self, node: int, layer: int) -> np.ndarray:
        """Links of ``node`` on ``layer`` (≤ M or 2M,) int32."""
        if layer == 0:
            return self.links0[node, : self.degree0[node]]
        return self.upper[layer - 1][node]

    def _set_links(self, node: int, layer: int, links: np.ndarray) -> None:
        if layer == 0:
            self.links0[node, : len(links)] = links
            self.degree0[node] = len(links)
        else:
            self.upper[layer - 1][node] = links.astype(np.int32)

    def _new_tag(self) -> int:
        """A fresh visit mark: node ``i`` is visited in this search iff visited[i] == tag.
        Cheaper than clearing a boolean array for every search."""
        self._tag += 1
        if self._tag == np.iinfo(np.int32).max:
            self._visited[:] = 0
            self._tag = 1
        return self._tag

    # -- search -------------------------------------------------------------------------
    def _search_layer(
        self,
        q: np.ndarray,
        entry: list[tuple[float, int]],
        ef: int,
        layer: int,
        hops: list[Hop] | None = None,
    ) -> tuple[list[tuple[float, int]], int]:
        """Beam search on one layer (paper, algorithm 2).

        ``entry``: ``(distance, node)`` starting points. Returns the ``ef`` nearest nodes
        found as ``(distance, node)``, nearest first, and the number of distances computed.
        With ``hops``, appends a :class:`Hop` each time a nearer node turns up.
        """
        tag = self._new_tag()
        for _, node in entry:
            self._visited[node] = tag
        candidates = list(entry)  # min-heap on distance: nodes still to expand
        heapq.heapify(candidates)
        found = [(-d, node) for d, node in entry]  # max-heap (negated): the ef best so far
        heapq.heapify(found)
        while len(found) > ef:
            heapq.heappop(found)
        best = min(entry)
        computed = 0
        while candidates:
            dist, node = heapq.heappop(candidates)
            if dist > -found[0][0]:
                break  # nearest unexpanded is worse than the worst kept: done
            nbrs = self.neighbours(node, layer)
            nbrs = nbrs[self._visited.take(nbrs) != tag]  # (u,) unvisited neighbours
            if len(nbrs) == 0:
                continue
            self._visited[nbrs] = tag
            nd = sq_l2_rows(q, self.x, nbrs)  # (u,) all their distances in one go
            computed += len(nbrs)
            if len(found) >= ef:  # only those beating the current worst can enter
                keep = nd < -found[0][0]
                nbrs, nd = nbrs[keep], nd[keep]
            for d_new, n_new in zip(nd.tolist(), nbrs.tolist(), strict=True):
                if len(found) < ef:
                    heapq.heappush(found, (-d_new, n_new))
                elif d_new < -found[0][0]:
                    heapq.heapreplace(found, (-d_new, n_new))
                else:
                    continue
                heapq.heappush(candidates, (d_new, n_new))
                if hops is not None and d_new < best[0]:
                    best = (d_new, n_new)
                    hops.append(Hop(n_new, d_new))
        return sorted((-d, node) for d, node in found), computed

    def _descend(
        self, q: np.ndarray, to_layer: int, trace: list[LayerTrace] | None = None
    ) -> list[tuple[float, int]]:
        """Greedy walk (beam 1) from the entry point down to ``to_layer`` + 1.
        Returns the nearest node found as a one-element entry list for ``to_layer``."""
        ep = [(float(sq_l2(q, self.x[[self.entry]])[0]), self.entry)]
        for layer in range(self.max_level, to_layer, -1):
            hops = [Hop(ep[0][1], ep[0][0])] if trace is not None else None
            ep, computed = self._search_layer(q, ep, 1, layer, hops)
            if trace is not None and hops is not None:
                trace.append(LayerTrace(layer, hops, computed))
        return ep

    def _search_one(
        self, q: np.ndarray, k: int, ef: int, trace: list[LayerTrace] | None = None
    ) -> list[tuple[float, int]]:
        ep = self._descend(q, 0, trace)
        hops = [Hop(ep[0][1], ep[0][0])] if trace is not None else None
        found, computed = self._search_layer(q, ep, max(ef, k), 0, hops)
        if trace is not None and hops is not None:
            trace.append(LayerTrace(0, hops, computed))
        return found[:k]

    def _search(
        self, qs: np.ndarray, k: int, *, ef_search: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``k`` nearest for each query (q, d); beam ``ef_search`` (at least ``k``) on layer 0."""
        ef = self.ef_search if ef_search is None else int(ef_search)
        out_d, out_i = no_hits(len(qs), k)
        for i, q in enumerate(qs):
            found = self._search_one(q, k, ef)
            out_d[i, : len(found)] = [d for d, _ in found]
            out_i[i, : len(found)] = [node for _, node in found]
        return out_d, out_i

    def trace(self, query: np.ndarray, k: int = 10, *, ef_search: int | None = None) -> HNSWTrace:
        """Search one query and record its hops on every layer (top layer first)."""
        self._check_built()
        ef = self.ef_search if ef_search is None else int(ef_search)
        q = prepare(query, self.metric, self.d, "query")[0]
        layers: list[LayerTrace] = []
        found = self._search_one(q, check_k(k), ef, layers)
        scale = 0.5 if self.metric == "cosine" else 1.0
        for lt in layers:
            for hop in lt.hops:
                hop.distance *= scale
        return HNSWTrace(
            entry=self.entry,
            max_level=self.max_level,
            ef=max(ef, k),
            layers=layers,
            ids=[node for _, node in found],
            distances=[d * scale for d, _ in found],
        )

    # -- build --------------------------------------------------------------------------
    def _build(self, x: np.ndarray, emit: Emit) -> str:
        """Insert the rows of ``x`` (n, d) one by one (paper, algorithm 1)."""
        n = len(x)
        rng = np.random.default_rng(self.seed)
        self.x = x
        # levels are drawn up front (same seed, same graph): -ln(U) * mL, U in (0, 1]
        self.levels = np.floor(-np.log(1.0 - rng.random(n)) * self.level_mult).astype(np.int8)
        self.links0 = np.full((n, self.M0), -1, dtype=np.int32)
        self.degree0 = np.zeros(n, dtype=np.int32)
        self.upper = [{} for _ in range(int(self.levels.max(initial=0)))]
        self._visited = np.zeros(n, dtype=np.int32)
        self._tag = 0
        self.entry, self.max_level = -1, -1
        step = max(1, n // 50)
        for i in range(n):
            self._insert(i)
            if (i + 1) % step == 0 and i + 1 < n:  # build reports the last one
                emit("progress", pct=100.0 * (i + 1) / n, message=f"hnsw: inserted {i + 1}/{n}")
        return f"inserted {n}/{n}"

    def _insert(self, node: int) -> None:
        level = int(self.levels[node])
        if self.entry < 0:  # the first node is the whole graph
            self.entry, self.max_level = node, level
            for layer in range(1, level + 1):
                self._set_links(node, layer, np.empty(0, dtype=np.int32))
            return
        q = self.x[node]
        ep = self._descend(q, level)
        for layer in range(min(level, self.max_level), -1, -1):
            found, _ = self._search_layer(q, ep, self.ef_construction, layer)
            ids = np.array([v for _, v in found], dtype=np.int32)
            dists = np.array([d for d, _ in found], dtype=np.float32)
            links = select_neighbours(ids, dists, self.x, self.M)
            self._set_links(node, layer, links)
            for other in links.tolist():
                self._add_link(other, node, layer)
            ep = found  # every candidate found is an entry point for the layer below
        for layer in range(self.max_level + 1, level + 1):  # new top layers: alone there
            self._set_links(node, layer, np.empty(0, dtype=np.int32))
        if level > self.max_level:
            self.entry, self.max_level = node, level

    def _add_link(self, node: int, new: int, layer: int) -> None:
        """Link ``node`` -> ``new``; if that overflows, keep the heuristic's choice."""
        cap = self.M0 if layer == 0 else self.M
        links = self.neighbours(node, layer)
        if len(links) < cap:
            if layer == 0:
                self.links0[node, self.degree0[node]] = new
                self.degree0[node] += 1
            else:
                self._set_links(node, layer, np.append(links, new))
            return
        cand = np.append(links, new).astype(np.int32)  # (cap + 1,)
        dists = sq_l2(self.x[node], self.x[cand])
        order = np.argsort(dists, kind="stable")
        kept = select_neighbours(cand[order], dists[order], self.x, cap)
        if layer == 0:
            self.links0[node] = -1
        self._set_links(node, layer, kept)

    # -- size ---------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        upper = sum(4 * len(v) for layer in self.upper for v in layer.values())
        return self.x.nbytes + self.links0.nbytes + self.degree0.nbytes + self.levels.nbytes + upper
