"""Instruction/response pairs to fine-tune on: the built-in set, or a learner's own.

No torch here: the web process reads this module to check a form before anything is
queued. The built-in set (``data/lora_pairs.json``, written for this site) answers every
instruction in a pirate voice that opens with a fixed marker, "Arr, matey!", so whether the
style took is visible at a glance and countable: the share of answers that open with it.

A learner's pairs come as JSON lines::

    {"instruction": "What is rain?", "response": "Water falling from clouds."}

or as blocks of text::

    ### Instruction
    What is rain?
    ### Response
    Water falling from clouds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA = Path(__file__).parent / "data" / "lora_pairs.json"
MAX_PAIRS = 200
MIN_PAIRS = 2
MAX_INSTRUCTION_CHARS = 400
MAX_RESPONSE_CHARS = 600
_HEADER = re.compile(r"^###\s*(instruction|response)\s*:?\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Pair:
    instruction: str
    response: str


@dataclass(frozen=True)
class BuiltinSet:
    pairs: tuple[Pair, ...]
    heldout: tuple[str, ...]  # instructions not in ``pairs``, answered before and after
    marker: str  # every built-in response opens with it


@cache
def builtin() -> BuiltinSet:
    """The site's own ~50 pirate-voiced pairs, held-out prompts and the style marker."""
    raw = json.loads(DATA.read_text(encoding="utf-8"))
    pairs = tuple(Pair(p["instruction"], p["response"]) for p in raw["pairs"])
    return BuiltinSet(pairs=pairs, heldout=tuple(raw["heldout"]), marker=raw["marker"])


def _letters(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def has_marker(answer: str, marker: str, where: str = "start") -> bool:
    """Does ``answer`` open (``where="start"``) or close (``"end"``) with ``marker``, case,
    spacing and punctuation aside?"""
    if where == "end":
        return _letters(answer).endswith(_letters(marker))
    return _letters(answer).startswith(_letters(marker))


def common_marker(responses: list[str]) -> tuple[str, str] | None:
    """What every response shares, as (text, "start" | "end"): the longer of the whole words
    they all open with and those they all close with (the opening on a tie); None when they
    share neither. A learner's own style marker, counted before and after as the built-in
    set's is."""
    split = [r.split() for r in responses if r.split()]
    if len(split) < 2:
        return None
    found = []
    for where, ordered in (("start", split), ("end", [w[::-1] for w in split])):
        shared = []
        for words in zip(*ordered, strict=False):
            if len({_letters(w) for w in words}) != 1 or not _letters(words[0]):
                break
            shared.append(words[0])
        text = " ".join(shared if where == "start" else shared[::-1])
        found.append((len(_letters(text)), where == "start", text, where))
    length, _, text, where = max(found)
    return (text, where) if length else None


def _checked(pairs: list[Pair]) -> list[Pair]:
    if len(pairs) < MIN_PAIRS:
        raise ValueError(f"found {len(pairs)} pair(s); give at least {MIN_PAIRS} to fine-tune on")
    if len(pairs) > MAX_PAIRS:
        raise ValueError(f"found {len(pairs)} pairs; at most {MAX_PAIRS}, please")
    for number, pair in enumerate(pairs, 1):
        if not pair.instruction or not pair.response:
            raise ValueError(f"pair {number} has an empty instruction or response")
        if len(pair.instruction) > MAX_INSTRUCTION_CHARS:
            raise ValueError(
                f"pair {number}'s instruction is {len(pair.instruction)} characters; "
                f"shorten it to at most {MAX_INSTRUCTION_CHARS}"
            )
        if len(pair.response) > MAX_RESPONSE_CHARS:
            raise ValueError(
                f"pair {number}'s response is {len(pair.response)} characters; "
                f"shorten it to at most {MAX_RESPONSE_CHARS}"
            )
    return pairs


def _json_lines(text: str) -> list[Pair]:
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"line {number} is not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise ValueError(f"line {number} is nested too deeply to be a pair") from None
        if not isinstance(item, dict) or not {"instruction", "response"} <= item.keys():
            raise ValueError(f'line {number} should be {{"instruction": "…", "response": "…"}}')
        if not isinstance(item["instruction"], str) or not isinstance(item["response"], str):
            raise ValueError(f"line {number}: instruction and response must be strings")
        pairs.append(Pair(item["instruction"].strip(), item["response"].strip()))
    return pairs


def _blocks(text: str) -> list[Pair]:
    parts = _HEADER.split(text)  # [before, name, body, name, body, ...]
    if parts[0].strip():
        raise ValueError(
            "the text before the first '### Instruction' is not part of any pair; "
            "remove it or start with '### Instruction'"
        )
    pairs: list[Pair] = []
    heads = [(parts[i].lower(), parts[i + 1].strip()) for i in range(1, len(parts), 2)]
    for index in range(0, len(heads), 2):
        number = index // 2 + 1
        chunk = heads[index : index + 2]
        if [name for name, _ in chunk] != ["instruction", "response"]:
            raise ValueError(
                f"pair {number} should be '### Instruction' then '### Response', in that order"
            )
        pairs.append(Pair(chunk[0][1], chunk[1][1]))
    return pairs


def parse_pairs(text: str) -> list[Pair]:
    """A learner's pairs from JSON lines or '### Instruction / ### Response' blocks.

    Raises ValueError with a sentence naming the line or pair at fault.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError("paste some pairs, or pick the built-in set")
    if stripped.startswith("{"):
        return _checked(_json_lines(stripped))
    if not _HEADER.search(stripped):
        raise ValueError(
            'write each pair as a JSON line {"instruction": …, "response": …} '
            "or as '### Instruction' and '### Response' blocks"
        )
    return _checked(_blocks(stripped))
