"""The six chapters of Forward Pass, as plain data for the home page and chapter pages.

This module is deliberately free of Django imports so it can be read by views, templates,
tests and scripts alike. Each chapter names the lesson template that holds its prose, or
``None`` while the lesson is still being written.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chapter:
    """One chapter of the course: where it lives, what it covers, and its lesson template."""

    number: int
    slug: str
    title: str
    summary: str
    topics: tuple[str, ...]
    lesson_template: str | None


CHAPTERS: tuple[Chapter, ...] = (
    Chapter(
        number=1,
        slug="embeddings",
        title="Vector embeddings",
        summary=(
            "How a model turns words and sentences into points in space, so that things "
            "with similar meaning end up near each other, and how to measure, picture and "
            "even fake that closeness with hashing."
        ),
        topics=(
            "embedding tables and sentence embeddings",
            "cosine, Euclidean and dot-product similarity",
            "word analogies by vector arithmetic",
            "PCA and other projections to 2-D",
            "n-grams, Jaccard, Bloom filters and MinHash",
        ),
        lesson_template="lessons/embeddings.html",
    ),
    Chapter(
        number=2,
        slug="vector-search",
        title="Vector databases and search",
        summary=(
            "Finding the nearest neighbours of a query among millions of vectors without "
            "comparing against every one, and what each shortcut trades away in recall."
        ),
        topics=(
            "brute-force search",
            "K-D trees",
            "HNSW graphs",
            "IVF partitioning",
            "product and scalar quantization",
            "pgvector",
        ),
        lesson_template="lessons/vector-search.html",
    ),
    Chapter(
        number=3,
        slug="tokenization",
        title="Tokenization",
        summary=(
            "Why models read text as sub-word pieces rather than characters or whole words, "
            "and how byte-pair encoding learns those pieces from data."
        ),
        topics=(
            "characters, words and sub-words",
            "byte-pair encoding (BPE)",
            "pre-tokenization and special tokens",
            "WordPiece",
            "token counts, context windows and cost",
        ),
        lesson_template="lessons/tokenization.html",
    ),
    Chapter(
        number=4,
        slug="transformers",
        title="Transformers",
        summary=(
            "The architecture behind modern language models, built up piece by piece: "
            "attention, position information, causal masks, and how text is sampled out."
        ),
        topics=(
            "self-attention",
            "positional encodings",
            "attention masks",
            "sampling: temperature, top-k, top-p",
            "training a tiny GPT, and distillation",
            "fine-tuning SmolLM2 with LoRA",
        ),
        lesson_template="lessons/transformers.html",
    ),
    Chapter(
        number=5,
        slug="inference",
        title="Inference optimisation",
        summary=(
            "Making a trained model answer faster and in less memory, from caching past "
            "work to reading fewer bits per weight and guessing several tokens at once."
        ),
        topics=(
            "KV cache",
            "paged attention",
            "tiled (flash) attention",
            "quantization",
            "speculative decoding",
            "sparse attention",
            "mixture of experts",
        ),
        lesson_template="lessons/inference.html",
    ),
    Chapter(
        number=6,
        slug="rag-agents",
        title="RAG, agents and semantic caching",
        summary=(
            "Putting the pieces together: grounding a model's answers in retrieved "
            "documents, reusing answers to questions that mean the same thing, holding its "
            "output to a schema, letting it call tools in a loop, and keeping it safe."
        ),
        topics=(
            "retrieval-augmented generation",
            "chunking and re-ranking",
            "semantic caching",
            "structured output",
            "tool-using agents",
            "prompt engineering",
            "prompt injection and PII",
            "planning by search (MCTS)",
        ),
        lesson_template="lessons/rag-agents.html",
    ),
)

_BY_SLUG: dict[str, Chapter] = {chapter.slug: chapter for chapter in CHAPTERS}


def get_chapter(slug: str) -> Chapter | None:
    """Return the chapter with this slug, or ``None`` if there is no such chapter."""
    return _BY_SLUG.get(slug)
