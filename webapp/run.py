"""`make run`: the whole site from one command, kept up by a small supervisor.

Starts the embedded PostgreSQL and Valkey (unless DATABASE_URL / REDIS_URL are set),
applies migrations, starts a Celery worker and the ASGI web server, prints the URL and
watches them: a worker or web process that exits is restarted after a back-off that
doubles from 1 s to 30 s (and starts again at 1 s once a process has stayed up for a
minute), so one crash never takes the site down. PostgreSQL and Valkey belong to this
process and stop only with it: Ctrl-C or SIGTERM stops everything it started; data stays
under FP_VAR_DIR (./var). ``FP_VAR_DIR/supervisor.json`` says what runs under which pid.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from webapp import stack as embedded
from webapp.settings import VAR_DIR

log = logging.getLogger("webapp.run")
FIRST_BACKOFF = 1.0  # seconds before the first restart
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0  # up this long, a process that exits is restarted after FIRST_BACKOFF
WORKER_NAME = "worker@%h"  # Celery expands %h to this machine's host name


def worker_command(queues: str = "gpu,cpu") -> list[str]:
    concurrency = os.environ.get("WORKER_CONCURRENCY", "2")
    return [
        sys.executable, "-m", "celery", "-A", "workers", "worker",
        "-Q", queues, "--concurrency", concurrency, "--hostname", WORKER_NAME,
        "--without-mingle", "--without-gossip", "--loglevel", "INFO",
    ]  # fmt: skip


def web_command(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "webapp.asgi:application",
        "--host", host, "--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", "3",
    ]  # fmt: skip


@dataclass
class Child:
    """One supervised process: started in its own process group, so that stopping it also
    stops what it started (a Celery worker's pool processes)."""

    name: str
    command: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0  # time.monotonic() of the last start
    backoff: float = FIRST_BACKOFF
    restart_at: float = 0.0
    restarts: int = 0
    on_exit: list[Callable[[], None]] = field(default_factory=list)  # after it exits

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, env=self.env, start_new_session=True)
        self.started = time.monotonic()
        log.info("%s started (pid %d)", self.name, self.proc.pid)

    def signal_group(self, signum: int) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signum)

    def check(self, now: float) -> None:
        """Restart this process if it has exited and its back-off has passed."""
        if self.proc is None:
            if now >= self.restart_at:
                self.restarts += 1
                self.start()
            return
        code = self.proc.poll()
        if code is None:
            return
        up = now - self.started
        self.signal_group(signal.SIGKILL)  # its orphans (e.g. pool processes) go with it
        self.proc = None
        if up >= STABLE_AFTER:
            self.backoff = FIRST_BACKOFF
        log.warning(
            "%s exited (code %s) after %.0f s; restarting in %.0f s",
            self.name, code, up, self.backoff,
        )  # fmt: skip
        for callback in self.on_exit:
            with contextlib.suppress(Exception):
                callback()
        self.restart_at = now + self.backoff
        self.backoff = min(MAX_BACKOFF, self.backoff * 2)

    def state(self) -> dict[str, object]:
        return {"pid": self.proc.pid if self.proc else None, "restarts": self.restarts}


def stop_all(children: list[Child], timeout: float = 10.0) -> None:
    """SIGTERM to each process group (Celery finishes its running jobs), SIGKILL at timeout."""
    for child in children:
        child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        if child.proc is None:
            continue
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", child.name, timeout)
        child.signal_group(signal.SIGKILL)


def write_state(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # readers never see half a file


def forget_worker(redis_url: str) -> None:
    """A dead worker stops counting as live at once (healthz says so), not when its
    heartbeat lapses."""
    import redis
    from celery.utils.nodenames import host_format

    from learn import metrics

    metrics.forget(redis.Redis.from_url(redis_url, socket_timeout=5), host_format(WORKER_NAME))


def prepare_tokenizer() -> None:
    """Build SmolLM2's tokenizer file from its GGUF before web and worker start (~10 s, on
    a machine's first start only), so neither builds it while a learner waits on a form."""
    from learn.lab.smollm2_text import smollm2_tokenizer_file

    try:
        smollm2_tokenizer_file()
    except Exception:  # the web and the worker build it on first use instead
        log.exception("could not prepare SmolLM2's tokenizer file")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    services = embedded.start(Path(VAR_DIR))
    env = {**os.environ, **services.env(), "FP_VAR_DIR": str(VAR_DIR)}
    os.environ.update(services.env())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    worker_env = {
        **env,
        "FP_DB_APP_NAME": "forward-pass-worker",
        # each pool process runs one job at a time: it needs one connection, two at most
        "FP_DB_POOL_MIN": os.environ.get("FP_WORKER_DB_POOL_MIN", "1"),
        "FP_DB_POOL_MAX": os.environ.get("FP_WORKER_DB_POOL_MAX", "2"),
    }
    children = [
        Child("worker", worker_command(), worker_env),
        Child("web", web_command(host, port), {**env, "FP_DB_APP_NAME": "forward-pass-web"}),
    ]
    children[0].on_exit.append(lambda: forget_worker(services.redis_url))
    state = Path(VAR_DIR) / "supervisor.json"
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], env=env, check=True)
        prepare_tokenizer()
        import django

        django.setup()  # forget_worker reads learn.metrics
        for child in children:
            child.start()
        print(
            f"\n  Forward Pass is running at http://{host}:{port}  (Ctrl-C stops it)\n", flush=True
        )
        written = ""
        while not stopping:
            now = time.monotonic()
            for child in children:
                child.check(now)
            text = json.dumps({"pid": os.getpid(), **{c.name: c.state() for c in children}})
            if text != written:  # {"pid": this process, "<child>": {"pid", "restarts"}}
                write_state(state, text)
                written = text
            time.sleep(0.25)
        return 0
    finally:
        log.info("stopping")
        stop_all(children)
        state.unlink(missing_ok=True)
        services.stop()


if __name__ == "__main__":
    sys.exit(main())
