"""What an approximation costs: next-token metrics on logits, and one weight's error.

The logit metrics compare a changed model (quantized, sparse attention) with its
reference on the same positions; ``inspect_weight`` shows what quantizing one (out, in)
weight does to its values, with the error bound of ``learn.lab.quantize`` checked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from learn.lab.quantize import dequantize_int4, dequantize_int8, quantize_int4, quantize_int8


def perplexity(logits: Tensor, targets: Tensor) -> float:
    """exp(mean negative log-likelihood): logits (T, V) predict targets (T,)."""
    nll = F.cross_entropy(logits.float(), targets, reduction="mean")
    return float(torch.exp(nll))


def agreement(reference: Tensor, other: Tensor) -> float:
    """Share of positions where both logits (T, V) pick the same top-1 token."""
    return float((reference.argmax(-1) == other.argmax(-1)).float().mean())


def kl_divergence(reference: Tensor, other: Tensor) -> float:
    """Mean over positions of KL(p_ref ‖ p_other) in nats, from logits (T, V)."""
    log_p = F.log_softmax(reference.float(), dim=-1)
    log_q = F.log_softmax(other.float(), dim=-1)
    return float(F.kl_div(log_q, log_p, log_target=True, reduction="batchmean"))


def histogram(values: Tensor, bins: int = 60) -> dict[str, list[float]]:
    """``{edges, counts}`` of a tensor's values (edges has bins + 1 entries)."""
    flat = values.detach().float().flatten()
    low, high = float(flat.min()), float(flat.max())
    if high <= low:
        high = low + 1e-6
    counts = torch.histc(flat, bins=bins, min=low, max=high)
    edges = torch.linspace(low, high, bins + 1)
    return {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]}


def inspect_weight(weight: Tensor, scheme: str, group_size: int = 64) -> dict[str, object]:
    """What quantizing one (out, in) weight does: histograms before/after, scales, error.

    Errors are in units of the weight; ``max_error_over_half_scale`` is ≤ 1 when every
    element is within half a quantization step, as the maths promises.
    """
    w = weight.detach().float().cpu()
    if scheme == "int8":
        q8 = quantize_int8(w)
        restored, steps = dequantize_int8(q8), q8.scale[:, None].expand_as(w)
        scales = q8.scale
    elif scheme == "int4":
        q4 = quantize_int4(w, group_size)
        restored = dequantize_int4(q4)
        steps = q4.scale.repeat_interleave(group_size, dim=1)
        scales = q4.scale.flatten()
    else:
        raise ValueError("scheme is int8 or int4")
    error = restored - w
    return {
        "shape": list(w.shape),
        "scheme": scheme,
        "group_size": group_size if scheme == "int4" else None,
        "before": histogram(w),
        "after": histogram(restored),
        "scales": histogram(scales, bins=40),
        "error": histogram(error),
        "max_abs_error": float(error.abs().max()),
        "mean_abs_error": float(error.abs().mean()),
        "max_error_over_half_scale": float((error.abs() / (steps / 2)).max()),
        "distinct_values_after": int(torch.unique(restored).numel()),
    }
