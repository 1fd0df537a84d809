"""Chapter 2 playgrounds through the real worker, database and broker."""

from __future__ import annotations

import itertools
import uuid

import httpx
import numpy as np
import pytest

from tests.support import (
    active_tasks,
    event_stream,
    finished_run,
    followed,
    read_events,
    start_run,
    take_until,
    wait_until,
)

SMALL = {"n": 2_000, "d": 16, "clusters": 10, "queries": 50, "seed": 3}


def test_the_index_lab_measures_every_index_and_streams_points(api: httpx.Client) -> None:
    indexes = ["flat", "kdtree", "hnsw", "hnswlib", "ivf_flat", "faiss_ivf_flat", "sq8", "pq"]
    params = {**SMALL, "indexes": indexes, "nlist": 16, "pq_m": 4}
    run, events = followed(api, start_run(api, "index-lab", params))
    result = run["result"]
    by_name = {ix["index"]: ix for ix in result["indexes"]}
    assert list(by_name) == indexes and result["device"] == "cpu"
    streamed = [e["data"] for e in events if e["event"] == "partial"]
    assert len(streamed) == sum(len(ix["points"]) for ix in result["indexes"])
    assert {p["series"] for p in streamed} == {ix["label"] for ix in result["indexes"]}

    best = {name: max(p["recall"] for p in ix["points"]) for name, ix in by_name.items()}
    assert best["flat"] == 1.0 and best["kdtree"] == 1.0  # both exact
    assert best["hnsw"] >= 0.95 and best["ivf_flat"] == 1.0  # all cells probed at the end
    assert abs(best["hnsw"] - best["hnswlib"]) <= 0.02
    assert abs(best["ivf_flat"] - best["faiss_ivf_flat"]) <= 0.02
    assert by_name["sq8"]["bytes_per_vector"] == 16 and by_name["pq"]["bytes_per_vector"] == 4
    assert by_name["hnsw"]["sweep_param"] == "ef_search"
    assert [p["value"] for p in by_name["ivf_flat"]["points"]] == [1, 2, 4, 8, 16]
    recalls = [p["recall"] for p in by_name["ivf_flat"]["points"]]
    assert recalls == sorted(recalls)  # more cells probed never finds less
    assert 0 < by_name["kdtree"]["stats"]["fraction_scanned"] <= 1


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"n": 200_001}, "less than or equal to 200000"),
        ({"n": 60_000, "indexes": ["kdtree"]}, "teaching implementation"),
        ({"n": 200_000, "d": 1_024, "indexes": ["faiss_flat"]}, "over the limit"),
        ({"d": 30, "indexes": ["pq"], "pq_m": 8}, "must divide"),
        ({"n": 1_000, "nlist": 500, "indexes": ["ivf_flat"]}, "too many cells"),
        ({"dataset": "texts", "texts": "one\ntwo\n"}, "50 to 5,000"),
        ({"indexes": ["annoy"]}, "indexes"),
        ({"indexes": []}, "indexes"),
        ({"indexes": ["flat", "flat"]}, "each index once"),
    ],
)
def test_bad_index_lab_requests_get_a_422_and_queue_nothing(
    api: httpx.Client, services, params: dict, says: str
) -> None:
    from learn.models import Run

    before = Run.objects.count()
    response = api.post("/api/playgrounds/index-lab/runs", json=params)
    assert response.status_code == 422, response.text
    assert says in response.text
    assert Run.objects.count() == before


def test_a_query_trace_follows_hnsw_down_its_layers(api: httpx.Client) -> None:
    result = finished_run(api, "query-trace", {**SMALL, "index": "hnsw", "ef_search": 32})["result"]
    layers = result["trace"]["layers"]
    assert [layer["layer"] for layer in layers] == list(range(len(layers) - 1, -1, -1))
    assert layers[-1]["hops"][-1]["node"] == result["trace"]["ids"][0]  # ends at the top-1
    for upper, lower in itertools.pairwise(layers):  # each layer starts where
        assert lower["hops"][0]["node"] == upper["hops"][-1]["node"]  # the one above ended
    hops = [h for layer in layers for h in layer["hops"]]
    assert all(str(h["node"]) in result["coords"] for h in hops)
    assert len(result["true_ids"]) == 10 and len(result["query_xy"]) == 2


def test_a_query_trace_shows_which_ivf_cells_were_probed(api: httpx.Client) -> None:
    params = {**SMALL, "index": "ivf_flat", "nlist": 32, "nprobe": 2, "query": 5}
    trace = finished_run(api, "query-trace", params)["result"]["trace"]
    assert len(trace["cells"]) == 2
    probed = {c["cell"] for c in trace["cells"]}
    for nb in trace["neighbours"]:
        assert nb["probed"] == (nb["cell"] in probed)
        assert nb["found"] == (nb["probed"])  # IVF-Flat is exact inside the cells it scans


def test_compression_trades_bytes_for_recall(api: httpx.Client) -> None:
    result = finished_run(api, "compression", {**SMALL, "threshold": 0.2})["result"]
    points = {(p["method"], tuple(sorted(p["params"].items()))): p for p in result["points"]}
    flat = points[("flat", ())]
    assert flat["recall"] == 1.0 and flat["bytes_per_vector"] == 64
    assert points[("sq8", ())]["bytes_per_vector"] == 16
    pq = [p for p in result["points"] if p["method"] == "pq"]
    assert [p["bytes_per_vector"] for p in pq] == [8, 4, 2]
    recalls = [p["recall"] for p in pq]
    assert recalls == sorted(recalls, reverse=True)  # fewer bytes, less recall
    # the threshold search, recomputed with scipy over the same (seeded) dataset
    from scipy.spatial.distance import cdist

    from learn.lab.vindex import load_dataset

    params = {"n": SMALL["n"], "d": SMALL["d"], "clusters": SMALL["clusters"]}
    found = load_dataset("clustered", **params, seed=SMALL["seed"], n_queries=SMALL["queries"])
    distance = cdist(found.queries, found.data, "cosine")  # (q, n)
    counts = (distance < 0.2).sum(axis=1)
    nearest = np.argsort(distance, axis=1)[:, :10]
    recall = (np.take_along_axis(distance, nearest, axis=1) < 0.2).mean()
    threshold = result["threshold"]
    assert (threshold["min_results"], threshold["max_results"]) == (counts.min(), counts.max())
    assert threshold["mean_results"] == pytest.approx(counts.mean(), abs=0.01)
    assert threshold["empty_share"] == pytest.approx((counts == 0).mean(), abs=1e-4)
    assert threshold["recall_at_k"] == pytest.approx(recall, abs=1e-4)


def test_pgvector_searches_a_real_table_and_filters(api: httpx.Client, services) -> None:
    from django.db import connection

    params = {**SMALL, "index": "hnsw", "ef_search": 80, "categories": 20, "category": 3}
    run = finished_run(api, "pgvector", params)
    result = run["result"]
    # measured inside PostgreSQL: the handler says so, and that is what the run keeps
    assert result["device"] == "postgres" and run["device"] == "postgres"
    assert result["uses_index"] and "Index Scan" in result["explain"]
    assert "Execution Time" in result["explain"]
    assert result["recall"] >= 0.9
    assert result["seqscan_recall"] == 1.0  # without the index, pgvector is brute force
    f = result["filter"]
    assert f["pre_recall"] == 1.0 and f["pre_mean_returned"] == 10
    # post-filtering: the index's candidates are cut to the category afterwards, so fewer
    # than k come back (1 in 20 rows match), where pre-filtering always returns k
    assert f["post_mean_returned"] < 10 and f["post_recall"] < f["pre_recall"]
    assert 0 < f["rows_matching"] < 2_000
    with connection.cursor() as cur:  # the per-run table is gone
        cur.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'pgv_%%'")
        assert cur.fetchone()[0] == 0


def test_pgvector_ivfflat_and_my_texts(api: httpx.Client) -> None:
    texts = "\n".join(
        f"Sentence number {i} is about {['cats', 'stocks', 'bread'][i % 3]}." for i in range(80)
    )
    params = {
        "dataset": "texts",
        "texts": texts,
        "queries": 10,
        "index": "ivfflat",
        "nlist": 4,
        "probes": 4,
        "metric": "cosine",
    }
    result = finished_run(api, "pgvector", params)["result"]
    assert result["d"] == 384 and result["n"] == 70
    assert result["recall"] == 1.0  # every list probed: exact


def pgvector_tables(run_id: str) -> int:
    """How many scratch tables of this run's are in PostgreSQL (committed, so visible)."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_tables WHERE tablename = %s", [f"pgv_{run_id}"])
        return cur.fetchone()[0]


def test_pgvector_leaves_no_table_after_a_cancelled_or_failed_run(
    api: httpx.Client, services
) -> None:
    from dataclasses import replace

    from learn import services as runs
    from learn.playgrounds import PLAYGROUNDS

    big = {**SMALL, "n": 20_000, "d": 64, "index": "hnsw"}  # seconds of COPY and index build
    run_id = start_run(api, "pgvector", big)
    with event_stream(api, run_id) as stream:  # cancelled while the table is being filled
        take_until(stream, lambda e: "pgvector table" in e["data"].get("message", ""))
    assert api.post(f"/api/runs/{run_id}/cancel").json()["status"] == "cancelled"
    wait_until(lambda: run_id not in active_tasks(), "the worker dropped the cancelled job", 20)
    assert pgvector_tables(uuid.UUID(run_id).hex) == 0

    # failed: over a time limit of 1 s, in the middle of the same work
    slow = replace(PLAYGROUNDS["pgvector"], time_limit=1)
    failed = runs.create_run(slow, slow.params.model_validate(big))
    assert read_events(api, str(failed.id), timeout=60)[-1]["data"] == {"status": "failed"}
    assert "took longer" in api.get(f"/api/runs/{failed.id}").json()["error"]
    assert pgvector_tables(failed.id.hex) == 0
    # and the worker's database connection still works after the rolled-back transaction
    assert finished_run(api, "pgvector", {**SMALL, "index": "hnsw"})["result"]["recall"] >= 0.9
