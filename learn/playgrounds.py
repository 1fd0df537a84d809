"""Every playground: its parameters (with hard bounds), where it runs, how long it may take.

Adding a playground = a Schema here + an entry in PLAYGROUNDS + a handler in
``workers/handlers.py`` + a template ``templates/playgrounds/<slug>.html`` with a
``form`` and a ``result`` partial.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from ninja import Schema
from pydantic import Field, StringConstraints, field_validator, model_validator

if TYPE_CHECKING:
    from learn.models import Run

MAX_TEXTS = 256
MAX_TEXT_CHARS = 2_000
VOCAB_SIZE = 5_000


class FormProblem(ValueError):
    """A form post that cannot even be read (e.g. an upload that is not text)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class PlaygroundParams(Schema):
    """Base for playground parameters; unknown fields are refused, not ignored."""

    model_config = {"extra": "forbid"}

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        """A form post's fields as the JSON body a script would send."""
        return {key: form.get(key) for key in form if key != "csrfmiddlewaretoken"}

    def stored(self) -> dict[str, Any]:
        """What goes into Run.params (large inputs are kept elsewhere, see ``attach``)."""
        return self.model_dump()

    def attach(self, run: Run) -> None:
        """Store what ``stored`` left out, in the same transaction as the run."""


Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS)
]


class EmbedParams(PlaygroundParams):
    texts: list[Text] = Field(
        min_length=2,
        max_length=MAX_TEXTS,
        description=f"2 to {MAX_TEXTS} texts, each at most {MAX_TEXT_CHARS:,} characters",
    )

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        lines = (form.get("texts") or "").splitlines()
        return {"texts": [line for line in lines if line.strip()]}


@cache
def vocabulary() -> frozenset[str]:
    from learn.lab.models import wordpiece_words

    return frozenset(wordpiece_words(VOCAB_SIZE))


Word = Annotated[
    str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=64)
]


class AnalogyParams(PlaygroundParams):
    a: Word = Field(description="the word to start from, e.g. king")
    b: Word = Field(description="the word to take away, e.g. man")
    c: Word = Field(description="the word to add, e.g. woman")
    k: int = Field(default=10, ge=1, le=50, description="how many answers (1-50)")

    @field_validator("a", "b", "c")
    @classmethod
    def in_vocabulary(cls, word: str) -> str:
        if word not in vocabulary():
            raise ValueError(
                f"'{word}' is not among the {VOCAB_SIZE:,} words of the analogy vocabulary; "
                "try a common English word (lower case, letters only)"
            )
        return word


class HashVectorsParams(PlaygroundParams):
    text_a: Text = Field(description="first text")
    text_b: Text = Field(description="second text")
    n: int = Field(default=2, ge=1, le=5, description="words per n-gram (1-5)")
    m: int = Field(default=1024, ge=64, le=65_536, description="Bloom filter bits (64-65,536)")
    k: int = Field(default=3, ge=1, le=16, description="hash functions per item (1-16)")
    num_perm: int = Field(default=128, ge=16, le=1_024, description="MinHash permutations")

    @model_validator(mode="after")
    def enough_bits(self) -> HashVectorsParams:
        if self.k > self.m // 8:
            raise ValueError(f"k={self.k} hash functions need at least m={8 * self.k} bits")
        return self


MAX_CORPUS_BYTES = 20 * 1024 * 1024
PRETOKENIZERS = ("gpt2", "gpt4", "whitespace")
Pretokenizer = Literal["gpt2", "gpt4", "whitespace"]
SpecialToken = Annotated[str, StringConstraints(min_length=1, max_length=32)]
CLASSIC_CORPUS = "low " * 5 + "lowest " * 2 + "newer " * 6 + "wider " * 3 + "new " * 2


def split_list(raw: str | None) -> list[str]:
    """A form field of comma- or line-separated items, stripped, empties dropped."""
    return [part.strip() for part in (raw or "").replace("\n", ",").split(",") if part.strip()]


class BpeTrainParams(PlaygroundParams):
    corpus: str | None = Field(
        default=None, description="text to train on (at most 20 MB of UTF-8), or use `builtin`"
    )
    builtin: Literal["python-docs"] | None = Field(
        default=None, description="a corpus that ships with Python: its documentation topics"
    )
    vocab_size: int = Field(default=1000, ge=256, le=50_000, description="256 bytes + merges")
    pretokenizer: Pretokenizer = Field(default="gpt2", description="how text is split first")
    special_tokens: list[SpecialToken] = Field(default_factory=list, max_length=16)
    name: str = Field(default="", max_length=64, description="a name to find it by later")

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data: dict[str, Any] = {
            "vocab_size": form.get("vocab_size") or 1000,
            "pretokenizer": form.get("pretokenizer") or "gpt2",
            "special_tokens": split_list(form.get("special_tokens")),
            "name": form.get("name", ""),
        }
        upload = files.get("corpus_file")
        if form.get("source") == "builtin":
            data["builtin"] = "python-docs"
        elif upload is not None and upload.size:
            if upload.size > MAX_CORPUS_BYTES:
                raise FormProblem("corpus_file", "The file is larger than 20 MB; upload less text.")
            try:
                data["corpus"] = upload.read().decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FormProblem(
                    "corpus_file", f"The file is not UTF-8 text (byte {exc.start} is invalid)."
                ) from exc
        else:
            data["corpus"] = form.get("corpus", "")
        return data

    @model_validator(mode="after")
    def one_corpus(self) -> BpeTrainParams:
        if (self.corpus is None) == (self.builtin is None):
            raise ValueError("give either a corpus (text) or builtin='python-docs', not both")
        if self.corpus is not None:
            if not self.corpus.strip():
                raise ValueError("the corpus is empty: paste or upload some text")
            if len(self.corpus.encode("utf-8")) > MAX_CORPUS_BYTES:
                raise ValueError("the corpus is larger than 20 MB")
        if len(set(self.special_tokens)) != len(self.special_tokens):
            raise ValueError("special tokens must be different from each other")
        if self.vocab_size < 256 + len(self.special_tokens):
            raise ValueError(
                f"vocab_size must be at least 256 + {len(self.special_tokens)} specials"
            )
        return self

    def stored(self) -> dict[str, Any]:
        params = self.model_dump(exclude={"corpus"})
        if self.corpus is not None:
            params["corpus_chars"] = len(self.corpus)
        return params

    def attach(self, run: Run) -> None:
        from learn.models import Corpus

        if self.corpus is not None:
            Corpus.objects.create(run=run, text=self.corpus, source="pasted")


class BpeStepParams(PlaygroundParams):
    corpus: str = Field(default=CLASSIC_CORPUS.strip(), min_length=1, max_length=2_000)
    steps: int = Field(default=10, ge=1, le=40, description="how many merges to walk through")
    pretokenizer: Pretokenizer = "whitespace"


BUILTIN_TOKENIZERS = {"smollm2": "SmolLM2 (byte-level BPE)", "minilm": "MiniLM (WordPiece)"}


class TokenizeParams(PlaygroundParams):
    text: str = Field(min_length=1, max_length=20_000, description="up to 20,000 characters")
    tokenizers: list[str] = Field(
        default=["smollm2", "minilm"],
        min_length=1,
        max_length=4,
        description="1-4 of: smollm2, minilm, or the id of a tokenizer trained here",
    )

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data = {key: form.get(key) for key in form if key not in {"tokenizers", "trained"}}
        data["tokenizers"] = form.getlist("tokenizers") + [t for t in [form.get("trained")] if t]
        return data

    @field_validator("tokenizers")
    @classmethod
    def known_tokenizers(cls, names: list[str]) -> list[str]:
        from learn.models import TrainedTokenizer

        for name in names:
            if name in BUILTIN_TOKENIZERS:
                continue
            try:
                found = TrainedTokenizer.objects.filter(pk=uuid.UUID(name)).exists()
            except ValueError:
                found = False
            if not found:
                raise ValueError(
                    f"unknown tokenizer '{name}': use smollm2, minilm, or the id of a trained one"
                )
        if len(set(names)) != len(names):
            raise ValueError("each tokenizer once, please")
        return names


class TokenCostParams(TokenizeParams):
    context_window: int = Field(default=8_192, ge=128, le=10_000_000, description="tokens")
    price_per_million: float = Field(
        default=0.5, ge=0, le=1_000, description="price per million tokens, in your currency"
    )


@dataclass(frozen=True)
class Playground:
    slug: str
    title: str
    chapter: str
    summary: str
    params: type[PlaygroundParams]
    queue: str = "cpu"  # "gpu" when it uses a model: GPU workers take it first
    time_limit: int = 120  # seconds; the worker stops it after this
    live: bool = False  # its template has `live` (shown while running) and `partial` parts
    uploads: bool = False  # its form sends a file (multipart)

    @property
    def template(self) -> str:
        return f"playgrounds/{self.slug}.html"

    @property
    def form_template(self) -> str:
        return f"{self.template}#form"

    @property
    def result_template(self) -> str:
        return f"{self.template}#result"

    @property
    def live_template(self) -> str:
        return f"{self.template}#live"

    @property
    def partial_template(self) -> str:
        return f"{self.template}#partial"


from learn import llm, vsearch  # noqa: E402  (their schemas build on PlaygroundParams above)

PLAYGROUNDS: dict[str, Playground] = {
    pg.slug: pg
    for pg in (
        Playground(
            slug="embed",
            title="Embed texts",
            chapter="embeddings",
            summary="Texts → MiniLM embeddings in pgvector: PCA map, similarity heatmap, "
            "nearest neighbours.",
            params=EmbedParams,
            queue="gpu",
            time_limit=300,
        ),
        Playground(
            slug="analogy",
            title="Word analogies",
            chapter="embeddings",
            summary="a − b + c over a few thousand words kept in pgvector (HNSW).",
            params=AnalogyParams,
            queue="gpu",
            time_limit=300,
        ),
        Playground(
            slug="index-lab",
            title="Index lab",
            chapter="vector-search",
            summary="Build exact, K-D tree, HNSW, IVF, PQ and SQ indexes (ours and FAISS/hnswlib) "
            "on the same vectors: build time, bytes per vector, recall@k and queries/s, drawn "
            "as each point is measured.",
            params=vsearch.IndexLabParams,
            queue="gpu",
            time_limit=900,
            live=True,
        ),
        Playground(
            slug="query-trace",
            title="Trace a query",
            chapter="vector-search",
            summary="One query through our HNSW (hops per layer) or IVF (cells probed), drawn "
            "on a 2-D projection with its true neighbours.",
            params=vsearch.QueryTraceParams,
            queue="cpu",
            time_limit=300,
        ),
        Playground(
            slug="compression",
            title="Compress the vectors",
            chapter="vector-search",
            summary="PCA, product and scalar quantization on the same vectors: bytes per "
            "vector against recall@k, beside a plain cosine-threshold search.",
            params=vsearch.CompressionParams,
            queue="gpu",
            time_limit=600,
        ),
        Playground(
            slug="pgvector",
            title="pgvector",
            chapter="vector-search",
            summary="The vectors in a real PostgreSQL table with an HNSW or IVFFlat index: "
            "recall, EXPLAIN ANALYZE, and a metadata filter before vs after the search.",
            params=vsearch.PgvectorParams,
            queue="cpu",
            time_limit=600,
        ),
        Playground(
            slug="attention",
            title="Attention inside SmolLM2",
            chapter="transformers",
            summary="One forward pass: any layer's attention weights per head (GQA groups "
            "shown) and the next-token distribution under a temperature you choose.",
            params=llm.AttentionParams,
            queue="gpu",
            time_limit=120,
        ),
        Playground(
            slug="positions",
            title="Positional encodings",
            chapter="transformers",
            summary="Sinusoidal encodings and their similarity by distance; RoPE's score "
            "between the same two vectors as they move apart.",
            params=llm.PositionsParams,
            queue="cpu",
            time_limit=60,
        ),
        Playground(
            slug="generate",
            title="Generate",
            chapter="transformers",
            summary="SmolLM2 continues your prompt token by token with temperature, top-k "
            "and top-p; tokens per second, time to first token, latency by position.",
            params=llm.GenerateParams,
            queue="gpu",
            time_limit=300,
            live=True,
        ),
        Playground(
            slug="kv-cache",
            title="KV cache on and off",
            chapter="inference",
            summary="The same greedy generation with the cache and with full recomputation: "
            "latency per token, speed-up, cache bytes by position, identical tokens.",
            params=llm.KVCacheParams,
            queue="gpu",
            time_limit=600,
        ),
        Playground(
            slug="paged-kv",
            title="Paged KV cache",
            chapter="inference",
            summary="A batch of requests served from fixed-size blocks: memory used against "
            "max-length reservations, and prefix blocks shared by reference count.",
            params=llm.PagedKVParams,
            queue="cpu",
            time_limit=60,
        ),
        Playground(
            slug="tiled-attention",
            title="Tiled attention",
            chapter="inference",
            summary="Naive attention, our tiled online-softmax attention and PyTorch's SDPA: "
            "time and peak memory by sequence length, and how far their outputs differ.",
            params=llm.TiledAttentionParams,
            queue="gpu",
            time_limit=600,
        ),
        Playground(
            slug="quantize",
            title="Quantize and benchmark",
            chapter="inference",
            summary="fp32, bf16, int8 and int4 versions of SmolLM2 or MiniLM, each measured "
            "in turn: bytes, speed and quality against fp32.",
            params=llm.QuantizeParams,
            queue="gpu",
            time_limit=900,
            live=True,
        ),
        Playground(
            slug="weight-inspect",
            title="Weight inspector",
            chapter="inference",
            summary="One weight matrix before and after quantization: histograms, the scales, "
            "and the error, against its half-step bound.",
            params=llm.WeightInspectParams,
            queue="cpu",
            time_limit=120,
        ),
        Playground(
            slug="speculative",
            title="Speculative decoding",
            chapter="inference",
            summary="Greedy decoding with prompt-lookup drafts and with a draft model: "
            "accepted tokens coloured, acceptance rate, speed-up, identical output.",
            params=llm.SpeculativeParams,
            queue="gpu",
            time_limit=600,
        ),
        Playground(
            slug="sparse-attention",
            title="Sliding-window attention",
            chapter="inference",
            summary="SmolLM2 scored on a text with full attention and with a window of the "
            "last W tokens, with and without attention sinks: perplexity, agreement, KL.",
            params=llm.SparseAttentionParams,
            queue="gpu",
            time_limit=300,
        ),
        Playground(
            slug="moe",
            title="Mixture of experts",
            chapter="inference",
            summary="Tokens routed to the top-k of several experts: the routing heatmap, "
            "load per expert, and what a skewed router does to the balance.",
            params=llm.MoEParams,
            queue="cpu",
            time_limit=60,
        ),
        Playground(
            slug="mcts",
            title="Monte Carlo tree search",
            chapter="rag-agents",
            summary="Play noughts and crosses against MCTS and see how many simulations "
            "it spent on each move before choosing.",
            params=llm.MCTSParams,
            queue="cpu",
            time_limit=60,
        ),
        Playground(
            slug="bpe-train",
            title="Train BPE",
            chapter="tokenization",
            summary="Train a byte-level BPE tokenizer on your text; watch the merges arrive; "
            "download it as a Hugging Face tokenizer.json.",
            params=BpeTrainParams,
            queue="cpu",
            time_limit=900,
            live=True,
            uploads=True,
        ),
        Playground(
            slug="bpe-step",
            title="Step through BPE",
            chapter="tokenization",
            summary="Merge by merge on a small corpus: the pair counts, the chosen pair, "
            "the words after it.",
            params=BpeStepParams,
            queue="cpu",
            time_limit=60,
        ),
        Playground(
            slug="tokenize",
            title="Tokenize",
            chapter="tokenization",
            summary="Your text as coloured tokens, side by side for several tokenizers.",
            params=TokenizeParams,
            queue="cpu",
            time_limit=120,
        ),
        Playground(
            slug="token-cost",
            title="Tokens, context and cost",
            chapter="tokenization",
            summary="Tokens per word and per character, context-window use and price.",
            params=TokenCostParams,
            queue="cpu",
            time_limit=120,
        ),
        Playground(
            slug="hash-vectors",
            title="Hash vectors",
            chapter="embeddings",
            summary="Word n-grams → Bloom filter bits and MinHash: Jaccard estimates vs exact.",
            params=HashVectorsParams,
            queue="cpu",
            time_limit=60,
        ),
    )
}


def for_chapter(chapter: str) -> list[Playground]:
    return [pg for pg in PLAYGROUNDS.values() if pg.chapter == chapter]
