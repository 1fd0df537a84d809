"""Hash vectors checked against exact set arithmetic, theory and datasketch."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash as DatasketchMinHash

from learn.lab.hashing import (
    MERSENNE_61,
    BloomFilter,
    MinHash,
    _mulmod,
    bloom_jaccard,
    compare_texts,
    jaccard,
    word_ngrams,
)

ROOT = Path(__file__).resolve().parents[2]


def overlapping_sets(size: int, shared: int, tag: str = "") -> tuple[set[str], set[str]]:
    """Two sets of ``size`` items with ``shared`` in common: J = shared / (2·size − shared)."""
    a = {f"{tag}item-{i}" for i in range(size)}
    b = {f"{tag}item-{i}" for i in range(size - shared, 2 * size - shared)}
    return a, b


def test_word_ngrams_lowercases_and_joins_words_with_one_space():
    assert word_ngrams("The cat,  the HAT!", 2) == {"the cat", "cat the", "the hat"}
    assert word_ngrams("a b a b", 1) == {"a", "b"}


def test_a_text_shorter_than_n_is_one_gram_and_an_empty_text_none():
    assert word_ngrams("Hello, world", 3) == {"hello world"}
    assert word_ngrams("", 3) == set()
    assert word_ngrams(" ... !!", 1) == set()
    with pytest.raises(ValueError):
        word_ngrams("x", 0)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ({1, 2, 3}, {2, 3, 4}, 0.5),
        ({1, 2}, {1, 2}, 1.0),
        ({1}, {2}, 0.0),
        (set(), {1}, 0.0),
        (set(), set(), 1.0),
    ],
)
def test_exact_jaccard_by_hand(a, b, expected):
    assert jaccard(a, b) == expected


def test_mulmod_matches_python_integers():
    rng = np.random.default_rng(0)
    edge = [0, 1, 2**32 - 1, 2**32, MERSENNE_61 - 1]
    a = [*rng.integers(0, MERSENNE_61, 5000).tolist(), *edge, *edge]
    x = [*rng.integers(0, MERSENNE_61, 5000).tolist(), *edge, *edge[::-1]]
    got = _mulmod(np.array(a, dtype=np.uint64), np.array(x, dtype=np.uint64))
    assert got.tolist() == [p * q % MERSENNE_61 for p, q in zip(a, x, strict=True)]


def test_minhash_signature_equals_a_pure_python_reference():
    mh = MinHash(64, seed=3)
    items = [f"gram {i}" for i in range(40)]
    xs = [
        int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") % MERSENNE_61
        for s in items
    ]
    pairs = zip(mh.a.tolist(), mh.b.tolist(), strict=True)
    expected = [min((a * x + b) % MERSENNE_61 for x in xs) for a, b in pairs]
    assert mh.signature(items).tolist() == expected


def test_bloom_filter_has_no_false_negatives_and_a_false_positive_rate_near_theory():
    m, k, n = 8192, 4, 1000
    bf = BloomFilter(m, k)
    members = [f"member-{i}" for i in range(n)]
    bf.update(members[:500])
    for item in members[500:]:
        bf.add(item)
    assert all(item in bf for item in members)
    probes = [f"stranger-{i}" for i in range(20000)]
    fp_rate = sum(item in bf for item in probes) / len(probes)
    theory = (1 - math.exp(-k * n / m)) ** k  # ≈ 0.024
    assert 0.5 * theory < fp_rate < 1.5 * theory


@pytest.mark.parametrize("n", [10, 500, 3000])
def test_bloom_count_estimate_is_within_a_few_percent_when_n_is_much_less_than_m(n):
    bf = BloomFilter(1 << 16, 4, seed=1)
    bf.update(f"x{i}" for i in range(n))
    assert bf.count_estimate() == pytest.approx(n, rel=0.03)


def test_a_full_bloom_filter_estimates_infinity():
    bf = BloomFilter(16, 3)
    bf.update(str(i) for i in range(500))
    assert bf.fill_ratio == 1.0
    assert bf.count_estimate() == math.inf
    assert BloomFilter(16, 3).count_estimate() == 0.0


@pytest.mark.parametrize("shared", [0, 60, 150, 240, 300])
def test_bloom_jaccard_is_close_to_exact_for_a_large_filter(shared):
    a, b = overlapping_sets(300, shared)
    exact = jaccard(a, b)
    for seed in range(3):
        res = bloom_jaccard(a, b, 8192, 3, seed)
        assert abs(res.estimate - exact) < 0.03
        assert res.bit_jaccard >= res.estimate - 0.03  # shared collisions only push it up
        assert 0.0 < res.fill_a < 1.0
        assert res.bits_a.shape == (8192,)


def test_bloom_jaccard_of_two_empty_sets_is_one():
    res = bloom_jaccard(set(), set(), 64, 2)
    assert (res.estimate, res.bit_jaccard, res.count_union) == (1.0, 1.0, 0.0)


def test_minhash_error_is_within_four_standard_errors_and_as_small_as_datasketchs():
    num_perm = 256
    ours, theirs = [], []  # |estimate - exact| in standard errors
    for shared in (100, 500, 900):
        a, b = overlapping_sets(1000, shared)
        exact = jaccard(a, b)
        se = math.sqrt(exact * (1 - exact) / num_perm)
        for seed in range(16):
            mh = MinHash(num_perm, seed)
            est = MinHash.estimate(mh.signature(a), mh.signature(b))
            assert abs(est - exact) <= 4 * se
            ours.append(abs(est - exact) / se)
            da = DatasketchMinHash(num_perm=num_perm, seed=seed)
            db = DatasketchMinHash(num_perm=num_perm, seed=seed)
            da.update_batch([s.encode() for s in a])
            db.update_batch([s.encode() for s in b])
            theirs.append(abs(da.jaccard(db) - exact) / se)
    # an unbiased estimator's mean absolute error is sqrt(2/pi) = 0.8 standard errors
    assert 0.5 < np.mean(ours) < 1.1
    assert np.mean(ours) < np.mean(theirs) + 0.3


def test_minhash_of_identical_and_empty_sets():
    mh = MinHash(32)
    sig = mh.signature({"a b", "b c"})
    assert MinHash.estimate(sig, mh.signature(["b c", "a b"])) == 1.0
    assert MinHash.estimate(mh.signature([]), mh.signature([])) == 1.0
    assert MinHash.estimate(mh.signature([]), sig) == 0.0
    with pytest.raises(ValueError):
        MinHash.estimate(sig, MinHash(16).signature(["a b"]))


def test_hashes_are_the_same_in_another_process():
    items = sorted(word_ngrams("the same words hash the same way in every process", 2))
    code = (
        "import json; from learn.lab.hashing import MinHash, BloomFilter\n"
        f"items = {items!r}\n"
        "print(json.dumps([MinHash(16, 7).signature(items).tolist(),\n"
        "                  BloomFilter(1000, 3, 7).positions(items).tolist()]))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout
    sig, pos = json.loads(out)
    assert sig == MinHash(16, 7).signature(items).tolist()
    assert pos == BloomFilter(1000, 3, 7).positions(items).tolist()


def test_compare_texts_reports_every_estimate_with_its_error():
    a = "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun. " * 2
    b = "The quick brown fox leaps over the lazy dog while the cat sleeps in the shade."
    events = []
    res = compare_texts(
        a, b, n=2, m=1024, k=3, num_perm=128, emit=lambda kind, **d: events.append((kind, d))
    )
    json.dumps(res, allow_nan=False)
    exact = jaccard(word_ngrams(a, 2), word_ngrams(b, 2))
    assert res["exact_jaccard"] == exact
    assert res["grams_union"] == len(word_ngrams(a, 2) | word_ngrams(b, 2))
    for key in ("bloom", "minhash", "datasketch"):
        assert res[key]["error"] == pytest.approx(res[key]["estimate"] - exact)
    assert res["minhash"]["std_error"] == pytest.approx(math.sqrt(exact * (1 - exact) / 128))
    assert res["bits"]["kind"] == "bits"
    assert len(res["bits"]["a"]) == 1024
    assert sum(res["bits"]["a"]) == round(res["bloom"]["fill_a"] * 1024)
    assert events[-1] == ("progress", {"pct": 100.0, "message": "done"})


def test_compare_texts_sends_a_density_profile_for_large_filters():
    res = compare_texts(
        "one two three four five six", "four five six seven", n=1, m=100_000, k=2, num_perm=16
    )
    bits = res["bits"]
    assert (bits["kind"], len(bits["a"]), len(bits["b"])) == ("density", 512, 512)
    assert np.mean(bits["a"]) == pytest.approx(res["bloom"]["fill_a"], abs=1e-3)


def test_compare_texts_handles_empty_texts_and_saturated_filters():
    empty = compare_texts("", "", n=3, m=64, k=2, num_perm=8)
    json.dumps(empty, allow_nan=False)
    assert empty["exact_jaccard"] == 1.0
    assert empty["minhash"]["estimate"] == empty["datasketch"]["estimate"] == 1.0

    full = compare_texts(" ".join(f"w{i}" for i in range(200)), "w1 w2", n=1, m=8, k=4, num_perm=8)
    json.dumps(full, allow_nan=False)
    assert full["bloom"]["saturated"] is True
    assert full["bloom"]["estimate"] is None and full["bloom"]["error"] is None
