"""Weight quantization from scratch: int8 per-channel and int4 group-wise, and the layers
that run on the quantized weights.

The pattern follows gpt-fast's: a *quantizer* turns a model's float weights into a state
dict of small integers plus scales, and a *runtime module* (a drop-in for ``nn.Linear``)
computes with them. Both schemes are weight-only: activations stay in floating point.

int8, symmetric, one scale per output channel (row)::

    scale[r] = max_c |W[r, c]| / 127          q = round(W / scale) ∈ [-127, 127]
    W ≈ q · scale                             |W - q · scale| ≤ scale / 2

int4, asymmetric, one (scale, minimum) per group of ``group_size`` input columns::

    scale = (max - min) / 15                  q = round((W - min) / scale) ∈ [0, 15]
    W ≈ q · scale + min                       |W - (q · scale + min)| ≤ scale / 2

Two int4 values share a byte. On the CPU the layers call PyTorch's packed-weight kernels
(``_weight_int8pack_mm``, ``_weight_int4pack_mm_for_cpu``) when present; everywhere else
they de-quantize and multiply, which is slower but gives the same numbers.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GROUP_SIZES = (32, 64, 128, 256)


# ------------------------------------------------------------------------------- int8


class Int8Weights(NamedTuple):
    q: Tensor  # (out, in) int8
    scale: Tensor  # (out,) float32


def quantize_int8(weight: Tensor) -> Int8Weights:
    """Symmetric per-output-channel int8 of a (out, in) weight."""
    w = weight.detach().float().contiguous()
    scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return Int8Weights(q, scale)


def dequantize_int8(weights: Int8Weights) -> Tensor:
    return weights.q.float() * weights.scale[:, None]


# ------------------------------------------------------------------------------- int4


class Int4Weights(NamedTuple):
    packed: Tensor  # (out, in / 2) uint8: two 4-bit codes per byte, low nibble first
    scale: Tensor  # (out, in / group_size) float32
    minimum: Tensor  # (out, in / group_size) float32
    group_size: int


def quantize_int4(weight: Tensor, group_size: int = 64) -> Int4Weights:
    """Asymmetric group-wise int4 of a (out, in) weight; ``in`` must divide by group_size."""
    out_features, in_features = weight.shape
    if in_features % group_size or group_size % 2:
        raise ValueError(f"in_features {in_features} is not a multiple of {group_size}")
    w = weight.detach().float().reshape(out_features, -1, group_size)
    low, high = w.amin(dim=-1), w.amax(dim=-1)
    scale = ((high - low) / 15).clamp(min=1e-12)
    codes = torch.round((w - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.uint8)
    codes = codes.reshape(out_features, in_features)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return Int4Weights(packed, scale, low, group_size)


def int4_codes(weights: Int4Weights) -> Tensor:
    """The (out, in) codes 0-15 back out of their bytes."""
    low, high = weights.packed & 0x0F, weights.packed >> 4
    return torch.stack([low, high], dim=-1).reshape(weights.packed.shape[0], -1)


def dequantize_int4(weights: Int4Weights) -> Tensor:
    codes = int4_codes(weights).float()
    out_features, in_features = codes.shape
    grouped = codes.reshape(out_features, -1, weights.group_size)
    w = grouped * weights.scale[..., None] + weights.minimum[..., None]
    return w.reshape(out_features, in_features)


# ---------------------------------------------------------------------- runtime modules


# PyTorch's packed-weight CPU kernels are built for decoding (a handful of rows at a
# time); on large batches de-quantizing once and calling the float matmul is faster.
FUSED_MAX_ROWS = 16


def _has_op(name: str) -> bool:
    return hasattr(torch.ops.aten, name)


def _rows(x: Tensor) -> int:
    return x.numel() // x.shape[-1]


class Int8Linear(nn.Module):
    """``nn.Linear`` on int8 per-channel weights: ``y = (x · qᵀ) · scale + bias``."""

    def __init__(self, weight: Tensor, bias: Tensor | None = None, *, fused: bool = True) -> None:
        """``weight`` (out, in) as in ``nn.Linear``; ``bias`` (out,) or None."""
        super().__init__()
        weights = quantize_int8(weight)
        self.out_features, self.in_features = weight.shape
        self.register_buffer("q", weights.q)
        self.register_buffer("scale", weights.scale)
        self.register_buffer("bias", None if bias is None else bias.detach().float())
        self.fused = fused and _has_op("_weight_int8pack_mm")
        # the kernel's own scale argument, left at 1: the fp32 scale is applied after it
        self.register_buffer("_ones", torch.ones(self.out_features, dtype=torch.bfloat16), False)

    def forward(self, x: Tensor) -> Tensor:
        if self.fused and x.device.type == "cpu" and _rows(x) <= FUSED_MAX_ROWS:
            # PyTorch's int8 CPU kernel is fast with bf16 activations only (on fp32 ones it
            # is ~10x slower than a float matmul), so decoding computes in bf16 here
            flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
            y = torch.ops.aten._weight_int8pack_mm(flat, self.q, self._ones)
            y = (y.to(x.dtype) * self.scale.to(x.dtype)).reshape(*x.shape[:-1], self.out_features)
        else:  # gpt-fast's form: the scale is applied after the matmul, per output
            y = F.linear(x, self.q.to(x.dtype)) * self.scale.to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def dequantized(self) -> Tensor:
        return dequantize_int8(Int8Weights(self.q, self.scale))


class Int4Linear(nn.Module):
    """``nn.Linear`` on int4 group-wise weights (two codes a byte).

    With PyTorch's CPU int4 kernel the codes are stored once, in the kernel's own packed
    layout (still half a byte per weight), with ``scale_zero`` (in/group, out, 2) holding
    each group's scale and its zero point: the kernel computes ``(q - 8) · scale + zero``.
    """

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None = None,
        group_size: int = 64,
        *,
        fused: bool = True,
    ) -> None:
        """``weight`` (out, in) as in ``nn.Linear``; ``in`` must divide by ``group_size``."""
        super().__init__()
        weights = quantize_int4(weight, group_size)
        self.out_features, self.in_features = weight.shape
        self.group_size = group_size
        self.fused = fused and _has_op("_weight_int4pack_mm_for_cpu")
        self.register_buffer("bias", None if bias is None else bias.detach().float())
        if self.fused:
            codes = int4_codes(weights).to(torch.int32)
            zero = weights.minimum + 8 * weights.scale
            scale_zero = torch.stack([weights.scale, zero], dim=-1).transpose(0, 1)
            self.register_buffer(
                "packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
            )
            self.register_buffer("scale_zero", scale_zero.contiguous())
        else:
            self.register_buffer("packed", weights.packed)
            self.register_buffer("scale", weights.scale)
            self.register_buffer("minimum", weights.minimum)

    def _matmul(self, x: Tensor) -> Tensor:
        if self.fused:
            flat = x.float().reshape(-1, self.in_features)
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(
                flat, self.packed, self.group_size, self.scale_zero
            )
            return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return F.linear(x, self._dequantize().to(x.dtype))

    def forward(self, x: Tensor) -> Tensor:
        y = self._matmul(x)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def _dequantize(self) -> Tensor:
        if not self.fused:
            weights = Int4Weights(self.packed, self.scale, self.minimum, self.group_size)
            return dequantize_int4(weights)
        # read the weight back through the kernel, a block of unit rows at a time
        eye = torch.eye(self.in_features, device=self.packed.device)
        blocks = [
            torch.ops.aten._weight_int4pack_mm_for_cpu(
                eye[i : i + FUSED_MAX_ROWS], self.packed, self.group_size, self.scale_zero
            )
            for i in range(0, self.in_features, FUSED_MAX_ROWS)
        ]
        return torch.cat(blocks).T

    def dequantized(self) -> Tensor:
        """The (out, in) weight this layer multiplies by."""
        return self._dequantize()


class Int8Embedding(nn.Module):
    """A tied (vocab, C) table in int8, one scale per token row.

    ``lookup`` de-quantizes only the rows asked for; ``forward`` is the output projection
    (logits = x · tableᵀ) through :class:`Int8Linear`. A vocabulary of 49,152 × 576 is a
    fifth of SmolLM2's weights, so leaving it in fp32 caps what quantization can save.
    """

    def __init__(self, table: Tensor, *, fused: bool = True) -> None:
        super().__init__()
        self.linear = Int8Linear(table, fused=fused)

    def lookup(self, ids: Tensor) -> Tensor:
        return self.linear.q[ids].float() * self.linear.scale[ids][..., None]

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


# ------------------------------------------------------------------------ whole models


@dataclass(frozen=True)
class Variant:
    """One precision a model can be run at."""

    name: str
    label: str
    needs_cuda: bool = False


VARIANTS = {
    v.name: v
    for v in (
        Variant("fp32", "fp32 (reference)"),
        Variant("bf16", "bf16 weights and activations"),
        Variant("fp16", "fp16 (CUDA only)", needs_cuda=True),
        Variant("int8-dynamic", "int8 dynamic (PyTorch, CPU)"),
        Variant("int8-weight", "int8 weight-only, per channel (ours)"),
        Variant("int4-weight", "int4 weight-only, group-wise (ours)"),
    )
}


def linear_weight(module: nn.Module) -> tuple[Tensor, Tensor | None] | None:
    """(weight (out, in), bias) of a linear layer, or None if ``module`` is not one.

    Besides ``nn.Linear``, a module that stores its weight transposed, (in, out), and says
    so with ``weight_layout = "in_out"`` (``learn.lab.llama.Linear``) counts too.
    """
    if isinstance(module, nn.Linear):
        return module.weight, module.bias
    if getattr(module, "weight_layout", None) == "in_out":
        return module.weight.T, getattr(module, "bias", None)
    return None


def replace_linears(
    model: nn.Module,
    make: Callable[[Tensor, Tensor | None], nn.Module],
    *,
    skip: tuple[str, ...] = (),
) -> int:
    """Swap every linear layer (except names containing a ``skip`` entry) in place for
    ``make(weight (out, in), bias)``; returns how many were swapped."""
    swapped = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            found = linear_weight(child)
            if found is not None and not any(s in full for s in skip):
                setattr(module, child_name, make(*found))
                swapped += 1
    return swapped


def quantized_copy(
    model: nn.Module,
    variant: str,
    *,
    group_size: int = 64,
    skip: tuple[str, ...] = (),
    fused: bool = True,
) -> nn.Module:
    """A copy of ``model`` (on the CPU or its device) at ``variant`` precision.

    ``fused`` lets the int4 layers use PyTorch's packed CPU kernel: right for decoding a
    few tokens at a time; for big batches (embedding many texts) de-quantizing per call
    and using the float matmul is faster, so pass ``fused=False`` there.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: one of {[*VARIANTS]}")
    copied = copy.deepcopy(model).eval()
    if variant == "fp32":
        return copied.float()
    if variant == "bf16":
        return copied.to(torch.bfloat16)
    if variant == "fp16":
        return copied.to(torch.float16)
    if variant == "int8-dynamic":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        replace_linears(copied, _plain_linear)  # torch only converts nn.Linear itself
        with warnings.catch_warnings():  # deprecated in favour of torchao; still the CPU path
            warnings.simplefilter("ignore")  # per-channel scales: one outlier row spoils less
            spec = {nn.Linear: per_channel_dynamic_qconfig}
            return quantize_dynamic(copied.float().cpu(), spec, dtype=torch.qint8)
    tie = getattr(copied, "quantize_tied_embedding", None)
    if tie is not None:  # the tied table: int8 in both schemes (rows must be gathered)
        tie(lambda table: Int8Embedding(table, fused=fused))
    if variant == "int8-weight":
        replace_linears(copied, lambda w, b: Int8Linear(w, b, fused=fused), skip=skip)
        return copied
    replace_linears(copied, lambda w, b: Int4Linear(w, b, group_size, fused=fused), skip=skip)
    return copied


def _plain_linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight.data = weight.detach().float().contiguous()
    if bias is not None:
        layer.bias.data = bias.detach().float()
    return layer


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and buffers (each storage once), plus the int8 weights that
    PyTorch's dynamic-quantized layers keep in packed form outside both."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    for module in model.modules():
        packed = getattr(module, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):
            weight, bias = packed._weight_bias()
            total += weight.numel()  # int8 codes
            if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                scales, zeros = weight.q_per_channel_scales(), weight.q_per_channel_zero_points()
                total += scales.numel() * scales.element_size() + zeros.numel() * 8
            else:
                total += 16  # one scale and one zero point
            total += 0 if bias is None else bias.numel() * bias.element_size()
    return total


# ------------------------------------------------------------------------------ quality


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
