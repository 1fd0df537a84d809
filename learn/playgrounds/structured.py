"""Chapter 6, structured output: SmolLM2 answers a prompt N times freely and N times with
its logits masked by a JSON-schema grammar (llguidance); every answer is parsed and
validated, and the cost of the masks is measured."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, field_validator, model_validator

from learn.lab.json_schema import (
    EXAMPLES,
    MAX_DEPTH,
    MAX_PROPERTIES,
    MAX_SCHEMA_CHARS,
    instructions,
    schema_problem,
)
from learn.lab.smollm2_text import chat_ids, count_tokens, load_tokenizer
from learn.playgrounds.base import Playground, PlaygroundParams, Seed, register
from learn.playgrounds.serving import CONTEXT_TOKENS

MAX_PROMPT_CHARS = 600
MAX_PROMPT_TOKENS = 200  # SmolLM2 tokens
MAX_RUNS = 20  # answers per side

DEFAULT = EXAMPLES["person"]


def schema_text(schema: dict[str, Any]) -> str:
    """A schema as the page's textarea shows it (indented JSON)."""
    return json.dumps(schema, indent=2)


class StructuredParams(PlaygroundParams):
    answer_schema: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT["schema"]),
        description=f"a JSON Schema (object): at most {MAX_PROPERTIES} properties over all "
        f"levels, {MAX_DEPTH} levels of nesting, {MAX_SCHEMA_CHARS:,} characters; "
        "a JSON string of it is accepted too",
    )
    prompt: str = Field(
        default=DEFAULT["prompt"],
        min_length=1,
        max_length=MAX_PROMPT_CHARS,
        description=f"what to ask for (at most {MAX_PROMPT_TOKENS} SmolLM2 tokens)",
    )
    n: int = Field(default=4, ge=1, le=MAX_RUNS, description="answers per side")
    max_new_tokens: int = Field(default=128, ge=16, le=256, description="per answer")
    temperature: float = Field(default=0.8, ge=0, le=1.5, description="0 = greedy")
    seed: Seed = 0

    @field_validator("answer_schema", mode="before")
    @classmethod
    def parsed(cls, value: Any) -> Any:
        if isinstance(value, str):
            if len(value) > 4 * MAX_SCHEMA_CHARS:
                raise ValueError(f"the schema is far longer than {MAX_SCHEMA_CHARS:,} characters")
            try:
                return json.loads(value)
            except RecursionError as exc:
                raise ValueError("the schema nests far too deep") from exc
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"the schema is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                    f"{exc.msg})"
                ) from exc
        return value

    @field_validator("answer_schema")
    @classmethod
    def usable(cls, value: dict[str, Any]) -> dict[str, Any]:
        problem = schema_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("prompt")
    @classmethod
    def not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("write a prompt: it is empty")
        n = count_tokens(value)
        if n > MAX_PROMPT_TOKENS:
            raise ValueError(f"{n} SmolLM2 tokens; shorten it to at most {MAX_PROMPT_TOKENS}")
        return value

    @model_validator(mode="after")
    def fits(self) -> StructuredParams:
        prompt = chat_ids(load_tokenizer(), instructions(self.prompt, self.answer_schema))
        total = len(prompt) + self.max_new_tokens
        if total > CONTEXT_TOKENS:
            raise ValueError(
                f"the prompt with the schema and {self.max_new_tokens} new tokens needs {total} "
                f"tokens; SmolLM2 here takes {CONTEXT_TOKENS}: shorten the schema or the prompt"
            )
        return self


HANDLERS = "workers.handlers.structured"

register(
    Playground(
        slug="structured-output",
        title="Structured output",
        chapter="rag-agents",
        summary="SmolLM2 answers N times freely and N times with its logits masked by a "
        "JSON-schema grammar (llguidance): which answers parse and validate, and what the "
        "masks cost per token.",
        params=StructuredParams,
        handler=f"{HANDLERS}:structured_output",
        queue="gpu",
        time_limit=600,
        live=True,
    ),
)
