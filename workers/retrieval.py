"""Chapter 6's retrieval pipeline on a worker: ingest documents, then dense, BM25 and
hybrid search over a collection's chunks.

Ingesting cuts each document with every chunker (``learn.lab.chunking``), embeds each chunk
with MiniLM and stores it all at once (``services.store_collection``). Dense search is
pgvector's HNSW; BM25 is ours (``learn.lab.bm25``), built per (collection, chunker) once
per process from the stored texts; hybrid fuses the two rankings by reciprocal rank.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from learn import queries, services
from learn.lab.events import Emit, no_emit, scaled_emit
from learn.playgrounds.rag import CHUNKERS
from workers import modelcache

CANDIDATES = 20  # each retriever's list before fusion and re-ranking
CHUNK_TOKENS, OVERLAP, WINDOW = 128, 32, 1  # the chunkers' settings (MiniLM word pieces)
MAX_CHUNKS = 2_000  # per chunker, per collection


def token_spans(text: str) -> list[tuple[int, int]]:
    """MiniLM word pieces of ``text`` as (start, end) character offsets."""
    return [(p.start, p.end) for p in modelcache.reference_tokenizer("minilm").pieces(text)]


@dataclass
class Source:
    """A document to ingest; ``sections`` are (id, start, end) character ranges."""

    title: str
    source: str
    text: str
    sections: list[tuple[str, int, int]] = field(default_factory=list)

    def section_at(self, offset: int) -> str:
        return next((sid for sid, lo, hi in self.sections if lo <= offset < hi), "")


def ingest(
    sources: list[Source], emit: Emit = no_emit, *, limit: int | None = MAX_CHUNKS
) -> list[services.DocumentRows]:
    """Every source cut by every chunker and embedded (progress 0-100 through ``emit``);
    more than ``limit`` chunks for any chunker is refused before anything is embedded."""
    from learn.lab.chunking import chunk

    documents, texts = [], []
    for source in sources:
        spans = {
            name: chunk(
                source.text, name, token_spans, size=CHUNK_TOKENS, overlap=OVERLAP, window=WINDOW
            )
            for name in CHUNKERS
        }
        documents.append((source, spans))
        texts += [span.text for by_chunker in spans.values() for span in by_chunker]
    for name in CHUNKERS:
        count = sum(len(spans[name]) for _, spans in documents)
        if limit is not None and count > limit:
            raise ValueError(
                f"this text makes {count:,} chunks with the {name} chunker; a collection holds "
                f"at most {limit:,}. Upload less text."
            )
    emit("progress", pct=5, message=f"Cut into {len(texts):,} chunks; embedding them with MiniLM")
    vectors = iter(modelcache.encoder().encode(texts, emit=scaled_emit(emit, 5, 95, "Embedding")))
    rows = []
    for source, spans in documents:
        chunks = [
            services.ChunkRow(
                chunker=name,
                position=i,
                start=s.start,
                end=s.end,
                context_start=s.context_start,
                context_end=s.context_end,
                text=s.text,
                tokens=s.tokens,
                embedding=next(vectors),
                section=source.section_at(s.start),
            )
            for name, by_chunker in spans.items()
            for i, s in enumerate(by_chunker)
        ]
        rows.append(services.DocumentRows(source.title, source.source, source.text, chunks))
    return rows


def course_collection(emit: Emit = no_emit) -> str:
    """The id of the built-in collection, ingesting the lessons the first time."""
    found = queries.course_collection_id()
    if found:
        return found

    def build() -> list[services.DocumentRows]:
        from learn.knowledge import course_lessons

        emit("log", message="First use: cutting and embedding the course's six lessons")
        lessons = [
            Source(
                lesson.title,
                lesson.slug,
                lesson.text,
                [(s.id, s.start, s.end) for s in lesson.sections],
            )
            for lesson in course_lessons()
        ]
        return ingest(lessons, emit, limit=None)

    return services.ensure_course_collection(build)


@lru_cache(maxsize=16)
def _bm25(collection_id: str, chunker: str, count: int) -> tuple[Any, list[int]]:
    """Our BM25 over a collection's chunks (rebuilt when the chunk count changes)."""
    from learn.lab.bm25 import BM25, tokens

    rows = queries.chunks_of(collection_id, chunker)
    return BM25([tokens(r["text"]) for r in rows]), [r["id"] for r in rows]


@dataclass
class Retrieved:
    """Rankings of chunk ids, best first, with each retriever's scores."""

    dense: list[tuple[int, float]]  # (chunk id, cosine similarity)
    bm25: list[tuple[int, float]]  # (chunk id, BM25 score)
    hybrid: list[tuple[int, float]]  # (chunk id, RRF score)
    query_vector: np.ndarray  # (384,)
    ms: dict[str, float]


def retrieve(
    collection_id: str,
    chunker: str,
    question: str,
    n: int = CANDIDATES,
    *,
    vector: np.ndarray | None = None,
) -> Retrieved:
    """Dense, BM25 and fused rankings of one question; ``vector`` is its (384,) MiniLM
    embedding when the caller has it already (it is embedded here otherwise)."""
    from learn.lab.bm25 import tokens
    from learn.lab.fusion import rrf

    started = time.perf_counter()
    if vector is None:
        vector = modelcache.encoder().encode([question])[0]
    embedded = time.perf_counter()
    dense = queries.dense_search(collection_id, chunker, vector, n)
    searched = time.perf_counter()
    index, ids = _bm25(collection_id, chunker, queries.chunk_count(collection_id, chunker))
    top = index.top(tokens(question), n, positive_only=True)
    lexical = [(ids[i], float(s)) for i, s in zip(top.ids, top.scores, strict=True)]
    fused = rrf([[c for c, _ in dense], [c for c, _ in lexical]])[:n]
    return Retrieved(
        dense,
        lexical,
        fused,
        vector,
        {
            "embed": 1000 * (embedded - started),
            "dense": 1000 * (searched - embedded),
            "lexical": 1000 * (time.perf_counter() - searched),
        },
    )


def rank_table(found: Retrieved, chosen: list[int], collection_id: str) -> list[dict[str, Any]]:
    """Every candidate chunk with its rank and score under each retriever, its rank after
    fusion and re-ranking (``final_rank``, 1-based, None when not given to the model), and
    the text the model sees (its context window): the chosen first, in order."""
    dense = {c: (r, s) for r, (c, s) in enumerate(found.dense, 1)}
    bm25 = {c: (r, s) for r, (c, s) in enumerate(found.bm25, 1)}
    fused = {c: (r, s) for r, (c, s) in enumerate(found.hybrid, 1)}
    shown = 10  # of each list: the table stays readable, every chosen chunk is in it
    ids = list(
        dict.fromkeys([*chosen, *list(fused)[:shown], *list(dense)[:shown], *list(bm25)[:shown]])
    )
    rows = {r["id"]: r for r in queries.chunks_of_ids(ids)}
    documents = queries.documents_of(collection_id)
    table = []
    for chunk_id in ids:
        row, doc = rows[chunk_id], documents[rows[chunk_id]["document_id"]]

        def rank(ranks: dict[int, tuple[int, float]], key: int = chunk_id) -> dict[str, Any]:
            r, s = ranks.get(key, (None, None))
            return {"rank": r, "score": None if s is None else round(s, 4)}

        table.append(
            {
                "id": chunk_id,
                "document": doc["title"],
                "section": row["section"],
                "start": row["start"],
                "end": row["end"],
                "tokens": row["tokens"],
                "text": row["text"],
                "context": doc["text"][row["context_start"] : row["context_end"]],
                "dense": rank(dense),
                "bm25": rank(bm25),
                "hybrid": rank(fused),
                "final_rank": chosen.index(chunk_id) + 1 if chunk_id in chosen else None,
            }
        )
    return table


THRESHOLDS = tuple(round(0.5 + 0.01 * i, 2) for i in range(50))  # 0.50 … 0.99


MIN_PRECISION = 0.95  # the chapter's goal for the cache: at most 1 wrong answer in 20 hits


@lru_cache(maxsize=1)
def pair_sweep() -> dict[str, Any]:
    """Precision, recall and hit rate of a semantic cache on the labelled pairs, for each
    threshold on MiniLM's cosine similarity of the two questions: by cosine alone (top-level
    ``precision``…) and with the second check (``verified``: ``semcache_verify.verify``,
    the one the live cache uses). The suggested threshold is chosen on the "tune" half of
    the pairs, with the check; ``at_default`` reports it on the other half and on all."""
    from learn.lab.rag_data import cache_pairs
    from learn.lab.semcache import default_threshold, halves, threshold_sweep
    from learn.lab.semcache_verify import verify

    pairs = cache_pairs()
    encoder = modelcache.encoder()
    a = encoder.encode([p["a"] for p in pairs])  # (n, 384), unit length
    b = encoder.encode([p["b"] for p in pairs])
    similarity = np.einsum("nd,nd->n", a, b)  # (n,) cosine
    same = np.array([bool(p["same"]) for p in pairs])
    verdicts = [verify(p["a"], p["b"]) for p in pairs]
    passed = np.array([v.same for v in verdicts])  # (n,) bool
    tune = halves([(p["a"], p["b"]) for p in pairs])  # (n,) bool
    cosine = threshold_sweep(similarity, same, THRESHOLDS)
    checked = threshold_sweep(similarity, same, THRESHOLDS, verified=passed)
    tuned = threshold_sweep(similarity[tune], same[tune], THRESHOLDS, verified=passed[tune])
    chosen = default_threshold(tuned, MIN_PRECISION)
    cosine_tuned = threshold_sweep(similarity[tune], same[tune], THRESHOLDS)

    def at(mask: np.ndarray, check: bool) -> dict[str, Any]:
        row = threshold_sweep(
            similarity[mask], same[mask], [chosen], verified=passed[mask] if check else None
        )[0]
        index = np.flatnonzero(mask)  # back to indices into all pairs
        return {
            "pairs": int(mask.sum()),
            "precision": round(row["precision"], 4),
            "recall": round(row["recall"], 4),
            "hit_rate": round(row["hit_rate"], 4),
            "false_hits": index[row["false_hits"]].tolist(),
        }

    def curves(sweep: list[dict[str, Any]]) -> dict[str, list[Any]]:
        return {
            "precision": [round(row["precision"], 4) for row in sweep],
            "recall": [round(row["recall"], 4) for row in sweep],
            "hit_rate": [round(row["hit_rate"], 4) for row in sweep],
            "false_hits": [row["false_hits"] for row in sweep],
        }

    everyone = np.ones(len(pairs), dtype=bool)
    return {
        "thresholds": list(THRESHOLDS),
        **curves(cosine),
        "verified": curves(checked),
        "pairs": [
            {
                "a": p["a"],
                "b": p["b"],
                "same": bool(p["same"]),
                "similarity": round(float(s), 4),
                "verified": v.same,
                "reasons": list(v.reasons),
                "differing": [list(v.only_stored), list(v.only_asked)],
                "half": "tune" if t else "report",
            }
            for p, s, v, t in zip(pairs, similarity, verdicts, tune, strict=True)
        ],
        "min_precision": MIN_PRECISION,
        "default_threshold": chosen,
        "cosine_only_threshold": default_threshold(cosine_tuned, MIN_PRECISION),
        "halves": {"tune": int(tune.sum()), "report": int((~tune).sum())},
        "at_default": {
            "report": at(~tune, True),
            "all": at(everyone, True),
            "cosine_only": at(everyone, False),
        },
    }
