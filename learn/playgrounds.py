"""Every playground: its parameters (with hard bounds), where it runs, how long it may take.

Adding a playground = a Schema here + an entry in PLAYGROUNDS + a handler in
``workers/handlers.py`` + a template ``templates/playgrounds/<slug>.html`` with a
``form`` and a ``result`` partial.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

from django.http import QueryDict
from ninja import Schema
from pydantic import Field, StringConstraints, field_validator, model_validator

MAX_TEXTS = 256
MAX_TEXT_CHARS = 2_000
VOCAB_SIZE = 5_000


class PlaygroundParams(Schema):
    """Base for playground parameters; unknown fields are refused, not ignored."""

    model_config = {"extra": "forbid"}

    @classmethod
    def from_form(cls, form: QueryDict) -> dict[str, Any]:
        """A form post's fields as the JSON body a script would send."""
        return {key: form.get(key) for key in form if key != "csrfmiddlewaretoken"}


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
    def from_form(cls, form: QueryDict) -> dict[str, Any]:
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


@dataclass(frozen=True)
class Playground:
    slug: str
    title: str
    chapter: str
    summary: str
    params: type[PlaygroundParams]
    queue: str = "cpu"  # "gpu" when it uses a model: GPU workers take it first
    time_limit: int = 120  # seconds; the worker stops it after this

    @property
    def template(self) -> str:
        return f"playgrounds/{self.slug}.html"

    @property
    def form_template(self) -> str:
        return f"{self.template}#form"

    @property
    def result_template(self) -> str:
        return f"{self.template}#result"


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
