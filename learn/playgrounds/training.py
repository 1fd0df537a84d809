"""Chapter 4, training: train a tiny GPT live, distil SmolLM2 into one, generate from it.

The bounds keep a run on a two-core CPU within about three minutes: each model size,
batch, context and step count is bounded, and so is their product (the run's estimated
floating-point work, ``ModelShape.train_flops``). The worker also stops a run at ``TIME_BUDGET_S``
seconds of training and says so, keeping what it learned. A trained model is kept as files
beside the run (``model_folder``): ``model.safetensors`` and ``config.json``, loadable by
transformers' ``GPT2LMHeadModel.from_pretrained``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Literal

from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from pydantic import Field, field_validator, model_validator

from learn.lab.facts import SMOLLM2
from learn.playgrounds.base import (
    FormProblem,
    LargeTextParams,
    Playground,
    PlaygroundParams,
    Seed,
    kept_folder,
    register,
    uploaded_text,
)

MAX_TEXT_BYTES = 2 * 1024 * 1024
MAX_BPE_VOCAB = 16_384  # the output layer is (width x vocab): a larger one trains too slowly
CHAR_VOCAB = 256  # at most 255 characters of the text, plus one for the rest
MAX_TRAIN_FLOPS = 3e12  # within ~3 minutes of a two-core CPU at the rates bench/train.py measured
MAX_TEACHER_TOKENS = 16_384  # SmolLM2 forward passes: within ~3 minutes of a two-core CPU
KEEPS = "trained"  # the model cache's folder for trained models, one per run
TIME_BUDGET_S = 170  # the worker stops training here, whatever the estimate said
TOKENIZER_HELP = "'chars' or the id of a BPE tokenizer you trained in chapter 3"


def model_folder(run_id: str | uuid.UUID) -> Path:
    """Where a training run keeps its model: ``<model cache>/trained/<run id>/``."""
    return kept_folder(KEEPS, run_id)


def has_model(run_id: str | uuid.UUID) -> bool:
    folder = model_folder(run_id)
    return (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()


class ModelShape(LargeTextParams):
    """What both training playgrounds share: the text, the model's shape, the optimiser."""

    source: Literal["course", "python-docs", "text"] = Field(
        default="course",
        description="'course' (this site's lessons), 'python-docs' (Python's documentation "
        "topics, as in chapter 3) or 'text' (yours, in `text`)",
    )
    text: str | None = Field(default=None, description="your text, at most 2 MB of UTF-8")
    n_layer: int = Field(default=2, ge=1, le=6, description="transformer blocks")
    n_head: int = Field(default=4, ge=1, le=8, description="attention heads; divides the width")
    n_embd: int = Field(default=64, ge=32, le=256, description="model width C")
    context: int = Field(default=64, ge=8, le=256, description="tokens the model reads at once")
    batch_size: int = Field(default=16, ge=1, le=64, description="windows per step")
    steps: int = Field(default=1_000, ge=10, le=2_000)
    lr: float = Field(default=1e-2, ge=1e-5, le=1.0, description="peak learning rate (AdamW)")
    warmup: int = Field(default=50, ge=0, le=500, description="steps of linear warm-up")
    seed: Seed = 0

    def train_flops(self, vocab: int) -> float:
        """Estimated training work of one model this shape with ``vocab`` tokens: 6 FLOPs per
        weight per token (forward 2, backward 4; Kaplan et al., 2020) plus attention's
        scores, 12·L·T·C per token."""
        L, C, T = self.n_layer, self.n_embd, self.context
        weights = 12 * L * C**2 + C * vocab
        per_token = 6 * weights + 12 * L * T * C
        return float(per_token * self.batch_size * T * self.steps)

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = {k: form.get(k) for k in form if k not in {"csrfmiddlewaretoken", "text_file"}}
        if "lr_log10" in data:  # the form's slider moves the exponent
            try:
                data["lr"] = round(10 ** float(data.pop("lr_log10") or "nan"), 8)
            except (ValueError, OverflowError):
                raise FormProblem("lr_log10", "The learning rate slider sent no number.") from None
        upload = files.get("text_file")
        if data.get("source") == "text" and upload is not None and upload.size:
            data["text"] = uploaded_text("text_file", upload, MAX_TEXT_BYTES)
        if data.get("source") != "text":
            data.pop("text", None)
        return data

    def source_name(self) -> str:
        return "pasted"

    @model_validator(mode="after")
    def shape_fits(self) -> ModelShape:
        if (self.source == "text") != (self.text is not None):
            raise ValueError(
                "give your text with source='text', or choose 'course' or 'python-docs'"
            )
        if self.text is not None:
            if len(self.text.encode("utf-8")) > MAX_TEXT_BYTES:
                raise ValueError("the text is larger than 2 MB; train on less")
            if len(self.text) < 2_000:
                raise ValueError(
                    f"the text has {len(self.text):,} characters; give at least 2,000 (a tenth "
                    "is held out to validate on, and a batch needs whole windows of it)"
                )
        if self.n_embd % self.n_head:
            raise ValueError(
                f"the width {self.n_embd} is not divisible by {self.n_head} heads: each head "
                "gets width/heads dimensions"
            )
        return self

    def corpus(self) -> str:
        """The text to train on (the course's lessons need Django's templates: worker side)."""
        if self.source == "python-docs":
            import pydoc_data.topics

            return "\n\n".join(pydoc_data.topics.topics.values())
        if self.source == "course":
            from learn.knowledge import course_lessons

            return "\n\n".join(lesson.text for lesson in course_lessons())
        assert self.text is not None
        return self.text


class TrainParams(ModelShape):
    tokenizer: str = Field(default="chars", description=TOKENIZER_HELP)
    attn_layer: int = Field(default=0, ge=0, le=5, description="the layer whose head is shown")
    attn_head: int = Field(default=0, ge=0, le=7, description="the head shown")

    @field_validator("tokenizer")
    @classmethod
    def known_tokenizer(cls, name: str) -> str:
        name = name.strip()
        if name == "chars":
            return name
        from learn.models import TrainedTokenizer

        try:
            found = TrainedTokenizer.objects.filter(pk=uuid.UUID(name)).first()
        except ValueError:
            found = None
        if found is None:
            raise ValueError(f"unknown tokenizer '{name}': use {TOKENIZER_HELP}")
        if found.vocab_size > MAX_BPE_VOCAB:
            raise ValueError(
                f"that tokenizer has {found.vocab_size:,} tokens; a tiny GPT here takes at "
                f"most {MAX_BPE_VOCAB:,} (train one with a smaller vocabulary in chapter 3)"
            )
        return str(found.pk)

    def vocab_bound(self) -> int:
        if self.tokenizer == "chars":
            return CHAR_VOCAB
        from learn.models import TrainedTokenizer

        return TrainedTokenizer.objects.get(pk=self.tokenizer).vocab_size

    @model_validator(mode="after")
    def work_fits(self) -> TrainParams:
        if self.attn_layer >= self.n_layer or self.attn_head >= self.n_head:
            raise ValueError(
                f"the head shown must exist: layer 0-{self.n_layer - 1}, head 0-{self.n_head - 1}"
            )
        flops = self.train_flops(self.vocab_bound())
        if flops > MAX_TRAIN_FLOPS:
            raise ValueError(
                f"this run is about {flops / 1e12:.1f} TFLOP of training, more than the "
                f"{MAX_TRAIN_FLOPS / 1e12:.0f} TFLOP a run here may take (about 3 minutes of "
                "a small CPU): use fewer steps, a smaller batch, a shorter context or a "
                "smaller model"
            )
        return self


class DistillParams(ModelShape):
    """The student: the same tiny GPT, with SmolLM2's tokenizer so the distributions align."""

    n_layer: int = Field(default=2, ge=1, le=4, description="transformer blocks")
    n_embd: int = Field(default=64, ge=32, le=128, description="model width C")
    context: int = Field(default=32, ge=8, le=128, description="tokens the model reads at once")
    batch_size: int = Field(default=4, ge=1, le=16, description="windows per step")
    steps: int = Field(default=40, ge=10, le=400)
    lr: float = Field(default=3e-3, ge=1e-5, le=1.0, description="peak learning rate (AdamW)")
    warmup: int = Field(default=5, ge=0, le=100, description="steps of linear warm-up")
    temperature: float = Field(
        default=2.0, ge=0.5, le=20, description="softens the teacher's distribution"
    )
    alpha: float = Field(
        default=0.9, gt=0, le=1, description="weight of the soft labels (the rest: hard labels)"
    )

    @model_validator(mode="after")
    def work_fits(self) -> DistillParams:
        tokens = self.batch_size * self.context * self.steps
        if tokens > MAX_TEACHER_TOKENS:
            raise ValueError(
                f"the teacher would read {tokens:,} tokens (batch x context x steps); a run "
                f"here takes at most {MAX_TEACHER_TOKENS:,}, which keeps a CPU run within "
                "about 3 minutes: use fewer steps, a smaller batch or a shorter context"
            )
        flops = 2 * self.train_flops(SMOLLM2.vocab_size)  # two students
        if flops > MAX_TRAIN_FLOPS:
            raise ValueError(
                f"the two students are about {flops / 1e12:.1f} TFLOP of training; at most "
                f"{MAX_TRAIN_FLOPS / 1e12:.0f}: use fewer steps or a smaller model"
            )
        return self


class SampleParams(PlaygroundParams):
    model: str = Field(description="the id of a 'Train a tiny GPT' run that kept its model")
    prompt: str = Field(default="The ", max_length=500, description="the start of the text")
    max_new_tokens: int = Field(default=200, ge=1, le=1_000)
    temperature: float = Field(default=0.8, ge=0, le=2, description="0 = greedy")
    top_k: int = Field(default=40, ge=0, le=1_000, description="0 = off")
    seed: Seed = 0

    @field_validator("model")
    @classmethod
    def trained_here(cls, value: str) -> str:
        from learn.models import Run

        try:
            run_id = uuid.UUID(value.strip())
        except ValueError:
            raise ValueError(
                "give the id of a 'Train a tiny GPT' run (its page's address ends with it)"
            ) from None
        if not Run.objects.filter(pk=run_id, playground="train-gpt").exists():
            raise ValueError(f"no 'Train a tiny GPT' run {run_id}: train a model first")
        if not has_model(run_id):
            raise ValueError(
                "that run kept no model (it stopped before its first evaluation, or its "
                "files were removed): train again"
            )
        return str(run_id)


HANDLERS = "workers.handlers.training"

register(
    Playground(
        slug="train-gpt",
        title="Train a tiny GPT",
        chapter="transformers",
        summary="A GPT-2-shaped model of your size, trained from scratch on the course's "
        "lessons or your text: loss curves, tokens/s, samples going from noise to words, "
        "and one attention head forming, live. The model is kept: generate from it, "
        "download it.",
        params=TrainParams,
        handler=f"{HANDLERS}:train_gpt",
        queue="gpu",
        time_limit=TIME_BUDGET_S + 130,
        live=True,
        uploads=True,
        keeps=KEEPS,
    ),
    Playground(
        slug="train-gpt-sample",
        title="Generate from your tiny GPT",
        chapter="transformers",
        summary="Continue a prompt with a model you trained above (its run id), at the "
        "temperature you choose.",
        params=SampleParams,
        handler=f"{HANDLERS}:sample",
        time_limit=60,
    ),
    Playground(
        slug="distill",
        title="Distillation",
        chapter="transformers",
        summary="Two copies of the same tiny model on the same batches: one learns from "
        "SmolLM2's next-token distributions (soft labels), one from the text alone (hard "
        "labels). Both validation curves on one chart.",
        params=DistillParams,
        handler=f"{HANDLERS}:distill",
        queue="gpu",
        time_limit=TIME_BUDGET_S + 130,
        live=True,
        uploads=True,
    ),
)
