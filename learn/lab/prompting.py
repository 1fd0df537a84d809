"""Prompt styles compared on eval sets with known answers: zero-shot, few-shot, chain of
thought, self-consistency, and the learner's own system prompt over any of them.

The model is a callable, ``complete(messages, *, temperature, seed, max_tokens) -> Reply``,
so the same code scores SmolLM2 on a worker, a server behind an OpenAI-compatible API, or
a scripted stand-in in a test. Nothing here imports torch.

Answer extraction (one rule for every style, so styles are compared on equal terms):

- the text considered is what follows the last "answer:" / "answer is" in the reply, up to
  the end of that line, when such a line exists and names an answer; else the whole reply;
- a label set: the label named last there, whole words, case-insensitive;
- integers: the last number there ("1,200" is 1200, "12.0" is 12, "12.5" stays 12.5 and
  so matches no integer answer).

Self-consistency (Wang et al., 2022) samples the chain-of-thought prompt ``k`` times at a
temperature above 0 and takes the majority of the parsed answers; replies with no answer
do not vote, and a tie goes to the tied answer that was sampled first.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

from learn.lab.events import Emit, no_emit
from learn.lab.smollm2_text import SYSTEM_PROMPT

DATA = Path(__file__).parent / "data" / "prompt_sets.json"
DEFAULT_SYSTEM = SYSTEM_PROMPT  # SmolLM2's own: what every style but "system" starts with

Style = Literal["zero-shot", "few-shot", "chain-of-thought", "self-consistency", "system"]
BASE_STYLES: tuple[str, ...] = ("zero-shot", "few-shot", "chain-of-thought", "self-consistency")
STYLES: tuple[str, ...] = (*BASE_STYLES, "system")
REASONING = frozenset({"chain-of-thought", "self-consistency"})  # they think before answering
Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": …}


class Reply(NamedTuple):
    text: str
    tokens: int  # new tokens generated
    ms: float  # wall time of the call
    prompt_tokens: int = 0  # tokens the prompt cost (0 when the backend did not say)


class Complete(Protocol):
    def __call__(
        self, messages: Sequence[Mapping[str, str]], *, temperature: float, seed: int,
        max_tokens: int,
    ) -> Reply: ...  # fmt: skip


@dataclass(frozen=True)
class TaskSet:
    """One eval set: items with gold answers, and few-shot examples kept apart from them."""

    name: str
    title: str
    kind: Literal["label", "integer"]
    labels: tuple[str, ...]  # the label set ("label" kind); empty for integers
    instruction: str  # what the task is, said once at the top of every prompt
    prefix: str  # "Review" / "Problem": how each item is introduced
    examples: tuple[dict[str, str], ...]  # {text, answer, reasoning}
    items: tuple[dict[str, str], ...]  # {id, text, answer[, expression]}

    def answer_format(self) -> str:
        if self.kind == "label":
            return "one word: " + ", ".join(self.labels)
        return "the number only"


@cache
def task_sets() -> dict[str, TaskSet]:
    """The built-in sets, by name ("sentiment", "arithmetic")."""
    raw = json.loads(DATA.read_text())
    return {
        name: TaskSet(
            name=name,
            title=body["title"],
            kind=body["kind"],
            labels=tuple(body["labels"]),
            instruction=body["instruction"],
            prefix=body["prefix"],
            examples=tuple(body["examples"]),
            items=tuple(body["items"]),
        )
        for name, body in raw.items()
        if not name.startswith("_")
    }


def pick_items(task: TaskSet, n: int, seed: int) -> list[dict[str, str]]:
    """``n`` items of the set in a shuffled order fixed by ``seed`` (labels come mixed)."""
    order = list(task.items)
    random.Random(seed).shuffle(order)
    return order[:n]


# --- prompts -------------------------------------------------------------------------------


def _question(task: TaskSet, text: str) -> str:
    return f"{task.prefix}: {text}"


def _direct_ask(task: TaskSet, text: str) -> str:
    return f"{task.instruction}\n\n{_question(task, text)}\n\nReply with {task.answer_format()}."


def _thinking_ask(task: TaskSet, text: str) -> str:
    return (
        f"{task.instruction}\n\n{_question(task, text)}\n\nThink step by step, then write "
        f"the final answer on its own last line as 'Answer: ' followed by "
        f"{task.answer_format()}."
    )


def build_messages(
    task: TaskSet,
    text: str,
    style: str,
    *,
    shots: int = 3,
    system: str | None = None,
    base: str = "zero-shot",
) -> list[Message]:
    """The exact chat messages a style sends for one item's ``text``.

    - zero-shot: the instruction and the item, and the answer format;
    - few-shot (Brown et al., 2020): ``shots`` solved examples first, as earlier turns
      of the conversation (the example's question, then the bare answer);
    - chain-of-thought (Wei et al., 2022): the same examples, each answered with its
      reasoning and a final "Answer:" line, then the item with "think step by step";
    - self-consistency: the chain-of-thought prompt (sampled several times by the caller);
    - system: the ``base`` style's messages under ``system`` instead of the default.

    The item's own gold answer never appears: examples come from a separate pool.
    """
    if style == "system":
        if not system:
            raise ValueError("the 'system' style needs a system prompt")
        messages = build_messages(task, text, base, shots=shots)
        return [{"role": "system", "content": system}, *messages[1:]]
    if style not in BASE_STYLES:
        raise ValueError(f"unknown style {style!r}; one of {', '.join(STYLES)}")
    messages: list[Message] = [{"role": "system", "content": DEFAULT_SYSTEM}]
    thinking = style in REASONING
    examples = task.examples[:shots] if style != "zero-shot" else ()
    for ex in examples:
        ask = _thinking_ask(task, ex["text"]) if thinking else _direct_ask(task, ex["text"])
        said = f"{ex['reasoning']}\nAnswer: {ex['answer']}" if thinking else ex["answer"]
        messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": said}]
    ask = _thinking_ask(task, text) if thinking else _direct_ask(task, text)
    messages.append({"role": "user", "content": ask})
    return messages


# --- answers -------------------------------------------------------------------------------

_ANSWER_LINE = re.compile(r"\banswer\b\s*(?:is\b\s*:?|:|=)", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\w.])(-?)(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(\.\d+)?")


def _answer_part(text: str) -> str | None:
    """What follows the last "answer:" (or "answer is") in ``text``, to the end of its line."""
    found = list(_ANSWER_LINE.finditer(text))
    if not found:
        return None
    return text[found[-1].end() :].split("\n", 1)[0]


def _last_label(text: str, labels: Sequence[str]) -> str | None:
    best: tuple[int, str] | None = None
    for label in labels:
        for m in re.finditer(rf"(?<![a-z]){re.escape(label.lower())}(?![a-z])", text.lower()):
            if best is None or m.start() > best[0]:
                best = (m.start(), label)
    return best[1] if best else None


def _last_number(text: str) -> str | None:
    found = list(_NUMBER.finditer(text))
    if not found:
        return None
    sign, digits, fraction = found[-1].groups()
    whole = int(digits.replace(",", ""))
    if fraction and int(fraction[1:]) != 0:
        return f"{'-' if sign else ''}{whole}{fraction}"
    return str(-whole if sign else whole)


def extract_answer(text: str, kind: str, labels: Sequence[str] = ()) -> str | None:
    """The answer a reply gives (see the module's rule), normalised: a label in the set's
    own spelling, or an integer as digits; None when there is none."""

    def find(part: str) -> str | None:
        return _last_label(part, labels) if kind == "label" else _last_number(part)

    part = _answer_part(text)
    if part is not None:
        found = find(part)
        if found is not None:
            return found
    return find(text)


def majority_vote(answers: Sequence[str | None]) -> tuple[str | None, dict[str, int]]:
    """(winner, votes): the answer given most often; None does not vote; a tie goes to the
    tied answer that appears first in ``answers`` (the earliest sample)."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None, {}
    top = max(votes.values())
    winner = next(a for a in answers if a is not None and votes[a] == top)
    return winner, dict(votes)


def is_correct(parsed: str | None, gold: str) -> bool:
    return parsed is not None and parsed.strip().lower() == gold.strip().lower()


# --- a run ---------------------------------------------------------------------------------


@dataclass
class ItemResult:
    """One item under one style: the exact prompt, each reply, the parsed answer vs gold."""

    item: str  # the item's id
    style: str
    messages: list[Message]
    replies: list[str]  # one, or k for self-consistency
    answers: list[str | None]  # parsed from each reply
    parsed: str | None  # the style's answer (the vote, for self-consistency)
    gold: str
    correct: bool
    tokens: int  # generated, summed over the replies
    prompt_tokens: int  # the prompt's tokens (counted once: every sample shares it)
    ms: float  # wall time of all the calls
    votes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    shots: int = 3  # examples for few-shot and chain of thought
    k: int = 3  # samples for self-consistency
    temperature: float = 0.7  # self-consistency's sampling temperature
    answer_tokens: int = 8  # new tokens at most for a direct answer
    max_tokens: int = 96  # new tokens at most for reasoning
    seed: int = 0
    system: str | None = None  # the learner's system prompt (style "system")
    base: str = "zero-shot"  # the style the learner's system prompt goes over


def run_item(
    task: TaskSet, item: Mapping[str, str], style: str, complete: Complete, s: Settings
) -> ItemResult:
    """Ask one item in one style and score the answer."""
    messages = build_messages(
        task, item["text"], style, shots=s.shots, system=s.system, base=s.base
    )
    effective = s.base if style == "system" else style
    budget = s.max_tokens if effective in REASONING else s.answer_tokens
    samples = s.k if effective == "self-consistency" else 1
    temperature = s.temperature if effective == "self-consistency" else 0.0
    replies = [
        complete(messages, temperature=temperature, seed=s.seed + i, max_tokens=budget)
        for i in range(samples)
    ]
    answers = [extract_answer(r.text, task.kind, task.labels) for r in replies]
    parsed, votes = majority_vote(answers) if samples > 1 else (answers[0], {})
    return ItemResult(
        item=item["id"],
        style=style,
        messages=messages,
        replies=[r.text for r in replies],
        answers=answers,
        parsed=parsed,
        gold=item["answer"],
        correct=is_correct(parsed, item["answer"]),
        tokens=sum(r.tokens for r in replies),
        prompt_tokens=replies[0].prompt_tokens,
        ms=round(sum(r.ms for r in replies), 1),
        votes=votes,
    )


def summarise(results: Sequence[ItemResult], styles: Sequence[str]) -> list[dict[str, Any]]:
    """Per style, in ``styles`` order: n, correct, accuracy (0-1), mean generated tokens,
    mean prompt tokens, mean ms per item and total ms."""
    rows = []
    for style in styles:
        mine = [r for r in results if r.style == style]
        n = len(mine)
        rows.append(
            {
                "style": style,
                "n": n,
                "correct": sum(r.correct for r in mine),
                "accuracy": round(sum(r.correct for r in mine) / n, 4) if n else 0.0,
                "mean_tokens": round(sum(r.tokens for r in mine) / n, 1) if n else 0.0,
                "mean_prompt_tokens": round(sum(r.prompt_tokens for r in mine) / n, 1)
                if n
                else 0.0,
                "mean_ms": round(sum(r.ms for r in mine) / n, 1) if n else 0.0,
                "total_ms": round(sum(r.ms for r in mine), 1),
            }
        )
    return rows


def evaluate(
    task: TaskSet,
    items: Sequence[Mapping[str, str]],
    styles: Sequence[str],
    complete: Complete,
    settings: Settings,
    *,
    on_result: Callable[[ItemResult], None] = lambda r: None,
    emit: Emit = no_emit,
) -> tuple[list[ItemResult], list[dict[str, Any]]]:
    """Every item in every style, item by item; ``on_result`` sees each result as it ends.
    Returns (results, per-style summary)."""
    results: list[ItemResult] = []
    total = len(items) * len(styles)
    for i, item in enumerate(items):
        for j, style in enumerate(styles):
            done = i * len(styles) + j
            emit(
                "progress", pct=100 * done / total, message=f"item {i + 1} of {len(items)}: {style}"
            )
            result = run_item(task, item, style, complete, settings)
            results.append(result)
            on_result(result)
    return results, summarise(results, styles)


def as_json(result: ItemResult) -> dict[str, Any]:
    return asdict(result)
