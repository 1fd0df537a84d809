"""A learner's own history and progress: my runs, the latest run back after a reload, share
and run-again links, checks graded from the learner's own runs, optional accounts that
adopt the session's runs. Grading is tested on its own first, then through the running
stack (httpx as a browser), then in headless Chromium."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from learn import checks
from learn.chapters import CHAPTERS
from tests import test_browser
from tests.support import read_events
from tests.test_browser import Chapter, save_screenshot

browser = test_browser.browser  # the fixtures of the browser tests: Chromium, and a tab
page = test_browser.page

HASH = {"text_a": "the cat sat on the mat today", "text_b": "the cat sat on a mat today", "n": 3}


# ------------------------------------------------------------------ grading, on its own


def test_each_written_chapter_ends_with_three_to_five_checks() -> None:
    from learn.playgrounds import PLAYGROUNDS

    for chapter in CHAPTERS:
        found = checks.for_chapter(chapter.slug)
        assert 3 <= len(found) <= 5, chapter.slug
        for check in found:
            if check.from_run:
                assert check.playground in PLAYGROUNDS and check.measure and check.how
            else:
                assert 0 <= check.answer < len(check.options) >= 2


def test_a_run_check_is_right_within_its_tolerance_and_says_what_was_measured() -> None:
    check = checks.BY_ID["inference-kv-speedup"]  # 5 % relative
    right = checks.grade_run(check, "2.3", {"speedup": 2.31})
    assert right.correct and "measured 2.31×; you answered 2.3 — right" in right.message
    wrong = checks.grade_run(check, "2.0×", {"speedup": 2.31})
    assert not wrong.correct and "not quite" in wrong.message and "2.31×" in wrong.message


def test_numbers_are_read_as_a_learner_types_them() -> None:
    assert checks.parse_number("2,31") == 2.31
    assert checks.parse_number("1,024") == 1024
    assert checks.parse_number(" 95 % ") == 95
    with pytest.raises(checks.BadAnswer, match="not a number"):
        checks.parse_number("about two")


def test_hnsw_check_reads_the_first_ef_search_at_recall_095() -> None:
    points = [{"value": v, "recall": r} for v, r in [(10, 0.8), (20, 0.96), (40, 0.99)]]
    result = {"indexes": [{"index": "flat", "points": []}, {"index": "hnsw", "points": points}]}
    check = checks.BY_ID["vector-search-hnsw-ef"]
    assert check.measure is not None and check.measure(result) == 20
    never = checks.grade_run(check, "20", {"indexes": []})
    assert not never.correct and "no answer" in never.message


# ------------------------------------------------------------------ through the running stack


@contextmanager
def as_browser(site: str) -> Iterator[httpx.Client]:
    """Cookies, Origin and the page's CSRF token, as a browser on the site sends them."""
    with httpx.Client(base_url=site, timeout=30) as client:
        client.get("/")
        token = client.cookies["csrftoken"]
        headers = {"Origin": site, "Sec-Fetch-Site": "same-origin", "X-CSRFToken": token}
        client.headers.update(headers)
        yield client


def finished(client: httpx.Client, slug: str, params: dict) -> dict:
    response = client.post(f"/api/playgrounds/{slug}/runs", json=params)
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    assert read_events(client, run_id)[-1]["event"] == "done"
    run = client.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "succeeded", run
    return run


@pytest.fixture
def learner(site: str) -> Iterator[httpx.Client]:
    with as_browser(site) as client:
        yield client


def test_my_runs_lists_this_sessions_runs_and_nobody_elses(learner, site: str) -> None:
    run = finished(learner, "hash-vectors", HASH)
    mine = learner.get("/me/runs/")
    assert mine.status_code == 200 and run["id"] in mine.text
    assert "Hash vectors" in mine.text and "n=3" in mine.text and "succeeded" in mine.text
    with as_browser(site) as stranger:
        assert run["id"] not in stranger.get("/me/runs/").text


def test_the_chapter_shows_the_latest_run_again_after_a_reload(learner) -> None:
    run = finished(learner, "hash-vectors", HASH)
    html = learner.get("/chapters/embeddings/").text
    out = html.split('id="pg-hash-vectors-out"', 1)[1].split("</section>", 1)[0]
    assert f'id="run-{run["id"]}"' in out
    exact = f"{run['result']['exact_jaccard']:.4f}"
    assert exact in out  # the stored result, rendered by the playground's template


def test_a_run_page_has_a_share_link_and_a_run_again_link(learner, site: str) -> None:
    run = finished(learner, "hash-vectors", HASH)
    with httpx.Client(base_url=site) as anyone:  # readable by id, without the cookie
        page = anyone.get(f"/runs/{run['id']}/").text
    assert f"{site}/runs/{run['id']}/" in page and "Copy link" in page
    rerun = re.search(r'class="rerun" href="([^"]+)"', page)
    assert rerun is not None
    url = rerun.group(1).replace("&amp;", "&")
    assert url.startswith("/chapters/embeddings/?") and url.endswith("#pg-hash-vectors")
    assert "n=3" in url and "text_a=the+cat+sat" in url


def test_a_check_is_graded_right_and_wrong_from_the_learners_run(learner, site: str) -> None:
    run = finished(learner, "hash-vectors", HASH)
    exact = run["result"]["exact_jaccard"]
    url = "/checks/embeddings-jaccard/answer"
    right = learner.post(url, data={"run": run["id"], "answer": f"{exact:.3f}"})
    assert right.status_code == 200 and "— right" in right.text, right.text
    assert f"measured {exact:.3f}" in right.text
    wrong = learner.post(url, data={"run": run["id"], "answer": f"{exact + 0.2:.3f}"})
    assert wrong.status_code == 200 and "not quite" in wrong.text
    home = learner.get("/").text
    assert re.search(r'data-chapter="embeddings">Your progress: 1 of 3 playgrounds, .*1 of 4', home)
    with as_browser(site) as stranger:  # someone else's run grades nothing
        refused = stranger.post(url, data={"run": run["id"], "answer": f"{exact:.3f}"})
    assert refused.status_code == 422 and "run of your own" in refused.text


def test_answers_that_cannot_be_graded_get_a_sentence_not_a_grade(learner) -> None:
    run = finished(learner, "hash-vectors", HASH)
    bad = learner.post("/checks/embeddings-jaccard/answer", data={"run": run["id"], "answer": "?"})
    assert bad.status_code == 422 and "is not a number" in bad.text
    choice = learner.post("/checks/embeddings-cosine-dot/answer", data={"answer": "7"})
    assert choice.status_code == 422 and "Pick one of the answers" in choice.text
    assert learner.post("/checks/no-such-check/answer", data={"answer": "1"}).status_code == 404
    conceptual = learner.post("/checks/embeddings-cosine-dot/answer", data={"answer": "0"})
    assert conceptual.status_code == 200 and "— right" in conceptual.text


def sign_up(client: httpx.Client, username: str) -> httpx.Response:
    form = {"username": username, "password1": "a long pass phrase 42", "password2": ""}
    form["password2"] = form["password1"]
    return client.post("/accounts/signup/", data=form)


def test_signing_up_moves_the_sessions_runs_and_answers_to_the_account(learner, site) -> None:
    from learn.models import CheckAnswer, Run

    run = finished(learner, "hash-vectors", HASH)
    learner.post("/checks/embeddings-cosine-dot/answer", data={"answer": "0"})
    name = f"learner{run['id'][:8]}"
    assert sign_up(learner, name).status_code == 302
    owner = Run.objects.get(pk=run["id"]).owner
    assert owner.startswith("user:")
    assert CheckAnswer.objects.filter(owner=owner, check_id="embeddings-cosine-dot").exists()
    with as_browser(site) as elsewhere:  # another browser, the same account
        assert run["id"] not in elsewhere.get("/me/runs/").text
        form = {"username": name, "password": "a long pass phrase 42"}
        assert elsewhere.post("/accounts/login/", data=form).status_code == 302
        assert run["id"] in elsewhere.get("/me/runs/").text
        elsewhere.headers["X-CSRFToken"] = elsewhere.cookies["csrftoken"]  # new after login
        assert elsewhere.post("/accounts/logout/").status_code == 302
        assert run["id"] not in elsewhere.get("/me/runs/").text


def test_a_wrong_password_is_refused_with_a_message(learner) -> None:
    form = {"username": "nobody-here", "password": "wrong"}
    refused = learner.post("/accounts/login/", data=form)
    assert refused.status_code == 400 and "correct username and password" in refused.text


# ------------------------------------------------------------------ in the browser


@pytest.mark.browser
def test_in_the_browser_a_run_comes_back_after_a_reload_and_a_check_is_graded(page, site):
    chapter = Chapter(page, site, "embeddings")
    pg = chapter.playground("hash-vectors").run(n=3)
    run_id = pg.locator(".run").get_attribute("id").removeprefix("run-")
    page.reload()
    pg.locator(f"#run-{run_id} .status.succeeded").wait_for()
    check = page.locator("#check-embeddings-jaccard")
    check.locator("input[name=answer]").fill("5")
    check.get_by_role("button", name="Check").click()
    page.locator("#check-embeddings-jaccard .verdict.wrong").wait_for()
    exact = pg.locator("tr:has-text('exact (sets') td").nth(1).inner_text()
    check = page.locator("#check-embeddings-jaccard")
    check.locator("input[name=answer]").fill(exact)
    check.get_by_role("button", name="Check").click()
    page.locator("#check-embeddings-jaccard .verdict.right").wait_for()
    save_screenshot(page.locator("#checks"), "embeddings-checks")
    page.goto(f"{site}/me/runs/")
    assert page.locator(f"a[href='/runs/{run_id}/']").count() == 1
    save_screenshot(page, "my-runs", full_page=True)
    page.goto(f"{site}/runs/{run_id}/")
    page.get_by_role("link", name="Run again with these settings").click()
    page.locator("#pg-hash-vectors form[data-prefilled]").wait_for()
    assert page.locator("#pg-hash-vectors input[name=n]").input_value() == "3"
    chapter.finish()


@pytest.mark.browser
def test_in_the_browser_signing_up_keeps_the_runs(page, site: str) -> None:
    Chapter(page, site, "embeddings").playground("hash-vectors").run()
    page.goto(f"{site}/me/runs/")
    runs = page.locator(".runs-table tbody tr").count()
    page.get_by_role("link", name="sign up").click()
    page.fill("input[name=username]", f"browser{abs(hash(page)) % 10**8}")
    page.fill("input[name=password1]", "a long pass phrase 42")
    page.fill("input[name=password2]", "a long pass phrase 42")
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(f"{site}/me/runs/")
    assert page.locator(".runs-table tbody tr").count() == runs >= 1
    assert page.get_by_role("button", name="Log out").is_visible()
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than it
    for path in ("/me/runs/", "/accounts/login/"):
        page.goto(site + path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    save_screenshot(page, "my-runs-390", full_page=True)


def test_sign_in_attempts_are_limited_per_address(site: str) -> None:
    from django.conf import settings

    limit = settings.FP_ADMIN_LOGINS_PER_MINUTE_PER_IP
    transport = httpx.HTTPTransport(local_address="127.0.0.9")  # its own address, own count
    with httpx.Client(base_url=site, transport=transport) as c:
        c.get("/accounts/login/")
        c.headers["X-CSRFToken"] = c.cookies["csrftoken"]
        form = {"username": "nobody", "password": "wrong"}
        if 60 - time.time() % 60 < 10:  # the count is per minute: don't start as one turns
            time.sleep(11)
        codes = [c.post("/accounts/login/", data=form).status_code for _ in range(limit + 1)]
    assert codes == [400] * limit + [429]


def test_a_run_again_link_carries_a_json_field_as_its_text() -> None:
    import json

    from learn.templatetags.learn_tags import form_pairs

    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    pairs, left_out = form_pairs({"answer_schema": schema, "n": 2})
    assert json.loads(dict(pairs)["answer_schema"]) == schema and dict(pairs)["n"] == "2"
    assert left_out == []
