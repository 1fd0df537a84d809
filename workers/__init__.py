"""Celery workers: the one task (``workers.tasks``), per-chapter handlers, the model cache.

``celery -A workers worker -Q gpu,cpu`` finds the app here.
"""

from webapp.celery import app

__all__ = ["app"]
