"""An exact K-D tree, and the counters that show why it stops helping in high dimension.

Build: split the points at the median of the coordinate with the widest spread, recurse
on both halves until a node holds at most ``leaf_size`` points.

Search: descend to the leaf containing the query, then back up, visiting the other side
of a split only if the splitting plane is closer than the current ``k``-th best
(``(q[dim] - split)² < worst``): the whole far side cannot contain anything better.
In 2-3 dimensions that prunes almost everything. In 64 dimensions the ``k``-th best
distance is about as large as the distance to everything else, so the far side is
almost never ruled out and the "tree search" compares the query with nearly every
point: :class:`KDStats` counts it.

The search (:func:`search_one`) is compiled with numba over the tree's arrays
(:class:`Tree`); the build stays numpy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
from numba import njit

from learn.lab.events import Emit
from learn.lab.vindex.base import BaseIndex, check_metric, no_hits
from learn.lab.vindex.compiled import keep_best, sort_best


@dataclass
class KDStats:
    """Work done by the last ``search``, averaged per query."""

    nodes_visited: float  # tree nodes (internal and leaves) entered
    distance_computations: float  # points compared with the query
    fraction_scanned: float  # distance_computations / n: 1.0 means no better than brute force

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Tree(NamedTuple):
    """The tree as arrays (one entry per node; a leaf has ``dim == -1``)."""

    x: np.ndarray  # (n, d) float32 points, reordered so each leaf owns rows start:end
    dim: np.ndarray  # (nodes,) int64 splitting coordinate
    split: np.ndarray  # (nodes,) float64 splitting value
    left: np.ndarray  # (nodes,) int64 child with coordinates <= split
    right: np.ndarray  # (nodes,) int64 child with coordinates >= split
    start: np.ndarray  # (nodes,) int64 first row under the node
    end: np.ndarray  # (nodes,) int64 one past the last row


@njit(cache=True)
def search_one(tree: Tree, q: np.ndarray, heap_d: np.ndarray, heap_p: np.ndarray) -> Any:
    """Exact nearest rows of ``q`` (d,) float64 into the k-best heap ``heap_d``/``heap_p``
    (k,). Returns (nodes visited, distances computed)."""
    stack = [(0.0, 0)]  # (lower bound on the distance to anything under node, node)
    visited = computed = 0
    while len(stack) > 0:
        bound, node = stack.pop()
        if bound >= heap_d[0]:
            continue  # everything under this node is at least `bound` away: prune
        visited += 1
        dim = tree.dim[node]
        if dim < 0:  # leaf: compare with each of its points
            for row in range(tree.start[node], tree.end[node]):
                d = 0.0  # float64: exact enough to match brute force
                for j in range(len(q)):
                    t = tree.x[row, j] - q[j]
                    d += t * t
                if d < heap_d[0]:
                    keep_best(heap_d, heap_p, d, row)
            computed += tree.end[node] - tree.start[node]
            continue
        gap = q[dim] - tree.split[node]
        near, far = (
            (tree.left[node], tree.right[node]) if gap < 0 else (tree.right[node], tree.left[node])
        )
        stack.append((max(bound, gap * gap), far))  # pushed first, popped last
        stack.append((bound, near))
    return visited, computed


class KDTreeIndex(BaseIndex):
    """Exact k-NN with a K-D tree; returns the same ids and distances as brute force."""

    name = "kdtree"

    def __init__(self, leaf_size: int = 16, metric: str = "l2") -> None:
        if leaf_size < 1:
            raise ValueError(f"leaf_size must be >= 1, got {leaf_size}")
        self.leaf_size = leaf_size
        self.metric = check_metric(metric)
        self.x = np.empty((0, 0), dtype=np.float32)  # (n, d) reordered so leaves are ranges
        self.ids = np.empty(0, dtype=np.int64)  # (n,) original row of each reordered row
        # one entry per node; a leaf has dim == -1 and owns rows start:end
        self.dim: list[int] = []
        self.split: list[float] = []
        self.left: list[int] = []
        self.right: list[int] = []
        self.start: list[int] = []
        self.end: list[int] = []
        self.last_stats = KDStats(0.0, 0.0, 0.0)

    def _build(self, x: np.ndarray, emit: Emit) -> str:
        order = np.arange(len(x))
        self.dim, self.split, self.left, self.right, self.start, self.end = [], [], [], [], [], []
        self._new_node(0, len(x))
        stack = [0]  # nodes still to split; each owns order[start:end]
        while stack:
            node = stack.pop()
            lo, hi = self.start[node], self.end[node]
            if hi - lo <= self.leaf_size:
                continue
            pts = x[order[lo:hi]]  # (m, d)
            dim = int(np.argmax(pts.max(axis=0) - pts.min(axis=0)))  # widest spread
            mid = (hi - lo) // 2
            part = np.argpartition(pts[:, dim], mid)  # median to position mid
            order[lo:hi] = order[lo:hi][part]
            self.dim[node] = dim
            self.split[node] = float(x[order[lo + mid], dim])
            self.left[node] = self._new_node(lo, lo + mid)  # coordinates <= split
            self.right[node] = self._new_node(lo + mid, hi)  # coordinates >= split
            stack += [self.left[node], self.right[node]]
        self.x = x[order]
        self.ids = order.astype(np.int64)
        return f"{len(self.dim)} nodes over {len(x)} points"

    def _new_node(self, start: int, end: int) -> int:
        self.dim.append(-1)
        self.split.append(0.0)
        self.left.append(-1)
        self.right.append(-1)
        self.start.append(start)
        self.end.append(end)
        return len(self.dim) - 1

    def tree(self) -> Tree:
        """The nodes as arrays, for the compiled search."""
        return Tree(
            self.x,
            np.asarray(self.dim, dtype=np.int64),
            np.asarray(self.split, dtype=np.float64),
            np.asarray(self.left, dtype=np.int64),
            np.asarray(self.right, dtype=np.int64),
            np.asarray(self.start, dtype=np.int64),
            np.asarray(self.end, dtype=np.int64),
        )

    def _search(self, qs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``k`` nearest for each query (q, d); sets :attr:`last_stats`."""
        out_d, out_i = no_hits(len(qs), k)
        heap_d, heap_p = np.full(k, np.inf), np.full(k, -1, dtype=np.int64)  # (k,) each
        tree = self.tree()
        visited = computed = 0
        for i, q in enumerate(qs.astype(np.float64)):
            heap_d[:], heap_p[:] = np.inf, -1
            v, c = search_one(tree, q, heap_d, heap_p)
            visited, computed = visited + v, computed + c
            sort_best(heap_d, heap_p)
            ok = heap_p >= 0
            out_d[i, ok] = heap_d[ok]
            out_i[i, ok] = self.ids[heap_p[ok]]
        m = max(len(qs), 1)
        self.last_stats = KDStats(visited / m, computed / m, computed / m / len(self.ids))
        return out_d, out_i

    @property
    def nbytes(self) -> int:
        return self.x.nbytes + self.ids.nbytes + 6 * 8 * len(self.dim)  # 6 fields per node
