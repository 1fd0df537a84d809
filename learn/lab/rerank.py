"""Re-ranking retrieved passages: for diversity (MMR) and with a model as the judge.

Maximal marginal relevance, from Carbonell & Goldstein, "The Use of MMR, Diversity-Based
Reranking for Reordering Documents and Producing Summaries" (SIGIR 1998), picks passages
one at a time, each maximising

    lambda * sim(d, query) - (1 - lambda) * max over already picked p of sim(d, p)

so a near-copy of a passage already picked loses to a slightly less similar, new one.
Similarity is cosine; lambda = 1 is plain similarity order, lambda = 0 pure novelty.

The model judge asks SmolLM2 "Is this passage relevant to the question? Answer yes or
no." and reads the probability of "yes" against "no" at the first reply token, the
pointwise "yes/no" re-ranking of Nogueira et al.'s monoT5 (2020) done with a chat model.
This part runs the model, so this module imports torch: worker side only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from learn.lab.events import Emit, no_emit
from learn.lab.llama_gguf import chat_prompt
from learn.lab.packed import packed_model

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from learn.lab.llama import Llama


def mmr(query: np.ndarray, docs: np.ndarray, *, k: int, lambda_: float = 0.5) -> list[int]:
    """Indices into ``docs`` in pick order (min(k, n) of them).

    ``query`` (d,), ``docs`` (n, d): any scale, vectors are L2-normalised here. Ties go to
    the lower index.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ must be between 0 and 1, got {lambda_}.")
    q = np.asarray(query, dtype=np.float64)
    d = np.asarray(docs, dtype=np.float64)
    if q.ndim != 1 or d.ndim != 2 or d.shape[1] != q.shape[0]:
        raise ValueError(f"Expected query (d,) and docs (n, d), got {q.shape} and {d.shape}.")
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    d = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    relevance = d @ q  # (n,) cosine to the query
    pairwise = d @ d.T  # (n, n) cosine between passages
    n = len(d)
    picked: list[int] = []
    redundancy = np.full(n, -np.inf)  # (n,) max similarity to anything picked so far
    free = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)  # nothing picked: 0
        score = lambda_ * relevance - (1 - lambda_) * penalty  # (n,)
        score[~free] = -np.inf
        best = int(np.argmax(score))  # first maximum: lower index wins ties
        picked.append(best)
        free[best] = False
        redundancy = np.maximum(redundancy, pairwise[best])
    return picked


# ---------------------------------------------------------------------- the model judge

JUDGE_SYSTEM = "You decide whether a passage helps answer a question. Reply with yes or no."
YES = ("yes", "Yes", " yes", " Yes")  # each one token in SmolLM2's vocabulary
NO = ("no", "No", " no", " No")


def judge_prompt(question: str, passage: str) -> str:
    """The user turn the judge sees."""
    return (
        f"Question: {question.strip()}\n\nPassage: {passage.strip()}\n\n"
        "Is this passage relevant to the question? Answer yes or no."
    )


def _answer_ids(tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """Token ids of the single-token spellings of "yes" and of "no"."""

    def ids(words: tuple[str, ...]) -> list[int]:
        enc = (tokenizer.encode(w, add_special_tokens=False).ids for w in words)
        return [e[0] for e in enc if len(e) == 1]

    return ids(YES), ids(NO)


@torch.inference_mode()
def relevance_logprob(model: Llama, tokenizer: Tokenizer, question: str, passage: str) -> float:
    """log p(yes) / (p(yes) + p(no)) at the judge's first reply token, in nats (<= 0).

    p(yes) sums the probabilities of "yes", "Yes", " yes" and " Yes" (the model may start
    its reply with any of them), p(no) likewise; 0 means certainly relevant.
    """
    ids = chat_prompt(tokenizer, judge_prompt(question, passage), system=JUDGE_SYSTEM)
    x = torch.tensor([ids], dtype=torch.long, device=model.device)  # (1, T)
    logits = packed_model(model)(x, last_only=True)[0, -1].float()  # (V,)
    yes, no = _answer_ids(tokenizer)
    log_yes = torch.logsumexp(logits[yes], 0)
    log_both = torch.logsumexp(logits[yes + no], 0)
    return float(log_yes - log_both)


def relevance_scores(
    model: Llama,
    tokenizer: Tokenizer,
    question: str,
    passages: Sequence[str],
    *,
    emit: Emit = no_emit,
) -> list[float]:
    """:func:`relevance_logprob` of each passage, in the order given (one forward pass each,
    reporting progress after each)."""
    out = []
    for i, passage in enumerate(passages):
        out.append(relevance_logprob(model, tokenizer, question, passage))
        emit("progress", pct=100 * (i + 1) / len(passages), message=f"judged {i + 1}")
    return out
