"""The public site against hostile input: no 500s, one error format, no cross-site writes,
runs that only their owner can cancel, rate limits, and debug off.

Every error body is checked against the ``Problem`` schema the site documents in its own
OpenAPI (the reference); 429s are proved with owners, keys and addresses of their own so
the rest of the suite stays under the limits tests/conftest.py sets.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from urllib.parse import urlparse

import httpx
import jsonschema
import pytest
from django.urls import path

from tests.conftest import ROOT, VAR

STEP = "/api/playgrounds/bpe-step/runs"  # cheap, and nothing below gets as far as queueing


def boom(request: object) -> None:
    raise ZeroDivisionError("a bug with a secret in its traceback")


# The URLconf of test_with_debug_off_errors_show_no_traceback: a page and an API path that fail.
urlpatterns = [path("boom", boom), path("api/boom", boom)]


@pytest.fixture(scope="module")
def problem_schema(site: str) -> dict:
    return httpx.get(f"{site}/api/openapi.json").json()["components"]["schemas"]["Problem"]


@pytest.fixture
def check(problem_schema: dict):
    def check(response: httpx.Response, status: int) -> dict:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json"), response.text
        body = response.json()
        jsonschema.validate(body, problem_schema)
        assert len(body["message"]) > 20 and "Traceback" not in response.text
        return body

    return check


def browser(site: str, *, origin: str | None = None) -> httpx.Client:
    """A client that behaves as a browser on the site's page: cookies, Origin, token."""
    client = httpx.Client(base_url=site, timeout=30)
    client.get("/")  # the page sets the csrftoken cookie and carries the token
    client.headers.update(
        {
            "Origin": origin or site,
            "Sec-Fetch-Site": "same-origin" if origin is None else "cross-site",
            "X-CSRFToken": client.cookies["csrftoken"],
        }
    )
    return client


def from_address(site: str, address: str) -> httpx.Client:
    """A cookie-less script connecting from another loopback address (its own owner)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=site, timeout=30, transport=transport)


def cancel_all(client: httpx.Client, ids: list[str]) -> None:
    for run_id in ids:
        client.post(f"/api/runs/{run_id}/cancel")


def raw_request(site: str, head: str, chunks: Iterable[bytes] = ()) -> tuple[int, bytes]:
    """Send a request by hand (a Content-Length that lies, a chunked body); the answer."""
    url = urlparse(site)
    with socket.create_connection((url.hostname, url.port), timeout=20) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        for chunk in chunks:
            sock.sendall(chunk)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


BAD_JSON = [
    ("bpe-step", b"\xff", 400, "UTF-8"),
    ("bpe-step", b'{"corpus": "low \\u0000 lower"}', 422, "NUL"),
    ("bpe-step", b"[" * 5000 + b"]" * 5000, 400, "nest"),
    ("bpe-step", b'{"steps": ' + b"9" * 5000 + b"}", 400, "Numbers"),
    ("positions", b'{"rope_base": NaN}', 422, "finite"),
    ("positions", b'{"rope_base": 1e999}', 422, "finite"),
    ("positions", b"[1, 2]", 422, "object"),
]


@pytest.mark.parametrize("case", BAD_JSON)
def test_bad_json_bodies_get_4xx_problems_and_queue_nothing(api, check, services, case) -> None:
    from learn.models import Run

    slug, body, status, said = case
    before = Run.objects.count()
    response = api.post(
        f"/api/playgrounds/{slug}/runs", content=body, headers={"Content-Type": "application/json"}
    )
    assert said in check(response, status)["message"]
    assert Run.objects.count() == before


def test_nul_characters_are_refused_in_forms_and_uploads(api, check, services) -> None:
    form = check(api.post(STEP, data={"corpus": "low\x00er", "steps": "3"}), 422)
    assert form["detail"][0]["field"] == "corpus" and "NUL" in form["message"]
    upload = api.post(
        "/api/playgrounds/bpe-train/runs",
        data={"vocab_size": "300"},
        files={"corpus_file": ("c.txt", b"text then \x00\x01\x02 binary", "text/plain")},
    )
    assert check(upload, 422)["detail"][0]["field"] == "corpus"


def test_strict_json_refuses_what_forms_may_convert(api, check) -> None:
    cases = [
        ("tiled-attention", {"causal": 0}, "causal", "true or false"),
        ("token-cost", {"text": "hi", "price_per_million": False}, "price_per_million", "number"),
        ("analogy", {"a": "king", "b": "man", "c": "woman", "k": "5"}, "k", "integer"),
    ]
    for slug, body, field, hint in cases:
        detail = check(api.post(f"/api/playgrounds/{slug}/runs", json=body), 422)["detail"]
        assert [d["field"] for d in detail] == [field] and hint in detail[0]["message"]
    # a form post's strings are still converted (by from_form and lax validation)
    run = api.post("/api/playgrounds/positions/runs", data={"positions": "16", "dims": "4"})
    assert run.status_code == 202, run.text
    stored = api.get(f"/api/runs/{run.json()['id']}").json()["params"]
    assert stored["positions"] == 16 and stored["dims"] == 4
    cancel_all(api, [run.json()["id"]])


def test_other_content_types_are_refused_not_ignored(api, check) -> None:
    response = api.post(STEP, content=b'{"steps": 3}', headers={"Content-Type": "text/plain"})
    assert "application/json" in check(response, 415)["message"]
    broken = api.post(STEP, content=b"x", headers={"Content-Type": "multipart/form-data"})
    assert "form" in check(broken, 400)["message"]


def test_a_body_over_the_limit_is_refused_before_it_is_read(site, check) -> None:
    from django.conf import settings

    limit = settings.FP_MAX_BODY_BYTES
    started = time.monotonic()
    status, body = raw_request(
        site,
        f"POST {STEP} HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
        f"Content-Length: {200 * 2**20}\nConnection: close\n",
    )  # none of the 200 MB is sent: the answer must come without it
    assert status == 413 and "200.0 MB" in json.loads(body)["message"]
    assert time.monotonic() - started < 5
    mb = b"x" * 2**20
    chunks = (b"%x\r\n%s\r\n" % (len(c), c) for c in [mb] * (limit // 2**20) + [b"y"])
    status, body = raw_request(
        site,
        f"POST {STEP} HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
        "Transfer-Encoding: chunked\nConnection: close\n",
        chunks,
    )  # no length, one byte over, and no final chunk: only a refusal can end this
    assert status == 413 and "at most 22 MB" in json.loads(body)["message"]


def test_a_large_upload_under_the_body_limit_keeps_its_own_message(api, check) -> None:
    upload = api.post(
        "/api/playgrounds/bpe-train/runs",
        data={"vocab_size": "300"},
        files={"corpus_file": ("big.txt", b"a" * (21 * 2**20), "text/plain")},
    )
    body = check(upload, 422)
    assert body["detail"][0]["field"] == "corpus_file" and "20 MB" in body["message"]


def test_every_api_error_is_a_problem(api, check) -> None:
    check(api.get("/api/no-such-thing"), 404)
    assert "GET" in check(api.delete("/api/playgrounds"), 405)["message"]
    missing = "/api/runs/00000000-0000-0000-0000-000000000000"
    check(api.get(missing), 404)
    check(api.get(f"{missing}/neighbours", params={"position": 0}), 404)
    check(api.post(f"{missing}/cancel"), 404)
    assert (
        check(api.get(f"{missing}/neighbours", params={"position": 0, "k": 0}), 422)["detail"][0][
            "field"
        ]
        == "query.k"
    )
    assert check(api.get("/api/runs/not-a-uuid"), 422)["detail"][0]["field"] == "path.run_id"


def test_cross_site_writes_are_refused(api, site, check, services) -> None:
    from learn.models import Run

    before = Run.objects.count()
    evil = browser(site, origin="https://evil.example")
    check(evil.post("/api/playgrounds/positions/runs", data={"positions": "16"}), 403)
    forged = httpx.post(
        f"{site}/api/playgrounds/positions/runs",
        data={"positions": "16"},
        headers={"Origin": "https://evil.example"},
    )  # a form on another site: no cookies, but the browser says where it comes from
    assert "evil.example" in check(forged, 403)["message"]
    fetch = httpx.post(f"{site}{STEP}", json={}, headers={"Sec-Fetch-Site": "cross-site"})
    check(fetch, 403)
    run_id = api.post("/api/playgrounds/positions/runs", json={"positions": 16}).json()["id"]
    check(evil.post(f"/api/runs/{run_id}/cancel"), 403)
    assert Run.objects.count() == before + 1
    cancel_all(api, [run_id])


def queued(owner: str) -> str:
    """A run that stays queued (no job is sent): cancelling it is always possible."""
    from learn.models import Run

    return str(Run.objects.create(playground="positions", params={}, owner=owner).id)


def test_a_browser_session_needs_its_token_and_owns_its_runs(api, site, check, services):
    from learn.models import Run

    page = browser(site)
    created = page.post("/api/playgrounds/positions/runs", data={"positions": "16", "dims": "4"})
    assert created.status_code == 202, created.text
    session = page.cookies["sessionid"]
    assert Run.objects.get(pk=created.json()["id"]).owner == f"session:{session}"
    run_id = queued(f"session:{session}")
    untokened = httpx.Client(base_url=site, cookies={"sessionid": session})
    check(untokened.post(f"/api/runs/{run_id}/cancel"), 403)  # a cookie and no token
    check(api.post(f"/api/runs/{run_id}/cancel"), 403)  # another owner (this address)
    assert page.post(f"/api/runs/{run_id}/cancel").json()["status"] == "cancelled"


def test_scripts_own_their_runs_by_address_and_keys_by_key(api, site, check, services):
    from learn import services as actions
    from learn.models import Run

    created = api.post("/api/playgrounds/positions/runs", json={}).json()["id"]
    assert Run.objects.get(pk=created).owner == "ip:127.0.0.1"
    key, plaintext = actions.create_api_key("security test")
    keyed = httpx.Client(base_url=site, headers={"Authorization": f"Bearer {plaintext}"})
    run_id = queued("ip:127.0.0.1")
    check(keyed.post(f"/api/runs/{run_id}/cancel"), 403)
    check(from_address(site, "127.0.0.5").post(f"/api/runs/{run_id}/cancel"), 403)
    assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200
    created = keyed.post("/api/playgrounds/positions/runs", json={}).json()["id"]
    assert Run.objects.get(pk=created).owner == f"key:{key.pk}"
    own = queued(f"key:{key.pk}")
    check(api.post(f"/api/runs/{own}/cancel"), 403)
    assert keyed.post(f"/api/runs/{own}/cancel").status_code == 200
    bad = httpx.post(f"{site}{STEP}", json={}, headers={"Authorization": "Bearer fp-nope"})
    check(bad, 401)


def test_staff_may_cancel_anyone_s_run(services) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    staff = get_user_model().objects.create_user("security-staff", is_staff=True)
    client = Client(HTTP_HOST="127.0.0.1", enforce_csrf_checks=True)
    client.force_login(staff)
    client.get("/")  # the csrftoken cookie, as a page gives it
    token = client.cookies["csrftoken"].value
    run_id = queued("session:someone-else")
    refused = client.post(f"/api/runs/{run_id}/cancel")  # no token: refused even for staff
    assert refused.status_code == 403
    done = client.post(f"/api/runs/{run_id}/cancel", headers={"X-CSRFToken": token})
    assert done.status_code == 200 and done.json()["status"] == "cancelled"


def test_tokenizers_and_benchmarks_show_only_your_run_ids(api, site, services) -> None:
    from learn.models import Run, TrainedTokenizer

    def tokenizer(owner: str) -> TrainedTokenizer:
        run = Run.objects.create(playground="bpe-train", params={}, owner=owner, status="succeeded")
        return TrainedTokenizer.objects.create(
            name=owner, run=run, vocab_size=256, pretokenizer="gpt2", data={}, corpus_chars=1
        )

    mine, theirs = tokenizer("ip:127.0.0.1"), tokenizer("session:someone-else")
    listed = {t["id"]: t for t in api.get("/api/tokenizers").json()}
    assert str(mine.id) in listed and str(theirs.id) not in listed
    assert str(theirs.run_id) not in json.dumps(listed)
    result = {"model": "minilm", "rows": [], "device": "cpu"}
    runs = [
        Run.objects.create(playground="quantize", params={}, owner=owner, status="succeeded",
                           result=result, device="cpu", finished_at=mine.created_at)
        for owner in ("ip:127.0.0.1", "session:someone-else")
    ]  # fmt: skip
    page = api.get("/benchmarks/").text
    assert str(runs[0].id) in page and str(runs[1].id) not in page
    assert str(runs[1].id)[:8] not in page and page.count("minilm") >= 2


def test_run_creation_is_limited_per_owner_with_retry_after(site, check, services) -> None:
    from learn import services as actions

    _, plaintext = actions.create_api_key("two a minute", requests_per_minute=2)
    keyed = httpx.Client(base_url=site, headers={"Authorization": f"Bearer {plaintext}"})
    ids = [keyed.post("/api/playgrounds/positions/runs", json={}).json()["id"] for _ in range(2)]
    refused = keyed.post("/api/playgrounds/positions/runs", json={})
    assert "2 a minute" in check(refused, 429)["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    cancel_all(keyed, ids)


def test_run_creation_is_limited_per_address(site, check, services) -> None:
    from django.conf import settings

    from learn import ratelimit

    if 60 - time.time() % 60 < 5:
        time.sleep(6)  # fill and test within one window
    for _ in range(settings.FP_RUNS_PER_MINUTE_PER_IP):  # this address's minute, used up
        ratelimit.check("runs-ip", "127.0.0.2", limit=settings.FP_RUNS_PER_MINUTE_PER_IP)
    refused = from_address(site, "127.0.0.2").post("/api/playgrounds/positions/runs", json={})
    assert "per address" in check(refused, 429)["message"]
    assert int(refused.headers["Retry-After"]) >= 1


def test_runs_in_flight_are_capped_per_owner(site, check, services) -> None:
    from django.conf import settings

    from learn import services as actions
    from learn.models import Run

    key, plaintext = actions.create_api_key("busy")
    cap = settings.FP_MAX_ACTIVE_RUNS
    Run.objects.bulk_create(
        Run(playground="positions", params={}, owner=f"key:{key.pk}") for _ in range(cap)
    )  # queued rows only: the worker never sees them
    keyed = httpx.Client(base_url=site, headers={"Authorization": f"Bearer {plaintext}"})
    refused = check(keyed.post("/api/playgrounds/positions/runs", json={}), 429)
    assert f"You have {cap} runs still running" in refused["message"]
    Run.objects.filter(owner=f"key:{key.pk}").update(status="cancelled")


def test_requests_at_the_same_moment_cannot_pass_the_cap_together(site, services) -> None:
    """The count and the insert happen under one per-owner lock."""
    from concurrent.futures import ThreadPoolExecutor

    from django.conf import settings

    from learn import services as actions
    from learn.models import Run

    key, plaintext = actions.create_api_key("racing")
    cap = settings.FP_MAX_ACTIVE_RUNS
    Run.objects.bulk_create(
        Run(playground="positions", params={}, owner=f"key:{key.pk}") for _ in range(cap - 2)
    )  # two places left
    keyed = httpx.Client(base_url=site, headers={"Authorization": f"Bearer {plaintext}"})
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda _: keyed.post("/api/playgrounds/positions/runs", json={}).status_code,
                range(8),
            )
        )
    assert sorted(codes) == [202, 202] + [429] * 6, codes
    for run in Run.objects.filter(owner=f"key:{key.pk}", status__in=Run.ACTIVE):
        actions.cancel_run(run)


def test_admin_sign_in_attempts_are_limited_per_address(site, services) -> None:
    from django.conf import settings

    client = from_address(site, "127.0.0.3")
    client.get("/admin/login/")
    form = {"username": "nobody", "password": "wrong", "csrfmiddlewaretoken": ""}
    form["csrfmiddlewaretoken"] = client.cookies["csrftoken"]
    limit = settings.FP_ADMIN_LOGINS_PER_MINUTE_PER_IP
    if 60 - time.time() % 60 < 10:
        time.sleep(11)
    answers = [client.post("/admin/login/", data=form).status_code for _ in range(limit)]
    assert answers[:limit] == [200] * limit  # the form again, "wrong password"
    last = client.post("/admin/login/", data=form)
    assert last.status_code == 429 and "Retry-After" in last.headers


def test_with_debug_off_errors_show_no_traceback(site, services) -> None:
    from django.test import Client, override_settings

    with override_settings(DEBUG=False, ROOT_URLCONF="tests.test_security"):
        client = Client(HTTP_HOST="127.0.0.1", raise_request_exception=False)
        page = client.get("/boom")
        api = client.get("/api/boom")
    assert page.status_code == 500 and b"Traceback" not in page.content
    assert b"ZeroDivisionError" not in page.content
    assert api.status_code == 500 and api.json()["detail"] == []
    assert "ZeroDivisionError" not in api.json()["message"]
    missing = httpx.get(f"{site}/no-such-page/")  # the running site: no debug 404 page
    assert missing.status_code == 404 and "URLconf" not in missing.text


def test_pages_have_their_css_with_debug_off(api) -> None:
    home = api.get("/")
    assert 'href="/static/css/site.css"' in home.text
    css = api.get("/static/css/site.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_the_secret_key_is_made_once_and_kept_private(services) -> None:
    from django.conf import settings

    path = VAR / "secret_key"
    assert path.read_text().strip() == settings.SECRET_KEY and len(settings.SECRET_KEY) >= 50
    assert path.stat().st_mode & 0o777 == 0o600


def deploy_check(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_DEBUG": "0", "DJANGO_SECRET_KEY": "k" * 20 + "x7Qp" * 10, **env},
        capture_output=True,
        text=True,
    )


def test_check_deploy_is_clean_behind_https_and_says_what_is_missing_without() -> None:
    secure = deploy_check(DJANGO_SECURE="1")
    assert secure.returncode == 0, secure.stdout + secure.stderr
    plain = deploy_check(DJANGO_SECURE="0")
    for warning in ("W004", "W008", "W012", "W016"):
        assert warning in plain.stdout + plain.stderr


def test_openapi_documents_the_run_bodies_and_errors(api) -> None:
    schema = api.get("/api/openapi.json").json()
    generic = schema["paths"]["/api/playgrounds/{slug}/runs"]["post"]
    for status in ("400", "403", "404", "413", "415", "422", "429", "503"):
        ref = generic["responses"][status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/Problem")
    assert len(generic["requestBody"]["content"]["application/json"]["schema"]["anyOf"]) >= 20
    playgrounds = api.get("/api/playgrounds").json()
    for pg in playgrounds:  # one operation per playground, with exactly its schema
        body = schema["paths"][f"/api/playgrounds/{pg['slug']}/runs"]["post"]["requestBody"]
        name = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        documented = schema["components"]["schemas"][name]
        assert documented["properties"].keys() == pg["params_schema"]["properties"].keys()
    neighbours = schema["paths"]["/api/runs/{run_id}/neighbours"]["get"]["responses"]["404"]
    assert neighbours["content"]["application/json"]["schema"]["$ref"].endswith("/Problem")
