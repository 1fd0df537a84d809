"""Prompt-lookup speculation that pays on the CPU: the incremental n-gram index and its
longest-context match, the adaptive draft length, and identical tokens to plain greedy on
the bench's prompt set (the packed weights both run on: ``test_packed.py``).

The references: for the index, rescanning (``lookup_draft`` and ``_rescan_match`` here);
for decoding, plain greedy ``generate``. Generations are short (24 tokens) to keep CPU low.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / huggingface_hub load

import random
from typing import Any

import pytest

from learn.lab.decoding import generate
from learn.lab.llama import Llama
from learn.lab.llama_gguf import chat_ids, load_smollm2
from learn.lab.speculative import (
    DraftLength,
    NgramIndex,
    length_for_match,
    lookup_draft,
    prompt_set,
    speculative_prompt_lookup,
)

N = 24  # new tokens per generation


@pytest.fixture(scope="module")
def smol() -> tuple[Llama, Any]:
    return load_smollm2("cpu")


def test_the_prompt_set_has_ten_grounded_and_five_open_prompts() -> None:
    prompts = prompt_set()
    assert len(prompt_set("grounded")) >= 10 and len(prompt_set("open")) >= 5
    assert {p.group for p in prompts} == {"grounded", "open"}
    assert len({p.name for p in prompts}) == len(prompts)
    kinds = {p.kind for p in prompt_set("grounded")}
    assert {"code edit", "quoting", "extraction", "summary with quotes"} <= kinds
    assert all(p.messages and p.messages[-1]["role"] == "user" for p in prompts)


@pytest.mark.parametrize(("ngram", "min_ngram"), [(3, 1), (3, 3), (4, 2), (1, 1)])
def test_the_ngram_index_drafts_what_rescanning_drafts(ngram: int, min_ngram: int) -> None:
    rng = random.Random(ngram * 10 + min_ngram)
    for _ in range(20):
        seq = [rng.randrange(6) for _ in range(rng.randrange(1, 40))]  # 6 symbols: many repeats
        index = NgramIndex(seq[:1], ngram, min_ngram)
        for end in range(2, len(seq) + 1):
            index.extend(seq[len(index) : end])  # grows the way the decoder grows it
            for k in (1, 4, 16):
                assert index.draft(k) == lookup_draft(seq[:end], ngram, k, min_ngram)


def test_the_ngram_index_finds_nothing_without_an_earlier_match() -> None:
    assert NgramIndex([1, 2, 3, 4], 3, 1).draft(5) == []
    assert NgramIndex([1, 2, 9, 5, 1, 2], 3, 3).draft(5) == []  # only a 2-gram repeats
    assert NgramIndex([1, 2, 9, 5, 1, 2], 3, 2).draft(5) == [9, 5, 1, 2]
    with pytest.raises(ValueError, match="min_ngram"):
        NgramIndex([], 2, 3)


def _rescan_match(seq: list[int], n: int, candidates: int, context: int) -> tuple[int, int]:
    """``NgramIndex.match`` the slow way: list every earlier occurrence of the last n
    tokens, keep the most recent ``candidates``, measure each one's agreeing context."""
    L = len(seq)
    found = [s + n for s in range(L - n) if seq[s : s + n] == seq[L - n :]][-candidates:]
    best_at, best = 0, 0
    for at in reversed(found):
        length = 0
        while length < min(context, at) and seq[at - 1 - length] == seq[L - 1 - length]:
            length += 1
        if length > best:
            best_at, best = at, length
    return best_at, best


@pytest.mark.parametrize(("n", "candidates", "context"), [(1, 8, 32), (2, 3, 5), (1, 1, 4)])
def test_the_index_match_is_the_occurrence_with_the_longest_context(
    n: int, candidates: int, context: int
) -> None:
    rng = random.Random(n * 100 + candidates)
    for _ in range(20):
        seq = [rng.randrange(4) for _ in range(rng.randrange(1, 60))]
        index = NgramIndex(seq[:1], max(n, 3), n)
        for end in range(2, len(seq) + 1):
            index.extend(seq[len(index) : end])
            assert index.match(candidates, context) == _rescan_match(
                seq[:end], n, candidates, context
            )
    # a recurring word: the older copy, with the longer context, wins
    index = NgramIndex([7, 1, 2, 3, 4, 9, 9, 2, 5, 8, 1, 2], 3, 1)
    assert index.match() == (3, 2) and index.seq[3:5] == [3, 4]


def test_the_draft_grows_with_the_match() -> None:
    assert [length_for_match(m) for m in (0, 1, 2, 3, 4, 7, 8, 31)] == [0, 4, 8, 8, 16, 16, 32, 32]


def test_the_draft_length_grows_after_full_acceptance_and_shrinks_after_rejection() -> None:
    length = DraftLength(k=4, shortest=3, longest=16)
    length.update(4, 4)
    assert length.k == 8
    length.update(8, 8)
    length.update(16, 16)
    assert length.k == 16  # capped
    length.update(16, 5)
    assert length.k == 8
    length.update(8, 0)
    length.update(4, 1)
    length.update(3, 0)
    assert length.k == 3  # floored: a shorter verify pass costs nearly as much
    length.update(0, 0)  # nothing drafted: nothing changes
    assert length.k == 3


@pytest.mark.parametrize("name", ["extract-contacts", "table-to-sentences", "fix-typos", "story"])
def test_prompt_lookup_gives_plain_greedy_tokens_on_the_prompt_set(
    smol: tuple[Llama, Any], name: str
) -> None:
    model, tokenizer = smol
    prompt = next(p for p in prompt_set() if p.name == name)
    ids = chat_ids(tokenizer, prompt.messages)
    plain = generate(model, ids, N).tokens
    spec = speculative_prompt_lookup(model, ids, N, tokenizer=tokenizer)
    fixed = speculative_prompt_lookup(model, ids, N, num_draft=10, min_ngram=1, adaptive=False)
    unpacked = speculative_prompt_lookup(model, ids, N, packed=False)
    assert spec.tokens == plain and fixed.tokens == plain and unpacked.tokens == plain
    assert spec.text == tokenizer.decode(plain)
    assert [s.drafted for s in unpacked.steps] == [s.drafted for s in spec.steps]  # same policy
    drafted = [s.drafted for s in spec.steps[1:]]
    assert all(d == 0 or d <= 16 for d in drafted)  # no match, no draft; never past the cap
    assert len(plain) <= spec.accepted + len(spec.steps)
    if prompt.group == "grounded" and name != "fix-typos":  # these copy within 24 tokens
        assert spec.accepted > 0 and spec.target_passes < len(plain)
        assert len(set(drafted) - {0}) > 1 or spec.rejected == 0  # the length adapted
    if name == "story":  # little to copy: short matches, so short drafts, and few kept
        assert spec.accepted < len(plain) // 2
        assert sum(d > 8 for d in drafted) <= 2


def test_prompt_lookup_stops_at_the_limit_without_drafting_past_it(
    smol: tuple[Llama, Any],
) -> None:
    model, tokenizer = smol
    ids = chat_ids(tokenizer, next(p for p in prompt_set() if p.name == "quote-passage").messages)
    for limit in (1, 2, 5):
        spec = speculative_prompt_lookup(model, ids, limit, stop_ids=())
        assert spec.tokens == generate(model, ids, limit, stop_ids=()).tokens
        assert len(spec.tokens) == limit
        made = 1  # the prefill's token
        for step in spec.steps[1:]:
            assert step.drafted <= limit - made - 1  # a draft past the limit is wasted work
            made += step.accepted + 1
