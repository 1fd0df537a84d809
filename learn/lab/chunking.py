"""Cutting a document into chunks to embed and retrieve: fixed, recursive and sentence.

Sizes are measured in the embedding model's tokens, not characters, because that is what
the model sees and what it truncates (all-MiniLM-L6-v2 reads at most 256 word pieces).
The caller passes a :data:`TokenSpans` function, e.g. MiniLM's WordPiece offsets through
HF ``tokenizers``; tests pass a regex word tokenizer. The text is tokenized once, and each
candidate range is measured by counting the tokens that lie inside it.

Three chunkers, from bluntest to most text-aware:

- ``fixed``: windows of ``size`` tokens that advance by ``size - overlap`` tokens. Cuts
  anywhere, even mid-sentence; the overlap keeps a fact that straddles a cut whole in at
  least one chunk.
- ``recursive``: the recursive character splitter made popular by LangChain, measured in
  tokens and written here: split at markdown headings, then blank lines (paragraphs),
  then sentences, then words, then (for a single word longer than ``size``) tokens,
  going one level finer only for pieces that are still too large, and merging
  neighbouring pieces while they fit in ``size`` tokens (not across the edge of a
  section that had to be split).
- ``sentence``: one chunk per sentence (small, precise embeddings); what is handed to
  the model is a window of ``window`` sentences either side ("sentence-window retrieval").

Every chunk is a :class:`Span` of character offsets into the source, so a page can
highlight it and ``text == source[start:end]`` always holds.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

TokenSpans = Callable[[str], list[tuple[int, int]]]
"""text -> each token's (start, end) character offsets, in order; must not truncate."""

CHUNKERS = ("fixed", "recursive", "sentence")
MIN_SIZE = 8  # tokens: smaller chunks carry too little meaning to embed
MAX_WINDOW = 5  # sentences either side of a sentence chunk


@dataclass(frozen=True)
class Span:
    """One chunk: ``text == source[start:end]``; ``context_start:context_end`` is what the
    model is given (the same range, except for the sentence chunker's window)."""

    start: int  # character offset, inclusive
    end: int  # character offset, exclusive
    text: str
    tokens: int  # tokens inside [start, end)
    context_start: int
    context_end: int


# ------------------------------------------------------------------------------ sentences

# Sentence end candidates: . ! ? with any closing quotes/brackets, before whitespace.
_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s)")
_NEWLINES = re.compile(r"\n+")
_NEXT = re.compile(r"\s+(\S)")  # the first character after the whitespace
# A period after these does not end a sentence ("e.g. Paris", "Dr. Smith", "Fig. 3").
_ABBREVIATIONS = (
    "e.g. i.e. etc. vs. cf. al. approx. dr. mr. mrs. ms. prof. st. no. fig. eq. sec. "
    "ch. vol. p. pp. jan. feb. mar. apr. jun. jul. aug. sep. sept. oct. nov. dec."
)
ABBREVIATIONS = frozenset(_ABBREVIATIONS.split())


def sentences(text: str) -> list[tuple[int, int]]:
    """Sentences of ``text`` as (start, end) character offsets, whitespace trimmed.

    The rule, simple on purpose: a sentence ends at ``.``, ``!`` or ``?`` (plus any closing
    quotes or brackets) followed by whitespace and then an upper-case letter or a digit,
    unless the word before a ``.`` is a known abbreviation (``e.g.``, ``Dr.``; see
    :data:`ABBREVIATIONS`) or a single letter (an initial, "J. Smith"). A run of newlines
    always ends one, so headings and list items are sentences of their own (and text
    hard-wrapped at a fixed width splits at every line end). Decimals ("3.14") never
    split: no whitespace follows their point.
    """
    cuts = {0, len(text)}
    for m in _NEWLINES.finditer(text):
        cuts.update((m.start(), m.end()))
    for m in _END.finditer(text):
        nxt = _NEXT.match(text, m.end())
        if nxt and (nxt[1].isupper() or nxt[1].isdigit()) and not _abbreviation(text, m):
            cuts.add(m.end())
    bounds = sorted(cuts)
    spans = [_trim(text, a, b) for a, b in pairwise(bounds)]
    return [(a, b) for a, b in spans if a < b]


def _abbreviation(text: str, m: re.Match[str]) -> bool:
    """Is the word that ends at this ``.`` an abbreviation or an initial?"""
    if text[m.start()] != ".":
        return False
    lo = max(0, m.start() - 16)  # longer than any abbreviation; keeps the search local
    word_start = max(lo, *(text.rfind(c, lo, m.start()) + 1 for c in " \t\n"))
    word = text[word_start : m.start() + 1].lstrip("([\"'“‘").lower()
    return word in ABBREVIATIONS or (len(word) == 2 and word[0].isalpha())


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """[start, end) without leading and trailing whitespace (empty ranges stay empty)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


# ------------------------------------------------------------------------------ chunkers


class _Tokens:
    """The text's tokens once, and how many of them lie inside any character range."""

    def __init__(self, text: str, token_spans: TokenSpans) -> None:
        spans = [(a, b) for a, b in token_spans(text) if b > a]  # drop [CLS]-style (0, 0)
        self.spans = spans
        self.starts = [a for a, _ in spans]
        self.ends = [b for _, b in spans]

    def count(self, start: int, end: int) -> int:
        """Tokens t with start <= t.start and t.end <= end."""
        return max(0, bisect_right(self.ends, end) - bisect_left(self.starts, start))

    def first(self, start: int) -> int:
        """Index of the first token that starts at or after ``start``."""
        return bisect_left(self.starts, start)


def chunk(
    text: str,
    chunker: str,
    token_spans: TokenSpans,
    *,
    size: int = 128,
    overlap: int = 32,
    window: int = 1,
) -> list[Span]:
    """Chunks of ``text`` by ``chunker`` (one of :data:`CHUNKERS`), in document order.

    ``size`` caps a chunk in tokens (fixed, recursive); ``overlap`` is the tokens two
    neighbouring fixed windows share; ``window`` is the sentences either side of a
    sentence chunk in its context. A sentence chunk may exceed ``size``: it is never cut.
    """
    if chunker not in CHUNKERS:
        raise ValueError(f"Unknown chunker {chunker!r}: choose one of {', '.join(CHUNKERS)}.")
    if size < MIN_SIZE:
        raise ValueError(f"Chunk size must be at least {MIN_SIZE} tokens, got {size}.")
    if not 0 <= overlap < size:
        raise ValueError(
            f"Overlap must be at least 0 and less than the chunk size ({size}), got {overlap}."
        )
    if not 0 <= window <= MAX_WINDOW:
        raise ValueError(f"Sentence window must be between 0 and {MAX_WINDOW}, got {window}.")
    toks = _Tokens(text, token_spans)
    if chunker == "sentence":
        return _sentence_windows(text, toks, window)
    if chunker == "fixed":
        ranges = _fixed(toks, size, overlap)
    else:
        ranges = _recursive(text, toks, 0, len(text), 0, size)
    return [_span(text, toks, a, b) for a, b in ranges]


def _span(text: str, toks: _Tokens, start: int, end: int) -> Span:
    return Span(start, end, text[start:end], toks.count(start, end), start, end)


def _fixed(toks: _Tokens, size: int, overlap: int) -> list[tuple[int, int]]:
    """Windows of ``size`` tokens every ``size - overlap`` tokens; the last one ends the text."""
    n, step = len(toks.spans), size - overlap
    out = []
    for i in range(0, n, step):
        j = min(i + size, n)
        out.append((toks.starts[i], toks.ends[j - 1]))
        if j == n:
            break
    return out


def _sentence_windows(text: str, toks: _Tokens, window: int) -> list[Span]:
    sents = sentences(text)
    out = []
    for i, (a, b) in enumerate(sents):
        lo, hi = sents[max(0, i - window)][0], sents[min(len(sents) - 1, i + window)][1]
        out.append(Span(a, b, text[a:b], toks.count(a, b), lo, hi))
    return out


# Split levels of the recursive chunker, coarsest first.
_HEADING = re.compile(r"^#{1,6}[ \t]", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")
_WORD = re.compile(r"\S+")
_LEVELS = ("headings", "paragraphs", "sentences", "words", "tokens")


def _pieces(text: str, toks: _Tokens, start: int, end: int, level: int) -> list[tuple[int, int]]:
    """[start, end) split at this level's boundaries, each piece whitespace-trimmed."""
    kind = _LEVELS[level]
    if kind == "headings":
        cuts = [start] + [m.start() for m in _HEADING.finditer(text, start, end)] + [end]
    elif kind == "paragraphs":
        found = _BLANK_LINES.finditer(text, start, end)
        cuts = [start] + [c for m in found for c in (m.start(), m.end())] + [end]
    elif kind == "sentences":
        return [(start + a, start + b) for a, b in sentences(text[start:end])]
    elif kind == "words":
        return [m.span() for m in _WORD.finditer(text, start, end)]
    else:  # one token per piece; merging packs them back to ``size``
        lo, hi = toks.first(start), toks.first(start) + toks.count(start, end)
        return toks.spans[lo:hi]
    spans = (_trim(text, a, b) for a, b in pairwise(cuts))
    return [(a, b) for a, b in spans if a < b]


def _recursive(
    text: str, toks: _Tokens, start: int, end: int, level: int, size: int
) -> list[tuple[int, int]]:
    """Ranges of at most ``size`` tokens covering the words of [start, end).

    The range is split at this level's boundaries; a piece that does not fit is split
    again at the next finer level; then neighbouring parts are packed greedily while they
    fit, so a heading stays with the paragraph below it. Whole sections are the one
    barrier: the parts of a section too big for one chunk are never packed with the
    sections around it.
    """
    a, b = _trim(text, start, end)
    if a >= b:
        return []
    if toks.count(a, b) <= size:
        return [(a, b)]
    out: list[tuple[int, int]] = []
    run: list[tuple[int, int]] = []  # parts waiting to be packed
    for p in _pieces(text, toks, a, b, level):
        if toks.count(*p) <= size:
            run.append(p)
            continue
        parts = _recursive(text, toks, p[0], p[1], level + 1, size)
        if _LEVELS[level] == "headings":
            out += _pack(toks, run, size) + parts
            run = []
        else:
            run += parts
    return out + _pack(toks, run, size)


def _pack(toks: _Tokens, pieces: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Neighbouring pieces merged while the merged range holds at most ``size`` tokens."""
    out: list[tuple[int, int]] = []
    for a, b in pieces:
        if out and toks.count(out[-1][0], b) <= size:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out
