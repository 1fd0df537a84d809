"""Attention three ways, and the position encodings that feed it.

- ``naive_attention``: softmax(q k^T / sqrt(hs)) v, materialising the whole (T, S) score
  matrix: memory grows with T * S.
- ``tiled_attention``: the same numbers computed block by block with an online softmax
  (running max and running sum per query row), as FlashAttention does: only a
  (block, block) tile of scores exists at a time.
- ``sdpa``: PyTorch's fused ``scaled_dot_product_attention``, the reference.

Shapes: q (B, H, T, hs), k and v (B, H, S, hs), output (B, H, T, hs); B batch, H heads,
T queries, S keys, hs head size. ``causal`` means query i sees keys j <= i (top-left
aligned, as ``F.scaled_dot_product_attention(is_causal=True)``).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from learn.lab.timing import best_of


def causal_mask(t: int, s: int | None = None, device: str | torch.device = "cpu") -> Tensor:
    """Boolean (t, s) mask, True where query i may attend to key j (j <= i)."""
    s = t if s is None else s
    return torch.ones(t, s, dtype=torch.bool, device=device).tril()


def sliding_window_mask(t: int, window: int, device: str | torch.device = "cpu") -> Tensor:
    """Boolean (t, t) mask: query i sees keys i-window+1 .. i (causal, at most ``window`` keys).

    Mistral-style local attention: a token's cache needs only the last ``window`` positions,
    yet information still travels ``window`` positions further with every layer.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    i = torch.arange(t, device=device)[:, None]
    j = torch.arange(t, device=device)[None, :]
    return (j <= i) & (i - j < window)


def receptive_field(window: int, layers: int) -> int:
    """Positions (counting its own) that a token's last layer can draw on with windowed attention.

    Each layer reaches ``window - 1`` positions further back, as a CNN's receptive field grows.
    """
    return layers * (window - 1) + 1


def naive_attention(
    q: Tensor, k: Tensor, v: Tensor, causal: bool = False, mask: Tensor | None = None
) -> Tensor:
    """Textbook attention. ``mask`` (T, S) boolean, True = keep, applied on top of ``causal``."""
    T, S = q.shape[-2], k.shape[-2]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if causal:
        scores = scores.masked_fill(~causal_mask(T, S, q.device), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v  # (B, H, T, hs)


def tiled_attention(
    q: Tensor, k: Tensor, v: Tensor, causal: bool = False, block_size: int = 64
) -> Tensor:
    """Attention in (block_size x block_size) tiles with an online softmax.

    For each block of queries we walk the key blocks keeping, per query row, the running
    max ``m``, the running sum of exp(score - m) ``l`` and the running weighted sum of
    values ``acc``. When a new tile raises the max, the old sums are rescaled by
    exp(m_old - m_new), so the result equals softmax over all keys without ever holding
    a full (T, S) row. Causal: key blocks entirely in the future are skipped.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    B, H, T, hs = q.shape
    S = k.shape[-2]
    scale = 1.0 / math.sqrt(hs)
    out = torch.empty_like(q)
    for i0 in range(0, T, block_size):
        i1 = min(i0 + block_size, T)
        qi = q[:, :, i0:i1] * scale  # (B, H, bq, hs)
        m = torch.full((B, H, i1 - i0, 1), float("-inf"), dtype=q.dtype, device=q.device)
        l = torch.zeros_like(m)  # noqa: E741  (the paper's name)
        acc = torch.zeros_like(qi)  # (B, H, bq, hs)
        k_end = min(S, i1) if causal else S  # row i never looks past key i
        for j0 in range(0, k_end, block_size):
            j1 = min(j0 + block_size, k_end)
            s = qi @ k[:, :, j0:j1].transpose(-2, -1)  # (B, H, bq, bk): one tile of scores
            if causal and j1 - 1 > i0:  # the tile crosses the diagonal
                rows = torch.arange(i0, i1, device=q.device)[:, None]
                cols = torch.arange(j0, j1, device=q.device)[None, :]
                s = s.masked_fill(cols > rows, float("-inf"))
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            p = torch.exp(s - m_new)  # (B, H, bq, bk)
            correction = torch.exp(m - m_new)  # rescales what was summed under the old max
            l = l * correction + p.sum(-1, keepdim=True)  # noqa: E741
            acc = acc * correction + p @ v[:, :, j0:j1]
            m = m_new
        out[:, :, i0:i1] = acc / l
    return out


def sdpa(q: Tensor, k: Tensor, v: Tensor, causal: bool = False) -> Tensor:
    """PyTorch's fused attention (flash / memory-efficient / math kernel, as it chooses)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


METHODS = {"naive": naive_attention, "tiled": tiled_attention, "sdpa": sdpa}


# ---------------------------------------------------------------------------------------
# Positions


def rope_cos_sin(
    positions: int | Tensor,
    head_dim: int,
    theta: float = 10000.0,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """cos and sin tables for rotary embeddings, each (T, head_dim), float32.

    Pair k of a head (dims k and k + head_dim/2) rotates by angle pos * theta^(-2k/head_dim):
    fast rotations in the first pairs, slow ones in the last. ``positions`` is a count
    (0..T-1) or a 1-d tensor of positions.
    """
    if isinstance(positions, int):
        positions = torch.arange(positions, device=device)
    inv_freq = 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    )  # (head_dim/2,)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (T, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, head_dim): HF's half-split layout
    return angles.cos(), angles.sin()


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) over the last dimension split in halves."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (..., T, head_dim) by position: cos, sin (T, head_dim) from ``rope_cos_sin``.

    Because both q and k are rotated, q_i . k_j depends on i - j only: relative position.
    """
    return x * cos + rotate_half(x) * sin


def rope_scores_by_distance(
    head_dim: int = 64, max_distance: int = 512, theta: float = 10000.0
) -> Tensor:
    """q . k for q = k = ones(head_dim) placed ``distance`` apart, for 0..max_distance.

    Shape (max_distance + 1,). Shows RoPE's long-range decay: the same two vectors score
    less the farther apart they are.
    """
    cos, sin = rope_cos_sin(max_distance + 1, head_dim, theta)
    x = torch.ones(1, head_dim)
    k = apply_rope(x, cos[:1], sin[:1])  # key at position 0
    q = apply_rope(x.expand(max_distance + 1, -1), cos, sin)  # queries at 0..max_distance
    return (q @ k.T).squeeze(-1)


def sinusoidal_positions(n: int, d: int) -> Tensor:
    """The original Transformer's fixed encodings, (n, d) float32.

    PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(pos / 10000^(2i/d)).
    """
    if d % 2:
        raise ValueError(f"d must be even, got {d}")
    pos = torch.arange(n, dtype=torch.float32)[:, None]  # (n, 1)
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


def position_similarity(pe: Tensor) -> Tensor:
    """Cosine similarity between every pair of position vectors: (n, d) -> (n, n)."""
    unit = F.normalize(pe, dim=-1)
    return unit @ unit.T


# ---------------------------------------------------------------------------------------
# Measuring


@dataclass
class Measurement:
    method: str
    seq_len: int
    d: int  # model width, split across heads
    heads: int
    head_dim: int
    ms: float  # best wall time of the call, milliseconds
    peak_bytes: int  # peak memory allocated during the call, beyond the inputs
    memory_method: str  # how peak_bytes was measured
    device: str


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Mute file descriptor 2: the profiler's C++ backend prints start/stop lines there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _peak_cpu_bytes(fn: Callable[[], object]) -> int:
    """Peak of the running total of torch's CPU allocations during ``fn``, via ``torch.profiler``.

    Each op's self memory (bytes it allocated minus bytes it freed) and each free recorded
    outside an op are summed in start-time order; the peak of that total is returned. An op's
    transient workspace freed before it returns is not seen.
    """
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events())
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return int(peak)


def measure(
    method: str,
    seq_len: int,
    d: int,
    heads: int,
    device: str = "cpu",
    *,
    causal: bool = True,
    block_size: int = 64,
    batch: int = 1,
    repeats: int = 3,
    seed: int = 0,
) -> Measurement:
    """Time one attention call and its peak extra memory on random fp32 inputs.

    Memory: on CUDA, ``torch.cuda.max_memory_allocated`` minus what was allocated before the
    call. On CPU, the peak of the running total of allocation events recorded by
    ``torch.profiler(profile_memory=True)`` during one call (torch's own allocations only).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if d % heads:
        raise ValueError(f"d={d} is not divisible by heads={heads}")
    hs = d // heads
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, seq_len, hs, generator=gen).to(device) for _ in range(3))

    def call() -> Tensor:
        if method == "tiled":
            return tiled_attention(q, k, v, causal, block_size)
        return METHODS[method](q, k, v, causal)

    is_cuda = torch.device(device).type == "cuda"

    def synced() -> None:  # CUDA runs asynchronously: wait, so the clock sees the work
        call()
        if is_cuda:
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        synced()  # warm-up
        best, _ = best_of(synced, repeats)
        if is_cuda:
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            call()
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - before
            how = "torch.cuda.max_memory_allocated minus allocated before the call"
        else:
            peak = _peak_cpu_bytes(call)
            how = "torch.profiler: peak running total of per-op allocations during the call"
    return Measurement(method, seq_len, d, heads, hs, best * 1e3, int(peak), how, str(device))
