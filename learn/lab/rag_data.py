"""Chapter 6's built-in data, written for this project: questions about the lessons with
the section that answers each, and question pairs labelled same or different meaning."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"


@cache
def rag_questions() -> tuple[dict[str, Any], ...]:
    """[{question, lesson, section}]: ``section`` is the id of the lesson's <section> that
    answers the question."""
    return tuple(json.loads((DATA / "rag_questions.json").read_text()))


@cache
def cache_pairs() -> tuple[dict[str, Any], ...]:
    """[{a, b, same}]: two questions, and whether one answer serves both."""
    return tuple(json.loads((DATA / "cache_pairs.json").read_text()))
