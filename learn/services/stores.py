"""What handlers keep for a run: embeddings, the analogy vocabulary, trained tokenizers,
pgvector's scratch tables, chapter 6's collections and the semantic cache.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from learn.lab.events import Emit, no_emit
from learn.models import (
    CacheEntry,
    Chunk,
    Collection,
    Document,
    TextEmbedding,
    TrainedTokenizer,
    VocabWord,
)
from learn.playgrounds.vectors import PgvectorParams
from learn.services.runs import advisory_lock

if TYPE_CHECKING:
    import numpy as np


VOCAB_LOCK = 0x66700001  # pg advisory lock: one process embeds the vocabulary


def store_embeddings(run_id: str, texts: list[str], vectors: np.ndarray) -> None:
    """Keep an embed run's texts and their (n, 384) vectors, for neighbour queries."""
    TextEmbedding.objects.bulk_create(
        TextEmbedding(run_id=run_id, position=i, text=text, embedding=vector)
        for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))
    )


def store_vocabulary(size: int, build: Callable[[], tuple[list[str], np.ndarray]]) -> bool:
    """Fill the analogy vocabulary once: ``build`` gives (words, (n, 384) vectors).

    Several workers may ask at once: an advisory lock lets one build it while the others
    wait, then find it there. True when this call built it.
    """
    if VocabWord.objects.count() >= size:
        return False
    with transaction.atomic():
        advisory_lock(VOCAB_LOCK)
        if VocabWord.objects.count() >= size:
            return False  # another worker built it while we waited
        words, vectors = build()
        VocabWord.objects.all().delete()
        VocabWord.objects.bulk_create(
            (
                VocabWord(word=w, rank=i, embedding=v)
                for i, (w, v) in enumerate(zip(words, vectors, strict=True))
            ),
            batch_size=1000,
        )
    return True


def save_tokenizer(
    run_id: str,
    *,
    name: str,
    data: dict[str, Any],
    vocab_size: int,
    pretokenizer: str,
    special_tokens: list[str],
    corpus_chars: int,
) -> str:
    """Keep a trained tokenizer (its merges as ``data``); returns its id."""
    saved = TrainedTokenizer.objects.create(
        run_id=run_id,
        name=name,
        data=data,
        vocab_size=vocab_size,
        pretokenizer=pretokenizer,
        special_tokens=special_tokens,
        corpus_chars=corpus_chars,
    )
    return str(saved.id)


@dataclass
class PgvectorSearch:
    """What the pgvector playground measured in its scratch table (ids are row numbers)."""

    build_seconds: float
    index_bytes: int
    qps: float
    found: list[list[int]]  # through the index
    post_filtered: list[list[int]]  # the index first, the category filter after
    pre_filtered: list[list[int]]  # the filter first, exact distances (index off)
    exact: list[list[int]]  # the first 20 queries with no index at all
    plan: str  # EXPLAIN (ANALYZE, BUFFERS) of the first query


def pgvector_search(
    run_id: str,
    p: PgvectorParams,
    data: np.ndarray,
    category: np.ndarray,
    queries: np.ndarray,
    emit: Emit = no_emit,
) -> PgvectorSearch:
    """Copy (n, d) ``data`` with its (n,) ``category`` into a scratch table, index it as
    ``p`` says, and search it with every (q, d) query, filtered and not.

    One transaction: ``SET LOCAL`` settings end with it, and the table never outlives it,
    whether the search finishes or fails.
    """
    table = f"pgv_{uuid.UUID(str(run_id)).hex}"  # a hex name: nothing from input in the SQL
    ops, op = ("vector_l2_ops", "<->") if p.metric == "l2" else ("vector_cosine_ops", "<=>")
    with transaction.atomic(), connection.cursor() as cur:
        dims = int(data.shape[1])
        cur.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, category int, v vector({dims}))")
        emit("progress", pct=15, message=f"Copying {len(data):,} rows into a pgvector table")
        with cur.copy(f"COPY {table} (id, category, v) FROM STDIN") as copy:
            for i, (row, cat) in enumerate(zip(data, category, strict=True)):
                copy.write_row((i, int(cat), vector_literal(row)))
        emit("progress", pct=30, message=f"Building the {p.index} index")
        started = time.perf_counter()
        if p.index == "hnsw":
            cur.execute(
                f"CREATE INDEX {table}_v ON {table} USING hnsw (v {ops}) "
                f"WITH (m = {int(p.M)}, ef_construction = {int(p.ef_construction)})"
            )
            cur.execute(f"SET LOCAL hnsw.ef_search = {int(p.ef_search)}")
        else:
            cur.execute(
                f"CREATE INDEX {table}_v ON {table} USING ivfflat (v {ops}) "
                f"WITH (lists = {int(p.nlist)})"
            )
            cur.execute(f"SET LOCAL ivfflat.probes = {int(p.probes)}")
        build_seconds = time.perf_counter() - started
        cur.execute(f"SELECT pg_relation_size('{table}_v')")
        index_bytes = int(cur.fetchone()[0])
        cur.execute(f"ANALYZE {table}")
        nearest = f"ORDER BY v {op} %s::vector LIMIT %s"

        def search(q: np.ndarray, where: str = "") -> list[int]:
            cur.execute(f"SELECT id FROM {table} {where} {nearest}", (vector_literal(q), p.k))
            return [row[0] for row in cur.fetchall()]

        emit("progress", pct=50, message="Searching through the index")
        cur.execute("SET LOCAL enable_seqscan = off")  # the index, even where a scan is cheap
        started = time.perf_counter()
        found = [search(q) for q in queries]
        qps = len(queries) / (time.perf_counter() - started)
        cur.execute(
            f"EXPLAIN (ANALYZE, BUFFERS) SELECT id FROM {table} {nearest}",
            (vector_literal(queries[0]), p.k),
        )
        plan = "\n".join(row[0] for row in cur.fetchall())
        emit("progress", pct=70, message=f"Filtering: category = {p.category}")
        where = f"WHERE category = {int(p.category)}"
        post = [search(q, where) for q in queries]
        cur.execute("SET LOCAL enable_seqscan = on")
        cur.execute("SET LOCAL enable_indexscan = off")
        pre = [search(q, where) for q in queries]
        exact = [search(q) for q in queries[:20]]
        cur.execute(f"DROP TABLE {table}")
    return PgvectorSearch(build_seconds, index_bytes, qps, found, post, pre, exact, plan)


def vector_literal(v: np.ndarray) -> str:
    """pgvector's text form of a vector: '[1.5,2,...]'."""
    return "[" + ",".join(f"{x:.7g}" for x in v.tolist()) + "]"


# ------------------------------------------------------------ chapter 6: collections, cache

COURSE_LOCK = 0x66700002  # pg advisory lock: one process ingests the course


@dataclass
class ChunkRow:
    """One chunk to store: where it is in its document, and its (384,) embedding."""

    chunker: str
    position: int
    start: int
    end: int
    context_start: int
    context_end: int
    text: str
    tokens: int
    embedding: np.ndarray
    section: str = ""


@dataclass
class DocumentRows:
    title: str
    source: str
    text: str
    chunks: list[ChunkRow]


def store_collection(
    name: str, owner: str, documents: list[DocumentRows], *, builtin: bool = False
) -> str:
    """A collection with its documents and chunks, in one transaction: all or nothing."""
    with transaction.atomic():
        collection = Collection.objects.create(name=name, owner=owner, builtin=builtin)
        for doc in documents:
            document = Document.objects.create(
                collection=collection, title=doc.title[:255], source=doc.source[:255], text=doc.text
            )
            Chunk.objects.bulk_create(
                (
                    Chunk(collection=collection, document=document, **vars(row))
                    for row in doc.chunks
                ),
                batch_size=500,
            )
    return str(collection.pk)


def ensure_course_collection(build: Callable[[], list[DocumentRows]]) -> str:
    """The built-in collection of the course's lessons, ingested once (``build`` chunks and
    embeds them); several workers asking at once wait for the first."""
    found = Collection.objects.filter(builtin=True).first()
    if found is not None:
        return str(found.pk)
    with transaction.atomic():
        advisory_lock(COURSE_LOCK)
        found = Collection.objects.filter(builtin=True).first()
        if found is not None:
            return str(found.pk)
        return store_collection("Forward Pass course", "", build(), builtin=True)


def cache_answer(
    collection_id: str | None,
    question: str,
    embedding: np.ndarray,
    answer: str,
    generation_ms: float,
    ttl_seconds: int,
) -> None:
    """Keep a generated answer under its question's embedding until it expires."""
    CacheEntry.objects.create(
        collection_id=collection_id,
        question=question,
        embedding=embedding,
        answer=answer,
        generation_ms=generation_ms,
        expires_at=timezone.now() + timedelta(seconds=ttl_seconds),
    )


def count_cache_hit(entry_id: int) -> None:
    CacheEntry.objects.filter(pk=entry_id).update(hits=F("hits") + 1)


def purge_expired_cache() -> int:
    """Delete expired cache entries; returns how many went."""
    return CacheEntry.objects.filter(expires_at__lte=timezone.now()).delete()[0]
