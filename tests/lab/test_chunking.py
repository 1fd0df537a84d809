"""Chunkers and the sentence splitter, on a regex word tokenizer and on MiniLM's WordPiece."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest

from learn.lab.chunking import CHUNKERS, Span, chunk, sentences
from learn.lab.models import minilm_tokenizer_file
from learn.lab.tokenize import hf_tokenizer


def words(text: str) -> list[tuple[int, int]]:
    """A simple tokenizer: each word and each punctuation mark is one token."""
    return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]


DOC = """# Retrieval

Retrieval finds the passages that answer a question. It ranks them by similarity, e.g. \
cosine similarity between embeddings. Dr. Smith measured 3.14 points on the benchmark!

## Chunking

Documents are cut into chunks before they are embedded. Small chunks give precise \
matches? Large chunks keep more context. 42 is a number that starts a sentence.

## Fusion

Keyword search and vector search can be fused. Reciprocal rank fusion uses ranks only.
"""


def texts(text: str, spans: list[tuple[int, int]]) -> list[str]:
    return [text[a:b] for a, b in spans]


def check_spans(text: str, spans: list[Span]) -> None:
    """What every chunker promises: offsets into the source, in order, token counts right."""
    for s in spans:
        assert s.text == text[s.start : s.end]
        assert s.text == s.text.strip() and s.text
        assert s.tokens == len(words(s.text))
        assert s.context_start <= s.start < s.end <= s.context_end
    assert [s.start for s in spans] == sorted(s.start for s in spans)


# ---------------------------------------------------------------------------- sentences


def test_sentences_split_at_end_marks_before_capitals_and_digits() -> None:
    got = texts(DOC, sentences(DOC))
    assert got == [
        "# Retrieval",
        "Retrieval finds the passages that answer a question.",
        "It ranks them by similarity, e.g. cosine similarity between embeddings.",
        "Dr. Smith measured 3.14 points on the benchmark!",
        "## Chunking",
        "Documents are cut into chunks before they are embedded.",
        "Small chunks give precise matches?",
        "Large chunks keep more context.",
        "42 is a number that starts a sentence.",
        "## Fusion",
        "Keyword search and vector search can be fused.",
        "Reciprocal rank fusion uses ranks only.",
    ]


def test_sentences_do_not_split_before_lower_case_or_after_initials() -> None:
    text = "It costs approx. five dollars. see the note. J. R. R. Tolkien wrote it."
    assert texts(text, sentences(text)) == [
        "It costs approx. five dollars. see the note.",
        "J. R. R. Tolkien wrote it.",
    ]


def test_sentences_keep_closing_quotes_and_end_at_single_newlines() -> None:
    text = 'She said "Stop." Then she left.\nA list item\n\n  Last one  '
    assert texts(text, sentences(text)) == [
        'She said "Stop."',
        "Then she left.",
        "A list item",
        "Last one",
    ]
    assert sentences("   \n\n ") == []


# ---------------------------------------------------------------------------- fixed


@pytest.mark.parametrize(("size", "overlap"), [(8, 0), (8, 3), (10, 9), (16, 4)])
def test_fixed_windows_advance_by_size_minus_overlap(size: int, overlap: int) -> None:
    toks = words(DOC)
    spans = chunk(DOC, "fixed", words, size=size, overlap=overlap)
    check_spans(DOC, spans)
    # reference: the windows by token index, written out directly
    starts = list(range(0, len(toks), size - overlap))
    starts = starts[: next(i for i, s in enumerate(starts) if s + size >= len(toks)) + 1]
    want = [(toks[s][0], toks[min(s + size, len(toks)) - 1][1]) for s in starts]
    assert [(s.start, s.end) for s in spans] == want
    assert all(s.tokens == size for s in spans[:-1])
    assert spans[-1].end == toks[-1][1]
    for a, b in pairwise(spans):  # neighbours share `overlap` tokens
        assert len([t for t in toks if b.start <= t[0] and t[1] <= a.end]) == overlap


def test_fixed_on_text_shorter_than_a_window_is_one_chunk() -> None:
    spans = chunk("Just a few words.", "fixed", words, size=16, overlap=4)
    assert [(s.text, s.tokens) for s in spans] == [("Just a few words.", 5)]
    assert chunk("", "fixed", words) == []


# ---------------------------------------------------------------------------- recursive


def test_recursive_keeps_sections_whole_when_they_fit() -> None:
    spans = chunk(DOC, "recursive", words, size=40, overlap=0)
    check_spans(DOC, spans)
    assert [s.text.split("\n")[0] for s in spans] == ["# Retrieval", "## Chunking", "## Fusion"]
    assert all(s.tokens <= 40 for s in spans)


def test_recursive_falls_back_to_sentences_and_packs_them() -> None:
    size = 16
    spans = chunk(DOC, "recursive", words, size=size, overlap=0)
    check_spans(DOC, spans)
    assert all(s.tokens <= size for s in spans)
    sents = texts(DOC, sentences(DOC))
    # every chunk is a run of whole sentences, and together they cover every sentence once
    joined = [s for sp in spans for s in texts(sp.text, sentences(sp.text))]
    assert joined == sents
    # greedy packing, worked by hand: a heading joins the text below it while that fits
    assert [s.tokens for s in spans] == [11, 15, 12, 3, 16, 15, 3, 16]
    assert spans[0].text == "# Retrieval\n\nRetrieval finds the passages that answer a question."
    assert spans[3].text == "## Chunking"  # + "Documents ... matches?" would be 19 tokens


def test_recursive_splits_a_giant_word_by_tokens() -> None:
    text = "intro words here.\n\n" + "-".join(["part"] * 20)  # one word of 39 tokens
    spans = chunk(text, "recursive", words, size=10, overlap=0)
    check_spans(text, spans)
    assert [s.tokens for s in spans] == [4, 10, 10, 10, 9]
    assert "".join(s.text for s in spans[1:]) == text.split("\n\n")[1]


def test_recursive_counts_match_minilm_wordpiece() -> None:
    """With the real tokenizer, re-encoding each chunk gives the count the chunker used."""
    minilm = hf_tokenizer(minilm_tokenizer_file(), "MiniLM", "WordPiece")

    def spans_of(text: str) -> list[tuple[int, int]]:  # as the workers cut documents
        return [(p.start, p.end) for p in minilm.pieces(text)]

    long_doc = DOC * 6  # longer than MiniLM's 128-token truncation, which must be off
    assert len(spans_of(long_doc)) > 400
    out = chunk(long_doc, "recursive", spans_of, size=48, overlap=0)
    assert len(out) > 6
    for s in out:
        assert s.text == long_doc[s.start : s.end]
        assert s.tokens == len(spans_of(s.text)) <= 48


# ---------------------------------------------------------------------------- sentence


@pytest.mark.parametrize("window", [0, 1, 2])
def test_sentence_chunks_carry_a_window_of_neighbours(window: int) -> None:
    sents = sentences(DOC)
    spans = chunk(DOC, "sentence", words, window=window)
    check_spans(DOC, spans)
    assert [(s.start, s.end) for s in spans] == sents
    for i, s in enumerate(spans):
        assert s.context_start == sents[max(0, i - window)][0]
        assert s.context_end == sents[min(len(sents) - 1, i + window)][1]
    if window == 0:
        assert all((s.context_start, s.context_end) == (s.start, s.end) for s in spans)


# ---------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 7}, "at least 8 tokens"),
        ({"size": 16, "overlap": 16}, "less than the chunk size"),
        ({"overlap": -1}, "at least 0"),
        ({"window": 6}, "between 0 and 5"),
        ({"chunker": "semantic"}, "Unknown chunker"),
    ],
)
def test_it_rejects_bad_settings_with_a_clear_message(kwargs: dict, message: str) -> None:
    chunker = kwargs.pop("chunker", "fixed")
    with pytest.raises(ValueError, match=message):
        chunk(DOC, chunker, words, **kwargs)


def test_every_chunker_is_listed() -> None:
    for name in CHUNKERS:
        assert chunk(DOC, name, words, size=32, overlap=8)
