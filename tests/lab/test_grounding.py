"""The grounded prompt (budget, dropped chunks, citations) and the semantic-cache sweep."""

from __future__ import annotations

import numpy as np
import pytest

from learn.lab.grounding import DEFAULT_SYSTEM, assemble, citations, closed_book, user_text
from learn.lab.llama_gguf import load_tokenizer
from learn.lab.semcache import default_threshold, threshold_sweep


def n_words(text: str) -> int:
    """A stand-in token counter: one token per whitespace-separated word."""
    return len(text.split())


QUESTION = "How tall is the Eiffel Tower?"
CHUNKS = [
    "The Eiffel Tower is 330 metres tall.",  # 7 words
    "It was finished in 1889.",  # 5
    "Gustave Eiffel's company designed and built it.",  # 7
    "Paris.",  # 1
]


# ------------------------------------------------------------------------------ assemble


def test_it_numbers_chunks_in_rank_order_and_counts_tokens() -> None:
    p = assemble(QUESTION, CHUNKS, count_tokens=n_words, budget=1000)
    assert p.used_chunks == [0, 1, 2, 3] and p.dropped_chunks == []
    assert "[1] The Eiffel Tower is 330 metres tall.\n\n[2] It was finished" in p.user
    assert p.user.index("[4] Paris.") < p.user.index(f"Question: {QUESTION}")
    assert p.tokens == n_words(DEFAULT_SYSTEM) + n_words(p.user)
    assert p.messages == [
        {"role": "system", "content": DEFAULT_SYSTEM},
        {"role": "user", "content": p.user},
    ]


def test_chunks_after_the_first_that_overflows_are_dropped() -> None:
    base = n_words(DEFAULT_SYSTEM) + n_words(user_text(QUESTION, []))  # counts "(none)"
    # with passages "(none)" goes, and each chunk adds its words plus its "[n]"
    with_two = base - 1 + (7 + 1) + (5 + 1)
    # chunk 2 needs 8 more: it overflows; chunk 3 (2 more) would fit in what is left, but
    # it ranks below a dropped chunk, so it is dropped too
    p = assemble(QUESTION, CHUNKS, count_tokens=n_words, budget=with_two + 7)
    assert p.used_chunks == [0, 1]
    assert p.dropped_chunks == [2, 3]
    assert p.tokens == with_two and p.budget == with_two + 7
    assert "[3]" not in p.user and "Gustave" not in p.user and "(none)" not in p.user
    # exactly enough room for chunk 2
    p = assemble(QUESTION, CHUNKS, count_tokens=n_words, budget=with_two + 8)
    assert p.used_chunks == [0, 1, 2] and p.dropped_chunks == [3]
    assert p.tokens == with_two + 8


def test_it_rejects_a_question_that_alone_overflows_the_budget() -> None:
    with pytest.raises(ValueError, match="raise the budget or shorten the question"):
        assemble(QUESTION, CHUNKS, count_tokens=n_words, budget=10)


def test_with_no_room_for_any_chunk_the_prompt_says_so() -> None:
    budget = n_words(DEFAULT_SYSTEM) + n_words(user_text(QUESTION, []))
    p = assemble(QUESTION, CHUNKS, count_tokens=n_words, budget=budget)
    assert p.used_chunks == [] and p.dropped_chunks == [0, 1, 2, 3]
    assert "(none)" in p.user


def test_budget_in_smollm2_tokens() -> None:
    tok = load_tokenizer()

    def count(text: str) -> int:
        return len(tok.encode(text, add_special_tokens=False).ids)

    p = assemble(QUESTION, CHUNKS * 10, count_tokens=count, budget=200)
    assert p.tokens == count(p.system) + count(p.user) <= 200
    assert 0 < len(p.used_chunks) < 40
    assert p.used_chunks + p.dropped_chunks == list(range(40))
    after = count(DEFAULT_SYSTEM) + count(
        user_text(QUESTION, (CHUNKS * 10)[: len(p.used_chunks) + 1])
    )
    assert after > 200  # the first dropped chunk really would have overflowed


def test_closed_book_has_the_question_and_no_passages() -> None:
    messages = closed_book(QUESTION)
    assert messages[-1] == {"role": "user", "content": QUESTION}
    assert not any("[1]" in m["content"] or "Passages" in m["content"] for m in messages)


# ------------------------------------------------------------------------------ citations


def test_citations_parse_single_and_grouped_markers() -> None:
    answer = "It is 330 m tall [1]. Built by 1889 [2, 3]; see also [1] and [ 4 ]."
    assert citations(answer, 4) == [1, 2, 3, 4]
    assert citations(answer, 2) == [1, 2]  # [3] and [4] point at no given passage


def test_citations_ignore_out_of_range_and_non_markers() -> None:
    assert citations("See [0], [7] and [2].", 3) == [2]
    assert citations("The array a[i] and the list [x, y] and 5 [sic].", 9) == []
    assert citations("No passages here.", 3) == []
    assert citations("[3][1][3]", 3) == [3, 1]


# ------------------------------------------------------------------ semantic cache sweep

# Eight labelled prompt pairs: cosine similarity, and whether they truly mean the same.
SIMS = np.array([0.97, 0.95, 0.93, 0.91, 0.88, 0.86, 0.80, 0.60])
SAME = np.array([True, True, False, True, True, False, False, False])


def test_threshold_sweep_by_hand() -> None:
    rows = threshold_sweep(SIMS, SAME, [0.99, 0.94, 0.9, 0.85, 0.5])
    by_t = {r["threshold"]: r for r in rows}
    # 0.99: nothing hits -> precision 1 by definition, recall 0
    assert by_t[0.99] == {
        "threshold": 0.99,
        "precision": 1.0,
        "recall": 0.0,
        "hit_rate": 0.0,
        "hits": 0,
        "false_hits": [],
    }
    # 0.94: pairs 0, 1 hit, both same
    assert (by_t[0.94]["precision"], by_t[0.94]["recall"], by_t[0.94]["hit_rate"]) == (
        1.0,
        0.5,
        2 / 8,
    )
    # 0.9: pairs 0-3 hit, pair 2 is a false hit
    assert by_t[0.9]["precision"] == pytest.approx(3 / 4)
    assert by_t[0.9]["recall"] == pytest.approx(3 / 4)
    assert by_t[0.9]["false_hits"] == [2]
    # 0.85: pairs 0-5 hit: 4 same of 6
    assert by_t[0.85]["precision"] == pytest.approx(4 / 6)
    assert by_t[0.85]["recall"] == 1.0
    assert by_t[0.85]["false_hits"] == [2, 5]
    # 0.5: everything hits
    assert by_t[0.5]["hit_rate"] == 1.0 and by_t[0.5]["false_hits"] == [2, 5, 6, 7]
    # a pair exactly at the threshold hits
    assert threshold_sweep(SIMS, SAME, [0.91])[0]["hits"] == 4


def test_default_threshold_is_the_lowest_reaching_the_precision() -> None:
    sweep = threshold_sweep(SIMS, SAME, [0.5, 0.85, 0.9, 0.94, 0.99])
    assert default_threshold(sweep) == 0.94
    assert default_threshold(sweep, min_precision=0.7) == 0.9
    assert default_threshold(sweep, min_precision=0.0) == 0.5
    # no threshold reaches it: the most cautious on offer
    assert default_threshold(threshold_sweep(SIMS, SAME, [0.5, 0.85]), min_precision=0.9) == 0.85


def test_sweep_rejects_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="same length"):
        threshold_sweep(SIMS, SAME[:-1], [0.9])
    with pytest.raises(ValueError, match="empty"):
        default_threshold([])
