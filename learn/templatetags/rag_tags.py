"""Chapter 6's template helpers: chunks highlighted over their text, citations as links."""

from __future__ import annotations

import itertools
import re
from typing import Any

from django import template
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()
CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


@register.simple_tag
def chunk_spans(text: str, spans: list[list[int]]) -> SafeString:
    """``text`` with each [start, end, tokens] span marked (alternating shades, overlaps
    darker); the text after the last span is left out."""
    if not spans:
        return mark_safe("")
    cuts = sorted({0, *(s for s, _, _ in spans), *(e for _, e, _ in spans)})
    cuts = [c for c in cuts if c <= max(e for _, e, _ in spans)]
    parts = []
    for lo, hi in itertools.pairwise(cuts):
        covering = [i for i, (s, e, _) in enumerate(spans) if s <= lo and hi <= e]
        piece = escape(text[lo:hi])
        if not covering:
            parts.append(piece)
            continue
        shade = "overlap" if len(covering) > 1 else f"c{covering[0] % 2}"
        first = covering[0]
        title = f"chunk {first + 1}: {spans[first][2]} tokens"
        parts.append(format_html('<mark class="{}" title="{}">{}</mark>', shade, title, piece))
    return mark_safe("".join(str(p) for p in parts))


@register.simple_tag(takes_context=True)
def cited(context: dict[str, Any], answer: str, chunks: list[dict[str, Any]]) -> SafeString:
    """The answer with each [n] (or [n, m]) linked to the chunk given to the model as [n]."""
    run = context.get("run")
    given = {row["final_rank"] for row in chunks if row.get("final_rank")}
    out, at = [], 0
    for match in CITATION.finditer(answer):
        out.append(escape(answer[at : match.start()]))
        links = []
        for n in (int(x) for x in match.group(1).split(",")):
            if n in given and run is not None:
                links.append(format_html('<a href="#rag-chunk-{}-{}">{}</a>', run.id, n, n))
            else:
                links.append(
                    format_html('<span class="bad-cite" title="no such chunk">{}</span>', n)
                )
        out.append(mark_safe("[" + ", ".join(str(link) for link in links) + "]"))
        at = match.end()
    out.append(escape(answer[at:]))
    return mark_safe("".join(str(part) for part in out))
