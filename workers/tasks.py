"""The one task every playground runs through: fetch the run, compute, store, report.

Thin on purpose: the registry (``learn.playgrounds``) names each playground's handler in
``workers.handlers``; the compute is in ``learn.lab``; heavy libraries load lazily, only
in worker processes.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
from functools import cache
from typing import Any

from celery import signals
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError

from learn import events, services
from learn.lab.events import Emit
from learn.models import Run
from learn.playgrounds import PLAYGROUNDS, PlaygroundError
from webapp.celery import app
from workers import modelcache
from workers.handlers import Handler, Job

log = logging.getLogger(__name__)


class RunCancelled(Exception):
    """Raised from ``emit`` when the run was cancelled, to unwind the lab function."""


def make_emit(run_id: str) -> Emit:
    """The lab's ``emit`` for one run: append to its stream; stop when cancelled."""

    def emit(kind: str, /, **data: Any) -> None:
        if events.cancel_requested(run_id):
            raise RunCancelled(run_id)
        events.append(run_id, kind, **data)

    return emit


@cache
def handler_for(slug: str) -> Handler:
    """The handler the registry names for a playground (``"module:function"``)."""
    module, _, name = PLAYGROUNDS[slug].handler.partition(":")
    return getattr(importlib.import_module(module), name)


def with_device(result: dict[str, Any], device: str) -> dict[str, Any]:
    """The result with a device: the one the handler reported, else the worker's."""
    return {**result, "device": result.get("device") or device}


@app.task(name=services.RUN_TASK, bind=True)
def run_playground(self, run_id: str) -> None:
    run = Run.objects.filter(pk=run_id).first()
    if run is None or not run.is_active:
        return  # deleted or cancelled while queued
    device = modelcache.device()
    worker = self.request.hostname or socket.gethostname()
    if not services.start_run(run_id, worker=worker, device=device, versions=modelcache.versions()):
        return
    try:
        params = services.load_params(run)
        result = handler_for(run.playground)(params, Job(run_id, make_emit(run_id), device))
    except RunCancelled:
        log.info("run %s cancelled", run_id)
    except SoftTimeLimitExceeded:
        services.fail_run(
            run_id, "The job took longer than this playground allows; try less input."
        )
    except ValidationError as exc:  # e.g. a tokenizer it names was deleted since
        services.fail_run(run_id, f"The parameters are no longer valid: {exc}")
    except PlaygroundError as exc:
        services.fail_run(run_id, str(exc))
    except Exception as exc:
        log.exception("run %s failed", run_id)
        services.fail_run(run_id, f"The job failed: {type(exc).__name__}: {exc}")
    else:
        services.finish_run(run_id, with_device(result, device))


@signals.worker_ready.connect
def _fail_runs_lost_by_previous_process(sender: Any = None, **_: Any) -> None:
    services.fail_runs_of_dead_worker(sender.hostname)


@signals.worker_process_init.connect
def _share_cores(**_: Any) -> None:
    """Each pool process gets its share of the cores, not all of them (no oversubscription)."""
    import torch

    processes = int(os.environ.get("WORKER_CONCURRENCY", "2"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes))
    if os.environ.get("FP_PRELOAD_MODELS", "1") == "1":
        modelcache.encoder()  # the first job should not wait for the model to load
