"""The path every playground takes, through the real worker, database and broker."""

from __future__ import annotations

import json
import re

import httpx
import numpy as np
import pytest

from tests.support import finished_run, read_events, worker_device

EMBED_TEXTS = [
    "The cat sat on the mat.",
    "A kitten is sleeping on the rug.",
    "The central bank raised interest rates.",
    "Inflation and borrowing costs keep climbing.",
    "How do I bake sourdough bread?",
]


def run_count(services) -> int:
    from learn.models import Run

    return Run.objects.count()


def test_it_lists_every_playground_with_its_schema(api: httpx.Client) -> None:
    listed = {pg["slug"]: pg for pg in api.get("/api/playgrounds").json()}
    assert {"embed", "analogy", "hash-vectors", "tokenize", "token-cost"} <= set(listed)
    assert listed["embed"]["chapter"] == "embeddings"
    assert listed["embed"]["params_schema"]["properties"]["texts"]["maxItems"] == 256


def test_health_reports_database_broker_and_live_workers(api: httpx.Client) -> None:
    health = api.get("/healthz").json()
    assert health["database"] == "ok" and health["broker"] == "ok"
    assert health["workers"] >= 1


def test_openapi_documents_the_runs_api(api: httpx.Client) -> None:
    paths = api.get("/api/openapi.json").json()["paths"]
    assert "/api/playgrounds/{slug}/runs" in paths
    assert "/api/runs/{run_id}/events" in paths
    assert api.get("/api/docs").status_code == 200


def test_embed_stores_vectors_and_answers_neighbour_queries(api: httpx.Client, services) -> None:
    run = finished_run(api, "embed", {"texts": EMBED_TEXTS})
    result = run["result"]
    n = len(EMBED_TEXTS)
    # the device the worker that ran it reports (cuda on a GPU worker), not a guess
    assert run["device"] == result["device"] == worker_device(api, run["worker"])
    assert run["started_at"] and run["finished_at"]
    assert result["dim"] == 384 and len(result["points"]) == n
    assert 0 < sum(result["explained"]) <= 1
    sim = np.array(result["similarity"])
    assert sim.shape == (n, n) and np.allclose(np.diag(sim), 1, atol=1e-3)

    # pgvector's <=> order equals brute force over the similarity matrix
    for position in range(n):
        found = api.get(f"/api/runs/{run['id']}/neighbours", params={"position": position, "k": 3})
        assert found.status_code == 200
        got = [nb["position"] for nb in found.json()]
        expected = [int(j) for j in np.argsort(-sim[position]) if j != position][:3]
        assert got == expected
    nearest_to_cat = api.get(f"/api/runs/{run['id']}/neighbours", params={"position": 0}).json()
    assert nearest_to_cat[0]["text"] == "A kitten is sleeping on the rug."

    from learn.models import TextEmbedding

    stored = TextEmbedding.objects.filter(run_id=run["id"]).order_by("position")
    assert [t.text for t in stored] == EMBED_TEXTS
    assert np.allclose(
        np.linalg.norm(np.stack([t.embedding for t in stored]), axis=1), 1, atol=1e-5
    )


def test_events_of_a_finished_run_replay_in_full_and_resume_after_last_event_id(
    api: httpx.Client,
) -> None:
    run = finished_run(
        api, "hash-vectors", {"text_a": "one two three four", "text_b": "two three four five"}
    )
    events = read_events(api, run["id"])
    ids = [e["id"] for e in events]
    assert ids == list(range(1, len(ids) + 1))
    assert {"progress", "done"} <= {e["event"] for e in events}
    assert events[-1] == {"id": ids[-1], "event": "done", "data": {"status": "succeeded"}}

    resumed = read_events(api, run["id"], last_event_id=2)
    assert [e["id"] for e in resumed] == ids[2:]


def test_analogy_answers_from_pgvector_match_brute_force(api: httpx.Client, services) -> None:
    run = finished_run(api, "analogy", {"a": "king", "b": "man", "c": "woman", "k": 10})
    result = run["result"]
    words = [a["word"] for a in result["answers"]]
    assert len(words) == 10 and not {"king", "man", "woman"} & set(words)
    scores = [a["score"] for a in result["answers"]]
    assert scores == sorted(scores, reverse=True)
    assert [p["label"] for p in result["plot"]][:4] == ["king", "man", "woman", words[0]]

    from learn.models import VocabWord

    vocab = list(VocabWord.objects.values_list("word", "embedding"))
    assert len(vocab) == 5000
    table = {word: np.asarray(vector) for word, vector in vocab}
    target = table["king"] - table["man"] + table["woman"]
    target /= np.linalg.norm(target)
    names = [w for w, _ in vocab if w not in {"king", "man", "woman"}]
    matrix = np.stack([table[w] for w in names])
    exact = [names[i] for i in np.argsort(-(matrix @ target))[:10]]
    assert len(set(words) & set(exact)) >= 9  # HNSW recall@10 against exact search
    assert words[0] == exact[0]
    assert "queen" in words


def test_hash_vectors_reports_exact_and_estimated_jaccard(api: httpx.Client) -> None:
    a = "the quick brown fox jumps over the lazy dog near the river bank"
    b = "the quick brown fox leaps over the lazy cat near the river bank"
    run = finished_run(
        api, "hash-vectors", {"text_a": a, "text_b": b, "n": 2, "m": 4096, "k": 3, "num_perm": 256}
    )
    result = run["result"]
    grams = [{" ".join(t.split()[i : i + 2]) for i in range(len(t.split()) - 1)} for t in (a, b)]
    exact = len(grams[0] & grams[1]) / len(grams[0] | grams[1])
    assert result["exact_jaccard"] == pytest.approx(exact)
    assert abs(result["bloom"]["estimate"] - exact) < 0.1
    assert abs(result["minhash"]["estimate"] - exact) < 0.2
    assert result["minhash"]["error"] == pytest.approx(result["minhash"]["estimate"] - exact)
    assert len(result["bits"]["a"]) == 4096


@pytest.mark.parametrize(
    ("slug", "params", "field"),
    [
        ("embed", {"texts": ["only one"]}, "texts"),
        ("embed", {"texts": [f"text {i}" for i in range(257)]}, "texts"),
        ("embed", {"texts": ["ok", "x" * 2001]}, "texts.1"),
        ("embed", {"texts": ["ok", "   "]}, "texts.1"),
        ("embed", {"texts": ["a", "b"], "model": "gpt-5"}, "model"),
        ("embed", {}, "texts"),
        ("analogy", {"a": "king", "b": "man", "c": "zzzqqq"}, "c"),
        ("analogy", {"a": "king", "b": "man", "c": "woman", "k": 0}, "k"),
        ("analogy", {"a": "king", "b": "man", "c": "woman", "k": 51}, "k"),
        ("hash-vectors", {"text_a": "a b", "text_b": "b c", "n": 6}, "n"),
        ("hash-vectors", {"text_a": "a b", "text_b": "b c", "m": 63}, "m"),
        ("hash-vectors", {"text_a": "a b", "text_b": "b c", "m": 65_537}, "m"),
        ("hash-vectors", {"text_a": "a b", "text_b": "b c", "m": 64, "k": 9}, "body"),
        ("hash-vectors", {"text_a": "a b", "text_b": "b c", "num_perm": 2000}, "num_perm"),
        # the playgrounds of chapters 2-5 that had no 422 test
        ("positions", {"positions": 1025}, "positions"),
        ("positions", {"dims": 1}, "dims"),
        ("kv-cache", {"max_new_tokens": 129}, "max_new_tokens"),
        ("kv-cache", {"prompt": ""}, "prompt"),
        ("speculative", {"num_draft": 17}, "num_draft"),
        ("speculative", {"draft": "int2"}, "draft"),
        ("moe", {"experts": 65}, "experts"),
        ("moe", {"tokens": 7}, "tokens"),
        ("query-trace", {"n": 20_001}, "n"),
        ("query-trace", {"index": "pq"}, "index"),
        ("compression", {"threshold": 0}, "threshold"),
        ("compression", {"n": 200_001}, "n"),
        ("pgvector", {"n": 50_001}, "n"),
        ("pgvector", {"category": 100}, "category"),
        ("token-cost", {"text": "hi", "tokenizers": []}, "tokenizers"),
        ("token-cost", {"text": "hi", "context_window": 127}, "context_window"),
    ],
)
def test_it_rejects_out_of_bounds_params_with_422_and_queues_nothing(
    api: httpx.Client, services, slug: str, params: dict, field: str
) -> None:
    before = run_count(services)
    response = api.post(f"/api/playgrounds/{slug}/runs", json=params)
    assert response.status_code == 422
    body = response.json()
    assert field in [d["field"] for d in body["detail"]]
    assert body["message"]
    assert run_count(services) == before


def test_it_refuses_unknown_playgrounds_and_broken_json(api: httpx.Client) -> None:
    assert api.post("/api/playgrounds/nope/runs", json={}).status_code == 404
    broken = api.post(
        "/api/playgrounds/embed/runs",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert broken.status_code == 400 and "JSON" in broken.json()["message"]
    assert api.get("/api/runs/00000000-0000-0000-0000-000000000000").status_code == 404


# Cancelling a running job, a worker that dies mid-run and the time limit: tests/test_operations.py


def test_a_running_run_past_its_time_limit_is_failed_when_read(api: httpx.Client, services) -> None:
    """No worker will finish a run still 'running' well past its playground's time limit
    (plus services.LOST_AFTER): reading it fails it. One inside its limit is left alone."""
    from datetime import timedelta

    from django.utils import timezone

    from learn import services as runs
    from learn.models import Run
    from learn.playgrounds import PLAYGROUNDS

    limit = timedelta(seconds=PLAYGROUNDS["hash-vectors"].time_limit) + runs.LOST_AFTER
    started = timezone.now()

    def running(ago: timedelta) -> Run:
        return Run.objects.create(
            playground="hash-vectors", params={}, status=Run.Status.RUNNING,
            started_at=started - ago, worker="worker@gone",
        )  # fmt: skip

    lost, late, young = (
        running(limit + timedelta(seconds=30)),
        running(limit - timedelta(seconds=30)),
        running(timedelta(seconds=1)),
    )
    body = api.get(f"/api/runs/{lost.id}").json()
    assert body["status"] == "failed"
    assert body["error"] == "The worker running this job stopped responding; run it again."
    assert read_events(api, str(lost.id))[-1]["data"] == {"status": "failed"}
    for kept in (late, young):
        assert api.get(f"/api/runs/{kept.id}").json()["status"] == "running"
        runs.cancel_run(kept)  # no job was queued for these rows: end them here


def test_htmx_form_posts_get_html_that_subscribes_to_the_run(api: httpx.Client) -> None:
    headers = {"HX-Request": "true"}
    ok = api.post(
        "/api/playgrounds/embed/runs",
        data={"texts": "first line\n\nsecond line\n"},
        headers=headers,
    )
    assert ok.status_code == 202
    assert 'sse-connect="/runs/' in ok.text and "/stream" in ok.text
    bad = api.post("/api/playgrounds/embed/runs", data={"texts": "just one"}, headers=headers)
    assert bad.status_code == 422
    assert "Texts needs at least 2" in bad.text and 'data-field="texts"' in bad.text


def test_the_html_stream_ends_with_the_rendered_result(api: httpx.Client) -> None:
    run = finished_run(api, "hash-vectors", {"text_a": "a b c d", "text_b": "b c d e"})
    with api.stream("GET", f"/runs/{run['id']}/stream") as response:
        body = "".join(response.iter_text())
    assert body.rstrip().endswith("event: done\ndata:")
    # the result frame is the playground's result template filled with this run's numbers
    frame = body.split("event: result\n", 1)[1].split("\n\n", 1)[0]
    html = "\n".join(line.removeprefix("data: ") for line in frame.splitlines())
    result = run["result"]
    assert f"A has {result['grams_a']} distinct 2-grams, B has {result['grams_b']}" in html
    assert f"they share {result['grams_shared']} of {result['grams_union']}" in html
    assert (result["grams_shared"], result["grams_union"]) == (2, 4)  # {bc, cd} of {ab…de}
    assert f"<td>{result['exact_jaccard']:.4f}</td>" in html
    assert f"<td>{result['minhash']['estimate']:.4f}</td>" in html
    embedded = re.search(r'<script id="[^"]+" type="application/json">(.*?)</script>', html, re.S)
    assert json.loads(embedded.group(1)) == result  # what the page's charts draw from
    assert 'hx-swap-oob="true">succeeded' in body
