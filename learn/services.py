"""Every write to a Run goes through here, and each status change is also an event.

Status changes are conditional updates (``filter(status__in=…).update(…)``), so a run
that is cancelled while it finishes ends in exactly one state and emits one ``done``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from learn.models import Run
from learn.playgrounds import PLAYGROUNDS, Playground, PlaygroundParams
from workers import events

log = logging.getLogger(__name__)
Status = Run.Status
LOST_AFTER = timedelta(seconds=60)  # grace beyond a playground's time limit


class QueueUnavailable(Exception):
    """The broker refused the job; the run was not kept."""


def create_run(playground: Playground, params: PlaygroundParams) -> Run:
    """Store a run and queue its job; if queueing fails, nothing is left behind."""
    from workers.tasks import run_playground

    with transaction.atomic():
        run = Run.objects.create(playground=playground.slug, params=params.stored())
        params.attach(run)
    try:
        run_playground.apply_async(
            args=[str(run.id)],
            queue=playground.queue,
            soft_time_limit=playground.time_limit,
            time_limit=playground.time_limit + 15,
        )
    except Exception as exc:
        run.delete()
        raise QueueUnavailable(str(exc)) from exc
    return run


def rerun(run: Run) -> Run:
    """The same playground with the same parameters (and the same corpus, if it had one)."""
    playground = PLAYGROUNDS[run.playground]
    params = dict(run.params)
    if hasattr(run, "corpus"):
        params["corpus"] = run.corpus.text
        params.pop("corpus_chars", None)
    return create_run(playground, playground.params.model_validate(params))


def start_run(run_id: str, *, worker: str, device: str, versions: dict[str, str]) -> bool:
    """queued → running. False when the run was cancelled (or already finished)."""
    updated = Run.objects.filter(pk=run_id, status__in=Run.ACTIVE).update(
        status=Status.RUNNING,
        started_at=timezone.now(),
        worker=worker,
        device=device,
        versions=versions,
        error="",
    )
    if updated:
        events.append(run_id, "progress", pct=0, message=f"Started on {worker} ({device})")
    return bool(updated)


def finish_run(run_id: str, result: dict[str, Any]) -> bool:
    updated = Run.objects.filter(pk=run_id, status=Status.RUNNING).update(
        status=Status.SUCCEEDED, result=result, finished_at=timezone.now()
    )
    if updated:
        events.append(run_id, "progress", pct=100, message="Done")
        events.append(run_id, "done", status=Status.SUCCEEDED)
    return bool(updated)


def fail_run(run_id: str, message: str) -> bool:
    updated = Run.objects.filter(pk=run_id, status__in=Run.ACTIVE).update(
        status=Status.FAILED, error=message, finished_at=timezone.now()
    )
    if updated:
        events.append(run_id, "error", message=message)
        events.append(run_id, "done", status=Status.FAILED)
    return bool(updated)


def cancel_run(run: Run) -> bool:
    """Ask a queued or running run to stop. False if it had already ended."""
    events.request_cancel(run.id)  # a running worker sees this at its next event
    updated = Run.objects.filter(pk=run.pk, status__in=Run.ACTIVE).update(
        status=Status.CANCELLED, finished_at=timezone.now()
    )
    if updated:
        events.append(run.id, "done", status=Status.CANCELLED)
    run.refresh_from_db()
    return bool(updated)


def fail_lost_runs() -> int:
    """Runs still 'running' well past their time limit lost their worker: mark them failed."""
    now = timezone.now()
    lost = 0
    for run in Run.objects.filter(status=Status.RUNNING).only("id", "playground", "started_at"):
        limit = PLAYGROUNDS[run.playground].time_limit if run.playground in PLAYGROUNDS else 600
        if run.started_at and now - run.started_at > timedelta(seconds=limit) + LOST_AFTER:
            lost += fail_run(
                str(run.id), "The worker running this job stopped responding; run it again."
            )
    return lost


def fail_runs_of_dead_worker(worker: str) -> int:
    """At a worker's start, runs it had 'running' died with its previous process."""
    ids = Run.objects.filter(status=Status.RUNNING, worker=worker).values_list("id", flat=True)
    return sum(
        fail_run(str(i), "The worker restarted while running this job; run it again.") for i in ids
    )
