"""FlashAttention's forward pass as one Triton kernel: the GPU twin of ``tiled_attention``.

``learn.lab.attention.tiled_attention`` is the readable version: a Python loop over query
tiles and key tiles with an online softmax. Here the same algorithm is one fused kernel:
each program owns one (BLOCK_M, D) tile of queries of one (batch, head), walks the key
tiles keeping the running max ``m``, the running sum ``l`` and the (BLOCK_M, D)
accumulator in registers, and writes its rows once. Scores never reach memory, so the
extra memory is the output alone: linear in T (Dao et al., 2022, "FlashAttention"; the
two-stage causal loop follows Dao, 2023, "FlashAttention-2", and Triton's own fused
attention tutorial).

- exponentials in base 2 (``exp2``, one multiply folded into the scale): cheaper on GPUs;
- causal: key tiles entirely in the future are never loaded; tiles wholly in the past run
  without masks; only the tiles that cross the diagonal (and a ragged last tile) pay for
  masking;
- inputs fp16 or bf16 (fp32 accepted: the dot then runs in tf32 on the GPU), any head dim
  from 8 to 256 (padded to a power of two inside the kernel), accumulation in fp32.

Shapes as in ``attention.py``: q (B, H, T, hs), k and v (B, H, S, hs), out (B, H, T, hs);
``causal``: query i sees keys j <= i (top-left aligned, as SDPA's ``is_causal``).

On the CPU the kernel runs under Triton's interpreter (``TRITON_INTERPRET=1`` set before
this module is imported): slow, numpy underneath, but the same program, which is how the
tests check it without a GPU.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from learn.lab.attention import Measurement
from learn.lab.timing import best_of

LOG2E = 1.4426950408889634  # exp(x) = exp2(x · log2 e)
HEAD_DIMS = (8, 256)  # head sizes the kernel takes, inclusive


@dataclass(frozen=True)
class TileConfig:
    """Launch parameters: tile sizes and the GPU's pipelining knobs."""

    block_m: int = 128  # query rows per program
    block_n: int = 64  # keys per tile of the inner loop
    num_warps: int = 4
    num_stages: int = 3


# Tried by ``bench/gpu.py`` at T = 8,192 on the GPU, which prints the fastest for each
# case. Chosen from Triton 3.9's sm_90 build: no register spills in ``ptxas -v`` (the
# first for head dims up to 64, the second above; 128 x 64 tiles at d = 128 spill a word).
CONFIGS = (
    TileConfig(128, 64, 8, 3),
    TileConfig(128, 32, 8, 3),
    TileConfig(64, 64, 8, 3),
    TileConfig(128, 64, 4, 3),
    TileConfig(128, 128, 8, 3),
)


def default_config(head_dim: int) -> TileConfig:
    """The tiles used when none are given: wide key tiles while the accumulator is small."""
    return CONFIGS[0] if head_dim <= 64 else CONFIGS[1]


@triton.jit
def _tile(
    acc,
    l_i,
    m_i,
    q,
    k_base,
    v_base,
    offs_m,
    offs_n,
    offs_d,
    stride_kn,
    stride_vn,
    qk_scale,
    start,
    end,
    S,
    D,
    MASKED: tl.constexpr,
    CAUSAL: tl.constexpr,
    EVEN_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Fold the key tiles ``start:end`` into the running (acc, l, m) of one query tile.

    ``MASKED``: apply the bound ``key < S`` and, if ``CAUSAL``, the causal mask (key >
    query -> -inf); the unmasked stage covers only whole tiles in the past, where neither
    can bite.
    """
    for start_n in range(start, end, BLOCK_N):
        cols = start_n + offs_n  # (BLOCK_N,) key positions
        k_ptrs = k_base + cols[None, :] * stride_kn + offs_d[:, None]  # (BLOCK_D, BLOCK_N)
        v_ptrs = v_base + cols[:, None] * stride_vn + offs_d[None, :]  # (BLOCK_N, BLOCK_D)
        if MASKED:
            k_ok = (cols[None, :] < S) & (offs_d[:, None] < D)
            v_ok = (cols[:, None] < S) & (offs_d[None, :] < D)
            kt = tl.load(k_ptrs, mask=k_ok, other=0.0)
            v = tl.load(v_ptrs, mask=v_ok, other=0.0)
        elif EVEN_D:
            kt = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        else:
            kt = tl.load(k_ptrs, mask=offs_d[:, None] < D, other=0.0)
            v = tl.load(v_ptrs, mask=offs_d[None, :] < D, other=0.0)
        s = tl.dot(q, kt) * qk_scale  # (BLOCK_M, BLOCK_N) scores, in log2 units
        if MASKED:
            keep = cols[None, :] < S
            if CAUSAL:
                keep = keep & (cols[None, :] <= offs_m[:, None])
            s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))  # (BLOCK_M,)
        p = tl.exp2(s - m_new[:, None])  # (BLOCK_M, BLOCK_N)
        alpha = tl.exp2(m_i - m_new)  # rescales what was summed under the old max
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _flash_fwd(
    Q,
    K,
    V,
    Out,
    stride_qb,
    stride_qh,
    stride_qm,
    stride_kb,
    stride_kh,
    stride_kn,
    stride_vb,
    stride_vh,
    stride_vn,
    stride_ob,
    stride_oh,
    stride_om,
    H,
    T,
    S,
    D,
    qk_scale,
    CAUSAL: tl.constexpr,
    EVEN_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """One program: query rows ``start_m * BLOCK_M`` onwards of one (batch, head).

    Grid: (cdiv(T, BLOCK_M), B * H). The last dimension of every tensor is contiguous.
    """
    start_m = tl.program_id(0)
    if CAUSAL:  # the last query tiles see the most keys: hand them out first (no long tail)
        start_m = tl.num_programs(0) - 1 - start_m
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query positions
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    q_ptrs = q_base + offs_m[:, None] * stride_qm + offs_d[None, :]
    q = tl.load(q_ptrs, mask=(offs_m[:, None] < T) & (offs_d[None, :] < D), other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    # keys this tile can see: all S, or (causal) up to its last row
    if CAUSAL:
        hi = tl.minimum((start_m + 1) * BLOCK_M, S)
        diagonal = (start_m * BLOCK_M) // BLOCK_N * BLOCK_N  # first tile to need a mask
    else:
        hi = S
        diagonal = S
    whole = tl.minimum(diagonal, S // BLOCK_N * BLOCK_N)  # tiles before it: no mask at all
    acc, l_i, m_i = _tile(
        acc, l_i, m_i, q, k_base, v_base, offs_m, offs_n, offs_d, stride_kn, stride_vn,
        qk_scale, 0, whole, S, D, False, CAUSAL, EVEN_D, BLOCK_N,
    )  # fmt: skip
    # the tiles crossing the diagonal, and a ragged last tile: masked
    acc, l_i, m_i = _tile(
        acc, l_i, m_i, q, k_base, v_base, offs_m, offs_n, offs_d, stride_kn, stride_vn,
        qk_scale, whole, hi, S, D, True, CAUSAL, EVEN_D, BLOCK_N,
    )  # fmt: skip
    out = acc / l_i[:, None]
    o_ptrs = Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    o_ptrs = o_ptrs + offs_m[:, None] * stride_om + offs_d[None, :]
    tl.store(
        o_ptrs, out.to(Out.dtype.element_ty), mask=(offs_m[:, None] < T) & (offs_d[None, :] < D)
    )


def flash_attention(
    q: Tensor, k: Tensor, v: Tensor, causal: bool = False, config: TileConfig | None = None
) -> Tensor:
    """softmax(q kᵀ / sqrt(hs)) v in one fused kernel. q (B, H, T, hs); k, v (B, H, S, hs).

    Returns (B, H, T, hs) in q's dtype. Raises ``ValueError`` for shapes or dtypes the
    kernel does not take (then use ``attention.sdpa`` or ``tiled_attention``).
    """
    config = config or default_config(q.shape[-1])
    if q.dim() != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"expected q (B, H, T, hs), k and v (B, H, S, hs); got {q.shape}, {k.shape}"
        )
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32) or not (
        q.dtype == k.dtype == v.dtype
    ):
        raise ValueError(f"q, k, v must share fp16, bf16 or fp32; got {q.dtype}, {k.dtype}")
    B, H, T, D = q.shape
    S = k.shape[2]
    if not HEAD_DIMS[0] <= D <= HEAD_DIMS[1]:
        raise ValueError(f"head size {D} is outside {HEAD_DIMS[0]}-{HEAD_DIMS[1]}")
    if config.block_m % config.block_n:  # the diagonal stage starts on a key tile boundary
        raise ValueError("block_m must be a multiple of block_n")
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    block_d = max(16, triton.next_power_of_2(D))  # tl.dot needs 16 at least
    grid = (triton.cdiv(T, config.block_m), B * H)
    _flash_fwd[grid](
        q, k, v, out,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3],
        H, T, S, D, LOG2E / math.sqrt(D),
        CAUSAL=causal, EVEN_D=block_d == D,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_D=block_d,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip
    return out


def available(device: str | torch.device) -> bool:
    """Can the kernel run on ``device``: a CUDA device (compiled), or the CPU when
    Triton's interpreter is on."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available()
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def measure(
    seq_len: int,
    d: int,
    heads: int,
    device: str = "cuda",
    *,
    causal: bool = True,
    batch: int = 1,
    repeats: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Measurement:
    """Time the kernel as ``attention.measure`` times the other methods (same random
    inputs, same seed; fp32 by default, whose dots the GPU runs in tf32) and its peak
    extra memory: ``torch.cuda.max_memory_allocated`` minus what was allocated before the
    call on CUDA, the output's bytes under the interpreter (nothing else is allocated)."""
    if d % heads:
        raise ValueError(f"d={d} is not divisible by heads={heads}")
    hs = d // heads
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q, k, v = (
        torch.randn(batch, heads, seq_len, hs, generator=gen).to(device=device, dtype=dtype)
        for _ in range(3)
    )
    is_cuda = torch.device(device).type == "cuda"

    def synced() -> None:
        flash_attention(q, k, v, causal)
        if is_cuda:
            torch.cuda.synchronize(device)

    synced()  # warm-up: compiles the kernel for this shape and dtype
    best, _ = best_of(synced, repeats)
    if is_cuda:
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        synced()
        peak = torch.cuda.max_memory_allocated(device) - before
        how = "torch.cuda.max_memory_allocated minus allocated before the call"
    else:
        peak = q.numel() * q.element_size()
        how = "the output tensor (the interpreter allocates nothing else in torch)"
    return Measurement("triton", seq_len, d, heads, hs, best * 1e3, int(peak), how, str(device))
