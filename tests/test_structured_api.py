"""Structured output through the real worker: free vs schema-constrained SmolLM2 answers,
re-validated here with jsonschema; every bound a 422 before anything is queued."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from tests.support import followed, start_run

VERDICT = {  # short answers, so the run fits a few seconds of CPU
    "type": "object",
    "properties": {
        "rating": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        "verdict": {"type": "string", "enum": ["buy", "avoid"]},
    },
    "required": ["rating", "verdict"],
    "additionalProperties": False,
}


def _nested(depth: int) -> dict:
    """An object schema ``depth`` objects deep."""
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


def test_constrained_answers_all_validate_and_stream_as_made(api: httpx.Client) -> None:
    params = {"answer_schema": VERDICT, "prompt": "Rate a cheap umbrella that broke in a week.",
              "n": 2, "max_new_tokens": 40, "temperature": 0.9, "seed": 7}  # fmt: skip
    run, events = followed(api, start_run(api, "structured-output", params), timeout=300)
    result = run["result"]
    answers = result["answers"]
    assert [(a["side"], a["index"]) for a in answers] == [
        ("plain", 0), ("constrained", 0), ("plain", 1), ("constrained", 1)
    ]  # fmt: skip
    for a in answers:
        streamed = "".join(
            e["data"]["text"] for e in events
            if e["event"] == "partial" and e["data"].get("event") == "text"
            and (e["data"]["side"], e["data"]["index"]) == (a["side"], a["index"])
        )  # fmt: skip
        assert streamed == a["text"]
        try:  # the reference: jsonschema on the text, here in the test
            jsonschema.validate(json.loads(a["text"]), VERDICT)
            valid = True
        except (ValueError, jsonschema.ValidationError):
            valid = False
        assert a["valid"] is valid, a
        if a["side"] == "constrained":
            assert valid and a["stop_reason"] == "grammar" and a["mask_ms"] > 0, a
    summary = result["summary"]
    assert summary["constrained"]["valid_share"] == 1.0
    plain = [a for a in answers if a["side"] == "plain"]
    assert summary["plain"]["valid_share"] == sum(a["valid"] for a in plain) / len(plain)
    assert summary["constrained"]["mask_ms_per_token"] > 0
    assert result["device"] == run["device"] and result["engine"].startswith("llguidance")


def _props(n: int) -> dict:
    return {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(n)}}


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"answer_schema": _props(21)}, "21 properties"),
        ({"answer_schema": _nested(4)}, "4 levels"),
        ({"answer_schema": {"type": "object", "properties": {"a": {"type": 5}}}}, "not valid JSON"),
        ({"answer_schema": {"type": "strin"}}, "not valid JSON Schema"),
        ({"answer_schema": "{'type': 'object'}"}, "not valid JSON"),
        ({"answer_schema": {"type": "string", "format": "datex"}}, "engine cannot use"),
        ({"answer_schema": {"$ref": "#/$defs/a", "$defs": {"a": {}}}}, "$ref"),
        ({"n": 21}, ""),
        ({"n": 0}, ""),
        ({"max_new_tokens": 1000}, ""),
        ({"prompt": "x" * 601}, ""),
        ({"prompt": "   "}, "empty"),
        ({"prompt": "Ω" * 590}, "1180 SmolLM2 tokens"),  # 590 characters, 2 tokens each
    ],
)
def test_each_bound_is_a_422_with_a_reason(api: httpx.Client, params: dict, words: str) -> None:
    response = api.post("/api/playgrounds/structured-output/runs", json=params)
    assert response.status_code == 422, response.text
    field = next(iter(params))
    detail = response.json()["detail"]
    assert any(d["field"].startswith(field) for d in detail), detail
    assert words in response.text, response.text


def test_the_example_schemas_are_within_the_bounds(api: httpx.Client) -> None:
    from learn.lab.json_schema import EXAMPLES, schema_problem

    for key, example in EXAMPLES.items():
        assert schema_problem(example["schema"]) is None, key
    html = api.get("/chapters/rag-agents/").text
    assert 'id="pg-structured-output"' in html
    assert html.count("data-example=") == len(EXAMPLES)
