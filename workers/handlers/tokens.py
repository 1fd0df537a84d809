"""Chapter 3's handlers: train BPE, step through it, tokenize, tokens and cost.

BPE is integer bookkeeping on the CPU: these results say "cpu" whatever the worker has.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from learn import queries, services
from learn.lab.events import scaled_emit
from learn.playgrounds.tokens import (
    BUILTIN_TOKENIZERS,
    BpeStepParams,
    BpeTrainParams,
    TokenCostParams,
    TokenizeParams,
)
from workers import modelcache
from workers.handlers import Job

if TYPE_CHECKING:
    from learn.lab.bpe import BPETokenizer


def _tokenizers(names: list[str]) -> list[Any]:
    from learn.lab.bpe import BPETokenizer
    from learn.lab.tokenize import NamedTokenizer

    chosen = []
    for name in names:
        if name in BUILTIN_TOKENIZERS:
            chosen.append(modelcache.reference_tokenizer(name))
            continue
        trained = queries.trained_tokenizer(name)
        ours = BPETokenizer.from_dict(trained.data)

        label = f"our BPE, {trained.vocab_size:,} tokens"
        chosen.append(NamedTokenizer(trained.name, label, ours.encode_with_offsets))
    return chosen


def tokenize(p: TokenizeParams, job: Job) -> dict[str, Any]:
    from learn.lab.tokenize import compare

    job.emit("progress", pct=2, message="Loading tokenizers")
    return {
        "tokenizers": compare(p.text, _tokenizers(p.tokenizers), emit=job.emit),
        "device": "cpu",
    }


def token_cost(p: TokenCostParams, job: Job) -> dict[str, Any]:
    from learn.lab.tokenize import compare, cost

    job.emit("progress", pct=2, message="Loading tokenizers")
    rows = compare(p.text, _tokenizers(p.tokenizers), emit=job.emit)
    for row in rows:
        row.pop("pieces")  # this view needs the counts only
        row["cost"] = cost(
            row["stats"]["tokens"],
            context_window=p.context_window,
            price_per_million=p.price_per_million,
        )
    return {"tokenizers": rows, "device": "cpu"}


def bpe_train(p: BpeTrainParams, job: Job) -> dict[str, Any]:
    from learn.lab.bpe import BPEConfig
    from learn.lab.bpe_train import train_bpe

    text = p.text()
    config = BPEConfig(p.vocab_size, p.pretokenizer, tuple(p.special_tokens))
    started = time.perf_counter()
    tokenizer = train_bpe(text, config, emit=scaled_emit(job.emit, 0, 95))
    seconds = time.perf_counter() - started
    job.emit("progress", pct=97, message="Saving the tokenizer")
    name = p.name.strip() or f"bpe-{len(tokenizer)}-{p.pretokenizer}-{job.run_id[:8]}"
    tokenizer_id = services.save_tokenizer(
        job.run_id,
        name=name,
        data=tokenizer.to_dict(),
        vocab_size=len(tokenizer),
        pretokenizer=p.pretokenizer,
        special_tokens=p.special_tokens,
        corpus_chars=len(text),
    )
    return {
        "name": name,
        "tokenizer_id": tokenizer_id,
        "vocab_size": len(tokenizer),
        "special_tokens": p.special_tokens,
        "pretokenizer": p.pretokenizer,
        "corpus_chars": len(text),
        "train_seconds": round(seconds, 3),
        "device": "cpu",
        **summary(tokenizer),
    }


def summary(tokenizer: BPETokenizer, *, first: int = 20, longest: int = 16) -> dict[str, Any]:
    """What the page shows about a trained tokenizer: first merges, a chart, and the longest
    tokens that hold a letter or digit (runs of punctuation or spaces say little)."""
    from learn.lab.bpe import readable
    from learn.lab.bpe_train import Merge, merge_row

    vocab, counts = tokenizer.vocab, tokenizer.counts
    merged = [tokenizer.ranks[pair][1] for pair in tokenizer.merges]
    rows = [
        merge_row(Merge(rank, pair, merged[rank], counts[rank] if rank < len(counts) else 0), vocab)
        for rank, pair in enumerate(tokenizer.merges[:first])
    ]
    wordy = {i for i in merged if any(c.isalnum() for c in readable(vocab[i]))}
    by_length = sorted(wordy, key=lambda i: (-len(vocab[i]), i))[:longest]
    return {
        "merge_count": len(tokenizer.merges),
        "first_merges": rows,
        "longest": [readable(vocab[i]) for i in by_length],
        "chart": thinned(counts),
    }


def thinned(counts: list[int], points: int = 2_000) -> dict[str, list[int]]:
    """At most ``points`` of the count-by-rank curve, evenly spaced, last rank included."""
    step = max(1, -(-len(counts) // points))
    ranks = list(range(1, len(counts) + 1, step))
    if counts and ranks[-1] != len(counts):
        ranks.append(len(counts))
    return {"ranks": ranks, "counts": [counts[r - 1] for r in ranks]}


def bpe_step(p: BpeStepParams, job: Job) -> dict[str, Any]:
    from learn.lab.bpe_train import step_through

    job.emit("progress", pct=10, message="Counting pairs")
    return {"steps": step_through(p.corpus, p.steps, p.pretokenizer), "device": "cpu"}
