import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
django_application = get_asgi_application()

from webapp.middleware import BodyLimit  # noqa: E402  (needs the settings loaded above)

# An oversized body is refused before Django reads it (Django's ASGI handler reads the
# whole body before any middleware runs).
application = BodyLimit(django_application)
