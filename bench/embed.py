"""Our ``Encoder.encode`` against ``SentenceTransformer.encode`` on the same sentences.

    python bench/embed.py [--n 2000] [--batch-size 64] [--repeats 3]

Both run the same MiniLM weights on the same device with the same batch size; timings
are best of ``--repeats`` (``learn.lab.timing.best_of``) after a warm-up. Ends with
``RESULT <json>``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything loads from local paths
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from transformers.utils import logging as hf_logging

from learn.lab.embeddings import Encoder, pick_device
from learn.lab.models import library_versions, minilm_path, wordpiece_words
from learn.lab.timing import best_of

PUNCT = [".", ".", ".", "?", "!", ";", ","]


def make_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` deterministic sentences of 5-60 words drawn from MiniLM's own vocabulary."""
    rng = random.Random(seed)
    words = wordpiece_words(5000)
    out = []
    for _ in range(n):
        k = rng.randint(5, 60)
        sent = " ".join(rng.choice(words) for _ in range(k))
        out.append(sent[0].upper() + sent[1:] + rng.choice(PUNCT))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    hf_logging.disable_progress_bar()
    device = pick_device(args.device)
    texts = make_sentences(args.n)
    ours = Encoder(device=device)
    st = SentenceTransformer(str(minilm_path()), device=device)

    def run_ours() -> np.ndarray:
        return ours.encode(texts, batch_size=args.batch_size)

    def run_st() -> np.ndarray:
        return st.encode(texts, batch_size=args.batch_size, normalize_embeddings=True)

    warm = texts[: 4 * args.batch_size]
    ours.encode(warm, batch_size=args.batch_size)
    st.encode(warm, batch_size=args.batch_size, normalize_embeddings=True)

    t_ours, a = best_of(run_ours, args.repeats)
    t_st, b = best_of(run_st, args.repeats)
    max_cos_dev = float(np.max(1.0 - np.sum(a * b, axis=1)))
    threads = torch.get_num_threads()

    sps_ours, sps_st = args.n / t_ours, args.n / t_st
    ratio = sps_ours / sps_st
    print(f"device {device}, torch threads {threads}, {args.n} sentences, batch {args.batch_size}")
    for name, sps, secs in (("ours", sps_ours, t_ours), ("sentence-transformers", sps_st, t_st)):
        print(f"{name:<22} {sps:9.1f} sentences/s  ({secs:.3f} s, best of {args.repeats})")
    print(f"{'ratio ours/ST':<22} {ratio:9.3f}x")
    print(f"{'max cosine deviation':<22} {max_cos_dev:9.2e}")
    result = {
        "bench": "embed",
        "device": device,
        "threads": threads,
        "sentences": args.n,
        "batch_size": args.batch_size,
        "figures": [
            {"name": "ours", "value": round(sps_ours, 2), "unit": "sentences/s"},
            {"name": "sentence_transformers", "value": round(sps_st, 2), "unit": "sentences/s"},
            {"name": "max_cosine_deviation", "value": max_cos_dev, "unit": "1 - cos"},
        ],
        "ratios": {"ours/sentence_transformers": round(ratio, 4)},
        "versions": library_versions(),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
