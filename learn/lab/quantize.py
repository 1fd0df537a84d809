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
(``_weight_int8pack_mm``, ``_weight_int4pack_mm_for_cpu``) when present; on CUDA the int4
layer calls ``_weight_int4pack_mm`` (the tinygemm kernel gpt-fast uses), with the weights
packed for it by ``_convert_weight_to_int4pack``; everywhere else they de-quantize and
multiply, which is slower but gives the same numbers. Each device's kernel has its own
packed layout, so int4 layers are built on the device they will run on.

Whole models at each precision are in ``learn.lab.quantized_models``; measuring what
quantization costs (perplexity, agreement, KL, a weight's error) in ``learn.lab.quality``.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


def quantize_int4(
    weight: Tensor, group_size: int = 64, scale_dtype: torch.dtype = torch.float32
) -> Int4Weights:
    """Asymmetric group-wise int4 of a (out, in) weight; ``in`` must divide by group_size.

    ``scale_dtype=torch.float16`` stores each group's scale and minimum in 16 bits, as
    GGUF's Q4_1 does (5 bits a weight at groups of 32 instead of 6); the codes are then
    rounded against the stored values, so the half-step bound still holds.
    """
    out_features, in_features = weight.shape
    if in_features % group_size or group_size % 2:
        raise ValueError(f"in_features {in_features} is not a multiple of {group_size}")
    w = weight.detach().float().reshape(out_features, -1, group_size)
    low = _rounded(w.amin(dim=-1), scale_dtype, down=True)  # stored minimum ≤ the true one
    tiny = torch.finfo(scale_dtype).tiny  # the smallest normal number: no 0 scale
    scale = _rounded(((w.amax(dim=-1) - low.float()) / 15).clamp(min=tiny), scale_dtype)
    steps = (w - low.float()[..., None]) / scale.float()[..., None]
    codes = torch.round(steps).clamp(0, 15).to(torch.uint8).reshape(out_features, in_features)
    packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
    return Int4Weights(packed, scale, low, group_size)


def _rounded(x: Tensor, dtype: torch.dtype, *, down: bool = False) -> Tensor:
    """``x`` in ``dtype``, rounded up (or down) rather than to nearest, so that the stored
    minimum and step still cover every weight of the group."""
    y = x.to(dtype)
    if down:
        return torch.where(y.float() > x, torch.nextafter(y, torch.full_like(y, -torch.inf)), y)
    return torch.where(y.float() < x, torch.nextafter(y, torch.full_like(y, torch.inf)), y)


def int4_codes(weights: Int4Weights) -> Tensor:
    """The (out, in) codes 0-15 back out of their bytes."""
    low, high = weights.packed & 0x0F, weights.packed >> 4
    return torch.stack([low, high], dim=-1).reshape(weights.packed.shape[0], -1)


def dequantize_int4(weights: Int4Weights) -> Tensor:
    codes = int4_codes(weights).float()
    out_features, in_features = codes.shape
    grouped = codes.reshape(out_features, -1, weights.group_size)
    w = grouped * weights.scale.float()[..., None] + weights.minimum.float()[..., None]
    return w.reshape(out_features, in_features)


# ---------------------------------------------------------------------- runtime modules


# PyTorch's packed-weight CPU kernels are built for decoding (a handful of rows at a
# time); on large batches de-quantizing once and calling the float matmul is faster.
FUSED_MAX_ROWS = 16


def _has_op(name: str) -> bool:
    return hasattr(torch.ops.aten, name)


def _rows(x: Tensor) -> int:
    return x.numel() // x.shape[-1]


# ------------------------------------------------------- int4 kernels, by device

INT4_GROUPS_CUDA = (32, 64, 128, 256)  # the group sizes the CUDA kernel is built for
INT4_BLOCK_ROWS = {"cpu": 64, "cuda": 8}  # rows packed together in each kernel's layout


def _int4_kernel(device: torch.device, out_features: int, in_features: int, group: int) -> str:
    """Which packed int4 kernel serves a (out, in) weight on ``device``: "cpu", "cuda", or
    "" when none does (then the layer de-quantizes and multiplies)."""
    if device.type == "cpu" and _has_op("_weight_int4pack_mm_for_cpu"):
        return "cpu"
    if (
        device.type == "cuda"
        and _has_op("_weight_int4pack_mm")
        and group in INT4_GROUPS_CUDA
        and out_features % 8 == 0
        and _inner_k_tiles(in_features)
    ):
        return "cuda"
    return ""


def _inner_k_tiles(in_features: int) -> int:
    """The CUDA layout packs 2, 4 or 8 tiles of 16 columns together (8: 16-byte loads);
    the largest that divides ``in_features``, or 0 if none does."""
    return next((t for t in (8, 4, 2) if in_features % (16 * t) == 0), 0)


def _pack_int4(codes: Tensor, kernel: str) -> Tensor:
    """(out, in) codes 0-15 (int32) in ``kernel``'s packed layout, on the codes' device."""
    if kernel == "cpu":
        return torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    # the CUDA packer reads two codes a byte, the even column in the high nibble
    pairs = ((codes[:, 0::2] << 4) | codes[:, 1::2]).to(torch.uint8).contiguous()
    return torch.ops.aten._convert_weight_to_int4pack(pairs, _inner_k_tiles(codes.shape[1]))


def _int4_mm(x: Tensor, packed: Tensor, group: int, scale_zero: Tensor, kernel: str) -> Tensor:
    """(m, in) bf16 times the packed (out, in) weight -> (m, out) bf16."""
    if kernel == "cpu":
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group, scale_zero)
    return torch.ops.aten._weight_int4pack_mm(x, packed, group, scale_zero)


def _packed_bytes(packed: Tensor) -> Tensor:
    """The packed weight as flat bytes in memory order (the CUDA layout is int32 words)."""
    return packed.flatten().view(torch.uint8)


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
    """``nn.Linear`` on int4 group-wise weights (two codes a byte, 16-bit scales).

    With PyTorch's int4 kernel for the weight's device (CPU, or CUDA: ``kernel``) the codes
    are stored once, in that kernel's own packed layout (still half a byte per weight),
    with ``scale_zero`` (in/group, out, 2) holding each group's scale and its zero point in
    bf16: both kernels compute ``(q - 8) · scale + zero``. They take bf16 activations (the
    CPU one runs a slow path on fp32, hundreds of times slower; the CUDA one takes nothing
    else), so the fused layer computes in bf16, as the int8 one does. Without a kernel:
    our packed bytes, fp16 scales, de-quantize and multiply.
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
        weights = quantize_int4(weight, group_size, torch.float16)
        self.out_features, self.in_features = weight.shape
        self.group_size = group_size
        kernel = _int4_kernel(weight.device, *weight.shape, group_size) if fused else ""
        self.kernel = kernel  # "cpu", "cuda", or "" (de-quantize and multiply)
        self.fused = bool(kernel)
        self.register_buffer("bias", None if bias is None else bias.detach().float())
        if self.fused:
            codes = int4_codes(weights).to(torch.int32)
            scale, low = weights.scale.float(), weights.minimum.float()
            scale_zero = torch.stack([scale, low + 8 * scale], dim=-1).transpose(0, 1)
            self.register_buffer("packed", _pack_int4(codes, kernel))
            self.register_buffer("scale_zero", scale_zero.to(torch.bfloat16).contiguous())
        else:
            self.register_buffer("packed", weights.packed)
            self.register_buffer("scale", weights.scale)
            self.register_buffer("minimum", weights.minimum)

    def _matmul(self, x: Tensor) -> Tensor:
        if self.fused:
            if self.packed.device.type != self.kernel:
                raise RuntimeError(
                    f"int4 weights packed for the {self.kernel} kernel are on "
                    f"{self.packed.device}: quantize the model on the device it runs on"
                )
            flat = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
            y = _int4_mm(flat, self.packed, self.group_size, self.scale_zero, self.kernel)
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
        eye = torch.eye(self.in_features, device=self.packed.device, dtype=torch.bfloat16)
        blocks = [
            _int4_mm(
                eye[i : i + FUSED_MAX_ROWS],
                self.packed,
                self.group_size,
                self.scale_zero,
                self.kernel,
            )
            for i in range(0, self.in_features, FUSED_MAX_ROWS)
        ]
        return torch.cat(blocks).T.float()

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


# PyTorch's CPU int4 kernel packs its (out, in) codes in blocks of 64 rows, each block
# ``in × 32`` bytes, two rows' codes to a byte; which two depends on the CPU's vector
# width (AVX512, AVX2 or neither), so the order within a block is read off the kernel.
# The CUDA kernel's layout is blocked too, by 8 rows (``in × 4`` bytes, in int32 words,
# arranged for the tensor cores' m16n8k16 tiles): the same probe reads it.
KERNEL_BLOCK = INT4_BLOCK_ROWS["cpu"]


@cache
def _kernel_nibbles(in_features: int, device: str = "cpu") -> tuple[Tensor, Tensor] | None:
    """Where the packing of the int4 kernel for ``device`` puts code (row r, column k) of
    a block of rows (64 on the CPU, 8 on CUDA): ``(byte (rows, in) int64 offset into the
    block, shift (rows, in) 0 or 4)``, on that device, or None if there is no such kernel
    or its packing is not the blocked one this expects (then the embedding keeps its own
    bytes).

    Found by packing codes that spell out their own index in base 16, one digit a pass.
    """
    dev = torch.device(device)
    kernel = _int4_kernel(dev, INT4_BLOCK_ROWS.get(dev.type, 8), in_features, 64)
    if not kernel:
        return None
    rows = INT4_BLOCK_ROWS[kernel]
    digits = 1
    while 16**digits < rows * in_features:
        digits += 1
    index = torch.arange(rows * in_features, dtype=torch.int64, device=dev)
    index = index.reshape(rows, in_features)
    found = torch.zeros(rows * in_features, dtype=torch.int64, device=dev)  # nibble -> index
    for d in range(digits):
        codes = ((index >> (4 * d)) & 0xF).to(torch.int32)
        packed = _packed_bytes(_pack_int4(codes, kernel))
        nibbles = torch.stack([packed & 0x0F, packed >> 4], dim=-1).flatten()  # slot order
        found |= nibbles.to(torch.int64) << (4 * d)
    slot = torch.empty_like(found)
    slot[found] = torch.arange(found.numel(), device=dev)
    slot = slot.reshape(rows, in_features)
    byte, shift = slot // 2, (slot % 2) * 4
    # check on two blocks of random codes that gathering rows gives them back
    codes = torch.randint(0, 16, (2 * rows, in_features), dtype=torch.int32, device=dev)
    packed = _packed_bytes(_pack_int4(codes, kernel))
    r = torch.arange(2 * rows, device=dev)
    offset = (r // rows * rows * in_features // 2)[:, None] + byte[r % rows]
    back = (packed[offset] >> shift[r % rows].to(torch.uint8)) & 0x0F
    if not torch.equal(back.to(torch.int32), codes):
        return None
    return byte, shift.to(torch.uint8)


class Int4Embedding(nn.Module):
    """A tied (vocab, C) table in int4, groups of ``group_size`` along C, 16-bit scales.

    ``forward`` is the output projection (logits = x · tableᵀ) through :class:`Int4Linear`;
    ``lookup`` gathers the rows asked for straight from the same packed nibbles, with their
    groups' scales and zero points, so the table is stored once, at half a byte a weight.
    """

    def __init__(self, table: Tensor, group_size: int = 64, *, fused: bool = True) -> None:
        """``table`` (vocab, C); C must divide by ``group_size``."""
        super().__init__()
        vocab, dim = table.shape
        kernel = _int4_kernel(table.device, vocab, dim, group_size) if fused else ""
        nibbles = _kernel_nibbles(dim, str(table.device)) if kernel else None
        self.fused = nibbles is not None and vocab % INT4_BLOCK_ROWS[kernel] == 0
        self.linear = Int4Linear(table, group_size=group_size, fused=self.fused)
        self.dim, self.group_size = dim, group_size
        self.block = INT4_BLOCK_ROWS.get(kernel, KERNEL_BLOCK)  # rows per packed block

    def lookup(self, ids: Tensor) -> Tensor:
        """ids (...) -> rows (..., C) float32."""
        lin, g = self.linear, self.group_size
        if self.fused:
            found = _kernel_nibbles(self.dim, str(lin.packed.device))
            assert found is not None
            byte, shift = found
            row = ids % self.block
            start = (ids // self.block) * (self.block * self.dim // 2)  # the block's bytes
            packed = _packed_bytes(lin.packed)
            codes = (packed[start[..., None] + byte[row]] >> shift[row]) & 0x0F  # (..., C)
            scale, zero = lin.scale_zero[:, ids].float().unbind(-1)  # (C/g, ...) each
            scale, zero = scale.movedim(0, -1), zero.movedim(0, -1)  # (..., C/g)
            grouped = (codes.float() - 8).unflatten(-1, (-1, g))  # (..., C/g, g)
            return (grouped * scale[..., None] + zero[..., None]).flatten(-2)
        low, high = lin.packed[ids] & 0x0F, lin.packed[ids] >> 4  # (..., C/2) each
        codes = torch.stack([low, high], dim=-1).flatten(-2).float()  # (..., C)
        grouped = codes.unflatten(-1, (-1, g))  # (..., C/g, g)
        scale, low_ = lin.scale[ids].float(), lin.minimum[ids].float()  # (..., C/g)
        return (grouped * scale[..., None] + low_[..., None]).flatten(-2)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)
