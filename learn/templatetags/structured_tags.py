"""The structured-output playground's template helpers: the built-in example schemas."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import template

from learn.playgrounds.structured import EXAMPLES, schema_text

register = template.Library()


@register.simple_tag
def structured_examples() -> list[dict[str, Any]]:
    """Each example as {key, title, prompt, schema (indented JSON), query}: ``query`` is the
    query string that fills the form with it (static/js/app.js reads it on load)."""
    return [
        {
            "key": key,
            "title": ex["title"],
            "prompt": ex["prompt"],
            "schema": schema_text(ex["schema"]),
            "query": urlencode(
                {"answer_schema": schema_text(ex["schema"]), "prompt": ex["prompt"]}
            ),
        }
        for key, ex in EXAMPLES.items()
    ]
