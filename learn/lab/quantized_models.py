"""Whole models at each precision: a quantized copy of a model, and its weight bytes.

``quantized_copy(model, variant)`` deep-copies a model and converts it: fp32, bf16 and
fp16 by casting; ``int8-dynamic`` through PyTorch's dynamic quantization (CPU only, one
activation scale per tensor); ``int8-smooth``, our dynamic int8 with per-token scales
after SmoothQuant's migration (``learn.lab.smoothquant``), calibrated on texts the caller
runs; and ``int8-weight`` / ``int4-weight`` by swapping every linear layer for our runtime
layers from ``learn.lab.quantize`` (gpt-fast's ``convert_for_runtime`` step). The variant
names and labels are ``learn.lab.facts``'s, so the forms offer exactly these.
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
from learn.lab.quantize import Int4Embedding, Int4Linear, Int8Embedding, Int8Linear
from learn.lab.smoothquant import ALPHA, Int8DynamicLinear, smoothing_factors


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
    make: Callable[..., nn.Module],
    *,
    skip: tuple[str, ...] = (),
    named: bool = False,
) -> int:
    """Swap every linear layer (except names containing a ``skip`` entry) in place for
    ``make(weight (out, in), bias)`` (``make(weight, bias, name)`` when ``named``);
    returns how many were swapped."""
    swapped = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            found = linear_weight(child)
            if found is not None and not any(s in full for s in skip):
                setattr(module, child_name, make(*found, full) if named else make(*found))
                swapped += 1
    return swapped


def activation_absmax(model: nn.Module, run: Callable[[nn.Module], object]) -> dict[str, Tensor]:
    """max |x_j| over every token of ``run(model)``, per input channel j of each linear
    layer: ``{layer name: (in,) float32}``, the statistics SmoothQuant calibrates with."""
    found: dict[str, Tensor] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_: nn.Module, args: tuple[Tensor, ...]) -> None:
            x = args[0].detach().float()
            seen = x.abs().reshape(-1, x.shape[-1]).amax(dim=0).cpu()  # (in,)
            found[name] = seen if name not in found else torch.maximum(found[name], seen)

        return hook

    handles = [
        module.register_forward_pre_hook(record(name))
        for name, module in model.named_modules()
        if linear_weight(module) is not None
    ]
    try:
        with torch.inference_mode():
            run(model)
    finally:
        for handle in handles:
            handle.remove()
    return found


def quantized_copy(
    model: nn.Module,
    variant: str,
    *,
    group_size: int = 64,
    skip: tuple[str, ...] = (),
    fused: bool = True,
    calibrate: Callable[[nn.Module], object] | None = None,
    alpha: float = ALPHA,
) -> nn.Module:
    """A copy of ``model`` (on the CPU or its device) at ``variant`` precision.

    ``fused`` lets the int4 layers use PyTorch's packed CPU kernel: right for decoding a
    few tokens at a time; for big batches (embedding many texts) de-quantizing per call
    and using the float matmul is faster, so pass ``fused=False`` there.
    For ``int8-smooth``, ``fused`` picks fbgemm's int8 kernel (fast, 7-bit activations)
    over ``torch._int_mm`` (8-bit, exact sums, slower on most CPUs). It needs
    ``calibrate(model)``, which runs the fp32 copy on a few inputs (not the ones it will be
    scored on) so each layer's input range can be measured.
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
    if variant == "int8-smooth":
        if calibrate is None:
            raise ValueError("int8-smooth needs calibrate(model) to measure activations")
        copied = copied.float().cpu()
        absmax = activation_absmax(copied, calibrate)

        def smoothed(w: Tensor, b: Tensor | None, name: str) -> nn.Module:
            s = smoothing_factors(absmax[name], w, alpha) if name in absmax else None
            return Int8DynamicLinear(w, b, smooth=s, fused=fused)

        replace_linears(copied, smoothed, skip=skip, named=True)
        return copied
    tie = getattr(copied, "quantize_tied_embedding", None)
    if variant == "int8-weight":
        if tie is not None:  # the tied table: rows gathered for inputs, a matmul for logits
            tie(lambda table: Int8Embedding(table, fused=fused))
        replace_linears(copied, lambda w, b: Int8Linear(w, b, fused=fused), skip=skip)
        return copied
    if tie is not None:
        tie(lambda table: Int4Embedding(table, group_size, fused=fused))
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
    fbgemm keeps in packed form outside both (PyTorch's dynamic layers and our fused
    ``Int8DynamicLinear``)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    for module in model.modules():
        packed = getattr(module, "_packed_params", None)
        if isinstance(module, Int8DynamicLinear) and module.fused:
            weight, bias = packed.unpack()  # fbgemm's packed codes, our layer's only copy
        elif packed is not None and hasattr(packed, "_weight_bias"):
            weight, bias = packed._weight_bias()
        else:
            continue
        total += weight.numel()  # int8 codes
        if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scales, zeros = weight.q_per_channel_scales(), weight.q_per_channel_zero_points()
            total += scales.numel() * scales.element_size() + zeros.numel() * 8
        else:
            total += 16  # one scale and one zero point
        total += 0 if bias is None else bias.numel() * bias.element_size()
    return total
