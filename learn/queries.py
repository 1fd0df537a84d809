"""Read-only questions the pages and the API both ask."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from pgvector.django import CosineDistance

from learn.models import Run, TextEmbedding, TrainedTokenizer, VocabWord

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
