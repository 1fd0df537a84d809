"""Our Unigram tokenizer: Viterbi is the best segmentation (brute force), forward-backward's
expected counts are the exact ones, EM raises the likelihood, and SentencePiece segments
with our model exactly as we do."""

from __future__ import annotations

import itertools
import math
import pydoc_data.topics
from collections import Counter

import pytest

from learn.lab.unigram import (
    SPACE,
    UnigramConfig,
    UnigramModel,
    as_sentencepiece,
    em_step,
    expected_counts,
    from_counts,
    lattices,
    log_likelihood,
    rare_words,
    seed_pieces,
    sentencepiece_pieces,
    train_sentencepiece,
    train_unigram,
    vocabulary_agreement,
    word_counts,
)

CORPUS = "\n\n".join(pydoc_data.topics.topics.values())[:40_000]
HELD_OUT = (
    "Unigram tokenizers segment internationalization, naïve café and 東京 differently; "
    "supercalifragilistic   words  with   extra spaces are fine."
)


def toy_model() -> UnigramModel:
    pieces = ["▁", "a", "b", "c", "ab", "bc", "abc", "▁a", "▁ab", "ca", "cab"]
    weights = [5, 9, 7, 6, 4, 3, 2, 3, 1, 2, 1]
    total = sum(weights)
    return UnigramModel(pieces, [math.log(w / total) for w in weights])


def segmentations(word: str) -> list[list[str]]:
    """Every way to cut ``word`` into non-empty parts (2^(n-1) of them)."""
    out = []
    for cuts in itertools.product([False, True], repeat=len(word) - 1):
        parts, start = [], 0
        for i, cut in enumerate(cuts, start=1):
            if cut:
                parts.append(word[start:i])
                start = i
        out.append([*parts, word[start:]])
    return out


def brute_force(model: UnigramModel, word: str) -> list[tuple[list[str], float]]:
    """Every segmentation the model allows (pieces, or unknown single characters) with its
    log-probability."""
    found = []
    for parts in segmentations(word):
        score = 0.0
        for part in parts:
            if part in model.index:
                score += model.scores[model.index[part]]
            elif len(part) == 1:
                score += model.unknown_score
            else:
                break
        else:
            found.append((parts, score))
    return found


@pytest.mark.parametrize("word", ["▁abc", "▁abcab", "▁cabca", "▁bcabx", "▁aaabbbccc", "▁cbacba"])
def test_viterbi_finds_the_most_probable_segmentation(word: str) -> None:
    model = toy_model()
    pieces, score = model.viterbi(word)
    best = max(s for _, s in brute_force(model, word))
    assert score == pytest.approx(best, abs=1e-12)
    assert "".join(pieces) == word
    assert sum(model.score(model.index.get(p, -1)) for p in pieces) == pytest.approx(best)


def test_forward_backward_gives_the_exact_expected_counts() -> None:
    model = toy_model()
    counts = Counter({"▁abcab": 3, "▁cab": 2, "▁bcx": 1})
    expected, total = expected_counts(model, lattices(model, counts))
    want = [0.0] * len(model.pieces)
    want_total = 0.0
    for word, n in counts.items():
        options = brute_force(model, word)
        z = math.log(sum(math.exp(s) for _, s in options))
        want_total += n * z
        for parts, s in options:
            for part in parts:
                if part in model.index:
                    want[model.index[part]] += n * math.exp(s - z)
    assert total == pytest.approx(want_total, rel=1e-12)
    assert expected == pytest.approx(want, rel=1e-9)


def test_em_never_lowers_the_likelihood() -> None:
    counts = word_counts(CORPUS[:5_000])
    config = UnigramConfig(vocab_size=400)
    model = from_counts(seed_pieces(counts, config))
    keep = set(model.pieces)  # keep every piece: the pure EM guarantee
    history = []
    for _ in range(4):
        model, before, _ = em_step(model, counts, keep)
        history.append(before)
    history.append(log_likelihood(model, counts))
    assert all(b >= a - 1e-6 for a, b in itertools.pairwise(history)), history
    assert history[-1] > history[0] + 1.0  # and it does improve


@pytest.fixture(scope="module")
def trained() -> UnigramModel:
    model, history = train_unigram(CORPUS, UnigramConfig(vocab_size=600))
    assert len(history) >= 4
    return model


def test_training_reaches_the_size_and_keeps_every_character(trained: UnigramModel) -> None:
    assert len(trained) == 600  # 256 byte pieces + 344 learned
    characters = {c for word in word_counts(CORPUS) for c in word}
    assert characters <= set(trained.pieces)
    assert all(len(p) <= 16 for p in trained.pieces)
    assert all(SPACE not in p[1:] for p in trained.pieces)  # ▁ only starts a piece
    assert "▁the" in trained.pieces


def test_sentencepiece_segments_our_model_as_we_do(trained: UnigramModel) -> None:
    reference = as_sentencepiece(trained)
    text = " ".join([HELD_OUT, *CORPUS.split()[:3_000:7]])
    ours = trained.tokens(text)
    assert reference.encode(text, out_type=str) == ours
    assert "<0xE6>" in ours  # 東 is spelled as bytes by both
    # ids too: theirs are ours + 1 (their <unk> is 0)
    assert [i - 1 for i in reference.encode(HELD_OUT)] == trained.encode(HELD_OUT)


def test_offsets_cover_the_text(trained: UnigramModel) -> None:
    pieces = trained.encode_with_offsets(HELD_OUT)
    spelled = "".join(
        HELD_OUT[p.start : p.end]
        for i, p in enumerate(pieces)
        if i == 0 or p[2:] != pieces[i - 1][2:]
    )
    assert " ".join(spelled.split()) == " ".join(HELD_OUT.split())


def test_sentencepiece_learns_a_similar_vocabulary(trained: UnigramModel) -> None:
    processor = train_sentencepiece(CORPUS, 600)
    theirs = sentencepiece_pieces(processor)
    agreement = vocabulary_agreement(trained.pieces, theirs)
    assert abs(len(theirs) - len(trained.pieces)) <= 2
    assert agreement["ours_in_theirs"] > 0.5, agreement


def test_rare_words_are_seen_once() -> None:
    words = rare_words(CORPUS, 4)
    assert len(words) == 4 and len(set(words)) == 4
    assert all(CORPUS.count(w) >= 1 and 9 <= len(w) <= 16 for w in words)
