"""Helpers the service tests share: start a run, follow its events, wait for its end."""

from __future__ import annotations

import json

import httpx


def read_events(
    client: httpx.Client, run_id: str, *, last_event_id: int | None = None, timeout: float = 180
) -> list[dict]:
    """Every event of a run's SSE stream (JSON) until ``done``: [{id, event, data}]."""
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    found: list[dict] = []
    current: dict = {}
    with client.stream(
        "GET", f"/api/runs/{run_id}/events", headers=headers, timeout=timeout
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("id: "):
                current["id"] = int(line[4:])
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and "event" in current:
                found.append(current)
                if current["event"] == "done":
                    return found
                current = {}
    return found


def start_run(client: httpx.Client, slug: str, params: dict) -> str:
    response = client.post(f"/api/playgrounds/{slug}/runs", json=params)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def finished_run(client: httpx.Client, slug: str, params: dict) -> dict:
    """Start a run, follow its events to the end, return the stored run."""
    return succeeded(client, start_run(client, slug, params))


def succeeded(client: httpx.Client, run_id: str, *, timeout: float = 180) -> dict:
    """Follow a started run's events to the end; return the stored run, which succeeded."""
    events = read_events(client, run_id, timeout=timeout)
    assert events[-1]["event"] == "done", events
    run = client.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "succeeded", run
    return run
