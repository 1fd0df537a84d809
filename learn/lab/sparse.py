"""Sliding-window attention on a real model: what a window costs in quality on a text.

The model (``learn.lab.llama.Llama``) is run block by block with our own boolean mask in
place of the causal one, so the same weights can be scored with full attention, with a
window of the last W keys, and with a window plus a few "sink" tokens kept from the start
(the first tokens, which many heads use as a resting place for attention).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from learn.lab.attention import sliding_window_mask
from learn.lab.events import Emit, no_emit
from learn.lab.quality import agreement, kl_divergence, perplexity


def window_mask(t: int, window: int | None, sinks: int = 0, device: Any = "cpu") -> Tensor:
    """Boolean (t, t), True = may attend: causal, limited to the last ``window`` keys (None =
    no limit), plus the first ``sinks`` keys for every query."""
    if window is None:
        return torch.ones(t, t, dtype=torch.bool, device=device).tril()
    mask = sliding_window_mask(t, window, device)
    if sinks:
        mask[:, :sinks] = torch.ones(t, t, dtype=torch.bool, device=device).tril()[:, :sinks]
    return mask


@torch.inference_mode()
def masked_logits(model: Any, ids: Tensor, mask: Tensor) -> Tensor:
    """Logits (T, vocab) of ``ids`` (1, T) with ``mask`` (T, T) in every layer."""
    t = ids.shape[1]
    cos, sin = model._rope()
    cos, sin = cos[:t], sin[:t]  # (T, hs)
    x = model.embed_tokens(ids)  # (1, T, C)
    for i, block in enumerate(model.layers):
        h, _ = block.attention(block.attention_norm(x), cos, sin, mask, None, i, 0)
        x = x + h
        x = x + block.feed_forward(block.ffn_norm(x))
    return model.output(model.norm(x))[0].float()  # (T, vocab)


def window_quality(
    model: Any,
    ids: list[int],
    windows: list[int],
    *,
    sinks: int = 4,
    emit: Emit = no_emit,
) -> dict[str, Any]:
    """Perplexity, top-1 agreement and KL against full attention for each window size.

    Each window is scored twice: alone, and with the first ``sinks`` tokens always visible.
    Returns ``{tokens, full_perplexity, rows: [{window, sinks, perplexity, agreement, kl}]}``.
    """
    x = torch.tensor([ids], device=model.device)
    t = len(ids)
    targets = x[0, 1:].cpu()
    full = masked_logits(model, x, window_mask(t, None, device=model.device))[:-1].cpu()
    rows = []
    plan = [(w, s) for w in windows for s in (0, sinks)]
    for n, (window, kept) in enumerate(plan):
        emit("progress", pct=100 * n / len(plan), message=f"window {window}, sinks {kept}")
        mask = window_mask(t, window, kept, device=model.device)
        logits = masked_logits(model, x, mask)[:-1].cpu()
        row = {
            "window": window,
            "sinks": kept,
            "perplexity": round(perplexity(logits, targets), 4),
            "agreement": round(agreement(full, logits), 4),
            "kl": round(kl_divergence(full, logits), 5),
        }
        rows.append(row)
        emit("partial", row=row)
    return {
        "tokens": t,
        "full_perplexity": round(perplexity(full, targets), 4),
        "rows": rows,
        "device": str(model.device),
    }
