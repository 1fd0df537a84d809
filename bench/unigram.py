"""Our Unigram trainer against SentencePiece's, on the same corpus and vocabulary sizes.

    python bench/unigram.py [--chars 300000] [--vocab 1000 4000] [--repeats 1]

Corpus: the first ``--chars`` characters of Python's documentation topics (ships with
Python). Both trainers are asked for the same thing (split at whitespace only, no
normalisation, byte fallback, pieces up to 16 characters, shrink 0.75, 2 EM sweeps per
round, a 20,000-piece seed): see ``learn.lab.unigram.sentencepiece_options``. Training: best
wall time of ``--repeats``, both on one thread. Agreement: the share of pieces the two
vocabularies have in common (ours in theirs, theirs in ours, Jaccard), and the share of the
corpus's words each segments identically. Ours is pure Python; SentencePiece is C++.
Ends with ``RESULT <json>``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydoc_data.topics

import sentencepiece

from learn.lab.unigram import (
    SPACE,
    UnigramConfig,
    sentencepiece_pieces,
    train_sentencepiece,
    train_unigram,
    vocabulary_agreement,
    word_counts,
)


def best_time(train, repeats: int):
    best, made = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        made = train()
        best = min(best, time.perf_counter() - started)
    return made, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=300_000)
    parser.add_argument("--vocab", type=int, nargs="+", default=[1_000, 4_000])
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    text = "\n\n".join(pydoc_data.topics.topics.values())[: args.chars]
    counts = word_counts(text)
    rows = []
    for vocab in args.vocab:
        (model, _), ours_s = best_time(
            lambda v=vocab: train_unigram(text, UnigramConfig(v)), args.repeats
        )
        processor, theirs_s = best_time(lambda v=vocab: train_sentencepiece(text, v), args.repeats)
        agreement = vocabulary_agreement(model.pieces, sentencepiece_pieces(processor))
        same = total = 0
        for word, n in counts.items():
            theirs = processor.encode(word[len(SPACE) :], out_type=str)
            same += n * (theirs == model.segment(word))
            total += n
        rows.append(
            {
                "vocab_size": vocab,
                "ours_seconds": round(ours_s, 3),
                "sentencepiece_seconds": round(theirs_s, 3),
                "ratio": round(ours_s / theirs_s, 2),
                "ours_pieces": len(model.pieces),
                "sentencepiece_pieces": processor.get_piece_size(),
                **{k: round(v, 4) for k, v in agreement.items()},
                "same_segmentation": round(same / total, 4),
            }
        )

    print(f"corpus: {len(text):,} characters, {len(counts):,} distinct words")
    header = (
        f"{'vocab':>6} {'ours s':>8} {'spm s':>7} {'ours/spm':>8} "
        f"{'shared':>7} {'ours∈spm':>9} {'spm∈ours':>9} {'Jaccard':>8} {'same split':>10}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['vocab_size']:>6} {r['ours_seconds']:>8.2f} {r['sentencepiece_seconds']:>7.2f} "
            f"{r['ratio']:>7.1f}× {r['shared']:>7} {r['ours_in_theirs']:>9.1%} "
            f"{r['theirs_in_ours']:>9.1%} {r['jaccard']:>8.3f} {r['same_segmentation']:>10.1%}"
        )
    result = {
        "benchmark": "unigram",
        "corpus_chars": len(text),
        "rows": rows,
        "device": "cpu",
        "python": platform.python_version(),
        "sentencepiece": sentencepiece.__version__,
        "machine": platform.machine(),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
