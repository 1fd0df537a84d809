"""Helpers the service tests share: start a run, follow its events, wait for its end."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx


def read_events(
    client: httpx.Client, run_id: str, *, last_event_id: int | None = None, timeout: float = 180
) -> list[dict]:
    """Every event of a run's SSE stream (JSON) until ``done``: [{id, event, data}]."""
    with event_stream(client, run_id, last_event_id=last_event_id, timeout=timeout) as events:
        return list(events)


def start_run(client: httpx.Client, slug: str, params: dict) -> str:
    response = client.post(f"/api/playgrounds/{slug}/runs", json=params)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def finished_run(client: httpx.Client, slug: str, params: dict) -> dict:
    """Start a run, follow its events to the end, return the stored run."""
    return succeeded(client, start_run(client, slug, params))


def succeeded(client: httpx.Client, run_id: str, *, timeout: float = 180) -> dict:
    """Follow a started run's events to the end; return the stored run, which succeeded."""
    return followed(client, run_id, timeout=timeout)[0]


def followed(client: httpx.Client, run_id: str, *, timeout: float = 180) -> tuple[dict, list[dict]]:
    """Follow a started run's events to the end: (the stored run, which succeeded; every
    event it streamed)."""
    events = read_events(client, run_id, timeout=timeout)
    assert events and events[-1]["event"] == "done", events
    run = client.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "succeeded", run
    return run, events


@contextlib.contextmanager
def event_stream(
    client: httpx.Client,
    run_id: str,
    *,
    last_event_id: int | None = None,
    as_query: bool = False,
    timeout: float = 60,
) -> Iterator[Iterator[dict]]:
    """A run's SSE stream, open: an iterator of its events ({id, event, data}) to take as
    many from as needed, closed on leaving. ``last_event_id`` goes in the Last-Event-ID
    header, or with ``as_query`` in the ``last_event_id`` query parameter."""
    headers, query = {}, {}
    if last_event_id is not None:
        if as_query:
            query["last_event_id"] = str(last_event_id)
        else:
            headers["Last-Event-ID"] = str(last_event_id)
    with client.stream(
        "GET", f"/api/runs/{run_id}/events", headers=headers, params=query, timeout=timeout
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")

        def parsed() -> Iterator[dict]:
            current: dict = {}
            for line in response.iter_lines():
                if line.startswith("id: "):
                    current["id"] = int(line[4:])
                elif line.startswith("event: "):
                    current["event"] = line[7:]
                elif line.startswith("data: "):
                    current["data"] = json.loads(line[6:])
                elif line == "" and "event" in current:
                    yield current
                    if current["event"] == "done":
                        return
                    current = {}

        yield parsed()


def take_until(stream: Iterator[dict], stop: Callable[[dict], bool]) -> list[dict]:
    """Events from an open stream up to and including the first for which ``stop`` holds."""
    taken = []
    for event in stream:
        taken.append(event)
        if stop(event):
            return taken
    raise AssertionError(f"the stream ended first: {taken[-3:]}")


def wait_until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll ``check`` every 0.1 s until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def worker_device(client: httpx.Client, worker: str) -> str:
    """The device ("cpu", "cuda"…) that the live worker named ``worker`` reports in /healthz."""
    live = {w["name"]: w["device"] for w in client.get("/healthz").json()["live_workers"]}
    assert live.get(worker), (worker, live)
    return live[worker]


def active_tasks() -> str:
    """What every live worker is executing now (Celery's inspect), as text to search."""
    from webapp.celery import app

    return json.dumps(app.control.inspect(timeout=1.0).active() or {})
