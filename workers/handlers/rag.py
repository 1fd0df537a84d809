"""Chapter 6's handlers: make a collection, ask the course, evaluate retrieval, the
semantic cache, and MCTS.

Generation goes through ``workers.llm_client`` (SmolLM2 on this worker by default, or any
OpenAI-compatible server); retrieval through ``workers.retrieval``.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from learn import queries, services
from learn.playgrounds import PlaygroundError
from learn.playgrounds.rag import (
    COURSE,
    AskParams,
    CacheParams,
    CollectionParams,
    EvalParams,
    MCTSParams,
)
from workers import modelcache, retrieval
from workers.handlers import Job

MODEL_TOKENS = 2_048  # SmolLM2's prompt + answer, as this site serves it


def _collection(collection: str, job: Job) -> str:
    return retrieval.course_collection(job.emit) if collection == COURSE else collection


def _placeholders(text: str) -> dict[str, int]:
    """How many of each kind of personal data the schema redacted (its placeholders)."""
    from learn.lab.pii import PLACEHOLDER

    return {kind: text.count(mark) for kind, mark in PLACEHOLDER.items()}


def make_collection(p: CollectionParams, job: Job) -> dict[str, Any]:
    source = retrieval.Source(p.source if p.source != "pasted" else p.name, p.source, p.text)
    try:
        rows = retrieval.ingest([source], job.emit)
    except ValueError as exc:
        raise PlaygroundError(str(exc)) from exc
    collection_id = services.store_collection(p.name, queries.run_owner(job.run_id), rows)
    by_chunker = {
        name: [c for c in rows[0].chunks if c.chunker == name] for name in retrieval.CHUNKERS
    }
    shown = 40  # chunks highlighted per chunker on the page
    return {
        "collection_id": collection_id,
        "name": p.name,
        "source": p.source,
        "chars": len(p.text),
        "text": p.text[: max((c.end for c in rows[0].chunks[:shown]), default=0) + 200],
        "redacted": _placeholders(p.text) if p.redact_pii else None,
        "chunkers": {
            name: {
                "count": len(chunks),
                "mean_tokens": round(sum(c.tokens for c in chunks) / max(len(chunks), 1), 1),
                "spans": [[c.start, c.end, c.tokens] for c in chunks[:shown]],
            }
            for name, chunks in by_chunker.items()
        },
    }


def _tokens(text: str) -> int:
    return len(modelcache.smollm2()[1].encode(text).ids)


def _ranked(p: AskParams, found: retrieval.Retrieved) -> list[int]:
    """The chunk ids to give the model, after the optional re-ranking of the fused list."""
    fused = [chunk_id for chunk_id, _ in found.hybrid]
    if p.rerank == "mmr":
        import numpy as np

        from learn.lab.rerank import mmr

        vectors = queries.chunk_vectors(fused)
        order = mmr(found.query_vector, np.stack([vectors[c] for c in fused]), k=p.k)
        return [fused[i] for i in order]
    if p.rerank == "llm":
        from learn.lab.rerank import relevance_scores

        model, tokenizer = modelcache.smollm2()
        pool = fused[: max(p.k * 2, 10)]
        texts = {r["id"]: r["text"] for r in queries.chunks_of_ids(pool)}
        scores = relevance_scores(model, tokenizer, p.question, [texts[c] for c in pool])
        return [c for _, c in sorted(zip(scores, pool, strict=True), key=lambda t: -t[0])][: p.k]
    return fused[: p.k]


def ask(p: AskParams, job: Job) -> dict[str, Any]:
    from learn.lab.grounding import assemble, citations, closed_book
    from workers.llm_client import LLMClient

    job.emit("progress", pct=2, message="Finding the collection")
    collection_id = _collection(p.collection, job)
    job.emit("progress", pct=10, message="Retrieving: MiniLM + pgvector, and BM25")
    started = time.perf_counter()
    found = retrieval.retrieve(collection_id, p.chunker, p.question)
    if not found.hybrid:
        raise PlaygroundError("The collection has no chunks to search; make it again.")
    if p.rerank != "none":
        job.emit("progress", pct=20, message=f"Re-ranking with {p.rerank.upper()}")
    chosen = _ranked(p, found)
    retrieve_ms = 1000 * (time.perf_counter() - started)
    table = retrieval.rank_table(found, chosen, collection_id)
    contexts = [row["context"] for row in table if row["final_rank"]]
    try:
        prompt = assemble(p.question, contexts, count_tokens=_tokens, budget=p.context_budget)
    except ValueError as exc:
        raise PlaygroundError(str(exc)) from exc
    job.emit("partial", target="prompt", text=prompt.user, tokens=prompt.tokens)
    llm = LLMClient.from_env()

    def stream(target: str) -> Any:
        return lambda delta: job.emit("partial", target=target, text=delta)

    where = llm.base_url or "SmolLM2 on this worker"
    job.emit("progress", pct=30, message=f"Generating a grounded answer ({where})")
    grounded = llm.chat(prompt.messages, max_tokens=p.max_new_tokens, on_delta=stream("grounded"))
    closed = None
    if p.closed_book:
        job.emit("progress", pct=65, message="The same question with no retrieval")
        closed = llm.chat(
            closed_book(p.question), max_tokens=p.max_new_tokens, on_delta=stream("closed")
        )
    cited = citations(grounded.text, len(prompt.used_chunks))
    return {
        "question": p.question,
        "collection": queries.collection_name(collection_id),
        "chunker": p.chunker,
        "rerank": p.rerank,
        "chunks": table,
        "prompt": asdict(prompt),
        "answer": asdict(grounded),
        "closed_book": asdict(closed) if closed else None,
        "citations": cited,
        "timings_ms": {
            **{k: round(v, 1) for k, v in found.ms.items()},
            "retrieve": round(retrieve_ms, 1),
        },
        "device": grounded.device,
    }


def _gold_key(item: dict[str, Any]) -> str:
    return f"{item['lesson']}#{item['section']}"


def _questions(p: EvalParams) -> list[tuple[str, str]]:
    """(question, gold) pairs: a lesson section for the course, a quote for your own."""
    if p.collection == COURSE:
        from learn.lab.rag_data import rag_questions

        return [(item["question"], _gold_key(item)) for item in rag_questions()]
    return [(question, " ".join(quote.lower().split())) for question, quote in p.pairs()]


def evaluate(p: EvalParams, job: Job) -> dict[str, Any]:
    from learn.lab.rag_eval import summarise

    collection_id = _collection(p.collection, job)
    questions = _questions(p)
    documents = queries.documents_of(collection_id)
    vectors = modelcache.encoder().encode([q for q, _ in questions])  # once, every chunker
    rows: list[dict[str, Any]] = []
    combos = len(p.chunkers) * len(p.retrievers)
    for c, chunker in enumerate(p.chunkers):
        chunks = {r["id"]: r for r in queries.chunks_of(collection_id, chunker)}

        def key(chunk_id: int, gold: str, chunks: dict[int, dict[str, Any]] = chunks) -> str:
            row = chunks[chunk_id]
            if p.collection == COURSE:
                return f"{documents[row['document_id']]['source']}#{row['section']}"
            context = documents[row["document_id"]]["text"][
                row["context_start"] : row["context_end"]
            ]
            return gold if gold in " ".join(context.lower().split()) else str(chunk_id)

        ranked: dict[str, list[tuple[list[str], str]]] = {name: [] for name in p.retrievers}
        for i, (question, gold) in enumerate(questions):
            job.emit(
                "progress",
                pct=100 * (c * len(questions) + i) / (len(p.chunkers) * len(questions)),
                message=f"{chunker} chunks: question {i + 1} of {len(questions)}",
            )
            found = retrieval.retrieve(collection_id, chunker, question, vector=vectors[i])
            for name in p.retrievers:
                keys = [key(chunk_id, gold) for chunk_id, _ in getattr(found, name)]
                ranked[name].append((keys, gold))
        for name in p.retrievers:
            summary = summarise(ranked[name])
            row = {
                "chunker": chunker,
                "retriever": name,
                "recall_at_1": round(summary["recall@1"], 4),
                "recall_at_5": round(summary["recall@5"], 4),
                "mrr": round(summary["mrr"], 4),
            }
            job.emit("partial", row=row)
            rows.append({**row, "missed": [questions[i][0] for i in summary["missed@5"]]})
    best = max(rows, key=lambda r: (r["recall_at_5"], r["mrr"]))
    return {
        "collection": queries.collection_name(collection_id),
        "questions": len(questions),
        "combinations": combos,
        "rows": rows,
        "best": {"chunker": best["chunker"], "retriever": best["retriever"]},
        "device": modelcache.device(),
    }


CACHE_CANDIDATES = 5  # stored questions looked at: the nearest may be refused by the check


def semantic_cache(p: CacheParams, job: Job) -> dict[str, Any]:
    """Look the question up among the collection's cached questions; serve the answer of
    the nearest one whose cosine similarity reaches the threshold and (with ``verify``)
    that passes the word-level check, the same check the pair sweep scores; else generate
    (retrieval + the LLM client) and store the answer for ``ttl_seconds``."""
    from learn.lab.grounding import assemble
    from learn.lab.semcache_verify import verify
    from workers.llm_client import LLMClient

    collection_id = _collection(p.collection, job)
    services.purge_expired_cache()
    job.emit("progress", pct=5, message="Scoring the threshold on the labelled pairs")
    sweep = retrieval.pair_sweep()  # once per worker process; gives the suggested threshold
    threshold = sweep["default_threshold"] if p.threshold is None else p.threshold
    job.emit("progress", pct=15, message="Embedding the question and looking in the cache")
    started = time.perf_counter()
    vector = modelcache.encoder().encode([p.question])[0]
    candidates = queries.nearest_cached(collection_id, vector, k=CACHE_CANDIDATES)
    looked = []
    served: dict[str, Any] | None = None
    for c in candidates:
        close = c["similarity"] >= threshold
        verdict = verify(c["question"], p.question) if close and p.verify else None
        looked.append(
            {
                "question": c["question"],
                "similarity": round(c["similarity"], 4),
                "close": close,
                "reasons": list(verdict.reasons) if verdict else [],
            }
        )
        if close and (verdict is None or verdict.same):
            served = c
            break
    lookup_ms = 1000 * (time.perf_counter() - started)
    hit = served is not None
    answer: dict[str, Any]
    if served is not None:
        services.count_cache_hit(served["id"])
        answer = {"text": served["answer"], "ms": lookup_ms}
    else:
        job.emit("progress", pct=20, message="A miss: retrieving and generating an answer")
        found = retrieval.retrieve(collection_id, "recursive", p.question, vector=vector)
        table = retrieval.rank_table(found, [c for c, _ in found.hybrid[:4]], collection_id)
        contexts = [row["context"] for row in table if row["final_rank"]]
        prompt = assemble(p.question, contexts, count_tokens=_tokens, budget=768)
        generated = LLMClient.from_env().chat(prompt.messages, max_tokens=p.max_new_tokens)
        answer = {"text": generated.text, "ms": 1000 * (time.perf_counter() - started)}
        services.cache_answer(
            collection_id, p.question, vector, generated.text, answer["ms"], p.ttl_seconds
        )
    shown = served or (candidates[0] if candidates else None)  # served, or the nearest
    return {
        "question": p.question,
        "hit": hit,
        "threshold": threshold,
        "suggested_threshold": p.threshold is None,
        "verify": p.verify,
        "ttl_seconds": p.ttl_seconds,
        "similarity": round(shown["similarity"], 4) if shown else None,
        "cached_question": shown["question"] if shown else None,
        "candidates": looked,
        "refused": [c for c in looked if c["reasons"]],
        "lookup_ms": round(lookup_ms, 2),
        "answer": answer["text"],
        "answer_ms": round(answer["ms"], 1),
        "generation_ms": round(served["generation_ms"], 1) if served else round(answer["ms"], 1),
        "sweep": sweep,
        "device": modelcache.device(),
    }


def mcts(p: MCTSParams, job: Job) -> dict[str, Any]:
    from learn.lab.mcts import mcts as search
    from learn.lab.mcts import play, winner

    found = search(p.board, p.simulations, p.c, p.seed, emit=job.emit)
    after = play(p.board, found.move, found.player)
    return {
        **asdict(found),
        "board": p.board,
        "after": after,
        "winner": winner(after),
        "device": "cpu",
    }
