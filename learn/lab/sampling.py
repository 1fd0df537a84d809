"""Choosing the next token from the model's logits: greedy, or a temperature draw
narrowed by top-k and top-p (nucleus) filtering.

Temperature divides the logits before the softmax: below 1 it sharpens the distribution
toward the likeliest tokens, above 1 it flattens it. Top-k keeps the k likeliest tokens;
top-p keeps the smallest set whose probabilities add up to p. Both cut off the long tail
of unlikely tokens, where one unlucky draw can derail the rest of the text.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sample(
    logits: Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Pick a token id from logits (vocab,). temperature <= 0 means greedy (argmax).

    Otherwise: divide by temperature, keep the ``top_k`` most likely, then the smallest set
    whose probability reaches ``top_p`` (nucleus), renormalise and draw.
    """
    if temperature <= 0:
        return int(logits.argmax())
    logits = logits.float() / temperature  # (vocab,)
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        probs, order = logits.softmax(-1).sort(descending=True)  # (vocab,) each
        outside = probs.cumsum(-1) - probs >= top_p  # mass before this token already >= p
        logits[order[outside]] = float("-inf")
    probs = logits.softmax(-1)  # (vocab,)
    return int(torch.multinomial(probs, 1, generator=generator))
