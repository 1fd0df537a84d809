"""The sampler's distributions, drawn many times: top-k never leaves the k likeliest tokens,
top-p keeps the smallest set reaching p, temperature -> 0 is greedy, and the empirical
frequencies match softmax(logits / T) renormalised over what is kept (chi-square test).

A sampler that ignored temperature, top-k or top-p would fail here; one seed giving the
same tokens twice (tests/lab/test_generation.py) would not notice.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from learn.lab.sampling import sample

DRAWS = 6_000
# Ten distinct logits, not sorted, so that "the first k" and "the k likeliest" differ.
LOGITS = torch.tensor([0.3, 2.0, -1.0, 1.2, 0.0, 2.6, -0.4, 1.7, 0.9, -2.0])


def draws(logits: torch.Tensor, n: int = DRAWS, seed: int = 0, **kw: float | int) -> np.ndarray:
    """How often each token id was drawn over ``n`` calls: counts (vocab,)."""
    generator = torch.Generator().manual_seed(seed)
    ids = [sample(logits, generator=generator, **kw) for _ in range(n)]
    return np.bincount(ids, minlength=logits.shape[0])


def reference(logits: torch.Tensor, temperature: float, keep: list[int]) -> np.ndarray:
    """softmax(logits / T) over the ``keep`` ids, zero elsewhere: probabilities (vocab,)."""
    scaled = logits.double().numpy() / temperature
    p = np.zeros_like(scaled)
    p[keep] = np.exp(scaled[keep] - scaled[keep].max())
    return p / p.sum()


def assert_matches(counts: np.ndarray, expected: np.ndarray) -> None:
    """Every draw is in the support of ``expected``, and a chi-square goodness-of-fit test
    over that support does not reject it at the 0.1% level (a fixed seed: deterministic)."""
    support = expected > 0
    assert counts[~support].sum() == 0, counts
    if support.sum() == 1:
        return  # one token kept: every draw is it
    result = chisquare(counts[support], expected[support] * counts.sum())
    assert result.pvalue > 1e-3, (counts.tolist(), (expected * counts.sum()).round(1).tolist())


def top_p_set(logits: torch.Tensor, temperature: float, p: float) -> list[int]:
    """The nucleus, computed independently: the likeliest ids until their mass reaches p."""
    probs = reference(logits, temperature, list(range(logits.shape[0])))
    kept, mass = [], 0.0
    for i in np.argsort(-probs):
        kept.append(int(i))
        mass += probs[i]
        if mass >= p:
            break
    return kept


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_frequencies_follow_softmax_of_logits_over_temperature(temperature: float) -> None:
    counts = draws(LOGITS, temperature=temperature)
    assert_matches(counts, reference(LOGITS, temperature, list(range(10))))


def test_a_sampler_that_ignored_temperature_would_be_caught() -> None:
    """The chi-square test tells T=0.5 from T=2: the check above has power."""
    counts = draws(LOGITS, temperature=0.5)
    expected = reference(LOGITS, 2.0, list(range(10))) * DRAWS
    assert chisquare(counts, expected).pvalue < 1e-6


@pytest.mark.parametrize("k", [1, 3, 5])
def test_top_k_never_draws_outside_the_k_likeliest(k: int) -> None:
    likeliest = sorted(np.argsort(-LOGITS.numpy())[:k].tolist())
    counts = draws(LOGITS, temperature=1.5, top_k=k)
    assert sorted(np.flatnonzero(counts).tolist()) == likeliest  # each of the k is drawn too
    assert_matches(counts, reference(LOGITS, 1.5, likeliest))


@pytest.mark.parametrize(("p", "temperature"), [(0.5, 1.0), (0.8, 1.0), (0.9, 0.7)])
def test_top_p_keeps_the_smallest_set_whose_mass_reaches_p(p: float, temperature: float) -> None:
    nucleus = top_p_set(LOGITS, temperature, p)
    full = reference(LOGITS, temperature, list(range(10)))
    kept_mass = full[nucleus].sum()
    assert kept_mass >= p and kept_mass - full[nucleus[-1]] < p  # reaches p; one fewer would not
    counts = draws(LOGITS, temperature=temperature, top_p=p)
    assert sorted(np.flatnonzero(counts).tolist()) == sorted(nucleus)
    assert_matches(counts, reference(LOGITS, temperature, nucleus))


def test_top_k_then_top_p_applies_both() -> None:
    """top_k=4 first, then the nucleus of what is left (renormalised) at p=0.7."""
    likeliest = np.argsort(-LOGITS.numpy())[:4].tolist()
    within = reference(LOGITS, 1.0, likeliest)
    kept, mass = [], 0.0
    for i in np.argsort(-within):
        if within[i] == 0:
            break
        kept.append(int(i))
        mass += within[i]
        if mass >= 0.7:
            break
    assert len(kept) < 4  # p cut something the k left
    counts = draws(LOGITS, temperature=1.0, top_k=4, top_p=0.7)
    assert_matches(counts, reference(LOGITS, 1.0, kept))


@pytest.mark.parametrize("temperature", [0.0, -1.0, 1e-4])
def test_temperature_towards_zero_is_greedy(temperature: float) -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        logits = torch.tensor(rng.normal(size=50) * 3, dtype=torch.float32)
        counts = draws(logits, n=20, temperature=temperature, top_k=10, top_p=0.9)
        assert counts[int(logits.argmax())] == 20


def test_a_seeded_generator_repeats_and_another_seed_differs() -> None:
    a = draws(LOGITS, n=200, seed=1, temperature=1.0)
    b = draws(LOGITS, n=200, seed=1, temperature=1.0)
    generator = torch.Generator().manual_seed(1)
    first = [sample(LOGITS, temperature=1.0, generator=generator) for _ in range(200)]
    generator = torch.Generator().manual_seed(2)
    second = [sample(LOGITS, temperature=1.0, generator=generator) for _ in range(200)]
    assert (a == b).all() and first != second
