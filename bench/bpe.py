"""Our BPE trainer against Hugging Face ``tokenizers`` and the naive recount-every-merge one.

    python bench/bpe.py [--naive-seconds 60] [--repeats 2]

Corpora: Python's documentation topics (466 KB, ships with Python) and the first 2 MB of the
standard library's own ``.py`` sources. Vocabulary sizes 2,000 and 10,000, GPT-2 split.
Training: best wall time of ``--repeats`` (HF uses every core; ours runs on one).
The naive trainer runs for at most ``--naive-seconds`` per case; when it cannot finish,
its time is projected from the merges it did (mean per-merge cost × merges), and says so;
late merges cost it a little less than early ones (words have fewer symbols by then), so a
projection leans high. The 466 KB / 2,000 case finishes within the default budget.
Encoding: MB/s on the 2 MB corpus with the 10,000 tokenizer, ours vs HF (the exported
tokenizer.json) vs tiktoken built from the same merges. Ends with ``RESULT <json>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydoc_data.topics

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from learn.lab.bpe import GPT2_PATTERN, BPEConfig, BPETokenizer, token_bytes
from learn.lab.bpe_hf import to_hf_json
from learn.lab.bpe_train import naive_train, train_bpe
from learn.lab.timing import best_of


def corpora() -> dict[str, str]:
    docs = "\n\n".join(pydoc_data.topics.topics.values())
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources, size = [], 0
    for path in sorted(stdlib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        sources.append(text)
        size += len(text)
        if size >= 2_000_000:
            break
    return {"python-docs": docs, "stdlib-2MB": "\n".join(sources)[:2_000_000]}


def hf_train(text: str, vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([text], trainer)
    return tokenizer


def naive_time(text: str, config: BPEConfig, budget: float, merges: int) -> tuple[float, int]:
    """The course's trainer, timed: (seconds, merges done); it stops once over ``budget``."""
    seconds, done = best_of(lambda: naive_train(text, config, time_budget=budget), 1)
    return seconds, min(len(done), merges)


def tiktoken_encoding(ours: BPETokenizer):
    """tiktoken over our merges: bytes → rank, single bytes first, then merges in order."""
    import tiktoken

    ranks = {bytes([b]): b for b in range(256)}
    for rank, (a, b) in enumerate(ours.merges):
        ranks.setdefault(token_bytes(ours.vocab[a]) + token_bytes(ours.vocab[b]), 256 + rank)
    return tiktoken.Encoding("ours", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive-seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--vocab", type=int, nargs="+", default=[2_000, 10_000])
    args = parser.parse_args()

    texts = corpora()
    rows, figures = [], []
    trained: dict[tuple[str, int], BPETokenizer] = {}
    for name, text in texts.items():
        for vocab_size in args.vocab:
            config = BPEConfig(vocab_size, "gpt2")
            ours_s, ours = best_of(lambda: train_bpe(text, config), args.repeats)  # noqa: B023
            hf_s, hf = best_of(lambda: hf_train(text, vocab_size), args.repeats)  # noqa: B023
            same = [[ours.vocab[a], ours.vocab[b]] for a, b in ours.merges] == json.loads(
                hf.to_str()
            )["model"]["merges"]
            merges = len(ours.merges)
            naive_s, naive_done = naive_time(text, config, args.naive_seconds, merges)
            finished = naive_done == merges
            naive_total = naive_s if finished else naive_s / max(naive_done, 1) * merges
            trained[(name, vocab_size)] = ours
            figures.append(
                {
                    "corpus": name,
                    "corpus_bytes": len(text.encode()),
                    "vocab_size": vocab_size,
                    "merges": merges,
                    "ours_s": round(ours_s, 3),
                    "hf_s": round(hf_s, 3),
                    "naive_s": round(naive_total, 1),
                    "naive_projected": not finished,
                    "naive_merges_timed": naive_done,
                    "ours_over_hf": round(ours_s / hf_s, 2),
                    "naive_over_ours": round(naive_total / ours_s, 1),
                    "same_merges_as_hf": same,
                }
            )
            f = figures[-1]
            rows.append(
                f"{name:<12} {vocab_size:>6} {ours_s:>8.2f} {hf_s:>8.2f} "
                f"{naive_total:>9.1f}{'*' if not finished else ' '} "
                f"{f['ours_over_hf']:>7.2f}x {f['naive_over_ours']:>8.0f}x  {same}"
            )

    print(f"BPE training, {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(
        f"{'corpus':<12} {'vocab':>6} {'ours s':>8} {'HF s':>8} {'naive s':>10} "
        f"{'ours/HF':>8} {'naive/ours':>9}  same merges"
    )
    print("\n".join(rows))
    print("* projected from the merges done within the time budget")

    text = texts["stdlib-2MB"]
    ours = trained[("stdlib-2MB", max(args.vocab))]
    theirs = Tokenizer.from_str(to_hf_json(ours))
    tik = tiktoken_encoding(ours)
    megabytes = len(text.encode()) / 1e6
    cold = BPETokenizer.from_dict(ours.to_dict())  # empty chunk cache: the honest first pass
    encode = {
        "ours_cold": best_of(lambda: BPETokenizer.from_dict(ours.to_dict()).encode(text), 1),
        "ours_warm": best_of(lambda: cold.encode(text), args.repeats),
        "hf_tokenizers": best_of(lambda: theirs.encode(text).ids, args.repeats),
        "tiktoken": best_of(lambda: tik.encode_ordinary(text), args.repeats),
    }
    counts = {k: len(v[1]) for k, v in encode.items()}
    print(f"\nEncoding {megabytes:.1f} MB with the {len(ours):,}-token tokenizer")
    throughput = {}
    for key, (seconds, _) in encode.items():
        throughput[key] = round(megabytes / seconds, 2)
        print(f"  {key:<14} {throughput[key]:>7.2f} MB/s  {counts[key]:,} tokens")
    print(f"  ours (cold) / HF: {throughput['ours_cold'] / throughput['hf_tokenizers']:.2f}x")

    result = {
        "bench": "bpe",
        "device": "cpu",
        "cores": os.cpu_count(),
        "training": figures,
        "encode_mb_per_s": throughput,
        "encode_tokens": counts,
        "goals": {
            "ours_over_hf_max": 5.0,
            "naive_over_ours_min": 100.0,
            "met": all(f["ours_over_hf"] <= 5 and f["naive_over_ours"] >= 100 for f in figures),
        },
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
