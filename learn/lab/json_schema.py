"""JSON schemas as the structured-output playground takes them: bounded, checked, and
answers validated against them. No torch: the web process checks a form with this.

- ``schema_problem(schema)``: why a schema is refused (too many properties, too deep, not
  valid JSON Schema, or one the structured-output engine cannot compile), or None;
- ``EXAMPLES``: built-in schemas with a prompt each (person, review, event, order);
- ``check_answer(text, schema)``: does a model's text parse as JSON, and does that JSON
  validate (with the first error, in words)?
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_PROPERTIES = 20  # named properties, counted over every level
MAX_DEPTH = 3  # levels of objects / arrays, the outermost one included
MAX_SCHEMA_CHARS = 3_000  # the schema's JSON text: it goes into the prompt too

# Built-in examples for the playground, the tests and the benchmark: strings are kept
# short (maxLength) and extra keys closed off, so a complete answer fits a small budget.
EXAMPLES: dict[str, dict[str, Any]] = {
    "person": {
        "title": "a person record",
        "prompt": "Invent a person who lives in a city by the sea. Describe them as JSON.",
        "schema": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 40},
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
                "city": {"type": "string", "maxLength": 40},
                "email": {"type": "string", "format": "email", "maxLength": 40},
            },
            "required": ["name", "age", "city"],
            "additionalProperties": False,
        },
    },
    "review": {
        "title": "a product review (enum rating)",
        "prompt": "Write a short review of a pair of cheap headphones as JSON.",
        "schema": {
            "type": "object",
            "properties": {
                "product": {"type": "string", "maxLength": 40},
                "rating": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
                "pros": {
                    "type": "array",
                    "items": {"type": "string", "maxLength": 40},
                    "maxItems": 3,
                },
                "verdict": {"type": "string", "enum": ["buy", "wait", "avoid"]},
            },
            "required": ["product", "rating", "verdict"],
            "additionalProperties": False,
        },
    },
    "event": {
        "title": "an event (date, nested location)",
        "prompt": "Announce a jazz concert next summer as JSON.",
        "schema": {
            "type": "object",
            "properties": {
                "title": {"type": "string", "maxLength": 60},
                "date": {"type": "string", "format": "date"},
                "location": {
                    "type": "object",
                    "properties": {
                        "venue": {"type": "string", "maxLength": 40},
                        "city": {"type": "string", "maxLength": 40},
                    },
                    "required": ["venue", "city"],
                    "additionalProperties": False,
                },
                "free": {"type": "boolean"},
            },
            "required": ["title", "date", "location"],
            "additionalProperties": False,
        },
    },
    "order": {
        "title": "an order with a list of items",
        "prompt": "A customer orders groceries for a picnic. Write the order as JSON.",
        "schema": {
            "type": "object",
            "properties": {
                "customer": {"type": "string", "maxLength": 30},
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 3,
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string", "maxLength": 20},
                            "quantity": {"type": "integer", "minimum": 1, "maximum": 99},
                        },
                        "required": ["name", "quantity"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["customer", "items"],
            "additionalProperties": False,
        },
    },
}

_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_ONE = ("items", "additionalProperties", "not", "contains")


def _walk(schema: Any, level: int) -> tuple[int, int]:
    """(properties counted, deepest object/array level) under ``schema`` at ``level``."""
    if not isinstance(schema, dict):
        return 0, 0
    nests = (
        "properties" in schema
        or "items" in schema
        or schema.get("type") in ("object", "array")
        or (isinstance(schema.get("type"), list) and {"object", "array"} & set(schema["type"]))
    )
    here = level + 1 if nests else level
    count, deepest = 0, here
    props = schema.get("properties")
    if isinstance(props, dict):
        count += len(props)
        for sub in props.values():
            c, d = _walk(sub, here)
            count, deepest = count + c, max(deepest, d)
    for key in _SUBSCHEMA_ONE:
        if isinstance(schema.get(key), dict):
            c, d = _walk(schema[key], here)
            count, deepest = count + c, max(deepest, d)
    for key in _SUBSCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            for sub in schema[key]:
                c, d = _walk(sub, level)  # an alternative, not a level of nesting
                count, deepest = count + c, max(deepest, d)
    return count, deepest


def size(schema: dict[str, Any]) -> tuple[int, int]:
    """(named properties over all levels, nesting depth of objects and arrays)."""
    return _walk(schema, 0)


def _has_ref(schema: Any) -> bool:
    if isinstance(schema, dict):
        return "$ref" in schema or any(_has_ref(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_ref(v) for v in schema)
    return False


def nesting(value: Any, limit: int = 64) -> int:
    """Levels of JSON containers in ``value``, counted without recursion, up to ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest >= limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` cannot be used, as a sentence a person can act on; None if it can."""
    import jsonschema
    import llguidance

    if not isinstance(schema, dict):
        return 'The schema must be a JSON object, such as {"type": "object", ...}.'
    if nesting(schema) >= 64:  # before anything recursive looks at it
        return "The schema nests far too deep; at most 3 levels of objects are allowed."
    if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        return f"The schema is longer than {MAX_SCHEMA_CHARS:,} characters; shorten it."
    if _has_ref(schema):
        return "Write the schema out in full: $ref is not accepted here."
    count, depth = size(schema)
    if count > MAX_PROPERTIES:
        return (
            f"The schema has {count} properties over all its levels; "
            f"keep it to at most {MAX_PROPERTIES}."
        )
    if depth > MAX_DEPTH:
        return (
            f"The schema nests objects or arrays {depth} levels deep; "
            f"at most {MAX_DEPTH} are allowed."
        )
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path) or "the top level"
        return f"This is not valid JSON Schema (at {where}): {exc.message}"
    grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema))
    failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if failed or messages:
        reason = " ".join(" ".join(messages).split())[:300]
        return f"The structured-output engine cannot use this schema: {reason}"
    return None


@dataclass(frozen=True)
class Check:
    parses: bool  # json.loads succeeds on the whole text (surrounding whitespace allowed)
    valid: bool  # it parses and validates against the schema
    error: str  # why not, in words ("" when valid)
    buried: bool  # not valid as it stands, but the first JSON object inside the text is
    # (e.g. after "Here is the JSON:" or in a ``` fence): what a lenient reader would salvage


def _first_error(value: Any, schema: dict[str, Any]) -> str:
    import jsonschema

    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return ""
    where = "/".join(str(p) for p in error.absolute_path) or "the top level"
    return f"at {where}: {error.message}"[:300]


def _first_object(text: str) -> Any:
    """The first JSON object that starts at a "{" in ``text`` and parses, or None."""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            return decoder.raw_decode(text, start)[0]
        except ValueError:
            start = text.find("{", start + 1)
    return None


def check_answer(text: str, schema: dict[str, Any]) -> Check:
    """Parse ``text`` as one JSON document and validate it against ``schema``."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        inner = _first_object(text)
        buried = inner is not None and not _first_error(inner, schema)
        return Check(False, False, f"not JSON: {exc}", buried)
    error = _first_error(value, schema)
    return Check(True, not error, error, False)


def instructions(prompt: str, schema: dict[str, Any]) -> list[dict[str, str]]:
    """The chat messages both sides get (the default system turn is added by the template)."""
    return [
        {
            "role": "user",
            "content": f"{prompt}\n\nReply with only a JSON object that follows this JSON "
            f"Schema:\n{json.dumps(schema, separators=(',', ':'))}",
        }
    ]
