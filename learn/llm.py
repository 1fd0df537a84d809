"""Parameters of the transformer playgrounds (chapters 4 and 5) and the quantization lab.

Every bound is checked before a job is queued. Prompt lengths are counted in characters
here (the web process loads no tokenizer); the worker also refuses a prompt whose tokens
would not fit, with the same kind of message.
"""

from __future__ import annotations

from typing import Any, Literal

from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from pydantic import Field, model_validator

from learn.playgrounds import PlaygroundParams, split_list


def _number_list(raw: str | None) -> list[str]:
    """A form's "256, 512 1024" as ["256", "512", "1024"] (the schema checks each)."""
    return split_list((raw or "").replace(" ", ","))


SMOLLM2_LAYERS = 30
SMOLLM2_HEADS = 9
MINILM_LAYERS = 6


class GenerateParams(PlaygroundParams):
    prompt: str = Field(
        default="Explain in two sentences why the sky is blue.", min_length=1, max_length=2_000
    )
    max_new_tokens: int = Field(default=64, ge=1, le=256)
    temperature: float = Field(default=0.7, ge=0, le=2, description="0 = greedy")
    top_k: int = Field(default=50, ge=0, le=1_000, description="0 = off")
    top_p: float = Field(default=0.95, gt=0, le=1, description="1 = off")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class AttentionParams(PlaygroundParams):
    prompt: str = Field(
        default="The cat sat on the mat because it was tired.", min_length=1, max_length=600
    )
    layer: int = Field(default=5, ge=0, lt=SMOLLM2_LAYERS)
    chat: bool = Field(default=False, description="wrap the prompt in the chat template")

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = super().from_form(form, files)
        data["chat"] = form.get("chat") == "on"
        return data


class PositionsParams(PlaygroundParams):
    positions: int = Field(default=128, ge=2, le=1_024)
    dims: int = Field(default=64, ge=2, le=512, multiple_of=2, description="even")
    rope_base: float = Field(default=10_000.0, ge=10, le=10_000_000)


class KVCacheParams(PlaygroundParams):
    prompt: str = Field(default="List five facts about the Moon.", min_length=1, max_length=2_000)
    max_new_tokens: int = Field(default=64, ge=2, le=128)


class PagedKVParams(PlaygroundParams):
    requests: int = Field(default=8, ge=1, le=64)
    block_size: int = Field(default=16, ge=1, le=256)
    num_blocks: int = Field(default=256, ge=4, le=65_536)
    max_len: int = Field(default=2_048, ge=16, le=32_768, description="contiguous reservation")
    shared_prefix: int = Field(default=64, ge=0, le=4_096, description="system-prompt tokens")
    sharers: int = Field(default=4, ge=0, le=64, description="requests that share the prefix")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def fits(self) -> PagedKVParams:
        if self.sharers > self.requests:
            raise ValueError("sharers cannot exceed requests")
        if self.shared_prefix > self.max_len // 2:
            raise ValueError("shared_prefix must be at most half of max_len")
        return self


class TiledAttentionParams(PlaygroundParams):
    seq_lens: list[int] = Field(default=[256, 512, 1024, 2048], min_length=1, max_length=6)
    d: int = Field(default=64, ge=8, le=256, description="head dimension")
    heads: int = Field(default=8, ge=1, le=32)
    block_size: int = Field(default=128, ge=16, le=1_024)
    causal: bool = True

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = super().from_form(form, files)
        data["seq_lens"] = _number_list(form.get("seq_lens"))
        data["causal"] = form.get("causal") == "on"
        return data

    @model_validator(mode="after")
    def fits(self) -> TiledAttentionParams:
        for n in self.seq_lens:
            if not 16 <= n <= 8_192:
                raise ValueError(f"sequence length {n} is outside 16-8,192")
            # the naive method holds heads × n × n float32 scores at once
            if self.heads * n * n * 4 > 2 * 1024**3:
                raise ValueError(
                    f"naive attention at n={n} with {self.heads} heads needs "
                    f"{self.heads * n * n * 4 / 1024**3:.1f} GiB of scores; lower n or heads"
                )
        return self


class SpeculativeParams(PlaygroundParams):
    prompt: str = Field(
        default=(
            "Repeat this passage exactly, then say which word appears most often: "
            "The quick brown fox jumps over the lazy dog. The dog sleeps. The fox runs "
            "into the forest, and the dog wakes up and follows the fox."
        ),
        min_length=1,
        max_length=3_000,
    )
    max_new_tokens: int = Field(default=64, ge=1, le=200)
    ngram: int = Field(default=3, ge=1, le=8, description="prompt lookup: n-gram to match")
    num_draft: int = Field(default=8, ge=1, le=16, description="tokens drafted per step")
    draft: Literal["fp16", "layers"] = Field(
        default="fp16", description="draft model: an fp16 copy, or the first draft_layers layers"
    )
    draft_layers: int = Field(default=10, ge=1, lt=SMOLLM2_LAYERS)


class SparseAttentionParams(PlaygroundParams):
    text: str | None = Field(
        default=None, max_length=4_000, description="text to score; empty = the built-in one"
    )
    windows: list[int] = Field(default=[8, 32, 128], min_length=1, max_length=5)
    sinks: int = Field(default=4, ge=0, le=64, description="first tokens always visible")

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = super().from_form(form, files)
        data["windows"] = _number_list(form.get("windows"))
        if not (data.get("text") or "").strip():
            data.pop("text", None)
        return data

    @model_validator(mode="after")
    def fits(self) -> SparseAttentionParams:
        if any(not 1 <= w <= 1_024 for w in self.windows):
            raise ValueError("each window must be 1-1,024 tokens")
        return self


class MoEParams(PlaygroundParams):
    tokens: int = Field(default=512, ge=8, le=8_192)
    dim: int = Field(default=64, ge=8, le=512)
    experts: int = Field(default=8, ge=2, le=64)
    top_k: int = Field(default=2, ge=1, le=8)
    router_skew: float = Field(default=0.0, ge=0, le=10)
    capacity_factor: float | None = Field(default=None, gt=0, le=8)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = super().from_form(form, files)
        if not data.get("capacity_factor"):
            data.pop("capacity_factor", None)  # an empty box: no capacity limit
        return data

    @model_validator(mode="after")
    def fits(self) -> MoEParams:
        if self.top_k > self.experts:
            raise ValueError("top_k cannot exceed the number of experts")
        return self


QuantModel = Literal["smollm2", "minilm"]
VariantName = Literal["fp32", "bf16", "fp16", "int8-dynamic", "int8-weight", "int4-weight"]


class QuantizeParams(PlaygroundParams):
    model: QuantModel = "smollm2"
    variants: list[VariantName] = Field(
        default=["fp32", "bf16", "int8-weight", "int4-weight"], min_length=1, max_length=6
    )
    group_size: int = Field(default=32, description="int4 group size: 32, 64, 128 or 256")
    new_tokens: int = Field(default=32, ge=8, le=128, description="SmolLM2: tokens timed")
    sentences: int = Field(default=256, ge=32, le=512, description="MiniLM: texts embedded")

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = super().from_form(form, files)
        data["variants"] = form.getlist("variants")
        return data

    @model_validator(mode="after")
    def fits(self) -> QuantizeParams:
        if self.group_size not in (32, 64, 128, 256):
            raise ValueError("group_size must be 32, 64, 128 or 256")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError("each variant once, please")
        return self


Matrix = Literal["attention-in", "attention-out", "mlp-in", "mlp-out"]


class WeightInspectParams(PlaygroundParams):
    model: QuantModel = "smollm2"
    layer: int = Field(default=0, ge=0, lt=SMOLLM2_LAYERS)
    matrix: Matrix = "mlp-in"
    scheme: Literal["int8", "int4"] = "int4"
    group_size: int = Field(default=32, description="int4 group size: 32, 64, 128 or 256")

    @model_validator(mode="after")
    def fits(self) -> WeightInspectParams:
        if self.group_size not in (32, 64, 128, 256):
            raise ValueError("group_size must be 32, 64, 128 or 256")
        if self.model == "minilm" and self.layer >= MINILM_LAYERS:
            raise ValueError(f"MiniLM has layers 0-{MINILM_LAYERS - 1}")
        return self


class MCTSParams(PlaygroundParams):
    board: str = Field(
        default="." * 9,
        min_length=9,
        max_length=9,
        pattern=r"^[XO.]{9}$",
        description="9 cells row by row: X, O or . (X moves first)",
    )
    simulations: int = Field(default=2_000, ge=10, le=20_000)
    c: float = Field(default=1.4, ge=0, le=10, description="exploration constant (UCT)")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def playable(self) -> MCTSParams:
        from learn.lab.mcts import winner

        x, o = self.board.count("X"), self.board.count("O")
        if x - o not in (0, 1):
            raise ValueError(f"X moves first, so X has as many marks as O or one more ({x}/{o})")
        if winner(self.board):
            raise ValueError("the game is over: start a new one")
        return self
