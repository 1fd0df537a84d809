"""Chapter 5, inference optimisation: KV cache, paged KV, tiled attention, quantization,
the weight inspector, speculative decoding, sliding-window attention, mixture of experts.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from pydantic import Field, model_validator

from learn.lab.facts import (
    DEFAULT_VARIANTS,
    GROUP_SIZES,
    MINILM_DIM,
    MINILM_LAYERS,
    SMOLLM2,
    QuantModel,
    VariantName,
)
from learn.playgrounds.base import Playground, PlaygroundParams, Seed, number_list, register

GROUP_SIZE_HELP = "int4 group size: " + ", ".join(map(str, GROUP_SIZES))


def check_group_size(group_size: int) -> None:
    if group_size not in GROUP_SIZES:
        raise ValueError(f"group_size must be one of {', '.join(map(str, GROUP_SIZES))}")


class KVCacheParams(PlaygroundParams):
    prompt: str = Field(default="List five facts about the Moon.", min_length=1, max_length=2_000)
    max_new_tokens: int = Field(default=64, ge=2, le=128)


PAGED_DECODE_MAX_CONCURRENCY = 32  # requests decoded together on a CPU worker
PAGED_DECODE_MAX_TOKENS = 4_096  # new tokens made by one run's real decodes, all together


class PagedKVParams(PlaygroundParams):
    requests: int = Field(default=8, ge=1, le=64)
    block_size: int = Field(default=16, ge=1, le=256)
    num_blocks: int = Field(default=256, ge=4, le=65_536)
    max_len: int = Field(default=2_048, ge=16, le=32_768, description="contiguous reservation")
    shared_prefix: int = Field(default=64, ge=0, le=4_096, description="system-prompt tokens")
    sharers: int = Field(default=4, ge=0, le=64, description="requests that share the prefix")
    seed: Seed = 0
    # the real decode: SmolLM2 serves 2 x N requests, N at a time, for each N listed
    decode_concurrency: list[int] = Field(
        default=[],
        max_length=4,
        description="real batched decode: concurrent requests per run (empty: simulation only)",
    )
    decode_tokens: int = Field(default=16, ge=2, le=64, description="most new tokens a request")

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = super().from_form(form, files)
        data["decode_concurrency"] = number_list(form.get("decode_concurrency"))
        return data

    @model_validator(mode="after")
    def fits(self) -> PagedKVParams:
        if self.sharers > self.requests:
            raise ValueError("sharers cannot exceed requests")
        if self.shared_prefix > self.max_len // 2:
            raise ValueError("shared_prefix must be at most half of max_len")
        for n in self.decode_concurrency:
            if not 1 <= n <= PAGED_DECODE_MAX_CONCURRENCY:
                raise ValueError(
                    f"concurrent requests {n} is outside 1-{PAGED_DECODE_MAX_CONCURRENCY}"
                )
        work = 2 * sum(self.decode_concurrency) * self.decode_tokens
        if work > PAGED_DECODE_MAX_TOKENS:
            raise ValueError(
                f"the real decode would make up to {work:,} tokens (2 x the concurrent "
                f"requests x tokens); the limit is {PAGED_DECODE_MAX_TOKENS:,}: list fewer "
                "or smaller concurrencies, or fewer tokens"
            )
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
        data["seq_lens"] = number_list(form.get("seq_lens"))
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
    ngram: int = Field(
        default=1,
        ge=1,
        le=8,
        description="prompt lookup: the shortest match (tokens of the tail found earlier) "
        "that drafts",
    )
    num_draft: int = Field(
        default=16,
        ge=1,
        le=16,
        description="tokens drafted per step: the most (adaptive) or always (fixed); "
        "the draft model drafts at most 8",
    )
    adaptive: bool = Field(
        default=True,
        description="prompt lookup: follow the earlier copy with the longest matching "
        "context, draft more the longer the match (4 tokens for 1, up to 32 for 8), start "
        "at 8, double after a full acceptance and halve after a rejection (never below 3)",
    )
    draft: Literal["fp16", "layers"] = Field(
        default="fp16", description="draft model: an fp16 copy, or the first draft_layers layers"
    )
    draft_layers: int = Field(default=10, ge=1, lt=SMOLLM2.n_layers)


class SparseAttentionParams(PlaygroundParams):
    text: str | None = Field(
        default=None, max_length=4_000, description="text to score; empty = the built-in one"
    )
    windows: list[int] = Field(default=[8, 32, 128], min_length=1, max_length=5)
    sinks: int = Field(default=4, ge=0, le=64, description="first tokens always visible")

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = super().from_form(form, files)
        data["windows"] = number_list(form.get("windows"))
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
    seed: Seed = 0

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


Matrix = Literal["attention-in", "attention-out", "mlp-in", "mlp-out"]


def matrix_inputs(model: str, matrix: str) -> int:
    """The input width (``in_features``) of a weight matrix the inspector offers."""
    width, hidden = (
        (SMOLLM2.dim, SMOLLM2.hidden_dim) if model == "smollm2" else (MINILM_DIM, 4 * MINILM_DIM)
    )
    return hidden if matrix == "mlp-out" else width


class QuantizeParams(PlaygroundParams):
    model: QuantModel = "smollm2"
    variants: list[VariantName] = Field(
        default=list(DEFAULT_VARIANTS), min_length=1, max_length=len(get_args(VariantName))
    )
    group_size: int = Field(default=32, description=GROUP_SIZE_HELP)
    new_tokens: int = Field(default=32, ge=8, le=128, description="SmolLM2: tokens timed")
    sentences: int = Field(default=256, ge=32, le=512, description="MiniLM: texts embedded")

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = super().from_form(form, files)
        data["variants"] = form.getlist("variants")
        return data

    @model_validator(mode="after")
    def fits(self) -> QuantizeParams:
        check_group_size(self.group_size)
        if len(set(self.variants)) != len(self.variants):
            raise ValueError("each variant once, please")
        widths = {matrix_inputs(self.model, m) for m in get_args(Matrix)}
        fitting = [g for g in GROUP_SIZES if all(w % g == 0 for w in widths)]
        if "int4-weight" in self.variants and self.group_size not in fitting:
            raise ValueError(
                f"int4 groups of {self.group_size} do not divide every layer's inputs "
                f"({', '.join(map(str, sorted(widths)))}); pick {' or '.join(map(str, fitting))}"
            )
        return self


class WeightInspectParams(PlaygroundParams):
    model: QuantModel = "smollm2"
    layer: int = Field(default=0, ge=0, lt=SMOLLM2.n_layers)
    matrix: Matrix = "mlp-in"
    scheme: Literal["int8", "int4"] = "int4"
    # 64, not 32: the GGUF stores SmolLM2 in 4-bit groups of 32, which int4 with groups
    # of 32 reproduces exactly (zero error, nothing to see)
    group_size: int = Field(default=64, description=GROUP_SIZE_HELP)

    @model_validator(mode="after")
    def fits(self) -> WeightInspectParams:
        check_group_size(self.group_size)
        if self.model == "minilm" and self.layer >= MINILM_LAYERS:
            raise ValueError(f"MiniLM has layers 0-{MINILM_LAYERS - 1}")
        width = matrix_inputs(self.model, self.matrix)
        if self.scheme == "int4" and width % self.group_size:
            raise ValueError(
                f"groups of {self.group_size} do not divide this matrix's {width} inputs; "
                f"pick {', '.join(str(g) for g in GROUP_SIZES if width % g == 0)}"
            )
        return self


HANDLERS = "workers.handlers.inference"


def _entry(slug: str, title: str, summary: str, params: type[PlaygroundParams], **kw: Any):
    return Playground(
        slug=slug,
        title=title,
        chapter="inference",
        summary=summary,
        params=params,
        handler=f"{HANDLERS}:{slug.replace('-', '_')}",
        **kw,
    )


register(
    _entry(
        "kv-cache",
        "KV cache on and off",
        "The same greedy generation with the cache and with full recomputation: "
        "latency per token, speed-up, cache bytes by position, identical tokens.",
        KVCacheParams,
        queue="gpu",
        time_limit=600,
    ),
    _entry(
        "paged-kv",
        "Paged KV cache",
        "A batch of requests served from fixed-size blocks: memory used against "
        "max-length reservations, and prefix blocks shared by reference count; then "
        "SmolLM2 really serving requests from a paged cache with continuous batching.",
        PagedKVParams,
        queue="gpu",
        time_limit=300,
    ),
    _entry(
        "tiled-attention",
        "Tiled attention",
        "Naive attention, our tiled online-softmax attention and PyTorch's SDPA: "
        "time and peak memory by sequence length, and how far their outputs differ.",
        TiledAttentionParams,
        queue="gpu",
        time_limit=600,
    ),
    _entry(
        "quantize",
        "Quantize and benchmark",
        "fp32, bf16, int8 and int4 versions of SmolLM2 or MiniLM, each measured "
        "in turn: bytes, speed and quality against fp32.",
        QuantizeParams,
        queue="gpu",
        time_limit=900,
        live=True,
    ),
    _entry(
        "weight-inspect",
        "Weight inspector",
        "One weight matrix before and after quantization: histograms, the scales, "
        "and the error, against its half-step bound.",
        WeightInspectParams,
    ),
    _entry(
        "speculative",
        "Speculative decoding",
        "Greedy decoding with prompt-lookup drafts and with a draft model: "
        "accepted tokens coloured, acceptance rate, speed-up, identical output.",
        SpeculativeParams,
        queue="gpu",
        time_limit=600,
    ),
    _entry(
        "sparse-attention",
        "Sliding-window attention",
        "SmolLM2 scored on a text with full attention and with a window of the "
        "last W tokens, with and without attention sinks: perplexity, agreement, KL.",
        SparseAttentionParams,
        queue="gpu",
        time_limit=300,
    ),
    _entry(
        "moe",
        "Mixture of experts",
        "Tokens routed to the top-k of several experts: the routing heatmap, "
        "load per expert, and what a skewed router does to the balance.",
        MoEParams,
        time_limit=60,
    ),
)
