"""The agent loop's mechanics with a scripted model (a unit test of the loop, not of
SmolLM2): tool calls run and their results come back, failures are steps not crashes, the
step limit holds, memory folds old steps within the budget; the task set is checkable."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable

import pytest

from learn.lab.agent import (
    ANSWER,
    MAX_STEPS,
    Reply,
    Tool,
    best_passage,
    call_schema,
    date_tool,
    is_correct,
    parse_call,
    prompt_prefix,
    run_agent,
    standard_tools,
    task_set,
    task_today,
)
from learn.lab.calculator import evaluate
from learn.lab.units import convert

TODAY = dt.date(2025, 3, 14)


class Script:
    """A ``complete`` that replies with the given texts in turn and records what it saw."""

    def __init__(self, replies: Iterable[str]) -> None:
        self.replies = list(replies)
        self.seen: list[tuple[list[dict[str, str]], dict | None]] = []

    def __call__(self, messages: list[dict[str, str]], schema: dict | None) -> Reply:
        self.seen.append(([dict(m) for m in messages], schema))
        text = self.replies.pop(0) if self.replies else '{"tool": "answer", "input": "?"}'
        return Reply(text, len(text.split()), 1.0)


def call(tool: str, given: str) -> str:
    return json.dumps({"tool": tool, "input": given})


def words(messages: list[dict[str, str]]) -> int:
    """A stand-in token count: words in every turn."""
    return sum(len(m["content"].split()) for m in messages)


def test_a_tool_call_runs_and_its_result_reaches_the_next_prompt() -> None:
    script = Script([call("calculator", "347 * 29"), call(ANSWER, "10063")])
    run = run_agent("What is 347 * 29?", standard_tools(TODAY), script, max_steps=4)
    assert [s.status for s in run.steps] == ["tool", "answer"]
    assert run.steps[0].observation == "Result: 10063"
    assert run.answer == "10063" and run.stopped == "answer"
    second_prompt = script.seen[1][0]
    assert second_prompt[-1] == {"role": "user", "content": "Result: 10063"}
    assert second_prompt[-2]["content"] == call("calculator", "347 * 29")


def test_constrained_steps_get_the_schema_and_the_first_must_use_a_tool() -> None:
    tools = standard_tools(TODAY)
    script = Script([call("units", "42 km to mi"), call(ANSWER, "26.1 mi")])
    run_agent("How many miles is 42 km?", tools, script, constrained=True)
    first, second = script.seen[0][1], script.seen[1][1]
    assert first == call_schema(list(tools), may_answer=False)
    assert ANSWER not in first["properties"]["tool"]["enum"]
    assert second["properties"]["tool"]["enum"] == [*tools, ANSWER]
    free = Script([call(ANSWER, "26")])
    run_agent("How many miles is 42 km?", tools, free, constrained=False)
    assert free.seen[0][1] is None


@pytest.mark.parametrize(
    ("reply", "status", "says"),
    [
        ("I think the answer is 5", "unparseable", "no JSON object"),
        ('{"tool": "calculator", "input": "1 +', "unparseable", "not valid JSON"),
        ('{"input": "3"}', "unparseable", 'no "tool"'),
        (call("python", "import os"), "unknown_tool", "there is no tool 'python'"),
        (call("calculator", "__import__('os')"), "tool_error", "only these functions"),
        (call("calculator", "9**9**9"), "tool_error", "exponents are limited"),
        (call("units", "5 km to kg"), "tool_error", "cannot convert length"),
        (call("calculator", "1" * 81), "tool_error", "over 80 characters"),
    ],
)
def test_a_bad_call_is_a_failed_step_and_the_loop_goes_on(
    reply: str, status: str, says: str
) -> None:
    script = Script([reply, call(ANSWER, "done")])
    run = run_agent("task", standard_tools(TODAY), script, constrained=False)
    assert run.steps[0].status == status and run.steps[0].failed
    assert says in (run.steps[0].observation or ""), run.steps[0].observation
    assert run.steps[0].observation.startswith("Error: ")
    assert script.seen[1][0][-1]["content"] == run.steps[0].observation  # the model reads it
    assert run.answer == "done"


def test_a_tool_that_breaks_is_a_failed_step_too() -> None:
    def broken(text: str) -> str:
        raise ConnectionError("database gone")

    tools = {"search": Tool("search", "search", broken, ("q", "q", "r", "a"))}
    run = run_agent("x", tools, Script([call("search", "hnsw"), call(ANSWER, "?")]))
    assert run.steps[0].status == "tool_error" and run.steps[0].failed
    assert run.steps[0].observation == "Error: the search tool failed (ConnectionError)"


def test_the_step_limit_ends_a_loop_that_never_answers() -> None:
    script = Script([call("today", "")] * 20)
    run = run_agent("loop forever", standard_tools(TODAY), script, max_steps=3)
    assert len(run.steps) == 3 and run.answer is None and run.stopped == "step_limit"
    with pytest.raises(ValueError, match="max_steps"):
        run_agent("x", {}, script, max_steps=MAX_STEPS + 1)


def test_memory_folds_the_oldest_steps_to_stay_within_the_budget() -> None:
    tools = standard_tools(TODAY)
    calls = [call("calculator", f"{i} * 1000") for i in range(1, 7)] + [call(ANSWER, "6000")]
    unbounded = Script(calls)
    run_agent("add up", tools, unbounded, max_steps=8, budget=10_000, count_tokens=words)
    sizes = [words(messages) for messages, _ in unbounded.seen]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]  # the history only grows
    budget = sizes[0] + 30  # room for three or four steps (8 words each)
    bounded = Script(calls)
    run = run_agent("add up", tools, bounded, max_steps=8, budget=budget, count_tokens=words)
    assert run.answer == "6000" and run.summaries
    for i, (messages, _) in enumerate(bounded.seen):  # fits, or only the latest step is left
        folded_here = [s for s in run.summaries if s.at_step <= i + 1]
        everything = folded_here and folded_here[-1].dropped_steps[-1] == i - 1
        assert words(messages) <= budget or everything
    first = run.summaries[0]
    assert first.tokens_before > budget >= first.tokens_after
    assert first.at_step > 2 and first.dropped_steps == list(range(1, len(first.dropped) + 1))
    assert "1 * 1000" in first.dropped[0] and "Result: 1000" in first.dropped[0]
    last_prompt = bounded.seen[-1][0]
    task_turn = next(m for m in last_prompt if m["content"].startswith("Task: add up"))
    folded = [i for s in run.summaries for i in s.dropped_steps]
    assert folded == list(range(1, len(folded) + 1))  # oldest first, each once
    line = task_turn["content"].split("Earlier steps, summarised: ", 1)[1]
    assert line == run.summaries[-1].summary
    assert f"calculator({folded[-1]} * 1000) gave Result: {folded[-1]}000" in line
    for i in folded:  # a folded step's call is no longer a turn of its own
        assert all(m["content"] != calls[i - 1] for m in last_prompt if m["role"] == "assistant")
    assert last_prompt[-2]["content"] == calls[5]  # the latest step stays whole
    assert 6 not in folded


@pytest.mark.parametrize(
    ("task", "last"),
    [
        ("What is 347 * 29?", "calculator"),
        ("How many miles is 42 km?", "units"),
        ("What date will it be 10 days from today?", "today"),
        ("According to the course, what is HNSW?", "search"),
    ],
)
def test_the_example_most_like_the_task_comes_last(task: str, last: str) -> None:
    tools = standard_tools(TODAY, search=lambda q: q)
    prefix = prompt_prefix(tools, task)
    calls = [json.loads(m["content"]) for m in prefix if m["role"] == "assistant"]
    used = [c["tool"] for c in calls if c["tool"] != ANSWER]
    assert sorted(used) == sorted(tools) and used[-1] == last  # each example once


def test_parse_call_reads_the_first_object_and_turns_inputs_into_text() -> None:
    assert parse_call('Sure! {"tool": "units", "input": "1 mi to km"} ok') == {
        "tool": "units",
        "input": "1 mi to km",
    }
    assert parse_call('{"tool": "calculator", "input": 12}')["input"] == "12"


def test_the_date_tool_counts_from_the_fixed_today() -> None:
    today = date_tool(TODAY)
    assert today("") == "2025-03-14 (Friday)"
    assert today("+10 days") == "2025-03-24 (Monday)"
    assert today("3 weeks ago") == "2025-02-21 (Friday)"
    assert today("2025-12-25") == (
        "today is 2025-03-14 (Friday); 2025-12-25 (Thursday) is 286 days from today"
    )
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        today("next blue moon")


def test_best_passage_keeps_the_sentences_that_match_the_query() -> None:
    text = "Cats purr. SmolLM2 has 30 blocks of attention. Dogs bark loudly. The sky is blue."
    assert best_passage(text, "how many blocks does SmolLM2 have", limit=60) == (
        "SmolLM2 has 30 blocks of attention."
    )


def test_the_task_set_has_30_checkable_tasks_and_the_tools_solve_them() -> None:
    data = task_set()
    tasks = data["tasks"]
    assert len(tasks) >= 30 and len({t["id"] for t in tasks}) == len(tasks)
    assert {t["kind"] for t in tasks} == {"calculator", "units", "date", "search"}
    assert task_today() == dt.date.fromisoformat(data["today"])
    for item in tasks:
        assert is_correct(item["answer"], item), item  # the expected answer passes its check
        assert not is_correct("I do not know", item), item
    # the reference answers agree with our own tools, computed independently here
    by_id = {t["id"]: t for t in tasks}
    assert float(by_id["calculator-1"]["answer"]) == evaluate("347 * 29")
    assert float(by_id["units-1"]["answer"]) == pytest.approx(convert("42 km to mi")[0], 1e-5)
    assert by_id["date-3"]["answer"] == str(TODAY + dt.timedelta(days=10))


def test_answers_are_checked_by_number_or_by_words() -> None:
    number = {"check": "number", "answer": "10063", "tolerance": 1e-6}
    assert is_correct("The answer is 10,063.", number)
    assert not is_correct("10062", number)
    words_item = {"check": "text", "answer": "Friday", "accept": ["friday"]}
    assert is_correct("It is Friday", words_item) and not is_correct("Monday", words_item)
    assert not is_correct(None, number)
