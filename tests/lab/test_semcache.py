"""The semantic cache's second look (``semcache_verify``) and the sweep with it: hand-made
pairs for each thing the check must catch or let pass, MiniLM's cosine on a few of them,
and the whole labelled pair set."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from learn.lab.rag_data import cache_pairs
from learn.lab.semcache import default_threshold, halves, threshold_sweep
from learn.lab.semcache_verify import numbers, verify, words

# (stored, asked, the word in the reason): different questions the check must refuse.
REFUSED = [
    # roles swapped
    ("Can cats eat dog food?", "Can dogs eat cat food?", "trade places"),
    ("Does the query attend to the key?", "Does the key attend to the query?", "trade places"),
    ("How do I convert miles to kilometres?", "How do I convert kilometres to miles?", "swap"),
    ("Is HNSW faster than IVF?", "Is IVF faster than HNSW?", "hnsw"),
    ("Train a student on a teacher", "Train a teacher on a student", "swap"),
    # numbers changed
    ("Train a BPE tokenizer with vocabulary size 512", "… with vocabulary size 50,000", "512"),
    ("How many bytes per weight in int4?", "How many bytes per weight in int8?", "numbers"),
    ("Book a table for two at 7 pm", "Book a table for four at 7 pm", "numbers"),
    ("What is the first merge in BPE training?", "What is the last merge?", "numbers"),
    # negation
    ("Why does PCA preserve distances?", "Why doesn't PCA preserve distances?", "negated"),
    ("Which questions should be cached?", "Which questions should never be cached?", "never"),
    ("What can quantization fix?", "What cannot quantization fix?", "negated"),
    ("Is it safe to eat raw eggs?", "Is it unsafe to eat raw eggs?", "unsafe"),
    # one term replaced, or an opposite
    ("What does top-k sampling do?", "What does top-p sampling do?", "replaced"),
    ("Where is the nearest train station?", "Where is the nearest bus station?", "replaced"),
    ("How do I raise the cache threshold?", "How do I lower the cache threshold?", "opposites"),
    ("What is the input price per token?", "What is the output price per token?", "opposites"),
]

# Paraphrases the check must let through (it only ever refuses; cosine decides the rest).
PASSED = [
    ("What is RLHF?", "Explain reinforcement learning from human feedback."),
    ("What is retrieval-augmented generation?", "Explain RAG to me."),
    ("How does byte-pair encoding work?", "Can you walk me through the BPE algorithm?"),
    ("What is stored in a KV cache?", "What does the KV cache store?"),  # passive / active
    ("Which is faster, HNSW or IVF?", "Which is faster, IVF or HNSW?"),  # a list, reordered
    ("Is it going to rain in London today?", "Will London get rain today?"),
    ("What does layer 1 of a transformer learn?", "What does the first layer learn?"),
    ("Why doesn't my cache ever hit?", "Why does my cache never hit?"),  # both negated
    ("How do I visualise attention?", "How do I visualize attention?"),  # spelling
    ("How long to embed 1,000 chunks?", "How long to embed 1000 chunks?"),
    (
        "Why is attention softmax scaled by sqrt d?",
        "Why is the attention softmax scaled by sqrt d?",
    ),
]


@pytest.mark.parametrize(("stored", "asked", "why"), REFUSED)
def test_the_check_refuses_a_different_question_and_says_why(
    stored: str, asked: str, why: str
) -> None:
    verdict = verify(stored, asked)
    assert not verdict.same and verdict.reasons
    assert any(why in reason for reason in verdict.reasons), verdict.reasons
    assert not verify(asked, stored).same  # the check is symmetric


@pytest.mark.parametrize(("stored", "asked"), PASSED)
def test_the_check_lets_a_paraphrase_through(stored: str, asked: str) -> None:
    assert verify(stored, asked).same and verify(stored, asked).reasons == ()
    assert verify(asked, stored).same


def test_words_split_contractions_numbers_and_units() -> None:
    assert words("Why doesn’t int4 fit 1,024 tokens?") == [
        "why", "does", "not", "int", "4", "fit", "1024", "tokens",
    ]  # fmt: skip
    assert words("What can't it do?") == ["what", "can", "not", "it", "do"]
    assert numbers(words("the first of two 4-bit layers")) == {"1", "2", "4"}


def test_it_is_symmetric_on_every_labelled_pair() -> None:
    for p in cache_pairs():
        assert verify(p["a"], p["b"]).same == verify(p["b"], p["a"]).same, p


def test_on_the_labelled_pairs_it_refuses_most_look_alikes_and_few_paraphrases() -> None:
    """No embedding here: words alone. Among different-meaning pairs that share most of
    their words (Jaccard ≥ 0.5, the ones that fool an embedding) it refuses at least 85%;
    of the paraphrases it refuses at most 10% (the recall it costs)."""
    pairs = cache_pairs()

    def jaccard(a: str, b: str) -> float:
        x, y = set(words(a)), set(words(b))
        return len(x & y) / len(x | y)

    look_alikes = [p for p in pairs if not p["same"] and jaccard(p["a"], p["b"]) >= 0.5]
    paraphrases = [p for p in pairs if p["same"]]
    caught = sum(not verify(p["a"], p["b"]).same for p in look_alikes)
    refused = sum(not verify(p["a"], p["b"]).same for p in paraphrases)
    assert len(look_alikes) >= 60 and caught / len(look_alikes) >= 0.85, caught
    assert refused / len(paraphrases) <= 0.10, refused


# ------------------------------------------------------------------ the sweep with the check

SIMS = np.array([0.99, 0.97, 0.95, 0.92, 0.90, 0.85, 0.80, 0.60])
SAME = np.array([False, True, True, False, True, True, False, False])
PASS = np.array([False, True, True, False, True, True, True, True])  # 0 and 3 refused


def test_the_sweep_counts_a_hit_only_when_the_check_passes_it() -> None:
    plain = threshold_sweep(SIMS, SAME, [0.9, 0.8])
    checked = threshold_sweep(SIMS, SAME, [0.9, 0.8], verified=PASS)
    # 0.9 by cosine: pairs 0-4 hit, 0 and 3 are false hits -> 3/5
    assert plain[0]["precision"] == pytest.approx(3 / 5) and plain[0]["false_hits"] == [0, 3]
    # with the check 0 and 3 are refused: 1, 2, 4 hit, all true
    assert checked[0]["hits"] == 3 and checked[0]["precision"] == 1.0
    assert checked[0]["recall"] == pytest.approx(3 / 4) and checked[0]["false_hits"] == []
    # 0.8: pair 6 passes the check and is a false hit; hit rate counts all pairs
    assert checked[1]["false_hits"] == [6] and checked[1]["hit_rate"] == pytest.approx(5 / 8)
    # the check can only remove hits, never add one
    assert all(c["hits"] <= p["hits"] for c, p in zip(checked, plain, strict=True))
    # the suggested threshold: the lowest whose precision reaches the goal
    assert default_threshold(checked) == 0.9 and default_threshold(plain) == 0.9  # none: top
    assert default_threshold(checked, min_precision=0.8) == 0.8


def test_the_sweep_rejects_a_check_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="same length"):
        threshold_sweep(SIMS, SAME, [0.9], verified=PASS[:-1])


def test_halves_are_fixed_by_the_text_and_about_even() -> None:
    pairs = [(p["a"], p["b"]) for p in cache_pairs()]
    tune = halves(pairs)
    assert tune.shape == (len(pairs),) and 0.4 <= tune.mean() <= 0.6
    assert (halves(pairs[::-1])[::-1] == tune).all()  # a pair's half depends on it alone
    assert (halves(pairs[:10]) == tune[:10]).all()


# ------------------------------------------------------------------ with MiniLM's cosine


@pytest.fixture(scope="module")
def cosine() -> Callable[[str, str], float]:
    from learn.lab.embeddings import Encoder

    encoder = Encoder(device="cpu")

    def cos(a: str, b: str) -> float:
        x, y = encoder.encode([a, b])  # (2, 384), unit length
        return float(x @ y)

    return cos


def test_two_stages_refuse_what_cosine_alone_would_serve(
    cosine: Callable[[str, str], float],
) -> None:
    """The look-alikes sit above any useful threshold by cosine; the check refuses them,
    while a paraphrase above the threshold still hits."""
    threshold = 0.9
    for stored, asked in [
        (
            "What's the flight time from Paris to New York?",
            "What's the flight time from New York to Paris?",
        ),
        ("Why does PCA preserve distances?", "Why doesn't PCA preserve distances?"),
        ("Is int8 smaller than bf16?", "Is bf16 smaller than int8?"),
    ]:
        assert cosine(stored, asked) >= threshold  # cosine alone: a false hit
        assert not verify(stored, asked).same  # two stages: a miss
    stored, asked = "What is stored in a KV cache?", "What does the KV cache store?"
    assert cosine(stored, asked) >= threshold and verify(stored, asked).same  # still a hit
