"""Chapter 1, vector embeddings: embed texts, word analogies, hash vectors."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from pydantic import Field, StringConstraints, field_validator, model_validator

from learn.playgrounds.base import Playground, PlaygroundParams, register

MAX_TEXTS = 256
MAX_TEXT_CHARS = 2_000
VOCAB_SIZE = 5_000  # MiniLM's most frequent whole words, embedded once into pgvector

Text = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS)
]
Word = Annotated[
    str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=64)
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


HANDLERS = "workers.handlers.embeddings"

register(
    Playground(
        slug="embed",
        title="Embed texts",
        chapter="embeddings",
        summary="Texts → MiniLM embeddings in pgvector: PCA map, similarity heatmap, "
        "nearest neighbours.",
        params=EmbedParams,
        handler=f"{HANDLERS}:embed",
        queue="gpu",
        time_limit=300,
    ),
    Playground(
        slug="analogy",
        title="Word analogies",
        chapter="embeddings",
        summary="a − b + c over a few thousand words kept in pgvector (HNSW).",
        params=AnalogyParams,
        handler=f"{HANDLERS}:analogy",
        queue="gpu",
        time_limit=300,
    ),
    Playground(
        slug="hash-vectors",
        title="Hash vectors",
        chapter="embeddings",
        summary="Word n-grams → Bloom filter bits and MinHash: Jaccard estimates vs exact.",
        params=HashVectorsParams,
        handler=f"{HANDLERS}:hash_vectors",
        time_limit=60,
    ),
)
