"""A learner's own pages: my runs, progress through the course, checks graded from their
own runs, and optional accounts (sign up, log in, log out).

Everything works anonymously: a learner is the browser session's owner tag, plus their
account's when signed in (learn.owners). Signing up or logging in moves the session's
runs, collections and answers to the account (``services.adopt_session``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import login, logout
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from learn import checks, ratelimit, services
from learn.chapters import CHAPTERS
from learn.models import CheckAnswer, Run
from learn.playgrounds import PLAYGROUNDS, for_chapter

RUNS_PER_PAGE = 50


# ------------------------------------------------------------------ who and what is theirs


def learner_tags(request: HttpRequest) -> set[str]:
    """The owner tags of this browser (its account, its session) without making a session:
    a first visit owns nothing yet."""
    tags = set()
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        tags.add(f"user:{user.pk}")
    if request.session.session_key:
        tags.add(f"session:{request.session.session_key}")
    return tags


def acting_tag(request: HttpRequest) -> str:
    """The tag new answers are stored under: the account's, else the session's (made now)."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    if not request.session.session_key:
        request.session.save()
    return f"session:{request.session.session_key}"


def latest_runs(tags: set[str], slugs: list[str]) -> dict[str, Run]:
    """Each playground's newest run by these owners (Postgres DISTINCT ON)."""
    if not tags:
        return {}
    rows = (
        Run.objects.filter(owner__in=tags, playground__in=slugs)
        .order_by("playground", "-created_at")
        .distinct("playground")
    )
    return {run.playground: run for run in rows}


def latest_succeeded(tags: set[str], slug: str) -> Run | None:
    if not tags:
        return None
    return Run.objects.filter(owner__in=tags, playground=slug, status=Run.Status.SUCCEEDED).first()


def passed_checks(tags: set[str]) -> set[str]:
    if not tags:
        return set()
    found = CheckAnswer.objects.filter(owner__in=tags, correct=True)
    return set(found.values_list("check_id", flat=True))


@dataclass(frozen=True)
class Progress:
    """How far a learner is through one chapter."""

    playgrounds_run: frozenset[str]  # slugs with a succeeded run
    playgrounds: int
    checks_passed: frozenset[str]
    checks: int


def progress(tags: set[str]) -> dict[str, Progress]:
    """Per chapter slug: which playgrounds the learner ran (succeeded) and checks passed."""
    ran: set[str] = set()
    if tags:
        done = Run.objects.filter(owner__in=tags, status=Run.Status.SUCCEEDED)
        ran = set(done.values_list("playground", flat=True).distinct())
    passed = passed_checks(tags)
    out = {}
    for chapter in CHAPTERS:
        slugs = {pg.slug for pg in for_chapter(chapter.slug)}
        ids = {c.id for c in checks.for_chapter(chapter.slug)}
        out[chapter.slug] = Progress(
            frozenset(ran & slugs), len(slugs), frozenset(passed & ids), len(ids)
        )
    return out


# ------------------------------------------------------------------ what chapter pages add


@dataclass
class CheckView:
    """One check as the page shows it: the run it will be graded against, the last answer."""

    check: checks.Check
    run: Run | None = None
    last: CheckAnswer | None = None
    verdict: checks.Verdict | None = None
    problem: str = ""

    @property
    def playground(self) -> Any:
        return PLAYGROUNDS.get(self.check.playground)

    @property
    def last_answer(self) -> str:
        """The last answer as the learner saw it (an option's text, not its number)."""
        if self.last is None:
            return ""
        if self.check.options and self.last.answer.isdigit():
            options = self.check.options
            return options[int(self.last.answer)] if int(self.last.answer) < len(options) else ""
        return self.last.answer


def check_views(tags: set[str], chapter: str) -> list[CheckView]:
    found = checks.for_chapter(chapter)
    last: dict[str, CheckAnswer] = {}
    if tags:
        for answer in (
            CheckAnswer.objects.filter(owner__in=tags, check_id__in=[c.id for c in found])
            .order_by("check_id", "-created_at")
            .distinct("check_id")
        ):
            last[answer.check_id] = answer
    return [
        CheckView(c, latest_succeeded(tags, c.playground) if c.from_run else None, last.get(c.id))
        for c in found
    ]


def chapter_context(request: HttpRequest, slug: str) -> dict[str, Any]:
    """What a chapter page adds for this learner: their latest run of each playground
    (shown again in its output), the chapter's checks, and their progress."""
    tags = learner_tags(request)
    slugs = [pg.slug for pg in for_chapter(slug)]
    return {
        "latest_runs": latest_runs(tags, slugs),
        "checks": check_views(tags, slug),
        "progress": progress(tags).get(slug),
    }


def home_context(request: HttpRequest) -> dict[str, Any]:
    return {"progress": progress(learner_tags(request))}


# ------------------------------------------------------------------ pages


def my_runs(request: HttpRequest) -> HttpResponse:
    """The learner's runs, newest first, 50 a page."""
    tags = learner_tags(request)
    runs = Run.objects.filter(owner__in=tags) if tags else Run.objects.none()
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    for run in page:
        run.pg = PLAYGROUNDS.get(run.playground)  # type: ignore[attr-defined]
    return render(request, "learn/my_runs.html", {"page": page})


@require_POST
def answer_check(request: HttpRequest, check_id: str) -> HttpResponse:
    """Grade one answer (form field ``answer``; a run check also names ``run``) and keep
    it; answers the check's partial (422 with a sentence when it cannot be graded)."""
    check = checks.BY_ID.get(check_id)
    if check is None:
        return HttpResponse(f"There is no check '{check_id}'.", status=404)
    view = CheckView(check)
    answer = (request.POST.get("answer") or "").strip()
    if check.from_run:
        view.run = owned_run(request, request.POST.get("run"), check.playground)
        if view.run is None:
            view.problem = f"Grade this from a run of your own: {check.how} Then answer here again."
    if not view.problem and not answer:
        view.problem = "Type an answer first." if check.from_run else "Pick one of the answers."
    if not view.problem:
        try:
            if check.from_run:
                assert view.run is not None
                view.verdict = checks.grade_run(check, answer, view.run.result)
            else:
                view.verdict = checks.grade_choice(check, answer)
        except checks.BadAnswer as exc:
            view.problem = str(exc)
    if view.problem:
        return render(request, "learn/checks.html#check", {"cv": view}, status=422)
    assert view.verdict is not None
    view.last = services.record_check_answer(
        acting_tag(request), check.id, answer, correct=view.verdict.correct, run=view.run
    )
    return render(request, "learn/checks.html#check", {"cv": view})


def owned_run(request: HttpRequest, run_id: str | None, playground: str) -> Run | None:
    """The learner's own succeeded run of ``playground`` with this id (None otherwise)."""
    try:
        pk = uuid.UUID(run_id or "")
    except ValueError:
        return None
    tags = learner_tags(request)
    return Run.objects.filter(
        pk=pk, owner__in=tags, playground=playground, status=Run.Status.SUCCEEDED
    ).first()


# ------------------------------------------------------------------ accounts


def next_url(request: HttpRequest) -> str:
    wanted = request.POST.get("next") or request.GET.get("next") or ""
    safe = url_has_allowed_host_and_scheme(wanted, {request.get_host()}, request.is_secure())
    return wanted if wanted and safe else "/"


def sign_in(request: HttpRequest, user: Any) -> int:
    """Log ``user`` in and move this session's runs and answers to them."""
    key = request.session.session_key  # login() gives the session a new key
    login(request, user)
    return services.adopt_session(key, user) if key else 0


def too_many_attempts(request: HttpRequest) -> str:
    """Sign-ups and sign-ins count against the admin's limit per address (learn.ratelimit):
    past it, what to tell the learner; within it, ''."""
    limit = settings.FP_ADMIN_LOGINS_PER_MINUTE_PER_IP
    decision = ratelimit.check("login", ratelimit.client_ip(request), limit=limit)
    if decision.allowed:
        return ""
    return (
        f"Too many sign-in attempts from your address (at most {limit} a minute). "
        f"Try again in {decision.retry_after} s."
    )


def account_page(request: HttpRequest, form_class: type, title: str) -> HttpResponse:
    is_login = form_class is AuthenticationForm
    refused, status = "", 200
    if request.method == "POST":
        refused = too_many_attempts(request)
        # past the limit, the form stays unbound: no password is even checked
        data = None if refused else request.POST
        form = form_class(request, data=data) if is_login else form_class(data)
        if not refused and form.is_valid():
            user = form.get_user() if is_login else form.save()
            sign_in(request, user)
            return redirect(next_url(request))
        status = 429 if refused else 400
    else:
        form = form_class(request) if is_login else form_class()
    context = {"form": form, "title": title, "next": next_url(request), "refused": refused}
    response = render(request, "learn/account.html", context, status=status)
    if refused:
        response["Retry-After"] = "60"
    return response


def signup(request: HttpRequest) -> HttpResponse:
    """A username and a password; no e-mail. The session's runs come along."""
    return account_page(request, UserCreationForm, "Sign up")


def login_page(request: HttpRequest) -> HttpResponse:
    return account_page(request, AuthenticationForm, "Log in")


@require_POST
def logout_page(request: HttpRequest) -> HttpResponse:
    logout(request)
    return redirect("/")
