"""Whole models at each precision: a quantized copy of a model, and its weight bytes.

``quantized_copy(model, variant)`` deep-copies a model and converts it: fp32, bf16 and
fp16 by casting; ``int8-dynamic`` through PyTorch's dynamic quantization (CPU only); and
``int8-weight`` / ``int4-weight`` by swapping every linear layer for our runtime layers
from ``learn.lab.quantize`` (gpt-fast's ``convert_for_runtime`` step). The variant names
and labels are ``learn.lab.facts``'s, so the forms offer exactly these.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import get_args

import torch
from torch import Tensor, nn

from learn.lab.facts import CUDA_ONLY_VARIANTS, VARIANT_LABELS, VariantName
from learn.lab.quantize import Int4Linear, Int8Embedding, Int8Linear


@dataclass(frozen=True)
class Variant:
    """One precision a model can be run at."""

    name: VariantName
    label: str
    needs_cuda: bool = False


# the names, labels and CUDA-only set the forms validate against (learn.lab.facts)
VARIANTS: dict[str, Variant] = {
    name: Variant(name, VARIANT_LABELS[name], needs_cuda=name in CUDA_ONLY_VARIANTS)
    for name in get_args(VariantName)
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
