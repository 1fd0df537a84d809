"""The agent playground through the real worker: one short run with SmolLM2 end to end,
and each bound a 422 before anything is queued."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support import followed, read_events, start_run


def test_an_agent_run_streams_its_steps_and_calls_a_real_tool(api: httpx.Client) -> None:
    run_id = start_run(
        api,
        "agent",
        {"task_id": "calculator-1", "max_steps": 2, "tools": True, "constrained": True},
    )
    events = read_events(api, run_id, timeout=300)
    run = api.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "succeeded", run
    result = run["result"]
    steps = result["steps"]
    assert 1 <= len(steps) <= 2 and result["task"] == "What is 347 * 29?"
    streamed = [e["data"]["step"] for e in events if e["event"] == "partial"]
    assert [s["index"] for s in streamed] == [s["index"] for s in steps]  # streamed as made
    for step in steps:  # constrained: every reply is a call of one of the schema's tools
        call = json.loads(step["text"])
        assert set(call) == {"tool", "input"} and step["call"] == {
            "tool": call["tool"],
            "input": call["input"].strip(),
        }
        assert call["tool"] in {*result["tools"], "answer"}
        assert step["tokens"] > 0 and step["ms"] > 0 and step["prompt_tokens"] > 300
    first = steps[0]
    assert first["status"] in {"tool", "tool_error"}  # the first step must use a tool
    if first["call"]["tool"] == "calculator" and first["status"] == "tool":
        from learn.lab.calculator import calculator

        assert first["observation"] == f"Result: {calculator(first['call']['input'])}"
    if first["status"] == "tool":  # a tool worked: the last step must answer, quoting it
        assert len(steps) == 2 and steps[1]["status"] == "answer"
        quoted = first["observation"].removeprefix("Result: ").split()
        assert set(steps[1]["call"]["input"].split()) <= set(quoted)
    assert result["correct"] == (result["answer"] is not None and "10063" in result["answer"])
    assert result["expected"] == "10063" and result["device"] == run["device"]


def test_the_evaluation_scores_each_configuration_on_the_task_set(api: httpx.Client) -> None:
    from learn.lab.agent import is_correct, task_set

    run_id = start_run(api, "agent", {"mode": "evaluate", "eval_tasks": 1})
    run, events = followed(api, run_id, timeout=300)
    result = run["result"]
    item = task_set()["tasks"][0]
    (row,) = result["rows"]
    assert row["id"] == item["id"] and len(row["cells"]) == 4
    streamed = [e["data"]["row"] for e in events if e["event"] == "partial"]
    assert streamed == result["rows"]  # each task's row streamed as it finished
    for cell, summary in zip(row["cells"], result["summary"], strict=True):
        assert cell["correct"] == is_correct(cell["answer"], item)  # recomputed here
        assert summary["solved"] == int(cell["correct"]) and summary["tasks"] == 1
    no_tools = [c for c in row["cells"] if c["config"].startswith("no tools")]
    assert all(c["steps"] == 1 for c in no_tools)  # nothing to call: one answer


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"task": "What is 2 + 2?", "max_steps": 9}, "max_steps"),
        ({"task": "What is 2 + 2?", "max_steps": 0}, "max_steps"),
        ({"task": "x" * 301}, "task"),
        ({"task": "   "}, ""),
        ({}, ""),
        ({"task_id": "no-such-task"}, "task_id"),
        ({"task": "hi", "memory_budget": 4096}, "memory_budget"),
        ({"mode": "evaluate", "eval_tasks": 17}, "eval_tasks"),
        ({"task": "hi", "tool": "python"}, "tool"),
    ],
)
def test_each_bound_is_a_422_with_a_reason(api: httpx.Client, params: dict, field: str) -> None:
    response = api.post("/api/playgrounds/agent/runs", json=params)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(d["field"].startswith(field) for d in detail), response.text
    if not params or params == {"task": "   "}:
        assert "the task is empty" in response.text
