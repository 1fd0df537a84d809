"""Speculative decoding (greedy): guess several tokens cheaply, check them all in one
forward pass of the real model, keep the agreeing prefix.

On a memory-bound device one pass over 1 + k tokens costs about as much as a pass over
one, because the weights are read once either way; every accepted guess is a token for
free. On a CPU that holds only when the weights are arranged once for the matmul
(``learn.lab.packed``): a plain matmul re-arranges them on every call, and a pass over 9
tokens then costs several times a 1-token one. Plain greedy and every pass here run on
the packed twin, where a pass over a few tokens costs little more than a 1-token step
(``bench/generate.py`` measures both).
Greedy only, so the output is exactly plain greedy decoding's.

- ``speculative_prompt_lookup``: the guesses are copied from earlier in the sequence
  (``NgramIndex``): free, and good when the answer quotes the prompt. It follows the
  earlier occurrence with the longest agreeing context, drafts more the longer that
  match (``length_for_match``), shrinks after rejections and grows after full acceptance
  (``DraftLength``), and does not speculate when nothing matches.
- ``speculative_draft_model``: a smaller model with the same tokenizer guesses.

Models have the interface described in ``learn.lab.decoding``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from learn.lab.decoding import TextStream, Tokenizer, stop_set, sync
from learn.lab.events import Emit, no_emit
from learn.lab.kvcache import KVCache
from learn.lab.packed import packed_model

PROMPTS = Path(__file__).parent / "data" / "spec_prompts.json"  # written for this project


@dataclass(frozen=True)
class SpecPrompt:
    name: str
    group: str  # "grounded": the answer copies from the input; "open": it does not
    kind: str  # code edit, quoting, extraction, summary with quotes, story, ...
    messages: list[dict[str, str]]  # chat turns ({"role", "content"}), no system turn


def prompt_set(group: str | None = None) -> list[SpecPrompt]:
    """The prompts that measure speculative decoding (``data/spec_prompts.json``), all of
    them or one ``group``."""
    rows = json.loads(PROMPTS.read_text())["prompts"]
    return [SpecPrompt(**r) for r in rows if group is None or r["group"] == group]


@dataclass
class SpecStep:
    drafted: int  # tokens proposed this step
    accepted: int  # of those, how many matched the model's own greedy choice
    ms: float

    @property
    def rejected(self) -> int:
        return self.drafted - self.accepted


@dataclass
class Speculation:
    tokens: list[int]
    text: str
    steps: list[SpecStep]  # one per target pass; each added its accepted drafts + 1 token
    accepted: int  # drafted tokens kept, over all steps
    rejected: int  # drafted tokens thrown away
    target_passes: int  # forward passes of the real model (plain greedy needs len(tokens))
    total_ms: float
    tokens_per_s: float
    method: str
    device: str

    @property
    def acceptance_rate(self) -> float:
        drafted = self.accepted + self.rejected
        return self.accepted / drafted if drafted else 0.0


def lookup_draft(seq: Sequence[int], ngram: int, num_draft: int, min_ngram: int = 1) -> list[int]:
    """Prompt lookup, the plain way: find the last ``n`` tokens earlier in ``seq``, propose
    what followed.

    Tries n = ngram, ngram-1, ..., min_ngram and the most recent earlier match; returns at
    most ``num_draft`` tokens (empty if nothing matches). Rescans the whole sequence on each
    call; ``NgramIndex`` gives the same answer with work per token that does not grow.
    """
    L = len(seq)
    for n in range(min(ngram, L - 1), max(min_ngram, 1) - 1, -1):
        tail = list(seq[L - n :])
        for start in range(L - n - 1, -1, -1):  # most recent match first
            if list(seq[start : start + n]) == tail:
                return list(seq[start + n : start + n + num_draft])
    return []


class NgramIndex:
    """Prompt lookup's memory, kept up to date one token at a time.

    For every n-gram (min_ngram <= n <= ngram) that has a token after it, the position just
    past its most recent occurrence; for the ``min_ngram``-grams, past every occurrence.
    Appending a token files the n-grams that now have a continuation: O(ngram) dictionary
    writes, however long the sequence is. ``draft`` (the most recent match of the longest
    n-gram: the same answers as ``lookup_draft``) is one dictionary read per n; ``match``
    (the occurrence with the longest agreeing context) reads a bounded number of them.
    """

    def __init__(self, tokens: Sequence[int], ngram: int, min_ngram: int = 1) -> None:
        if not 1 <= min_ngram <= ngram:
            raise ValueError(f"need 1 <= min_ngram <= ngram, got {min_ngram} and {ngram}")
        self.ngram, self.min_ngram = ngram, min_ngram
        self.seq: list[int] = []
        self.after: dict[tuple[int, ...], int] = {}  # n-gram -> index of the token after it
        self.every: dict[tuple[int, ...], list[int]] = {}  # min_ngram-gram -> all such indexes
        self.extend(tokens)

    def __len__(self) -> int:
        return len(self.seq)

    def extend(self, tokens: Sequence[int]) -> None:
        for token in tokens:
            self.seq.append(token)
            end = len(self.seq) - 1  # the n-grams ending just before the new token
            for n in range(self.min_ngram, min(self.ngram, end) + 1):
                self.after[tuple(self.seq[end - n : end])] = end  # later wins: most recent
            if end >= self.min_ngram:
                self.every.setdefault(tuple(self.seq[end - self.min_ngram : end]), []).append(end)

    def draft(self, num_draft: int) -> list[int]:
        """Up to ``num_draft`` tokens that followed the longest earlier match of the tail."""
        L = len(self.seq)
        for n in range(min(self.ngram, L - 1), self.min_ngram - 1, -1):
            at = self.after.get(tuple(self.seq[L - n :]))
            if at is not None:
                return self.seq[at : at + num_draft]
        return []

    def match(self, candidates: int = 8, context: int = 32) -> tuple[int, int]:
        """``(at, length)``: of the ``candidates`` most recent earlier occurrences of the
        tail's last ``min_ngram`` tokens, the one preceded by the longest run of tokens
        agreeing with the tail (``length`` of them, counted up to ``context``; ties go to
        the most recent); the draft is ``seq[at:]``. ``(0, 0)`` when nothing matches.

        Ranking by context picks the right copy when a word recurs (the same name in two
        places of a text), and the length says how far to trust it: on our prompt set, the
        copy after a 1-token match went on agreeing for about 1 token on average, after an
        8-token match for more than 10.
        """
        seq, L = self.seq, len(self.seq)
        best_at, best = 0, 0
        for at in reversed(self.every.get(tuple(seq[L - self.min_ngram :]), [])[-candidates:]):
            n = self.min_ngram  # these agree already; count on, backwards
            while n < context and at - 1 - n >= 0 and seq[at - 1 - n] == seq[L - 1 - n]:
                n += 1
            if n > best:
                best_at, best = at, n
        return best_at, best


def length_for_match(length: int, shortest: int = 4) -> int:
    """How many tokens to draft after a match of ``length`` tokens: ``shortest`` for one,
    doubling each time the match doubles (1 -> 4, 2-3 -> 8, 4-7 -> 16, 8+ -> 32)."""
    return shortest << min(length.bit_length() - 1, 3) if length > 0 else 0


@dataclass
class DraftLength:
    """How many tokens to draft next: doubles after a draft is accepted whole, halves after
    a rejection, within [shortest, longest].

    The floor is there because a draft's first tokens are the likeliest to be accepted
    and, on a CPU with unpacked weights, a pass over 2 or 3 tokens costs nearly what a pass
    over 4 does (``bench/generate.py`` measures it).
    """

    k: int = 8
    shortest: int = 3
    longest: int = 16

    def __post_init__(self) -> None:
        self.shortest = min(self.shortest, self.longest)
        self.k = max(self.shortest, min(self.k, self.longest))

    def update(self, drafted: int, accepted: int) -> None:
        if drafted == 0:  # nothing was drafted: nothing learned
            return
        if accepted == drafted:
            self.k = min(self.longest, 2 * self.k)
        else:
            self.k = max(self.shortest, self.k // 2)


class _Verifier:
    """A model plus its cache; ``predict`` scores a run of new tokens in one forward pass.

    With ``packed``, every pass runs on ``packed_model(model)``, as plain greedy decoding
    (``learn.lab.decoding.generate``) does, so a 1-token step costs what greedy's costs.
    """

    def __init__(self, model: Any, total: int, packed: bool = True) -> None:
        self.model = packed_model(model) if packed else model
        self.cache = KVCache.for_model(model, total)
        self.valid = 0  # positions [0, valid) of the cache hold keys of accepted tokens

    def predict(self, new: list[int], last_only: bool = False) -> list[int]:
        """Feed ``new`` at positions valid.., return the greedy next token after each one
        (after the last only, with ``last_only``: the output layer runs for that row alone)."""
        x = torch.tensor([new], dtype=torch.long, device=self.model.device)  # (1, T)
        logits = self.model(x, self.cache, self.valid, last_only=last_only)  # (1, T or 1, V)
        self.valid += len(new)
        return logits[0].argmax(-1).tolist()


def _speculate(
    model: Any,
    ids: Sequence[int],
    max_new_tokens: int,
    propose: Callable[[list[int]], list[int]],
    method: str,
    stop_ids: Sequence[int] | None,
    tokenizer: Tokenizer | None,
    emit: Emit,
    feedback: Callable[[int, int], None] | None = None,
    packed: bool = True,
) -> Speculation:
    """The shared loop: propose a draft, verify it in one pass, keep the agreeing prefix.

    ``propose(seq)`` sees the whole sequence so far (a list it must not change);
    ``feedback(drafted, accepted)`` hears how each draft fared; ``packed=False`` runs the
    model's own layers instead of ``packed_model``'s.
    """
    stops = stop_set(model, stop_ids)
    seq = list(ids)
    target = _Verifier(model, len(seq) + max_new_tokens + 1, packed)
    stream = TextStream(tokenizer)
    steps: list[SpecStep] = []
    tokens: list[int] = []
    t_start = time.perf_counter()

    def take(new: list[int], drafted: int, accepted: int, ms: float) -> bool:
        """Append new tokens up to a stop token or the limit; True when generation is done."""
        kept = []
        for tok in new:
            kept.append(tok)
            if tok in stops or len(tokens) + len(kept) >= max_new_tokens:
                break
        tokens.extend(kept)
        seq.extend(kept)
        text = "".join(stream.push(t) for t in kept)
        emit("partial", tokens=kept, text=text, drafted=drafted, accepted=accepted, ms=round(ms, 3))
        return kept[-1] in stops or len(tokens) >= max_new_tokens

    first = target.predict(seq, last_only=True)[-1]  # prefill: the prompt gives one token
    ms = (time.perf_counter() - t_start) * 1e3
    steps.append(SpecStep(0, 0, ms))  # step 0, the prefill: nothing drafted
    done = max_new_tokens <= 0 or take([first], 0, 0, ms)
    while not done:
        t0 = time.perf_counter()
        room = max_new_tokens - len(tokens) - 1  # drafts past the limit would be wasted work
        draft = propose(seq)[: max(room, 0)]
        # one pass over the newest token + the draft: position i predicts draft[i]; with no
        # draft it is plain greedy's step, output layer for one row
        preds = target.predict([seq[-1], *draft], last_only=not draft)
        a = 0
        while a < len(draft) and draft[a] == preds[a]:  # keep the agreeing prefix
            a += 1
        target.valid = len(seq) + a  # keys past the agreement belong to rejected guesses
        if feedback is not None:
            feedback(len(draft), a)
        ms = (time.perf_counter() - t0) * 1e3
        steps.append(SpecStep(len(draft), a, ms))
        done = take([*draft[:a], preds[a]], len(draft), a, ms)  # + the model's own token
    sync(model.device)
    total = (time.perf_counter() - t_start) * 1e3
    return Speculation(
        tokens=tokens,
        text=stream.text,
        steps=steps,
        accepted=sum(s.accepted for s in steps),
        rejected=sum(s.rejected for s in steps),
        target_passes=len(steps),
        total_ms=total,
        tokens_per_s=len(tokens) / (total / 1e3) if total else 0.0,
        method=method,
        device=str(model.device),
    )


@torch.inference_mode()
def speculative_prompt_lookup(
    model: Any,
    ids: Sequence[int],
    max_new_tokens: int,
    ngram: int = 3,
    num_draft: int = 16,
    *,
    min_ngram: int = 1,
    adaptive: bool = True,
    start_draft: int = 8,
    shortest_draft: int = 3,
    packed: bool = True,
    stop_ids: Sequence[int] | None = None,
    tokenizer: Tokenizer | None = None,
    emit: Emit = no_emit,
) -> Speculation:
    """Greedy decoding with drafts copied from earlier in the sequence (prompt lookup).

    The draft costs nothing to make: the tail is looked up in an ``NgramIndex``. No match
    of at least ``min_ngram`` tokens, no speculation: the step is plain greedy's one-token
    pass. With ``adaptive``, the draft follows the earlier occurrence with the longest
    agreeing context (``NgramIndex.match``) for ``length_for_match`` tokens, and never
    more than ``DraftLength`` allows (from ``start_draft``, between ``shortest_draft`` and
    ``num_draft``, doubling after full acceptance, halving after a rejection). Without
    ``adaptive``, as prompt lookup was first written: the most recent match of the tail's
    last ``ngram`` tokens (down to ``min_ngram``), ``num_draft`` tokens every time.
    Passes run through ``packed_model(model)`` unless ``packed`` is False. Output
    equals plain greedy's. Emits ``partial`` per step: ``tokens``, ``text``,
    ``drafted``, ``accepted``, ``ms``.
    """
    index = NgramIndex(ids, max(ngram, min_ngram), min_ngram)
    length = DraftLength(start_draft, shortest_draft, num_draft) if adaptive else None

    def propose(seq: list[int]) -> list[int]:
        index.extend(seq[len(index) :])  # only the tokens added since the last step
        if length is None:
            return index.draft(num_draft)
        at, matched = index.match()
        return index.seq[at : at + min(length_for_match(matched), length.k)]

    return _speculate(
        model,
        ids,
        max_new_tokens,
        propose,
        "prompt_lookup",
        stop_ids,
        tokenizer,
        emit,
        feedback=length.update if length is not None else None,
        packed=packed,
    )


@torch.inference_mode()
def speculative_draft_model(
    target: Any,
    draft: Any,
    ids: Sequence[int],
    max_new_tokens: int,
    num_draft: int = 4,
    *,
    stop_ids: Sequence[int] | None = None,
    tokenizer: Tokenizer | None = None,
    emit: Emit = no_emit,
) -> Speculation:
    """Greedy decoding where a smaller ``draft`` model (same tokenizer) proposes
    ``num_draft`` tokens, one at a time, and the ``target`` checks them in one pass.

    Output equals plain greedy decoding of the target. The draft keeps its own cache,
    rolled back to the accepted prefix after each check.
    """
    # packed too, where packing applies (a float32 draft on the CPU): its 1-token passes
    # are as much cheaper as the target's
    drafter = _Verifier(draft, len(ids) + max_new_tokens + num_draft + 1)

    def propose(seq: list[int]) -> list[int]:
        # seq[:-1] is verified; the draft's cache may also hold its own rejected guesses
        drafter.valid = min(drafter.valid, len(seq) - 1)
        if drafter.valid < len(seq) - 1:  # the prompt, or the last draft token once all passed
            drafter.predict(seq[drafter.valid : -1], last_only=True)
        guesses = [seq[-1]]
        for _ in range(num_draft):  # one token per pass: the draft's cheapest shape
            guesses.append(drafter.predict(guesses[-1:], last_only=True)[-1])
        return guesses[1:]

    return _speculate(
        target, ids, max_new_tokens, propose, "draft_model", stop_ids, tokenizer, emit
    )
