"""Chapter 6, prompt engineering: the prompt lab (zero-shot, few-shot, chain of thought,
self-consistency and your own system prompt, scored on built-in eval sets).

Every bound is checked here, before anything is queued, the system prompt's length in
SmolLM2 tokens too (the tokenizer needs no torch).
"""

from __future__ import annotations

from typing import Any, Literal

from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from pydantic import Field, field_validator, model_validator

from learn.lab.prompting import REASONING, Style
from learn.lab.smollm2_text import count_tokens
from learn.playgrounds.base import Playground, PlaygroundParams, Seed, register

SETS = ("sentiment", "arithmetic")
BaseStyle = Literal["zero-shot", "few-shot", "chain-of-thought", "self-consistency"]
MAX_ITEMS = 20
MAX_SYSTEM_CHARS = 1_000
MAX_SYSTEM_TOKENS = 200  # SmolLM2 tokens
MAX_RUN_TOKENS = 12_000  # new tokens a run may generate at most (every item × style × sample)


class PromptLabParams(PlaygroundParams):
    eval_set: Literal["sentiment", "arithmetic"] = Field(
        default="sentiment", description="the eval set: review sentiment or word problems"
    )
    styles: list[Style] = Field(
        default=["zero-shot", "few-shot", "chain-of-thought"],
        min_length=1,
        max_length=5,
        description="the prompt styles to compare",
    )
    items: int = Field(default=5, ge=1, le=MAX_ITEMS, description="items of the set to ask")
    shots: int = Field(default=3, ge=1, le=8, description="examples for few-shot and CoT")
    k: int = Field(default=3, ge=2, le=5, description="samples for self-consistency")
    temperature: float = Field(
        default=0.7, gt=0, le=1.5, description="self-consistency's sampling temperature"
    )
    answer_tokens: int = Field(
        default=8, ge=1, le=32, description="new tokens at most for a direct answer"
    )
    max_tokens: int = Field(
        default=64, ge=16, le=256, description="new tokens at most for a reasoned answer"
    )
    system_prompt: str = Field(
        default="",
        max_length=MAX_SYSTEM_CHARS,
        description=f"your system prompt, for the 'system' style (≤ {MAX_SYSTEM_TOKENS} tokens)",
    )
    system_on: BaseStyle = Field(
        default="zero-shot", description="the style your system prompt goes over"
    )
    seed: Seed = 0

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = super().from_form(form, files)
        data["styles"] = form.getlist("styles")
        return data

    @field_validator("system_prompt")
    @classmethod
    def stripped(cls, value: str) -> str:
        return value.strip()

    def generated_tokens(self) -> int:
        """The most new tokens this run can generate (every reply at its limit)."""

        def per_item(style: str) -> int:
            effective = self.system_on if style == "system" else style
            budget = self.max_tokens if effective in REASONING else self.answer_tokens
            return budget * (self.k if effective == "self-consistency" else 1)

        return self.items * sum(per_item(s) for s in self.styles)

    @model_validator(mode="after")
    def fits(self) -> PromptLabParams:
        if len(set(self.styles)) != len(self.styles):
            raise ValueError("each style once, please")
        if "system" in self.styles and not self.system_prompt:
            raise ValueError("the 'system' style needs a system prompt: write one, or untick it")
        if "system" in self.styles and (n := count_tokens(self.system_prompt)) > MAX_SYSTEM_TOKENS:
            raise ValueError(
                f"your system prompt is {n} SmolLM2 tokens; the limit is {MAX_SYSTEM_TOKENS}: "
                "shorten it"
            )
        worst = self.generated_tokens()
        if worst > MAX_RUN_TOKENS:
            raise ValueError(
                f"this run could generate up to {worst:,} tokens (items × styles × samples × "
                f"max tokens); the limit is {MAX_RUN_TOKENS:,}: ask fewer items, fewer "
                "styles, a smaller k or fewer max tokens"
            )
        return self


register(
    Playground(
        slug="prompt-lab",
        title="Prompt lab",
        chapter="rag-agents",
        summary="Zero-shot, few-shot, chain of thought, self-consistency and your own system "
        "prompt on built-in eval sets: accuracy, tokens and time per style, and every prompt "
        "and answer to read.",
        params=PromptLabParams,
        handler="workers.handlers.prompting:prompt_lab",
        queue="gpu",
        time_limit=600,
        live=True,
    ),
)
