"""IVF's scans, compiled: the loops that search the probed cells (see ``ivf.py``).

- IVF-Flat: the exact distance to every vector in the probed cells, the ``k`` best kept
  in a heap (:func:`scan_flat`);
- IVF-PQ: asymmetric distances from one look-up table per query and cell
  (:func:`scan_pq`), then optionally exact distances for the best candidates
  (:func:`rescore`).

Vectors and codes are stored cell by cell: cell ``c`` owns list positions
``offsets[c]:offsets[c + 1]``. Results are list positions; ``ivf.py`` maps them to ids.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from learn.lab.vindex.compiled import FAST, keep_best, sort_best, sq_dist

TERMS_LIMIT = 64 * 1024**2  # bytes of IVF-PQ's precomputed cell terms, at most


@njit(cache=True, fastmath=FAST)
def scan_flat(
    qs: np.ndarray,
    cells: np.ndarray,
    offsets: np.ndarray,
    vectors: np.ndarray,
    out_d: np.ndarray,
    out_p: np.ndarray,
) -> None:
    """IVF-Flat's scan: for each query (q, d), the exact distance to every vector in its
    probed ``cells`` (q, nprobe); the ``k`` best list positions go to ``out_p`` (q, k),
    their distances to ``out_d`` (q, k), both k-best heaps until sorted at the end."""
    for i in range(len(qs)):
        q, heap_d, heap_p = qs[i], out_d[i], out_p[i]
        for c in cells[i]:
            for p in range(offsets[c], offsets[c + 1]):
                d = sq_dist(q, vectors[p])
                if d < heap_d[0]:  # the usual case is no: one comparison, no call
                    keep_best(heap_d, heap_p, d, p)
        sort_best(heap_d, heap_p)


@njit(cache=True, fastmath=FAST)
def scan_pq(
    qs: np.ndarray,
    cells: np.ndarray,
    coarse: np.ndarray,
    offsets: np.ndarray,
    codes: np.ndarray,
    cell_terms: np.ndarray,
    centroids: np.ndarray,
    books: np.ndarray,
    books_t: np.ndarray,
    out_d: np.ndarray,
    out_p: np.ndarray,
) -> None:
    """IVF-PQ's scan (asymmetric distances). Per query and probed cell ``c``, a table
    ``T[j, r] = |q_j - c_j - C_j[r]|²`` (m, ksub); a code's distance is ``Σ_j T[j, code_j]``
    (with the precomputed terms: ``|q - c|² + Σ_j (T1[c, j, code_j] - 2 <q_j, C_j[code_j]>)``).

    ``coarse`` (q, nprobe) |q - c|² of the probed cells; ``cell_terms`` (nlist, m, ksub)
    or empty, see ``IVFPQIndex._cell_terms``; ``books`` (m, ksub, dsub) the codebooks,
    ``books_t`` (m, dsub, ksub) the same transposed (so the loop over ``r`` vectorises).
    """
    m, ksub, dsub = books.shape
    table = np.empty((m, ksub), dtype=np.float32)
    query_terms = np.empty((m, ksub), dtype=np.float32)  # -2 <q_j, C_j[r]>, once a query
    for i in range(len(qs)):
        heap_d, heap_p = out_d[i], out_p[i]
        if len(cell_terms):
            query_terms[:] = 0.0
            for j in range(m):
                for s in range(dsub):
                    qs_js = -2 * qs[i, j * dsub + s]
                    for r in range(ksub):
                        query_terms[j, r] += qs_js * books_t[j, s, r]
        for ci, c in enumerate(cells[i]):
            if len(cell_terms):  # FAISS's shortcut: |q - c|² once, plus two tables
                for j in range(m):
                    for r in range(ksub):
                        table[j, r] = cell_terms[c, j, r] + query_terms[j, r]
                start = np.float32(coarse[i, ci])
            else:  # directly: the residual's distance to each centroid of each sub-space
                for j in range(m):
                    sub = slice(j * dsub, (j + 1) * dsub)
                    res = qs[i, sub] - centroids[c, sub]
                    for r in range(ksub):
                        table[j, r] = sq_dist(res, books[j, r])
                start = np.float32(0.0)
            for p in range(offsets[c], offsets[c + 1]):
                d = start
                for j in range(m):
                    d += table[j, codes[p, j]]
                if d < heap_d[0]:
                    keep_best(heap_d, heap_p, d, p)
        sort_best(heap_d, heap_p)


@njit(cache=True, fastmath=FAST)
def rescore(
    qs: np.ndarray,
    candidates: np.ndarray,
    vectors: np.ndarray,
    out_d: np.ndarray,
    out_p: np.ndarray,
) -> None:
    """Re-rank: exact distances to each query's ``candidates`` (q, r) list positions."""
    for i in range(len(qs)):
        for p in candidates[i]:
            if p >= 0:  # -1: fewer candidates than asked for
                keep_best(out_d[i], out_p[i], sq_dist(qs[i], vectors[p]), p)
        sort_best(out_d[i], out_p[i])
