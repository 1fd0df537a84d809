"""The Celery app: configured from Django's settings, with the two queues ``gpu`` and ``cpu``.

It lives with the project (Celery's layout for Django) so the web process can queue jobs by
task name without importing any task code; the worker imports ``workers.tasks`` itself.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("forwardpass")
app.config_from_object("django.conf:settings", namespace="CELERY")
# "gpu": jobs that use a model (GPU workers take them; CPU workers too when no GPU is up).
app.conf.task_queues = tuple(
    Queue(name, Exchange(name), routing_key=name) for name in ("gpu", "cpu")
)
app.conf.imports = ("workers.tasks",)
