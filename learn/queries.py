"""Read-only questions the pages and the API both ask."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.utils import timezone
from pgvector.django import CosineDistance

from learn.models import (
    CacheEntry,
    Chunk,
    Collection,
    Document,
    Run,
    TextEmbedding,
    TrainedTokenizer,
    VocabWord,
)

if TYPE_CHECKING:
    import numpy as np


def nearest_texts(run: Run, position: int, k: int = 5) -> list[dict[str, Any]] | None:
    """The k texts of an embed run closest to the one at ``position`` (pgvector ``<=>``).

    None when the run has no text at that position.
    """
    k = max(1, min(k, 50))
    origin = TextEmbedding.objects.filter(run=run, position=position).first()
    if origin is None:
        return None
    rows = (
        TextEmbedding.objects.filter(run=run)
        .exclude(position=position)
        .annotate(distance=CosineDistance("embedding", origin.embedding))
        .order_by("distance")[:k]
    )
    return [{"position": r.position, "text": r.text, "distance": float(r.distance)} for r in rows]


def vocabulary_vectors(words: list[str]) -> dict[str, np.ndarray]:
    """The analogy vocabulary's (384,) vectors of these words (those it has)."""
    return {w.word: w.embedding for w in VocabWord.objects.filter(word__in=words)}


def nearest_words(target: np.ndarray, exclude: list[str], k: int) -> list[dict[str, Any]]:
    """The k vocabulary words closest to ``target`` by cosine (pgvector HNSW), minus some."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.ef_search = 100")  # room for the excluded words
        rows = list(
            VocabWord.objects.exclude(word__in=exclude)
            .annotate(distance=CosineDistance("embedding", target))
            .order_by("distance")[:k]
        )
    return [{"word": w.word, "score": 1 - float(w.distance), "vector": w.embedding} for w in rows]


def trained_tokenizer(tokenizer_id: str) -> TrainedTokenizer:
    """One tokenizer trained in the bpe-train playground (its merges in ``data``)."""
    return TrainedTokenizer.objects.get(pk=tokenizer_id)


# ------------------------------------------------------------ chapter 6: collections, cache


def run_owner(run_id: str) -> str:
    return Run.objects.filter(pk=run_id).values_list("owner", flat=True).first() or ""


def course_collection_id() -> str | None:
    found = Collection.objects.filter(builtin=True).values_list("pk", flat=True).first()
    return str(found) if found else None


def visible_collection(collection_id: str, owner_tags: set[str]) -> bool:
    """Whether a requester (any of ``owner_tags``) may use this collection."""
    return Collection.objects.filter(pk=collection_id, owner__in=owner_tags).exists()


def collections_of(owner_tags: set[str]) -> list[Collection]:
    return list(Collection.objects.filter(owner__in=owner_tags, builtin=False)[:50])


def collection_name(collection_id: str) -> str:
    return Collection.objects.filter(pk=collection_id).values_list("name", flat=True).first() or ""


# A chunk as the retrieval code reads it: where it sits in its document, and its text.
CHUNK_FIELDS = (
    "id", "document_id", "position", "start", "end", "context_start", "context_end",
    "section", "text", "tokens",
)  # fmt: skip


def chunks_of(collection_id: str, chunker: str) -> list[dict[str, Any]]:
    """Every chunk of one chunker in a collection, in a stable order (id), without vectors."""
    rows = Chunk.objects.filter(collection_id=collection_id, chunker=chunker).order_by("id")
    return list(rows.values(*CHUNK_FIELDS))


def chunks_of_ids(chunk_ids: list[int]) -> list[dict[str, Any]]:
    """These chunks (any order), without vectors."""
    return list(Chunk.objects.filter(pk__in=chunk_ids).values(*CHUNK_FIELDS))


def chunk_count(collection_id: str, chunker: str) -> int:
    return Chunk.objects.filter(collection_id=collection_id, chunker=chunker).count()


def chunk_vectors(chunk_ids: list[int]) -> dict[int, np.ndarray]:
    rows = Chunk.objects.filter(pk__in=chunk_ids).values_list("id", "embedding")
    return dict(rows)


def dense_search(
    collection_id: str, chunker: str, vector: np.ndarray, n: int
) -> list[tuple[int, float]]:
    """The ``n`` chunks nearest ``vector`` by cosine distance (pgvector HNSW):
    [(chunk id, cosine similarity)], best first."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.ef_search = %s", [max(40, 4 * n)])
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")  # the filter after HNSW
        rows = list(
            Chunk.objects.filter(collection_id=collection_id, chunker=chunker)
            .annotate(distance=CosineDistance("embedding", vector))
            .order_by("distance")
            .values_list("id", "distance")[:n]
        )
    return [(chunk_id, 1.0 - float(distance)) for chunk_id, distance in rows]


def documents_of(collection_id: str) -> dict[int, dict[str, Any]]:
    """A collection's documents by id: title, source and whole text (for highlighting)."""
    rows = Document.objects.filter(collection_id=collection_id).values(
        "id", "title", "source", "text"
    )
    return {row["id"]: row for row in rows}


def nearest_cached(
    collection_id: str | None, vector: np.ndarray, k: int = 1
) -> list[dict[str, Any]]:
    """The ``k`` unexpired cache entries of a collection whose questions are nearest
    ``vector``, nearest first, each with its cosine ``similarity``."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
        rows = list(
            CacheEntry.objects.filter(collection_id=collection_id, expires_at__gt=timezone.now())
            .annotate(distance=CosineDistance("embedding", vector))
            .order_by("distance")
            .values("id", "question", "answer", "generation_ms", "hits", "created_at", "distance")[
                :k
            ]
        )
    return [{**row, "similarity": 1.0 - float(row.pop("distance"))} for row in rows]
