"""Celery: the app, its queues (``gpu`` and ``cpu``) and the tasks that run playgrounds."""

from workers.celery import app

__all__ = ["app"]
