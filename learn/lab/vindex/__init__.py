"""Vector indexes from scratch, and the libraries behind the same protocol.

One concept per module, each readable on its own:

- ``base``: ``Hits`` (distances, ids), the ``Index`` protocol, the build and search steps
  every index shares (``BaseIndex``), distance helpers;
- ``flat``: exact brute force (torch; ``device="cuda"`` works), the ground truth;
- ``kdtree``: an exact K-D tree that counts its work;
- ``hnsw``: hierarchical navigable small world graphs, with ``trace``;
- ``ivf``: inverted files (IVF-Flat, IVF-PQ) over a k-means coarse quantizer, with ``trace``;
- ``pq``, ``sq``, ``pca``: compression (product, scalar 8-bit, principal components);
- ``kmeans``: the seeded trainer behind IVF and PQ;
- ``library``: FAISS and hnswlib wrappers (imported lazily);
- ``datasets``, ``recall``, ``curve``, ``memory``, ``lab``: data, scoring (numpy only), the
  recall/speed curve, memory guard, playgrounds.

Names are loaded on first use, so ``from learn.lab.vindex import estimate_bytes`` does not
import torch (only ``flat`` needs it).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Hits": "base",
    "Index": "base",
    "BaseIndex": "base",
    "FlatIndex": "flat",
    "exact_knn": "flat",
    "threshold_search": "flat",
    "KDTreeIndex": "kdtree",
    "KDStats": "kdtree",
    "HNSWIndex": "hnsw",
    "HNSWTrace": "hnsw",
    "IVFFlatIndex": "ivf",
    "IVFPQIndex": "ivf",
    "IVFTrace": "ivf",
    "ProductQuantizer": "pq",
    "PQIndex": "pq",
    "ScalarQuantizer": "sq",
    "SQIndex": "sq",
    "PCAIndex": "pca",
    "fit_pca": "pca",
    "FaissIndex": "library",
    "HnswlibIndex": "library",
    "clustered": "datasets",
    "digits": "datasets",
    "Dataset": "datasets",
    "recall_at_k": "recall",
    "sweep": "curve",
    "estimate_bytes": "memory",
    "check_memory": "memory",
    "MemoryLimitExceeded": "memory",
    "make_index": "lab",
    "load_dataset": "lab",
    "ground_truth": "lab",
    "index_lab": "lab",
    "query_trace": "lab",
    "compression_lab": "lab",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)
