"""How much memory a run will need, known before it starts, so the API can refuse it.

Imports no torch: the web process can call it.

The figures are deliberate over-estimates of the peak: the data itself, the index, and
the largest temporary arrays its build and search make (k-means distance blocks,
residuals, scan blocks), plus Python object overhead where the structure is made of
Python objects (the K-D tree's node lists, HNSW's upper layers).
"""

from __future__ import annotations

from typing import Any

from learn.lab.vindex import kmeans
from learn.lab.vindex.base import SCAN_ELEMENTS

F32 = 4
I64 = 8
PY_OBJECT = 120  # bytes for one small numpy array or dict entry, as Python stores them


class MemoryLimitExceeded(ValueError):
    """A run would need more memory than allowed; nothing was started."""


def _scan_bytes(n: int, q: int, d: int = 0) -> int:
    """A blocked brute-force scan of ``q`` queries over ``n`` rows: at most SCAN_ELEMENTS
    (query, row) pairs at once, each with a float32 distance, two float32 temporaries
    and an int64 index from top-k; plus the rows decoded for the block."""
    pairs = min(q * n, SCAN_ELEMENTS)
    return pairs * (3 * F32 + I64) + min(n, SCAN_ELEMENTS) * d * F32


def _kmeans_bytes(n: int, d: int, k: int) -> int:
    sample = min(n, kmeans.MAX_POINTS_PER_CENTROID * k)
    block = min(sample, kmeans.CHUNK) * k * (3 * F32 + I64)  # distances of one chunk
    return sample * d * F32 + block + k * d * (F32 + 8) + n * (I64 + F32)


def index_bytes(n: int, d: int, index_name: str, **params: Any) -> int:
    """Estimated peak bytes of building and searching ``index_name`` on ``n`` × ``d``,
    excluding the input data itself. ``params`` are the index's constructor arguments,
    plus ``queries`` (default 1000), the number searched at once."""
    name = index_name
    q = int(params.get("queries", 1000))
    if name in ("flat", "faiss_flat"):
        return n * d * F32 + n * F32 + _scan_bytes(n, q)
    if name == "kdtree":
        leaf = int(params.get("leaf_size", 16))
        nodes = 2 * n // max(leaf, 1) + 1
        return n * d * F32 * 2 + n * I64 * 2 + nodes * 6 * (8 + 32)
    if name in ("hnsw", "faiss_hnsw", "hnswlib"):
        m = int(params.get("M", 16))
        links0 = n * 2 * m * F32
        upper = (n // max(m - 1, 1)) * (m * F32 + F32)  # ~n/M link rows above layer 0
        per_node = 4 + 4 + 8 + 8 + 8  # degree, level, upper row, visit tag, label / id
        return n * d * F32 + links0 + upper + n * per_node
    if name in ("ivf_flat", "faiss_ivf_flat"):
        nlist = int(params.get("nlist", 100))
        lists = n * d * F32 * 2 + n * (F32 + I64)  # vectors (+ a copy for traces), norms, ids
        return lists + _kmeans_bytes(n, d, nlist) + _scan_bytes(nlist, q)
    if name in ("ivf_pq", "faiss_ivf_pq", "pq"):
        m, nbits = int(params.get("m", 8)), int(params.get("nbits", 8))
        ksub, dsub = 2**nbits, d // max(m, 1)
        codebooks = m * ksub * dsub * F32
        train = n * d * F32 * 2 + _kmeans_bytes(n, dsub, ksub)  # residuals, sub-vectors
        raw = n * d * F32 if params.get("keep_vectors") else 0
        if name == "pq":
            search = _scan_bytes(n, q) + q * m * ksub * F32  # ADC over all codes + tables
            coarse = 0
        else:
            nlist = int(params.get("nlist", 100))
            coarse = _kmeans_bytes(n, d, nlist) + _scan_bytes(nlist, q)
            terms = min(nlist * m * ksub * F32, 64 * 1024**2)  # ivfscan.TERMS_LIMIT
            search = n * (I64 + m + F32) + (q + 1) * m * ksub * F32 + terms
        return n * (m + I64) + codebooks + coarse + train + raw + search
    if name in ("sq8", "faiss_sq8"):
        return n * d + 8 * d + n * d * F32 + _scan_bytes(n, q, d)
    if name == "pca":
        dims = int(params.get("dims", 16))
        return n * dims * F32 + n * d * F32 * 2 + d * d * 8 * 2 + _scan_bytes(n, q)
    raise ValueError(f"unknown index {index_name!r}")


def estimate_bytes(n: int, d: int, index_name: str, **params: Any) -> int:
    """Estimated peak bytes of a whole index-lab run: the ``n`` × ``d`` float32 data, its
    queries (``queries``, default 1000), exact ground truth, and the index's build and
    search (:func:`index_bytes`)."""
    if n < 1 or d < 1:
        raise ValueError(f"n and d must be >= 1, got {n}, {d}")
    q = int(params.get("queries", 1000))
    data = (n + q) * d * F32
    truth = q * 100 * (F32 + I64) + _scan_bytes(n, q) + n * d * F32  # top-k ≤ 100
    return int(data + truth + index_bytes(n, d, index_name, **params))


def check_memory(n: int, d: int, index_name: str, limit_bytes: int, **params: Any) -> int:
    """:func:`estimate_bytes`, raising :class:`MemoryLimitExceeded` if over ``limit_bytes``."""
    need = estimate_bytes(n, d, index_name, **params)
    if need > limit_bytes:
        raise MemoryLimitExceeded(
            f"{index_name} on {n} x {d} vectors needs about {need / 2**20:.0f} MiB, "
            f"over the limit of {limit_bytes / 2**20:.0f} MiB: use fewer or shorter vectors"
        )
    return need
