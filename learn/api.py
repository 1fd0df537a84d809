"""The JSON API: the same playground jobs the forms run, for scripts and notebooks."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import render
from ninja import Query, Router, Schema, Status
from redis.exceptions import RedisError

from learn import owners, queries, ratelimit, services, streams
from learn.models import Run, TrainedTokenizer
from learn.playgrounds import PLAYGROUNDS
from learn.problems import ApiProblem, is_htmx, read_params
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


# The error statuses every POST may answer, all in the Problem format (see webapp/api.py).
POST_PROBLEMS = frozenset({400, 401, 403, 404, 413, 415, 422, 429, 503})
READ_PROBLEMS = frozenset({401, 404, 422})


def check_limits(request: HttpRequest, owner: str, per_minute: int) -> None:
    """Runs started per minute per address and per owner (the cap on runs in flight is
    checked where the run is stored: ``services.create_run(max_active=…)``)."""
    limits = (
        ("runs-ip", ratelimit.client_ip(request), settings.FP_RUNS_PER_MINUTE_PER_IP, "address"),
        ("runs-owner", owner, per_minute, "owner"),
    )
    for what, who, limit, whose in limits:
        decision = ratelimit.check(what, who, limit=limit, per=60)
        if not decision.allowed:
            raise ApiProblem(
                429,
                f"Too many runs started: at most {limit} a minute per {whose}. "
                f"Try again in {decision.retry_after} s.",
                headers={"Retry-After": str(decision.retry_after)},
            )


def find_run(run_id: uuid.UUID) -> Run:
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        raise ApiProblem(404, f"No run {run_id}: ids come from POST /api/playgrounds/<slug>/runs.")
    return run


def not_yours(request: HttpRequest, collection_ids: list[str]) -> list[dict[str, Any]]:
    """A problem for each named collection the requester did not make."""
    tags = owners.acting_tags(request)
    return [
        {
            "field": "collection",
            "message": f"No collection {cid} of yours here: make one with 'Make a collection' "
            "(it belongs to the browser that made it), or ask the course.",
        }
        for cid in collection_ids
        if not queries.visible_collection(cid, tags)
    ]


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
        if not pg.hidden  # backends of /v1: reached with an API key there, not here
    ]


@router.post(
    "/playgrounds/{slug}/runs",
    response={202: RunCreated, POST_PROBLEMS: Problem},
    tags=["playgrounds"],
    summary="Start a run of a playground",
    description="Body: the playground's parameters as JSON (`Content-Type: application/json`; "
    "each playground's schema is its own operation below, and `params_schema` in "
    "`GET /api/playgrounds`), or a form post from the lesson page. JSON is strict: `5`, "
    'not `"5"`; `true`, not `1`. The run belongs to you (your API key, account, browser '
    "session, or, for a script with no cookies, your address); 429 past the runs a minute "
    "or the runs in flight allowed to one owner.",
)
def create_run(request: HttpRequest, slug: str):
    playground = PLAYGROUNDS.get(slug)
    if playground is None or playground.hidden:
        raise ApiProblem(404, f"No playground '{slug}'. GET /api/playgrounds lists them.")
    params = read_params(request, playground)
    detail = not_yours(request, params.collections())
    if detail:
        raise ApiProblem(422, " ".join(d["message"] for d in detail), detail)
    owner, per_minute = owners.new_run_owner(request)
    try:
        check_limits(request, owner, per_minute)  # counted in Valkey, the broker's home too
    except RedisError:
        raise ApiProblem(
            503,
            "The job queue is not reachable right now; nothing was queued. Try again shortly.",
            headers={"Retry-After": "15"},
        ) from None
    try:
        run = services.create_run(
            playground, params, owner=owner, max_active=settings.FP_MAX_ACTIVE_RUNS
        )
    except services.TooManyActive as exc:
        raise ApiProblem(
            429,
            f"You have {exc.active} runs still running; wait for one to finish or cancel it "
            "(POST /api/runs/<id>/cancel), then start another.",
            headers={"Retry-After": "10"},
        ) from exc
    except services.QueueUnavailable:
        raise ApiProblem(
            503, "The job queue is not reachable right now; nothing was queued. Try again shortly."
        ) from None
    if is_htmx(request):
        context = {"run": run, "playground": playground}
        return render(request, "learn/run_panel.html", context, status=202)
    return Status(
        202,
        {
            "id": run.id,
            "status": run.status,
            "url": f"/api/runs/{run.id}",
            "events": f"/api/runs/{run.id}/events",
        },
    )


@router.get("/runs/{run_id}", response={200: RunOut, READ_PROBLEMS: Problem}, tags=["runs"])
def get_run(request: HttpRequest, run_id: uuid.UUID) -> Run:
    """Anyone with its id may read a run (ids are unguessable; share links rely on this)."""
    run = find_run(run_id)
    if run.status == Run.Status.RUNNING and services.fail_lost_runs():
        run.refresh_from_db()
    return run


@router.get(
    "/runs/{run_id}/events",
    tags=["runs"],
    summary="The run's events as Server-Sent Events",
    description="`text/event-stream`: `progress`, `partial`, `log`, `error`, then `done`; "
    "`attempt` marks a retry after a worker stopped. Send `Last-Event-ID` (a whole number) "
    "to resume after a given event. 429 when this address has too many streams open, 503 "
    "when the site has (both with `Retry-After`).",
)
async def run_events(request: HttpRequest, run_id: uuid.UUID) -> HttpResponse:
    run = await streams.get_run(run_id)  # read once: the stream holds no DB connection
    return await streams.sse_response(run, request)


@router.post(
    "/runs/{run_id}/cancel",
    response={200: RunOut, POST_PROBLEMS | {409}: Problem},
    tags=["runs"],
    description="Only whoever started the run (the same key, account, session or address) "
    "or staff may cancel it: 403 otherwise.",
)
def cancel_run(request: HttpRequest, run_id: uuid.UUID):
    run = find_run(run_id)
    user = getattr(request, "user", None)
    if not (user is not None and user.is_staff) and run.owner not in owners.acting_tags(request):
        raise ApiProblem(
            403, "This run was started by someone else: only they (or staff) can cancel it."
        )
    if not services.cancel_run(run):
        raise ApiProblem(409, f"This run already ended ({run.status}); nothing to cancel.")
    if is_htmx(request):
        return HttpResponse(status=204)
    return Status(200, run)


@router.get(
    "/runs/{run_id}/neighbours",
    response={200: list[Neighbour], READ_PROBLEMS | {409}: Problem},
    tags=["runs"],
    summary="Nearest neighbours of one embedded text (pgvector, cosine distance <=>)",
)
def run_neighbours(
    request: HttpRequest,
    run_id: uuid.UUID,
    position: int = Query(..., ge=0, le=10_000),
    k: int = Query(5, ge=1, le=50),
):
    run = find_run(run_id)
    if run.playground != "embed":
        raise ApiProblem(409, "Only runs of the embed playground have neighbours.")
    found = nearest_texts(run, position, k)
    if found is None:
        raise ApiProblem(404, f"This run has no text at position {position}.")
    return found


@router.get(
    "/runs/{run_id}/model/{name}",
    response={200: dict[str, Any], READ_PROBLEMS: Problem},
    tags=["runs"],
    url_name="trained_model_file",
    summary="A tiny GPT trained in 'Train a tiny GPT': its weights or its config",
    description="`model.safetensors` (GPT-2's parameter names), `config.json` (GPT2Config's "
    "fields) or `curves.json` (its loss curves). Save the first two in one folder and "
    "`transformers.GPT2LMHeadModel.from_pretrained(folder)` loads the model. A cancelled "
    "run keeps the checkpoint it had reached.",
)
def trained_model_file(
    request: HttpRequest,
    run_id: uuid.UUID,
    name: Literal["model.safetensors", "config.json", "curves.json"],
) -> HttpResponse:
    from learn.playgrounds.training import model_folder

    run = find_run(run_id)
    missing = f"Run {run_id} kept no {name}: train a model with 'Train a tiny GPT' first."
    return kept_file(run, "train-gpt", model_folder(run.id) / name, missing, filename=name)


@router.get(
    "/runs/{run_id}/lora/{name}",
    response={200: dict[str, Any], READ_PROBLEMS: Problem},
    tags=["runs"],
    url_name="lora_adapter",
    summary="The LoRA adapter trained in 'Fine-tune SmolLM2 with LoRA'",
    description="`adapter.safetensors`: lora_A (r, in) and lora_B (out, r) per adapted "
    "projection of our Llama (`layers.N.attention.wqkv`, `.wo`, `.feed_forward.w13`, `.w2`), "
    "rank, alpha and targets in its metadata. `adapter-peft.zip`: the same adapter for "
    "transformers' Llama (q/k/v and gate/up split out): unzip it into a folder and "
    "`peft.PeftModel.from_pretrained(<SmolLM2-135M-Instruct>, folder)` loads it. A cancelled "
    "run keeps the adapter it had reached.",
)
def lora_adapter(
    request: HttpRequest,
    run_id: uuid.UUID,
    name: Literal["adapter.safetensors", "adapter-peft.zip"],
) -> HttpResponse:
    from learn.playgrounds.finetune import adapter_path

    run = find_run(run_id)
    missing = f"Run {run_id} kept no adapter: fine-tune one with 'Fine-tune SmolLM2 with LoRA'."
    filename = f"lora-{str(run.id)[:8]}-{name}"
    return kept_file(run, "lora-finetune", adapter_path(run.id, name), missing, filename)


KINDS = {".json": "application/json", ".zip": "application/zip"}  # else: bytes


def kept_file(run: Run, playground: str, path: Path, missing: str, filename: str) -> HttpResponse:
    """A file a run of ``playground`` kept beside its result (a model, an adapter), as a
    download; 404 with ``missing`` when the run is another playground's or kept no such file."""
    if run.playground != playground or not path.is_file():
        raise ApiProblem(404, missing)
    kind = KINDS.get(path.suffix, "application/octet-stream")
    return FileResponse(path.open("rb"), content_type=kind, as_attachment=True, filename=filename)


class TokenizerOut(Schema):
    id: uuid.UUID
    name: str
    vocab_size: int
    pretokenizer: str
    special_tokens: list[str]
    corpus_chars: int
    created_at: datetime
    run_id: uuid.UUID


@router.get("/tokenizers", response={200: list[TokenizerOut], 401: Problem}, tags=["tokenizers"])
def list_tokenizers(request: HttpRequest):
    """Your BPE tokenizers (trained with your key, account, session or, from a script, your
    address) in the bpe-train playground, newest first, at most 100. Anyone's can be used
    and downloaded by id."""
    return TrainedTokenizer.objects.filter(run__owner__in=owners.acting_tags(request))[:100]


@router.get(
    "/tokenizers/{tokenizer_id}/tokenizer.json",
    response={200: dict[str, Any], READ_PROBLEMS: Problem},
    tags=["tokenizers"],
    url_name="tokenizer_json",
    summary="A trained tokenizer as a Hugging Face tokenizer.json",
    description="Loads with `tokenizers.Tokenizer.from_file` and encodes to the same ids.",
)
def tokenizer_json(request: HttpRequest, tokenizer_id: uuid.UUID) -> HttpResponse:
    from learn.lab.bpe import BPETokenizer
    from learn.lab.bpe_hf import to_hf_json

    found = TrainedTokenizer.objects.filter(pk=tokenizer_id).first()
    if found is None:
        raise ApiProblem(404, f"No tokenizer {tokenizer_id}: GET /api/tokenizers lists yours.")
    response = HttpResponse(
        to_hf_json(BPETokenizer.from_dict(found.data)), content_type="application/json"
    )
    filename = "".join(c if c.isalnum() or c in "-_." else "-" for c in found.name) or "tokenizer"
    response["Content-Disposition"] = f'attachment; filename="{filename}.tokenizer.json"'
    return response
