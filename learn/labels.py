"""Validation errors in a learner's words: each field named as its form label says it.

A field's label comes from its schema (``Field(title=…)``) when it has one, else from the
playground's form template (``<label>max new tokens <input name="max_new_tokens">``, a
``<label for=…>``, or a fieldset's ``<legend>`` for a group of checkboxes), else from its
name. Pydantic's messages ("Input should be a valid integer, unable to parse string as an
integer") become sentences (``plain_words``): "must be a whole number, such as 5".
"""

from __future__ import annotations

import re
from functools import cache
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

from django.template.loader import get_template

if TYPE_CHECKING:
    from learn.playgrounds import Playground

TEMPLATE_TAG = re.compile(r"{[{%#].*?[}%#]}", re.S)
INCLUDE = re.compile(r"""{%\s*include\s+["']([^"']+)["']""")
FORM_PART = re.compile(r"{%\s*partialdef\s+form\b.*?%}(.*?){%\s*endpartialdef", re.S)
ASIDE = re.compile(r"\s*\([^)]*\)")  # "(up to 160 tokens)": a hint, not the field's name


class _LabelReader(HTMLParser):
    """Collects ``{input name: label text}`` from a form's HTML (template tags removed)."""

    SILENT = frozenset({"textarea", "select", "option", "button", "script"})

    def __init__(self) -> None:
        super().__init__()
        self.labels: dict[str, str] = {}
        self.by_id: dict[str, str] = {}  # input id -> name, for <label for=id>
        self.for_ids: dict[str, str] = {}  # id -> that label's text
        self.label: list[str] | None = None  # the open <label>'s text so far
        self.label_for = ""
        self.label_names: list[str] = []
        self.legend: list[str] | None = None
        self.groups: list[tuple[list[str], list[str]]] = []  # open fieldsets: (legend, names)
        self.silent = 0
        self.boxes: dict[str, int] = {}  # checkboxes and radios of each name
        self.legended: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "fieldset":
            self.groups.append(([], []))
        elif tag == "legend":
            self.legend = []
        elif tag == "label":
            self.label, self.label_for, self.label_names = [], a.get("for", ""), []
        if tag in {"input", "select", "textarea"} and a.get("name"):
            name, kind = a["name"], a.get("type", "")
            if a.get("id"):
                self.by_id[a["id"]] = name
            if self.groups:
                self.groups[-1][1].append(name)
            if kind in {"radio", "checkbox"}:  # a box of a group is labelled by its option
                self.boxes[name] = self.boxes.get(name, 0) + 1
            if self.label is not None and kind != "radio":
                self.label_names.append(name)
        if tag in self.SILENT:
            self.silent += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SILENT:
            self.silent = max(0, self.silent - 1)
        elif tag == "legend" and self.legend is not None and self.groups:
            self.groups[-1][0].extend(self.legend)
            self.legend = None
        elif tag == "label" and self.label is not None:
            text = tidy("".join(self.label))
            for name in self.label_names:
                if self.boxes.get(name, 0) < 2:
                    self.labels.setdefault(name, text)
            if self.label_for:
                self.for_ids[self.label_for] = text
            self.label = None
        elif tag == "fieldset" and self.groups:
            legend, names = self.groups.pop()
            for name in names:  # a group's legend names it better than one box's label
                if legend:
                    self.labels[name] = tidy("".join(legend))
                    self.legended.add(name)

    def handle_data(self, data: str) -> None:
        if self.silent:
            return
        if self.legend is not None:
            self.legend.append(data)
        elif self.label is not None:
            self.label.append(data)

    def result(self) -> dict[str, str]:
        for element_id, text in self.for_ids.items():
            if element_id in self.by_id:
                self.labels.setdefault(self.by_id[element_id], text)
        grouped = {name for name, n in self.boxes.items() if n > 1}  # no legend: no label
        return {
            name: text
            for name, text in self.labels.items()
            if text and (name not in grouped or name in self.legended)
        }


def tidy(text: str) -> str:
    """ "layer (0–29) " -> "layer", "Texts, one per line" -> "Texts"; a one-letter label
    keeps its aside: "k (hashes)"."""
    text = " ".join(text.split()).rstrip(":= ")
    short = ASIDE.sub("", text).split(",")[0].strip()
    return short if len(short) > 2 else text


def _source(name: str, depth: int = 0) -> str:
    """A template's text with its includes inlined (two levels deep at most)."""
    text = get_template(name).template.source  # type: ignore[attr-defined]
    if depth < 2:
        text = INCLUDE.sub(lambda m: _source(m.group(1), depth + 1), text)
    return text


@cache
def _template_labels(template: str) -> dict[str, str]:
    try:
        source = _source(template)
    except Exception:  # no template (a hidden playground): names will do
        return {}
    found = FORM_PART.search(source)
    reader = _LabelReader()
    reader.feed(TEMPLATE_TAG.sub(" ", found.group(1) if found else source))
    return reader.result()


def form_labels(playground: Playground) -> dict[str, str]:
    """``{field name: label}`` for a playground's parameters: titles, then its form's labels."""
    labels = dict(_template_labels(playground.template))
    for name, info in playground.params.model_fields.items():
        if info.title:
            labels[name] = info.title
    return labels


def field_label(name: str, labels: dict[str, str]) -> str:
    """The field as the form names it, else its name in words ("max_new_tokens" -> "max new
    tokens")."""
    return labels.get(name) or name.replace("_", " ")


def capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _count(n: Any, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def plain_words(error: Any) -> tuple[str, bool]:
    """``(words, tail)``: with ``tail``, the end of a sentence whose subject is the field
    (``must be a whole number (you sent "abc").``); without, a message of its own: the
    checks of our schemas keep theirs, unknown kinds keep pydantic's."""
    kind, ctx = error["type"], error.get("ctx") or {}
    given = error.get("input")
    sent = f" (you sent {given!r})" if isinstance(given, int | float | str) and given != "" else ""
    strict = isinstance(given, str | bool) and not isinstance(given, float)
    phrases: dict[str, str] = {
        "missing": "is required.",
        "int_parsing": f"must be a whole number, such as 5{sent}.",
        "int_from_float": f"must be a whole number, without a fraction{sent}.",
        "int_type": 'must be a whole number: send a JSON integer such as 5, not "5".'
        if strict
        else f"must be a whole number{sent}.",
        "float_parsing": f"must be a number, such as 0.5{sent}.",
        "float_type": "must be a number: send a JSON number such as 0.5, not a string or "
        "true/false.",
        "bool_parsing": "must be true or false (ticked or not).",
        "bool_type": "must be true or false: send true or false, not 0/1 or a string.",
        "finite_number": "must be a finite number (not NaN or infinity).",
        "greater_than_equal": f"must be greater than or equal to {ctx.get('ge')}{sent}.",
        "greater_than": f"must be greater than {ctx.get('gt')}{sent}.",
        "less_than_equal": f"must be less than or equal to {ctx.get('le')}{sent}.",
        "less_than": f"must be less than {ctx.get('lt')}{sent}.",
        "string_too_short": "cannot be empty."
        if ctx.get("min_length") == 1
        else f"needs at least {_count(ctx.get('min_length'), 'character')}.",
        "string_too_long": f"takes at most {_count(ctx.get('max_length'), 'character')}; "
        f"this has {len(given) if isinstance(given, str) else 'more'}.",
        "too_short": f"needs at least {_count(ctx.get('min_length'), 'value')}; "
        f"you gave {ctx.get('actual_length')}.",
        "too_long": f"takes at most {_count(ctx.get('max_length'), 'value')}; "
        f"you gave {ctx.get('actual_length')}.",
        "literal_error": f"must be one of {ctx.get('expected')}{sent}.",
        "enum": f"must be one of {ctx.get('expected')}{sent}.",
        "extra_forbidden": "is not a parameter of this playground: GET /api/playgrounds "
        "lists each one's parameters.",
        "string_type": "must be text.",
        "list_type": "must be a list of values.",
        "model_type": 'The parameters must be a JSON object, such as {"name": value}.',
        "dict_type": 'The parameters must be a JSON object, such as {"name": value}.',
        "model_attributes_type": 'The parameters must be a JSON object, such as {"name": value}.',
        "uuid_parsing": f"must be an id such as 0b1c…-…{sent}.",
    }
    if kind in phrases:
        return phrases[kind], not kind.endswith(("model_type", "dict_type", "attributes_type"))
    message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    return (message if message.endswith((".", "?", "!")) else f"{message}."), False
