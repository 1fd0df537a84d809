"""The agent loop's mechanics with a scripted model (a unit test of the loop, not of
SmolLM2): tool calls run and their results come back, failures are steps not crashes, the
step limit holds, memory folds old steps within the budget; the task set is checkable."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from typing import Any

import pytest

from learn.lab.agent import (
    ANSWER,
    MAX_STEPS,
    Reply,
    Tool,
    answer_pattern,
    answer_words,
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
from learn.lab.constrained import json_constraint
from learn.lab.llama_gguf import load_smollm2
from learn.lab.units import convert
from learn.lab.units import input_pattern as units_pattern

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


def _names(schema: dict) -> list[str]:
    """The tool names a call schema allows, in its order."""
    return [b["properties"]["tool"]["const"] for b in schema.get("anyOf", [schema])]


def _input(schema: dict, name: str) -> dict:
    branch = next(
        b for b in schema.get("anyOf", [schema]) if b["properties"]["tool"]["const"] == name
    )
    return branch["properties"]["input"]


def test_constrained_steps_call_a_tool_until_one_works_then_answer_from_its_result() -> None:
    tools = standard_tools(TODAY)
    task = "How many miles is 42 km?"
    script = Script(
        [call("units", "42 km to kg"), call("units", "42 km to mi"), call(ANSWER, "26.09759")]
    )
    run = run_agent(task, tools, script, constrained=True, max_steps=4)
    first, second, third = (schema for _, schema in script.seen)
    # no answer before a tool has given a result: the failed call does not count
    assert _names(first) == _names(second) == list(tools)
    assert first == call_schema(tools, may_answer=False, task=task)
    # each tool's input has its own grammar
    assert _input(first, "units")["pattern"] == f"^({units_pattern()})$"
    assert "sqrt" in _input(first, "calculator")["pattern"]
    # after a result, the answer may come, quoted from it
    assert _names(third) == [*tools, ANSWER]
    assert _input(third, ANSWER)["pattern"] == f"^({answer_pattern(['26.09759 mi'], task)})$"
    assert run.answer == "26.09759" and [s.status for s in run.steps] == [
        "tool_error",
        "tool",
        "answer",
    ]
    free = Script([call(ANSWER, "26")])
    run_agent(task, tools, free, constrained=False)
    assert free.seen[0][1] is None


def test_the_last_constrained_step_must_answer_once_a_tool_has_worked() -> None:
    script = Script([call("today", "today"), call("today", "today")])
    run_agent("What is today's date?", standard_tools(TODAY), script, max_steps=2)
    assert _names(script.seen[1][1]) == [ANSWER]
    none_worked = Script([call("calculator", "1/0"), call("calculator", "1/0")])
    run_agent("x", standard_tools(TODAY), none_worked, max_steps=2)
    assert ANSWER not in _names(none_worked.seen[1][1])  # nothing to quote: keep calling


def test_an_answer_quotes_new_words_of_the_result_and_a_number_when_one_is_asked() -> None:
    days = "today is 2025-03-14 (Friday); 2025-12-25 (Thursday) is 286 days from today"
    assert answer_words([days], "How many days are there until 2025-12-25?") == ["286"]
    assert answer_words(["2025-03-18 (Tuesday)"], "What day will it be in 4 days?") == [
        "2025-03-18",
        "Tuesday",
    ]
    # thousands separators stay inside a number; a result with only the task's words
    # still leaves something to quote
    assert answer_words(["a vocabulary of 49,152 entries"], "How many entries?") == ["49,152"]
    assert answer_words(["entries"], "How many entries?") == ["entries"]
    pattern = re.compile(answer_pattern(["SmolLM2 has 9 query heads"], "What has SmolLM2?"))
    assert pattern.fullmatch("9 query heads") and not pattern.fullmatch("12 heads")
    assert answer_pattern([], "x") is None


def test_a_search_query_is_made_of_the_tasks_words() -> None:
    tools = standard_tools(TODAY, search=lambda q: q)
    task = "According to the course, which index does SmolLM2's site use?"
    schema = call_schema(tools, may_answer=False, task=task)
    pattern = re.compile(_input(schema, "search")["pattern"])
    assert pattern.fullmatch("index SmolLM2 site") and pattern.fullmatch("SmolLM2's index")
    assert not pattern.fullmatch("RMSNorm") and not pattern.fullmatch("index  site")


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_smollm2("cpu")[1]


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ('{"tool": "units", "input": "42 km to miles"}', True),
        ('{"tool": "units", "input": "100 degrees Fahrenheit to celsius"}', True),
        ('{"tool": "units", "input": "42 km to parsecs"}', False),  # a unit it lacks
        ('{"tool": "units", "input": "42 km"}', False),
        ('{"tool": "calculator", "input": "sqrt(1764) + 2 ** 10"}', True),
        ('{"tool": "calculator", "input": "2 ^ 10"}', False),
        ('{"tool": "calculator", "input": "__import__(\'os\')"}', False),
        ('{"tool": "today", "input": "10 days from today"}', True),
        ('{"tool": "today", "input": "2025-12-25"}', True),
        ('{"tool": "today", "input": "next blue moon"}', False),
        ('{"tool": "answer", "input": "26"}', False),  # no result yet: call a tool
        ('{"tool": "python", "input": "1"}', False),
    ],
)
def test_the_engine_holds_each_call_to_its_tools_grammar(
    tokenizer: Any, text: str, ok: bool
) -> None:
    """The schemas go through the real engine (llguidance) with SmolLM2's tokenizer: a
    call it accepts runs without a tool error; one it refuses cannot be decoded."""
    tools = standard_tools(TODAY)
    constraint = json_constraint(call_schema(tools, may_answer=False, task="x"), tokenizer)
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    taken = constraint.matcher.validate_tokens(ids)
    if ok:
        assert taken == len(ids), text
        for token in ids:
            constraint.advance(token)
        assert constraint.accepting
        parsed = parse_call(text)
        tools[parsed["tool"]].run(parsed["input"])  # raises on a tool error
    else:
        assert taken < len(ids), text


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
    assert today("10 days from today") == today("in 10 days") == "2025-03-24 (Monday)"
    assert today("today") == "2025-03-14 (Friday)"
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
    # across chunks: the rarer query word decides ("SmolLM2" is everywhere); a long
    # sentence is cut to a window around its matches
    chunks = [
        "SmolLM2 is small. SmolLM2 runs here.",
        "SmolLM2 has a vocabulary of 49,152 entries.",
        "x " * 100 + "the vocabulary holds 49,152 SmolLM2 tokens " + "y " * 100,
    ]
    assert best_passage(chunks, "SmolLM2 vocabulary", limit=60).startswith(
        "SmolLM2 has a vocabulary of 49,152 entries."
    )
    cut = best_passage(chunks[2], "SmolLM2 vocabulary", limit=60)
    assert len(cut) <= 60 and "vocabulary holds 49,152 SmolLM2" in cut and cut.startswith("…")


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
