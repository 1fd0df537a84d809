"""Pages: home, lessons, a run on its own, the HTML event stream for htmx, health, metrics."""

from __future__ import annotations

import hmac
import uuid
from collections import Counter
from typing import Any

import psycopg
from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.db import connection
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from learn import metrics, owners, services, streams
from learn.chapters import CHAPTERS, get_chapter
from learn.events import Event
from learn.models import Run, TrainedTokenizer
from learn.pages import chapter_context, home_context
from learn.playgrounds import PLAYGROUNDS, for_chapter
from learn.queries import collections_of, nearest_texts


def home(request: HttpRequest) -> HttpResponse:
    chapters = [(chapter, for_chapter(chapter.slug)) for chapter in CHAPTERS]
    return render(request, "learn/home.html", {"chapters": chapters, **home_context(request)})


def is_uuid(text: str | None) -> bool:
    try:
        uuid.UUID(text or "")
    except ValueError:
        return False
    return True


def chapter(request: HttpRequest, slug: str) -> HttpResponse:
    found = get_chapter(slug)
    if found is None:
        raise Http404("No such chapter")
    playgrounds = {pg.slug.replace("-", "_"): pg for pg in for_chapter(slug)}
    context = {
        "chapter": found,
        "chapters": CHAPTERS,
        "playgrounds": playgrounds,
        "runs_on": runs_on(),
        **chapter_context(request, slug),  # the learner's latest runs, checks, progress
    }
    if slug == "rag-agents":  # the chapter 6 forms offer the learner's own collections
        context["my_collections"] = collections_of(owners.acting_tags(request))
    if slug in ("tokenization", "transformers"):  # the tokenize and train-gpt forms offer
        # the tokenizers this learner trained, and one a shared link names, nobody else's
        shared = Q(pk=request.GET["trained"]) if is_uuid(request.GET.get("trained")) else Q()
        context["trained_tokenizers"] = TrainedTokenizer.objects.filter(
            Q(run__owner__in=owners.acting_tags(request)) | shared
        ).only("id", "name", "vocab_size", "pretokenizer")[:50]
    return render(request, "learn/chapter.html", context)


def runs_on() -> dict[str, str]:
    """Per queue, the device a job queued now would run on, in words, from the live
    workers' heartbeats (as /healthz reads them); {} when no worker is alive."""
    try:
        live = metrics.live_workers()
    except Exception:  # Redis down: the form cannot say, and the run would wait anyway
        return {}
    words = {}
    for queue in ("gpu", "cpu"):
        devices = {w.device for w in live if queue in w.queues and w.device}
        if "cuda" in devices and (queue == "gpu" or devices == {"cuda"}):
            words[queue] = "a GPU (CUDA)"  # GPU workers take the gpu queue first
        elif "cuda" in devices:
            words[queue] = "a CPU or a GPU, whichever worker is free"
        elif devices:
            words[queue] = "the CPU (no GPU worker is running)" if queue == "gpu" else "the CPU"
    return words


def run_page(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    run = get_object_or_404(Run, pk=run_id)
    return render(
        request, "learn/run.html", {"run": run, "playground": PLAYGROUNDS.get(run.playground)}
    )


def neighbours(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    run = get_object_or_404(Run, pk=run_id, playground="embed")
    try:
        position = int(request.GET.get("position", ""))
    except ValueError:
        return HttpResponse("Pick a point on the map.", status=400)
    found = nearest_texts(run, position, k=5)
    if found is None:
        raise Http404("No text at that position")
    origin = run.embeddings.get(position=position)
    return render(
        request, "playgrounds/embed.html#neighbours", {"origin": origin, "neighbours": found}
    )


async def run_stream(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    """The run's events as HTML partials for htmx's SSE extension (see run_panel.html)."""
    run = await streams.get_run(run_id)
    playground = PLAYGROUNDS.get(run.playground)

    def render_ended(event: Event) -> list[str]:
        # The run's end: its stored result, rendered by the playground's template.
        html = render_to_string(
            "learn/run_panel.html#ended",
            {
                "run": Run.objects.get(pk=run.pk),
                "result_template": playground and playground.result_template,
                "streamed": True,  # also update the status badge out of band
            },
        )
        return [Event(event.id, "result", {}).sse(html), event.sse("")]

    async def render_event(event: Event) -> list[str]:
        if event.kind == "progress":  # the bar, and the badge (out of band): a worker has it
            running = {"run": run, "status": Run.Status.RUNNING, "streamed": True}
            html = render_to_string("learn/run_panel.html#progress", event.data)
            badge = render_to_string("learn/run_panel.html#status", running)
            return [event.sse(html + badge)]
        if event.kind == "attempt":  # a retry after a worker stopped: reset the bar, log it
            reset = {"pct": 0, "message": event.data.get("message")}
            return [
                Event(event.id, "progress", {}).sse(
                    render_to_string("learn/run_panel.html#progress", reset)
                ),
                Event(event.id, "log", {}).sse(render_to_string("learn/run_panel.html#log", reset)),
            ]
        if event.kind == "partial" and playground and playground.live:
            return [event.sse(render_to_string(playground.partial_template, event.data))]
        if event.kind in {"log", "partial"}:
            message = event.data.get("message")
            html = render_to_string("learn/run_panel.html#log", {"message": message})
            return [event.sse(html)] if message else []
        if event.kind == "error":
            return [event.sse(render_to_string("learn/run_panel.html#error", event.data))]
        if event.kind == "done":
            return await streams.in_db(render_ended, event)
        return []

    return await streams.sse_response(run, request, render_event)


HEALTH_DB_TIMEOUT_S = 2  # a health check answers well inside a load balancer's timeout


def database_answers() -> None:
    """``SELECT 1`` on a connection of its own, given ``HEALTH_DB_TIMEOUT_S`` to connect.

    Not through the pool: with PostgreSQL down, the pool waits its whole timeout (10 s)
    for a connection that never comes, and a health check must fail fast instead.
    Raises what psycopg raises."""
    params = connection.get_connection_params() | {"connect_timeout": HEALTH_DB_TIMEOUT_S}
    with psycopg.connect(**params) as probe:
        probe.execute("SELECT 1")


def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the broker answer and a worker is alive, else 503.

    Liveness comes from the workers' heartbeats (learn.metrics): one Redis call, no ping.
    """
    status: dict[str, Any] = {"database": "ok", "broker": "ok", "workers": 0, "live_workers": []}
    try:
        database_answers()
    except Exception as exc:
        status["database"] = f"error: {exc}"
    try:
        live = metrics.live_workers()
    except Exception as exc:
        status["broker"] = f"error: {exc}"
    else:
        status["workers"] = len(live)
        status["live_workers"] = [
            {"name": w.name, "device": w.device, "concurrency": w.concurrency} for w in live
        ]
    healthy = status["database"] == "ok" and status["broker"] == "ok" and status["workers"] > 0
    return JsonResponse(status, status=200 if healthy else 503)


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Operators' view: the figures /metrics exports, runs per minute, recent failures."""
    services.fail_lost_runs()
    snap = metrics.snapshot(streams.open_streams())
    running = Counter(
        Run.objects.filter(status=Run.Status.RUNNING).values_list("worker", flat=True)
    )
    statuses = Counter[str]()
    playgrounds = Counter[str]()
    for (playground, status), n in snap.runs.items():
        statuses[status] += n
        playgrounds[playground] += n
    timings = [
        (slug, snap.durations.get(slug), snap.first_event.get(slug)) for slug in sorted(playgrounds)
    ]
    context = {
        "snap": snap,
        "workers": [(w, running.get(w.name, 0)) for w in snap.workers],
        "by_status": sorted(statuses.items()),
        "by_playground": sorted(playgrounds.items()),
        "timings": timings,
        "per_minute": metrics.runs_per_minute(60),
        "failures": Run.objects.filter(status=Run.Status.FAILED)[:20],
        "recent": Run.objects.all()[:20],
    }
    return render(request, "learn/dashboard.html", context)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text: Django's request metrics and ours (learn.metrics), for staff or a
    scraper with ``Authorization: Bearer $FP_METRICS_TOKEN``; 404 for anyone else."""
    token = settings.FP_METRICS_TOKEN
    sent = request.headers.get("Authorization", "").encode()
    bearer = bool(token) and hmac.compare_digest(sent, f"Bearer {token}".encode())
    if not (bearer or request.user.is_staff):
        raise Http404("No such page")
    ours = CollectorRegistry(auto_describe=False)
    ours.register(metrics.Collector(streams.open_streams))
    body = generate_latest(REGISTRY) + generate_latest(ours)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


def benchmarks(request: HttpRequest) -> HttpResponse:
    """Every finished quantization benchmark, newest first, across devices. Only the
    viewer's own runs link to their pages: nobody learns the ids of others' runs."""
    done = Run.objects.filter(playground="quantize", status="succeeded")
    runs = list(done.order_by("-finished_at")[:100])
    mine = owners.acting_tags(request)
    for run in runs:
        run.mine = run.owner in mine  # type: ignore[attr-defined]
    return render(request, "learn/benchmarks.html", {"runs": runs})
