"""A Unigram language-model tokenizer (Kudo, 2018), SentencePiece-style: trained by EM.

The model is a vocabulary of pieces, each with a probability; a text's segmentation is
the sequence of pieces whose product of probabilities is largest (found by Viterbi over
the lattice of every vocabulary piece that matches at every position). Training works
the other way round from BPE: it starts from far too many pieces and removes them.

1. Seed: every single character, plus the most frequent substrings of the words
   (frequency × length, as SentencePiece ranks them), up to ``seed_size`` pieces.
2. EM: the E-step runs forward-backward over each word's lattice to get each piece's
   *expected* count under the current probabilities; the M-step sets every probability
   to its expected count over the total. Each sweep cannot lower the corpus likelihood.
3. Prune: for each piece, how much the likelihood would drop without it (its count ×
   the log-probability it has minus that of the best segmentation of its own text
   without it); keep the ``shrink`` share that would cost most, and every single
   character. Repeat 2-3 until ``vocab_size`` is reached.

Text is split at whitespace; each word gets SentencePiece's ``▁`` (U+2581) in front, so
pieces never cross words and a space is part of the next token. Characters the model
does not know are spelled as UTF-8 byte pieces ``<0xE4>`` (SentencePiece's byte fallback),
so nothing is ever unknown: the 256 byte pieces count towards ``vocab_size`` as BPE's
256 bytes do.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from learn.lab.events import Emit, no_emit
from learn.lab.tokenize import Piece

SPACE = "▁"  # SentencePiece's visible space, U+2581
BYTES = [f"<0x{b:02X}>" for b in range(256)]
UNKNOWN_PENALTY = 10.0  # an unknown character scores this far below the rarest piece (SP's)
_WORD = re.compile(r"\S+")

Edge = tuple[int, int, int]  # (start, end, piece index): characters [start, end) of a word


@dataclass(frozen=True)
class UnigramConfig:
    """What to train. ``vocab_size`` counts the 256 byte pieces, as BPE's does."""

    vocab_size: int = 1000
    max_piece_length: int = 16  # characters
    seed_size: int = 20_000  # pieces in the starting vocabulary, characters included
    shrink: float = 0.75  # share of pieces kept by each pruning round
    em_iterations: int = 2  # EM sweeps before each pruning round

    def __post_init__(self) -> None:
        if self.vocab_size < 256 + 2:
            raise ValueError("vocab_size must leave room for the 256 byte pieces and some text")
        if not 0 < self.shrink < 1:
            raise ValueError("shrink must be between 0 and 1")


def word_counts(text: str) -> Counter[str]:
    """How often each whitespace-separated word occurs, written with its leading ``▁``."""
    return Counter(SPACE + word for word in _WORD.findall(text))


def _logaddexp(a: float, b: float) -> float:
    if a < b:
        a, b = b, a
    return a if b == -math.inf else a + math.log1p(math.exp(b - a))


# ---------------------------------------------------------------------------- the model


class UnigramModel:
    """Pieces and their log-probabilities; segments a word by Viterbi.

    ``pieces[i]`` has log-probability ``scores[i]``. A character that is not a piece can
    still be crossed, at ``unknown_score``; :meth:`encode` spells it as byte pieces.
    """

    def __init__(self, pieces: list[str], scores: list[float]) -> None:
        self.pieces = pieces
        self.scores = scores
        self.index = {piece: i for i, piece in enumerate(pieces)}
        self.max_length = max((len(p) for p in pieces), default=1)
        self.unknown_score = min(scores, default=0.0) - UNKNOWN_PENALTY
        self._cache: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self.pieces) + len(BYTES)

    def edges(self, word: str) -> list[Edge]:
        """Every piece that matches somewhere in ``word``; an unknown character is an edge
        with index -1. Sorted by end position (what the forward pass needs)."""
        out = []
        for end in range(1, len(word) + 1):
            for start in range(max(0, end - self.max_length), end):
                i = self.index.get(word[start:end])
                if i is not None:
                    out.append((start, end, i))
                elif end - start == 1:
                    out.append((start, end, -1))
        return out

    def score(self, i: int) -> float:
        return self.unknown_score if i < 0 else self.scores[i]

    def viterbi(self, word: str, *, without: int | None = None) -> tuple[list[str], float]:
        """The most probable segmentation of ``word`` and its log-probability.

        ``without``: a piece index to leave out (what pruning asks: the best split of a
        piece's own text without it). O(len(word) × max_piece_length).
        """
        n = len(word)
        best = [-math.inf] * (n + 1)  # best[j]: log-prob of the best split of word[:j]
        back: list[tuple[int, int]] = [(0, -1)] * (n + 1)  # (start, piece) of its last piece
        best[0] = 0.0
        for start, end, i in self.edges(word):
            if i == without:
                continue
            candidate = best[start] + self.score(i)
            if candidate > best[end]:
                best[end], back[end] = candidate, (start, i)
        pieces, end = [], n
        while end > 0:
            start, _ = back[end]
            pieces.append(word[start:end])
            end = start
        return pieces[::-1], best[n]

    def segment(self, word: str) -> list[str]:
        """Viterbi pieces of one ``▁word`` (remembered: words repeat)."""
        found = self._cache.get(word)
        if found is None:
            found = self._cache[word] = self.viterbi(word)[0]
            if len(self._cache) > 100_000:
                self._cache.clear()
        return found

    def _ids(self, piece: str) -> Iterator[tuple[int, str]]:
        i = self.index.get(piece)
        if i is not None:
            yield len(BYTES) + i, piece
        else:  # an unknown character: its UTF-8 bytes
            for b in piece.encode("utf-8"):
                yield b, BYTES[b]

    def encode_with_offsets(self, text: str) -> list[Piece]:
        """Tokens of ``text`` with the characters each covers. Ids: 0-255 the byte pieces,
        then the vocabulary. A word's ``▁`` covers the whitespace before it (nothing at the
        start of the text); the byte pieces of one character share its span."""
        out = []
        for found in _WORD.finditer(text):
            s = found.start()
            position = 0  # in "▁" + word; index k > 0 is text[s + k - 1]
            for piece in self.segment(SPACE + found.group()):
                begin = s + position - 1 if position else max(s - 1, 0)
                if position == 0 and s > 0 and not text[s - 1].isspace():
                    begin = s
                end = s + position + len(piece) - 1
                for token_id, token in self._ids(piece):
                    out.append(Piece(token_id, token, begin, end))
                position += len(piece)
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        return [p.id for p in self.encode_with_offsets(text)]

    def tokens(self, text: str) -> list[str]:
        """Tokens of ``text`` as strings (``▁``-prefixed pieces, ``<0xE4>`` bytes)."""
        return [p.token for p in self.encode_with_offsets(text)]

    def to_dict(self) -> dict[str, Any]:
        return {"format": "forward-pass-unigram/1", "pieces": self.pieces, "scores": self.scores}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnigramModel:
        return cls(list(data["pieces"]), [float(s) for s in data["scores"]])


# ---------------------------------------------------------------------------- training


def seed_pieces(counts: Counter[str], config: UnigramConfig) -> dict[str, float]:
    """Every character, then the substrings seen at least twice, ranked by count × length.

    Returns piece → count. A ``▁`` only ever starts a piece, as it only starts a word.
    """
    chars: Counter[str] = Counter()
    substrings: Counter[str] = Counter()
    for word, n in counts.items():
        for start in range(len(word)):
            chars[word[start]] += n
            for end in range(start + 2, min(len(word), start + config.max_piece_length) + 1):
                substrings[word[start:end]] += n
    ranked = sorted(
        (s for s, n in substrings.items() if n >= 2), key=lambda s: (-substrings[s] * len(s), s)
    )
    seed = {c: float(n) for c, n in chars.items()}
    for piece in ranked[: max(0, config.seed_size - len(seed))]:
        seed[piece] = float(substrings[piece])
    return seed


def from_counts(counts: dict[str, float]) -> UnigramModel:
    """A model whose probabilities are ``counts`` over their total, pieces by count."""
    total = sum(counts.values())
    ordered = sorted(counts, key=lambda p: (-counts[p], p))
    return UnigramModel(ordered, [math.log(counts[p] / total) for p in ordered])


def lattices(model: UnigramModel, counts: Counter[str]) -> list[tuple[int, int, list[Edge]]]:
    """``(count, length, edges)`` for each distinct word, edges sorted by end position."""
    return [(n, len(word), model.edges(word)) for word, n in counts.items()]


def expected_counts(
    model: UnigramModel, words: list[tuple[int, int, list[Edge]]]
) -> tuple[list[float], float]:
    """E-step: each piece's expected count over all segmentations (forward-backward), and
    the corpus log-likelihood ``Σ count(word) × log P(word)`` under ``model`` (nats)."""
    expected = [0.0] * len(model.pieces)
    total = 0.0
    for n, length, edges in words:
        alpha = [-math.inf] * (length + 1)  # alpha[j]: log P(word[:j]), all splits summed
        beta = [-math.inf] * (length + 1)  # beta[j]: log P(word[j:])
        alpha[0] = beta[length] = 0.0
        for start, end, i in edges:  # by end: alpha[start] is complete when used
            alpha[end] = _logaddexp(alpha[end], alpha[start] + model.score(i))
        for start, end, i in reversed(edges):  # edges leaving `end` all end later: done
            beta[start] = _logaddexp(beta[start], model.score(i) + beta[end])
        z = alpha[length]
        total += n * z
        for start, end, i in edges:
            if i >= 0:  # P(this piece here | word) = alpha · p · beta / P(word)
                expected[i] += n * math.exp(alpha[start] + model.score(i) + beta[end] - z)
    return expected, total


def log_likelihood(model: UnigramModel, counts: Counter[str]) -> float:
    """``Σ count(word) × log P(word)``, P summed over every segmentation (nats)."""
    return expected_counts(model, lattices(model, counts))[1]


def em_step(
    model: UnigramModel, counts: Counter[str], keep: set[str], *, at_least: int = 0
) -> tuple[UnigramModel, float, dict[str, float]]:
    """One EM sweep: expected counts (E), then probabilities ∝ counts (M). Pieces expected
    fewer than 0.5 times are dropped (SentencePiece's rule), except those in ``keep`` and
    the most used ones needed to leave ``at_least`` pieces.
    Returns the new model, the log-likelihood under the old one, and the counts kept."""
    expected, total = expected_counts(model, lattices(model, counts))
    ranked = sorted(zip(model.pieces, expected, strict=True), key=lambda pc: -pc[1])
    kept = {
        p: max(c, 1e-3)
        for rank, (p, c) in enumerate(ranked)
        if c >= 0.5 or p in keep or rank < at_least
    }
    return from_counts(kept), total, kept


def prune(
    model: UnigramModel, counts: dict[str, float], size: int, keep: set[str]
) -> dict[str, float]:
    """Keep the ``size`` pieces whose removal would cost the corpus most, and all of ``keep``.

    A piece's cost: its expected count × (its log-prob − the log-prob of the best split of
    its own text without it). Returns the kept pieces with their counts.
    """
    loss = {}
    for i, piece in enumerate(model.pieces):
        if piece in keep:
            continue
        _, alternative = model.viterbi(piece, without=i)
        loss[piece] = counts[piece] * (model.scores[i] - alternative)
    room = max(0, size - len(keep))
    chosen = sorted(loss, key=lambda p: (-loss[p], p))[:room]
    return {p: counts[p] for p in [*keep, *chosen] if p in counts}


def train_unigram(
    text: str, config: UnigramConfig, *, emit: Emit = no_emit
) -> tuple[UnigramModel, list[float]]:
    """Train on ``text``: seed, then EM and pruning until ``config.vocab_size`` is reached.

    Returns the model and the corpus log-likelihood (nats) before each EM sweep. Emits
    ``progress`` (pct) and ``partial`` with ``{round, pieces, log_likelihood}`` per sweep.
    """
    counts = word_counts(text)
    if not counts:
        raise ValueError("the text has no words to train on")
    seeded = seed_pieces(counts, config)
    target = config.vocab_size - len(BYTES)
    # characters are never pruned; when they would fill more than 3/4 of the vocabulary,
    # the rarest are left to byte fallback (as SentencePiece's character_coverage does)
    by_count = sorted((p for p in seeded if len(p) == 1), key=lambda c: (-seeded[c], c))
    keep = set(by_count[: max(1, target * 3 // 4)])
    seeded = {p: c for p, c in seeded.items() if len(p) > 1 or p in keep}
    model = from_counts(seeded)
    history: list[float] = []
    start_size = len(model.pieces)
    rounds = 0
    while True:
        for _ in range(config.em_iterations):
            model, likelihood, kept = em_step(model, counts, keep, at_least=target)
            history.append(likelihood)
            emit("partial", round=rounds, pieces=len(model.pieces), log_likelihood=likelihood)
        if len(model.pieces) <= target:
            break
        size = max(target, int(len(model.pieces) * config.shrink))
        model = from_counts(prune(model, kept, size, keep))
        rounds += 1
        done = math.log(start_size / len(model.pieces)) / math.log(max(start_size / target, 1.01))
        emit("progress", pct=min(99.0, 100 * done), message=f"{len(model.pieces):,} pieces")
    emit("progress", pct=100.0, message=f"{len(model.pieces):,} pieces")
    # scores as a SentencePiece model file holds them (float32), so both decode alike
    scores = np.asarray(model.scores, dtype=np.float32).tolist()
    return UnigramModel(model.pieces, scores), history


# ---------------------------------------------------------------------------- the reference


def sentencepiece_options(vocab_size: int, config: UnigramConfig | None = None) -> dict[str, Any]:
    """SentencePiece trainer options that ask it for what :func:`train_unigram` does: split
    at whitespace only, no normalisation, byte fallback, no <s> or </s>."""
    config = config or UnigramConfig(vocab_size)
    return {
        "model_type": "unigram",
        "vocab_size": vocab_size,
        "byte_fallback": True,
        "character_coverage": 1.0,
        "normalization_rule_name": "identity",
        "split_by_unicode_script": False,
        "split_by_number": False,
        "split_digits": False,
        "max_sentencepiece_length": config.max_piece_length,
        "shrinking_factor": config.shrink,
        "num_sub_iterations": config.em_iterations,
        "seed_sentencepiece_size": config.seed_size,
        "bos_id": -1,
        "eos_id": -1,
        "unk_id": 0,
        "hard_vocab_limit": False,
        "num_threads": 1,
        "minloglevel": 2,
    }


def train_sentencepiece(text: str, vocab_size: int, config: UnigramConfig | None = None) -> Any:
    """SentencePiece's own Unigram trainer on ``text`` (lines with single spaces), as a
    loaded ``SentencePieceProcessor``. Its vocabulary: ``<unk>``, 256 bytes, then pieces."""
    import io

    import sentencepiece as spm

    lines = [" ".join(line.split()) for line in text.splitlines()]
    lines = [line for line in lines if line]
    longest = max((len(line.encode("utf-8")) for line in lines), default=0)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        # it skips longer lines (default 4,192 bytes): give it every one, as ours sees them
        max_sentence_length=max(4_192, longest + 1),
        **sentencepiece_options(vocab_size, config),
    )
    return spm.SentencePieceProcessor(model_proto=model.getvalue())


def sentencepiece_pieces(processor: Any) -> list[str]:
    """The ordinary pieces of a SentencePiece model (no ``<unk>``, no byte pieces)."""
    return [
        processor.id_to_piece(i)
        for i in range(processor.get_piece_size())
        if not (processor.is_unknown(i) or processor.is_byte(i) or processor.is_control(i))
    ]


def as_sentencepiece(model: UnigramModel) -> Any:
    """Our pieces and scores loaded into SentencePiece, so its Viterbi can be compared with
    ours on the very same model."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id, proto.trainer_spec.eos_id = 0, -1, -1
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = True
    proto.normalizer_spec.escape_whitespaces = True
    kind = pb.ModelProto.SentencePiece
    proto.pieces.add(piece="<unk>", score=0.0, type=kind.UNKNOWN)
    for byte in BYTES:
        proto.pieces.add(piece=byte, score=0.0, type=kind.BYTE)
    for piece, score in zip(model.pieces, model.scores, strict=True):
        proto.pieces.add(piece=piece, score=score, type=kind.NORMAL)
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


# ---------------------------------------------------------------------------- comparing

# One sentence, the same meaning in ten languages and six scripts (our translations): what
# a tokenizer charges for each is a measure of how fairly it treats their speakers.
SENTENCES: dict[str, str] = {
    "English": "The weather is nice today, so we are going for a walk in the park.",
    "German": "Das Wetter ist heute schön, also gehen wir im Park spazieren.",
    "French": "Il fait beau aujourd'hui, alors nous allons nous promener dans le parc.",
    "Spanish": "Hoy hace buen tiempo, así que vamos a dar un paseo por el parque.",
    "Russian": "Сегодня хорошая погода, поэтому мы идём гулять в парк.",
    "Greek": "Σήμερα ο καιρός είναι ωραίος, οπότε πάμε για βόλτα στο πάρκο.",
    "Hindi": "आज मौसम अच्छा है, इसलिए हम पार्क में टहलने जा रहे हैं।",
    "Arabic": "الطقس جميل اليوم، لذلك سنذهب في نزهة في الحديقة.",
    "Chinese": "今天天气很好，所以我们去公园散步。",
    "Japanese": "今日は天気がいいので、公園に散歩に行きます。",
}


def rare_words(text: str, count: int = 5) -> list[str]:
    """``count`` words of ``text`` seen once, 9-16 letters long, spread over the alphabet
    (deterministic): the words a vocabulary had no room for."""
    seen = Counter(w.strip(".,;:!?()[]{}'\"`") for w in text.split())
    once = sorted(w for w, n in seen.items() if n == 1 and w.isalpha() and 9 <= len(w) <= 16)
    if len(once) <= count:
        return once
    return [once[(2 * k + 1) * len(once) // (2 * count)] for k in range(count)]


def vocabulary_agreement(ours: list[str], theirs: list[str]) -> dict[str, float]:
    """How much two vocabularies share: of ours in theirs, of theirs in ours, and the
    Jaccard index (shared over either)."""
    a, b = set(ours), set(theirs)
    shared = len(a & b)
    return {
        "shared": shared,
        "ours_in_theirs": shared / len(a) if a else 0.0,
        "theirs_in_ours": shared / len(b) if b else 0.0,
        "jaccard": shared / len(a | b) if a | b else 0.0,
    }
