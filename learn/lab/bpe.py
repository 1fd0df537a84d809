"""Byte-level BPE from scratch: train, encode, decode, export to Hugging Face's format.

Text is first cut into *chunks* by a pre-tokenizer (a regular expression), each chunk is
turned into UTF-8 bytes, and each byte is written as one printable character (GPT-2's
byte-to-unicode table: a space becomes ``Ġ``). Training starts from those 256 symbols and
repeatedly merges the most frequent adjacent pair into a new symbol until the vocabulary
has ``vocab_size`` entries.

The trainer keeps pair counts incrementally (a merge only touches the words that hold
the pair) and picks the next pair from a priority queue with lazy updates, the method of
Hugging Face ``tokenizers``' ``BpeTrainer``. It learns the same merges in the same order,
including its tie rule: among pairs with equal counts, the one with the smaller
``(left id, right id)`` wins. :func:`naive_train` is the recount-everything-per-merge
version from the course, kept as the slow reference.
"""

from __future__ import annotations

import heapq
import itertools
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, NamedTuple

import regex

from learn.lab.events import Emit, no_emit

Pair = tuple[int, int]

# GPT-2's split (the pattern inside HF's ByteLevel pre-tokenizer) and GPT-4's (cl100k).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT4_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
WHITESPACE_PATTERN = r"\s+|\S+"  # words and the runs of whitespace between them
PATTERNS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN, "whitespace": WHITESPACE_PATTERN}
PRETOKENIZER_NAMES = {
    "gpt2": "GPT-2 pattern",
    "gpt4": "GPT-4 pattern",
    "whitespace": "whitespace only",
}


@cache
def byte_chars() -> tuple[str, ...]:
    """The printable character standing for each byte 0-255 (GPT-2's table).

    Bytes that are printable Latin-1 stand for themselves; the other 68 are moved to
    U+0100 and up, in byte order, so every token is a readable string.
    """
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    kept += range(ord("®"), ord("ÿ") + 1)
    shifted = iter(range(256, 256 + 256 - len(kept)))
    return tuple(chr(b) if b in kept else chr(next(shifted)) for b in range(256))


@cache
def _char_byte() -> dict[str, int]:
    return {c: b for b, c in enumerate(byte_chars())}


def to_byte_chars(text: str) -> str:
    """``text`` as UTF-8 bytes, one printable character per byte."""
    table = byte_chars()
    return "".join(table[b] for b in text.encode("utf-8"))


def token_bytes(token: str) -> bytes:
    """The bytes a byte-level token stands for (a special token: its UTF-8)."""
    table = _char_byte()
    if all(c in table for c in token):
        return bytes(table[c] for c in token)
    return token.encode("utf-8")


def readable(token: str) -> str:
    """A token as text a person can read; a split character shows as its hex bytes."""
    data = token_bytes(token)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="backslashreplace")


@dataclass(frozen=True)
class BPEConfig:
    """What to train: the final vocabulary size (bytes + specials + merges) and the split."""

    vocab_size: int
    pretokenizer: str = "gpt2"
    special_tokens: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.pretokenizer not in PATTERNS:
            raise ValueError(f"unknown pre-tokenizer {self.pretokenizer!r}: one of {[*PATTERNS]}")
        if self.vocab_size < 256 + len(self.special_tokens):
            raise ValueError("vocab_size must leave room for 256 bytes and the special tokens")


class Token(NamedTuple):
    """One encoded token: id, vocabulary entry, and the characters [start, end) it covers."""

    id: int
    token: str
    start: int
    end: int


class Merge(NamedTuple):
    """One learned merge: its rank (0 = first), the pair of ids, the new id and its count."""

    rank: int
    pair: Pair
    new_id: int
    count: int


def _special_splitter(specials: Iterable[str]) -> regex.Pattern[str] | None:
    ordered = sorted(specials, key=len, reverse=True)  # longest first: never split one
    return regex.compile("|".join(regex.escape(s) for s in ordered)) if ordered else None


def split_specials(text: str, specials: Iterable[str]) -> Iterator[tuple[int, str, bool]]:
    """``(start, piece, is_special)`` for the runs of ordinary text and the special tokens."""
    splitter = _special_splitter(specials)
    position = 0
    if splitter is not None:
        for found in splitter.finditer(text):
            if found.start() > position:
                yield position, text[position : found.start()], False
            yield found.start(), found.group(), True
            position = found.end()
    if position < len(text):
        yield position, text[position:], False


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

        pending.append(_merge_row(merges[-1], vocab))
        now = time.perf_counter()
        if now - last_emit >= emit_every:
            _flush(emit, pending, len(merges), wanted)
            last_emit = now
    _flush(emit, pending, len(merges), wanted)
    return BPETokenizer(vocab, [m.pair for m in merges], config, counts=[m.count for m in merges])


def _merge_row(merge: Merge, vocab: list[str]) -> dict[str, Any]:
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


def step_through(corpus: str, steps: int, pretokenizer: str = "whitespace") -> list[dict[str, Any]]:
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


# ---------------------------------------------------------------------------- the tokenizer


class BPETokenizer:
    """A trained byte-level BPE: ``vocab[id]`` is a token, ``merges[rank]`` a pair of ids."""

    CACHE_LIMIT = 100_000  # chunks remembered between encode calls

    def __init__(
        self,
        vocab: list[str],
        merges: list[Pair],
        config: BPEConfig,
        *,
        counts: list[int] | None = None,
    ) -> None:
        self.vocab = vocab
        self.merges = merges
        self.config = config
        self.counts = counts or []
        self.ids = {token: i for i, token in enumerate(vocab)}
        # pair → (rank, id of the merged token); a later duplicate overrides, as in HF
        self.ranks = {
            (a, b): (rank, self.ids[vocab[a] + vocab[b]]) for rank, (a, b) in enumerate(merges)
        }
        self._pattern = regex.compile(PATTERNS[config.pretokenizer])
        self._specials = set(config.special_tokens)
        self._cache: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.vocab)

    # -- encoding
    def _bpe(self, chunk: str) -> list[int]:
        """Ids of one pre-tokenized chunk: apply merges lowest rank first, left to right."""
        found = self._cache.get(chunk)
        if found is not None:
            return found
        word = [self.ids[c] for c in to_byte_chars(chunk)]
        ranks = self.ranks
        while len(word) > 1:
            best = min((ranks[p] for p in itertools.pairwise(word) if p in ranks), default=None)
            if best is None:
                break
            rank, new = best
            a, b = self.merges[rank]
            i, merged = 0, []
            while i < len(word):
                if i < len(word) - 1 and word[i] == a and word[i + 1] == b:
                    merged.append(new)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        if len(self._cache) >= self.CACHE_LIMIT:
            self._cache.clear()
        self._cache[chunk] = word
        return word

    def _chunks(self, text: str) -> Iterator[tuple[int, str, bool]]:
        for start, piece, special in split_specials(text, self.config.special_tokens):
            if special:
                yield start, piece, True
                continue
            for found in self._pattern.finditer(piece):
                yield start + found.start(), found.group(), False

    def encode(self, text: str) -> list[int]:
        """Token ids for ``text``; special tokens are matched first and never split."""
        ids: list[int] = []
        for _, chunk, special in self._chunks(text):
            ids += [self.ids[chunk]] if special else self._bpe(chunk)
        return ids

    def encode_with_offsets(self, text: str) -> list[Token]:
        """Tokens with the characters of ``text`` each covers.

        A token that holds only part of a character's UTF-8 bytes gets that whole
        character's span, so several tokens can share one span.
        """
        out: list[Token] = []
        for start, chunk, special in self._chunks(text):
            if special:
                out.append(Token(self.ids[chunk], chunk, start, start + len(chunk)))
                continue
            byte_char = [i for i, c in enumerate(chunk) for _ in range(len(c.encode("utf-8")))]
            position = 0
            for token_id in self._bpe(chunk):
                token = self.vocab[token_id]
                first, last = byte_char[position], byte_char[position + len(token) - 1]
                out.append(Token(token_id, readable(token), start + first, start + last + 1))
                position += len(token)
        return out

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes ``ids`` stand for (may end inside a character)."""
        return b"".join(token_bytes(self.vocab[i]) for i in ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text for ``ids``; bytes that do not form UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # -- storage
    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild this tokenizer, as JSON-able data."""
        return {
            "format": "forward-pass-bpe/1",
            "vocab": self.vocab,
            "merges": [list(pair) for pair in self.merges],
            "counts": self.counts,
            "pretokenizer": self.config.pretokenizer,
            "special_tokens": list(self.config.special_tokens),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BPETokenizer:
        config = BPEConfig(
            vocab_size=len(data["vocab"]),
            pretokenizer=data["pretokenizer"],
            special_tokens=tuple(data["special_tokens"]),
        )
        merges = [(int(a), int(b)) for a, b in data["merges"]]
        return cls(list(data["vocab"]), merges, config, counts=data.get("counts"))

    def to_hf_dict(self) -> dict[str, Any]:
        """This tokenizer as a Hugging Face ``tokenizer.json`` document (BPE model)."""
        byte_level = {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": True,
            "use_regex": self.config.pretokenizer == "gpt2",
        }
        if self.config.pretokenizer == "gpt2":
            pre_tokenizer: dict[str, Any] = byte_level
        else:
            split = {
                "type": "Split",
                "pattern": {"Regex": PATTERNS[self.config.pretokenizer]},
                "behavior": "Isolated",
                "invert": False,
            }
            pre_tokenizer = {"type": "Sequence", "pretokenizers": [split, byte_level]}
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {
                    "id": self.ids[s],
                    "content": s,
                    "single_word": False,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "special": True,
                }
                for s in self.config.special_tokens
            ],
            "normalizer": None,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": None,
            "decoder": {**byte_level, "use_regex": True},
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": self.ids,
                "merges": [[self.vocab[a], self.vocab[b]] for a, b in self.merges],
            },
        }

    def to_hf_json(self) -> str:
        return json.dumps(self.to_hf_dict(), ensure_ascii=False)


def summary(tokenizer: BPETokenizer, *, first: int = 20, longest: int = 16) -> dict[str, Any]:
    """What a page shows about a trained tokenizer: first merges, a chart, and the longest
    tokens that hold a letter or digit (runs of punctuation or spaces say little)."""
    vocab, counts = tokenizer.vocab, tokenizer.counts
    merged = [tokenizer.ranks[pair][1] for pair in tokenizer.merges]
    rows = [
        _merge_row(
            Merge(rank, pair, merged[rank], counts[rank] if rank < len(counts) else 0), vocab
        )
        for rank, pair in enumerate(tokenizer.merges[:first])
    ]
    wordy = {i for i in merged if any(c.isalnum() for c in readable(vocab[i]))}
    by_length = sorted(wordy, key=lambda i: (-len(vocab[i]), i))[:longest]
    return {
        "merge_count": len(tokenizer.merges),
        "first_merges": rows,
        "longest": [readable(vocab[i]) for i in by_length],
        "chart": _thinned(counts),
    }


def _thinned(counts: list[int], points: int = 2_000) -> dict[str, list[int]]:
    """At most ``points`` of the count-by-rank curve, evenly spaced, last rank included."""
    step = max(1, -(-len(counts) // points))
    ranks = list(range(1, len(counts) + 1, step))
    if counts and ranks[-1] != len(counts):
        ranks.append(len(counts))
    return {"ranks": ranks, "counts": [counts[r - 1] for r in ranks]}
