"""One settings module, driven by environment variables.

DATABASE_URL  any PostgreSQL with pgvector; unset: the embedded server under FP_VAR_DIR.
REDIS_URL     any Redis/Valkey; unset: the embedded Valkey's Unix socket under FP_VAR_DIR.
FP_VAR_DIR    where local data lives (default: ./var).
DJANGO_DEBUG  0 by default (`make dev` sets 1); DJANGO_SECRET_KEY: unset, one is made once
              and kept in FP_VAR_DIR/secret_key (mode 0600); DJANGO_ALLOWED_HOSTS as usual.
DJANGO_SECURE 1 behind an HTTPS proxy: redirects, HSTS, secure cookies (see the end).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("FP_VAR_DIR", BASE_DIR / "var")).resolve()


def local_secret_key(var_dir: Path = VAR_DIR) -> str:
    """A key made once under var_dir (mode 0600) and read by every process after that."""
    path = var_dir / "secret_key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        draft = var_dir / f".secret_key.{os.getpid()}"
        with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(secrets.token_urlsafe(50))
        try:
            os.link(draft, path)  # atomic: of processes starting together, the first one wins
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip()


DEBUG = os.environ.get("DJANGO_DEBUG", "0") == "1"
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or local_secret_key()
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")


def embedded_database_url(var_dir: Path = VAR_DIR) -> str:
    """The embedded PostgreSQL listens on a Unix socket inside its data folder."""
    return f"postgresql://postgres:@/postgres?host={var_dir / 'pgdata'}"


def embedded_redis_url(var_dir: Path = VAR_DIR) -> str:
    return f"unix://{var_dir / 'valkey' / 'valkey.sock'}"


def database_from_url(url: str) -> dict[str, object]:
    """Django DATABASES entry from postgresql://user:pass@host:port/name?host=/socket/dir."""
    parts = urlparse(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise RuntimeError(f"DATABASE_URL must be a postgresql:// URL, got {parts.scheme!r}.")
    query = parse_qs(parts.query)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "postgres",
        "USER": unquote(parts.username or "postgres"),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": query.get("host", [parts.hostname or ""])[0],
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": True,
    }


DATABASE_URL = os.environ.get("DATABASE_URL") or embedded_database_url()
DATABASES = {"default": database_from_url(DATABASE_URL)}
# A bounded pool of connections per process (psycopg_pool; CONN_MAX_AGE stays 0 with it,
# CONN_HEALTH_CHECKS makes it hand out only live ones). FP_DB_POOL_MAX=0: no pool.
_POOL_MIN = int(os.environ.get("FP_DB_POOL_MIN", "2"))
_POOL_MAX = int(os.environ.get("FP_DB_POOL_MAX", "10"))
_POOL = {"min_size": min(_POOL_MIN, _POOL_MAX), "max_size": _POOL_MAX, "timeout": 10}
DATABASES["default"]["OPTIONS"] = {
    "application_name": os.environ.get("FP_DB_APP_NAME", "forward-pass")[:63],
    **({"pool": _POOL} if _POOL_MAX > 0 else {}),
}
REDIS_URL = os.environ.get("REDIS_URL") or embedded_redis_url()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "template_partials",
    "ninja",  # /api/docs renders its bundled Swagger UI (no CDN: the docs work offline)
    "django_prometheus",  # request metrics for /metrics (learn/metrics.py adds ours)
    "learn",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "webapp.middleware.ApiErrors",  # every /api/ error in the Problem format
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "webapp.middleware.ApiGuard",  # /api/ writes: key, same-origin + CSRF token, or a script
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "webapp.urls"
ASGI_APPLICATION = "webapp.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "builtins": ["template_partials.templatetags.partials"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "learn.context_processors.facts",
            ],
        },
    },
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_TZ = True
USE_I18N = False

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = True  # serve straight from static/: no collectstatic step
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Celery: the broker is Redis; results live on the Run row, so no result backend.
CELERY_BROKER_URL = (
    REDIS_URL.replace("unix://", "redis+socket://", 1)
    if REDIS_URL.startswith("unix://")
    else REDIS_URL
)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A job delivered to a worker that dies unacknowledged goes back to its queue after this
# many seconds: longer than the longest job (900 s limit + 15 s grace, checked by
# tests/test_resilience.py) so a slow job is never run twice, short enough that a dead
# worker's jobs do not sit in `unacked` for an hour. A restarted worker fails its own lost
# runs at once (services.fail_runs_of_dead_worker); the redelivered job then finds its run
# ended and does nothing.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 1200}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE

# Open event streams (SSE) at once, per client address and over all web processes
# (counted in Redis, learn/streams.py): past them a new stream gets 429 / 503.
FP_STREAMS_PER_IP = int(os.environ.get("FP_STREAMS_PER_IP", "20"))
FP_STREAMS_MAX = int(os.environ.get("FP_STREAMS_MAX", "1000"))
# /metrics is for staff, or for a scraper sending `Authorization: Bearer <this>` when set.
FP_METRICS_TOKEN = os.environ.get("FP_METRICS_TOKEN", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
# Pool processes load their models at start (workers/tasks.py); give them time to.
CELERY_WORKER_PROC_ALIVE_TIMEOUT = 120

# Converted model files (e.g. SmolLM2's tokenizer from its GGUF) are cached here.
os.environ.setdefault("FP_MODEL_CACHE", str(VAR_DIR / "models"))

# A BPE corpus may be up to 20 MB of text, posted as JSON or uploaded.
DATA_UPLOAD_MAX_MEMORY_SIZE = 22 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 22 * 1024 * 1024

# The public site (webapp/middleware.py, learn/api.py). A body over FP_MAX_BODY_BYTES is
# refused before it is read; runs a minute per owner (an API key: its own
# requests_per_minute) and per address; runs queued or running at once per owner.
FP_MAX_BODY_BYTES = int(os.environ.get("FP_MAX_BODY_BYTES", DATA_UPLOAD_MAX_MEMORY_SIZE))
FP_RUNS_PER_MINUTE_PER_OWNER = int(os.environ.get("FP_RUNS_PER_MINUTE_PER_OWNER", "30"))
FP_RUNS_PER_MINUTE_PER_IP = int(os.environ.get("FP_RUNS_PER_MINUTE_PER_IP", "60"))
FP_MAX_ACTIVE_RUNS = int(os.environ.get("FP_MAX_ACTIVE_RUNS", "4"))
FP_ADMIN_LOGINS_PER_MINUTE_PER_IP = int(os.environ.get("FP_ADMIN_LOGINS_PER_MINUTE_PER_IP", "10"))
CSRF_FAILURE_VIEW = "webapp.middleware.csrf_failure"  # a Problem under /api/
# Reverse proxies whose X-Forwarded-For is believed (comma-separated addresses), so rate
# limits and anonymous owners see the client, not the proxy.
FP_TRUSTED_PROXIES = tuple(
    p.strip() for p in os.environ.get("FP_TRUSTED_PROXIES", "").split(",") if p.strip()
)
CSRF_TRUSTED_ORIGINS = [
    o for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o
]  # e.g. https://forwardpass.example
# Behind a proxy that terminates HTTPS and sets X-Forwarded-Proto (docker/compose.yaml):
# DJANGO_SECURE=1. Unset, plain HTTP keeps working for `make run` on a laptop.
if os.environ.get("DJANGO_SECURE", "0") == "1":
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # the proxy's and compose's health checks
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = os.environ.get("DJANGO_HSTS_SUBDOMAINS", "1") == "1"
    SECURE_HSTS_PRELOAD = os.environ.get("DJANGO_HSTS_PRELOAD", "0") == "1"
    if not SECURE_HSTS_PRELOAD:  # asking browsers to preload the domain is its owner's call
        SILENCED_SYSTEM_CHECKS = ["security.W021"]
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = True
