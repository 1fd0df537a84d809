"""Grounding a model in retrieved passages: the prompt, its token budget, and citations.

The retrieved chunks go into the user turn as numbered passages, best first, and the
system prompt asks the model to answer from them only, to cite them as ``[n]`` and to say
so when they do not hold the answer. A small model's context is small and every token
costs time, so chunks are added in rank order until the next one would overflow the
budget; that one and every later one are dropped (and reported, so a page can show what
the model never saw). ``citations`` reads the ``[n]`` markers back out of the answer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

DEFAULT_SYSTEM = (
    "You answer questions using only the numbered passages you are given. After each "
    "statement, cite the passage it comes from as [n]. If the passages do not contain the "
    "answer, say that they do not, and do not guess."
)
CLOSED_BOOK_SYSTEM = "Answer the question briefly. If you do not know the answer, say so."


@dataclass
class Prompt:
    """An assembled prompt. ``tokens`` counts system + user text (``count_tokens`` of each,
    so a chat template's few marker tokens are not included); chunk indices are positions
    in the ``chunks`` given to :func:`assemble` (0-based), passage ``[i + 1]`` for chunk i."""

    system: str
    user: str
    messages: list[dict[str, str]]  # [{"role": "system", ...}, {"role": "user", ...}]
    tokens: int
    budget: int
    used_chunks: list[int]
    dropped_chunks: list[int]


def user_text(question: str, chunks: Sequence[str]) -> str:
    """The user turn: the passages numbered from 1, then the question."""
    passages = "\n\n".join(f"[{i}] {c.strip()}" for i, c in enumerate(chunks, start=1))
    return f"Passages:\n{passages or '(none)'}\n\nQuestion: {question.strip()}"


def assemble(
    question: str,
    chunks: Sequence[str],
    *,
    count_tokens: Callable[[str], int],
    budget: int,
    system: str = DEFAULT_SYSTEM,
) -> Prompt:
    """The grounded prompt holding as many of ``chunks`` (best first) as ``budget`` allows.

    ``count_tokens`` measures a text in the generating model's tokens; ``budget`` is the
    most tokens the system and user text may take together.
    """
    fixed = count_tokens(system)
    needed = fixed + count_tokens(user_text(question, []))
    if needed > budget:
        raise ValueError(
            f"The instructions and the question alone take {needed} tokens, more than the "
            f"budget of {budget}: raise the budget or shorten the question."
        )
    used: list[int] = []
    tokens = needed
    for i in range(len(chunks)):
        candidate = fixed + count_tokens(user_text(question, chunks[: i + 1]))
        if candidate > budget:
            break  # this chunk overflows: it and every later one are dropped
        used.append(i)
        tokens = candidate
    user = user_text(question, chunks[: len(used)])
    return Prompt(
        system=system,
        user=user,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        tokens=tokens,
        budget=budget,
        used_chunks=used,
        dropped_chunks=list(range(len(used), len(chunks))),
    )


def closed_book(question: str) -> list[dict[str, str]]:
    """Messages asking the same question with no passages: what the model knows by itself."""
    return [
        {"role": "system", "content": CLOSED_BOOK_SYSTEM},
        {"role": "user", "content": question.strip()},
    ]


_CITE = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")  # [2], [1, 3], [ 4 ]


def citations(answer: str, n_chunks: int) -> list[int]:
    """Passage numbers (1-based, as in the prompt) that ``answer`` cites with ``[n]`` or
    ``[n, m]``, unique, in order of first appearance; numbers outside 1..n_chunks (a
    passage that was never given) are left out."""
    out: list[int] = []
    for m in _CITE.finditer(answer):
        for num in (int(x) for x in m.group(1).split(",")):
            if 1 <= num <= n_chunks and num not in out:
                out.append(num)
    return out
