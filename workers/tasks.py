"""The one task every playground runs through: fetch the run, compute, store, report.

Thin on purpose: the handler for each playground lives in ``workers.handlers`` and the
compute in ``learn.lab``; heavy libraries load lazily, only in worker processes.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import signals
from celery.exceptions import SoftTimeLimitExceeded

from workers.celery import app

log = logging.getLogger(__name__)


class RunCancelled(Exception):
    """Raised from ``emit`` when the run was cancelled, to unwind the lab function."""


class PlaygroundError(Exception):
    """A failure whose message is meant for the learner (bad data, nothing to do)."""


def make_emit(run_id: str):
    """The lab's ``emit`` for one run: append to its stream; stop when cancelled."""
    from workers import events

    def emit(kind: str, /, **data: Any) -> None:
        if events.cancel_requested(run_id):
            raise RunCancelled(run_id)
        events.append(run_id, kind, **data)

    return emit


@app.task(name="forwardpass.run_playground", bind=True)
def run_playground(self, run_id: str) -> None:
    from learn import services
    from learn.models import Run
    from workers import handlers, modelcache

    run = Run.objects.filter(pk=run_id).first()
    if run is None or not run.is_active:
        return  # deleted or cancelled while queued
    device = modelcache.device()
    worker = self.request.hostname or socket.gethostname()
    if not services.start_run(run_id, worker=worker, device=device, versions=modelcache.versions()):
        return
    try:
        result = handlers.HANDLERS[run.playground](run, make_emit(run_id), device)
    except RunCancelled:
        log.info("run %s cancelled", run_id)
    except SoftTimeLimitExceeded:
        services.fail_run(
            run_id, "The job took longer than this playground allows; try less input."
        )
    except PlaygroundError as exc:
        services.fail_run(run_id, str(exc))
    except Exception as exc:
        log.exception("run %s failed", run_id)
        services.fail_run(run_id, f"The job failed: {type(exc).__name__}: {exc}")
    else:
        services.finish_run(run_id, {**result, "device": device})


@signals.worker_ready.connect
def _fail_runs_lost_by_previous_process(sender: Any = None, **_: Any) -> None:
    from learn import services

    services.fail_runs_of_dead_worker(sender.hostname)


@signals.worker_process_init.connect
def _share_cores(**_: Any) -> None:
    """Each pool process gets its share of the cores, not all of them (no oversubscription)."""
    import torch

    processes = int(os.environ.get("WORKER_CONCURRENCY", "2"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes))
    if os.environ.get("FP_PRELOAD_MODELS", "1") == "1":
        from workers import modelcache

        modelcache.encoder()  # the first job should not wait for the model to load
