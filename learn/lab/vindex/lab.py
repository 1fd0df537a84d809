"""The three vector-index playgrounds as plain functions: build + sweep, query trace,
compression. Each takes the vectors, an ``emit`` callback and a device, and returns a
JSON-able dict the worker stores as the run's result.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, get_args

import numpy as np

from learn.lab.events import Emit, no_emit, scaled_emit
from learn.lab.facts import IndexName
from learn.lab.timing import best_of
from learn.lab.vindex.base import Hits, Index, as_matrix, prepare
from learn.lab.vindex.curve import sweep
from learn.lab.vindex.datasets import Dataset, clustered, digits
from learn.lab.vindex.memory import check_memory
from learn.lab.vindex.recall import recall_at_k

# every index by name: its class ("module.Class" in this package) and the one search
# parameter its recall/speed curve is swept over. The names are learn.lab.facts.IndexName
# (what the forms offer), plus "pca", which only the compression lab uses.
INDEXES: dict[str, tuple[str, str | None]] = {
    "flat": ("flat.FlatIndex", None),
    "kdtree": ("kdtree.KDTreeIndex", None),
    "hnsw": ("hnsw.HNSWIndex", "ef_search"),
    "ivf_flat": ("ivf.IVFFlatIndex", "nprobe"),
    "ivf_pq": ("ivf.IVFPQIndex", "nprobe"),
    "pq": ("pq.PQIndex", None),
    "sq8": ("sq.SQIndex", None),
    "faiss_flat": ("library.FaissIndex", None),
    "faiss_hnsw": ("library.FaissIndex", "ef_search"),
    "faiss_ivf_flat": ("library.FaissIndex", "nprobe"),
    "faiss_ivf_pq": ("library.FaissIndex", "nprobe"),
    "faiss_sq8": ("library.FaissIndex", None),
    "hnswlib": ("library.HnswlibIndex", "ef_search"),
    "pca": ("pca.PCAIndex", None),
}
INDEX_NAMES = tuple(INDEXES)
COMPRESSION_ONLY = tuple(name for name in INDEXES if name not in get_args(IndexName))
SWEEP_PARAMS: dict[str, str | None] = {name: param for name, (_, param) in INDEXES.items()}
DEFAULT_SWEEPS: dict[str, list[int]] = {
    "ef_search": [10, 20, 40, 80, 160],
    "nprobe": [1, 2, 4, 8, 16, 32],
}


def make_index(name: str, *, metric: str = "l2", device: str = "cpu", **params: Any) -> Index:
    """A fresh, unbuilt index by name; ``params`` go to its constructor.

    From scratch: ``flat`` (``device``), ``kdtree`` (leaf_size), ``hnsw`` (M,
    ef_construction, ef_search, seed), ``ivf_flat`` (nlist, nprobe, seed, ``device``), ``ivf_pq``
    (nlist, m, nbits, nprobe, rerank, keep_vectors, seed), ``pq`` (m, nbits), ``sq8``,
    ``pca`` (dims). Libraries: ``faiss_flat|faiss_hnsw|faiss_ivf_flat|faiss_ivf_pq|faiss_sq8``
    (same parameter names) and ``hnswlib`` (M, ef_construction, ef_search).
    """
    if name not in INDEXES:
        raise ValueError(f"unknown index {name!r}; choose from {', '.join(INDEX_NAMES)}")
    module, cls = INDEXES[name][0].split(".")
    # imported here so that choosing one index never loads the others' dependencies
    index_class = getattr(importlib.import_module(f"learn.lab.vindex.{module}"), cls)
    if name in ("flat", "ivf_flat"):  # the two that search on a GPU
        params["device"] = device
    if name.startswith("faiss_"):
        params["kind"] = name.removeprefix("faiss_")
    return index_class(metric=metric, **params)


def load_dataset(kind: str = "clustered", **params: Any) -> Dataset:
    """``"clustered"`` (:func:`~learn.lab.vindex.datasets.clustered` keywords: n, d,
    clusters, seed, n_queries, intrinsic_dim) or ``"digits"`` (n_queries, seed)."""
    if kind == "clustered":
        return clustered(**params)
    if kind == "digits":
        return digits(**params)
    raise ValueError(f"unknown dataset {kind!r}: choose clustered or digits")


def ground_truth(
    data: np.ndarray, queries: np.ndarray, k: int, metric: str = "l2", device: str = "cpu"
) -> tuple[Hits, float]:
    """Exact top ``k`` by brute force, and its queries per second."""
    index = make_index("flat", metric=metric, device=device)
    index.build(data)
    secs, hits = best_of(lambda: index.search(queries, k), 1)
    return hits, len(queries) / max(secs, 1e-9)


def index_lab(
    data: np.ndarray,
    queries: np.ndarray,
    index_name: str,
    *,
    k: int = 10,
    params: dict[str, Any] | None = None,
    sweep_values: Sequence[Any] | None = None,
    metric: str = "l2",
    device: str = "cpu",
    limit_bytes: int | None = None,
    emit: Emit = no_emit,
) -> dict[str, Any]:
    """Build one index, then measure recall@k and queries/s across its search parameter.

    Emits progress, then one ``"partial"`` ``point`` per swept value (see
    :func:`~learn.lab.vindex.curve.sweep`). Raises ``MemoryLimitExceeded`` before any
    work if ``limit_bytes`` is given and the run would need more.
    """
    params = dict(params or {})
    data, queries = as_matrix(data), as_matrix(queries, data.shape[1], "queries")
    n, d = data.shape
    if limit_bytes is not None:
        check_memory(n, d, index_name, limit_bytes, queries=len(queries), **params)
    emit("progress", pct=0.0, message=f"exact search for the ground truth ({n} × {d})")
    truth, exact_qps = ground_truth(data, queries, k, metric, device)

    index = make_index(index_name, metric=metric, device=device, **params)
    build_seconds, _ = best_of(lambda: index.build(data, emit=scaled_emit(emit, 5, 60)), 1)

    param = SWEEP_PARAMS.get(index_name)
    values = list(sweep_values) if sweep_values is not None else DEFAULT_SWEEPS.get(param or "", [])
    if param == "nprobe":
        values = [v for v in values if v <= params.get("nlist", 100)] or [1]
    points = sweep(index, queries, truth, k, param, values, scaled_emit(emit, 60, 100))
    result: dict[str, Any] = {
        "index": index_name,
        "params": params,
        "metric": metric,
        "device": device,
        "n": n,
        "d": d,
        "queries": len(queries),
        "k": k,
        "build_seconds": round(build_seconds, 4),
        "nbytes": int(index.nbytes),
        "bytes_per_vector": round(float(index.bytes_per_vector), 2),
        "exact_qps": round(exact_qps, 1),
        "sweep_param": param,
        "points": points,
    }
    last_stats = getattr(index, "last_stats", None)  # the K-D tree counts its work
    if last_stats is not None:
        result["stats"] = last_stats.to_dict()
    return result


def query_trace(
    data: np.ndarray,
    query: np.ndarray,
    index_name: str = "hnsw",
    *,
    k: int = 10,
    params: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
    index: Any = None,
    metric: str = "l2",
    emit: Emit = no_emit,
) -> dict[str, Any]:
    """Trace one query through ``hnsw``, ``ivf_flat`` or ``ivf_pq``.

    ``params`` build the index (skipped when a built ``index`` is passed); ``search``
    holds ``ef_search`` or ``nprobe`` (and ``rerank``). The result has the trace (see
    ``HNSWTrace`` / ``IVFTrace``), the 2-D PCA position of every node it mentions and of
    the query, and ``recall`` of this query against exact search.
    """
    from learn.lab.vindex.pca import fit_pca

    if index_name not in ("hnsw", "ivf_flat", "ivf_pq"):
        raise ValueError(f"only hnsw, ivf_flat and ivf_pq can be traced, not {index_name!r}")
    data = as_matrix(data)
    q = as_matrix(query, data.shape[1], "query")
    if index is None:
        index = make_index(index_name, metric=metric, **(params or {}))
        index.build(data, emit=scaled_emit(emit, 0, 90))
    search = dict(search or {})
    if index_name == "hnsw":
        trace = index.trace(q, k, **search)
        exact, _ = ground_truth(data, q, k, metric)
        true_ids = [int(i) for i in exact.ids[0] if i >= 0]
        visited = {h.node for layer in trace.layers for h in layer.hops}
        recall = recall_at_k([trace.ids], exact.ids, k)
    else:
        trace = index.trace(q, k, data=data, **search)
        true_ids = [nb.id for nb in trace.neighbours]
        visited = set()
        recall = trace.recall
    # where to draw each node the trace mentions: the data's top-2 PCA plane
    ids = sorted(visited | set(true_ids) | {i for i in trace.ids if i >= 0})
    plane = prepare(data, metric)
    pca = fit_pca(plane, 2)
    xy = pca.project(plane[ids]) if ids else np.empty((0, 2), dtype=np.float32)
    emit("progress", pct=100.0, message=f"traced one query through {index_name}")
    return {
        "index": index_name,
        "metric": metric,
        "k": k,
        "search": search,
        "trace": trace.to_dict(),
        "true_ids": true_ids,
        "recall": recall,
        "query_xy": [round(float(v), 4) for v in pca.project(prepare(q, metric))[0]],
        "coords": {
            str(i): [round(float(a), 4), round(float(b), 4)]
            for i, (a, b) in zip(ids, xy, strict=True)
        },
    }


def default_compression_configs(d: int) -> list[dict[str, Any]]:
    """Flat, SQ8, PCA to d/2, d/4, d/8 and PQ with d/2, d/4, d/8 bytes (8-bit codes)."""
    configs: list[dict[str, Any]] = [{"method": "flat"}, {"method": "sq8"}]
    for div in (2, 4, 8):
        if d // div >= 1:
            configs.append({"method": "pca", "dims": d // div})
    for div in (2, 4, 8):
        m = d // div
        if m >= 1 and d % m == 0:
            configs.append({"method": "pq", "m": m, "nbits": 8})
    return configs


def compression_words(config: dict[str, Any]) -> str:
    """A compression config as a learner reads it: "product quantization, 8 bytes a vector"."""
    method = str(config["method"]).removeprefix("faiss_")
    if method == "pca":
        return f"PCA to {config.get('dims')} dimensions"
    if method == "pq":
        return f"product quantization, {config.get('m')} codes of {config.get('nbits', 8)} bits"
    return {"flat": "no compression (float32)", "sq8": "8-bit scalar quantization"}.get(
        method, method
    )


def compression_lab(
    data: np.ndarray,
    queries: np.ndarray,
    *,
    k: int = 10,
    configs: Sequence[dict[str, Any]] | None = None,
    metric: str = "l2",
    device: str = "cpu",
    emit: Emit = no_emit,
) -> dict[str, Any]:
    """Memory against recall for each compression: one point per config.

    ``configs``: dicts with ``method`` in flat, sq8, pca, pq (``faiss_sq8`` etc. also
    work) and its constructor parameters. Each point: ``method``, ``params``,
    ``bytes_per_vector``, ``compression`` (float32 bytes / bytes per vector),
    ``recall``, ``qps``, ``build_seconds``; emitted as ``"partial"`` ``point=...``.
    """
    data, queries = as_matrix(data), as_matrix(queries, data.shape[1], "queries")
    n, d = data.shape
    configs = list(configs) if configs is not None else default_compression_configs(d)
    truth, _ = ground_truth(data, queries, k, metric, device)
    points = []
    for i, config in enumerate(configs):
        params = {key: v for key, v in config.items() if key != "method"}
        index = make_index(config["method"], metric=metric, device=device, **params)
        build_seconds, _ = best_of(lambda index=index: index.build(data), 1)
        secs, hits = best_of(lambda index=index: index.search(queries, k), 1)
        bpv = float(index.bytes_per_vector)
        point = {
            "method": config["method"],
            "params": params,
            "bytes_per_vector": round(bpv, 2),
            "compression": round(4.0 * d / bpv, 2),
            "recall": round(recall_at_k(hits.ids, truth.ids, k), 4),
            "qps": round(len(queries) / max(secs, 1e-9), 1),
            "build_seconds": round(build_seconds, 4),
        }
        points.append(point)
        emit("partial", point=point)
        said = f"{compression_words(config)}: {point['compression']}× smaller"
        emit("progress", pct=100.0 * (i + 1) / len(configs), message=said)
    return {"n": n, "d": d, "k": k, "metric": metric, "device": device, "points": points}
