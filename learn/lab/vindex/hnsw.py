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
The graph lives in flat numpy arrays (:class:`Graph`) and the functions that walk it
are compiled with numba (``@njit``): plain loops and ``heapq``, read as written, run at
C speed. The class around them only validates, draws levels and reports progress.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
from numba import njit
from numba.typed import List

from learn.lab.events import Emit
from learn.lab.vindex.base import BaseIndex, check_k, check_metric, no_hits, prepare
from learn.lab.vindex.compiled import FAST, sq_dist

ENTRY, MAX_LEVEL, TAG = 0, 1, 2  # the fields of Graph.state


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


class Graph(NamedTuple):
    """The whole index as arrays (what compiled code can read and write).

    Node ``i`` has links on layers ``0..levels[i]``. Layer 0 links are row ``i`` of
    ``links0``; layer ``l ≥ 1`` links are row ``upper_row[i] + l - 1`` of ``links_up``.
    Rows are padded with -1 after their ``degree``.
    """

    x: np.ndarray  # (n, d) float32 the vectors
    levels: np.ndarray  # (n,) int32 top layer of each node
    links0: np.ndarray  # (n, 2M) int32 layer-0 links
    degree0: np.ndarray  # (n,) int32 links used in each links0 row
    upper_row: np.ndarray  # (n,) int64 first links_up row of a node, -1 for level 0
    links_up: np.ndarray  # (rows, M) int32 links on layers ≥ 1
    degree_up: np.ndarray  # (rows,) int32
    visited: np.ndarray  # (n,) int64 visit tag per node: visited in this search iff == tag
    state: np.ndarray  # (3,) int64 entry point, max level, last visit tag


@njit(cache=True, inline="always")
def neighbours(g: Graph, node: int, layer: int) -> np.ndarray:
    """Links of ``node`` on ``layer`` (≤ M or 2M,) int32."""
    if layer == 0:
        return g.links0[node, : g.degree0[node]]
    row = g.upper_row[node] + layer - 1
    return g.links_up[row, : g.degree_up[row]]


@njit(cache=True)
def set_links(g: Graph, node: int, layer: int, links: np.ndarray) -> None:
    if layer == 0:
        g.links0[node, : len(links)] = links
        g.degree0[node] = len(links)
    else:
        row = g.upper_row[node] + layer - 1
        g.links_up[row, : len(links)] = links
        g.degree_up[row] = len(links)


@njit(cache=True, inline="always")
def new_tag(g: Graph) -> int:
    """A fresh visit mark: cheaper than clearing a boolean array for every search."""
    g.state[TAG] += 1
    return g.state[TAG]


@njit(cache=True, fastmath=FAST)
def search_layer(g: Graph, q: np.ndarray, entry: Any, ef: int, layer: int) -> Any:
    """Beam search on one layer (paper, algorithm 2).

    ``entry``: list of ``(distance, node)`` starting points. Returns the ``ef`` nearest
    nodes found as ``(distance, node)``, nearest first; the number of distances computed;
    and the hops: ``(node, distance)`` each time a nearer node turned up, entry first.
    """
    tag = new_tag(g)
    for _, node in entry:
        g.visited[node] = tag
    candidates = [(d, node) for d, node in entry]  # min-heap: nodes still to expand
    heapq.heapify(candidates)
    found = [(-d, node) for d, node in entry]  # max-heap (negated): the ef best so far
    heapq.heapify(found)
    while len(found) > ef:
        heapq.heappop(found)
    best_d, best = min(entry)
    hops = [(best, best_d)]
    computed = 0
    while len(candidates) > 0:
        dist, node = heapq.heappop(candidates)
        if dist > -found[0][0]:
            break  # nearest unexpanded is worse than the worst kept: done
        for nb in neighbours(g, node, layer):
            if g.visited[nb] == tag:
                continue
            g.visited[nb] = tag
            d = sq_dist(q, g.x[nb])
            computed += 1
            if len(found) < ef or d < -found[0][0]:  # beats the worst kept: keep, expand later
                heapq.heappush(candidates, (d, np.int64(nb)))
                heapq.heappush(found, (-d, np.int64(nb)))
                if len(found) > ef:
                    heapq.heappop(found)
                if d < best_d:
                    best_d, best = d, np.int64(nb)
                    hops.append((best, best_d))
    nearest = [(-d, node) for d, node in found]
    nearest.sort()
    return nearest, computed, hops


@njit(cache=True, fastmath=FAST)
def start(g: Graph, q: np.ndarray) -> Any:
    """The entry point as a one-element ``[(distance, node)]`` list."""
    entry = g.state[ENTRY]
    return [(sq_dist(q, g.x[entry]), entry)]


@njit(cache=True)
def descend(g: Graph, q: np.ndarray, to_layer: int) -> Any:
    """Greedy walk (beam 1) from the entry point down to ``to_layer`` + 1.
    Returns the nearest node found as a one-element entry list for ``to_layer``."""
    ep = start(g, q)
    for layer in range(g.state[MAX_LEVEL], to_layer, -1):
        ep, _, _ = search_layer(g, q, ep, 1, layer)
    return ep


@njit(cache=True)
def search_one(g: Graph, q: np.ndarray, k: int, ef: int) -> Any:
    """The ``k`` nearest ``(distance, node)`` of ``q`` (d,): descend, then beam ``ef``."""
    found, _, _ = search_layer(g, q, descend(g, q, 0), max(ef, k), 0)
    return found[:k]


@njit(cache=True)
def search_many(g: Graph, qs: np.ndarray, k: int, ef: int, out_d: Any, out_i: Any) -> None:
    """:func:`search_one` for each query (q, d), written into ``out_d``/``out_i`` (q, k)."""
    for i in range(len(qs)):
        for j, (d, node) in enumerate(search_one(g, qs[i], k, ef)):
            out_d[i, j], out_i[i, j] = d, node


@njit(cache=True, fastmath=FAST)
def select_neighbours(g: Graph, candidates: Any, m: int) -> np.ndarray:
    """The neighbour-selection heuristic (HNSW paper, algorithm 4; hnswlib's version).

    ``candidates``: ``(distance to the base point, node)`` nearest first. Walk them and
    keep one unless a kept neighbour is closer to it than the base point is; stop at ``m``.
    Returns the kept nodes (≤ m,) int32, nearest first.
    """
    kept = np.empty(min(len(candidates), m), dtype=np.int32)
    n_kept = 0
    for d, c in candidates:
        if n_kept == len(kept):
            break
        if len(candidates) > m:  # with room for all, hnswlib keeps all
            shadowed = False
            for j in range(n_kept):
                if sq_dist(g.x[c], g.x[kept[j]]) < d:  # a kept one is nearer to c than base
                    shadowed = True
                    break
            if shadowed:
                continue
        kept[n_kept] = c
        n_kept += 1
    return kept[:n_kept]


@njit(cache=True, fastmath=FAST)
def add_link(g: Graph, node: int, new: int, layer: int, cap: int) -> None:
    """Link ``node`` -> ``new``; if that overflows ``cap``, keep the heuristic's choice."""
    links = neighbours(g, node, layer)
    if len(links) < cap:
        grown = np.empty(len(links) + 1, dtype=np.int32)
        grown[:-1], grown[-1] = links, new
        set_links(g, node, layer, grown)
        return
    cand = [(sq_dist(g.x[node], g.x[other]), np.int64(other)) for other in links]
    cand.append((sq_dist(g.x[node], g.x[new]), np.int64(new)))
    cand.sort()
    set_links(g, node, layer, select_neighbours(g, cand, cap))


@njit(cache=True)
def insert(g: Graph, node: int, m: int, ef_construction: int) -> None:
    """Add ``node`` (its vector is already ``g.x[node]``) to the graph (paper, algorithm 1)."""
    level = g.levels[node]
    if g.state[ENTRY] < 0:  # the first node is the whole graph
        g.state[ENTRY], g.state[MAX_LEVEL] = node, level
        return
    q = g.x[node]
    ep = descend(g, q, level)
    for layer in range(min(level, g.state[MAX_LEVEL]), -1, -1):
        found, _, _ = search_layer(g, q, ep, ef_construction, layer)
        links = select_neighbours(g, found, m)
        set_links(g, node, layer, links)
        for other in links:
            add_link(g, other, node, layer, 2 * m if layer == 0 else m)
        ep = found  # every candidate found is an entry point for the layer below
    if level > g.state[MAX_LEVEL]:  # new top layers: alone there, and the new entry
        g.state[ENTRY], g.state[MAX_LEVEL] = node, level


@njit(cache=True)
def insert_range(g: Graph, first: int, stop: int, m: int, ef_construction: int) -> None:
    for node in range(first, stop):
        insert(g, node, m, ef_construction)


def empty_graph(x: np.ndarray, levels: np.ndarray, m: int) -> Graph:
    """A graph of ``x`` (n, d) with no links yet; ``levels`` (n,) fixes the link rows."""
    n = len(x)
    upper_row = np.full(n, -1, dtype=np.int64)
    above = levels > 0
    upper_row[above] = np.concatenate([[0], np.cumsum(levels[above])[:-1]])
    rows = int(levels.sum())
    return Graph(
        x=x,
        levels=levels.astype(np.int32),
        links0=np.full((n, 2 * m), -1, dtype=np.int32),
        degree0=np.zeros(n, dtype=np.int32),
        upper_row=upper_row,
        links_up=np.full((rows, m), -1, dtype=np.int32),
        degree_up=np.zeros(rows, dtype=np.int32),
        visited=np.zeros(n, dtype=np.int64),
        state=np.array([-1, -1, 0], dtype=np.int64),
    )


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
        self.graph = empty_graph(np.empty((0, 0), np.float32), np.empty(0, np.int32), M)

    @property
    def entry(self) -> int:
        return int(self.graph.state[ENTRY])

    @property
    def max_level(self) -> int:
        return int(self.graph.state[MAX_LEVEL])

    def neighbours(self, node: int, layer: int) -> np.ndarray:
        """Links of ``node`` on ``layer`` (≤ M or 2M,) int32."""
        return neighbours(self.graph, node, layer)

    def _build(self, x: np.ndarray, emit: Emit) -> str:
        """Insert the rows of ``x`` (n, d) one by one, compiled, reporting every 2 %."""
        n = len(x)
        rng = np.random.default_rng(self.seed)
        # levels are drawn up front (same seed, same graph): -ln(U) * mL, U in (0, 1]
        levels = np.floor(-np.log(1.0 - rng.random(n)) * self.level_mult).astype(np.int32)
        self.graph = empty_graph(x, levels, self.M)
        step = max(1, n // 50)
        for first in range(0, n, step):
            insert_range(self.graph, first, min(first + step, n), self.M, self.ef_construction)
            if first + step < n:  # build reports the last one
                done = first + step
                emit("progress", pct=100.0 * done / n, message=f"hnsw: inserted {done}/{n}")
        return f"inserted {n}/{n}"

    def _search(
        self, qs: np.ndarray, k: int, *, ef_search: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``k`` nearest for each query (q, d); beam ``ef_search`` (at least ``k``) on layer 0."""
        ef = self.ef_search if ef_search is None else int(ef_search)
        if ef < 1:
            raise ValueError(f"ef_search must be >= 1, got {ef}")
        out_d, out_i = no_hits(len(qs), k)
        search_many(self.graph, qs, k, ef, out_d, out_i)
        return out_d, out_i

    def trace(self, query: np.ndarray, k: int = 10, *, ef_search: int | None = None) -> HNSWTrace:
        """Search one query and record its hops on every layer (top layer first)."""
        self._check_built()
        ef = max(self.ef_search if ef_search is None else int(ef_search), check_k(k))
        q = prepare(query, self.metric, self.d, "query")[0]
        scale = 0.5 if self.metric == "cosine" else 1.0  # report 1 - cos, as search does
        layers: list[LayerTrace] = []
        ep = List(start(self.graph, q))  # a typed list: compiled code takes no Python list
        for layer in range(self.max_level, -1, -1):  # descend's walk, one layer at a time
            found, computed, hops = search_layer(self.graph, q, ep, ef if layer == 0 else 1, layer)
            layers.append(
                LayerTrace(layer, [Hop(int(n), float(d) * scale) for n, d in hops], computed)
            )
            ep = List([found[0]])
        return HNSWTrace(
            entry=self.entry,
            max_level=self.max_level,
            ef=ef,
            layers=layers,
            ids=[int(node) for _, node in list(found)[:k]],
            distances=[float(d) * scale for d, _ in list(found)[:k]],
        )

    @property
    def nbytes(self) -> int:
        g = self.graph
        upper = 4 * int(g.degree_up.sum())
        return g.x.nbytes + g.links0.nbytes + g.degree0.nbytes + g.levels.nbytes + upper
