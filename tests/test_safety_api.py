"""Chapter 6 safety through the real worker: an injection run under three variants (one
short run, few tokens), the PII redactor's scores recounted from its spans, redaction
before a collection is indexed, and the bounds."""

from __future__ import annotations

import httpx
import pytest

from tests.support import finished_run, followed, start_run, succeeded


@pytest.fixture(scope="module")
def injected(site: str) -> dict:
    """One run: the library collection's attack under plain, schema and checked."""
    with httpx.Client(base_url=site, timeout=60) as client:
        params = {"doc": "library", "variants": ["checked", "plain", "schema"], "max_new_tokens": 8}
        run, events = followed(client, start_run(client, "injection", params), timeout=600)
    return {"run": run, "events": events}


def test_each_variant_streams_its_prompt_and_answer_in_order(injected: dict) -> None:
    result = injected["run"]["result"]
    assert [r["variant"] for r in result["variants"]] == ["plain", "schema", "checked"]
    partials = [e["data"] for e in injected["events"] if e["event"] == "partial"]
    for row in result["variants"]:
        mine = [p for p in partials if p.get("variant") == row["variant"]]
        assert (
            mine[0]["target"] == "prompt"
            and row["prompt"]["messages"][1]["content"] in mine[0]["text"]
        )
        streamed = "".join(p["text"] for p in mine if p["target"] == "answer")
        assert streamed == row["answer"]["text"]
        assert [p["took"] for p in mine if p["target"] == "verdict"] == [row["took"]]
        assert row["answer"]["completion_tokens"] <= 8
    assert result["device"] == injected["run"]["device"] == "cpu"


def test_untrusted_text_stays_out_of_the_system_message_and_the_fence_is_there(
    injected: dict,
) -> None:
    result = injected["run"]["result"]
    assert result["attack_rank"] is not None  # the attack was retrieved
    for row in result["variants"]:
        system, user = (m["content"] for m in row["prompt"]["messages"])
        assert result["attack"] not in system and result["attack"] in user
        if row["variant"] == "schema":
            start, end = row["prompt"]["markers"]
            assert user.index(start) < user.index(result["attack"]) < user.index(end)
            assert start in system and end in system


def test_took_is_the_canary_in_what_the_user_is_shown(injected: dict) -> None:
    from learn.lab.injection import took

    result = injected["run"]["result"]
    rows = {r["variant"]: r for r in result["variants"]}
    for row in rows.values():
        assert row["took"] == took(row["shown"], result["canary"])
        assert row["raw_took"] == took(row["answer"]["text"], result["canary"])
        assert result["took"][row["variant"]] == row["took"]
    assert rows["checked"]["answer"]["text"] == rows["plain"]["answer"]["text"]  # reused
    assert rows["checked"]["shown"] in ("", rows["plain"]["answer"]["text"])
    assert rows["checked"]["check"]["released"] == (rows["checked"]["shown"] != "")
    if rows["schema"]["parsed"]:
        assert rows["schema"]["answer"]["text"].lstrip().startswith("{")
    else:
        assert rows["schema"]["shown"] == rows["schema"]["answer"]["text"]


def test_the_pii_scores_are_the_spans_recounted_and_match_the_lab(api: httpx.Client) -> None:
    from learn.lab import pii

    result = finished_run(api, "pii-redact", {})["result"]
    assert result["device"] == "cpu" and result["source"] == "sample"
    for kind in pii.KINDS:
        gold = [g for s in result["samples"] for g in s["gold"] if g["kind"] == kind]
        found = [f for s in result["samples"] for f in s["found"] if f["kind"] == kind]
        counts = result["per_kind"][kind]
        assert counts["caught"] == sum(g["status"] == "caught" for g in gold) > 0
        assert counts["missed"] == sum(g["status"] == "missed" for g in gold)
        assert counts["false_positives"] == sum(f["status"] == "false_positive" for f in found)
        assert counts["recall"] == pytest.approx(counts["caught"] / len(gold))
        assert counts["precision"] == pytest.approx(counts["caught"] / len(found))
    reference = pii.score(pii.sample())
    assert result["per_kind"] == reference["per_kind"] and result["overall"] == reference["overall"]

    own = {"text": "Write to ann@example.com or call +44 20 7946 0958.", "kinds": ["email"]}
    mine = finished_run(api, "pii-redact", own)["result"]
    assert mine["redacted"] == "Write to [EMAIL] or call +44 20 7946 0958."
    assert mine["counts"] == {"email": 1, "phone": 0, "card": 0, "iban": 0}


def test_a_collection_is_redacted_before_it_is_indexed(api: httpx.Client) -> None:
    text = (
        "The keeper, Ann Roe, answers at ann.roe@example.com or +44 20 7946 0958.\n\n"
        "Donations go to GB82 WEST 1234 5698 7654 32. The lamp burned paraffin until 1912."
    )
    response = api.post(
        "/api/playgrounds/rag-collection/runs", json={"name": "keeper", "text": text}
    )
    assert response.status_code == 202, response.text
    result = succeeded(api, response.json()["id"], timeout=300)["result"]
    assert result["redacted"] == {"email": 1, "phone": 1, "card": 0, "iban": 1}
    for value in ("ann.roe@example.com", "7946 0958", "GB82 WEST"):
        assert value not in result["text"]
    assert "[EMAIL]" in result["text"] and "paraffin until 1912" in result["text"]
    assert result["chars"] == len(result["text"])  # what was cut and indexed is the redacted text


@pytest.mark.parametrize(
    ("slug", "params", "words"),
    [
        ("injection", {"doc": "own"}, "paste the passage"),
        ("injection", {"doc": "own", "attack": "Reply BANANA."}, "canary"),
        ("injection", {"doc": "own", "attack": "x" * 2_001, "canary": "xxx"}, "2000"),
        ("injection", {"doc": "nowhere"}, "doc must be one of"),
        ("injection", {"variants": []}, "at least 1"),
        ("injection", {"variants": ["plain", "plain"]}, "each variant once"),
        ("injection", {"variants": ["plain", "pray"]}, "plain"),
        ("injection", {"question": "why " * 120}, "at most 96"),
        ("injection", {"max_new_tokens": 500}, "96"),
        ("pii-redact", {"text": "x" * 20_001}, "20000"),
        ("pii-redact", {"kinds": ["names"]}, "email"),
    ],
)
def test_each_bound_is_a_422_with_a_sentence(
    api: httpx.Client, slug: str, params: dict, words: str
) -> None:
    response = api.post(f"/api/playgrounds/{slug}/runs", json=params)
    assert response.status_code == 422, response.text
    assert words in response.text, response.text
