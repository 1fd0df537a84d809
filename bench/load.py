"""Load on a running site: many open event streams and a steady rate of run submissions.

    python bench/load.py [URL] [--streams 500] [--rate 50] [--seconds 60] [--drain 120]
                         [--anchors 2] [--var-dir DIR | --database-url URL] [--pool-max N]

URL must be on this machine (loopback); without one, the script starts its own site
(``python -m webapp.run`` in a temporary FP_VAR_DIR) and stops it at the end. It starts
``--anchors`` long runs (``index-lab``), then for ``--seconds`` keeps ``--streams`` SSE
clients following runs that are still going (four in five the long ones while they last)
and submits ``--rate`` quick runs (``mcts``) a second; the long runs are cancelled at the
end. Requests come from many 127.x addresses so that the per-address caps (streams, runs
a minute) are not what is measured. It
reports the home page's and submission's p50/p95, 5xx responses (the goal is none; 429s
are counted apart), the most PostgreSQL connections the web held at once (the goal: no
more than its pool, FP_DB_POOL_MAX), and whether every accepted run finished within
``--drain`` seconds. Ends with ``RESULT <json>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
QUICK = {"simulations": 500}  # an mcts run: a fraction of a second on a CPU
LONG = {"n": 20_000, "d": 32, "indexes": ["hnsw"]}  # index-lab, our HNSW: about a minute
ENDED = ("succeeded", "failed", "cancelled")


@dataclass
class Tally:
    """What the clients saw; latencies in seconds."""

    home: list[float] = field(default_factory=list)
    submit: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)  # "submit 202", "stream 429", …
    problems: Counter[str] = field(default_factory=Counter)  # 5xx: what they said
    transport_errors: Counter[str] = field(default_factory=Counter)
    accepted: list[str] = field(default_factory=list)
    anchors: list[str] = field(default_factory=list)  # long runs most streams watch
    streams_opened: int = 0
    open_now: int = 0  # streams open at this moment
    open_samples: list[int] = field(default_factory=list)  # open_now, every 0.25 s
    events: int = 0
    peak_web_connections: int = 0
    peak_connections: int = 0

    def saw(self, kind: str, response: httpx.Response) -> None:
        self.codes[f"{kind} {response.status_code}"] += 1
        if response.status_code >= 500:
            self.problems[f"{kind} {response.status_code}: {response.text[:160]}"] += 1


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)  # ms


def loopback_only(url: str) -> None:
    host = urlparse(url).hostname or ""
    for info in socket.getaddrinfo(host, None):
        if not ipaddress.ip_address(info[4][0]).is_loopback:
            sys.exit(f"{url} is not on this machine; this load test only targets loopback.")


def clients(
    prefix: str, n: int, base: str, timeout: float, keepalive: int = 50
) -> list[httpx.AsyncClient]:
    """``n`` clients, each sending from its own loopback address ``prefix.1``, ``prefix.2``…"""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=keepalive)
    return [
        httpx.AsyncClient(
            base_url=base,
            timeout=timeout,
            limits=limits,
            transport=httpx.AsyncHTTPTransport(
                local_address=f"{prefix}.{i + 1}",
                limits=limits,
                verify=False,  # plain http
            ),
        )
        for i in range(n)
    ]


async def submitter(pool: list[httpx.AsyncClient], rate: float, until: float, t: Tally) -> None:
    """``rate`` submissions a second, each from the next address, without waiting on them."""

    async def submit(client: httpx.AsyncClient) -> None:
        started = time.perf_counter()
        try:
            response = await client.post("/api/playgrounds/mcts/runs", json=QUICK)
        except httpx.HTTPError as exc:
            t.transport_errors[f"submit {type(exc).__name__}"] += 1
            return
        t.submit.append(time.perf_counter() - started)
        t.saw("submit", response)
        if response.status_code == 202:
            t.accepted.append(response.json()["id"])

    tasks = set()
    n = 0
    start = time.monotonic()
    while time.monotonic() < until:
        task = asyncio.create_task(submit(pool[n % len(pool)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
    await asyncio.gather(*tasks)


async def follow(client: httpx.AsyncClient, run_id: str, until: float, t: Tally) -> bool:
    """Stream one run's events: True at its ``done``, False when the load ends or it fails."""
    try:
        async with client.stream("GET", f"/api/runs/{run_id}/events") as response:
            if response.status_code != 200:
                await response.aread()
            t.saw("stream", response)
            if response.status_code != 200:
                await asyncio.sleep(1.0)
                return False
            t.streams_opened += 1
            t.open_now += 1
            try:
                async for line in response.aiter_lines():
                    t.events += line.startswith("event: ")
                    if line == "event: done":
                        return True
                    if time.monotonic() >= until:
                        return False
            finally:
                t.open_now -= 1
    except httpx.HTTPError as exc:
        t.transport_errors[f"stream {type(exc).__name__}"] += 1
        await asyncio.sleep(1.0)
    return False


async def streamer(client: httpx.AsyncClient, until: float, t: Tally, index: int) -> None:
    """Four clients in five watch a long run while it lasts; then, and for the fifth, one
    of the newest runs to its end, as a page does, then a newer one: never a run it has
    seen (a page does not re-watch a finished run)."""
    if t.anchors and index % 5:
        anchor = t.anchors[index % len(t.anchors)]
        while time.monotonic() < until and not await follow(client, anchor, until, t):
            pass
    seen = -1  # index in t.accepted of the last run this client followed
    while time.monotonic() < until:
        pick = max(seen + 1, len(t.accepted) - 1 - index % 20)  # spread over the newest 20
        if pick >= len(t.accepted):
            await asyncio.sleep(0.2)
            continue
        seen = pick
        await follow(client, t.accepted[pick], until, t)


async def home_pages(client: httpx.AsyncClient, until: float, t: Tally) -> None:
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            response = await client.get("/")
            t.home.append(time.perf_counter() - started)
            t.saw("home", response)
        except httpx.HTTPError as exc:
            t.transport_errors[f"home {type(exc).__name__}"] += 1
        await asyncio.sleep(0.2)


def connect_db(database_url: str | None, var_dir: Path) -> psycopg.Connection:
    if database_url:
        parts = urlparse(database_url)
        host = parse_qs(parts.query).get("host", [parts.hostname or ""])[0]
        return psycopg.connect(
            host=host, port=parts.port or 5432, user=parts.username or "postgres",
            password=parts.password or "", dbname=parts.path.lstrip("/") or "postgres",
            autocommit=True,
        )  # fmt: skip
    return psycopg.connect(
        host=str(var_dir / "pgdata"), user="postgres", dbname="postgres", autocommit=True
    )


async def watch_connections(db: psycopg.Connection, until: float, t: Tally) -> None:
    """The most connections the web held at once (and all clients), every 0.25 s."""
    query = (
        "SELECT count(*) FILTER (WHERE application_name = 'forward-pass-web'), count(*) "
        "FROM pg_stat_activity WHERE backend_type = 'client backend'"
    )
    while time.monotonic() < until:
        web, total = (await asyncio.to_thread(db.execute, query)).fetchone()
        t.peak_web_connections = max(t.peak_web_connections, web)
        t.peak_connections = max(t.peak_connections, total - 1)  # not this one
        t.open_samples.append(t.open_now)
        await asyncio.sleep(0.25)


def unfinished(db: psycopg.Connection, ids: list[str]) -> int:
    query = "SELECT count(*) FROM learn_run WHERE id = ANY(%s::uuid[]) AND NOT status = ANY(%s)"
    return db.execute(query, [ids, list(ENDED)]).fetchone()[0]


async def run_load(args: argparse.Namespace, base: str, db: psycopg.Connection) -> dict:
    t = Tally()
    # 200 addresses: 15 runs a minute each at 50/s; a new connection each time, as many
    # separate clients would (and no reuse racing the server's keep-alive timeout)
    submit_pool = clients("127.0.1", 200, base, 30, keepalive=0)
    stream_pool = clients("127.0.2", max(1, -(-args.streams // 5)), base, 40)  # 5 each
    home = httpx.AsyncClient(base_url=base, timeout=30)
    for _ in range(args.anchors):
        response = await home.post("/api/playgrounds/index-lab/runs", json=LONG)
        if response.status_code == 202:
            t.anchors.append(response.json()["id"])
    until = time.monotonic() + args.seconds
    try:
        await asyncio.gather(
            submitter(submit_pool, args.rate, until, t),
            home_pages(home, until, t),
            watch_connections(db, until + 1, t),
            *(
                streamer(stream_pool[i % len(stream_pool)], until, t, i)
                for i in range(args.streams)
            ),
        )
        for anchor in t.anchors:  # cancelled, so the drain waits for the quick runs only
            await home.post(f"/api/runs/{anchor}/cancel")
        drained_in = None
        started = time.monotonic()
        while time.monotonic() - started < args.drain:
            left = await asyncio.to_thread(unfinished, db, t.accepted)
            if left == 0:
                drained_in = round(time.monotonic() - started, 1)
                break
            await asyncio.sleep(1.0)
        left = await asyncio.to_thread(unfinished, db, t.accepted)
    finally:
        for client in [*submit_pool, *stream_pool, home]:
            await client.aclose()
    fivexx = sum(n for code, n in t.codes.items() if int(code.split()[1]) >= 500)
    return {
        "seconds": args.seconds,
        "streams": args.streams,
        "rate": args.rate,
        "home_p50_ms": percentile(t.home, 0.5),
        "home_p95_ms": percentile(t.home, 0.95),
        "submit_p50_ms": percentile(t.submit, 0.5),
        "submit_p95_ms": percentile(t.submit, 0.95),
        "submitted": len(t.submit),
        "accepted": len(t.accepted),
        "responses": dict(sorted(t.codes.items())),
        "5xx": fivexx,
        "5xx_said": dict(t.problems.most_common(5)),
        "429": sum(n for code, n in t.codes.items() if code.endswith(" 429")),
        "transport_errors": dict(t.transport_errors),
        "long_runs": len(t.anchors),
        "streams_opened": t.streams_opened,
        "streams_open_mean": round(sum(t.open_samples) / max(1, len(t.open_samples))),
        "streams_open_max": max(t.open_samples, default=0),
        "events_relayed": t.events,
        "peak_web_db_connections": t.peak_web_connections,
        "peak_db_connections": t.peak_connections,
        "pool_max": args.pool_max,
        "within_pool": t.peak_web_connections <= args.pool_max,
        "unfinished_runs": left,
        "drained_in_s": drained_in,
        "ok": fivexx == 0 and left == 0 and t.peak_web_connections <= args.pool_max,
    }


@contextlib.contextmanager
def own_site(pool_max: int, anchors: int):
    """A site of our own (as `make run` starts it) in a temporary FP_VAR_DIR: (url, var),
    with a worker process for each long run and two for the quick ones."""
    var = Path(tempfile.mkdtemp(prefix="fp-load-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(FP_VAR_DIR=str(var), PORT=str(port), FP_PRELOAD_MODELS="0",
               FP_DB_POOL_MAX=str(pool_max), WORKER_CONCURRENCY=str(2 + anchors),
               HF_HUB_OFFLINE="1")  # fmt: skip
    log = (var / "launcher.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "webapp.run"], cwd=ROOT, env=env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        else:
            sys.exit(f"the site did not come up; see {var / 'launcher.log'}")
        yield url, var
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        said = (var / "launcher.log").read_text(errors="replace").splitlines()
        for line in [line for line in said if " exited (" in line or "Error" in line][:20]:
            print("site:", line, file=sys.stderr)  # a restart or an error under load
        subprocess.run(["rm", "-rf", str(var)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", help="a site on this machine; default: start one")
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0, help="run submissions a second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--drain", type=float, default=120.0, help="wait for runs to end")
    parser.add_argument("--anchors", type=int, default=2, help="long runs for streams")
    parser.add_argument("--var-dir", type=Path, default=ROOT / "var", help="the site's var")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--pool-max", type=int, default=int(os.environ.get("FP_DB_POOL_MAX", 10)))
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.url:
            loopback_only(args.url)
            base, var_dir = args.url.rstrip("/"), args.var_dir
        else:
            base, var_dir = stack.enter_context(own_site(args.pool_max, args.anchors))
            args.database_url = None
        db = stack.enter_context(connect_db(args.database_url, var_dir))
        result = asyncio.run(run_load(args, base, db))
    for key, value in result.items():
        print(f"{key:>26}: {value}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
