"""What stands between the internet and the views.

- ``BodyLimit`` (ASGI, wraps the Django app in webapp/asgi.py): refuses a body over
  ``FP_MAX_BODY_BYTES`` before it is read — by its Content-Length, or while a body without
  one streams in — with a 413 (JSON under /api/).
- ``ApiGuard``: who may POST to /api/. An API key (``Authorization: Bearer``) may; a
  browser (it sends ``Origin`` or ``Sec-Fetch-Site`` on every POST, or it holds a session
  cookie) must be same-origin and send the page's CSRF token; a script with no cookies and
  no browser headers may, as the anonymous owner of its address (learn.owners.is_script).
  Also: sign-in attempts to the admin, a few a minute per address.
- ``ApiErrors``: any error page under /api/ that is not JSON yet (Django's 404/405/400/
  500) becomes a ``Problem``: ``{"message": …, "detail": []}`` (htmx keeps its HTML).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import CsrfViewMiddleware
from django.views.csrf import csrf_failure as django_csrf_failure

from learn import owners, ratelimit
from learn.problems import problem_response

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
WRITERS = (
    "The API takes writes from this site's own pages (they send its CSRF token), from API "
    "keys ('Authorization: Bearer fp-…'), and from scripts that send no cookies."
)
GENERIC = {
    400: "The request could not be read (its headers or body are malformed).",
    401: "Sign in or send an API key.",
    403: "Forbidden.",
    413: "The request body is too large.",
    500: "Something went wrong on our side; it is logged. Try again, or tell us what you sent.",
}


def is_api(path: str) -> bool:
    return path.startswith("/api/")


def too_large_message(size: int | None, limit: int) -> str:
    said = f"is {size / 2**20:.1f} MB" if size is not None else "is larger than that"
    return (
        f"The request body {said}; this site accepts at most {limit / 2**20:.0f} MB "
        "(a tokenizer corpus may be up to 20 MB of text)."
    )


class BodyLimit:
    """ASGI: a 413 for a body over ``limit`` bytes, before Django reads any of it."""

    def __init__(self, app: ASGIApp, limit: int | None = None) -> None:
        self.app = app
        self.limit = limit if limit is not None else settings.FP_MAX_BODY_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            size = int(declared) if declared.isdigit() else -1
            if size < 0:
                return await self.refuse(scope, send, 400, "Content-Length is not a number.")
            if size > self.limit:
                return await self.refuse(scope, send, 413, too_large_message(size, self.limit))
            return await self.app(scope, receive, send)
        # No length given (chunked): take at most the limit in, then hand it on.
        buffered: list[Message] = []
        size = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                return await self.refuse(scope, send, 413, too_large_message(None, self.limit))
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        return await self.app(scope, replay, send)

    @staticmethod
    async def refuse(scope: Scope, send: Send, status: int, message: str) -> None:
        if is_api(scope.get("path", "")):
            body = json.dumps({"message": message, "detail": []}).encode()
            kind = b"application/json"
        else:
            body, kind = message.encode(), b"text/plain; charset=utf-8"
        headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _protected(request: HttpRequest) -> None:
    """Stands for a view that is not csrf_exempt when asking Django's CSRF check."""


class ApiGuard:
    """Cross-site and key checks for /api/ writes; a sign-in rate limit for the admin."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.csrf = CsrfViewMiddleware(get_response)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        refused = self.check(request)
        return refused if refused is not None else self.get_response(request)

    def check(self, request: HttpRequest) -> HttpResponse | None:
        if request.method == "POST" and request.path == "/admin/login/":
            return self.limit_admin_login(request)
        if not is_api(request.path):
            return None
        plaintext = owners.bearer_key(request)
        if plaintext is not None:
            if owners.api_key(plaintext) is None:
                return problem_response(
                    401,
                    "This API key is not valid (or was deactivated): send an active key as "
                    "'Authorization: Bearer fp-…', or no Authorization header at all.",
                )
            return None  # a header another site cannot make a browser send
        if request.method not in UNSAFE:
            return None
        fetch_site = request.headers.get("Sec-Fetch-Site", "")
        if fetch_site not in {"", "same-origin", "none"}:
            return problem_response(403, f"Refused a {fetch_site} request. {WRITERS}")
        browser = (
            "Origin" in request.headers
            or fetch_site
            or settings.SESSION_COOKIE_NAME in request.COOKIES
        )
        if not browser:
            return None  # a script: the anonymous owner of its address (learn.api)
        try:
            self.csrf.process_request(request)
            return self.csrf.process_view(request, _protected, (), {})
        except (MultiPartParserError, TooManyFieldsSent, TooManyFilesSent) as exc:
            return problem_response(400, f"The form could not be read ({exc}); post it again.")
        except RequestDataTooBig:
            return problem_response(413, GENERIC[413])

    @staticmethod
    def limit_admin_login(request: HttpRequest) -> HttpResponse | None:
        limit = settings.FP_ADMIN_LOGINS_PER_MINUTE_PER_IP
        decision = ratelimit.check("admin-login", ratelimit.client_ip(request), limit=limit)
        if decision.allowed:
            return None
        return HttpResponse(
            f"Too many sign-in attempts from your address (at most {limit} a minute). "
            f"Try again in {decision.retry_after} s.",
            status=429,
            content_type="text/plain; charset=utf-8",
            headers={"Retry-After": str(decision.retry_after)},
        )


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """settings.CSRF_FAILURE_VIEW: a Problem under /api/, Django's page elsewhere."""
    if not is_api(request.path):
        return django_csrf_failure(request, reason)
    return problem_response(403, f"Refused: {reason} {WRITERS}")


class ApiErrors:
    """Django's own error pages under /api/ (404, 405, 400, 413, 500…) as Problems."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        status = response.status_code
        if not is_api(request.path) or status < 400 or response.streaming:
            return response
        if request.headers.get("HX-Request") == "true":
            return response  # htmx gets HTML on purpose (the form's error partial)
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        if status == 404:
            message = f"Nothing at {request.path}. The API is listed at /api/docs."
        elif status == 405:
            allowed = response.get("Allow", "")
            message = f"{request.method} is not allowed here; use {allowed or 'another method'}."
        else:
            message = GENERIC.get(status, response.reason_phrase or "The request failed.")
        keep = {name: response[name] for name in ("Allow", "Retry-After") if name in response}
        return problem_response(status, message, headers=keep)
