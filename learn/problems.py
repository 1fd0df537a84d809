"""The API's one error format, and reading a request's body into a playground's parameters.

Every failure is an ``ApiProblem`` rendered as ``Problem`` JSON, ``{"message": …, "detail":
[{"field": …, "message": …}]}`` (or, for htmx, the form's error partial). A body is read
strictly: JSON is UTF-8 and is not coerced (``"5"`` is not 5; pydantic's parser bounds its
nesting and its numbers, the schemas refuse NaN); forms are converted by each schema's
``from_form``; no text may hold a NUL character (Postgres cannot store one); any other
content type is refused with 415.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render
from pydantic import ValidationError

from learn.labels import capitalised, field_label, form_labels, plain_words
from learn.playgrounds import FormProblem, Playground, PlaygroundParams

JSON = "application/json"
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


class ApiProblem(Exception):
    """A failure answered in the API's one error format, ``Problem`` (``problem_handler``)."""

    def __init__(
        self,
        status: int,
        message: str,
        detail: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message = status, message
        self.detail = detail or []
        self.headers = headers or {}


def problem_response(
    status: int,
    message: str,
    detail: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    """``{"message": …, "detail": [{"field": …, "message": …}]}`` with this status."""
    body = {"message": message, "detail": detail or []}
    return JsonResponse(body, status=status, headers=headers)


def problem_handler(request: HttpRequest, exc: ApiProblem) -> HttpResponse:
    """An ApiProblem as JSON, or for htmx as the form's error partial (same status)."""
    if not is_htmx(request):
        return problem_response(exc.status, exc.message, exc.detail, exc.headers)
    detail = exc.detail or [{"field": "request", "message": exc.message}]
    response = render(request, "learn/form_error.html", {"detail": detail}, status=exc.status)
    for name, value in exc.headers.items():
        response[name] = value
    return response


def invalid(exc: ValidationError, playground: Playground | None = None) -> ApiProblem:
    """Pydantic's errors as a 400 (the body is not JSON) or a 422 naming each field: a
    sentence with the field's form label (``message``) beside its path (``field``)."""
    errors = exc.errors()
    broken = next((e for e in errors if e["type"] == "json_invalid"), None)
    if broken is not None:
        reason = broken["msg"].removeprefix("Invalid JSON: ")
        hint = (
            " Parameters nest a few levels at most."
            if "recursion" in reason
            else " Numbers here are small: see the bounds in params_schema."
            if "number" in reason
            else ""
        )
        return ApiProblem(400, f"The body is not valid JSON: {reason}.{hint}")
    labels = form_labels(playground) if playground else {}
    detail = [field_problem(error, labels) for error in errors]
    return ApiProblem(422, " ".join(d["message"] for d in detail), detail)


def field_problem(error: Any, labels: dict[str, str]) -> dict[str, str]:
    """One pydantic error as ``{"field": "seq_lens.0", "label": …, "message": sentence}``."""
    loc = error["loc"]
    field = ".".join(str(part) for part in loc) or "body"
    words, tail = plain_words(error)
    if not loc:  # a check across fields: its own message is already a sentence
        return {"field": field, "label": "", "message": words}
    label = field_label(str(loc[0]), labels)
    item = next((part for part in loc[1:] if isinstance(part, int)), None)
    subject = f"Value {item + 1} of {label}" if item is not None else capitalised(label)
    return {"field": field, "label": label, "message": f"{subject}{' ' if tail else ': '}{words}"}


def nul_at(value: Any, path: str = "") -> tuple[str, int] | None:
    """The first string holding a NUL character (Postgres text cannot): (field, index)."""
    if isinstance(value, str):
        index = value.find("\x00")
        return (path or "body", index) if index >= 0 else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = nul_at(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def read_params(request: HttpRequest, playground: Playground) -> PlaygroundParams:
    """The body as the playground's parameters: strict JSON (no coercion: ``"5"`` is not 5),
    or a form post, whose strings ``from_form`` converts. Raises ApiProblem."""
    schema = playground.params
    try:
        if request.content_type in FORMS:
            params = schema.model_validate(schema.from_form(request.POST, request.FILES))
        elif request.content_type == JSON or not request.body:
            params = schema.model_validate_json(request.body.decode() or "{}", strict=True)
        else:
            raise ApiProblem(
                415,
                f"Content-Type {request.content_type!r} is not read here: send the parameters "
                "as JSON with 'Content-Type: application/json' (or as a form).",
            )
    except UnicodeDecodeError as exc:
        raise ApiProblem(
            400, f"The body is not UTF-8 (byte {exc.start} is invalid): send JSON as UTF-8."
        ) from None
    except FormProblem as exc:
        label = field_label(exc.field, form_labels(playground))
        detail = [{"field": exc.field, "label": label, "message": str(exc)}]
        raise ApiProblem(422, str(exc), detail) from None
    except ValidationError as exc:
        raise invalid(exc, playground) from None
    except RequestDataTooBig:
        raise ApiProblem(413, "The form is too large: at most 20 MB of text.") from None
    except (MultiPartParserError, TooManyFieldsSent, TooManyFilesSent) as exc:
        raise ApiProblem(400, f"The form could not be read ({exc}); post it again.") from None
    found = nul_at(params.model_dump())
    if found is not None:
        field, index = found
        label = field_label(field.split(".")[0], form_labels(playground))
        message = (
            f"{capitalised(label)} contains a NUL character (U+0000) at character {index}: text "
            "cannot hold one (from a file, that usually means it is not plain text)."
        )
        raise ApiProblem(422, message, [{"field": field, "label": label, "message": message}])
    return params


def is_htmx(request: HttpRequest) -> bool:
    return request.headers.get("HX-Request") == "true"
