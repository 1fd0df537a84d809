"""Read-only questions the pages and the API both ask."""

from __future__ import annotations

from typing import Any

from pgvector.django import CosineDistance

from learn.models import Run, TextEmbedding


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
