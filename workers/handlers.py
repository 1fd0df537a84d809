"""One handler per playground: read the run's params, call the lab, store, return the result.

A handler gets the Run, the ``emit`` callback and the device name, and returns the JSON
result stored on the run. Lab modules are imported inside handlers: only workers load torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.db import connection, transaction
from pgvector.django import CosineDistance

from learn.lab.events import Emit, scaled_emit
from learn.models import Run, TextEmbedding, TrainedTokenizer, VocabWord
from learn.playgrounds import BUILTIN_TOKENIZERS, VOCAB_SIZE
from workers import llm, modelcache, vsearch

Handler = Callable[[Run, Emit, str], dict[str, Any]]
VOCAB_LOCK = 0x66700001  # pg advisory lock: one process embeds the vocabulary


def embed(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.embeddings import cosine_matrix, pca_2d

    texts: list[str] = run.params["texts"]
    emit("progress", pct=2, message="Loading all-MiniLM-L6-v2")
    encoder = modelcache.encoder()
    started = time.perf_counter()
    vectors = encoder.encode(texts, emit=scaled_emit(emit, 5, 80, "Embedding"))
    seconds = time.perf_counter() - started
    emit("partial", message=f"Embedded {len(texts)} texts in {seconds:.2f} s on {device}")

    TextEmbedding.objects.bulk_create(
        TextEmbedding(run=run, position=i, text=text, embedding=vector)
        for i, (text, vector) in enumerate(zip(texts, vectors, strict=True))
    )
    emit("progress", pct=88, message="Stored in pgvector; projecting to 2-D")
    projection = pca_2d(vectors)
    return {
        "model": "all-MiniLM-L6-v2",
        "dim": int(vectors.shape[1]),
        "texts": texts,
        "points": projection.points.round(4).tolist(),
        "explained": [round(float(e), 4) for e in projection.explained],
        "similarity": cosine_matrix(vectors).round(3).tolist(),
        "embed_seconds": round(seconds, 4),
        "texts_per_second": round(len(texts) / seconds, 1) if seconds else None,
    }


def ensure_vocabulary(emit: Emit) -> None:
    """Embed MiniLM's whole-word vocabulary into pgvector once (the first analogy run)."""
    from learn.lab.models import wordpiece_words

    if VocabWord.objects.count() >= VOCAB_SIZE:
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [VOCAB_LOCK])
        if VocabWord.objects.count() >= VOCAB_SIZE:
            return  # another worker built it while we waited
        emit("log", message=f"First analogy run: embedding {VOCAB_SIZE:,} words into pgvector")
        words = wordpiece_words(VOCAB_SIZE)
        vectors = modelcache.encoder().encode(
            words, batch_size=256, emit=scaled_emit(emit, 2, 85, "Embedding the vocabulary")
        )
        VocabWord.objects.all().delete()
        VocabWord.objects.bulk_create(
            (
                VocabWord(word=w, rank=i, embedding=v)
                for i, (w, v) in enumerate(zip(words, vectors, strict=True))
            ),
            batch_size=1000,
        )


def analogy(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    import numpy as np

    from learn.lab.embeddings import analogy_vector, pca_2d

    a, b, c, k = (run.params[key] for key in ("a", "b", "c", "k"))
    emit("progress", pct=1, message="Checking the vocabulary")
    ensure_vocabulary(emit)
    emit("progress", pct=88, message=f"Searching for {a} − {b} + {c}")
    given = {w.word: w.embedding for w in VocabWord.objects.filter(word__in=[a, b, c])}
    target = analogy_vector(given[a], given[b], given[c])
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL hnsw.ef_search = 100")  # room for the excluded input words
        answers = list(
            VocabWord.objects.exclude(word__in=[a, b, c])
            .annotate(distance=CosineDistance("embedding", target))
            .order_by("distance")[:k]
        )
    top = answers[0]
    labels = [a, b, c, top.word, f"{a} − {b} + {c}"]
    projection = pca_2d(np.stack([given[a], given[b], given[c], top.embedding, target]))
    return {
        "query": {"a": a, "b": b, "c": c},
        "answers": [{"word": w.word, "score": round(1 - float(w.distance), 4)} for w in answers],
        "plot": [
            {"label": label, "x": round(float(x), 4), "y": round(float(y), 4)}
            for label, (x, y) in zip(labels, projection.points, strict=True)
        ],
        "explained": [round(float(e), 4) for e in projection.explained],
        "vocabulary": VOCAB_SIZE,
    }


def hash_vectors(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.hashing import compare_texts

    p = run.params
    emit("progress", pct=5, message="Hashing n-grams")
    return compare_texts(
        p["text_a"], p["text_b"], n=p["n"], m=p["m"], k=p["k"], num_perm=p["num_perm"], emit=emit
    )


def _tokenizers(names: list[str]) -> list[Any]:
    from learn.lab.bpe import BPETokenizer
    from learn.lab.tokenize import NamedTokenizer, Piece

    chosen = []
    for name in names:
        if name in BUILTIN_TOKENIZERS:
            chosen.append(modelcache.reference_tokenizer(name))
            continue
        trained = TrainedTokenizer.objects.get(pk=name)
        ours = BPETokenizer.from_dict(trained.data)

        def pieces(text: str, ours: BPETokenizer = ours) -> list[Piece]:
            return [Piece(t.id, t.token, t.start, t.end) for t in ours.encode_with_offsets(text)]

        chosen.append(
            NamedTokenizer(trained.name, f"our BPE, {trained.vocab_size:,} tokens", pieces)
        )
    return chosen


def tokenize(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.tokenize import compare

    p = run.params
    emit("progress", pct=2, message="Loading tokenizers")
    return {"tokenizers": compare(p["text"], _tokenizers(p["tokenizers"]), emit=emit)}


def token_cost(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.tokenize import compare, cost

    p = run.params
    emit("progress", pct=2, message="Loading tokenizers")
    rows = compare(p["text"], _tokenizers(p["tokenizers"]), emit=emit)
    for row in rows:
        row.pop("pieces")  # this view needs the counts only
        row["cost"] = cost(
            row["stats"]["tokens"],
            context_window=p["context_window"],
            price_per_million=p["price_per_million"],
        )
    return {"tokenizers": rows}


def _corpus(run: Run) -> str:
    if run.params.get("builtin") == "python-docs":
        import pydoc_data.topics

        return "\n\n".join(pydoc_data.topics.topics.values())
    return run.corpus.text


def bpe_train(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.bpe import BPEConfig, summary, train_bpe

    p = run.params
    text = _corpus(run)
    config = BPEConfig(p["vocab_size"], p["pretokenizer"], tuple(p["special_tokens"]))
    started = time.perf_counter()
    tokenizer = train_bpe(text, config, emit=scaled_emit(emit, 0, 95))
    seconds = time.perf_counter() - started
    emit("progress", pct=97, message="Saving the tokenizer")
    name = p["name"].strip() or f"bpe-{len(tokenizer)}-{p['pretokenizer']}-{str(run.id)[:8]}"
    saved = TrainedTokenizer.objects.create(
        name=name,
        run=run,
        vocab_size=len(tokenizer),
        pretokenizer=p["pretokenizer"],
        special_tokens=p["special_tokens"],
        data=tokenizer.to_dict(),
        corpus_chars=len(text),
    )
    return {
        "name": name,
        "tokenizer_id": str(saved.id),
        "vocab_size": len(tokenizer),
        "special_tokens": p["special_tokens"],
        "pretokenizer": p["pretokenizer"],
        "corpus_chars": len(text),
        "train_seconds": round(seconds, 3),
        "device": "cpu",  # BPE training is integer bookkeeping: it never uses the GPU
        **summary(tokenizer),
    }


def bpe_step(run: Run, emit: Emit, device: str) -> dict[str, Any]:
    from learn.lab.bpe import step_through

    p = run.params
    emit("progress", pct=10, message="Counting pairs")
    return {"steps": step_through(p["corpus"], p["steps"], p["pretokenizer"]), "device": "cpu"}


HANDLERS: dict[str, Handler] = {
    "index-lab": vsearch.index_lab,
    "query-trace": vsearch.query_trace,
    "compression": vsearch.compression,
    "pgvector": vsearch.pgvector_lab,
    "generate": llm.generate,
    "attention": llm.attention,
    "positions": llm.positions,
    "kv-cache": llm.kv_cache,
    "paged-kv": llm.paged_kv,
    "tiled-attention": llm.tiled_attention,
    "speculative": llm.speculative,
    "moe": llm.moe,
    "sparse-attention": llm.sparse_attention,
    "mcts": llm.mcts,
    "quantize": llm.quantize,
    "weight-inspect": llm.weight_inspect,
    "bpe-train": bpe_train,
    "bpe-step": bpe_step,
    "embed": embed,
    "analogy": analogy,
    "hash-vectors": hash_vectors,
    "tokenize": tokenize,
    "token-cost": token_cost,
}
