"""What a playground is: its parameters (with hard bounds), its handler, where it runs.

One registry, filled by the chapter modules next to this one. An entry names its handler
by a dotted path (``"workers.handlers.tokens:bpe_train"``): the worker imports it, the web
process never does, so forms and API validate without loading any compute code.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from ninja import Schema
from pydantic import Field

from learn.lab.models import cache_dir

if TYPE_CHECKING:
    from django.core.files.uploadedfile import UploadedFile

    from learn.models import Run


Seed = Annotated[int, Field(ge=0, le=2**31 - 1, description="random seed")]


class FormProblem(ValueError):
    """A form post that cannot even be read (e.g. an upload that is not text)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def uploaded_text(field: str, upload: UploadedFile, max_bytes: int) -> str:
    """An uploaded file's text: ``FormProblem`` on ``field`` when it is larger than
    ``max_bytes`` (a whole number of MiB) or not UTF-8."""
    if upload.size is not None and upload.size > max_bytes:
        raise FormProblem(
            field, f"The file is larger than {max_bytes // 2**20} MB; upload less text."
        )
    try:
        return upload.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormProblem(
            field, f"The file is not UTF-8 text (byte {exc.start} is invalid)."
        ) from exc


class PlaygroundError(Exception):
    """A failure whose message is meant for the learner (bad data, nothing to do)."""


class PlaygroundParams(Schema):
    """Base for playground parameters; unknown fields are refused, not ignored."""

    # NaN and infinity are no parameter (and Postgres' JSON cannot store them)
    model_config = {"extra": "forbid", "allow_inf_nan": False}

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        """A form post's fields as the JSON body a script would send. A true/false field is
        a checkbox: browsers send "on" when it is ticked and nothing when it is not."""
        data: dict[str, Any] = {k: form.get(k) for k in form if k != "csrfmiddlewaretoken"}
        for name, field in cls.model_fields.items():
            if field.annotation is bool:
                data[name] = form.get(name) == "on"
        return data

    def stored(self) -> dict[str, Any]:
        """What goes into Run.params (large inputs are kept elsewhere, see ``attach``)."""
        return self.model_dump()

    def attach(self, run: Run) -> None:
        """Store what ``stored`` left out, in the same transaction as the run."""

    @classmethod
    def restored(cls, run: Run) -> dict[str, Any]:
        """The body that validates to this run's parameters again (``stored`` + ``attach``)."""
        return dict(run.params)

    def collections(self) -> list[str]:
        """Ids of the document collections these parameters name (the API checks that the
        requester may use each one)."""
        return []


class LargeTextParams(PlaygroundParams):
    """Parameters with one large text (a corpus, an upload) that is kept beside the run
    (``Corpus``), not in ``Run.params``: the run keeps only its length."""

    large_field: ClassVar[str] = "text"

    def large_text(self) -> str | None:
        return getattr(self, self.large_field)

    def source_name(self) -> str:
        return "pasted"

    def stored(self) -> dict[str, Any]:
        params = self.model_dump(exclude={self.large_field})
        if self.large_text() is not None:
            params[f"{self.large_field}_chars"] = len(self.large_text() or "")
        return params

    def attach(self, run: Run) -> None:
        from learn.models import Corpus

        if self.large_text() is not None:
            Corpus.objects.create(run=run, text=self.large_text(), source=self.source_name())

    @classmethod
    def restored(cls, run: Run) -> dict[str, Any]:
        params = dict(run.params)
        if params.pop(f"{cls.large_field}_chars", None) is not None:
            params[cls.large_field] = run.corpus.text
        return params


def split_list(raw: str | None) -> list[str]:
    """A form field of comma- or line-separated items, stripped, empties dropped."""
    return [part.strip() for part in (raw or "").replace("\n", ",").split(",") if part.strip()]


def number_list(raw: str | None) -> list[str]:
    """A form's "256, 512 1024" as ["256", "512", "1024"] (the schema checks each)."""
    return split_list((raw or "").replace(" ", ","))


def kept_folder(keeps: str, run_id: str | uuid.UUID) -> Path:
    """``<model cache>/<keeps>/<run id>/``: files a run keeps beside its result (a model, an
    adapter), in the model cache that web and workers share."""
    return cache_dir() / keeps / str(uuid.UUID(str(run_id)))


@dataclass(frozen=True)
class Playground:
    slug: str
    title: str
    chapter: str
    summary: str
    params: type[PlaygroundParams]
    handler: str  # "package.module:function", imported by the worker only
    queue: str = "cpu"  # "gpu" when it uses a model: GPU workers take it first
    time_limit: int = 120  # seconds; the worker stops it after this
    live: bool = False  # its template has `live` (shown while running) and `partial` parts
    uploads: bool = False  # its form sends a file (multipart)
    hidden: bool = False  # no lesson page or form: a backend for another API (e.g. /v1)
    keeps: str = ""  # its runs keep files in <model cache>/<keeps>/<run id>/ (see kept_folder)

    def kept_folder(self, run_id: str | uuid.UUID) -> Path | None:
        """Where a run keeps files beside its result (``kept_folder`` below); deleted with
        the run. None: it keeps none."""
        return kept_folder(self.keeps, run_id) if self.keeps else None

    @property
    def template(self) -> str:
        return f"playgrounds/{self.slug}.html"

    @property
    def form_template(self) -> str:
        return f"{self.template}#form"

    @property
    def result_template(self) -> str:
        return f"{self.template}#result"

    @property
    def live_template(self) -> str:
        return f"{self.template}#live"

    @property
    def partial_template(self) -> str:
        return f"{self.template}#partial"


PLAYGROUNDS: dict[str, Playground] = {}


def register(*playgrounds: Playground) -> None:
    """Add a chapter's playgrounds to the registry (each slug once)."""
    for pg in playgrounds:
        if pg.slug in PLAYGROUNDS:
            raise ValueError(f"playground '{pg.slug}' is registered twice")
        PLAYGROUNDS[pg.slug] = pg


def for_chapter(chapter: str) -> list[Playground]:
    """The chapter's playgrounds shown on its page (hidden ones are left out)."""
    return [pg for pg in PLAYGROUNDS.values() if pg.chapter == chapter and not pg.hidden]
