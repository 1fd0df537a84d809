"""The site stays up when its processes die, its event streams hold no database connection
and stop at their caps, and /healthz and /metrics tell the truth.

These tests start their own ``python -m webapp.run`` (their own FP_VAR_DIR, port,
PostgreSQL, Valkey and worker), so killing its worker leaves the shared session stack alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support import read_events, start_run

ROOT = Path(__file__).resolve().parent.parent
LONG = {"n": 20_000, "d": 32, "indexes": ["hnsw"]}  # our HNSW: tens of seconds on a CPU
SHORT = {"n": 3_000, "d": 32, "indexes": ["hnsw"]}  # a few seconds
QUICK = {"simulations": 200}  # mcts: well under a second
POOL_MAX, PER_IP, MAX_STREAMS = 3, 5, 12
TOKEN = "a-scraper-secret"  # FP_METRICS_TOKEN


@dataclass
class Launcher:
    base: str
    var: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def pids(self) -> dict[str, Any]:
        return json.loads((self.var / "supervisor.json").read_text())

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(
            host=str(self.var / "pgdata"), user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            return conn.execute(query).fetchall()

    def web_connections(self) -> int:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name='forward-pass-web'"
        return self.sql(query)[0][0]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def wait_for(check: Callable[[], Any], what: str, timeout: float, launcher: Launcher) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError, ValueError, KeyError):
            found = check()
            if found:
                return found
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s\n{launcher.tail()}")


@pytest.fixture(scope="module")
def launcher() -> Iterator[Launcher]:
    var = Path(tempfile.mkdtemp(prefix="fp-resilience-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        FP_VAR_DIR=str(var), PORT=str(port), FP_PRELOAD_MODELS="0", WORKER_CONCURRENCY="1",
        FP_DB_POOL_MIN="1", FP_DB_POOL_MAX=str(POOL_MAX), FP_STREAMS_PER_IP=str(PER_IP),
        FP_STREAMS_MAX=str(MAX_STREAMS), FP_METRICS_TOKEN=TOKEN, HF_HUB_OFFLINE="1",
    )  # fmt: skip
    log = var / "launcher.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "webapp.run"], cwd=ROOT, env=env,
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    site = Launcher(f"http://127.0.0.1:{port}", var, proc, log)
    try:
        wait_for(lambda: httpx.get(f"{site.base}/healthz").status_code == 200, "up", 120, site)
        yield site
    finally:
        children = site.pids() if (var / "supervisor.json").exists() else {}
        proc.send_signal(signal.SIGTERM)  # Ctrl-C: stops the worker, web, Valkey, Postgres
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            for name in ("worker", "web"):
                with contextlib.suppress(Exception):
                    os.killpg(children[name]["pid"], signal.SIGKILL)
            proc.kill()
        subprocess.run(["rm", "-rf", str(var)], check=False)


def client(site: Launcher, address: str = "127.0.0.1") -> httpx.Client:
    """A client whose requests come from ``address`` (any 127.x.y.z is this machine)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=site.base, transport=transport, timeout=30)


def wait_status(api: httpx.Client, run_id: str, wanted: set[str], site: Launcher, timeout=60.0):
    def status() -> str | None:
        found = api.get(f"/api/runs/{run_id}").json()["status"]
        return found if found in wanted else None

    return wait_for(status, f"run {run_id} in {wanted}", timeout, site)


def test_health_names_the_live_worker_and_answers_without_a_ping(launcher: Launcher) -> None:
    with client(launcher) as api:  # the device comes once a pool process has imported torch
        wait_for(
            lambda: api.get("/healthz").json()["live_workers"][0]["device"],
            "a device",
            60,
            launcher,
        )
        seconds = []
        for _ in range(5):
            started = time.perf_counter()
            response = api.get("/healthz")
            seconds.append(time.perf_counter() - started)
    health = response.json()
    assert response.status_code == 200 and health["workers"] == 1, health
    (worker,) = health["live_workers"]
    assert worker["name"].startswith("worker@") and worker["device"] in {"cpu", "cuda"}
    assert min(seconds) < 0.3, seconds  # a Celery ping waited 0.5 s on every call


def test_streams_hold_no_database_connection_and_stop_at_their_caps(launcher: Launcher) -> None:
    with client(launcher) as api:
        run_id = start_run(api, "index-lab", LONG)
        wait_status(api, run_id, {"running"}, launcher)
        path = f"/api/runs/{run_id}/events"
        addresses = ["127.0.0.2"] * PER_IP + ["127.0.0.3"] * PER_IP + ["127.0.0.4"] * 2
        readers = []  # held: a line iterator that is garbage-collected closes its stream
        with contextlib.ExitStack() as streams:
            for address in addresses:  # MAX_STREAMS in all, PER_IP from two of the addresses
                other = streams.enter_context(client(launcher, address))
                response = streams.enter_context(other.stream("GET", path))
                assert response.status_code == 200
                readers.append(response.iter_lines())
                assert next(readers[-1]) == "retry: 2000"
            # More streams than the pool has connections, and the pool is all the web holds.
            assert len(addresses) > POOL_MAX >= launcher.web_connections()
            with client(launcher, "127.0.0.2") as same:
                refused = same.get(path)
            assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
            assert "streams open from this address" in refused.json()["message"]
            with client(launcher, "127.0.0.5") as new:
                full = new.get(path)
            assert full.status_code == 503 and int(full.headers["Retry-After"]) > 0
        with client(launcher, "127.0.0.5") as new:  # closed streams gave their places back

            def admitted() -> bool:
                with new.stream("GET", path) as response:
                    return response.status_code == 200

            wait_for(admitted, "a stream after the others closed", 10, launcher)
        assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200


@pytest.mark.parametrize("sent", [str(2**64), str(2**63), "-1", "abc", "1e3", "1-1"])
def test_a_last_event_id_that_is_no_event_id_is_a_400(launcher: Launcher, sent: str) -> None:
    with client(launcher) as api:
        run_id = start_run(api, "mcts", QUICK)
        response = api.get(f"/api/runs/{run_id}/events", headers={"Last-Event-ID": sent})
    assert response.status_code == 400
    assert "Last-Event-ID must be" in response.json()["message"]


def test_the_largest_event_id_is_served(launcher: Launcher) -> None:
    with client(launcher) as api:
        run_id = start_run(api, "mcts", QUICK)
        assert read_events(api, run_id)[-1]["event"] == "done"
        assert read_events(api, run_id, last_event_id=2**63 - 1) == []  # nothing after it


def test_a_killed_worker_is_restarted_and_the_site_stays_up(launcher: Launcher) -> None:
    with client(launcher) as api:
        run_id = start_run(api, "index-lab", LONG)
        wait_status(api, run_id, {"running"}, launcher)
        before = launcher.pids()
        os.kill(before["worker"]["pid"], signal.SIGKILL)  # the worker's main process
        health, pages = [], []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            health.append(api.get("/healthz").status_code)
            pages.append(api.get("/").status_code)
            if 503 in health and health[-1] == 200:
                break
            time.sleep(0.1)
        assert 503 in health and health[-1] == 200, (health, launcher.tail())
        assert set(pages) == {200}  # the site never went down
        after = launcher.pids()
        assert after["worker"]["pid"] != before["worker"]["pid"]
        assert after["worker"]["restarts"] == 1 and after["web"] == before["web"]
        lost = wait_status(api, run_id, {"failed", "succeeded"}, launcher, timeout=30)
        if lost == "failed":
            assert "worker restarted" in api.get(f"/api/runs/{run_id}").json()["error"]
        started = time.monotonic()
        next_run = start_run(api, "mcts", QUICK)
        wait_status(api, next_run, {"succeeded"}, launcher, timeout=15)
        assert time.monotonic() - started < 15


def test_a_killed_pool_process_retries_its_run_and_marks_the_attempt(launcher: Launcher) -> None:
    with client(launcher) as api:
        run_id = start_run(api, "index-lab", SHORT)
        wait_status(api, run_id, {"running"}, launcher)
        main = launcher.pids()["worker"]["pid"]
        (child,) = Path(f"/proc/{main}/task/{main}/children").read_text().split()
        os.kill(int(child), signal.SIGKILL)  # the pool process running the job
        events = read_events(api, run_id, timeout=120)
        attempts = [e["data"] for e in events if e["event"] == "attempt"]
        assert attempts == [{"attempt": 2, "message": "Attempt 2 (the previous worker stopped)"}]
        assert events[-1]["data"] == {"status": "succeeded"}
        html = api.get(f"/runs/{run_id}/stream").text  # the page's stream replays it too
        assert "Attempt 2 (the previous worker stopped)" in html


def test_health_is_503_while_no_worker_beats(launcher: Launcher) -> None:
    main = launcher.pids()["worker"]["pid"]
    os.kill(main, signal.SIGSTOP)  # alive to the supervisor, silent to everyone else
    try:
        with client(launcher) as api:
            wait_for(lambda: api.get("/healthz").status_code == 503, "503", 20, launcher)
            assert api.get("/healthz").json()["workers"] == 0
    finally:
        os.kill(main, signal.SIGCONT)
    with client(launcher) as api:
        wait_for(lambda: api.get("/healthz").status_code == 200, "200 again", 20, launcher)


def staff_session(site: Launcher) -> httpx.Client:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(FP_VAR_DIR=str(site.var), DJANGO_SUPERUSER_PASSWORD="a-long-password-1")
    subprocess.run(
        [sys.executable, "manage.py", "createsuperuser", "--noinput",
         "--username", "operator", "--email", "op@example.com"],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )  # fmt: skip
    session = client(site)
    session.get("/admin/login/")
    login = {"username": "operator", "password": "a-long-password-1", "next": "/admin/"}
    login["csrfmiddlewaretoken"] = session.cookies["csrftoken"]
    response = session.post("/admin/login/", data=login, headers={"Referer": site.base})
    assert response.status_code == 302, response.text[:500]
    return session


def test_metrics_are_for_staff_and_agree_with_the_database(launcher: Launcher) -> None:
    with client(launcher) as anonymous:
        assert anonymous.get("/metrics").status_code == 404
        wrong = {"Authorization": "Bearer not-the-token"}
        assert anonymous.get("/metrics", headers=wrong).status_code == 404
        scraper = anonymous.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert scraper.status_code == 200 and "fp_workers_live" in scraper.text
    with contextlib.closing(staff_session(launcher)) as staff:
        response = staff.get("/metrics")
        dashboard = staff.get("/dashboard/").text
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "fp_workers_live 1.0" in text and "django_http_requests_total_by_method_total" in text
    assert re.search(r'fp_worker_info\{device="(cpu|cuda)",worker="worker@', text)
    assert 'fp_queue_depth{queue="gpu"}' in text
    exported = {
        (m["playground"], m["status"]): int(float(m["n"]))
        for m in re.finditer(r'fp_runs\{playground="(?P<playground>[^"]+)",'
                             r'status="(?P<status>[^"]+)"\} (?P<n>\S+)', text)
    }  # fmt: skip
    stored = launcher.sql("SELECT playground, status, count(*) FROM learn_run GROUP BY 1, 2")
    assert exported == {(p, s): n for p, s, n in stored}
    assert exported[("index-lab", "succeeded")] >= 1 and ("index-lab", "cancelled") in exported
    ended = launcher.sql("SELECT count(*) FROM learn_run WHERE finished_at IS NOT NULL")[0][0]
    counts = re.findall(r"fp_run_duration_seconds_count\{[^}]*\} (\S+)", text)
    assert sum(int(float(n)) for n in counts) == ended
    # The dashboard: the live worker, and the chart's data counts every run of the last hour.
    assert "worker@" in dashboard and 'id="runs-per-minute"' in dashboard
    data = re.search(r'id="runs-per-minute-data"[^>]*>(.*?)</script>', dashboard, re.S)
    per_minute = json.loads(data.group(1))
    total = launcher.sql("SELECT count(*) FROM learn_run")[0][0]
    assert sum(map(sum, per_minute["series"].values())) == total


def test_a_lost_job_comes_back_only_after_the_longest_job_could_have_ended() -> None:
    """The broker hands an unacknowledged job to another worker after visibility_timeout:
    shorter than the longest job (plus its 15 s hard-limit grace) would run a slow job
    twice; an hour (as before) left a dead worker's jobs in `unacked` all that while."""
    import django
    from django.conf import settings

    django.setup()
    from learn.playgrounds import PLAYGROUNDS

    longest = max(pg.time_limit for pg in PLAYGROUNDS.values()) + 15
    timeout = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert longest + 60 <= timeout <= 1800, (longest, timeout)


def test_the_supervisor_backs_off_from_1_to_30_seconds_and_resets_after_a_stable_run() -> None:
    from webapp.run import MAX_BACKOFF, STABLE_AFTER, Child

    child = Child("crasher", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))
    child.start()
    waits = []
    for _ in range(7):
        assert child.proc is not None and child.proc.wait(20) == 3
        now = time.monotonic()
        child.check(now)  # notices the exit, schedules the restart
        waits.append(round(child.restart_at - now, 3))
        child.check(child.restart_at - 0.01)
        assert child.proc is None  # not before its back-off has passed
        child.check(child.restart_at)
    assert waits == [1, 2, 4, 8, 16, MAX_BACKOFF, MAX_BACKOFF] and child.restarts == 7
    assert child.proc is not None and child.proc.wait(20) == 3
    child.started -= STABLE_AFTER  # as if it had stayed up a minute before exiting
    now = time.monotonic()
    child.check(now)
    assert round(child.restart_at - now, 3) == 1
