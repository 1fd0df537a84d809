"""Issue 14's playground fixes, as a learner meets them: the temperature slider shows the
distribution it names, one status badge that moves queued → running → succeeded, generated
text shown once, validation messages in the form's words, progress in words, the API docs
offline. Browser tests use the helpers of tests/test_browser.py."""

from __future__ import annotations

import math
import re

import httpx
import pytest

from tests import test_browser
from tests.support import finished_run, read_events, start_run
from tests.test_browser import Chapter, save_screenshot

browser, page = test_browser.browser, test_browser.page  # the browser tests' fixtures

HTMX = {"HX-Request": "true"}
PYDANTIC_WORDS = ("Input should", "after validation", "unable to parse", "body:")


def test_the_temperature_slider_shows_softmax_of_logits_over_t(page, site: str, api) -> None:
    chapter = Chapter(page, site, "transformers")
    attention = chapter.playground("attention").run(timeout=120_000)
    run_id = attention.locator(".run").get_attribute("id").removeprefix("run-")
    stored = api.get(f"/api/runs/{run_id}").json()["result"]["next"]
    temps = stored["temperatures"]
    slider, label = (
        attention.locator("[data-temperature]"),
        attention.locator("[data-temperature-label]"),
    )
    assert label.inner_text() == "1.00"  # it opens on the model's own distribution
    bars = """() => Chart.getChart(document.querySelector(
      '#pg-attention canvas[data-chart=next-token]')).data.datasets[0].data"""
    shown = {}
    for stop, t in enumerate(temps):
        slider.fill(str(stop))
        assert float(label.inner_text()) == pytest.approx(t)
        key = next(k for k in stored["probs"] if float(k) == t)
        shown[t] = page.evaluate(bars)
        assert shown[t] == stored["probs"][key]
    # softmax(l / T): log(p_0 / p_1) · T = l_0 - l_1 is the same at every T
    gaps = [math.log(shown[t][0] / shown[t][1]) * t for t in temps]
    assert max(gaps) - min(gaps) < 0.02 * max(1.0, abs(gaps[0])) + 1e-3
    # cooler is sharper: the top token's probability falls as T rises
    tops = [shown[t][0] for t in temps]
    assert tops == sorted(tops, reverse=True) and tops[0] > tops[-1]
    chapter.finish()


def test_one_status_badge_moves_to_running_and_the_text_is_shown_once(page, site: str) -> None:
    chapter = Chapter(page, site, "transformers")
    generate = chapter.playground("generate").start(max_new_tokens=24)
    generate.locator(".generated .tok-new").first.wait_for(timeout=60_000)  # tokens stream
    badge = generate.locator(".run-head .status")
    assert badge.inner_text() in {"running", "succeeded"}  # never "queued" once tokens arrive
    generate.succeeded(timeout=120_000)
    assert badge.count() == 1 and badge.inner_text() == "succeeded"
    final = generate.locator(".generated-final")
    text = final.inner_text().strip()
    assert text and generate.locator(".generated").is_hidden()
    assert generate.root.inner_text().count(text) == 1  # the final text, once
    save_screenshot(generate.root, "generate-once")
    chapter.finish()


def test_validation_messages_name_the_form_label(api: httpx.Client) -> None:
    runs = "/api/playgrounds/{}/runs"
    # a form post (htmx): the message names "sequence lengths", as the form does
    form = api.post(runs.format("tiled-attention"), data={"seq_lens": "128, abc"}, headers=HTMX)
    assert form.status_code == 422, form.text
    assert "sequence lengths" in form.text and "whole number" in form.text
    assert not any(words in form.text for words in PYDANTIC_WORDS)
    # JSON: the path for programs beside the sentence for people
    body = api.post(runs.format("tiled-attention"), json={"seq_lens": ["x"]}).json()
    assert [d["field"] for d in body["detail"]] == ["seq_lens.0"]
    assert body["detail"][0]["label"] == "sequence lengths"
    assert body["detail"][0]["message"].startswith("Value 1 of sequence lengths must be")
    few = api.post(runs.format("embed"), json={"texts": ["only one"]}).json()
    assert few["detail"][0]["field"] == "texts"
    assert few["detail"][0]["message"] == "Texts needs at least 2 values; you gave 1."
    big = api.post(runs.format("generate"), json={"max_new_tokens": 999}).json()
    assert big["message"] == "Max new tokens must be less than or equal to 256 (you sent 999)."
    for answer in (few, big, body):
        assert not any(words in str(answer) for words in PYDANTIC_WORDS)


def test_a_check_across_fields_has_no_body_prefix(api: httpx.Client) -> None:
    bad = api.post("/api/playgrounds/paged-kv/runs", json={"requests": 2, "sharers": 3})
    assert bad.status_code == 422
    assert not bad.json()["message"].startswith("body")
    html = api.post(
        "/api/playgrounds/paged-kv/runs", data={"requests": "2", "sharers": "3"}, headers=HTMX
    )
    assert "sharers cannot exceed" in html.text and "<code>body</code>" not in html.text


def test_compression_progress_names_each_method_once(api: httpx.Client) -> None:
    run_id = start_run(api, "compression", {"n": 2000, "d": 16, "queries": 20})
    said = [
        e["data"].get("message", "") for e in read_events(api, run_id) if e["event"] == "progress"
    ]
    steps = [m for m in said if "smaller" in m]
    assert len(steps) == len(set(steps)) >= 4, said  # "pq done" twice no more
    assert any(m.startswith("product quantization, ") for m in steps), steps


def test_quantize_progress_reports_inside_each_variant(api: httpx.Client) -> None:
    params = {"model": "minilm", "variants": ["fp32", "int8-weight"], "sentences": 32}
    run = finished_run(api, "quantize", params)
    events = read_events(api, run["id"])
    said = [e["data"]["message"] for e in events if e["event"] == "progress"]
    assert any("MiniLM in" in m and "converting" in m for m in said), said
    for variant in ("fp32", "int8 weight-only"):  # each variant says what it is doing
        mine = [m for m in said if m.startswith(f"MiniLM in {variant}")]
        assert any("embedding 32 texts: batch 1/1" in m for m in mine), said
        assert any("timing 1 batch against fp32" in m for m in mine), said


def test_the_form_hint_names_the_device(page, site: str) -> None:
    health = httpx.get(f"{site}/healthz").json()
    devices = {w["device"] for w in health["live_workers"]}
    Chapter(page, site, "inference")
    hint = page.locator("#pg-kv-cache .hint").inner_text()
    assert "queue" not in hint
    assert ("a GPU (CUDA)" in hint) == ("cuda" in devices)
    assert ("the CPU" in hint) == (devices == {"cpu"})


def test_the_api_docs_render_offline(page, site: str) -> None:
    page.goto(f"{site}/api/docs")
    page.locator(".opblock").first.wait_for(timeout=20_000)  # Swagger UI drew the operations
    assert page.locator(".opblock").count() > 10
    assert "/api/playgrounds/{slug}/runs" in page.inner_text("body")
    save_screenshot(page, "api-docs", full_page=False)
    assert not page.foreign_hosts and not page.console_errors  # nothing from a CDN


def test_the_moe_capacity_field_takes_a_quarter_step(page, site: str) -> None:
    Chapter(page, site, "inference")
    field = page.locator("#pg-moe input[name=capacity_factor]")
    field.fill("1.25")
    assert field.evaluate("(el) => el.checkValidity()")


def test_split_characters_show_as_their_bytes_never_twice() -> None:
    from learn.lab.tokenize import compare
    from workers.modelcache import reference_tokenizer

    text = "😀 Über"
    (row,) = compare(text, [reference_tokenizer("smollm2")])
    shown = [p[4] for p in row["pieces"]]
    assert "".join(shown).count("😀") == 0 and "<F0>" in "".join(shown)  # 4 bytes, 3 tokens
    # every byte of the text appears once, as text or as <XX>
    as_bytes = b"".join(
        bytes.fromhex(s[1:-1]) if s.startswith("<") else s.encode()
        for p in shown
        for s in re.findall(r"<[0-9A-F]{2}>|[^<]+", p)
    )
    assert as_bytes == text.encode("utf-8")
