"""Our BPE trainer against Hugging Face tokenizers' BpeTrainer and the naive trainer."""

from __future__ import annotations

import itertools
import json
import pydoc_data.topics
import random
from typing import get_args

import pytest
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

from learn.lab.bpe import PATTERNS, BPEConfig, BPETokenizer, to_byte_chars
from learn.lab.bpe_hf import to_hf_json
from learn.lab.bpe_train import naive_train, step_through, train_bpe
from learn.lab.facts import PRETOKENIZER_NAMES, Pretokenizer

CLASSIC = "low " * 5 + "lowest " * 2 + "newer " * 6 + "wider " * 3 + "new " * 2
DOCS = "\n\n".join(pydoc_data.topics.topics.values())


def _ties_corpus() -> str:
    """Words drawn so that many pairs have equal counts: the tie rule decides the order."""
    rng = random.Random(7)
    syllables = ["ab", "ba", "cd", "dc", "ef", "fe", "xy", "yx"]
    return " ".join("".join(rng.choice(syllables) for _ in range(3)) for _ in range(400))


UNICODE = "naïve café résumé 😀😃 日本語のテキスト ñandú Ωmega — “quotes” " * 20
CORPORA = {"classic": CLASSIC, "ties": _ties_corpus(), "unicode": UNICODE, "docs": DOCS[:60_000]}


def hf_train(text: str, config: BPEConfig) -> Tokenizer:
    """HF's trainer with the same pre-tokenization, alphabet and vocabulary size."""
    tokenizer = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(
        add_prefix_space=False, use_regex=config.pretokenizer == "gpt2"
    )
    if config.pretokenizer == "gpt2":
        tokenizer.pre_tokenizer = byte_level
    else:
        split = pre_tokenizers.Split(Regex(PATTERNS[config.pretokenizer]), behavior="isolated")
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([split, byte_level])
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        special_tokens=list(config.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([text], trainer)
    return tokenizer


def merges_of(tokenizer: BPETokenizer) -> list[list[str]]:
    return [[tokenizer.vocab[a], tokenizer.vocab[b]] for a, b in tokenizer.merges]


@pytest.mark.parametrize("pretokenizer", ["gpt2", "gpt4", "whitespace"])
@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_it_learns_the_merges_hf_learns_in_the_same_order(corpus: str, pretokenizer: str):
    config = BPEConfig(vocab_size=600, pretokenizer=pretokenizer, special_tokens=("<|eot|>",))
    text = CORPORA[corpus]
    ours = train_bpe(text, config)
    theirs = hf_train(text, config)
    assert merges_of(ours) == json.loads(theirs.to_str())["model"]["merges"]
    assert ours.ids == theirs.get_vocab()


def test_ties_are_broken_by_the_smaller_pair_of_ids():
    ours = train_bpe(CORPORA["ties"], BPEConfig(vocab_size=300, pretokenizer="whitespace"))
    counts = ours.counts
    tied = [i for i in range(1, len(counts)) if counts[i] == counts[i - 1]]
    assert tied, "this corpus is meant to produce equal counts"
    assert merges_of(ours) == [list(m) for m in naive_train(CORPORA["ties"], ours.config)]


@pytest.mark.parametrize("corpus", ["classic", "ties", "unicode"])
def test_the_incremental_trainer_equals_the_naive_one(corpus: str):
    config = BPEConfig(vocab_size=400, pretokenizer="gpt2")
    naive = naive_train(CORPORA[corpus], config)
    assert merges_of(train_bpe(CORPORA[corpus], config)) == [list(m) for m in naive]


def test_there_is_a_pattern_for_every_pretokenizer_the_forms_offer():
    assert set(PATTERNS) == set(PRETOKENIZER_NAMES) == set(get_args(Pretokenizer))


def test_the_classic_example_merges_e_and_r_first():
    tokenizer = train_bpe(CLASSIC, BPEConfig(vocab_size=256 + 10, pretokenizer="whitespace"))
    # 'er' is in newer (6) and wider (3); 'lo' and 'ow' only in low (5) and lowest (2)
    assert merges_of(tokenizer)[0] == ["e", "r"] and tokenizer.counts[0] == 9
    assert [tokenizer.vocab[i] for i in tokenizer.encode("newer")] == ["newer"]


def test_vocabulary_size_and_counts_are_as_asked():
    tokenizer = train_bpe(DOCS[:30_000], BPEConfig(vocab_size=500, special_tokens=("<s>", "</s>")))
    assert len(tokenizer) == 500
    assert tokenizer.vocab[:2] == ["<s>", "</s>"]
    assert len(tokenizer.counts) == 500 - 258
    # a merge never creates a pair more frequent than itself: counts fall with rank
    assert tokenizer.counts == sorted(tokenizer.counts, reverse=True)


def test_a_corpus_with_too_few_pairs_stops_early():
    tokenizer = train_bpe("ab ab", BPEConfig(vocab_size=1000, pretokenizer="whitespace"))
    assert merges_of(tokenizer) == [["a", "b"]]


@pytest.fixture(scope="module")
def trained() -> BPETokenizer:
    return train_bpe(DOCS[:80_000], BPEConfig(1500, "gpt2", ("<|endoftext|>", "<|pad|>")))


ROUND_TRIP = [
    "",
    "hello world",
    "  leading and trailing spaces  \n\n\ttabs",
    "emoji 👩‍👩‍👧‍👦 and flags 🇫🇷, skin tones 👍🏽",
    "mixed scripts: Ελληνικά, русский, العربية, हिन्दी, 中文, 한국어",
    "combining: e\u0301 a\u0308, zero width\u200bjoiner, BOM \ufeff, replacement \ufffd",
    "control bytes \x00\x01\x7f and the last code point \U0010ffff",
    "<|endoftext|>between<|pad|><|endoftext|>",
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_encode_then_decode_gives_back_the_text(trained: BPETokenizer, text: str):
    assert trained.decode(trained.encode(text)) == text


def test_random_unicode_round_trips(trained: BPETokenizer):
    rng = random.Random(3)
    for _ in range(50):
        chars = [chr(rng.choice([rng.randrange(32, 0x2FF), rng.randrange(0x1F300, 0x1FAFF)]))]
        text = "".join(chars * rng.randrange(1, 5) + [" "] + chars)
        assert trained.decode(trained.encode(text)) == text


def test_special_tokens_are_never_split(trained: BPETokenizer):
    eot = trained.ids["<|endoftext|>"]
    ids = trained.encode("one<|endoftext|>two <|endoftext|><|endoftext|>")
    assert ids.count(eot) == 3
    assert trained.encode("<|endoftext|>") == [eot]
    assert trained.encode("<|endoftext") != [eot]  # a prefix is plain text


def test_offsets_cover_the_text(trained: BPETokenizer):
    text = "Tokens 🙂 with offsets, café <|pad|> done"
    tokens = trained.encode_with_offsets(text)
    assert [t.id for t in tokens] == trained.encode(text)
    pad = next(t for t in tokens if t.token == "<|pad|>")
    assert text[pad.start : pad.end] == "<|pad|>"
    covered = sorted({(t.start, t.end) for t in tokens})
    assert covered[0][0] == 0 and covered[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))


def test_partial_bytes_decode_with_replacement(trained: BPETokenizer):
    assert "🙂" not in DOCS[:80_000]  # never seen in training: no merge joins its 4 bytes
    ids = trained.encode("🙂")
    assert ids == [trained.ids[c] for c in to_byte_chars("🙂")]  # one token per byte
    assert trained.decode_bytes(ids) == "🙂".encode()
    for cut in (1, 2, 3):  # an incomplete UTF-8 sequence decodes to one replacement char
        assert trained.decode_bytes(ids[:cut]) == "🙂".encode()[:cut]
        assert trained.decode(ids[:cut]) == "\ufffd"
    assert trained.decode(ids[:2] + trained.encode("ok")) == "\ufffdok"


@pytest.mark.parametrize("pretokenizer", ["gpt2", "gpt4", "whitespace"])
def test_the_hf_export_loads_and_encodes_held_out_text_to_our_ids(tmp_path, pretokenizer: str):
    config = BPEConfig(1200, pretokenizer, ("<|endoftext|>",))
    ours = train_bpe(DOCS[:60_000], config)
    path = tmp_path / "tokenizer.json"
    path.write_text(to_hf_json(ours), encoding="utf-8")
    theirs = Tokenizer.from_file(str(path))
    held_out = DOCS[-20_000:] + " 🙂 naïve <|endoftext|> done" + ROUND_TRIP[5]
    assert theirs.encode(held_out).ids == ours.encode(held_out)
    assert theirs.decode(ours.encode(held_out), skip_special_tokens=False) == held_out


def test_to_dict_round_trips(trained: BPETokenizer):
    again = BPETokenizer.from_dict(json.loads(json.dumps(trained.to_dict())))
    assert again.vocab == trained.vocab and again.merges == trained.merges
    assert again.encode(DOCS[:5000]) == trained.encode(DOCS[:5000])


def test_training_streams_merges_and_progress():
    events = []
    train_bpe(DOCS[:20_000], BPEConfig(400), emit=lambda kind, **d: events.append((kind, d)))
    merges = [m for kind, d in events if kind == "partial" for m in d["merges"]]
    assert [m["rank"] for m in merges] == list(range(1, 400 - 256 + 1))
    assert [d["pct"] for kind, d in events if kind == "progress"][-1] == 100


def test_step_through_shows_each_merge_and_the_corpus_after_it():
    steps = step_through(CLASSIC, 4)
    assert [s["rank"] for s in steps] == [1, 2, 3, 4]
    first = steps[0]
    assert first["pair"] == ["e", "r"] and first["count"] == 9
    assert first["top_pairs"][0] == {"pair": ["e", "r"], "count": 9}
    newer = next(w for w in first["words"] if "".join(w["symbols"]) == "newer")
    assert newer == {"symbols": ["n", "e", "w", "er"], "count": 6}
    naive = naive_train(CLASSIC, BPEConfig(260, "whitespace"))
    assert [s["token"] for s in steps] == [left + right for left, right in naive]


def test_step_through_stops_when_no_pair_repeats():
    assert step_through("abc", 5) == []
