"""Operators: the admin lists, filters, finds, cancels and re-runs runs; the dashboard
shows workers, queues and failures."""

from __future__ import annotations

import re

import pytest

from tests.support import (
    active_tasks,
    event_stream,
    read_events,
    start_run,
    succeeded,
    take_until,
    wait_until,
)

LONG = {"n": 60_000, "d": 32, "queries": 50, "indexes": ["hnsw"]}  # see test_operations.py


@pytest.fixture
def staff_client(site: str, services):
    from django.contrib.auth import get_user_model
    from django.test import Client

    user_model = get_user_model()
    staff = user_model.objects.filter(username="operator").first()
    if staff is None:
        staff = user_model.objects.create_superuser("operator", "op@example.com", "a-long-password")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(staff)
    return client


def make_run(status: str = "queued", **fields):
    from learn.models import Run

    return Run.objects.create(
        playground="hash-vectors",
        params={"text_a": "a b c", "text_b": "b c d", "n": 1, "m": 256, "k": 2, "num_perm": 32},
        status=status,
        **fields,
    )


def listed_ids(page: str) -> set[str]:
    """The run ids an admin changelist page shows (its row checkboxes' values)."""
    return set(re.findall(r'name="_selected_action" value="([0-9a-f-]{36})"', page))


def test_admin_lists_filters_and_finds_runs_by_id(staff_client) -> None:
    failed, queued = make_run("failed", error="boom"), make_run("queued")

    def listing(**query: str) -> set[str]:
        response = staff_client.get("/admin/learn/run/", query)
        assert response.status_code == 200, response.status_code  # an error page fails here
        return listed_ids(response.content.decode())

    by_status = listing(status__exact="failed")
    assert str(failed.id) in by_status and str(queued.id) not in by_status
    assert listing(q=str(failed.id)[:8]) == {str(failed.id)}  # a prefix finds the one run
    assert listing(q="ffffffff-ffff") == set()
    runs_cancel_all([queued])


def runs_cancel_all(runs: list) -> None:
    """End rows this module created that no worker will ever take (no job was queued)."""
    from learn import services

    for run in runs:
        services.cancel_run(run)


def test_admin_cancels_a_really_running_run(staff_client, api) -> None:
    from learn.models import Run

    run_id = start_run(api, "index-lab", LONG)
    with event_stream(api, run_id) as stream:  # the worker is building the index
        take_until(stream, lambda e: "hnsw: inserted" in e["data"].get("message", ""))
    response = staff_client.post(
        "/admin/learn/run/", {"action": "cancel", "_selected_action": [run_id]}, follow=True
    )
    assert "Cancelled 1 run(s)." in response.content.decode()
    wait_until(lambda: run_id not in active_tasks(), "the worker dropped the cancelled job", 5)
    assert read_events(api, run_id)[-1]["data"] == {"status": "cancelled"}
    assert Run.objects.get(pk=run_id).status == Run.Status.CANCELLED


def test_admin_runs_an_uploaded_corpus_bpe_run_again_with_the_same_corpus(
    staff_client, api
) -> None:
    from learn.models import Run

    corpus = "low " * 5 + "lowest " * 2 + "newer " * 6 + "wider " * 3 + "new " * 2
    form = {"source": "pasted", "vocab_size": "262", "pretokenizer": "whitespace"}
    files = {"corpus_file": ("corpus.txt", corpus.encode(), "text/plain")}
    uploaded = api.post("/api/playgrounds/bpe-train/runs", data=form, files=files)
    assert uploaded.status_code == 202, uploaded.text
    old = succeeded(api, uploaded.json()["id"])
    before = set(Run.objects.values_list("id", flat=True))
    staff_client.post(
        "/admin/learn/run/", {"action": "run_again", "_selected_action": [old["id"]]}, follow=True
    )
    (new_id,) = set(Run.objects.values_list("id", flat=True)) - before
    new = succeeded(api, str(new_id))
    assert new["params"] == old["params"]
    assert new["result"]["corpus_chars"] == old["result"]["corpus_chars"] == len(corpus)
    assert new["result"]["first_merges"] == old["result"]["first_merges"]
    assert new["result"]["first_merges"][0]["pair"] == ["e", "r"]  # the classic corpus's


def dashboard_counts(page: str, heading: str) -> dict[str, int]:
    """One of the dashboard's two-column count tables ("Runs by status", "Runs by
    playground") as {name: count}."""
    table = page.split(f"<h2>{heading}</h2>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(
        r"<tr><td>(?:<span[^>]*>)?([\w-]+)(?:</span>)?</td><td>(\d+)</td></tr>", table
    )
    return {name: int(n) for name, n in rows}


def test_dashboard_counts_the_runs_it_is_shown(staff_client, api) -> None:
    def page() -> str:
        response = staff_client.get("/dashboard/")
        assert response.status_code == 200
        return response.content.decode()

    before = page()
    made = [
        make_run("failed", error="a very particular failure"),
        make_run("failed", error="another failure"),
        make_run("cancelled"),
    ]
    after = page()
    status = (dashboard_counts(before, "Runs by status"), dashboard_counts(after, "Runs by status"))
    assert status[1].get("failed", 0) - status[0].get("failed", 0) == 2
    assert status[1].get("cancelled", 0) - status[0].get("cancelled", 0) == 1
    assert sum(status[1].values()) - sum(status[0].values()) == len(made)
    playground = (
        dashboard_counts(before, "Runs by playground"),
        dashboard_counts(after, "Runs by playground"),
    )
    assert playground[1]["hash-vectors"] - playground[0].get("hash-vectors", 0) == len(made)
    from learn.models import Run

    assert sum(status[1].values()) == Run.objects.count()  # every row, counted once
    failures = after.split("<h2>Recent failures</h2>", 1)[1].split("</table>", 1)[0]
    assert "a very particular failure" in failures and str(made[0].id)[:8] in failures
    assert "a very particular failure" not in before
    # the live worker, with the device it reports
    health = api.get("/healthz").json()["live_workers"]
    workers = after.split("<h2>Workers</h2>", 1)[1].split("</table>", 1)[0]
    for worker in health:
        assert f"<td>{worker['name']}</td><td>{worker['device']}</td>" in workers


def test_dashboard_is_for_staff_only(site: str) -> None:
    import httpx

    response = httpx.get(f"{site}/dashboard/", follow_redirects=False)
    assert response.status_code == 302 and "/admin/login/" in response.headers["location"]


def test_deleting_runs_removes_the_files_they_kept(staff_client) -> None:
    """A trained model and a LoRA adapter are kept beside their runs; an operator's bulk
    delete removes them, and a delete that is rolled back leaves them."""
    from django.db import transaction

    from learn.models import Run
    from learn.playgrounds import PLAYGROUNDS

    runs = [
        Run.objects.create(playground=slug, params={}, status="succeeded")
        for slug in ("train-gpt", "lora-finetune")
    ]
    ids = [str(r.pk) for r in runs]  # a delete sets pk to None, even one rolled back
    folders = [PLAYGROUNDS[r.playground].kept_folder(r.pk) for r in runs]
    for folder in folders:
        folder.mkdir(parents=True)
        (folder / "weights.safetensors").write_bytes(b"kept")
    with pytest.raises(RuntimeError), transaction.atomic():
        runs[0].delete()
        raise RuntimeError("the delete is rolled back")
    assert Run.objects.filter(pk=ids[0]).exists()
    assert folders[0].is_dir()
    response = staff_client.post(
        "/admin/learn/run/", {"action": "delete_selected", "_selected_action": ids, "post": "yes"}
    )
    assert response.status_code == 302, response.content[:500]
    assert not Run.objects.filter(pk__in=ids).exists()
    assert not any(folder.exists() for folder in folders)
    assert PLAYGROUNDS["embed"].kept_folder(ids[0]) is None  # keeps nothing
