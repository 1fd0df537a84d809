"""The course as a knowledge base (learn.knowledge) and the evaluation data written for it.

Most tests need Django's template engine but no database: a module fixture calls
``django.setup()`` (conftest has set the settings module). The last test fetches the
chapter 6 page from the running site.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "learn" / "lab" / "data"
TEMPLATES = ROOT / "templates"

# What the chapter 6 lesson must cover, one <section id> each.
RAG_SECTIONS = (
    "why-retrieval", "chunking", "retrieval", "reranking", "evaluation", "prompt",
    "citations", "semantic-cache", "cost", "planning", "next", "sources",
)  # fmt: skip
TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9-]*(\s[^<>]*)?/?>")
TEMPLATE_SYNTAX = re.compile(r"\{%|%\}|\{\{|\}\}|\{#|#\}")


@pytest.fixture(scope="module", autouse=True)
def django_ready() -> Iterator[None]:
    import django

    django.setup()
    yield


@pytest.fixture(scope="module")
def lessons() -> dict:
    from learn.knowledge import course_lessons

    return {found.slug: found for found in course_lessons()}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


# ------------------------------------------------------------------ the parser


def test_html_to_text_keeps_structure_and_drops_markup() -> None:
    from learn.knowledge import html_to_text

    html = """<p>before</p>
<section id="one">
  <h2>First <em>part</em></h2>
  <p class="lede">Some   <strong>bold</strong>
     text &amp; more.</p>
  <ul><li>alpha</li><li>beta <code>x &lt; y</code></li></ul>
  <pre><code>def f():
    return 1
</code></pre>
  <script>var hidden = 1;</script>
  <section class="playground" id="pg-x"><h3>Playground</h3><form><input name="q"></form></section>
  <figure><svg><text>drawn</text></svg><figcaption>A caption, R<sup>2</sup>.</figcaption></figure>
</section>
<section id="two"><h2>Second</h2>
  <table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table></section>"""
    text, sections = html_to_text(html)
    expected = (
        "before\n\nFirst part\n\nSome bold text & more.\n\n- alpha\n- beta x < y\n\n"
        "def f():\n    return 1\n\nA caption, R^2.\n\nSecond\n\na | b\n1 | 2"
    )
    assert text == expected
    assert [(s.id, s.title) for s in sections] == [("one", "First part"), ("two", "Second")]
    assert text[sections[0].start : sections[0].end] == expected[8 : expected.index("\n\nSecond")]
    assert text[sections[1].start : sections[1].end] == "Second\n\na | b\n1 | 2"


# ------------------------------------------------------------------ the lessons


def test_course_lessons_cover_all_six_chapters_in_order(lessons: dict) -> None:
    from learn.chapters import CHAPTERS

    assert list(lessons) == [c.slug for c in CHAPTERS]
    assert [found.title for found in lessons.values()] == [c.title for c in CHAPTERS]


def _with_includes(name: str) -> str:
    """A lesson template's source with its own partials ({% include "lessons/…" %}) inlined."""
    source = (TEMPLATES / name).read_text()
    return re.sub(r'{% include "(lessons/[^"]+)"[^%]*%}', lambda m: _with_includes(m[1]), source)


def test_sections_match_the_templates_and_slice_their_own_text(lessons: dict) -> None:
    from learn.chapters import get_chapter

    for slug, found in lessons.items():
        source = _with_includes(get_chapter(slug).lesson_template)
        in_template = re.findall(r'<section id="([^"]+)"', source)
        assert [s.id for s in found.sections] == in_template, slug
        previous_end = 0
        for section in found.sections:
            assert previous_end <= section.start < section.end <= len(found.text)
            body = found.text[section.start : section.end]
            assert body == body.strip() and body.startswith(section.title), (slug, section.id)
            assert len(_words(body)) >= 20, (slug, section.id)  # every section has real text
            previous_end = section.end


def test_text_has_no_markup_template_syntax_or_playground_forms(lessons: dict) -> None:
    for slug, found in lessons.items():
        assert not TAG.search(found.text), (slug, TAG.search(found.text))
        assert not TEMPLATE_SYNTAX.search(found.text), slug
        assert "&amp;" not in found.text and "&lt;" not in found.text, slug
        assert "\n\n\n" not in found.text and "  \n" not in found.text, slug
        assert "Runs as a job on a worker" not in found.text, slug  # the playground partial


def test_code_lists_and_entities_come_through_as_text(lessons: dict) -> None:
    hnsw = lessons["vector-search"].section_text("hnsw")
    assert "def search_layer(" in hnsw  # {% lab_source %} code, kept as text
    assert "\n- Greedy from the top down." in hnsw  # a list item
    pgvector = lessons["vector-search"].section_text("pgvector")
    assert "ORDER BY embedding <=> $1 LIMIT 10;" in pgvector  # &lt;=&gt; unescaped
    assert "R^384" in lessons["vector-search"].section_text("why-not-a-btree")


def test_course_lessons_are_fast_and_cached() -> None:
    from learn import knowledge

    knowledge._lessons.cache_clear()
    started = time.perf_counter()
    first = knowledge.course_lessons()
    assert time.perf_counter() - started < 1.0
    assert knowledge.course_lessons()[0] is first[0]


def test_chapter_six_lesson_has_every_promised_section(lessons: dict) -> None:
    found = lessons["rag-agents"]
    ids = [s.id for s in found.sections]
    assert all(section in ids for section in RAG_SECTIONS), ids
    assert "coming" not in ids  # the "still to be written" note is gone
    assert "c · √(ln N / n)" in found.section_text("planning")  # the MCTS section is kept
    text = found.text
    for phrase in ("BM25", "reciprocal-rank fusion", "MMR", "threshold", "time to live"):
        assert phrase.lower() in text.lower(), phrase


def test_chapter_six_template_keeps_mcts_and_guards_new_playgrounds() -> None:
    source = (TEMPLATES / "lessons" / "rag-agents.html").read_text()
    assert '{% include "learn/playground.html" with pg=playgrounds.mcts %}' in source
    for name in ("rag_ask", "rag_eval", "semantic_cache"):
        guarded = (
            f'{{% if playgrounds.{name} %}}{{% include "learn/playground.html" '
            f"with pg=playgrounds.{name} %}}{{% endif %}}"
        )
        assert guarded in source, name


# ------------------------------------------------------------------ the questions


def _questions() -> list[dict]:
    return json.loads((DATA / "rag_questions.json").read_text())


def test_rag_questions_point_at_sections_that_exist(lessons: dict) -> None:
    questions = _questions()
    assert len(questions) >= 70
    assert all(set(q) == {"question", "lesson", "section"} for q in questions)
    for q in questions:
        assert q["lesson"] in lessons, q
        assert lessons[q["lesson"]].section(q["section"]) is not None, q
        assert q["section"] not in {"sources", "what-to-try"}, q


def test_rag_questions_are_spread_across_chapters_and_unique() -> None:
    questions = _questions()
    per_lesson = Counter(q["lesson"] for q in questions)
    assert len(per_lesson) == 6 and min(per_lesson.values()) >= 8, per_lesson
    texts = [q["question"].strip().lower() for q in questions]
    assert len(set(texts)) == len(texts)
    assert all(q["question"].strip().endswith("?") for q in questions)


def test_rag_questions_are_not_copied_from_the_lessons(lessons: dict) -> None:
    """No question appears in the course text, nor shares a run of 7 words with it."""
    course = " ".join(" ".join(_words(found.text)) for found in lessons.values())
    for q in _questions():
        words = _words(q["question"])
        assert " ".join(words) not in course, q["question"]
        for i in range(len(words) - 6):
            assert " ".join(words[i : i + 7]) not in course, q["question"]


# ------------------------------------------------------------------ the cache pairs


def test_cache_pairs_are_balanced_labelled_and_without_duplicates() -> None:
    pairs = json.loads((DATA / "cache_pairs.json").read_text())
    assert len(pairs) >= 200
    assert all(set(p) == {"a", "b", "same"} and isinstance(p["same"], bool) for p in pairs)
    same = sum(p["same"] for p in pairs)
    assert 0.4 <= same / len(pairs) <= 0.6
    keys = [frozenset((p["a"].strip().lower(), p["b"].strip().lower())) for p in pairs]
    assert len(set(keys)) == len(keys)
    assert all(len(k) == 2 for k in keys)  # no question paired with itself


def test_cache_pairs_include_many_hard_negatives() -> None:
    """Negatives whose word sets overlap heavily (Jaccard ≥ 0.5): the ones that fool a cache."""
    pairs = json.loads((DATA / "cache_pairs.json").read_text())

    def jaccard(a: str, b: str) -> float:
        x, y = set(_words(a)), set(_words(b))
        return len(x & y) / len(x | y)

    hard = [p for p in pairs if not p["same"] and jaccard(p["a"], p["b"]) >= 0.5]
    assert len(hard) >= 60, len(hard)


# ------------------------------------------------------------------ the page


def test_the_chapter_six_page_renders_every_section(api: httpx.Client) -> None:
    response = api.get("/chapters/rag-agents/")
    assert response.status_code == 200
    for section in RAG_SECTIONS:
        assert f'<section id="{section}">' in response.text, section
    assert 'id="pg-mcts"' in response.text
