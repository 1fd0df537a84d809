"""Chapter 1's handlers: embed texts, word analogies, hash vectors."""

from __future__ import annotations

import time
from typing import Any

from learn import queries, services
from learn.lab.events import scaled_emit
from learn.playgrounds.embeddings import (
    VOCAB_SIZE,
    AnalogyParams,
    EmbedParams,
    HashVectorsParams,
)
from workers import modelcache
from workers.handlers import Job


def embed(p: EmbedParams, job: Job) -> dict[str, Any]:
    from learn.lab.embeddings import cosine_matrix, pca_2d

    job.emit("progress", pct=2, message="Loading all-MiniLM-L6-v2")
    encoder = modelcache.encoder()
    started = time.perf_counter()
    vectors = encoder.encode(p.texts, emit=scaled_emit(job.emit, 5, 80, "Embedding"))
    seconds = time.perf_counter() - started
    job.emit("partial", message=f"Embedded {len(p.texts)} texts in {seconds:.2f} s on {job.device}")
    services.store_embeddings(job.run_id, p.texts, vectors)
    job.emit("progress", pct=88, message="Stored in pgvector; projecting to 2-D")
    projection = pca_2d(vectors)
    return {
        "model": "all-MiniLM-L6-v2",
        "dim": int(vectors.shape[1]),
        "texts": p.texts,
        "points": projection.points.round(4).tolist(),
        "explained": [round(float(e), 4) for e in projection.explained],
        "similarity": cosine_matrix(vectors).round(3).tolist(),
        "embed_seconds": round(seconds, 4),
        "texts_per_second": round(len(p.texts) / seconds, 1) if seconds else None,
    }


def analogy(p: AnalogyParams, job: Job) -> dict[str, Any]:
    import numpy as np

    from learn.lab.embeddings import analogy_vector, pca_2d
    from learn.lab.models import wordpiece_words

    def embed_vocabulary() -> tuple[list[str], Any]:
        job.emit("log", message=f"First analogy run: embedding {VOCAB_SIZE:,} words into pgvector")
        words = wordpiece_words(VOCAB_SIZE)
        vectors = modelcache.encoder().encode(
            words, batch_size=256, emit=scaled_emit(job.emit, 2, 85, "Embedding the vocabulary")
        )
        return words, vectors

    job.emit("progress", pct=1, message="Checking the vocabulary")
    services.store_vocabulary(VOCAB_SIZE, embed_vocabulary)
    job.emit("progress", pct=88, message=f"Searching for {p.a} − {p.b} + {p.c}")
    given = queries.vocabulary_vectors([p.a, p.b, p.c])
    target = analogy_vector(given[p.a], given[p.b], given[p.c])
    answers = queries.nearest_words(target, exclude=[p.a, p.b, p.c], k=p.k)
    top = answers[0]
    labels = [p.a, p.b, p.c, top["word"], f"{p.a} − {p.b} + {p.c}"]
    projection = pca_2d(np.stack([given[p.a], given[p.b], given[p.c], top["vector"], target]))
    return {
        "query": {"a": p.a, "b": p.b, "c": p.c},
        "answers": [{"word": w["word"], "score": round(w["score"], 4)} for w in answers],
        "plot": [
            {"label": label, "x": round(float(x), 4), "y": round(float(y), 4)}
            for label, (x, y) in zip(labels, projection.points, strict=True)
        ],
        "explained": [round(float(e), 4) for e in projection.explained],
        "vocabulary": VOCAB_SIZE,
    }


def hash_vectors(p: HashVectorsParams, job: Job) -> dict[str, Any]:
    from learn.lab.hashing import compare_texts

    job.emit("progress", pct=5, message="Hashing n-grams")
    return {
        **compare_texts(
            p.text_a, p.text_b, n=p.n, m=p.m, k=p.k, num_perm=p.num_perm, emit=job.emit
        ),
        "device": "cpu",  # hashing is integer work on the CPU
    }
