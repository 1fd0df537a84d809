"""The prompt lab through the real worker: a tiny run with SmolLM2, its streamed rows, its
per-style summary recomputed from the stored items, and every bound refused up front."""

from __future__ import annotations

import httpx
import pytest

from tests.support import followed, start_run

TINY = {"eval_set": "sentiment", "styles": ["zero-shot", "few-shot"], "items": 2, "shots": 1,
        "answer_tokens": 3, "seed": 7}  # fmt: skip


@pytest.fixture(scope="module")
def tiny(site: str) -> dict:
    with httpx.Client(base_url=site, timeout=60) as client:
        run, events = followed(client, start_run(client, "prompt-lab", TINY), timeout=300)
    return {"run": run, "events": events}


def test_a_tiny_run_streams_each_item_and_sums_up_per_style(tiny: dict) -> None:
    from learn.lab.prompting import extract_answer, pick_items, task_sets

    result = tiny["run"]["result"]
    task = task_sets()["sentiment"]
    chosen = pick_items(task, 2, seed=7)
    assert [i["id"] for i in result["items"]] == [i["id"] for i in chosen]
    rows = [e["data"]["row"] for e in tiny["events"] if e["event"] == "partial"]
    assert [(r["number"], r["style"]) for r in rows] == [
        (1, "zero-shot"), (1, "few-shot"), (2, "zero-shot"), (2, "few-shot")
    ]  # fmt: skip
    runs = {(item["number"], r["style"]): r for item in result["items"] for r in item["runs"]}
    for row in rows:  # what streamed is what was stored
        stored = runs[(row["number"], row["style"])]
        assert (row["parsed"], row["correct"], row["tokens"]) == (
            stored["parsed"], stored["correct"], stored["tokens"]
        )  # fmt: skip
    for (number, style), r in runs.items():
        item = result["items"][number - 1]
        assert r["gold"] == item["gold"] == chosen[number - 1]["answer"]
        assert 1 <= r["tokens"] <= TINY["answer_tokens"] and len(r["replies"]) == 1
        assert r["parsed"] == extract_answer(r["replies"][0], "label", task.labels)  # re-parsed
        assert r["correct"] == (r["parsed"] == r["gold"])
        assert r["messages"][-1]["role"] == "user" and item["text"] in r["messages"][-1]["content"]
        assert len(r["messages"]) == (2 if style == "zero-shot" else 4)  # one example: 2 turns
    for row in result["styles"]:
        mine = [r for (_, style), r in runs.items() if style == row["style"]]
        assert row["n"] == 2 and row["correct"] == sum(r["correct"] for r in mine)
        assert 0 <= row["accuracy"] <= 1 and row["accuracy"] == pytest.approx(row["correct"] / 2)
        assert row["mean_tokens"] == pytest.approx(sum(r["tokens"] for r in mine) / 2, abs=0.05)
        assert row["mean_ms"] > 0
    zero, few = result["styles"]
    assert few["mean_prompt_tokens"] > zero["mean_prompt_tokens"]  # the example costs tokens
    assert result["device"] == "cpu" and tiny["run"]["device"] == "cpu"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"items": 21}, "items"),
        ({"items": 0}, "items"),
        ({"k": 6}, "k"),
        ({"shots": 9}, "shots"),
        ({"max_tokens": 300}, "max_tokens"),
        ({"answer_tokens": 33}, "answer_tokens"),
        ({"temperature": 0}, "temperature"),
        ({"styles": []}, "styles"),
        ({"styles": ["pirate"]}, "styles"),
        ({"eval_set": "trivia"}, "eval_set"),
        ({"system_prompt": "y" * 1_001}, "system_prompt"),
        ({"seed": -1}, "seed"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_each_bound_is_a_422_naming_its_field(api: httpx.Client, params: dict, field: str) -> None:
    response = api.post("/api/playgrounds/prompt-lab/runs", json=params)
    assert response.status_code == 422, response.text
    assert any(d["field"].startswith(field) for d in response.json()["detail"]), response.text


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"styles": ["few-shot", "few-shot"]}, "each style once"),
        ({"styles": ["system"]}, "needs a system prompt"),
        (
            {"styles": ["system"], "system_prompt": "x " * 400},
            "400 SmolLM2 tokens; the limit is 200",
        ),
        (
            {
                "styles": ["zero-shot", "few-shot", "chain-of-thought", "self-consistency"],
                "items": 20,
                "k": 5,
                "max_tokens": 256,
            },
            "the limit is 12,000",
        ),
    ],
)
def test_runs_that_cannot_work_or_would_run_too_long_are_refused(
    api: httpx.Client, params: dict, words: str
) -> None:
    response = api.post("/api/playgrounds/prompt-lab/runs", json=params)
    assert response.status_code == 422, response.text
    assert words in response.text
