"""Handlers, one module per chapter, mirroring ``learn/playgrounds/``.

The contract: a handler gets the validated parameters (the playground's schema instance)
and a ``Job`` (run id, ``emit``, the worker's device), calls the lab, and returns the JSON
result to store. It writes to the database only through ``learn.services`` (reads go
through ``learn.queries``), and says in ``result["device"]`` what its numbers were
measured on when that is not the worker's device (BPE training: "cpu"; pgvector:
"postgres"). Lab modules are imported inside handlers: only workers load torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from learn.lab.events import Emit


@dataclass(frozen=True)
class Job:
    run_id: str
    emit: Emit  # progress, partial results, logs: appended to the run's event stream
    device: str  # the worker's default: "cuda" when it has a GPU, else "cpu"


Handler = Callable[[Any, Job], dict[str, Any]]
