"""The /v1 API's requests and errors: OpenAI's error body, and a JSON body split into
the fields the web side handles and the parameters of the run that does the work."""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar

from django.http import HttpRequest, JsonResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from learn.playgrounds.serving import CHAT_MODEL, EMBED_MODEL

MODELS = {CHAT_MODEL: "chat-completion", EMBED_MODEL: "embeddings"}  # id -> playground
M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """An answer in OpenAI's error format, with a message a person can act on."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.param, self.code = status, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        fields = {"message": str(self), "type": self.type, "param": self.param}
        return {"error": {**fields, "code": self.code}}

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


class _Fields(BaseModel):
    """The request fields the web side handles itself (the rest go to the run)."""

    model_config = ConfigDict(extra="ignore")
    model: str


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class ChatFields(_Fields):
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    user: str | None = None


class EmbeddingFields(_Fields):
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Literal[384] | None = None  # MiniLM's vectors cannot be shortened here
    user: str | None = None


def openai_param(loc: tuple[Any, ...]) -> str:
    """pydantic's ("messages", 0, "content") as OpenAI's "messages[0].content"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def validated(schema: type[M], body: dict[str, Any]) -> M:
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = openai_param(first["loc"])
        if first["type"] == "extra_forbidden":
            message = f"Unrecognized request argument supplied: {param}"
            raise ApiError(400, message, param=param) from None
        messages = "; ".join(
            f"{openai_param(e['loc']) or 'body'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ApiError(400, f"Invalid request: {messages}.", param=param or None) from None


def read_body(request: HttpRequest, fields: type[M], kind: str) -> tuple[M, dict[str, Any]]:
    """The JSON body split in two: the web side's fields, and the run's parameters."""
    try:
        body = json.loads(request.body or b"")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"The body is not valid JSON ({exc}); send a JSON object.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The body must be a JSON object.")
    if "max_completion_tokens" in body and "max_tokens" not in body:
        body["max_tokens"] = body.pop("max_completion_tokens")
    if not isinstance(body.get("model"), str):
        raise ApiError(400, f"Say which model to use: 'model': '{kind}'.", param="model")
    found = MODELS.get(body["model"])
    if found is None:
        raise ApiError(
            404,
            f"The model '{body['model']}' does not exist; GET /v1/models lists those served here.",
            param="model",
            code="model_not_found",
        )
    if found != MODELS[kind]:
        raise ApiError(400, f"'{body['model']}' cannot serve this endpoint; use '{kind}'.")
    head = validated(fields, body)
    return head, {k: v for k, v in body.items() if k not in fields.model_fields}
