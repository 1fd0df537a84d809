"""Tokenizers side by side: the same text through several tokenizers, token by token.

Every tokenizer is wrapped to give :class:`Piece` lists with character offsets into the
input, so a page can colour the text and count what each tokenizer spends on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from learn.lab.events import Emit, no_emit

SHOWN_TOKENS = 3_000  # tokens per tokenizer sent back for display; counts cover all
_WORD = re.compile(r"\w+")


class Piece(NamedTuple):
    """One token: its id, the vocabulary entry, and the characters [start, end) it covers."""

    id: int
    token: str
    start: int
    end: int


@dataclass
class NamedTokenizer:
    """Any tokenizer, as a name, a family and a function text → pieces."""

    name: str
    family: str
    pieces: Callable[[str], list[Piece]]


def hf_tokenizer(path_or_json: Path | str, name: str, family: str) -> NamedTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer from a tokenizer.json path or its JSON text."""
    from tokenizers import Tokenizer

    if isinstance(path_or_json, Path):
        tokenizer = Tokenizer.from_file(str(path_or_json))
    else:
        tokenizer = Tokenizer.from_str(path_or_json)
    tokenizer.no_padding()  # some ship with padding/truncation for batching (MiniLM: 128)
    tokenizer.no_truncation()

    def pieces(text: str) -> list[Piece]:
        encoding = tokenizer.encode(text, add_special_tokens=False)
        return [
            Piece(i, token, start, end)
            for i, token, (start, end) in zip(
                encoding.ids, encoding.tokens, encoding.offsets, strict=True
            )
        ]

    return NamedTokenizer(name, family, pieces)


def text_stats(text: str, pieces: Sequence[Piece]) -> dict[str, Any]:
    """Counts a learner compares across tokenizers (per-word and per-character rates)."""
    words = len(_WORD.findall(text))
    count = len(pieces)
    return {
        "tokens": count,
        "chars": len(text),
        "bytes": len(text.encode("utf-8")),
        "words": words,
        "tokens_per_word": round(count / words, 3) if words else None,
        "chars_per_token": round(len(text) / count, 3) if count else None,
    }


def compare(
    text: str, tokenizers: Sequence[NamedTokenizer], *, emit: Emit = no_emit
) -> list[dict[str, Any]]:
    """Tokenize ``text`` with each tokenizer: stats plus the first SHOWN_TOKENS pieces.

    Each piece is ``[id, token, start, end, shown, byte_start, byte_end]``: character
    offsets into ``text``, the text the token covers (for a byte-level token that holds
    only part of a character, its bytes instead: ``<F0><9F>``), and the same span in UTF-8
    bytes.
    """
    rows = []
    for i, tokenizer in enumerate(tokenizers):
        emit("progress", pct=100 * i / len(tokenizers), message=f"Tokenizing with {tokenizer.name}")
        pieces = tokenizer.pieces(text)
        rows.append(
            {
                "name": tokenizer.name,
                "family": tokenizer.family,
                "stats": text_stats(text, pieces),
                "pieces": _shown(
                    text, pieces[:SHOWN_TOKENS], byte_level="byte" in tokenizer.family.lower()
                ),
                "truncated": len(pieces) > SHOWN_TOKENS,
            }
        )
    return rows


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the printable character standing for each byte."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    kept += range(ord("®"), ord("ÿ") + 1)
    moved = [b for b in range(256) if b not in kept]
    return {chr(b): b for b in kept} | {chr(256 + i): b for i, b in enumerate(moved)}


BYTE_OF = _byte_alphabet()


def token_bytes(token: str) -> bytes | None:
    """A byte-level token's bytes ("Ã" -> b"\xc3"); None if it is not in that alphabet."""
    if not token or any(ch not in BYTE_OF for ch in token):
        return None
    return bytes(BYTE_OF[ch] for ch in token)


def as_text_and_bytes(raw: bytes) -> str:
    """Whole characters as text, the bytes of split ones as ``<C3>``: b" \xc3" -> " <C3>"."""
    text = raw.decode("utf-8", errors="surrogateescape")  # a stray byte b -> U+DC00 + b
    return "".join(f"<{ord(ch) - 0xDC00:02X}>" if "\udc80" <= ch <= "\udcff" else ch for ch in text)


def _shown(text: str, pieces: Sequence[Piece], *, byte_level: bool = False) -> list[list[Any]]:
    byte_at = [0]  # byte_at[i]: UTF-8 byte offset of character i
    for char in text:
        byte_at.append(byte_at[-1] + len(char.encode("utf-8")))
    rows, previous = [], None
    for piece in pieces:
        span = (piece.start, piece.end)
        shown = text[piece.start : piece.end] if span != previous else ""
        raw = token_bytes(piece.token) if byte_level else None
        if raw is not None and raw != shown.encode("utf-8"):  # part of a character: its bytes
            shown = as_text_and_bytes(raw)
        rows.append([*piece, shown, byte_at[piece.start], byte_at[piece.end]])
        previous = span
    return rows


def cost(tokens: int, *, context_window: int, price_per_million: float) -> dict[str, float]:
    """What ``tokens`` mean for a context window (share used) and a price per million tokens."""
    return {
        "window_share": tokens / context_window,
        "fits": tokens <= context_window,
        "copies_per_window": context_window / tokens if tokens else 0.0,
        "price": tokens * price_per_million / 1_000_000,
    }
