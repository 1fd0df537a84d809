"""Dynamic int8 (W8A8) from scratch, and the outlier problem SmoothQuant fixes.

Weights are int8, one scale per output row (``learn.lab.quantize.quantize_int8``); each
call's activations are quantized to int8 as they arrive, one scale per *token* (row), and
the multiply runs on integers (int8 × int8 summed in int32, ``torch._int_mm``)::

    sx[t] = max_k |x[t, k]| / 127             qx = round(x / sx) ∈ [-127, 127]
    y[t, o] = (Σ_k qx[t, k] · qw[o, k]) · sx[t] · sw[o]

PyTorch's ``quantize_dynamic`` gives the whole activation tensor one scale (and on x86
only 7 bits of range), so one large value anywhere sets every token's step. Per-token
scales confine a loud token to its own row. What remains are a few *channels* (input
columns) that are large in every token (Dettmers et al., 2022, LLM.int8()); SmoothQuant
(Xiao et al., 2023) moves their range into the weights, which are quantized per output
row and barely notice::

    X · Wᵀ = (X · diag(s)⁻¹) · (W · diag(s))ᵀ      s_j = max|X_j|^α / max|W_j|^(1-α)

with max|X_j| measured on a few calibration texts (``activation_absmax`` in
``learn.lab.quantized_models``). The identity is exact in real numbers: only the
rounding that follows sees the difference.

Applied at run time (``Int8DynamicLinear(smooth=s)``) the migration costs a pass over x
per layer, and on a CPU such passes cost as much as the int8 matmul. The paper instead
folds diag(s)⁻¹ into whatever produced x, offline (``fold_smoothing_bert`` for MiniLM's
BERT layers), so the quantized model runs PyTorch's one-op dynamic int8 unchanged
(``folded_int8_bert``).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

from learn.lab.quantize import quantize_int8

ALPHA = 0.5  # SmoothQuant's default split of the range between activations and weights


def smoothing_factors(act_absmax: Tensor, weight: Tensor, alpha: float = ALPHA) -> Tensor:
    """s (in,) for a (out, in) weight whose inputs reached ``act_absmax`` (in,).

    ``alpha`` = 0 leaves the activations alone; 1 moves all their range into the weights.
    """
    w_absmax = weight.detach().float().abs().amax(dim=0).clamp(min=1e-5)  # (in,)
    a = act_absmax.float().clamp(min=1e-5)
    return (a**alpha / w_absmax ** (1 - alpha)).clamp(min=1e-5)


def quantize_per_token(x: Tensor) -> tuple[Tensor, Tensor]:
    """x (M, K) float -> (qx (M, K) int8, sx (M, 1) float32): one symmetric scale a row."""
    sx = (x.abs().amax(dim=-1, keepdim=True) / 127).clamp(min=1e-12)
    return torch.round(x / sx).clamp(-127, 127).to(torch.int8), sx


def fbgemm_available() -> bool:
    """PyTorch's x86 int8 kernels (the ones ``quantize_dynamic`` uses) are built in."""
    return "fbgemm" in torch.backends.quantized.supported_engines


class Int8DynamicLinear(nn.Module):
    """``nn.Linear`` as W8A8: int8 weights per row, int8 activations per token, integer
    matmul. ``smooth`` (in,), when given, is migrated first: the layer stores
    ``W · diag(s)`` and divides its input by ``s``, which computes the same function.

    Two ways to run the same arithmetic. ``fused=False``: our per-token quantization and
    ``torch._int_mm``, every step visible. ``fused=True`` (on x86): PyTorch's fbgemm
    kernel, which quantizes, multiplies and restores in one call but with one scale per
    tensor (and 7 bits, ``reduce_range``, so that int16 partial sums cannot overflow on
    CPUs without VNNI); dividing each row by its own max first makes that one scale a
    per-token one, and the rows are scaled back after. Element passes cost as much as the
    int8 matmul itself on a CPU, so fusing is what makes int8 faster than fp32 there.
    """

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor | None = None,
        *,
        smooth: Tensor | None = None,
        fused: bool = True,
    ) -> None:
        """``weight`` (out, in) as in ``nn.Linear``; ``bias`` (out,) or None."""
        super().__init__()
        w = weight.detach().float()
        self.out_features, self.in_features = w.shape
        if smooth is not None:
            w = w * smooth.float()[None, :]  # W · diag(s): column j times s_j
        weights = quantize_int8(w)
        self.fused = fused and fbgemm_available()
        self.register_buffer("inv_smooth", None if smooth is None else 1 / smooth.float())
        self.register_buffer("bias", None if bias is None else bias.detach().float())
        if self.fused:  # the codes live only in fbgemm's packed form (weight_bytes reads it)
            zero = torch.zeros(self.out_features, dtype=torch.int64)
            with warnings.catch_warnings():  # quantized tensors are deprecated; fbgemm is not
                warnings.simplefilter("ignore")
                qw = torch._make_per_channel_quantized_tensor(
                    weights.q, weights.scale.double(), zero, 0
                )
                self._packed_params = torch.ops.quantized.linear_prepack(qw, None)
        else:
            self.register_buffer("q", weights.q)  # (out, in) int8
            self.register_buffer("scale", weights.scale)  # (out,)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features).float()  # (M, in)
        owned = flat.data_ptr() != x.data_ptr()  # a copy already: it may change in place
        if self.inv_smooth is not None:
            flat, owned = flat * self.inv_smooth, True  # X · diag(s)⁻¹
        if self.fused:  # in place where it can: a fresh (M, out) tensor costs a matmul's time
            # few passes over x: each is a parallel region that waits for its slowest
            # thread, and with 2 threads on 2 busy cores each took over half the int8
            # matmul's time (torch.profiler); one pass finds both ends of each row
            low, high = torch.aminmax(flat, dim=-1, keepdim=True)
            sx = torch.maximum(high, -low).clamp_(min=1e-12)  # (M, 1): max |x|, no |x| copy
            rows = flat.div_(sx) if owned else flat / sx  # each row now spans [-1, 1]
            y = torch.ops.quantized.linear_dynamic(rows, self._packed_params, True)
            if self.bias is None:
                y.mul_(sx)
            else:
                torch.addcmul(self.bias, y, sx, out=y)  # y · sx + bias, in one pass
            return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        qx, sx = quantize_per_token(flat)
        acc = torch._int_mm(qx, self.q.T)  # (M, out) int32: exact integer sums
        y = torch.mul(acc, sx).mul_(self.scale)  # int32 · float32 -> float32
        if self.bias is not None:
            y.add_(self.bias)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


class ScaledInput(nn.Module):
    """``inner(x · diag(s)⁻¹, ...)``: the one multiply a smoothing factor costs when the
    tensor it divides is also used unscaled elsewhere (BERT's residual stream)."""

    def __init__(self, inner: nn.Module, smooth: Tensor) -> None:
        """``smooth`` (in,): the factors s of the layer(s) ``inner`` feeds."""
        super().__init__()
        self.inner = inner
        self.register_buffer("inv_smooth", 1 / smooth.float())

    def forward(self, x: Tensor, *args: object, **kwargs: object) -> object:
        """x (..., in) -> whatever ``inner`` returns for x / s."""
        return self.inner(x * self.inv_smooth, *args, **kwargs)


@torch.no_grad()
def fold_smoothing_bert(model: nn.Module, absmax: dict[str, Tensor], alpha: float = ALPHA) -> int:
    """Migrate SmoothQuant's factors into a BERT encoder's weights, in place; returns how
    many linear layers were smoothed. The float function is unchanged (up to rounding).

    ``absmax``: ``{linear name: (in,) max |x_j|}`` from ``activation_absmax``. Per layer::

        Q, K, V read h:   W_{q,k,v} · diag(s)  and  h / s        (one s for all three)
        attention out:    ctx = P · V, and P mixes tokens, not channels, so dividing V's
                          rows (and bias) by s divides ctx's columns by s:
                          W_v ← diag(s)⁻¹ · W_v,  b_v ← b_v / s,  W_o ← W_o · diag(s)
        FFN in reads a:   W_i · diag(s)  and  a / s
        FFN out:          left alone: its input is GELU(·), which no weight can absorb

    BERT is post-LayerNorm: h and a are LayerNorm outputs that are *also* the residual
    added before the next LayerNorm, so dividing that LayerNorm's γ and β by s (what the
    paper does in pre-LN models, where the LayerNorm feeds only the linears) would change
    the residual too, and LayerNorm(z / s) ≠ LayerNorm(z) / s. So h / s and a / s run as
    one multiply each (``ScaledInput``) on the branch into the linears: two passes over a
    (tokens, 384) tensor per layer instead of several per linear. Only the V→output fold
    is free.
    """
    smoothed = 0
    for i, layer in enumerate(model.encoder.layer):
        pre = f"encoder.layer.{i}."
        attn = layer.attention.self
        qkv = [attn.query, attn.key, attn.value]
        name = pre + "attention.self.query"
        if name in absmax:
            s = smoothing_factors(absmax[name], torch.cat([m.weight for m in qkv]), alpha)
            for m in qkv:
                m.weight.mul_(s[None, :])
            layer.attention.self = ScaledInput(attn, s)
            smoothed += 3
        name = pre + "attention.output.dense"
        if name in absmax:
            out = layer.attention.output.dense
            s = smoothing_factors(absmax[name], out.weight, alpha)
            attn.value.weight.div_(s[:, None])
            attn.value.bias.div_(s)
            out.weight.mul_(s[None, :])
            smoothed += 1
        name = pre + "intermediate.dense"
        if name in absmax:
            dense = layer.intermediate.dense
            s = smoothing_factors(absmax[name], dense.weight, alpha)
            dense.weight.mul_(s[None, :])
            layer.intermediate = ScaledInput(layer.intermediate, s)
            smoothed += 1
    return smoothed


def folded_int8_bert(
    model: nn.Module, absmax: dict[str, Tensor], alpha: float = ALPHA, skip: tuple[str, ...] = ()
) -> nn.Module:
    """A copy of a BERT encoder (float32, CPU) as dynamic int8 after SmoothQuant's folding.

    ``fold_smoothing_bert`` migrates the activation range of Q/K/V, the attention output
    and the FFN input into their weights; those linears then run as PyTorch's one-op
    dynamic int8 (``quantize_dynamic``: fbgemm quantizes, multiplies and restores in one
    call; weights per output row, activations one scale per tensor). The FFN output reads
    GELU(·), which nothing can absorb and whose few large channels cost cosine ~0.012 at
    one scale per tensor (MiniLM, measured), so it keeps per-token scales
    (``Int8DynamicLinear``). Linears whose name contains a ``skip`` entry stay float.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    copied = copy.deepcopy(model).float().cpu().eval()
    fold_smoothing_bert(copied, absmax, alpha)
    for i, layer in enumerate(copied.encoder.layer):
        ffn_out = layer.output.dense
        if not any(s in f"encoder.layer.{i}.output.dense" for s in skip):
            layer.output.dense = Int8DynamicLinear(ffn_out.weight, ffn_out.bias)
    names = {
        name
        for name, module in copied.named_modules()
        if isinstance(module, nn.Linear) and not any(s in name for s in skip)
    }
    with warnings.catch_warnings():  # deprecated in favour of torchao; still the CPU path
        warnings.simplefilter("ignore")
        spec = dict.fromkeys(names, per_channel_dynamic_qconfig)
        return quantize_dynamic(copied, spec, dtype=torch.qint8, inplace=True)
