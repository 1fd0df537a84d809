"""Speculative decoding (greedy): guess several tokens cheaply, check them all in one
forward pass of the real model, keep the agreeing prefix.

On a memory-bound device one pass over 1 + k tokens costs about as much as a pass over
one, because the weights are read once either way; every accepted guess is a token for
free. Greedy only, so the output is exactly plain greedy decoding's.

- ``speculative_prompt_lookup``: the guesses are copied from earlier in the sequence
  (``lookup_draft``): free, and good when the answer quotes the prompt.
- ``speculative_draft_model``: a smaller model with the same tokenizer guesses.

Models have the interface described in ``learn.lab.decoding``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from learn.lab.decoding import TextStream, Tokenizer, stop_set, sync
from learn.lab.events import Emit, no_emit
from learn.lab.kvcache import KVCache


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


def lookup_draft(seq: Sequence[int], ngram: int, num_draft: int) -> list[int]:
    """Prompt lookup: find the last ``n`` tokens earlier in ``seq``, propose what followed.

    Tries n = ngram, ngram-1, ..., 1 and the most recent earlier match; returns at most
    ``num_draft`` tokens (empty if nothing matches). Works when the answer quotes the input.
    """
    L = len(seq)
    for n in range(min(ngram, L - 1), 0, -1):
        tail = list(seq[L - n :])
        for start in range(L - n - 1, -1, -1):  # most recent match first
            if list(seq[start : start + n]) == tail:
                return list(seq[start + n : start + n + num_draft])
    return []


class _Verifier:
    """A model plus its cache; ``predict`` scores a run of new tokens in one forward pass."""

    def __init__(self, model: Any, total: int) -> None:
        self.model = model
        self.cache = KVCache.for_model(model, total)
        self.valid = 0  # positions [0, valid) of the cache hold keys of accepted tokens

    def predict(self, seq: list[int], last_only: bool = False) -> list[int]:
        """Feed seq[valid:], return the greedy next token after each fed position."""
        x = torch.tensor([seq[self.valid :]], dtype=torch.long, device=self.model.device)
        logits = self.model(x, self.cache, self.valid, last_only=last_only)  # (1, T, vocab)
        self.valid = len(seq)
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
) -> Speculation:
    """The shared loop: propose a draft, verify it in one pass, keep the agreeing prefix."""
    stops = stop_set(model, stop_ids)
    seq = list(ids)
    target = _Verifier(model, len(seq) + max_new_tokens + 1)
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
        # one pass over the newest token + the draft: position i predicts draft[i]
        preds = target.predict(seq + draft)
        a = 0
        while a < len(draft) and draft[a] == preds[a]:  # keep the agreeing prefix
            a += 1
        target.valid = len(seq) + a  # keys past the agreement belong to rejected guesses
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
    num_draft: int = 10,
    *,
    stop_ids: Sequence[int] | None = None,
    tokenizer: Tokenizer | None = None,
    emit: Emit = no_emit,
) -> Speculation:
    """Greedy decoding with drafts copied from earlier in the sequence (prompt lookup).

    The draft costs nothing; each step is one forward pass over 1 + len(draft) tokens,
    which on a memory-bound device costs about as much as one token. Output equals plain
    greedy's. Emits ``partial`` per step: ``tokens``, ``text``, ``drafted``, ``accepted``, ``ms``.
    """
    return _speculate(
        model,
        ids,
        max_new_tokens,
        lambda seq: lookup_draft(seq, ngram, num_draft),
        "prompt_lookup",
        stop_ids,
        tokenizer,
        emit,
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
    drafter = _Verifier(draft, len(ids) + max_new_tokens + num_draft + 1)

    def propose(seq: list[int]) -> list[int]:
        # seq[:-1] is verified; the draft's cache may also hold its own rejected guesses
        drafter.valid = min(drafter.valid, len(seq) - 1)
        if drafter.valid < len(seq) - 1:  # the prompt, or the last draft token once all passed
            drafter.predict(seq[:-1], last_only=True)
        ctx = list(seq)
        for _ in range(num_draft):  # one token per pass: the draft's cheapest shape
            ctx.append(drafter.predict(ctx, last_only=True)[-1])
        return ctx[len(seq) :]

    return _speculate(
        target, ids, max_new_tokens, propose, "draft_model", stop_ids, tokenizer, emit
    )
