"""Operators: the admin lists, filters, finds, cancels and re-runs runs; the dashboard
shows workers, queues and failures."""

from __future__ import annotations

import pytest

from tests.support import read_events


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


def test_admin_lists_filters_and_finds_runs_by_id(staff_client) -> None:
    run = make_run("failed", error="boom")
    listing = staff_client.get("/admin/learn/run/", {"status__exact": "failed"})
    assert listing.status_code == 200 and str(run.id) in listing.content.decode()
    found = staff_client.get("/admin/learn/run/", {"q": str(run.id)[:8]})
    assert str(run.id) in found.content.decode()
    missing = staff_client.get("/admin/learn/run/", {"q": "ffffffff-ffff"})
    assert str(run.id) not in missing.content.decode()


def test_admin_cancels_a_queued_run(staff_client) -> None:
    from learn.models import Run

    run = make_run("queued")
    staff_client.post(
        "/admin/learn/run/", {"action": "cancel", "_selected_action": [str(run.id)]}, follow=True
    )
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED


def test_admin_runs_a_run_again_on_a_worker(staff_client, api) -> None:
    from learn.models import Run

    old = make_run("failed", error="boom")
    before = set(Run.objects.values_list("id", flat=True))
    staff_client.post(
        "/admin/learn/run/", {"action": "run_again", "_selected_action": [str(old.id)]}, follow=True
    )
    (new_id,) = set(Run.objects.values_list("id", flat=True)) - before
    assert read_events(api, str(new_id))[-1]["data"] == {"status": "succeeded"}
    assert Run.objects.get(pk=new_id).params == old.params


def test_dashboard_shows_workers_queues_and_failures(staff_client) -> None:
    make_run("failed", error="a very particular failure")
    page = staff_client.get("/dashboard/").content.decode()
    assert "worker@" in page and "a very particular failure" in page and "gpu" in page


def test_dashboard_is_for_staff_only(site: str) -> None:
    import httpx

    response = httpx.get(f"{site}/dashboard/", follow_redirects=False)
    assert response.status_code == 302 and "/admin/login/" in response.headers["location"]
