"""Byte-level BPE: the trained tokenizer (encode, decode, save and load) and the pieces
that trainer and tokenizer share (the pre-tokenizer patterns and the byte alphabet).

Text is first cut into *chunks* by a pre-tokenizer (a regular expression), each chunk is
turned into UTF-8 bytes, and each byte is written as one printable character (GPT-2's
byte-to-unicode table: a space becomes ``Ġ``). A trained tokenizer is a vocabulary over
those characters plus an ordered list of merges; encoding a chunk applies the merges,
lowest rank first, until none applies. Training is in ``learn.lab.bpe_train``, the export
to Hugging Face's ``tokenizer.json`` in ``learn.lab.bpe_hf``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import regex

from learn.lab.facts import Pretokenizer
from learn.lab.tokenize import Piece

Pair = tuple[int, int]

# GPT-2's split (the pattern inside HF's ByteLevel pre-tokenizer) and GPT-4's (cl100k).
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT4_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
WHITESPACE_PATTERN = r"\s+|\S+"  # words and the runs of whitespace between them
# one per name of learn.lab.facts.PRETOKENIZER_NAMES (the forms offer those names)
PATTERNS: dict[Pretokenizer, str] = {
    "gpt2": GPT2_PATTERN,
    "gpt4": GPT4_PATTERN,
    "whitespace": WHITESPACE_PATTERN,
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
    pretokenizer: Pretokenizer = "gpt2"
    special_tokens: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.pretokenizer not in PATTERNS:
            raise ValueError(f"unknown pre-tokenizer {self.pretokenizer!r}: one of {[*PATTERNS]}")
        if self.vocab_size < 256 + len(self.special_tokens):
            raise ValueError("vocab_size must leave room for 256 bytes and the special tokens")


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

    def encode_with_offsets(self, text: str) -> list[Piece]:
        """Tokens with the characters of ``text`` each covers.

        A token that holds only part of a character's UTF-8 bytes gets that whole
        character's span, so several tokens can share one span.
        """
        out: list[Piece] = []
        for start, chunk, special in self._chunks(text):
            if special:
                out.append(Piece(self.ids[chunk], chunk, start, start + len(chunk)))
                continue
            byte_char = [i for i, c in enumerate(chunk) for _ in range(len(c.encode("utf-8")))]
            position = 0
            for token_id in self._bpe(chunk):
                token = self.vocab[token_id]
                first, last = byte_char[position], byte_char[position + len(token) - 1]
                out.append(Piece(token_id, readable(token), start + first, start + last + 1))
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
