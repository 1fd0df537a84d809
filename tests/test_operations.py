"""Operating the running site: a cancelled job really stops its worker, a stream resumes
mid-run after its Last-Event-ID, a dead worker's run is failed when the worker comes back,
a run over its time limit ends failed, and a missing broker or Valkey is a 503, not a 500.

Each waits on what the run's event stream says (running, done) rather than sleeping.
The dead worker is a second, short-lived Celery worker on a queue of its own, so killing
it leaves the session's worker (tests/conftest.py) to the other tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, VAR
from tests.support import (
    active_tasks,
    event_stream,
    finished_run,
    read_events,
    start_run,
    take_until,
    wait_until,
)

# Our HNSW over 60,000 points: a quick ground truth (50 queries), then a build of 10 s or
# more that reports every 2 % (the session's worker has its compiled code loaded already).
LONG = {"n": 60_000, "d": 32, "queries": 50, "indexes": ["hnsw"]}
QUICK = {"simulations": 200}  # mcts: well under a second


def building(event: dict) -> bool:
    """An event from inside the HNSW build: the worker is running the job, mid-run."""
    return "hnsw: inserted" in event["data"].get("message", "")


def test_resuming_mid_run_and_cancelling_stops_the_job_on_its_worker(
    api: httpx.Client, services
) -> None:
    from learn import events

    run_id = start_run(api, "index-lab", LONG)
    with event_stream(api, run_id) as stream:
        first = take_until(stream, building)
    assert api.get(f"/api/runs/{run_id}").json()["status"] == "running"
    seen = first[-1]["id"]

    # Last-Event-ID (header) mid-run: the events after it, then the live tail.
    with event_stream(api, run_id, last_event_id=seen) as stream:
        resumed = [next(stream), next(stream)]
    assert [e["id"] for e in resumed] == [seen + 1, seen + 2]
    # The same as the `last_event_id` query parameter (for EventSource, which sends none).
    with event_stream(api, run_id, last_event_id=seen + 1, as_query=True) as stream:
        by_query = next(stream)
    assert by_query == resumed[1]
    # The HTML stream resumes from the header too: its first event is the next one.
    headers = {"Last-Event-ID": str(seen)}
    with api.stream("GET", f"/runs/{run_id}/stream", headers=headers) as response:
        assert response.status_code == 200
        html_ids = (int(line[4:]) for line in response.iter_lines() if line.startswith("id: "))
        assert next(html_ids) == seen + 1
    assert api.get(f"/api/runs/{run_id}").json()["status"] == "running"  # still mid-run

    cancelled = api.post(f"/api/runs/{run_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # The worker notices at its next event (0.2 s) and leaves the job: off its active list
    # at once, where the build would go on for 10 s or more if it did not.
    wait_until(lambda: run_id not in active_tasks(), "the worker dropped the cancelled job", 5)
    replay = read_events(api, run_id)
    assert [e["id"] for e in replay] == list(range(1, len(replay) + 1))
    assert replay[: len(first)] == first and replay[seen : seen + 2] == resumed
    assert replay[-1] == {"id": len(replay), "event": "done", "data": {"status": "cancelled"}}
    stored = events.history(run_id)  # nothing was appended after `done`
    assert stored[-1].id == replay[-1]["id"] and stored[-1].kind == "done"
    assert sum(e.kind == "done" for e in stored) == 1
    run = api.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "cancelled" and run["result"] is None
    assert api.post(f"/api/runs/{run_id}/cancel").status_code == 409

    started = time.monotonic()  # the worker takes the next run at once
    finished_run(api, "mcts", QUICK)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("sent", ["-1", "abc", "1.5", str(2**63)])
def test_a_malformed_last_event_id_is_a_400_in_every_form(api: httpx.Client, sent: str) -> None:
    run_id = start_run(api, "mcts", QUICK)
    for path, kw in [
        (f"/api/runs/{run_id}/events", {"params": {"last_event_id": sent}}),
        (f"/runs/{run_id}/stream", {"headers": {"Last-Event-ID": sent}}),
        (f"/runs/{run_id}/stream", {"params": {"last_event_id": sent}}),
    ]:
        response = api.get(path, **kw)
        assert response.status_code == 400, (path, response.text)
        assert "Last-Event-ID must be" in response.json()["message"]
    assert read_events(api, run_id)[-1]["data"] == {"status": "succeeded"}


def test_a_run_over_its_time_limit_ends_failed_with_a_reason(api: httpx.Client, services) -> None:
    from learn import services as runs
    from learn.playgrounds import PLAYGROUNDS

    playground = replace(PLAYGROUNDS["index-lab"], time_limit=1)  # the soft limit, seconds
    run = runs.create_run(playground, playground.params.model_validate(LONG))
    replay = read_events(api, str(run.id), timeout=60)
    assert replay[-1]["data"] == {"status": "failed"}
    stored = api.get(f"/api/runs/{run.id}").json()
    assert stored["status"] == "failed", stored
    assert stored["error"] == "The job took longer than this playground allows; try less input."
    assert [e["data"]["message"] for e in replay if e["event"] == "error"] == [stored["error"]]
    assert not [e for e in replay if e["event"] == "attempt"]  # stopped, not killed and retried
    from datetime import datetime

    took = datetime.fromisoformat(stored["finished_at"]) - datetime.fromisoformat(
        stored["started_at"]
    )
    assert 0.9 <= took.total_seconds() < 10, took  # the limit runs from the job's start


@contextlib.contextmanager
def second_worker(name: str, queue: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker named ``name`` on ``queue`` alone, in its own process group (one
    process: killing it kills the job with it)."""
    from webapp.celery import app
    from webapp.run import worker_command

    command = worker_command(queue)
    command[command.index("--hostname") + 1] = name
    command[command.index("--concurrency") + 1] = "1"
    command += ["--pool", "solo"]  # the job runs in the worker's own process: quick to start
    env = {**os.environ, "WORKER_CONCURRENCY": "1", "FP_PRELOAD_MODELS": "0"}
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: proc.poll() is not None or app.control.ping([name], timeout=0.5),
            f"the worker {name}",
            90,
        )
        assert proc.poll() is None, log.read_text()[-3000:]
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_a_killed_worker_s_run_is_failed_when_it_starts_again(api: httpx.Client, services) -> None:
    from learn import services as runs
    from learn.models import Run
    from learn.playgrounds import PLAYGROUNDS

    token = uuid.uuid4().hex[:8]
    name, queue, log = f"ops-{token}@{socket.gethostname()}", f"ops-{token}", VAR / "ops.log"
    playground = replace(PLAYGROUNDS["index-lab"], queue=queue)
    with second_worker(name, queue, log) as proc:
        run = runs.create_run(playground, playground.params.model_validate(LONG))
        with event_stream(api, str(run.id)) as stream:  # "Started on ops-…": it is running
            take_until(stream, lambda e: name in e["data"].get("message", ""))
        run.refresh_from_db()
        assert (run.status, run.worker) == (Run.Status.RUNNING, name)
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and its pool process, mid-job
        proc.wait()
    # Nothing else notices yet (its time limit is 15 minutes away): it still says running.
    assert api.get(f"/api/runs/{run.id}").json()["status"] == "running"
    with second_worker(name, queue, log):  # the same name: once ready, it fails what it had
        stored = wait_until(
            lambda: (
                (found := api.get(f"/api/runs/{run.id}").json())["status"] != "running" and found
            ),
            "the restarted worker failed its lost run",
            20,
        )
    replay = read_events(api, str(run.id), timeout=30)
    assert replay[-1]["data"] == {"status": "failed"}, stored
    assert stored["error"] == "The worker restarted while running this job; run it again."
    assert stored["status"] == "failed" and stored["finished_at"]


BROKEN = """
import json, os, time
import django
django.setup()
from django.conf import settings
from django.test import Client
from learn import events
from learn.models import Run
from webapp.celery import app

def attempt():
    client = Client(HTTP_HOST="127.0.0.1")
    before = Run.objects.count()
    started = time.monotonic()
    posted = client.post(
        "/api/playgrounds/hash-vectors/runs",
        data=json.dumps({"text_a": "a b c", "text_b": "b c d"}),
        content_type="application/json",
    )
    seconds = time.monotonic() - started
    health = client.get("/healthz")
    return {
        "status": posted.status_code, "body": posted.json(), "seconds": seconds,
        "added": Run.objects.count() - before,
        "health": health.status_code, "health_body": health.json(),
    }

found = {}
app.conf.broker_url = os.environ["DEAD_URL"]  # the broker alone; Valkey's events still work
found["broker"] = attempt()
settings.REDIS_URL = os.environ["DEAD_URL"]  # now Valkey too: events, rate limits, heartbeats
events.client.cache_clear()
found["valkey"] = attempt()
print(json.dumps(found))
"""


def dead_url() -> str:
    """A redis:// URL nothing listens on (a port just freed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def test_an_unreachable_broker_or_valkey_is_a_503_that_stores_nothing(services) -> None:
    """In a process of its own, pointed at a dead port: first the broker alone, then Valkey
    (the broker, events and rate limits) altogether. healthz says when Valkey is down."""
    done = subprocess.run(
        [sys.executable, "-c", BROKEN], cwd=ROOT, env={**os.environ, "DEAD_URL": dead_url()},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    both = json.loads(done.stdout.strip().splitlines()[-1])
    for down, found in both.items():
        assert found["status"] == 503, (down, found)
        assert "not reachable" in found["body"]["message"] and found["body"]["detail"] == []
        assert found["added"] == 0 and found["seconds"] < 15, (down, found)
        assert found["health_body"]["database"] == "ok"
    # healthz reads the heartbeats in Valkey, which still answered while only the broker
    # URL was dead (in production both are the same Valkey)
    assert both["broker"]["health_body"]["broker"] == "ok"
    valkey = both["valkey"]
    assert valkey["health"] == 503 and valkey["health_body"]["broker"].startswith("error"), valkey
    assert valkey["health_body"]["workers"] == 0


DB_DOWN = """
import json, time
import django
django.setup()
from django.test import Client

started = time.monotonic()
health = Client(HTTP_HOST="127.0.0.1").get("/healthz")
print(json.dumps({"status": health.status_code, "body": health.json(),
                  "seconds": time.monotonic() - started}))
"""


def test_healthz_says_at_once_when_postgres_is_down(services) -> None:
    """With the database unreachable (a port nothing listens on), /healthz is a 503 naming
    the database within a few seconds, not after the pool's 10 s wait for a connection."""
    port = dead_url().rsplit(":", 1)[1].split("/")[0]
    env = {**os.environ, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/postgres"}
    done = subprocess.run(
        [sys.executable, "-c", DB_DOWN], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["status"] == 503, found
    assert found["body"]["database"].startswith("error"), found
    assert found["body"]["broker"] == "ok" and found["seconds"] < 5, found


def test_a_worker_event_after_a_cancel_is_refused_and_the_stream_ends_with_done(
    services,
) -> None:
    """The cancel check and the append are one step: once a cancel is requested, a worker's
    next event is not appended (it would land after ``done``), and ``emit`` stops the job."""
    from learn import events
    from workers.tasks import RunCancelled, make_emit

    run_id = f"race-{uuid.uuid4()}"
    emit = make_emit(run_id)
    emit("progress", pct=10)
    events.request_cancel(run_id)
    events.append(run_id, "done", status="cancelled")  # what cancel_run writes next
    assert events.append_unless_cancelled(run_id, "partial", text="late") == 0
    with pytest.raises(RunCancelled):
        emit("progress", pct=20)
    kinds = [(e.id, e.kind) for e in events.history(run_id)]
    assert kinds == [(1, "progress"), (2, "done")], kinds
