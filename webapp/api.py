"""The NinjaAPI: learn's router, one error format (``Problem``) and the documented bodies.

Every failure under /api/ is ``{"message": …, "detail": [{"field": …, "message": …}]}``:
ninja's own validation and 404s are rendered here, Django's own 4xx/5xx pages are turned
into the same by ``webapp.middleware.ApiErrors``.
"""

from __future__ import annotations

import copy
from typing import Any

from django.core.exceptions import (
    BadRequest,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import Http404, HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from ninja import NinjaAPI
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError
from pydantic.json_schema import models_json_schema

from learn.api import router as learn_router
from learn.playgrounds import PLAYGROUNDS
from learn.problems import ApiProblem, problem_handler, problem_response

RUNS_PATH = "playgrounds/{slug}/runs"
FORM_BODY = {"type": "object", "additionalProperties": {"type": "string"}}


class ForwardPassAPI(NinjaAPI):
    def get_openapi_schema(
        self, *, path_prefix: str | None = None, path_params: dict[str, Any] | None = None
    ) -> Any:
        schema = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        prefix = self.get_root_path(path_params or {}) if path_prefix is None else path_prefix
        document_run_bodies(schema, prefix)
        return schema


def document_run_bodies(schema: Any, prefix: str) -> None:
    """The run POST's body: any playground's parameters (anyOf; ``{}`` fits many, so not
    oneOf), and one operation per playground at its concrete path with exactly its schema
    (OpenAPI matches concrete paths before templated ones)."""
    generic = schema["paths"][f"{prefix}{RUNS_PATH}"]["post"]
    public = {slug: pg for slug, pg in PLAYGROUNDS.items() if not pg.hidden}  # not /v1's
    models = list(dict.fromkeys(pg.params for pg in public.values()))
    refs, defs = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
    generic["requestBody"] = {
        "required": False,
        "description": "The playground's parameters; each one's schema is under its own "
        "operation and in `params_schema` of GET /api/playgrounds. No body: the defaults.",
        "content": {
            "application/json": {"schema": {"anyOf": [refs[(m, "validation")] for m in models]}},
            "application/x-www-form-urlencoded": {"schema": FORM_BODY},
            "multipart/form-data": {"schema": FORM_BODY},
        },
    }
    for slug, pg in public.items():
        operation = copy.deepcopy(generic)
        params = operation.get("parameters", [])
        operation["parameters"] = [p for p in params if p["name"] != "slug"]
        operation["operationId"] = f"start_{slug.replace('-', '_')}_run"
        operation["summary"] = f"Start a run: {pg.title}"
        operation["description"] = pg.summary
        body = {"schema": refs[(pg.params, "validation")]}
        operation["requestBody"] = {"required": True, "content": {"application/json": body}}
        schema["paths"][f"{prefix}{RUNS_PATH.replace('{slug}', slug)}"] = {"post": operation}


api = ForwardPassAPI(
    title="Forward Pass API",
    version="1",
    description="Run the playgrounds from scripts: the same jobs as the forms on the lesson "
    "pages. Every error is a `Problem`: a `message` for people and `detail[].field` for "
    "programs. Scripts need no key (their runs belong to their address); with one, send "
    "`Authorization: Bearer fp-…`. Browsers must send the page's CSRF token.",
    docs_url="/docs",
    urls_namespace="api",
)
api.add_router("", learn_router)
api.add_exception_handler(ApiProblem, problem_handler)


@api.exception_handler(NinjaValidationError)
def invalid_parameters(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    """Path and query parameters ninja checked: ``query.k``, ``path.run_id``…"""
    detail = [
        {
            "field": ".".join(str(part) for part in error.get("loc", ())) or "request",
            "message": str(error.get("msg", "invalid")).removeprefix("Value error, "),
        }
        for error in exc.errors
    ]
    message = "; ".join(f"{d['field']}: {d['message']}" for d in detail)
    return problem_response(422, message or "Invalid request.", detail)


@api.exception_handler(Http404)
def not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return problem_response(404, f"Nothing at {request.path}. The API is listed at /api/docs.")


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return problem_response(exc.status_code, exc.message)


@api.exception_handler(RequestDataTooBig)
def too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    return problem_response(413, "The request body is too large: send at most 20 MB of text.")


def unreadable(request: HttpRequest, exc: Exception) -> HttpResponse:
    return problem_response(400, f"The request could not be read: {exc}.")


for unreadable_error in (
    MultiPartParserError,
    TooManyFieldsSent,
    TooManyFilesSent,
    SuspiciousOperation,
    BadRequest,
):
    api.add_exception_handler(unreadable_error, unreadable)
