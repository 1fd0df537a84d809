"""Handlers of chapter 2's playgrounds: load the vectors, call ``learn.lab.vindex``, store."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from django.db import connection, transaction

from learn.lab.events import Emit, scaled_emit
from learn.models import Run
from learn.vsearch import INDEX_LABELS, IndexParams, PgvectorParams


def vectors(p: dict[str, Any], emit: Emit, device: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(data (n, d), queries (q, d), description) for a run's dataset choice."""
    from learn.lab.vindex import load_dataset

    if p["dataset"] == "texts":
        from workers import modelcache

        lines = [line.strip() for line in p["texts"].splitlines() if line.strip()]
        emit("progress", pct=1, message=f"Embedding {len(lines)} texts with MiniLM")
        embedded = modelcache.encoder().encode(lines, emit=scaled_emit(emit, 1, 10, "embedding"))
        queries = p["queries"]
        return embedded[queries:], embedded[:queries], f"{len(lines)} texts (MiniLM, 384-d)"
    if p["dataset"] == "digits":
        found = load_dataset("digits", n_queries=p["queries"], seed=p["seed"])
    else:
        found = load_dataset(
            "clustered",
            n=p["n"],
            d=p["d"],
            clusters=p["clusters"],
            seed=p["seed"],
            n_queries=p["queries"],
        )
    return found.data, found.queries, found.name


def _index_form(params: dict[str, Any]) -> IndexParams:
    """The index parameters of a stored run (its other fields belong to its playground)."""
    return IndexParams.model_validate(
        {k: params[k] for k in IndexParams.model_fields if k in params}
    )


def index_lab(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.vindex import index_lab as measure

    p = run.params
    form = _index_form(p)
    data, queries, name = vectors(p, emit, device)
    results = []
    share = 90 / len(p["indexes"])
    for i, index in enumerate(p["indexes"]):
        lo = 10 + i * share
        scaled = scaled_emit(emit, lo, lo + share, INDEX_LABELS[index])

        def tagged(kind: str, /, index: str = index, scaled: Emit = scaled, **data: Any) -> None:
            if kind == "partial":
                data = {"series": INDEX_LABELS[index], **data}
            scaled(kind, **data)

        measured = measure(
            data,
            queries,
            index,
            k=p["k"],
            params=form.index_params(index),
            metric=p["metric"],
            device=device if index == "flat" else "cpu",
            emit=tagged,
        )
        measured["label"] = INDEX_LABELS[index]
        results.append(measured)
    return {
        "dataset": name,
        "n": int(data.shape[0]),
        "d": int(data.shape[1]),
        "queries": int(queries.shape[0]),
        "k": p["k"],
        "metric": p["metric"],
        "device": device,
        "exact_qps": results[0]["exact_qps"],
        "indexes": results,
    }


def query_trace(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.vindex import query_trace as trace

    p = run.params
    form = _index_form(p)
    data, queries, name = vectors(p, emit, device)
    search = {"ef_search": p["ef_search"]} if p["index"] == "hnsw" else {"nprobe": p["nprobe"]}
    result = trace(
        data,
        queries[p["query"]],
        p["index"],
        k=p["k"],
        params=form.index_params(p["index"]),
        search=search,
        metric=p["metric"],
        emit=scaled_emit(emit, 10, 100, "building"),
    )
    return {**result, "dataset": name, "label": INDEX_LABELS[p["index"]], "device": "cpu"}


def compression(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.vindex import compression_lab, threshold_search

    p = run.params
    data, queries, name = vectors(p, emit, device)
    result = compression_lab(
        data, queries, k=p["k"], metric=p["metric"], device=device, emit=scaled_emit(emit, 10, 90)
    )
    emit("progress", pct=92, message=f"threshold search: cosine distance < {p['threshold']}")
    result["threshold"] = threshold_search(data, queries, p["threshold"], k=p["k"])
    result["dataset"] = name
    return result


def pgvector_lab(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    """The same vectors in a real pgvector table, searched with the user's index."""
    from learn.lab.vindex import ground_truth

    p = PgvectorParams.model_validate(run.params)
    data, queries, name = vectors(run.params, emit, device)
    n, d = data.shape
    rng = np.random.default_rng(p.seed)
    category = rng.integers(0, p.categories, size=n)  # (n,) metadata column
    table = f"pgv_{run.id.hex}"
    ops = "vector_l2_ops" if p.metric == "l2" else "vector_cosine_ops"
    op = "<->" if p.metric == "l2" else "<=>"
    # one transaction: SET LOCAL settings end with it, and a failure leaves no table behind
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, category int, v vector({d}))")
        emit("progress", pct=15, message=f"Copying {n:,} rows into a pgvector table")
        with cur.copy(f"COPY {table} (id, category, v) FROM STDIN") as copy:
            for i in range(n):
                copy.write_row((i, int(category[i]), _literal(data[i])))
        emit("progress", pct=30, message=f"Building the {p.index} index")
        started = time.perf_counter()
        if p.index == "hnsw":
            cur.execute(
                f"CREATE INDEX {table}_v ON {table} USING hnsw (v {ops}) "
                f"WITH (m = {p.M}, ef_construction = {p.ef_construction})"
            )
            cur.execute(f"SET LOCAL hnsw.ef_search = {p.ef_search}")
        else:
            cur.execute(
                f"CREATE INDEX {table}_v ON {table} USING ivfflat (v {ops}) "
                f"WITH (lists = {p.nlist})"
            )
            cur.execute(f"SET LOCAL ivfflat.probes = {p.probes}")
        build_seconds = time.perf_counter() - started
        cur.execute(f"SELECT pg_relation_size('{table}_v')")
        index_bytes = cur.fetchone()[0]
        cur.execute(f"ANALYZE {table}")

        def search(q: np.ndarray, where: str = "") -> list[int]:
            cur.execute(
                f"SELECT id FROM {table} {where} ORDER BY v {op} %s::vector LIMIT %s",
                (_literal(q), p.k),
            )
            return [row[0] for row in cur.fetchall()]

        emit("progress", pct=50, message="Searching through the index")
        cur.execute("SET LOCAL enable_seqscan = off")  # the index, even where a scan is cheap
        started = time.perf_counter()
        found = [search(q) for q in queries]
        qps = len(queries) / (time.perf_counter() - started)
        cur.execute(
            f"EXPLAIN (ANALYZE, BUFFERS) SELECT id FROM {table} ORDER BY v {op} %s::vector "
            "LIMIT %s",
            (_literal(queries[0]), p.k),
        )
        plan = "\n".join(row[0] for row in cur.fetchall())

        emit("progress", pct=70, message=f"Filtering: category = {p.category}")
        where = f"WHERE category = {p.category}"
        post = [search(q, where) for q in queries]  # the index first, the filter after
        cur.execute("SET LOCAL enable_seqscan = on")
        cur.execute("SET LOCAL enable_indexscan = off")
        pre = [search(q, where) for q in queries]  # the filter first, then exact distances
        exact = [search(q) for q in queries[:20]]  # no index at all: must equal brute force
        cur.execute(f"DROP TABLE {table}")

    truth, _ = ground_truth(data, queries, p.k, p.metric)
    keep = np.flatnonzero(category == p.category)
    filtered_truth, _ = ground_truth(data[keep], queries, min(p.k, len(keep)), p.metric)
    filtered_ids = keep[filtered_truth.ids]  # (q, k) row ids of the exact filtered answer
    emit("progress", pct=95, message="Scoring")
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
        "build_seconds": round(build_seconds, 3),
        "index_bytes": int(index_bytes),
        "qps": round(qps, 1),
        "recall": _recall(found, truth.ids),
        "explain": plan,
        "uses_index": "Index Scan" in plan,
        "seqscan_recall": _recall(exact, truth.ids[:20]),
        "filter": {
            "category": p.category,
            "rows_matching": len(keep),
            "post_recall": _recall(post, filtered_ids),
            "pre_recall": _recall(pre, filtered_ids),
            "post_mean_returned": round(float(np.mean([len(r) for r in post])), 2),
            "pre_mean_returned": round(float(np.mean([len(r) for r in pre])), 2),
        },
        "device": "postgres",
    }


def _literal(v: np.ndarray) -> str:
    """pgvector's text form of a vector: '[1.5,2,...]'."""
    return "[" + ",".join(f"{x:.7g}" for x in v.tolist()) + "]"


def _recall(found: list[list[int]], truth: np.ndarray) -> float:
    """Mean share of each query's true neighbours (rows of ``truth``, -1 = none) found."""
    shares = []
    for got, true in zip(found, truth, strict=True):
        wanted = {int(i) for i in true if i >= 0}
        if wanted:
            shares.append(len(wanted & set(got)) / len(wanted))
    return round(float(np.mean(shares)), 4) if shares else 1.0
