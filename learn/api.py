"""The JSON API: the same playground jobs the forms run, for scripts and notebooks."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import aget_object_or_404, get_object_or_404, render
from ninja import Router, Schema
from pydantic import ValidationError

from learn import services, streams
from learn.models import Run, TrainedTokenizer
from learn.playgrounds import PLAYGROUNDS, FormProblem
from learn.queries import nearest_texts

router = Router()


class PlaygroundOut(Schema):
    slug: str
    title: str
    chapter: str
    summary: str
    params_schema: dict[str, Any]


class RunCreated(Schema):
    id: uuid.UUID
    status: str
    url: str
    events: str


class RunOut(Schema):
    id: uuid.UUID
    playground: str
    status: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: str
    device: str
    worker: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class Problem(Schema):
    message: str
    detail: list[dict[str, Any]] = []


class Neighbour(Schema):
    position: int
    text: str
    distance: float


def problem(status: int, message: str, detail: list[dict[str, Any]] | None = None) -> tuple:
    return status, {"message": message, "detail": detail or []}


def validation_problem(exc: ValidationError) -> list[dict[str, Any]]:
    detail = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "body"
        message = error["msg"].removeprefix("Value error, ")
        detail.append({"field": field, "message": message})
    return detail


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"


@router.get("/playgrounds", response=list[PlaygroundOut], tags=["playgrounds"])
def list_playgrounds(request: HttpRequest) -> list[dict[str, Any]]:
    return [
        {
            "slug": pg.slug,
            "title": pg.title,
            "chapter": pg.chapter,
            "summary": pg.summary,
            "params_schema": pg.params.model_json_schema(),
        }
        for pg in PLAYGROUNDS.values()
    ]


@router.post(
    "/playgrounds/{slug}/runs",
    response={202: RunCreated, 400: Problem, 404: Problem, 422: Problem, 503: Problem},
    tags=["playgrounds"],
    summary="Start a run of a playground",
    description="Body: the playground's parameters as JSON (see `params_schema` in "
    "`GET /api/playgrounds`), or a form post from the lesson page.",
)
def create_run(request: HttpRequest, slug: str):
    playground = PLAYGROUNDS.get(slug)
    if playground is None:
        return problem(404, f"No playground '{slug}'. GET /api/playgrounds lists them.")
    payload: Any = None
    if request.content_type == "application/json":
        try:
            payload = json.loads(request.body or b"{}")
        except json.JSONDecodeError as exc:
            return problem(400, f"The body is not valid JSON: {exc}")
        if not isinstance(payload, dict):
            return problem(400, "The body must be a JSON object of parameters.")
    try:
        if request.content_type != "application/json":
            payload = playground.params.from_form(request.POST, request.FILES)
        params = playground.params.model_validate(payload)
    except FormProblem as exc:
        detail = [{"field": exc.field, "message": str(exc)}]
    except ValidationError as exc:
        detail = validation_problem(exc)
    else:
        detail = []
    if detail:
        if is_htmx(request):
            return render(request, "learn/form_error.html", {"detail": detail}, status=422)
        return problem(422, "; ".join(f"{d['field']}: {d['message']}" for d in detail), detail)
    try:
        run = services.create_run(playground, params)
    except services.QueueUnavailable:
        return problem(
            503, "The job queue is not reachable right now; nothing was queued. Try again shortly."
        )
    if is_htmx(request):
        context = {"run": run, "playground": playground}
        return render(request, "learn/run_panel.html", context, status=202)
    return 202, {
        "id": run.id,
        "status": run.status,
        "url": f"/api/runs/{run.id}",
        "events": f"/api/runs/{run.id}/events",
    }


@router.get("/runs/{run_id}", response={200: RunOut}, tags=["runs"])
def get_run(request: HttpRequest, run_id: uuid.UUID) -> Run:
    if get_object_or_404(Run, pk=run_id).status == Run.Status.RUNNING:
        services.fail_lost_runs()
    return Run.objects.get(pk=run_id)


@router.get(
    "/runs/{run_id}/events",
    tags=["runs"],
    summary="The run's events as Server-Sent Events",
    description="`text/event-stream`: `progress`, `partial`, `log`, `error`, then `done`. "
    "Send `Last-Event-ID` to resume after a given event.",
)
async def run_events(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    run = await aget_object_or_404(Run, pk=run_id)
    return streams.sse_response(run, request)


@router.post("/runs/{run_id}/cancel", response={200: RunOut, 409: Problem}, tags=["runs"])
def cancel_run(request: HttpRequest, run_id: uuid.UUID):
    run = get_object_or_404(Run, pk=run_id)
    if not services.cancel_run(run):
        return problem(409, f"This run already ended ({run.status}); nothing to cancel.")
    if is_htmx(request):
        return HttpResponse(status=204)
    return 200, run


@router.get(
    "/runs/{run_id}/neighbours",
    response={200: list[Neighbour], 404: Problem, 409: Problem},
    tags=["runs"],
    summary="Nearest neighbours of one embedded text (pgvector, cosine distance <=>)",
)
def run_neighbours(request: HttpRequest, run_id: uuid.UUID, position: int, k: int = 5):
    run = get_object_or_404(Run, pk=run_id)
    if run.playground != "embed":
        return problem(409, "Only runs of the embed playground have neighbours.")
    found = nearest_texts(run, position, k)
    if found is None:
        return problem(404, f"This run has no text at position {position}.")
    return found


class TokenizerOut(Schema):
    id: uuid.UUID
    name: str
    vocab_size: int
    pretokenizer: str
    special_tokens: list[str]
    corpus_chars: int
    created_at: datetime
    run_id: uuid.UUID


@router.get("/tokenizers", response=list[TokenizerOut], tags=["tokenizers"])
def list_tokenizers(request: HttpRequest):
    """BPE tokenizers trained in the bpe-train playground, newest first (at most 100)."""
    return TrainedTokenizer.objects.all()[:100]


@router.get(
    "/tokenizers/{tokenizer_id}/tokenizer.json",
    tags=["tokenizers"],
    url_name="tokenizer_json",
    summary="A trained tokenizer as a Hugging Face tokenizer.json",
    description="Loads with `tokenizers.Tokenizer.from_file` and encodes to the same ids.",
)
def tokenizer_json(request: HttpRequest, tokenizer_id: uuid.UUID) -> HttpResponse:
    from learn.lab.bpe import BPETokenizer
    from learn.lab.bpe_hf import to_hf_json

    found = get_object_or_404(TrainedTokenizer, pk=tokenizer_id)
    response = HttpResponse(
        to_hf_json(BPETokenizer.from_dict(found.data)), content_type="application/json"
    )
    filename = "".join(c if c.isalnum() or c in "-_." else "-" for c in found.name) or "tokenizer"
    response["Content-Disposition"] = f'attachment; filename="{filename}.tokenizer.json"'
    return response
