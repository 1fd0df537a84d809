"""Chapter 3, tokenization: train BPE, step through it, tokenize, tokens and cost."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from pydantic import Field, StringConstraints, field_validator, model_validator

from learn.lab.facts import Pretokenizer
from learn.playgrounds.base import (
    LargeTextParams,
    Playground,
    PlaygroundParams,
    register,
    split_list,
    uploaded_text,
)

MAX_CORPUS_BYTES = 20 * 1024 * 1024
SpecialToken = Annotated[str, StringConstraints(min_length=1, max_length=32)]
CLASSIC_CORPUS = "low " * 5 + "lowest " * 2 + "newer " * 6 + "wider " * 3 + "new " * 2
BUILTIN_TOKENIZERS = {"smollm2": "SmolLM2 (byte-level BPE)", "minilm": "MiniLM (WordPiece)"}


class BpeTrainParams(LargeTextParams):
    large_field = "corpus"

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
            data["corpus"] = uploaded_text("corpus_file", upload, MAX_CORPUS_BYTES)
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

    def text(self) -> str:
        """The corpus to train on: the pasted text, or the built-in one."""
        if self.builtin == "python-docs":
            import pydoc_data.topics

            return "\n\n".join(pydoc_data.topics.topics.values())
        assert self.corpus is not None
        return self.corpus


class BpeStepParams(PlaygroundParams):
    corpus: str = Field(default=CLASSIC_CORPUS.strip(), min_length=1, max_length=2_000)
    steps: int = Field(default=10, ge=1, le=40, description="how many merges to walk through")
    pretokenizer: Pretokenizer = "whitespace"


class TokenizeParams(PlaygroundParams):
    text: str = Field(min_length=1, max_length=20_000, description="up to 20,000 characters")
    tokenizers: list[str] = Field(
        default=["smollm2", "minilm"],
        title="tokenizers",
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


MAX_UNIGRAM_CHARS = 300_000
MAX_UNIGRAM_RUN = 1_000  # characters without whitespace: one lattice, one BPE chunk
RareWord = Annotated[str, StringConstraints(min_length=1, max_length=40)]


class UnigramParams(LargeTextParams):
    """Unigram vs BPE: both trained on the same text at the same vocabulary size."""

    large_field = "corpus"

    corpus: str | None = Field(
        default=None, description="text to train on (at most 300,000 characters), or `builtin`"
    )
    builtin: Literal["python-docs"] | None = Field(
        default=None, description="the first 300,000 characters of Python's documentation"
    )
    vocab_size: int = Field(
        default=1000, ge=400, le=4_000, description="tokens, the 256 bytes included"
    )
    words: list[RareWord] = Field(
        default_factory=list,
        max_length=8,
        description="up to 8 words (no spaces) to see split; empty: rare words of the text",
    )
    reference: bool = Field(
        default=True, description="also train SentencePiece's Unigram on the same text"
    )

    @classmethod
    def from_form(cls, form: QueryDict, files: MultiValueDict) -> dict[str, Any]:
        data: dict[str, Any] = {
            "vocab_size": form.get("vocab_size") or 1000,
            "words": [w for w in split_list(form.get("words")) for w in w.split()],
            "reference": form.get("reference") == "on",
        }
        if form.get("source") == "builtin":
            data["builtin"] = "python-docs"
        else:
            data["corpus"] = form.get("corpus", "")
        return data

    @field_validator("words")
    @classmethod
    def single_words(cls, words: list[str]) -> list[str]:
        for word in words:
            if len(word.split()) != 1:
                raise ValueError(f"'{word}' is not one word: give words without spaces")
        return words

    @model_validator(mode="after")
    def one_corpus(self) -> UnigramParams:
        if (self.corpus is None) == (self.builtin is None):
            raise ValueError("give either a corpus (text) or builtin='python-docs', not both")
        if self.corpus is not None:
            if len(self.corpus.split()) < 50:
                raise ValueError("the text needs at least 50 words to learn a vocabulary from")
            if len(self.corpus) > MAX_UNIGRAM_CHARS:
                raise ValueError(
                    f"the text has {len(self.corpus):,} characters; at most 300,000, please"
                )
            longest = max(self.corpus.split(), key=len)
            if len(longest) > MAX_UNIGRAM_RUN:
                raise ValueError(
                    f"the text has a run of {len(longest):,} characters without a space or "
                    f"line break (it starts '{longest[:12]}…'); at most {MAX_UNIGRAM_RUN:,}, "
                    "please: break it into lines"
                )
        return self

    def text(self) -> str:
        """The corpus to train on: the pasted text, or the start of the built-in one."""
        if self.builtin == "python-docs":
            import pydoc_data.topics

            return "\n\n".join(pydoc_data.topics.topics.values())[:MAX_UNIGRAM_CHARS]
        assert self.corpus is not None
        return self.corpus


HANDLERS = "workers.handlers.tokens"

register(
    Playground(
        slug="bpe-train",
        title="Train BPE",
        chapter="tokenization",
        summary="Train a byte-level BPE tokenizer on your text; watch the merges arrive; "
        "download it as a Hugging Face tokenizer.json.",
        params=BpeTrainParams,
        handler=f"{HANDLERS}:bpe_train",
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
        handler=f"{HANDLERS}:bpe_step",
        time_limit=60,
    ),
    Playground(
        slug="tokenize",
        title="Tokenize",
        chapter="tokenization",
        summary="Your text as coloured tokens, side by side for several tokenizers.",
        params=TokenizeParams,
        handler=f"{HANDLERS}:tokenize",
    ),
    Playground(
        slug="token-cost",
        title="Tokens, context and cost",
        chapter="tokenization",
        summary="Tokens per word and per character, context-window use and price.",
        params=TokenCostParams,
        handler=f"{HANDLERS}:token_cost",
    ),
    Playground(
        slug="unigram",
        title="Unigram vs BPE",
        chapter="tokenization",
        summary="Train a Unigram tokenizer (EM, then pruning) and a BPE on the same text; "
        "compare how they split words, and what one sentence costs in ten languages.",
        params=UnigramParams,
        handler=f"{HANDLERS}:unigram_vs_bpe",
        time_limit=300,
        live=True,
    ),
)
