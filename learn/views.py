"""Pages: home, lessons, a run on its own, the HTML event stream for htmx, health."""

from __future__ import annotations

import uuid
from collections import Counter

from celery import current_app
from django.contrib.admin.views.decorators import staff_member_required
from django.db import connection
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import aget_object_or_404, get_object_or_404, render
from django.template.loader import render_to_string

from learn import events, services, streams
from learn.chapters import CHAPTERS, get_chapter
from learn.events import Event
from learn.models import Run, TrainedTokenizer
from learn.playgrounds import PLAYGROUNDS, for_chapter
from learn.queries import nearest_texts


def home(request: HttpRequest) -> HttpResponse:
    chapters = [(chapter, for_chapter(chapter.slug)) for chapter in CHAPTERS]
    return render(request, "learn/home.html", {"chapters": chapters})


def chapter(request: HttpRequest, slug: str) -> HttpResponse:
    found = get_chapter(slug)
    if found is None:
        raise Http404("No such chapter")
    playgrounds = {pg.slug.replace("-", "_"): pg for pg in for_chapter(slug)}
    context = {"chapter": found, "chapters": CHAPTERS, "playgrounds": playgrounds}
    if slug == "tokenization":  # the tokenize forms offer the tokenizers trained here
        context["trained_tokenizers"] = TrainedTokenizer.objects.only(
            "id", "name", "vocab_size", "pretokenizer"
        )[:50]
    return render(request, "learn/chapter.html", context)


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
    run = await aget_object_or_404(Run, pk=run_id)
    playground = PLAYGROUNDS.get(run.playground)

    async def render_event(event: Event) -> list[str]:
        if event.kind == "progress":
            return [event.sse(render_to_string("learn/run_panel.html#progress", event.data))]
        if event.kind == "partial" and playground and playground.live:
            return [event.sse(render_to_string(playground.partial_template, event.data))]
        if event.kind in {"log", "partial"}:
            message = event.data.get("message")
            html = render_to_string("learn/run_panel.html#log", {"message": message})
            return [event.sse(html)] if message else []
        if event.kind == "error":
            return [event.sse(render_to_string("learn/run_panel.html#error", event.data))]
        if event.kind == "done":
            # The run's end: its stored result, rendered by the playground's template.
            current = await Run.objects.aget(pk=run.pk)
            html = render_to_string(
                "learn/run_panel.html#ended",
                {
                    "run": current,
                    "result_template": playground and playground.result_template,
                    "streamed": True,  # also update the status badge out of band
                },
            )
            return [Event(event.id, "result", {}).sse(html), event.sse("")]
        return []

    return streams.sse_response(run, request, render_event)


def healthz(request: HttpRequest) -> JsonResponse:
    status = {"database": "ok", "broker": "ok", "workers": 0}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        status["database"] = f"error: {exc}"
    try:
        events.client().ping()
        status["workers"] = len(current_app.control.ping(timeout=0.5) or [])
    except Exception as exc:
        status["broker"] = f"error: {exc}"
    healthy = status["database"] == "ok" and status["broker"] == "ok"
    return JsonResponse(status, status=200 if healthy else 503)


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Operators' view: workers, queue depths, runs by status, recent failures."""
    services.fail_lost_runs()
    inspector = current_app.control.inspect(timeout=0.5)
    active = inspector.active() or {}
    queues = {name: events.client().llen(name) for name in ("gpu", "cpu")}
    by_status = Counter(Run.objects.values_list("status", flat=True))
    by_playground = Counter(Run.objects.values_list("playground", flat=True))
    context = {
        "workers": sorted(active.items()),
        "queues": queues,
        "by_status": sorted(by_status.items()),
        "by_playground": sorted(by_playground.items()),
        "failures": Run.objects.filter(status=Run.Status.FAILED)[:20],
        "recent": Run.objects.all()[:20],
    }
    return render(request, "learn/dashboard.html", context)


def benchmarks(request: HttpRequest) -> HttpResponse:
    """Every finished quantization benchmark, newest first, across devices."""
    runs = Run.objects.filter(playground="quantize", status="succeeded").order_by("-finished_at")[
        :100
    ]
    return render(request, "learn/benchmarks.html", {"runs": runs})
