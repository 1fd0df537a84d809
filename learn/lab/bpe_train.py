"""Training a byte-level BPE: count adjacent pairs, merge the most frequent, repeat.

Training starts from the 256 byte characters (and any special tokens) and repeatedly
merges the most frequent adjacent pair into a new symbol until the vocabulary has
``vocab_size`` entries. What it produces is a ``learn.lab.bpe.BPETokenizer``.

:func:`train_bpe` keeps pair counts incrementally (a merge only touches the words that
hold the pair) and picks the next pair from a priority queue with lazy updates, the
method of Hugging Face ``tokenizers``' ``BpeTrainer``. It learns the same merges in the
same order, including its tie rule: among pairs with equal counts, the one with the
smaller ``(left id, right id)`` wins. :func:`naive_train` is the recount-everything-per-merge
version from the course, kept as the slow reference; :func:`step_through` shows its first
merges one by one.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import regex

from learn.lab.bpe import (
    PATTERNS,
    BPEConfig,
    BPETokenizer,
    Pair,
    byte_chars,
    readable,
    split_specials,
    to_byte_chars,
)
from learn.lab.events import Emit, no_emit
from learn.lab.facts import Pretokenizer


class Merge(NamedTuple):
    """One learned merge: its rank (0 = first), the pair of ids, the new id and its count."""

    rank: int
    pair: Pair
    new_id: int
    count: int


def word_counts(text: str, config: BPEConfig) -> Counter[str]:
    """How often each pre-tokenized chunk occurs, in byte characters. Specials are left out."""
    pattern = regex.compile(PATTERNS[config.pretokenizer])
    counts: Counter[str] = Counter()
    for _, piece, special in split_specials(text, config.special_tokens):
        if not special:
            counts.update(pattern.findall(piece))
    return Counter({to_byte_chars(chunk): n for chunk, n in counts.items()})


def base_vocab(config: BPEConfig) -> list[str]:
    """Special tokens first, then the 256 byte characters sorted by code point (HF's order)."""
    return [*config.special_tokens, *sorted(byte_chars())]


# ---------------------------------------------------------------------------- training


def _merge_word(word: list[int], a: int, b: int, new: int) -> list[tuple[Pair, int]]:
    """Merge every ``a b`` in ``word`` (in place, left to right) into ``new``.

    Returns the pair-count changes per occurrence of the word: the neighbours' old pairs
    lose one, the new pairs gain one. (The merged pair itself is retired by the caller.)
    """
    changes: list[tuple[Pair, int]] = []
    i = 0
    while i < len(word) - 1:
        if word[i] == a and word[i + 1] == b:
            if i > 0:
                changes += (((word[i - 1], a), -1), ((word[i - 1], new), 1))
            word[i : i + 2] = [new]
            if i < len(word) - 1:
                changes += (((b, word[i + 1]), -1), ((new, word[i + 1]), 1))
        i += 1
    return changes


@dataclass(order=True)
class _Entry:
    """A queue entry: highest count first, then the smaller pair (HF's tie rule)."""

    neg_count: int
    pair: Pair
    words: set[int] = field(compare=False)


def train_bpe(
    text: str, config: BPEConfig, *, emit: Emit = no_emit, emit_every: float = 0.25
) -> BPETokenizer:
    """Learn ``config.vocab_size - 256 - len(specials)`` merges (fewer if pairs run out).

    Emits ``progress`` (pct of merges) and ``partial`` events with ``merges``: a list of
    ``{rank, pair: [left, right], token, count}`` (readable strings), at most every
    ``emit_every`` seconds. Time is O(corpus) to count plus O(occurrences merged).
    """
    emit("progress", pct=0, message="Splitting the corpus into words")
    counts = word_counts(text, config)
    vocab = base_vocab(config)
    ids = {token: i for i, token in enumerate(vocab)}
    words = [[ids[c] for c in word] for word in counts]
    freq = list(counts.values())

    pair_counts: defaultdict[Pair, int] = defaultdict(int)
    where: defaultdict[Pair, set[int]] = defaultdict(set)
    for w, word in enumerate(words):
        for pair in itertools.pairwise(word):
            pair_counts[pair] += freq[w]
            where[pair].add(w)
    queue = [_Entry(-pair_counts[p], p, ws) for p, ws in where.items() if pair_counts[p] > 0]
    heapq.heapify(queue)

    wanted = config.vocab_size - len(vocab)
    merges: list[Merge] = []
    pending: list[dict[str, Any]] = []
    last_emit = time.perf_counter()
    emit("progress", pct=0, message=f"{len(words):,} distinct words; merging")
    while len(vocab) < config.vocab_size and queue:
        top = heapq.heappop(queue)
        count = pair_counts[top.pair]
        if -top.neg_count != count:  # stale: its count fell since it was queued
            top.neg_count = -count
            heapq.heappush(queue, top)
            continue
        if count < 1:
            break
        a, b = top.pair
        token = vocab[a] + vocab[b]
        new = ids.get(token)
        if new is None:
            new = ids[token] = len(vocab)
            vocab.append(token)
        merges.append(Merge(len(merges), top.pair, new, count))

        touched: defaultdict[Pair, set[int]] = defaultdict(set)
        for w in top.words:
            for pair, change in _merge_word(words[w], a, b, new):
                pair_counts[pair] += change * freq[w]
                if change > 0:
                    touched[pair].add(w)
        for pair, ws in touched.items():
            if pair_counts[pair] > 0:
                heapq.heappush(queue, _Entry(-pair_counts[pair], pair, ws))

        pending.append(merge_row(merges[-1], vocab))
        now = time.perf_counter()
        if now - last_emit >= emit_every:
            _flush(emit, pending, len(merges), wanted)
            last_emit = now
    _flush(emit, pending, len(merges), wanted)
    return BPETokenizer(vocab, [m.pair for m in merges], config, counts=[m.count for m in merges])


def merge_row(merge: Merge, vocab: list[str]) -> dict[str, Any]:
    """A merge as the trainer emits it: ``rank`` (1 = first), ``pair``, ``token``, ``count``."""
    a, b = merge.pair
    return {
        "rank": merge.rank + 1,
        "pair": [readable(vocab[a]), readable(vocab[b])],
        "token": readable(vocab[merge.new_id]),
        "count": merge.count,
    }


def _flush(emit: Emit, pending: list[dict[str, Any]], done: int, wanted: int) -> None:
    if pending:
        emit("partial", merges=list(pending))
        pending.clear()
    pct = 100 * done / wanted if wanted else 100.0
    emit("progress", pct=min(pct, 100.0), message=f"{done:,} of {wanted:,} merges")


@dataclass
class _NaiveStep:
    """One merge of the naive trainer: the pair counts it chose from, and what it did."""

    pairs: Counter[Pair]  # every pair's count before the merge
    pair: Pair
    count: int
    vocab: list[str]  # the vocabulary so far (the new token included)
    words: list[tuple[list[int], int]]  # every distinct word after the merge, with its count


def _naive_steps(text: str, config: BPEConfig) -> Iterator[_NaiveStep]:
    """The course's trainer, one merge at a time: recount every pair over the whole corpus,
    merge the most frequent (ties: the smaller ids), repeat until the vocabulary is full."""
    counts = word_counts(text, config)
    vocab = base_vocab(config)
    ids = {token: i for i, token in enumerate(vocab)}
    words = [([ids[c] for c in word], n) for word, n in counts.items()]
    while len(vocab) < config.vocab_size:
        pairs = _pair_counts(words)
        if not pairs:
            return
        (a, b), count = _best(pairs)
        token = vocab[a] + vocab[b]
        new = ids.setdefault(token, len(vocab))
        if new == len(vocab):
            vocab.append(token)
        for word, _ in words:
            _merge_word(word, a, b, new)
        yield _NaiveStep(pairs, (a, b), count, vocab, words)


def naive_train(
    text: str, config: BPEConfig, *, time_budget: float | None = None
) -> list[tuple[str, str]]:
    """The course's trainer: recount every pair over the whole corpus before each merge.

    Same tie rule as :func:`train_bpe`; returns the merges as ``(left, right)`` tokens.
    O(merges × corpus): fine for a paragraph, hopeless for a book. With ``time_budget``
    (seconds) it stops after the merge that crosses it (for benchmarks).
    """
    started = time.perf_counter()
    merges = []
    for step in _naive_steps(text, config):
        a, b = step.pair
        merges.append((step.vocab[a], step.vocab[b]))
        if time_budget is not None and time.perf_counter() - started > time_budget:
            break
    return merges


def _pair_counts(words: Iterable[tuple[list[int], int]]) -> Counter[Pair]:
    pairs: Counter[Pair] = Counter()
    for word, n in words:
        for pair in itertools.pairwise(word):
            pairs[pair] += n
    return pairs


def _best(pairs: Counter[Pair]) -> tuple[Pair, int]:
    """The most frequent pair; among equals, the smaller (left id, right id)."""
    pair = min(pairs, key=lambda p: (-pairs[p], p))
    return pair, pairs[pair]


def step_through(
    corpus: str, steps: int, pretokenizer: Pretokenizer = "whitespace"
) -> list[dict[str, Any]]:
    """The first ``steps`` merges on a small corpus, with what a learner needs to see each one.

    Each step: ``rank``, ``pair`` and ``token`` (readable), ``count``, ``top_pairs`` (the
    8 most frequent pairs before the merge, ``{pair, count}``) and ``words`` (every
    distinct word's symbols after the merge, ``{symbols, count}``).
    """
    config = BPEConfig(vocab_size=256 + steps, pretokenizer=pretokenizer)
    out = []
    for rank, step in enumerate(_naive_steps(corpus, config), start=1):
        if step.count < 2:
            break  # a pair seen once compresses nothing worth showing
        vocab, pairs = step.vocab, step.pairs
        (a, b) = step.pair
        ranked = sorted(pairs, key=lambda p: (-pairs[p], p))[:8]
        out.append(
            {
                "rank": rank,
                "pair": [readable(vocab[a]), readable(vocab[b])],
                "token": readable(vocab[a] + vocab[b]),
                "count": step.count,
                "top_pairs": [
                    {"pair": [readable(vocab[x]), readable(vocab[y])], "count": pairs[(x, y)]}
                    for x, y in ranked
                ],
                "words": [
                    {"symbols": [readable(vocab[s]) for s in word], "count": n}
                    for word, n in step.words
                ],
            }
        )
    return out
