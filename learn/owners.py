"""Who a request acts for: an API key, a signed-in account, the browser's session, or, for
a script with no cookies and no browser headers, its address. The one place that rule lives.

Runs and collections keep their owner as one short string (``Owner.tag``), so "my runs"
is one indexed filter, and a session's runs can move to an account when its learner signs
up (``services.adopt_session``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from learn import ratelimit
from learn.models import ApiKey

KEY_PREFIX = "fp-"


@dataclass(frozen=True)
class Owner:
    kind: Literal["user", "key", "session"]
    id: str
    api_key: ApiKey | None = None  # set when kind == "key"

    @property
    def tag(self) -> str:
        return f"{self.kind}:{self.id}"


def new_key() -> tuple[str, str, str]:
    """A fresh API key: (plaintext, prefix shown in the admin, SHA-256 stored)."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    return plaintext, plaintext[:10], key_hash(plaintext)


def key_hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def bearer_key(request: HttpRequest) -> str | None:
    """The key of an ``Authorization: Bearer …`` header, if there is one."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def api_key(plaintext: str) -> ApiKey | None:
    """The active key with this plaintext (looked up by its hash), its use recorded."""
    found = ApiKey.objects.filter(key_hash=key_hash(plaintext), active=True).first()
    if found is not None:
        ApiKey.objects.filter(pk=found.pk).update(last_used_at=timezone.now())
    return found


def of_request(request: HttpRequest) -> Owner:
    """The owner a request acts for; a browser without a session gets one now."""
    plaintext = bearer_key(request)
    if plaintext is not None:
        key = api_key(plaintext)
        if key is not None:
            return Owner("key", str(key.pk), key)
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return Owner("user", str(user.pk))
    if not request.session.session_key:
        request.session.save()
    return Owner("session", str(request.session.session_key))


def is_script(request: HttpRequest) -> bool:
    """A client with no session cookie and no browser headers (curl, httpx, a notebook).

    It acts as ``ip:<address>``: it holds no cookie another site could ride on, and every
    browser marks its POSTs with ``Origin`` or ``Sec-Fetch-Site`` (webapp.middleware).
    """
    return (
        bearer_key(request) is None
        and settings.SESSION_COOKIE_NAME not in request.COOKIES
        and "Origin" not in request.headers
        and "Sec-Fetch-Site" not in request.headers
    )


def acting_tags(request: HttpRequest) -> set[str]:
    """Every owner tag this request may act as: what it may cancel and list as its own.
    A signed-in learner's session runs stay theirs too, until they are adopted."""
    if is_script(request):
        return {f"ip:{ratelimit.client_ip(request)}"}
    tags = {of_request(request).tag}
    if request.session.session_key:
        tags.add(f"session:{request.session.session_key}")
    return tags


def new_run_owner(request: HttpRequest) -> tuple[str, int]:
    """The owner tag a new run gets, and how many runs a minute that owner may start."""
    if is_script(request):
        return f"ip:{ratelimit.client_ip(request)}", settings.FP_RUNS_PER_MINUTE_PER_OWNER
    owner = of_request(request)
    if owner.api_key is not None:
        return owner.tag, owner.api_key.requests_per_minute
    return owner.tag, settings.FP_RUNS_PER_MINUTE_PER_OWNER
