"""Chapter 4, fine-tuning: LoRA adapters on SmolLM2, trained live on pairs of ours or yours.

The bounds keep a CPU run near three minutes on two cores: at most ``MAX_SEQUENCES``
sequences seen in a run (steps × batch), each pair at most ``MAX_PAIR_TOKENS`` tokens in
the chat template and at most ``MAX_TRAIN_TOKENS`` tokens trained on in all (counted here
with SmolLM2's tokenizer, before anything is queued). The adapter is kept beside the run
(``adapter_path``) for download, in our layout and as a PEFT folder for transformers' Llama.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Literal

from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from pydantic import Field, field_validator, model_validator

from learn.lab import lora_pairs
from learn.lab.lora_pairs import Pair
from learn.playgrounds.base import LargeTextParams, Playground, Seed, kept_folder, register

MAX_PAIR_TOKENS = 192  # prompt in the chat template + response + end marker
MAX_SEQUENCES = 240  # steps × batch: ~3 minutes of SmolLM2 forward + backward on 2 cores
MAX_TRAIN_TOKENS = 16_000  # steps × batch × mean tokens of your pairs (the built-in: ~62)
MAX_PROMPTS = 4
KEEPS = "adapters"  # the model cache's folder for adapters, one per run
ADAPTER_FILES = ("adapter.safetensors", "adapter-peft.zip")  # ours; for transformers + PEFT


def adapter_path(run_id: str | uuid.UUID, name: str = ADAPTER_FILES[0]) -> Path:
    """Where a fine-tuning run keeps its adapter files: ``<model cache>/adapters/<run id>/``
    (the model cache is the folder workers and the web share)."""
    if name not in ADAPTER_FILES:
        raise ValueError(f"no adapter file {name!r}: {', '.join(ADAPTER_FILES)}")
    return kept_folder(KEEPS, run_id) / name


def pair_tokens(pair: Pair) -> int:
    """SmolLM2 tokens of one training sequence: the prompt in the chat template, the
    response, and <|im_end|>."""
    from learn.lab.smollm2_text import chat_ids, count_tokens, load_tokenizer

    prompt = chat_ids(load_tokenizer(), [{"role": "user", "content": pair.instruction}])
    return len(prompt) + count_tokens(pair.response) + 1


class LoraParams(LargeTextParams):
    large_field = "pairs"

    pairs: str | None = Field(
        default=None,
        max_length=250_000,
        description='your pairs (2-200), as JSON lines {"instruction", "response"} or '
        "'### Instruction' / '### Response' blocks; omit for the built-in pirate set",
    )
    prompts: list[str] = Field(
        default_factory=lambda: list(lora_pairs.builtin().heldout),
        min_length=1,
        max_length=MAX_PROMPTS,
        description="test prompts answered before and after fine-tuning (1-4)",
    )
    rank: int = Field(default=8, ge=1, le=64, description="r: the adapters' inner width")
    alpha: float = Field(default=16.0, ge=1, le=256, description="the update is scaled by alpha/r")
    lr: float = Field(default=2e-3, gt=0, le=1.0, description="learning rate (AdamW)")
    steps: int = Field(default=20, ge=1, le=120)
    batch_size: int = Field(default=4, ge=1, le=8, description="pairs per step")
    targets: Literal["attention", "attention+mlp"] = Field(
        default="attention+mlp", description="projections that get adapters"
    )
    max_new_tokens: int = Field(default=32, ge=8, le=64, description="per test answer")
    seed: Seed = 0

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = super().from_form(form, files)
        data.pop("source", None)
        if form.get("source") != "own":
            data.pop("pairs", None)
        data["prompts"] = [line.strip() for line in (form.get("prompts") or "").splitlines()]
        data["prompts"] = [line for line in data["prompts"] if line]
        if not data["prompts"]:
            data.pop("prompts")
        return data

    @field_validator("prompts")
    @classmethod
    def short_prompts(cls, prompts: list[str]) -> list[str]:
        prompts = [p.strip() for p in prompts]
        for number, prompt in enumerate(prompts, 1):
            if not prompt:
                raise ValueError(f"test prompt {number} is empty")
            if len(prompt) > lora_pairs.MAX_INSTRUCTION_CHARS:
                raise ValueError(
                    f"test prompt {number} is {len(prompt)} characters; at most "
                    f"{lora_pairs.MAX_INSTRUCTION_CHARS}"
                )
        return prompts

    @model_validator(mode="after")
    def fits(self) -> LoraParams:
        if self.steps * self.batch_size > MAX_SEQUENCES:
            raise ValueError(
                f"{self.steps} steps of {self.batch_size} pairs is "
                f"{self.steps * self.batch_size} sequences; a run here may train on at most "
                f"{MAX_SEQUENCES} (about 3 minutes of a small CPU): fewer steps or a "
                "smaller batch"
            )
        pairs = self.pair_list()  # parses the learner's pairs: a ValueError names the fault
        if self.pairs is not None:
            counts = [pair_tokens(pair) for pair in pairs]
            for number, tokens in enumerate(counts, 1):
                if tokens > MAX_PAIR_TOKENS:
                    raise ValueError(
                        f"pair {number} is {tokens} tokens in the chat template; at most "
                        f"{MAX_PAIR_TOKENS}: shorten its instruction or response"
                    )
            work = round(self.steps * self.batch_size * sum(counts) / len(counts))
            if work > MAX_TRAIN_TOKENS:
                raise ValueError(
                    f"{self.steps} steps of {self.batch_size} of your pairs is about {work:,} "
                    f"tokens of training; at most {MAX_TRAIN_TOKENS:,} here (about 3 minutes "
                    "of a small CPU): fewer steps, a smaller batch or shorter pairs"
                )
        return self

    def pair_list(self) -> list[Pair]:
        """The pairs to train on: the learner's, or the built-in set."""
        if self.pairs is None:
            return list(lora_pairs.builtin().pairs)
        return lora_pairs.parse_pairs(self.pairs)

    def source_name(self) -> str:
        return "pairs"


register(
    Playground(
        slug="lora-finetune",
        title="Fine-tune SmolLM2 with LoRA",
        chapter="transformers",
        summary="Low-rank adapters on SmolLM2's attention (and MLP) projections, trained "
        "live on pirate-voiced pairs or your own: the loss curve, the same prompts answered "
        "before and after, and the adapter's size beside the model's.",
        params=LoraParams,
        handler="workers.handlers.finetune:finetune",
        queue="gpu",
        time_limit=420,
        live=True,
        keeps=KEEPS,
    ),
)
