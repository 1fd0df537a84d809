"""The course as a knowledge base: each chapter's lesson rendered and turned into plain text.

``course_lessons()`` renders every lesson template (``learn.chapters.CHAPTERS``) the way the
chapter page does, minus the playgrounds, and parses the HTML into text with one
``Section`` per ``<section id="…">``, located by character offsets into the lesson's text.
Retrieval (chunking, BM25, embeddings) and its evaluation data work on this text, so what
a learner is told about the course is exactly what the pages say.

The text keeps the page's shape in plain form: headings on lines of their own, paragraphs
separated by blank lines, list items as ``- …`` lines, table rows as ``a | b`` lines, lesson
code (``<pre>``) verbatim. Playgrounds, forms, scripts and drawings (``<svg>``) are dropped.

Django side, no database: it needs ``django.setup()`` for the template engine and URL
names, and imports no torch and nothing from ``workers``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from django.template import engines
from django.template.loader import render_to_string

from learn.chapters import CHAPTERS, Chapter


@dataclass(frozen=True)
class Section:
    """One ``<section id>`` of a lesson: ``lesson.text[start:end]`` is its text, heading first."""

    id: str
    title: str
    start: int  # character offset into Lesson.text, inclusive
    end: int  # character offset into Lesson.text, exclusive


@dataclass(frozen=True)
class Lesson:
    """A chapter's lesson as plain text, with its sections in page order."""

    slug: str
    title: str
    text: str
    sections: list[Section] = field(default_factory=list)

    def section(self, section_id: str) -> Section | None:
        """The section with this id, or ``None``."""
        return next((s for s in self.sections if s.id == section_id), None)

    def section_text(self, section_id: str) -> str:
        """The text of one section ('' when there is no such section)."""
        found = self.section(section_id)
        return self.text[found.start : found.end] if found else ""


def course_lessons() -> list[Lesson]:
    """Every written lesson of the course, in chapter order (cached after the first call)."""
    return list(_lessons())


def lesson(slug: str) -> Lesson | None:
    """The lesson of the chapter with this slug, or ``None``."""
    return next((found for found in _lessons() if found.slug == slug), None)


@functools.cache
def _lessons() -> tuple[Lesson, ...]:
    return tuple(lesson_from_chapter(c) for c in CHAPTERS if c.lesson_template)


def lesson_from_chapter(chapter: Chapter) -> Lesson:
    """Render one chapter's lesson template without playgrounds and parse it into text."""
    assert chapter.lesson_template is not None
    context = {"chapter": chapter, "chapters": CHAPTERS, "playgrounds": _NoPlaygrounds()}
    html = render_to_string(chapter.lesson_template, context)
    text, sections = html_to_text(html)
    return Lesson(slug=chapter.slug, title=chapter.title, text=text, sections=sections)


class _StubPlayground:
    """Stands in for every playground a lesson includes: the include renders harmless
    markup (a ``<section class="playground">`` the parser drops) and no form template."""

    slug = "stub"
    title = summary = queue = ""
    time_limit = 0
    uploads = False

    @functools.cached_property
    def form_template(self) -> Any:
        return engines["django"].from_string("")


class _NoPlaygrounds(dict[str, _StubPlayground]):
    """``playgrounds.<anything>`` resolves to the stub, so any lesson renders offline."""

    def __missing__(self, key: str) -> _StubPlayground:
        return _StubPlayground()


# ------------------------------------------------------------------------ HTML → text

_BLOCK = {
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "pre", "figcaption", "tr", "div",
    "ul", "ol", "table", "figure", "blockquote", "dl", "dt", "dd", "header", "footer",
    "aside", "nav", "article", "section", "details", "summary",
}  # fmt: skip
_DROPPED = {"script", "style", "form", "svg", "template", "noscript", "button", "select"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr"}  # fmt: skip
_SPACES = re.compile(r"\s+")
_BLANK_RUNS = re.compile(r"\n{3,}")


def html_to_text(html: str) -> tuple[str, list[Section]]:
    """Plain text of a lesson's HTML and its sections (offsets into that text)."""
    parser = _LessonParser()
    parser.feed(html)
    parser.close()
    return parser.finish()


@dataclass
class _OpenSection:
    """A section being read: its title once its first h2 closes, its start at its first text."""

    id: str
    title: str = ""
    start: int | None = None


class _LessonParser(HTMLParser):
    """Collects blocks of text; the section bookkeeping rides on the block boundaries."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []  # pieces of the final text
        self.length = 0  # characters in out
        self.last_kind = ""  # "para", "item" or "row": how the next block is separated
        self.buffer: list[str] = []  # inline text of the block being read
        self.stack: list[str] = []  # open elements
        self.drop_depth: int | None = None  # stack depth where dropped markup began
        self.pre = 0  # inside <pre>: keep whitespace
        self.cells: list[str] | None = None  # the table row being read
        self.section: _OpenSection | None = None  # the open <section id>
        self.section_depth = 0
        self.heading: list[str] | None = None  # the open h2 of the section, when recording
        self.sections: list[Section] = []

    # -- tags
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            if tag == "br" and self.drop_depth is None:
                self.buffer.append("\n" if self.pre else " ")
            return
        self.stack.append(tag)
        if self.drop_depth is not None:
            return
        attr = dict(attrs)
        if tag in _DROPPED or "playground" in (attr.get("class") or "").split():
            self.drop_depth = len(self.stack)
            return
        if tag in _BLOCK:
            self._flush(kind=self._open_kind())
        if tag == "section" and attr.get("id") and self.section is None:
            self.section = _OpenSection(attr["id"])
            self.section_depth = len(self.stack)
        elif tag == "h2" and self.section is not None and not self.section.title:
            self.heading = []
        elif tag == "pre":
            self.pre += 1
        elif tag == "tr":
            self.cells = []
        elif tag in {"td", "th"} and self.cells is not None:
            self._flush_cell()
        elif tag == "sup":
            self.buffer.append("^")

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.stack:
            return  # a stray end tag
        while self.stack:
            depth = len(self.stack)
            open_tag = self.stack.pop()
            if self.drop_depth is not None:
                if depth == self.drop_depth:
                    self.drop_depth = None
            else:
                self._close(open_tag, depth)
            if open_tag == tag:
                break

    def _close(self, tag: str, depth: int) -> None:
        if tag in {"td", "th"} and self.cells is not None:
            self._flush_cell()
        elif tag == "tr" and self.cells is not None:
            self._flush_cell()
            cells, self.cells = self.cells, None
            self._emit(" | ".join(c for c in cells if c), "row")
            return
        if tag in _BLOCK:
            self._flush(kind="item" if tag == "li" else "para")
        if tag == "pre":
            self.pre -= 1
        elif tag == "h2" and self.heading is not None and self.section is not None:
            self.section.title = _SPACES.sub(" ", "".join(self.heading)).strip()
            self.heading = None
        elif tag == "section" and self.section is not None and depth == self.section_depth:
            opened, self.section = self.section, None
            start = self.length if opened.start is None else opened.start
            self.sections.append(Section(opened.id, opened.title or opened.id, start, self.length))

    def _open_kind(self) -> str:
        """How text read so far closes: as a list item if its nearest open block is a li."""
        for tag in reversed(self.stack[:-1]):
            if tag in _BLOCK:
                return "item" if tag == "li" else "para"
        return "para"

    # -- text
    def handle_data(self, data: str) -> None:
        if self.drop_depth is not None:
            return
        self.buffer.append(data)
        if self.heading is not None:
            self.heading.append(data)

    def _flush_cell(self) -> None:
        assert self.cells is not None
        self.cells.append(_SPACES.sub(" ", "".join(self.buffer)).strip())
        self.buffer = []

    def _flush(self, kind: str = "para") -> None:
        raw = "".join(self.buffer)
        self.buffer = []
        if self.cells is not None:  # text between cells of a row: keep it with the row
            self.buffer.append(raw)
            return
        if self.pre:
            lines = [line.rstrip() for line in raw.split("\n")]
            while lines and not lines[0]:
                lines.pop(0)
            text = _BLANK_RUNS.sub("\n\n", "\n".join(lines)).rstrip()  # one blank line at most
        else:
            text = _SPACES.sub(" ", raw).strip()
        if text:
            self._emit(f"- {text}" if kind == "item" else text, kind)

    def _emit(self, text: str, kind: str) -> None:
        if not text:
            return
        if self.out:
            sep = "\n" if kind == self.last_kind and kind in {"item", "row"} else "\n\n"
            self.out.append(sep)
            self.length += len(sep)
        if self.section is not None and self.section.start is None:
            self.section.start = self.length
        self.out.append(text)
        self.length += len(text)
        self.last_kind = kind

    def finish(self) -> tuple[str, list[Section]]:
        self._flush()
        return "".join(self.out), self.sections
