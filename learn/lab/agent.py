"""A tool-using agent: the ReAct loop (Yao et al., 2022) over a chat model, pure.

Each step the model writes one tool call as JSON, ``{"tool": <name>, "input": <text>}``;
the tool runs on the input (tools are plain functions from text to text: nothing the
model writes is ever executed as code); its result goes back into the conversation as the
next user turn; and the loop repeats until the model calls ``answer`` or the step limit.

The model is reached only through ``complete(messages, schema) -> Reply``: with a JSON
schema the caller decodes under a grammar constraint (every reply parses); with ``None``
the reply is free text and the loop parses what it can. The constrained schema does more
than keep the JSON whole (``call_schema``): each tool's input has its own pattern (units
it knows, date phrases it reads, arithmetic without ``^``), a search query is made of the
task's words, and the answer is quoted from the tools' results (``answer_words``): a
135M model otherwise picks the wrong tool's syntax, misspells names, and answers with a
copy of its own call. The masks only remove choices; the choosing stays the model's.
This module imports no model and no worker code, and the loop's mechanics are tested
with a scripted ``complete``.

Memory: the few-shot examples and the task are always kept; the steps after them grow
the prompt. When the prompt would exceed ``budget`` tokens, the oldest steps are folded
into one line appended to the task (extractive: the parsed calls and the first words of
their results, no model call), and the run records what was dropped.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from learn.lab.calculator import FUNCTIONS, CalculatorError, calculator
from learn.lab.events import Emit, no_emit
from learn.lab.units import UNIT_WORDS, UnitError, regex_escape, unit_convert
from learn.lab.units import input_pattern as units_pattern

MAX_STEPS = 8
MAX_INPUT_CHARS = 80  # a tool input, as the schema bounds it
MAX_OBSERVATION_CHARS = 320  # what a tool's result may add to the prompt
STEP_TOKENS = 64  # the most new tokens per step: a call is short
SUMMARY_CHARS = 200  # the line that replaces folded steps stays about this long
ANSWER = "answer"

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": …}


@dataclass(frozen=True)
class Reply:
    """What ``complete`` returns: the model's text, its new tokens and wall time (ms)."""

    text: str
    tokens: int
    ms: float


Complete = Callable[[list[Message], dict[str, Any] | None], Reply]
CountTokens = Callable[[list[Message]], int]  # prompt tokens of a conversation


class ToolError(ValueError):
    """A tool could not do what was asked; the message goes back to the model."""


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


@dataclass(frozen=True)
class Tool:
    name: str
    description: str  # one line in the system prompt
    run: Callable[[str], str]
    example: tuple[str, str, str, str]  # (task, input, result, answer) for the few-shot turns
    keywords: frozenset[str] = frozenset()  # words of tasks it suits (orders the examples)
    pattern: str | None = None  # the inputs it reads, a regex for constrained calls
    quotes_task: bool = False  # constrained input: words of the task (a search query)


@dataclass
class Step:
    index: int  # 1-based
    text: str  # what the model wrote
    call: dict[str, str] | None  # the parsed {"tool", "input"}, None when unparseable
    observation: str | None  # the tool's result or error, as given back to the model
    status: str  # "tool" | "answer" | "unparseable" | "unknown_tool" | "tool_error"
    tokens: int  # new tokens the model wrote
    ms: float  # the model's wall time
    tool_ms: float = 0.0
    prompt_tokens: int = 0  # the prompt this step was given

    @property
    def failed(self) -> bool:
        return self.status in ("unparseable", "unknown_tool", "tool_error")


@dataclass
class Summary:
    """A fold of older steps into one line: what was dropped and what replaced it."""

    at_step: int  # the step whose prompt needed the room
    dropped_steps: list[int]
    dropped: list[str]  # the turns removed, as they were
    summary: str  # the line that replaced them
    tokens_before: int
    tokens_after: int


@dataclass
class AgentRun:
    task: str
    tools: list[str]
    constrained: bool
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None
    stopped: str = "step_limit"  # "answer" | "step_limit"
    summaries: list[Summary] = field(default_factory=list)
    budget: int = 0

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.steps)

    @property
    def ms(self) -> float:
        return sum(s.ms + s.tool_ms for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for row, step in zip(out["steps"], self.steps, strict=True):
            row["failed"] = step.failed
        out.update(tokens=self.tokens, ms=round(self.ms, 1))
        return out


# -- tools -----------------------------------------------------------------------------


def _calculator(text: str) -> str:
    try:
        return calculator(text)
    except CalculatorError as exc:
        raise ToolError(str(exc)) from exc


def _units(text: str) -> str:
    try:
        return unit_convert(text)
    except UnitError as exc:
        raise ToolError(str(exc)) from exc


_SHIFT = re.compile(
    r"^(?:in\s+)?([-+]?\s*\d{1,5})\s*(days?|weeks?)?"
    r"(?:\s+(ago|before today|later|from today|from now|after today))?$"
)
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def date_tool(today: dt.date) -> Callable[[str], str]:
    """Today's date, a date N days or weeks away ("+10 days", "-2 weeks"), or the days
    from today to a date ("2025-12-25")."""

    def show(day: dt.date) -> str:
        return f"{day.isoformat()} ({day.strftime('%A')})"

    def run(text: str) -> str:
        query = " ".join(text.lower().split())
        if query in ("", "today", "now", "date", "today's date"):
            return show(today)
        if query == "tomorrow":
            return show(today + dt.timedelta(days=1))
        if query == "yesterday":
            return show(today - dt.timedelta(days=1))
        found = _DATE.search(query)
        if found:
            try:
                other = dt.date(*map(int, found.groups()))
            except ValueError as exc:
                raise ToolError(f"{found.group(0)} is not a date") from exc
            return (
                f"today is {show(today)}; {show(other)} is {(other - today).days} days from today"
            )
        shift = _SHIFT.match(query)
        if shift:
            back = shift[3] in ("ago", "before today")
            n = int(shift[1].replace(" ", "")) * (-1 if back else 1)
            days = n * 7 if (shift[2] or "").startswith("week") else n
            return show(today + dt.timedelta(days=days))
        raise ToolError("give '' for today, '+N days' or '-N weeks', or a date YYYY-MM-DD")

    return run


# The inputs each tool reads, as regular expressions (the grammar engine's syntax): under
# constrained decoding a call's input is held to its tool's, so it is well-formed.
# numbers, operators, brackets, a function name with its "(", pi; no %: it is not percent
_ATOM = r"[0-9.,+*/()-]|pi|(" + "|".join(sorted(FUNCTIONS)) + r")\("
CALCULATOR_PATTERN = f"({_ATOM})({_ATOM}| ){{0,{MAX_INPUT_CHARS - 1}}}"
TODAY_PATTERN = (
    r"today|tomorrow|yesterday|[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"|([+-]|in )?[0-9]{1,4} (day|days|week|weeks)( ago| from today| later)?"
)
SEARCH_PATTERN = rf'[^ \n\\"][^\n\\"]{{1,{MAX_INPUT_CHARS - 1}}}'


def standard_tools(today: dt.date, search: Callable[[str], str] | None = None) -> dict[str, Tool]:
    """The four tools: calculator, units, today (fixed to ``today``) and, when a
    ``search`` callable is given, search over the course."""
    tools = {
        "calculator": Tool(
            "calculator",
            "arithmetic with + - * / ** ( ) and sqrt(); for 15% of 80 write 15 * 80 / 100",
            _calculator,
            (
                "What is the square root of 81 plus 2 to the power of 3?",
                "sqrt(81) + 2 ** 3",
                "17",
                "17",
            ),
            _words(
                "plus minus times multiplied divided power square root sum product percent "
                "% * + - / split each total share average"
            ),
            CALCULATOR_PATTERN,
        ),
        "units": Tool(
            "units",
            "convert a quantity from one unit to another: '<number> <unit> to <unit>'",
            _units,
            ("How many metres is 3 miles?", "3 miles to metres", "4828.032 m", "4828.032 m"),
            UNIT_WORDS,
            units_pattern(),
        ),
        "today": Tool(
            "today",
            "dates: 'today' for today's date, 'N days from today', 'N weeks ago', or a date "
            "YYYY-MM-DD for the days from today until it",
            date_tool(today),
            ("What date is it in 2 days?", "+2 days", "2031-07-09 (Wednesday)", "2031-07-09"),
            _words("today date day days week weeks ago year month tomorrow yesterday until"),
            TODAY_PATTERN,
        ),
    }
    if search is not None:
        tools["search"] = Tool(
            "search",
            "search the course lessons: give the key words of the question",
            search,
            (
                "In the course, on which data set was SmolLM2 tuned with DPO?",
                "DPO preference data set",
                "supervised fine-tuning, then DPO on the UltraFeedback preference data set",
                "UltraFeedback",
            ),
            _words("course lesson lessons according chapter site"),
            SEARCH_PATTERN,
            quotes_task=True,
        )
    return tools


_WORD = re.compile(r"\w+")


_SENTENCE = re.compile(r"(?<=[.!?])(?<!e\.g\.)(?<!i\.e\.)\s+|\n+")
_FILLER = _words(
    "a an the is are was be it its this that what which who how many much of to in on at by "
    "for from with do does did has have each and or according course lesson lessons chapter site"
)


def _stem(word: str) -> str:
    """A crude plural fold, enough to match "blocks" with "block"."""
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _terms(text: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in _FILLER}


def best_passage(texts: str | Sequence[str], query: str, limit: int = MAX_OBSERVATION_CHARS) -> str:
    """The sentence of ``texts`` (chunks, best-ranked first) that best matches ``query``,
    cut to a window of ``limit`` characters around its matches, and the runner-up when it
    fits too: what a search tool gives back instead of whole chunks, so that a small model
    has a short passage to copy its answer from.

    Each query word counts by how rare it is among the candidate sentences (an IDF
    weight: "SmolLM2" in every sentence tells little, "vocabulary" in two tells a lot);
    ties go to the earlier chunk, then the shorter sentence.
    """
    chunks = [texts] if isinstance(texts, str) else list(texts)
    sentences = [
        (rank, " ".join(s.split()))
        for rank, chunk in enumerate(chunks)
        for s in _SENTENCE.split(chunk)
        if s.strip()
    ]
    if not sentences:
        return ""
    wanted = _terms(query)
    bags = [_terms(s) & wanted for _, s in sentences]
    df = {w: sum(w in bag for bag in bags) for w in wanted}
    weight = {w: math.log(1 + len(sentences) / df[w]) for w in wanted if df[w]}
    score = [sum(weight[w] for w in bag) for bag in bags]
    order = sorted(
        range(len(sentences)), key=lambda i: (-score[i], sentences[i][0], len(sentences[i][1]))
    )
    best = _window(sentences[order[0]][1], set(weight), limit)
    for i in order[1:2]:
        other = sentences[i][1]
        if score[i] > 0 and other != best and len(best) + len(other) + 1 <= limit:
            best += " " + other
    return best


def _window(sentence: str, terms: set[str], limit: int) -> str:
    """``sentence`` within ``limit`` characters: whole when it fits, otherwise the run of
    words around the most query terms, with "…" where it was cut."""
    if len(sentence) <= limit:
        return sentence
    words = sentence.split()
    hits = [bool(_terms(w) & terms) for w in words]
    best, best_hits, start = (0, 0), -1, 0
    for end in range(len(words)):  # the widest window ending at each word, within limit
        while len(" ".join(words[start : end + 1])) > limit - 2:
            start += 1
        count = sum(hits[start : end + 1])
        if count > best_hits:
            best, best_hits = (start, end + 1), count
    lo, hi = best
    return ("…" if lo else "") + " ".join(words[lo:hi]) + ("…" if hi < len(words) else "")


# -- the conversation ------------------------------------------------------------------


def task_words_pattern(task: str, most: int = 10) -> str | None:
    """A regex for an input made of 1 to ``most`` words of ``task``: a search query that
    can only use the question's own words (a small model otherwise misspells names or
    copies words from its examples)."""
    words = []
    for word in task.split():
        for form in (word.strip(".,:;?!…'\"()"), word.strip(".,:;?!…'\"()").removesuffix("'s")):
            if form and form not in words:
                words.append(form)
    if not words:
        return None
    word = "(" + "|".join(regex_escape(w) for w in words) + ")"
    return f"{word}( {word}){{0,{most - 1}}}"


def _branch(name: str, pattern: str | None) -> dict[str, Any]:
    """One call's schema: the tool's name and an input its tool can read."""
    given: dict[str, Any] = {"type": "string"}
    if pattern is None:
        given["maxLength"] = MAX_INPUT_CHARS
    else:
        given["pattern"] = f"^({pattern})$"
    return {
        "type": "object",
        "properties": {"tool": {"const": name}, "input": given},
        "required": ["tool", "input"],
        "additionalProperties": False,
    }


def call_schema(
    tools: Mapping[str, Tool],
    *,
    may_answer: bool = True,
    may_call: bool = True,
    answer_pattern: str | None = None,
    task: str = "",
) -> dict[str, Any]:
    """The JSON schema a step's reply must satisfy under constrained decoding: one branch
    per tool, each with its own input grammar (as per-function parameter schemas do in
    OpenAI-style tool calling), and one for the answer. Without ``may_answer`` the reply
    must call a tool ("tool_choice: required"); without ``may_call`` it must answer.
    ``answer_pattern`` holds the answer to a regex (see ``answer_pattern``); a tool that
    ``quotes_task`` takes words of ``task``."""

    def pattern(tool: Tool) -> str | None:
        quoted = task_words_pattern(task) if tool.quotes_task else None
        return quoted or tool.pattern

    branches = [_branch(t.name, pattern(t)) for t in tools.values()] if may_call else []
    if may_answer or not branches:
        branches.append(_branch(ANSWER, answer_pattern))
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


_ANSWER_WORD = re.compile(r"[^\s();\"\\]+")
MAX_ANSWER_WORDS = 6


_PURE_NUMBER = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?")
_ASKS_NUMBER = re.compile(r"\bhow (?:many|much|long|old|far)\b|\bwhat year\b", re.IGNORECASE)


def answer_words(results: Sequence[str], task: str = "", limit: int = 64) -> list[str]:
    """What an answer may be made of: the distinct words of the tools' ``results``
    (without brackets or trailing stops) that are not words of ``task`` — an answer tells
    something the question did not — and only the numbers among them when the task asks
    "how many", "how much", "what year" and the like (the answer's type, read off the
    question as question classifiers do). At most ``limit`` words; the type and the
    novelty are dropped, in that order, when they would leave nothing."""
    asked = {w.strip(".,:;?!…'\"()").lower() for w in task.split()}
    found: list[str] = []
    for result in results:
        for word in _ANSWER_WORD.findall(result):
            word = word.strip(".,:…'")
            if word and len(word) <= 40 and word not in found:
                found.append(word)
    novel = [w for w in found if w.lower() not in asked] or found
    numbers = [w for w in novel if _PURE_NUMBER.fullmatch(w)]
    words = numbers if numbers and _ASKS_NUMBER.search(task) else novel
    return words[:limit]


def answer_pattern(results: Sequence[str], task: str = "") -> str | None:
    """A regex for an answer quoted from the tools' ``results``: one to
    ``MAX_ANSWER_WORDS`` of ``answer_words``. A small model asked to answer in its own
    words often repeats its call instead of reading the result; held to the result's
    words, it has to pick from what the tool said. None when there is no result."""
    words = answer_words(results, task)
    if not words:
        return None
    word = "(" + "|".join(regex_escape(w) for w in words) + ")"
    return f"{word}( {word}){{0,{MAX_ANSWER_WORDS - 1}}}"


def _call(tool: str, text: str) -> str:
    return json.dumps({"tool": tool, "input": text}, ensure_ascii=False)


_STOP = _words("a an the is are was it what which how many much of to in on for do does")


def _features(text: str) -> set[str]:
    """Lower-case content words, "<num>" for any number, and operator symbols: what
    makes two tasks look alike."""
    words = {w for w in _WORD.findall(text.lower()) if w not in _STOP}
    numbers = {"<num>"} if any(w.isdigit() for w in words) else set()
    return {w for w in words if not w.isdigit()} | numbers | set(re.findall(r"[-+*/%^]", text))


def by_similarity(task: str, tools: Mapping[str, Tool]) -> list[Tool]:
    """The tools ordered by how many of ``task``'s words their example task and keywords
    share, least first: a small model leans on the last example it read, so the most
    relevant one goes last (choosing in-context examples by similarity, as in Liu et al.,
    2022, "What Makes Good In-Context Examples for GPT-3?"). The model still decides."""
    mine = _features(task)

    def score(tool: Tool) -> int:
        return len(mine & (_features(tool.example[0]) | tool.keywords))

    return sorted(tools.values(), key=score)  # stable: ties keep the table's order


def prompt_prefix(tools: Mapping[str, Tool], task: str = "") -> list[Message]:
    """The system turn and one worked example per tool (few-shot: a small model copies the
    format far more reliably than it follows a description of it), the example most like
    ``task`` last."""
    lines = [f"- {t.name}: {t.description}" for t in tools.values()]
    quoted = ", copied from the result" if tools else ", short"
    lines.append(f"- {ANSWER}: your final answer{quoted}")
    if tools:
        rule = "Call one tool per reply, read its result, then give the answer."
    else:
        rule = "You have no tools: give the answer straight away."
    system = (
        'You solve tasks. Reply with one JSON object: {"tool": NAME, "input": TEXT}.\n'
        "Tools:\n" + "\n".join(lines) + "\n" + rule
    )
    messages: list[Message] = [{"role": "system", "content": system}]
    for tool in by_similarity(task, tools):
        example, given, result, answer = tool.example
        messages += [
            {"role": "user", "content": f"Task: {example}"},
            {"role": "assistant", "content": _call(tool.name, given)},
            {"role": "user", "content": f"Result: {result}"},
            {"role": "assistant", "content": _call(ANSWER, answer)},
        ]
    if not tools:
        messages += [
            {"role": "user", "content": "Task: What is 23 * 19?"},
            {"role": "assistant", "content": _call(ANSWER, "437")},
        ]
    return messages


def parse_call(text: str) -> dict[str, str]:
    """The first JSON object in ``text`` as {"tool", "input"}; ValueError says what is wrong."""
    start = text.find("{")
    if start < 0:
        raise ValueError("the reply has no JSON object")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as exc:
        raise ValueError(f"the reply is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict) or not isinstance(value.get("tool"), str):
        raise ValueError('the reply has no "tool" name')
    given = value.get("input", "")
    given = given if isinstance(given, str) else json.dumps(given)
    return {"tool": value["tool"].strip(), "input": given.strip()}


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fold(step: Step) -> str:
    """One step in the summary line: its call and the start of its result."""
    if step.call is None:
        return "an unreadable reply"
    result = _clip(step.observation or "", 40)
    return f"{step.call['tool']}({_clip(step.call['input'], 30)}) gave {result}"


def summary_line(steps: Sequence[Step], limit: int = SUMMARY_CHARS) -> str:
    """The folded ``steps`` as one line of at most about ``limit`` characters: the most
    recent ones, and a count of the older ones that no longer fit."""
    kept: list[str] = []
    for step in reversed(steps):
        part = _fold(step)
        if kept and sum(len(k) + 2 for k in kept) + len(part) > limit:
            break
        kept.insert(0, part)
    omitted = len(steps) - len(kept)
    head = f"({omitted} older step{'s' if omitted > 1 else ''} omitted) " if omitted else ""
    return head + "; ".join(kept)


def _conversation(
    prefix: list[Message], task: str, steps: list[Step], folded: int
) -> list[Message]:
    """prefix + the task (with the summary of the first ``folded`` steps) + the rest."""
    head = f"Task: {task}"
    if folded:
        head += "\nEarlier steps, summarised: " + summary_line(steps[:folded])
    messages = [*prefix, {"role": "user", "content": head}]
    for step in steps[folded:]:
        messages.append({"role": "assistant", "content": step.text.strip() or "{}"})
        messages.append({"role": "user", "content": step.observation or ""})
    return messages


def _step_schema(
    tools: Mapping[str, Tool], task: str, steps: Sequence[Step], *, last: bool
) -> dict[str, Any]:
    """A constrained step's schema: with tools, calls until one has given a result
    ("tool_choice: required"), then the answer may come, quoted from the results; the
    last step must answer."""
    results = [s.observation.removeprefix("Result: ") for s in steps if s.status == "tool"]
    if not tools:
        return call_schema(tools)
    return call_schema(
        tools,
        may_answer=bool(results),
        may_call=not (last and results),
        answer_pattern=answer_pattern(results, task),
        task=task,
    )


def run_agent(
    task: str,
    tools: Mapping[str, Tool],
    complete: Complete,
    *,
    constrained: bool = True,
    max_steps: int = 4,
    budget: int = 1_024,
    count_tokens: CountTokens | None = None,
    emit: Emit = no_emit,
) -> AgentRun:
    """Run the loop on ``task`` with ``tools`` (none: the model must answer directly).

    ``budget`` bounds the prompt in tokens (counted by ``count_tokens``; without one,
    never folded); the few-shot prefix and the task always stay. Each finished step is
    emitted as ``partial`` with ``step`` (the Step as a dict).
    """
    if not 1 <= max_steps <= MAX_STEPS:
        raise ValueError(f"max_steps must be 1 to {MAX_STEPS}")
    prefix = prompt_prefix(tools, task)
    run = AgentRun(task, list(tools), constrained, budget=budget)
    folded = 0
    for index in range(1, max_steps + 1):
        messages = _conversation(prefix, task, run.steps, folded)
        used = count_tokens(messages) if count_tokens else 0
        # fold while over budget, but keep the latest step whole: its result is what the
        # model must read next
        if count_tokens and used > budget and folded < len(run.steps) - 1:
            before, dropped_from = used, folded
            while used > budget and folded < len(run.steps) - 1:
                folded += 1  # fold the oldest remaining step, then measure again
                messages = _conversation(prefix, task, run.steps, folded)
                used = count_tokens(messages)
            dropped = run.steps[dropped_from:folded]
            run.summaries.append(
                Summary(
                    at_step=index,
                    dropped_steps=[s.index for s in dropped],
                    dropped=[f"{s.text.strip()} → {s.observation}" for s in dropped],
                    summary=summary_line(run.steps[:folded]),
                    tokens_before=before,
                    tokens_after=used,
                )
            )
        schema = (
            _step_schema(tools, task, run.steps, last=index == max_steps) if constrained else None
        )
        reply = complete(messages, schema)
        step = Step(index, reply.text, None, None, "unparseable", reply.tokens, reply.ms)
        step.prompt_tokens = used
        try:
            step.call = parse_call(reply.text)
        except ValueError as exc:
            step.observation = (
                f'Error: {exc}. Reply with one JSON object {{"tool": ..., "input": ...}}.'
            )
        if step.call is not None:
            name, given = step.call["tool"], step.call["input"]
            if name == ANSWER:
                step.status, run.answer, run.stopped = "answer", given, "answer"
            elif name not in tools:
                step.status = "unknown_tool"
                known = ", ".join([*tools, ANSWER])
                step.observation = (
                    f"Error: there is no tool '{_clip(name, 30)}'; use one of {known}."
                )
            elif len(given) > MAX_INPUT_CHARS:
                step.status = "tool_error"
                step.observation = f"Error: the input is over {MAX_INPUT_CHARS} characters."
            else:
                started = time.perf_counter()
                try:
                    result = tools[name].run(given)
                    step.status = "tool"
                    step.observation = f"Result: {_clip(result, MAX_OBSERVATION_CHARS)}"
                except ToolError as exc:
                    step.status = "tool_error"
                    step.observation = f"Error: {_clip(str(exc), MAX_OBSERVATION_CHARS)}"
                except Exception as exc:  # a tool's own fault is still one failed step
                    step.status = "tool_error"
                    step.observation = f"Error: the {name} tool failed ({type(exc).__name__})"
                step.tool_ms = (time.perf_counter() - started) * 1e3
        run.steps.append(step)
        emit("partial", step={**asdict(step), "failed": step.failed})
        if step.status == "answer":
            break
    return run


# -- the task set ----------------------------------------------------------------------

TASKS_FILE = Path(__file__).parent / "data" / "agent_tasks.json"
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.IGNORECASE)


@cache
def task_set() -> dict[str, Any]:
    """The built-in tasks: {"today": "YYYY-MM-DD", "tasks": [{id, kind, task, answer,
    check ("number" | "text"), tolerance?, accept?}]}."""
    return json.loads(TASKS_FILE.read_text(encoding="utf-8"))


def task_today() -> dt.date:
    return dt.date.fromisoformat(task_set()["today"])


def is_correct(answer: str | None, item: Mapping[str, Any]) -> bool:
    """Whether an agent's ``answer`` solves the task ``item``.

    "number": some number in the answer is within ``tolerance`` (relative, default 0.5 %)
    of the expected one (thousands separators ignored); "text": the answer contains one
    of ``accept`` (case-insensitive).
    """
    if not answer:
        return False
    if item["check"] == "number":
        expected = float(item["answer"])
        tolerance = float(item.get("tolerance", 0.005))
        for token in _NUMBER.findall(re.sub(r"(?<=\d),(?=\d{3})", "", answer)):
            value = float(token)
            if abs(value - expected) <= tolerance * max(abs(expected), 1e-9):
                return True
        return False
    accept = item.get("accept") or [item["answer"]]
    return any(a.lower() in answer.lower() for a in accept)
