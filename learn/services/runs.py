"""Runs: create, start, finish, fail, cancel; and API keys.

Status changes are conditional updates (``filter(status__in=…).update(…)``), so a run
that is cancelled while it finishes ends in exactly one state and emits one ``done``;
each change is also an event on the run's stream.
"""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celery import current_app
from django.db import connection, transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

from learn import events, owners
from learn.models import (
    ApiKey,
    Run,
)
from learn.playgrounds import PLAYGROUNDS, Playground, PlaygroundParams

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)
Status = Run.Status
LOST_AFTER = timedelta(seconds=60)  # grace beyond a playground's time limit
RUN_TASK = "forwardpass.run_playground"  # the one Celery task (workers/tasks.py) runs them all


@receiver(post_delete, sender=Run, dispatch_uid="learn.runs.remove_kept_files")
def remove_kept_files(sender: type[Run], instance: Run, **kwargs: Any) -> None:
    """A deleted run's kept files (a trained model, an adapter: ``Playground.kept_folder``)
    go with it, once the delete is committed (a rolled-back delete keeps them)."""
    playground = PLAYGROUNDS.get(instance.playground)
    folder = playground.kept_folder(instance.pk) if playground is not None else None
    if folder is not None:
        transaction.on_commit(lambda: shutil.rmtree(folder, ignore_errors=True))


def advisory_lock(key: int | str) -> None:
    """Hold PostgreSQL's advisory lock ``key`` (a string is hashed) until the current
    transaction ends: one process at a time past this point, across every machine."""
    with connection.cursor() as cursor:
        if isinstance(key, str):
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [key])
        else:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


class QueueUnavailable(Exception):
    """The broker refused the job; the run was not kept."""


class TooManyActive(Exception):
    """The owner already has as many runs queued or running as allowed."""

    def __init__(self, active: int) -> None:
        super().__init__(f"{active} runs in flight")
        self.active = active


def create_run(
    playground: Playground,
    params: PlaygroundParams,
    *,
    owner: str = "",
    max_active: int | None = None,
) -> Run:
    """Store a run and queue its job; if queueing fails, nothing is left behind.

    ``owner`` is an ``Owner.tag`` (learn.owners): who may cancel it and see it as theirs.
    With ``max_active``, refuse (``TooManyActive``) when the owner already has that many
    queued or running: counted and inserted under a per-owner lock, so two requests at
    once cannot both slip under the cap.
    """
    with transaction.atomic():
        if max_active is not None:
            advisory_lock(f"runs:{owner}")
            active = Run.objects.filter(owner=owner, status__in=Run.ACTIVE).count()
            if active >= max_active and fail_lost_runs():
                active = Run.objects.filter(owner=owner, status__in=Run.ACTIVE).count()
            if active >= max_active:
                raise TooManyActive(active)
        run = Run.objects.create(playground=playground.slug, params=params.stored(), owner=owner)
        params.attach(run)
    try:
        current_app.send_task(
            RUN_TASK,
            args=[str(run.id)],
            queue=playground.queue,
            soft_time_limit=playground.time_limit,
            time_limit=playground.time_limit + 15,
        )
    except Exception as exc:
        run.delete()
        raise QueueUnavailable(str(exc)) from exc
    return run


def load_params(run: Run) -> PlaygroundParams:
    """The run's parameters, validated again (with the corpus or texts kept beside them)."""
    schema = PLAYGROUNDS[run.playground].params
    return schema.model_validate(schema.restored(run))


def rerun(run: Run) -> Run:
    """The same playground with the same parameters (and the same corpus, if it had one)."""
    return create_run(PLAYGROUNDS[run.playground], load_params(run), owner=run.owner)


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
    """running → succeeded, storing the result; its ``device`` (what the numbers were
    measured on, e.g. "postgres" or "cpu" for integer work) replaces the worker's default."""
    changes: dict[str, Any] = {"result": result}
    if result.get("device"):
        changes["device"] = str(result["device"])[:64]
    updated = Run.objects.filter(pk=run_id, status=Status.RUNNING).update(
        status=Status.SUCCEEDED, finished_at=timezone.now(), **changes
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


def create_api_key(
    name: str, *, user: Any = None, requests_per_minute: int = 60
) -> tuple[ApiKey, str]:
    """A new API key; returns it and its plaintext, which is shown once and never stored."""
    plaintext, prefix, digest = owners.new_key()
    key = ApiKey.objects.create(
        name=name,
        prefix=prefix,
        key_hash=digest,
        user=user,
        requests_per_minute=requests_per_minute,
    )
    return key, plaintext


def deactivate_api_keys(key_ids: list[Any]) -> int:
    """Stop these keys working at once; returns how many were active."""
    return ApiKey.objects.filter(pk__in=key_ids, active=True).update(active=False)
