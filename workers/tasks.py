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

from learn import events, metrics, services
from learn.lab.events import Emit
from learn.models import Run
from learn.playgrounds import PLAYGROUNDS, PlaygroundError
from webapp.celery import app
from workers import modelcache
from workers.handlers import Handler, Job

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3  # a job that stops its worker this often is failed, not tried again
_worker: dict[str, Any] = {"name": "", "heartbeat": None}  # this worker, set before forking


class RunCancelled(Exception):
    """Raised from ``emit`` when the run was cancelled, to unwind the lab function."""


def make_emit(run_id: str) -> Emit:
    """The lab's ``emit`` for one run: append to its stream; stop when cancelled."""

    def emit(kind: str, /, **data: Any) -> None:
        if not events.append_unless_cancelled(run_id, kind, **data):
            raise RunCancelled(run_id)

    return emit


@cache
def handler_for(slug: str) -> Handler:
    """The handler the registry names for a playground (``"module:function"``)."""
    module, _, name = PLAYGROUNDS[slug].handler.partition(":")
    return getattr(importlib.import_module(module), name)


def with_device(result: dict[str, Any], device: str) -> dict[str, Any]:
    """The result with a device: the one the handler reported, else the worker's."""
    return {**result, "device": result.get("device") or device}


def mark_retry(run_id: str) -> bool:
    """The run was already 'running' when its job came again: its worker stopped mid-job and
    the broker redelivered it. Mark the new attempt in the run's stream (the JSON and HTML
    streams show it); past MAX_ATTEMPTS fail the run instead and return False."""
    attempt = 2 + sum(event.kind == "attempt" for event in events.history(run_id))
    if attempt > MAX_ATTEMPTS:
        services.fail_run(
            run_id,
            f"The job stopped its worker {attempt - 1} times, so it was not tried again; "
            "try smaller input.",
        )
        return False
    message = f"Attempt {attempt} (the previous worker stopped)"
    events.append(run_id, "attempt", attempt=attempt, message=message)
    return True


@app.task(name=services.RUN_TASK, bind=True)
def run_playground(self, run_id: str) -> None:
    run = Run.objects.filter(pk=run_id).first()
    if run is None or not run.is_active:
        return  # deleted or cancelled while queued
    if run.status == Run.Status.RUNNING and not mark_retry(run_id):
        return
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


@signals.worker_init.connect
def _remember_name(sender: Any = None, **_: Any) -> None:
    """Before the pool forks, so its processes know which worker they belong to."""
    _worker["name"] = sender.hostname


@signals.worker_ready.connect
def _fail_runs_lost_by_previous_process(sender: Any = None, **_: Any) -> None:
    services.fail_runs_of_dead_worker(sender.hostname)
    queues = sorted(sender.app.amqp.queues.consume_from or {})
    concurrency = getattr(sender.controller, "concurrency", 0) if sender.controller else 0
    info = {"pid": os.getpid(), "concurrency": concurrency, "queues": queues}
    _worker["heartbeat"] = metrics.Heartbeat(sender.hostname, info)  # healthz reads it


@signals.worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _worker["heartbeat"] is not None:
        _worker["heartbeat"].stop()  # off the live workers now, not ALIVE_SECONDS later


@signals.worker_process_init.connect
def _share_cores(**_: Any) -> None:
    """Each pool process gets its share of the cores, not all of them (no oversubscription)."""
    import torch

    processes = int(os.environ.get("WORKER_CONCURRENCY", "2"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes))
    if _worker["name"]:
        metrics.report_device(_worker["name"], modelcache.device())
    if os.environ.get("FP_PRELOAD_MODELS", "1") == "1":
        modelcache.encoder()  # the first job should not wait for the model to load
        from learn.lab.vindex.warm import warm

        warm()  # numba's compiled indexes: from the disk cache, or compiled once per machine
        from learn.lab.smollm2_text import smollm2_tokenizer_file

        smollm2_tokenizer_file()  # built once per machine; the web reads it to count tokens
