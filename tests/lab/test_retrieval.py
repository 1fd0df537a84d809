"""Retrieval: BM25 against ``bm25s``, RRF and MMR against worked examples, the SmolLM2
relevance judge on the real model, and the retrieval metrics."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / huggingface_hub load

import math
from typing import Any

import numpy as np
import pytest
import torch

from learn.lab.bm25 import BM25, tokens
from learn.lab.fusion import rrf
from learn.lab.rag_eval import hit_at, reciprocal_rank, summarise
from learn.lab.rerank import judge_prompt, mmr, relevance_logprob, relevance_scores

CORPUS = [
    "The Eiffel Tower in Paris is 330 metres tall.",
    "Paris is the capital of France and its largest city.",
    "The Great Wall of China is thousands of kilometres long.",
    "Tokyo is the capital of Japan; Tokyo is also its largest city.",
    "Cheetahs are the fastest land animals, running at 100 km/h.",
    "Water boils at 100 degrees Celsius at sea level.",
    "Mars has two moons, Phobos and Deimos.",
    "The Pacific Ocean is the largest ocean on Earth.",
    "Bamboo is almost all that giant pandas eat.",
    "Shakespeare wrote Romeo and Juliet; Shakespeare also wrote Hamlet.",
    "The capital city hosts the government.",
    "Paris Paris Paris: a city, a city, a city.",
]
QUERIES = [
    "What is the capital of France?",
    "How tall is the Eiffel Tower in Paris?",
    "largest city",
    "Which animals run at 100 km/h?",
    "Shakespeare Hamlet",
    "capital capital city",  # a repeated term counts twice
    "submarine",  # no document has it
]


# ------------------------------------------------------------------------------- BM25


def test_tokens_lowercase_words_and_numbers_without_stop_words() -> None:
    assert tokens("The GPU's 80 GB, and what it does.") == ["gpu", "80", "gb"]
    assert tokens("Größe: 3.5 µm") == ["größe", "3", "5", "µm"]


@pytest.mark.parametrize(("k1", "b"), [(1.5, 0.75), (1.2, 0.3), (0.9, 1.0)])
def test_bm25_scores_equal_bm25s_lucene(k1: float, b: float) -> None:
    import bm25s

    corpus = [tokens(d) for d in CORPUS]
    ours = BM25(corpus, k1=k1, b=b)
    ref = bm25s.BM25(method="lucene", k1=k1, b=b)
    ref.index(corpus, show_progress=False)
    for q in QUERIES:
        qt = tokens(q)
        known = [t for t in qt if t in ref.vocab_dict]
        want = ref.get_scores(known) if known else np.zeros(len(CORPUS))
        got = ours.scores(qt)
        np.testing.assert_allclose(got, want, atol=1e-5)
        if known:
            ref_ids, ref_scores = ref.retrieve([known], k=5, show_progress=False)
            # bm25s orders zero scores arbitrarily: compare the documents that match
            want_ids = [i for i, s in zip(ref_ids[0], ref_scores[0], strict=True) if s > 0]
            assert ours.top(qt, 5, positive_only=True).ids.tolist() == want_ids
            assert len(want_ids) >= 1


def test_bm25_idf_and_length_normalisation_by_hand() -> None:
    """Two documents, worked out from the formula in Robertson & Zaragoza's notation."""
    index = BM25([["a", "b"], ["b", "b", "c", "d"]], k1=1.5, b=0.75)
    avgdl = 3.0
    idf_a = math.log(1 + (2 - 1 + 0.5) / (1 + 0.5))  # in one of two documents
    idf_b = math.log(1 + (2 - 2 + 0.5) / (2 + 0.5))  # in both: small, never negative
    want_0 = idf_a * 1 / (1 + 1.5 * (1 - 0.75 + 0.75 * 2 / avgdl)) + idf_b * 1 / (
        1 + 1.5 * (1 - 0.75 + 0.75 * 2 / avgdl)
    )
    want_1 = idf_b * 2 / (2 + 1.5 * (1 - 0.75 + 0.75 * 4 / avgdl))
    np.testing.assert_allclose(index.scores(["a", "b"]), [want_0, want_1], rtol=1e-12)


def test_bm25_top_breaks_ties_by_lower_id_and_can_skip_zeros() -> None:
    index = BM25([["x"], ["y"], ["x"], ["z"], ["x"]])
    top = index.top(["x"], 4)
    assert top.ids.tolist() == [0, 2, 4, 1]  # three equal scores, then the first zero
    assert top.scores[0] == top.scores[1] == top.scores[2] > top.scores[3] == 0
    assert index.top(["x"], 4, positive_only=True).ids.tolist() == [0, 2, 4]
    assert len(index.top(["x"], 50).ids) == 5
    with pytest.raises(ValueError, match="at least 1"):
        index.top(["x"], 0)


# ------------------------------------------------------------------------------- RRF


def test_rrf_matches_a_worked_example() -> None:
    keyword = [3, 1, 2]
    vector = [1, 4, 3]
    # by hand, k = 60:  1: 1/62 + 1/61   3: 1/61 + 1/63   4: 1/62   2: 1/63
    got = rrf([keyword, vector])
    assert [doc for doc, _ in got] == [1, 3, 4, 2]
    want = {1: 1 / 62 + 1 / 61, 3: 1 / 61 + 1 / 63, 4: 1 / 62, 2: 1 / 63}
    for doc, score in got:
        assert score == pytest.approx(want[doc], rel=1e-12)


def test_rrf_ties_keep_first_appearance_and_duplicates_count_once() -> None:
    got = rrf([["b", "a"], ["a", "b"], ["c", "c"]], k=0)
    # a and b: 1/1 + 1/2 each, b appeared first; c: 1/1 once, not 1/1 + 1/2
    assert got == [("b", 1.5), ("a", 1.5), ("c", 1.0)]
    assert rrf([]) == []


# ------------------------------------------------------------------------------- MMR


def test_mmr_matches_a_worked_example() -> None:
    query = np.array([1.0, 0.0, 0.0])
    docs = np.array(
        [
            [0.8, 0.6, 0.0],  # 0: cos to query 0.8
            [0.8, 0.6, 0.0],  # 1: an exact copy of 0
            [0.6, 0.0, 0.8],  # 2: cos 0.6; cos to 0 is 0.48
            [0.0, 0.0, 1.0],  # 3: cos 0; cos to 0 is 0, to 2 is 0.8
        ]
    )
    # lambda 0.5, by hand (score = 0.5 * relevance - 0.5 * max cos to the picked):
    #   1st: 0 and 1 tie at 0.4, the lower index wins             -> 0
    #   2nd: 1: 0.4 - 0.5 = -0.1;  2: 0.3 - 0.24 = 0.06;  3: 0     -> 2
    #   3rd: 1: 0.4 - 0.5 = -0.1;  3: 0 - 0.5 * 0.8 = -0.4         -> 1, then 3
    assert mmr(query, docs, k=4, lambda_=0.5) == [0, 2, 1, 3]
    assert mmr(query, docs, k=2, lambda_=0.5) == [0, 2]
    # lambda 1: plain similarity order; lambda 0: pure novelty (0, then the farthest from it)
    assert mmr(query, docs, k=4, lambda_=1.0) == [0, 1, 2, 3]
    assert mmr(query, docs, k=4, lambda_=0.0) == [0, 3, 2, 1]


def test_mmr_ignores_vector_lengths_and_checks_its_input() -> None:
    rng = np.random.default_rng(0)
    q, d = rng.normal(size=8), rng.normal(size=(20, 8))
    scale = rng.uniform(0.1, 10, size=(20, 1))
    assert mmr(q, d, k=7) == mmr(3 * q, d * scale, k=7)
    assert sorted(mmr(q, d, k=50)) == list(range(20))
    with pytest.raises(ValueError, match="between 0 and 1"):
        mmr(q, d, k=3, lambda_=1.5)
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        mmr(q, d[:, :4], k=3)


# ------------------------------------------------------------------ the model as judge


@pytest.fixture(scope="module")
def smol() -> tuple[Any, Any]:
    from learn.lab.llama_gguf import load_smollm2

    return load_smollm2("cpu")


JUDGED = [  # (question, clearly relevant, clearly irrelevant)
    (
        "How tall is the Eiffel Tower?",
        "The Eiffel Tower in Paris is 330 metres tall, including its antennas.",
        "Bananas are rich in potassium and are a popular breakfast fruit.",
    ),
    (
        "How many moons does Mars have?",
        "Mars has two small moons, Phobos and Deimos.",
        "Jazz originated in New Orleans in the early twentieth century.",
    ),
    (
        "How fast can a cheetah run?",
        "Cheetahs can sprint at up to 100 km/h over short distances.",
        "The stock market fell sharply on Monday after weak earnings.",
    ),
]


def test_the_judge_scores_a_relevant_passage_above_an_irrelevant_one(smol: Any) -> None:
    model, tokenizer = smol
    events: list[dict] = []
    for question, relevant, irrelevant in JUDGED:
        scores = relevance_scores(
            model, tokenizer, question, [relevant, irrelevant], emit=lambda k, **d: events.append(d)
        )
        assert all(s < 0 for s in scores)  # log of a probability below 1
        assert scores[0] > scores[1], question
    assert [e["pct"] for e in events[:2]] == [50, 100]


def test_the_judge_normalises_yes_against_no_over_the_full_softmax(smol: Any) -> None:
    """Reference: the full forward pass (every position's logits), softmax over the whole
    vocabulary, then p(yes) / (p(yes) + p(no)) by hand."""
    from learn.lab.llama_gguf import chat_prompt
    from learn.lab.rerank import JUDGE_SYSTEM

    model, tokenizer = smol
    question, relevant, _ = JUDGED[0]
    ids = chat_prompt(tokenizer, judge_prompt(question, relevant), system=JUDGE_SYSTEM)
    with torch.inference_mode():
        probs = model(torch.tensor([ids]))[0, -1].double().softmax(-1)  # (V,)

    def p(words: list[str]) -> float:
        return sum(
            float(probs[tokenizer.encode(w, add_special_tokens=False).ids[0]]) for w in words
        )

    p_yes, p_no = p(["yes", "Yes", " yes", " Yes"]), p(["no", "No", " no", " No"])
    want = math.log(p_yes / (p_yes + p_no))
    assert relevance_logprob(model, tokenizer, question, relevant) == pytest.approx(want, abs=1e-4)


# ----------------------------------------------------------------------------- metrics


def test_hit_and_reciprocal_rank() -> None:
    ranked = ["c3", "c1", "c7"]
    assert [hit_at(ranked, "c1", k) for k in (1, 2, 5)] == [0.0, 1.0, 1.0]
    assert reciprocal_rank(ranked, "c7") == pytest.approx(1 / 3)
    assert reciprocal_rank(ranked, "c9") == 0.0 == hit_at(ranked, "c9", 5)
    with pytest.raises(ValueError):
        hit_at(ranked, "c1", 0)


def test_summarise_over_questions() -> None:
    rows = [
        {"ranked": ["a", "b"], "gold": "a"},  # rank 1
        (["x", "y", "z", "w", "v", "gold"], "gold"),  # rank 6: a miss at 5
        (["p", "q", "r"], "r"),  # rank 3
        (["p", "q"], "none"),  # never found
    ]
    got = summarise(rows)
    assert got["n"] == 4
    assert got["recall@1"] == pytest.approx(1 / 4)
    assert got["recall@5"] == pytest.approx(2 / 4)
    assert got["mrr"] == pytest.approx((1 + 1 / 6 + 1 / 3 + 0) / 4)
    assert got["missed@5"] == [1, 3]
    assert summarise([]) == {"n": 0, "recall@1": 0.0, "recall@5": 0.0, "mrr": 0.0, "missed@5": []}
