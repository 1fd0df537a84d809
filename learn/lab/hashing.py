"""Hashing text into vectors: word n-grams, Bloom filters and MinHash signatures.

All hashes are BLAKE2b digests, so a gram maps to the same bits and the same signature in
every process (Python's built-in ``hash()`` of a str is salted per process).

Conventions chosen here:

- a text with fewer than ``n`` words yields one gram made of all its words (so short
  texts can still be compared); a text with no words yields the empty set;
- the Jaccard similarity of two empty sets is 1.0: they are the same set. MinHash
  agrees (two empty signatures are equal everywhere) and so does the Bloom estimate.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from learn.lab.events import Emit, no_emit

_WORD = re.compile(r"\w+")
MERSENNE_61 = (1 << 61) - 1  # prime p for universal hashing; 2**61 = 1 (mod p)
_P = np.uint64(MERSENNE_61)
_LOW32 = np.uint64(0xFFFFFFFF)
MAX_DRAWN_BITS = 4096  # compare_texts sends raw bits up to this m, else a density profile
DENSITY_BUCKETS = 512

Item = str | bytes


def word_ngrams(text: str, n: int) -> set[str]:
    """Lowercased word n-grams of ``text`` (words are ``\\w+`` runs), joined by one space.

    Fewer than ``n`` words: the single gram of all words; no words: the empty set.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[Any], b: set[Any]) -> float:
    """|A ∩ B| / |A ∪ B|, and 1.0 for two empty sets."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def _digests(items: Iterable[Item], size: int, salt: bytes = b"") -> np.ndarray:
    """Concatenated little-endian BLAKE2b digests -> (len(items), size // 8) uint64."""
    raw = b"".join(
        hashlib.blake2b(
            it.encode("utf-8") if isinstance(it, str) else it, digest_size=size, salt=salt
        ).digest()
        for it in items
    )
    return np.frombuffer(raw, dtype="<u8").reshape(-1, size // 8).astype(np.uint64)


class BloomFilter:
    """``m`` bits, ``k`` hash functions from one 128-bit BLAKE2b digest.

    Kirsch–Mitzenmacher double hashing: position i is (h1 + i·h2) mod m, with h2 never 0
    so the k positions of an item are not all the same bit.
    """

    def __init__(self, m: int, k: int, seed: int = 0) -> None:
        if not 1 <= m <= 1 << 32:
            raise ValueError(f"m must be in [1, 2**32], got {m}")
        if not 1 <= k <= 64:
            raise ValueError(f"k must be in [1, 64], got {k}")
        self.m, self.k, self.seed = m, k, seed
        self.bits = np.zeros(m, dtype=bool)  # (m,)
        self._salt = seed.to_bytes(16, "little")

    def positions(self, items: Iterable[Item]) -> np.ndarray:
        """Bit positions of each item -> (len(items), k) int64."""
        h = _digests(items, 16, self._salt)  # (N, 2)
        m = np.uint64(self.m)
        h1 = h[:, :1] % m  # (N, 1)
        h2 = np.uint64(1) + h[:, 1:] % np.uint64(max(self.m - 1, 1))  # (N, 1), in [1, m-1]
        i = np.arange(self.k, dtype=np.uint64)  # (k,)
        return ((h1 + i * h2) % m).astype(np.int64)  # (N, k); no overflow as m, k are bounded

    def update(self, items: Iterable[Item]) -> None:
        self.bits[self.positions(items).ravel()] = True

    def add(self, item: Item) -> None:
        self.update([item])

    def __contains__(self, item: Item) -> bool:
        return bool(self.bits[self.positions([item])[0]].all())

    @property
    def bits_set(self) -> int:
        return int(self.bits.sum())

    @property
    def fill_ratio(self) -> float:
        """Fraction of bits that are 1, in [0, 1]."""
        return self.bits_set / self.m

    def count_estimate(self) -> float:
        """Items added, estimated as −(m/k)·ln(1 − t/m) (Swamidass & Baldi, 2007).

        A full filter (t = m) says nothing about how many more went in: ``inf``.
        """
        t = self.bits_set
        if t == 0:
            return 0.0
        if t == self.m:
            return math.inf
        return -(self.m / self.k) * math.log1p(-t / self.m)


@dataclass(frozen=True)
class BloomJaccard:
    bits_a: np.ndarray  # (m,) bool
    bits_b: np.ndarray  # (m,) bool
    estimate: float  # from estimated cardinalities, in [0, 1]; nan when A ∪ B saturates
    bit_jaccard: float  # popcount(a & b) / popcount(a | b), biased up by shared collisions
    fill_a: float
    fill_b: float
    count_a: float  # estimated |A|
    count_b: float  # estimated |B|
    count_union: float  # estimated |A ∪ B| from the OR of both filters; inf when saturated


def bloom_jaccard(a: set[Item], b: set[Item], m: int, k: int, seed: int = 0) -> BloomJaccard:
    """Estimate J(A, B) from two Bloom filters of the same shape and seed.

    |A ∩ B| ≈ |A| + |B| − |A ∪ B|, each term a Swamidass–Baldi count; the OR of the two
    filters is exactly the filter of A ∪ B.
    """
    fa, fb = BloomFilter(m, k, seed), BloomFilter(m, k, seed)
    fa.update(a)
    fb.update(b)
    union = BloomFilter(m, k, seed)
    union.bits = fa.bits | fb.bits
    ca, cb, cu = fa.count_estimate(), fb.count_estimate(), union.count_estimate()
    if cu == 0:
        estimate = 1.0  # both empty
    elif math.isinf(cu):
        estimate = math.nan
    else:
        estimate = min(1.0, max(0.0, (ca + cb - cu) / cu))
    n_or = union.bits_set
    bit_j = int((fa.bits & fb.bits).sum()) / n_or if n_or else 1.0
    return BloomJaccard(fa.bits, fb.bits, estimate, bit_j, fa.fill_ratio, fb.fill_ratio, ca, cb, cu)


def _mod_p(v: np.ndarray) -> np.ndarray:
    """v mod (2**61 − 1) for any uint64 v: fold the 3 bits above bit 61 back in, as 2**61 = 1."""
    v = (v & _P) + (v >> np.uint64(61))  # <= 2**61 + 6, so one subtraction finishes
    return np.where(v >= _P, v - _P, v)


def _mulmod(a: np.ndarray, x: np.ndarray) -> np.ndarray:
    """a·x mod (2**61 − 1) exactly, for broadcastable uint64 a, x < 2**61.

    The 122-bit product is split into 32-bit halves so no partial product overflows:
    a·x = hh·2**64 + mid·2**32 + lo, with 2**64 = 8 and 2**61 = 1 (mod p).
    """
    a1, a0 = a >> np.uint64(32), a & _LOW32
    x1, x0 = x >> np.uint64(32), x & _LOW32
    hh = (a1 * x1) << np.uint64(3)  # a1, x1 < 2**29: < 2**61
    mid = a1 * x0 + a0 * x1  # < 2**62
    # mid·2**32 = (mid >> 29)·2**61 + (mid mod 2**29)·2**32 = (mid >> 29) + ... (mod p)
    mid = (mid >> np.uint64(29)) + ((mid & np.uint64((1 << 29) - 1)) << np.uint64(32))
    return _mod_p(hh + mid + _mod_p(a0 * x0))  # sum < 2**63: no wrap


class MinHash:
    """MinHash signatures with ``num_perm`` universal hashes h(x) = (a·x + b) mod (2**61 − 1).

    x is a 64-bit BLAKE2b hash of the item reduced mod p. The chance that two sets share
    the minimum of one h is their Jaccard similarity, so the fraction of equal signature
    slots estimates it with standard error sqrt(J(1 − J) / num_perm).
    """

    def __init__(self, num_perm: int, seed: int = 0) -> None:
        if num_perm < 1:
            raise ValueError(f"num_perm must be >= 1, got {num_perm}")
        rng = np.random.default_rng(seed)
        self.num_perm, self.seed = num_perm, seed
        self.a = rng.integers(1, MERSENNE_61, size=num_perm, dtype=np.uint64)  # (P,)
        self.b = rng.integers(0, MERSENNE_61, size=num_perm, dtype=np.uint64)  # (P,)

    def signature(self, items: Iterable[Item], *, chunk: int = 2048) -> np.ndarray:
        """(num_perm,) uint64 minima; the empty set gives all 2**61 − 1, which no item hits."""
        x = _mod_p(_digests(items, 8)[:, 0])  # (N,)
        sig = np.full(self.num_perm, _P, dtype=np.uint64)
        for start in range(0, x.size, chunk):
            xs = x[start : start + chunk, None]  # (C, 1)
            h = _mod_p(_mulmod(self.a, xs) + self.b)  # (C, P)
            np.minimum(sig, h.min(axis=0), out=sig)
        return sig

    @staticmethod
    def estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
        """Fraction of slots where the two signatures agree, an estimate of J in [0, 1]."""
        if sig_a.shape != sig_b.shape:
            raise ValueError(f"signatures differ in length: {sig_a.shape} vs {sig_b.shape}")
        return float(np.mean(sig_a == sig_b))


def _bits_view(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Two (m,) bit vectors ready to draw: the bits themselves when m <= MAX_DRAWN_BITS,
    else the fraction of set bits in each of DENSITY_BUCKETS near-equal slices."""
    m = a.size
    if m <= MAX_DRAWN_BITS:
        return {"kind": "bits", "a": a.astype(int).tolist(), "b": b.astype(int).tolist()}
    edges = np.linspace(0, m, DENSITY_BUCKETS + 1).astype(np.int64)  # (buckets + 1,)
    widths = np.diff(edges)

    def density(bits: np.ndarray) -> list[float]:
        counts = np.add.reduceat(bits.astype(np.int64), edges[:-1])
        return np.round(counts / widths, 4).tolist()

    return {"kind": "density", "buckets": DENSITY_BUCKETS, "a": density(a), "b": density(b)}


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no inf or nan


def compare_texts(
    text_a: str,
    text_b: str,
    *,
    n: int,
    m: int,
    k: int,
    num_perm: int,
    seed: int = 0,
    emit: Emit = no_emit,
) -> dict[str, Any]:
    """Everything the "hash vectors" playground shows, as a JSON-able dict.

    Exact Jaccard of the two texts' word n-grams, then three sketches of it: Bloom filters
    of ``m`` bits and ``k`` hashes (count-based estimate and naive bit Jaccard), our MinHash
    and datasketch's with ``num_perm`` slots. Errors are absolute (estimate − exact).
    ``bits`` holds raw 0/1 lists up to m = 4096, else 512-bucket fill densities.
    """
    from datasketch import MinHash as DatasketchMinHash  # only this playground needs it

    grams_a, grams_b = word_ngrams(text_a, n), word_ngrams(text_b, n)
    exact = jaccard(grams_a, grams_b)
    result: dict[str, Any] = {
        "params": {"n": n, "m": m, "k": k, "num_perm": num_perm, "seed": seed},
        "grams_a": len(grams_a),
        "grams_b": len(grams_b),
        "grams_shared": len(grams_a & grams_b),
        "grams_union": len(grams_a | grams_b),
        "exact_jaccard": exact,
    }
    emit("partial", **result)
    emit("progress", pct=10.0, message="Bloom filters")

    bloom = bloom_jaccard(grams_a, grams_b, m, k, seed)
    est = _finite(bloom.estimate)
    result["bloom"] = {
        "estimate": est,
        "error": None if est is None else est - exact,
        "bit_jaccard": bloom.bit_jaccard,
        "bit_error": bloom.bit_jaccard - exact,
        "fill_a": bloom.fill_a,
        "fill_b": bloom.fill_b,
        "count_a": _finite(bloom.count_a),
        "count_b": _finite(bloom.count_b),
        "count_union": _finite(bloom.count_union),
        "saturated": est is None,
    }
    emit("partial", bloom=result["bloom"])
    emit("progress", pct=40.0, message="MinHash")

    ours = MinHash(num_perm, seed)
    mh_est = MinHash.estimate(ours.signature(grams_a), ours.signature(grams_b))
    result["minhash"] = {
        "estimate": mh_est,
        "error": mh_est - exact,
        "std_error": math.sqrt(exact * (1.0 - exact) / num_perm),
    }
    emit("partial", minhash=result["minhash"])
    emit("progress", pct=70.0, message="datasketch MinHash")

    ds_a = DatasketchMinHash(num_perm=num_perm, seed=seed)
    ds_b = DatasketchMinHash(num_perm=num_perm, seed=seed)
    ds_a.update_batch([g.encode("utf-8") for g in grams_a])
    ds_b.update_batch([g.encode("utf-8") for g in grams_b])
    ds_est = float(ds_a.jaccard(ds_b))
    result["datasketch"] = {"estimate": ds_est, "error": ds_est - exact}
    emit("partial", datasketch=result["datasketch"])

    result["bits"] = _bits_view(bloom.bits_a, bloom.bits_b)
    emit("progress", pct=100.0, message="done")
    return result
