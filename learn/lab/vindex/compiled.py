"""The two building blocks our compiled searches share: one distance, one "k best" heap.

Every function here is compiled with numba (``@njit``, cached on disk next to this file,
so only the very first run of a machine pays the compile time). The loops read like
the textbook; numba turns them into machine code, vectorising the distance loop.

The k-best heap is FAISS's: a max-heap of the ``k`` nearest so far in two arrays, the
worst on top, so a new candidate is compared with one number and usually rejected.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# the float flags that let LLVM vectorise a sum (reorder it), but not those that assume
# no infinities: the k-best heaps start full of +inf. Callers of the inlined sq_dist use
# them too, since an inlined function is compiled with its caller's flags.
FAST = {"reassoc", "contract", "nsz", "arcp"}


@njit(cache=True, fastmath=FAST, inline="always")
def sq_dist(a: np.ndarray, b: np.ndarray) -> float:
    """Squared L2 between two vectors (d,) float32, summed in float32 (a loop numba
    vectorises), returned as float64 so every heap holds one type."""
    s = np.float32(0.0)
    for i in range(a.shape[0]):
        t = a[i] - b[i]
        s += t * t
    return np.float64(s)


@njit(cache=True)
def keep_best(heap_d: np.ndarray, heap_p: np.ndarray, d: float, p: int) -> None:
    """Offer ``(d, p)`` to the k-best max-heap ``heap_d`` / ``heap_p`` (k,) (FAISS's
    ``maxheap_replace_top``). Start it full of ``+inf`` / ``-1``: then a candidate is
    kept iff it beats the top, which it replaces before sinking to its place. Callers test
    ``d < heap_d[0]`` before calling: most candidates fail it, and a compiled call that
    passes arrays costs more than the comparison (3× on IVF-Flat's scan)."""
    if d >= heap_d[0]:
        return  # no better than the worst kept: the usual case, one comparison
    k, i = len(heap_d), 0
    while True:
        child = 2 * i + 1
        if child >= k:
            break
        if child + 1 < k and heap_d[child + 1] > heap_d[child]:
            child += 1  # the larger child
        if heap_d[child] <= d:
            break
        heap_d[i], heap_p[i] = heap_d[child], heap_p[child]  # move it up, go down
        i = child
    heap_d[i], heap_p[i] = d, p


@njit(cache=True)
def sort_best(heap_d: np.ndarray, heap_p: np.ndarray) -> None:
    """Turn a k-best heap (k,) into its entries nearest first, in place."""
    order = np.argsort(heap_d, kind="mergesort")
    heap_d[:], heap_p[:] = heap_d[order], heap_p[order]
