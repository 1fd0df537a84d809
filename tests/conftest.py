"""One real stack for the whole test session: PostgreSQL+pgvector, Valkey, a Celery worker
process and the ASGI site under uvicorn, all started here and stopped at the end.

Lab unit tests (tests/lab) use none of it; the fixtures start services only when asked.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(tempfile.mkdtemp(prefix="fp-test-"))
ARTIFACTS = ROOT / "test-artifacts"

# Before Django reads its settings: this session's own data folder and embedded services.
os.environ["FP_VAR_DIR"] = str(VAR)
for name in ("DATABASE_URL", "REDIS_URL"):
    os.environ.pop(name, None)
os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# The suite starts ~150 runs from 127.0.0.1 in a few minutes: limits it stays under.
# tests/test_security.py proves each 429 with owners, addresses or keys of its own.
os.environ["DJANGO_DEBUG"] = "0"  # as `make run`: no tracebacks on error pages
os.environ["FP_RUNS_PER_MINUTE_PER_OWNER"] = "1000"
os.environ["FP_RUNS_PER_MINUTE_PER_IP"] = "2000"
os.environ["FP_MAX_ACTIVE_RUNS"] = "50"
os.environ["FP_ADMIN_LOGINS_PER_MINUTE_PER_IP"] = "30"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(VAR, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, what: str, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.25)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up in {timeout:.0f} s\n{tail}")


@pytest.fixture(scope="session")
def services() -> Iterator[dict[str, str]]:
    """Embedded PostgreSQL and Valkey, migrated; Django set up in this process."""
    import django
    from django.core.management import call_command

    from webapp import stack

    started = stack.start(VAR)
    os.environ.update(started.env())
    django.setup()
    call_command("migrate", verbosity=0)
    yield started.env()
    started.stop()


@pytest.fixture(scope="session")
def worker(services: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process on both queues."""
    from webapp.celery import app
    from webapp.run import worker_command

    log = VAR / "worker.log"
    proc = subprocess.Popen(
        worker_command(),
        cwd=ROOT,
        env={**os.environ, "WORKER_CONCURRENCY": "2"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    _wait(lambda: app.control.ping(timeout=0.5), "the Celery worker", 120, log)
    yield proc
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def site(worker: subprocess.Popen[bytes]) -> Iterator[str]:
    """The ASGI site under uvicorn; yields its base URL."""
    from webapp.run import web_command

    port = _free_port()
    log = VAR / "web.log"
    proc = subprocess.Popen(
        web_command("127.0.0.1", port), cwd=ROOT, env=os.environ.copy(),
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    _wait(lambda: httpx.get(f"{base}/healthz").json()["workers"] >= 1, "the web server", 60, log)
    yield base
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def api(site: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site, timeout=30) as client:
        yield client
