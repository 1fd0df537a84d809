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
    UnigramParams,
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


# ---------------------------------------------------------------------------- Unigram vs BPE


def _timed(train: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    made = train()
    return made, time.perf_counter() - started


def unigram_vs_bpe(p: UnigramParams, job: Job) -> dict[str, Any]:
    """Train our Unigram and our BPE (and, if asked, SentencePiece's Unigram) on the same
    text at the same vocabulary size; compare them, MiniLM's WordPiece and SmolLM2's BPE
    on that text, on a few rare words and on one sentence in ten languages."""
    import regex

    from learn.lab import unigram
    from learn.lab.bpe import BPEConfig
    from learn.lab.bpe_train import train_bpe
    from learn.lab.tokenize import as_text_and_bytes, token_bytes

    text = p.text()
    job.emit("progress", pct=1, message="Training BPE")
    bpe, bpe_seconds = _timed(lambda: train_bpe(text, BPEConfig(p.vocab_size, "gpt2")))
    job.emit("progress", pct=10, message="Training Unigram: seed, EM, prune")
    (model, likelihood), unigram_seconds = _timed(
        lambda: unigram.train_unigram(
            text, unigram.UnigramConfig(p.vocab_size), emit=scaled_emit(job.emit, 10, 80)
        )
    )

    def bpe_tokens(s: str) -> list[str]:
        return [piece.token for piece in bpe.encode_with_offsets(s)]

    def hf_tokens(name: str) -> Any:
        tokenizer = modelcache.reference_tokenizer(name)

        def tokens(s: str) -> list[str]:
            out = []
            for piece in tokenizer.pieces(s):
                raw = token_bytes(piece.token) if name == "smollm2" else None
                out.append(as_text_and_bytes(raw) if raw is not None else piece.token)
            return out

        return tokens

    rows: list[dict[str, Any]] = [
        {"key": "bpe", "name": "our BPE", "family": "byte-level BPE, trained here",
         "vocab_size": len(bpe), "train_seconds": round(bpe_seconds, 3), "tokens": bpe_tokens},
        {"key": "unigram", "name": "our Unigram", "family": "Unigram (EM), trained here",
         "vocab_size": len(model), "train_seconds": round(unigram_seconds, 3),
         "tokens": model.tokens},
    ]  # fmt: skip
    agreement, reference_note = None, ""
    if p.reference:
        job.emit("progress", pct=82, message="Training SentencePiece's Unigram")
        try:
            processor, sp_seconds = _timed(lambda: unigram.train_sentencepiece(text, p.vocab_size))
        except RuntimeError as exc:  # e.g. more distinct characters than the vocabulary
            reason = str(exc).split("] ", 1)[-1].strip() or str(exc)
            reference_note = f"SentencePiece refused this text: {reason}"
        else:
            theirs = unigram.sentencepiece_pieces(processor)
            agreement = unigram.vocabulary_agreement(model.pieces, theirs)
            rows.append(
                {"key": "sentencepiece", "name": "SentencePiece Unigram",
                 "family": "Unigram (the library), trained here",
                 "vocab_size": processor.get_piece_size(), "train_seconds": round(sp_seconds, 3),
                 "tokens": lambda s: processor.encode(s, out_type=str)}
            )  # fmt: skip
    job.emit("progress", pct=90, message="Comparing")
    for key, label, family in (
        ("minilm", "MiniLM", "WordPiece, pretrained"),
        ("smollm2", "SmolLM2", "byte-level BPE, pretrained"),
    ):
        rows.append({"key": key, "name": label, "family": family, "tokens": hf_tokens(key)})

    words = p.words or unigram.rare_words(text)
    words_in_text = max(1, len(regex.findall(r"\w+", text)))
    languages = [{"language": lang, "text": s, "counts": {}, "unknown": {}}
                 for lang, s in unigram.SENTENCES.items()]  # fmt: skip
    for row in rows:
        tokens = row["tokens"]
        count = len(tokens(text))
        row["stats"] = {
            "tokens": count,
            "tokens_per_word": round(count / words_in_text, 3),
            "bytes_per_token": round(len(text.encode("utf-8")) / count, 3),
        }
        for entry in languages:
            found = tokens(entry["text"])
            entry["counts"][row["key"]] = len(found)
            entry["unknown"][row["key"]] = sum(t in {"[UNK]", "<unk>"} for t in found)
        row["splits"] = [tokens(w) for w in words]
        del row["tokens"]
    english = languages[0]["counts"]
    for entry in languages:
        entry["ratio"] = {k: round(n / english[k], 2) for k, n in entry["counts"].items()}
    return {
        "vocab_size": p.vocab_size,
        "corpus_chars": len(text),
        "words": words,
        "tokenizers": rows,
        "languages": languages,
        "largest": max(n for entry in languages for n in entry["counts"].values()),
        "agreement": agreement,
        "reference_note": reference_note,
        "log_likelihood": [round(x, 1) for x in likelihood],
        "sample": model.tokens(" ".join(text.split()[:40])),
        "device": "cpu",
    }
