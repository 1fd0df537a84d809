"""The prompt lab's pure parts: answer extraction, the majority vote, prompt building for
each style, the eval sets themselves, and the per-style summary."""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Mapping, Sequence

import pytest

from learn.lab.prompting import (
    BASE_STYLES,
    DEFAULT_SYSTEM,
    Reply,
    Settings,
    build_messages,
    evaluate,
    extract_answer,
    majority_vote,
    pick_items,
    task_sets,
)

LABELS = ("positive", "negative", "neutral")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Positive", "positive"),
        ("NEGATIVE.", "negative"),
        ("The sentiment is Neutral", "neutral"),
        ("It starts well.\nAnswer: Negative", "negative"),
        ("negative at first, but Answer: positive\nso not negative", "positive"),  # the line
        ("Not negative: the review is positive", "positive"),  # no answer line: the last label
        ("Answer: unclear\nthe review is negative", "negative"),  # empty line: whole reply
        ("positively glowing", None),  # whole words only
        ("", None),
        ("I cannot tell.", None),
    ],
)
def test_labels_are_found_case_insensitively_preferring_the_answer_line(
    text: str, expected: str | None
) -> None:
    assert extract_answer(text, "label", LABELS) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", "12"),
        ("3 bags of 4 is 12, minus 2 is 10.", "10"),  # no answer line: the last number
        ("Answer: 42 apples, from 6 × 7", "7"),  # the last number on the answer line
        ("6 × 7 = 42.\nAnswer: 42\nThat took 3 steps.", "42"),  # the line, not the text's end
        ("The answer is: 1,200 dollars", "1200"),
        ("The answer is 12.0", "12"),
        ("Answer: 12.5", "12.5"),  # not a whole number: matches no integer gold
        ("It fell to -5 degrees", "-5"),
        ("8-3 leaves 5", "5"),  # a minus between numbers is no sign
        ("Answer: none\n5 + 4 = 9", "9"),  # nothing on the line: fall back to the text
        ("no numbers here", None),
    ],
)
def test_integers_are_the_last_number_of_the_answer_line_else_of_the_text(
    text: str, expected: str | None
) -> None:
    assert extract_answer(text, "integer") == expected


def test_the_majority_wins_and_a_tie_goes_to_the_earliest_sample() -> None:
    assert majority_vote(["3", "5", "5", None]) == ("5", {"3": 1, "5": 2})
    assert majority_vote(["7", "4", "4", "7"])[0] == "7"  # 2-2: "7" was sampled first
    assert majority_vote([None, "4", "7"])[0] == "4"  # None never votes, nor wins ties
    assert majority_vote([None, None]) == (None, {})


@pytest.mark.parametrize("name", ["sentiment", "arithmetic"])
def test_each_style_builds_the_prompt_it_should(name: str) -> None:
    task = task_sets()[name]
    item = task.items[0]
    zero = build_messages(task, item["text"], "zero-shot", shots=3)
    assert [m["role"] for m in zero] == ["system", "user"]
    assert zero[0]["content"] == DEFAULT_SYSTEM
    assert task.instruction in zero[1]["content"] and item["text"] in zero[1]["content"]

    few = build_messages(task, item["text"], "few-shot", shots=3)
    assert [m["role"] for m in few] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    for ex, answer in zip(task.examples[:3], few[2:-1:2], strict=True):
        assert answer["content"] == ex["answer"]  # the bare answer, no reasoning
    assert few[-1] == zero[-1]

    cot = build_messages(task, item["text"], "chain-of-thought", shots=2)
    assert len(cot) == 1 + 2 * 2 + 1
    for ex, answer in zip(task.examples[:2], cot[2:-1:2], strict=True):
        assert answer["content"] == f"{ex['reasoning']}\nAnswer: {ex['answer']}"
    assert "step by step" in cot[-1]["content"] and "'Answer: '" in cot[-1]["content"]
    assert build_messages(task, item["text"], "self-consistency", shots=2) == cot

    mine = build_messages(
        task, item["text"], "system", shots=2, system="Be brief.", base="few-shot"
    )
    assert mine[0] == {"role": "system", "content": "Be brief."}
    assert mine[1:] == build_messages(task, item["text"], "few-shot", shots=2)[1:]
    with pytest.raises(ValueError, match="system prompt"):
        build_messages(task, item["text"], "system")


@pytest.mark.parametrize("name", ["sentiment", "arithmetic"])
@pytest.mark.parametrize("style", BASE_STYLES)
def test_no_prompt_carries_its_own_items_answer(name: str, style: str) -> None:
    task = task_sets()[name]
    example_texts = {ex["text"] for ex in task.examples}
    for item in task.items:
        messages = build_messages(task, item["text"], style, shots=8)
        # the prompt is built from the item's text alone: no gold, and the item is never
        # one of the solved examples
        assert item["text"] not in example_texts
        assert sum(item["text"] in m["content"] for m in messages) == 1
        assert item["text"] in messages[-1]["content"] and messages[-1]["role"] == "user"
        assert not any(
            f"Answer: {item['answer']}" in m["content"] and item["text"] in m["content"]
            for m in messages
        )


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.FloorDiv: operator.floordiv}  # fmt: skip


def _value(node: ast.AST) -> int:
    """An expression of whole numbers and + - * // (the sets store nothing else)."""
    if isinstance(node, ast.Expression):
        return _value(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.FloorDiv):
            assert left % right == 0, "a word problem's division comes out even"
        return _OPS[type(node.op)](left, right)
    raise AssertionError(f"unexpected {ast.dump(node)}")


def test_the_sets_are_well_formed_large_enough_and_their_answers_check_out() -> None:
    sets = task_sets()
    assert set(sets) == {"sentiment", "arithmetic"}
    for task in sets.values():
        assert len(task.items) >= 50 and len(task.examples) >= 8
        ids = [i["id"] for i in task.items]
        texts = [i["text"].lower() for i in task.items]
        assert len(set(ids)) == len(ids) and len(set(texts)) == len(texts)
        assert not {e["text"].lower() for e in task.examples} & set(texts)
        for ex in task.examples:
            assert ex["reasoning"].strip() and ex["answer"]
    sentiment = sets["sentiment"]
    assert sentiment.labels == LABELS
    for row in (*sentiment.items, *sentiment.examples):
        assert row["answer"] in LABELS
    counts = {label: sum(i["answer"] == label for i in sentiment.items) for label in LABELS}
    assert min(counts.values()) >= 10, counts  # every label well represented
    assert {e["answer"] for e in sentiment.examples[:3]} == set(LABELS)  # 3 shots: one each
    for row in (*sets["arithmetic"].items, *sets["arithmetic"].examples):
        value = _value(ast.parse(row["expression"], mode="eval"))
        assert value >= 0 and row["answer"] == str(value), row
        if "reasoning" in row:  # a worked example ends on its own answer
            assert re.findall(r"\d+", row["reasoning"])[-1] == row["answer"], row


def test_items_are_a_seeded_shuffle() -> None:
    task = task_sets()["sentiment"]
    first = pick_items(task, 10, seed=1)
    assert first == pick_items(task, 10, seed=1) and first != pick_items(task, 10, seed=2)
    assert len({i["id"] for i in first}) == 10
    assert len({i["answer"] for i in pick_items(task, 6, seed=0)}) >= 2  # labels come mixed


class KeywordModel:
    """A tiny rule-based "model" with a known behaviour: it calls a review negative when
    it mentions one of a few complaint words, otherwise positive; under a temperature it
    answers by the seed instead (even: its rule, odd: neutral). Each call records itself."""

    WORDS = ("broke", "broken", "leak", "waste", "avoid", "late", "awful", "terrible")

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(
        self, messages: Sequence[Mapping[str, str]], *, temperature: float, seed: int,
        max_tokens: int,
    ) -> Reply:  # fmt: skip
        review = messages[-1]["content"].split("Review: ", 1)[1].split("\n", 1)[0].lower()
        rule = "negative" if any(w in review for w in self.WORDS) else "positive"
        label = rule if temperature == 0 or seed % 2 == 0 else "neutral"
        text = f"Thinking about it.\nAnswer: {label}" if max_tokens > 8 else label
        self.calls.append({"temperature": temperature, "seed": seed, "max_tokens": max_tokens})
        return Reply(text, tokens=len(text.split()), ms=2.0, prompt_tokens=10 * len(messages))


def test_a_run_scores_every_item_in_every_style_and_sums_up_per_style() -> None:
    task = task_sets()["sentiment"]
    items = pick_items(task, 8, seed=3)
    model = KeywordModel()
    settings = Settings(shots=2, k=3, temperature=0.7, answer_tokens=4, max_tokens=32, seed=10)
    streamed = []
    styles = ["zero-shot", "chain-of-thought", "self-consistency"]
    results, summary = evaluate(task, items, styles, model, settings, on_result=streamed.append)
    assert streamed == results and len(results) == 8 * 3
    assert len(model.calls) == 8 * (1 + 1 + 3)  # k samples for self-consistency
    sc = [r for r in results if r.style == "self-consistency"]
    for r in sc:  # seeds 10, 11, 12: rule, neutral, rule -> the rule wins 2 to 1
        assert len(r.replies) == 3 and r.votes[r.parsed] == 2 and r.answers[1] == "neutral"
    assert {c["max_tokens"] for c in model.calls} == {4, 32}  # direct vs reasoned budgets
    for row in summary:
        mine = [r for r in results if r.style == row["style"]]
        assert row["n"] == 8 and row["correct"] == sum(r.parsed == r.gold for r in mine)
        assert row["accuracy"] == pytest.approx(row["correct"] / 8, abs=1e-4)
        assert row["mean_tokens"] == pytest.approx(sum(r.tokens for r in mine) / 8, abs=0.05)
    zero, cot, vote = (row["accuracy"] for row in summary)
    assert zero == cot == vote  # the same rule answered, however it was asked
    assert summary[2]["mean_tokens"] == pytest.approx(3 * summary[1]["mean_tokens"], rel=0.01)
    assert summary[1]["mean_prompt_tokens"] > summary[0]["mean_prompt_tokens"]  # 2 examples
