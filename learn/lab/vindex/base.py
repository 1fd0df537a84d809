"""What every index shares: the result type, the protocol, a few distance helpers, and
:class:`BaseIndex`, the build and search steps written once.

Conventions used throughout the package (the same as FAISS):

- vectors are float32 rows: data ``x`` is ``(n, d)``, queries are ``(q, d)``;
- ids are the row numbers of ``x`` as int64, ``-1`` where fewer than ``k`` were found;
- distances are "smaller is closer": squared Euclidean for ``metric="l2"``,
  ``1 - cos`` for ``metric="cosine"``, ``-<q, x>`` for ``metric="ip"`` (flat only).
  Cosine is L2 on unit vectors, since ``|a - b|² = 2 - 2 cos(a, b)`` when ``|a| = |b| = 1``,
  so every index handles it by normalising its inputs and halving the L2 distance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np

from learn.lab.events import Emit, no_emit

Metric = Literal["l2", "cosine", "ip"]
METRICS: tuple[str, ...] = ("l2", "cosine", "ip")
# a brute-force scan holds at most SCAN_ELEMENTS (query, row) distances at once: with the
# temporaries of pairwise_sq_l2 and top_k that is ~20 bytes each, so ~20 MiB at 1 << 20
SCAN_ELEMENTS = 1 << 20


class Hits(NamedTuple):
    """Result of ``search``: the ``k`` nearest rows for each query, nearest first."""

    distances: np.ndarray  # (q, k) float32, smaller is closer, +inf where missing
    ids: np.ndarray  # (q, k) int64, row numbers of the indexed data, -1 where missing


@runtime_checkable
class Index(Protocol):
    """Hyperparameters go in the constructor; then ``build`` once, ``search`` many times."""

    name: str

    def build(self, x: np.ndarray, *, emit: Emit = no_emit) -> None:
        """Index the rows of ``x`` (n, d) float32; row ``i`` gets id ``i``."""
        ...

    def search(self, queries: np.ndarray, k: int, **params: Any) -> Hits:
        """The ``k`` nearest indexed rows for each query row (q, d)."""
        ...

    @property
    def nbytes(self) -> int:
        """Bytes the built index holds (vectors or codes, graph, centroids, codebooks)."""
        ...

    @property
    def bytes_per_vector(self) -> float:
        """``nbytes`` per indexed vector: the number a compression chart plots."""
        ...


def as_matrix(x: np.ndarray, d: int | None = None, what: str = "x") -> np.ndarray:
    """``x`` as a C-contiguous float32 (n, d) array; one vector (d,) becomes (1, d)."""
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{what} must be 2-d (n, d), got shape {a.shape}")
    if d is not None and a.shape[1] != d:
        raise ValueError(f"{what} has dimension {a.shape[1]}, the index has {d}")
    return a


def check_metric(metric: str, allowed: tuple[str, ...] = ("l2", "cosine")) -> str:
    if metric not in allowed:
        raise ValueError(f"metric must be one of {allowed}, got {metric!r}")
    return metric


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero). (n, d) -> (n, d) float32."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def prepare(x: np.ndarray, metric: str, d: int | None = None, what: str = "x") -> np.ndarray:
    """Validate ``x`` and, for cosine, normalise it so L2 search ranks by cosine."""
    a = as_matrix(x, d, what)
    return normalize(a) if metric == "cosine" else a


def finish(distances: np.ndarray, ids: np.ndarray, metric: str) -> Hits:
    """Wrap L2² results as ``Hits``, turning them into ``1 - cos`` for the cosine metric."""
    distances = np.asarray(distances, dtype=np.float32)
    if metric == "cosine":
        distances = distances / 2  # |a - b|² = 2 - 2cos for unit vectors
    return Hits(distances, np.asarray(ids, dtype=np.int64))


def sq_l2(q: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Squared L2 between one query (d,) and rows (m, d), computed directly. -> (m,)"""
    diff = x - q  # (m, d)
    return np.einsum("md,md->m", diff, diff)


def sq_l2_rows(q: np.ndarray, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Squared L2 between ``q`` (d,) and the rows ``x[rows]`` (m,) -> (m,), the hot loop of
    graph search (``take`` + in-place subtract: fewer temporaries than ``x[rows] - q``)."""
    diff = x.take(rows, axis=0)  # (m, d)
    diff -= q
    return np.einsum("md,md->m", diff, diff)


def pairwise_sq_l2(q: np.ndarray, x: np.ndarray, x_norms: np.ndarray | None = None) -> np.ndarray:
    """Squared L2 between every query (q, d) and row (n, d) -> (q, n) float32.

    Uses ``|q|² - 2 q·x + |x|²`` so the work is one matrix product; clipped at 0
    because rounding can make an exact match come out slightly negative.
    """
    if x_norms is None:
        x_norms = np.einsum("nd,nd->n", x, x)
    q_norms = np.einsum("qd,qd->q", q, q)
    dist = q_norms[:, None] - 2.0 * (q @ x.T) + x_norms[None, :]  # (q, n)
    return np.maximum(dist, 0.0, out=dist)


def top_k(dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest entries of each row of ``dist`` (q, n), sorted.

    Returns ``(distances, columns)``, both (q, k); rows with fewer than ``k`` columns are
    padded with ``+inf`` / ``-1``.
    """
    q, n = dist.shape
    kk = min(k, n)
    if kk < n:
        part = np.argpartition(dist, kk - 1, axis=1)[:, :kk]  # (q, kk), unordered
    else:
        part = np.broadcast_to(np.arange(n), (q, n))
    part_d = np.take_along_axis(dist, part, axis=1)
    order = np.argsort(part_d, axis=1, kind="stable")
    out_d = np.full((q, k), np.inf, dtype=np.float32)
    out_i = np.full((q, k), -1, dtype=np.int64)
    out_d[:, :kk] = np.take_along_axis(part_d, order, axis=1)
    out_i[:, :kk] = np.take_along_axis(part, order, axis=1)
    return out_d, out_i


def check_k(k: int) -> int:
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def require_built(index: Any, built: bool) -> None:
    if not built:
        raise RuntimeError(f"{type(index).__name__}: call build(x) before search")


def no_hits(q: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(distances, ids)`` for ``q`` queries with nothing found yet: (q, k) +inf and -1."""
    return np.full((q, k), np.inf, dtype=np.float32), np.full((q, k), -1, dtype=np.int64)


SearchBlock = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def scan_blocks(
    queries: np.ndarray, k: int, n: int, search_block: SearchBlock
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force a block of queries at a time, so that a block's (b, n) distance matrix
    holds at most ``SCAN_ELEMENTS`` numbers.

    ``search_block(queries[s : s + b])`` returns that block's ``(distances, ids)``, both
    (b, ≤k), nearest first. Returns them stacked as (q, k), padded with +inf / -1.
    """
    out_d, out_i = no_hits(len(queries), k)
    block = max(1, SCAN_ELEMENTS // max(n, 1))  # queries per (block, n) matrix
    for s in range(0, len(queries), block):
        dist, ids = search_block(queries[s : s + block])  # (b, ≤k) each
        out_d[s : s + block, : dist.shape[1]] = dist
        out_i[s : s + block, : ids.shape[1]] = ids
    return out_d, out_i


class BaseIndex:
    """The steps every from-scratch index shares, written once, so that each index's own
    file holds only its algorithm (FAISS's ``Index`` base class plays the same part).

    ``build(x)`` validates ``x`` (normalising it for cosine), records ``n`` and ``d``, calls
    the index's ``_build`` and reports 100 %. ``search(queries, k, **params)`` checks that
    the index is built, that ``params`` are among ``search_params`` and that ``k >= 1``,
    prepares the queries the same way, calls ``_search`` and wraps its squared L2
    distances as :class:`Hits` (``1 - cos`` for cosine, see :func:`finish`).

    A subclass sets ``name`` and ``metric`` and writes:

    - ``_build(x, emit) -> str``: index the prepared rows ``x`` (n, d); returns a summary
      for the last progress message;
    - ``_search(qs, k, **params) -> (distances, ids)``: both (q, k), for the prepared
      queries ``qs`` (q, d), taking the keywords named in ``search_params``;
    - ``nbytes``; ``bytes_per_vector`` defaults to ``nbytes / n``.
    """

    name = "index"
    metric = "l2"
    search_params: tuple[str, ...] = ()  # the keyword arguments search accepts
    n = 0  # vectors indexed
    d = 0  # their dimension
    built = False
    _build: Callable[[np.ndarray, Emit], str]
    _search: Callable[..., tuple[np.ndarray, np.ndarray]]  # (qs, k, **params)

    def build(self, x: np.ndarray, *, emit: Emit = no_emit) -> None:
        """Index the rows of ``x`` (n, d) float32; row ``i`` gets id ``i``."""
        x = prepare(x, self.metric)
        self.n, self.d = x.shape
        summary = self._build(x, emit)
        self.built = True
        emit("progress", pct=100.0, message=f"{self.name}: {summary}")

    def search(self, queries: np.ndarray, k: int, **params: Any) -> Hits:
        """The ``k`` nearest indexed rows for each query row (q, d), nearest first."""
        self._check_built()
        unknown = [name for name in params if name not in self.search_params]
        if unknown:
            takes = " and ".join(self.search_params) or "no parameters"
            raise TypeError(f"{self.name} search takes {takes}, got {sorted(unknown)}")
        k = check_k(k)
        distances, ids = self._search(prepare(queries, self.metric, self.d, "queries"), k, **params)
        return finish(distances, ids, self.metric)

    def _check_built(self) -> None:
        require_built(self, self.built)

    @property
    def nbytes(self) -> int:
        """Bytes the built index holds (vectors or codes, graph, centroids, codebooks)."""
        raise NotImplementedError

    @property
    def bytes_per_vector(self) -> float:
        return self.nbytes / max(self.n, 1)
