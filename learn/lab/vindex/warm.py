"""Get every compiled function of the package ready before a learner's first run.

numba compiles a function on its first call (tens of seconds the first time on a
machine) and caches it on disk (later processes load it in well under a second).
"""

from __future__ import annotations

import numpy as np

from learn.lab.vindex.hnsw import HNSWIndex
from learn.lab.vindex.ivf import IVFFlatIndex, IVFPQIndex
from learn.lab.vindex.kdtree import KDTreeIndex


def warm() -> None:
    """Build and search a tiny index of each compiled kind, so that every compiled
    function is ready: read from the disk cache (well under a second) or, the first
    time on a machine, compiled (tens of seconds). A worker process can call it once at
    start, so that a learner's first run does not pay for it."""
    x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)  # (n, d)
    hnsw = HNSWIndex(M=4, ef_construction=8)
    for index in (
        hnsw,
        IVFFlatIndex(4),
        IVFPQIndex(4, m=2, nbits=4, rerank=5, keep_vectors=True),
        KDTreeIndex(),
    ):
        index.build(x)
        index.search(x[:2], 3)
    hnsw.trace(x[0], 3)
