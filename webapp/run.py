"""`make run`: the whole site from one command.

Starts the embedded PostgreSQL and Valkey (unless DATABASE_URL / REDIS_URL are set),
applies migrations, starts a Celery worker and the ASGI web server, prints the URL and
waits. Ctrl-C stops every process it started; data stays under FP_VAR_DIR (./var).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from webapp import stack as embedded
from webapp.settings import VAR_DIR


def worker_command(queues: str = "gpu,cpu") -> list[str]:
    concurrency = os.environ.get("WORKER_CONCURRENCY", "2")
    return [
        sys.executable, "-m", "celery", "-A", "workers", "worker",
        "-Q", queues, "--concurrency", concurrency, "--hostname", "worker@%h",
        "--without-mingle", "--without-gossip", "--loglevel", "INFO",
    ]  # fmt: skip


def web_command(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "webapp.asgi:application",
        "--host", host, "--port", str(port), "--no-access-log", "--timeout-graceful-shutdown", "3",
    ]  # fmt: skip


def stop_all(procs: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    services = embedded.start(Path(VAR_DIR))
    env = {**os.environ, **services.env(), "FP_VAR_DIR": str(VAR_DIR)}
    procs: list[subprocess.Popen[bytes]] = []
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], env=env, check=True)
        procs.append(subprocess.Popen(worker_command(), env=env))
        procs.append(subprocess.Popen(web_command(host, port), env=env))
        print(
            f"\n  Forward Pass is running at http://{host}:{port}  (Ctrl-C stops it)\n", flush=True
        )
        while not stopping:
            if any(proc.poll() is not None for proc in procs):
                print("A process exited; stopping the rest.", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        stop_all(procs)
        services.stop()


if __name__ == "__main__":
    sys.exit(main())
