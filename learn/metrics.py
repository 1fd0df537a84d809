"""Figures for operators: live workers, queue depths, runs, durations, open streams.

Several processes are involved (the web, each worker's main process and its pool), so
nothing here counts in process memory: every figure is read when asked for, from Redis
and the database, and is the same whichever web process answers. ``/metrics`` exposes
them to Prometheus through :class:`Collector`; ``/dashboard/`` shows the same
:func:`snapshot`; ``/healthz`` reads :func:`live_workers` alone (one Redis call).

Worker liveness is a heartbeat: each worker's main process writes its name and the time
into a sorted set every ``HEARTBEAT_SECONDS`` (:class:`Heartbeat`, from
``workers/tasks.py``); a worker is alive while its last beat is under ``ALIVE_SECONDS``
old. Its pool processes report the device they compute on (:func:`report_device`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db.models import Aggregate, Count, DurationField, ExpressionWrapper, F, Q, Sum
from django.db.models.functions import TruncMinute
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from learn import events
from learn.models import Run

log = logging.getLogger(__name__)

WORKERS = "fp:workers"  # sorted set: worker name -> unix time of its last heartbeat
WORKER_INFO = "fp:workers:info"  # hash: worker name -> JSON {pid, concurrency, queues, since}
WORKER_DEVICE = "fp:workers:device"  # hash: worker name -> device of its pool processes
HEARTBEAT_SECONDS = 3.0
ALIVE_SECONDS = 10.0  # three missed beats and a worker counts as gone
QUEUES = ("gpu", "cpu")  # Celery's queues are Redis lists of these names
UNACKED = "unacked"  # kombu's Redis transport: jobs handed to a worker, not yet acknowledged
BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)  # seconds

# One round trip: the live names with what each wrote about itself.
_LIVE = """
local names = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES')
local out = {}
for i = 1, #names, 2 do
  local name = names[i]
  out[#out + 1] = {name, names[i + 1], redis.call('HGET', KEYS[2], name) or '{}',
                   redis.call('HGET', KEYS[3], name) or ''}
end
return out
"""


@dataclass(frozen=True)
class Worker:
    """A live worker: its Celery node name and what its heartbeat says."""

    name: str
    device: str  # "cuda", "cpu", or "" until a pool process has reported
    pid: int
    concurrency: int
    queues: list[str]
    seen: float  # seconds since its last heartbeat


# ------------------------------------------------------------------- worker heartbeats


def beat(client: redis.Redis, name: str, info: dict[str, Any]) -> None:
    """One heartbeat of worker ``name``; names silent for a day are dropped."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.zadd(WORKERS, {name: now})
    pipe.hset(WORKER_INFO, name, json.dumps(info))
    pipe.zremrangebyscore(WORKERS, "-inf", now - 86400)
    pipe.execute()


def forget(client: redis.Redis, name: str) -> None:
    """Worker ``name`` has stopped (or died): stop counting it now, not ALIVE_SECONDS later."""
    pipe = client.pipeline(transaction=False)
    pipe.zrem(WORKERS, name)
    pipe.hdel(WORKER_INFO, name)
    pipe.hdel(WORKER_DEVICE, name)
    pipe.execute()


def report_device(name: str, device: str) -> None:
    """A pool process of worker ``name`` computes on ``device``."""
    events.client().hset(WORKER_DEVICE, name, device)


class Heartbeat:
    """Beats for worker ``name`` every HEARTBEAT_SECONDS in a daemon thread until stopped.

    The thread has its own Redis client: pool processes forked later must not inherit a
    client whose lock this thread might hold.
    """

    def __init__(self, name: str, info: dict[str, Any]) -> None:
        self.name, self.info = name, info
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fp-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)
        while not self._stop.is_set():
            try:
                beat(client, self.name, self.info)
            except redis.RedisError as exc:
                log.warning("heartbeat of %s not written: %s", self.name, exc)
            self._stop.wait(HEARTBEAT_SECONDS)
        with contextlib.suppress(redis.RedisError):  # else it lapses after ALIVE_SECONDS
            forget(client, self.name)
        client.close()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop beating and take this worker off the live ones before returning."""
        self._stop.set()
        self._thread.join(timeout)


def live_workers(client: redis.Redis | None = None) -> list[Worker]:
    """Workers whose last heartbeat is under ALIVE_SECONDS old (raises if Redis is down)."""
    now = time.time()
    rows = (client or events.client()).eval(
        _LIVE, 3, WORKERS, WORKER_INFO, WORKER_DEVICE, now - ALIVE_SECONDS
    )
    found = []
    for name, seen, info, device in rows:
        about = json.loads(info)
        found.append(
            Worker(
                name=name.decode(),
                device=device.decode() if device else "",
                pid=int(about.get("pid", 0)),
                concurrency=int(about.get("concurrency", 0)),
                queues=list(about.get("queues", [])),
                seen=max(0.0, now - float(seen)),
            )
        )
    return sorted(found, key=lambda w: w.name)


# ------------------------------------------------------------------- figures from the DB


class Percentile(Aggregate):
    """PostgreSQL's ``percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)``."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        super().__init__(expression, fraction=float(fraction), **extra)


@dataclass
class Timing:
    """How long one step of a playground's runs took, in seconds."""

    count: int
    total: float
    p50: float | None
    p95: float | None
    buckets: list[int]  # runs at or under each of BUCKETS (cumulative, as Prometheus wants)


def timings(start: str, end: str) -> dict[str, Timing]:
    """Per playground, the time from field ``start`` to field ``end`` of runs that have both:
    ("started_at", "finished_at") is how long runs ran; ("created_at", "started_at") is the
    wait for a worker, which is also the time to a run's first event (its "Started on")."""
    span = ExpressionWrapper(F(end) - F(start), output_field=DurationField())
    per_bucket = {
        f"le{i}": Count("id", filter=Q(span__lte=timedelta(seconds=b)))
        for i, b in enumerate(BUCKETS)
    }
    rows = (
        Run.objects.filter(**{f"{start}__isnull": False, f"{end}__isnull": False})
        .annotate(span=span)
        .values("playground")
        .annotate(
            n=Count("id"),
            total=Sum("span"),
            p50=Percentile("span", 0.5, output_field=DurationField()),
            p95=Percentile("span", 0.95, output_field=DurationField()),
            **per_bucket,
        )
        .order_by("playground")
    )
    return {
        row["playground"]: Timing(
            count=row["n"],
            total=row["total"].total_seconds() if row["total"] else 0.0,
            p50=row["p50"].total_seconds() if row["p50"] is not None else None,
            p95=row["p95"].total_seconds() if row["p95"] is not None else None,
            buckets=[row[f"le{i}"] for i in range(len(BUCKETS))],
        )
        for row in rows
    }


def runs_per_minute(minutes: int = 60) -> dict[str, Any]:
    """Runs submitted in each of the last ``minutes`` minutes, by their status now:
    {"minutes": ["HH:MM", …], "series": {status: [count per minute, …]}}."""
    end = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=minutes)
    slots = [start + timedelta(minutes=i) for i in range(minutes)]
    series = {status: [0] * minutes for status in Run.Status.values}
    rows = (
        Run.objects.filter(created_at__gte=start)
        .annotate(minute=TruncMinute("created_at"))
        .values("minute", "status")
        .annotate(n=Count("id"))
    )
    for row in rows:
        index = int((row["minute"] - start).total_seconds() // 60)
        if 0 <= index < minutes:
            series[row["status"]][index] += row["n"]
    return {"minutes": [slot.strftime("%H:%M") for slot in slots], "series": series}


# ------------------------------------------------------------------- the whole picture


@dataclass
class Snapshot:
    """Every figure at one moment; ``problems`` names what could not be read."""

    workers: list[Worker] = field(default_factory=list)
    queues: dict[str, int] = field(default_factory=dict)  # jobs waiting, per queue
    unacked: int = 0  # jobs handed to workers and not yet acknowledged
    open_streams: int = 0
    runs: dict[tuple[str, str], int] = field(default_factory=dict)  # (playground, status)
    durations: dict[str, Timing] = field(default_factory=dict)
    first_event: dict[str, Timing] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def snapshot(open_streams: int = 0) -> Snapshot:
    """Read every figure; a part that fails is left empty and named in ``problems``."""
    snap = Snapshot(open_streams=open_streams)
    try:
        client = events.client()
        snap.workers = live_workers(client)
        pipe = client.pipeline(transaction=False)
        for name in QUEUES:
            pipe.llen(name)
        pipe.hlen(UNACKED)
        *depths, snap.unacked = pipe.execute()
        snap.queues = dict(zip(QUEUES, depths, strict=True))
    except redis.RedisError as exc:
        snap.problems.append(f"broker: {exc}")
    try:
        counted = Run.objects.values_list("playground", "status").annotate(n=Count("id"))
        snap.runs = {(playground, status): n for playground, status, n in counted}
        snap.durations = timings("started_at", "finished_at")
        snap.first_event = timings("created_at", "started_at")
    except Exception as exc:  # the database is down: say so, keep the rest
        snap.problems.append(f"database: {exc}")
    return snap


def _histogram(name: str, doc: str, per_playground: dict[str, Timing]) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=["playground"])
    for playground, t in per_playground.items():
        buckets = [(str(b), float(n)) for b, n in zip(BUCKETS, t.buckets, strict=True)]
        family.add_metric([playground], [*buckets, ("+Inf", float(t.count))], t.total)
    return family


class Collector:
    """A Prometheus collector that reads :func:`snapshot` at each scrape."""

    def __init__(self, open_streams: Any = None) -> None:
        self.open_streams = open_streams or (lambda: 0)

    def describe(self) -> list[Metric]:
        return []  # registering must not query anything

    def collect(self) -> Iterator[Metric]:
        snap = snapshot(self.open_streams())
        workers = GaugeMetricFamily("fp_workers_live", "Workers with a recent heartbeat")
        workers.add_metric([], len(snap.workers))
        yield workers
        info = GaugeMetricFamily(
            "fp_worker_info", "1 per live worker, with its device", labels=["worker", "device"]
        )
        for w in snap.workers:
            info.add_metric([w.name, w.device or "unknown"], 1)
        yield info
        depth = GaugeMetricFamily("fp_queue_depth", "Jobs waiting per queue", labels=["queue"])
        for queue, n in snap.queues.items():
            depth.add_metric([queue], n)
        yield depth
        unacked = GaugeMetricFamily("fp_jobs_unacked", "Jobs handed to workers, not yet acked")
        unacked.add_metric([], snap.unacked)
        yield unacked
        streams = GaugeMetricFamily("fp_streams_open", "Event streams open (all web processes)")
        streams.add_metric([], snap.open_streams)
        yield streams
        runs = GaugeMetricFamily(
            "fp_runs", "Stored runs by playground and status", labels=["playground", "status"]
        )
        for (playground, status), n in sorted(snap.runs.items()):
            runs.add_metric([playground, status], n)
        yield runs
        yield _histogram(
            "fp_run_duration_seconds", "Time from start to end of runs", snap.durations
        )
        yield _histogram(
            "fp_run_first_event_seconds",
            "Time from submission to a run's first event (its start on a worker)",
            snap.first_event,
        )
        up = GaugeMetricFamily("fp_metrics_complete", "1 when every figure could be read")
        up.add_metric([], 0 if snap.problems else 1)
        yield up
