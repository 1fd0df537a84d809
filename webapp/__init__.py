"""The Django project. Loading it loads the Celery app, so ``celery.current_app`` is ours."""

from webapp.celery import app as celery_app

__all__ = ["celery_app"]
