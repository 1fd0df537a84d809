"""Chapter 2's handlers: load the vectors, call ``learn.lab.vindex``, measure pgvector."""

from __future__ import annotations

from typing import Any

import numpy as np

from learn import services
from learn.lab.events import Emit, scaled_emit
from learn.lab.facts import INDEX_LABELS
from learn.lab.vindex.recall import recall_at_k
from learn.playgrounds.vectors import (
    CompressionParams,
    IndexLabParams,
    PgvectorParams,
    QueryTraceParams,
    VectorData,
)
from workers import modelcache
from workers.handlers import Job


def vectors(p: VectorData, emit: Emit) -> tuple[np.ndarray, np.ndarray, str]:
    """(data (n, d), queries (q, d), description) for a run's dataset choice."""
    from learn.lab.vindex import load_dataset

    if p.dataset == "texts":
        lines = [line.strip() for line in (p.texts or "").splitlines() if line.strip()]
        emit("progress", pct=1, message=f"Embedding {len(lines)} texts with MiniLM")
        embedded = modelcache.encoder().encode(lines, emit=scaled_emit(emit, 1, 10, "embedding"))
        return embedded[p.queries :], embedded[: p.queries], f"{len(lines)} texts (MiniLM, 384-d)"
    if p.dataset == "digits":
        found = load_dataset("digits", n_queries=p.queries, seed=p.seed)
    else:
        found = load_dataset(
            "clustered", n=p.n, d=p.d, clusters=p.clusters, seed=p.seed, n_queries=p.queries
        )
    return found.data, found.queries, found.name


def index_lab(p: IndexLabParams, job: Job) -> dict[str, Any]:
    from learn.lab.vindex import index_lab as measure

    data, queries, name = vectors(p, job.emit)
    results = []
    share = 90 / len(p.indexes)
    for i, index in enumerate(p.indexes):
        lo = 10 + i * share
        scaled = scaled_emit(job.emit, lo, lo + share, INDEX_LABELS[index])

        def tagged(kind: str, /, index: str = index, scaled: Emit = scaled, **data: Any) -> None:
            if kind == "partial":
                data = {"series": INDEX_LABELS[index], **data}
            scaled(kind, **data)

        measured = measure(
            data,
            queries,
            index,
            k=p.k,
            params=p.index_params(index),
            metric=p.metric,
            device=job.device if index == "flat" else "cpu",
            emit=tagged,
        )
        measured["label"] = INDEX_LABELS[index]
        results.append(measured)
    return {
        "dataset": name,
        "n": int(data.shape[0]),
        "d": int(data.shape[1]),
        "queries": int(queries.shape[0]),
        "k": p.k,
        "metric": p.metric,
        "exact_qps": results[0]["exact_qps"],
        "indexes": results,
    }


def query_trace(p: QueryTraceParams, job: Job) -> dict[str, Any]:
    from learn.lab.vindex import query_trace as trace

    data, queries, name = vectors(p, job.emit)
    search = {"ef_search": p.ef_search} if p.index == "hnsw" else {"nprobe": p.nprobe}
    result = trace(
        data,
        queries[p.query],
        p.index,
        k=p.k,
        params=p.index_params(p.index),
        search=search,
        metric=p.metric,
        emit=scaled_emit(job.emit, 10, 100, "building"),
    )
    return {**result, "dataset": name, "label": INDEX_LABELS[p.index], "device": "cpu"}


def compression(p: CompressionParams, job: Job) -> dict[str, Any]:
    from learn.lab.vindex import compression_lab, threshold_search

    data, queries, name = vectors(p, job.emit)
    result = compression_lab(
        data, queries, k=p.k, metric=p.metric, device=job.device, emit=scaled_emit(job.emit, 10, 90)
    )
    job.emit("progress", pct=92, message=f"threshold search: cosine distance < {p.threshold}")
    result["threshold"] = threshold_search(data, queries, p.threshold, k=p.k)
    result["dataset"] = name
    return result


def pgvector(p: PgvectorParams, job: Job) -> dict[str, Any]:
    """The same vectors in a real pgvector table, searched with the learner's index."""
    from learn.lab.vindex import ground_truth

    data, queries, name = vectors(p, job.emit)
    n, d = data.shape
    category = np.random.default_rng(p.seed).integers(0, p.categories, size=n)  # (n,) metadata
    measured = services.pgvector_search(job.run_id, p, data, category, queries, job.emit)
    job.emit("progress", pct=95, message="Scoring against exact search")
    truth, _ = ground_truth(data, queries, p.k, p.metric)
    keep = np.flatnonzero(category == p.category)
    filtered_truth, _ = ground_truth(data[keep], queries, min(p.k, len(keep)), p.metric)
    filtered_ids = keep[filtered_truth.ids]  # (q, k) row ids of the exact filtered answer
    post, pre = measured.post_filtered, measured.pre_filtered
    return {
        "dataset": name,
        "n": int(n),
        "d": int(d),
        "k": p.k,
        "metric": p.metric,
        "index": p.index,
        "index_params": {"m": p.M, "ef_construction": p.ef_construction, "ef_search": p.ef_search}
        if p.index == "hnsw"
        else {"lists": p.nlist, "probes": p.probes},
        "build_seconds": round(measured.build_seconds, 3),
        "index_bytes": measured.index_bytes,
        "qps": round(measured.qps, 1),
        "recall": round(recall_at_k(measured.found, truth.ids), 4),
        "explain": measured.plan,
        "uses_index": "Index Scan" in measured.plan,
        "seqscan_recall": round(recall_at_k(measured.exact, truth.ids[:20]), 4),
        "filter": {
            "category": p.category,
            "rows_matching": len(keep),
            "post_recall": round(recall_at_k(post, filtered_ids), 4),
            "pre_recall": round(recall_at_k(pre, filtered_ids), 4),
            "post_mean_returned": round(float(np.mean([len(r) for r in post])), 2),
            "pre_mean_returned": round(float(np.mean([len(r) for r in pre])), 2),
        },
        "device": "postgres",
    }
