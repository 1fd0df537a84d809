"""The KV cache: every layer's keys and values, kept so a decode step computes only its own.

Without it, generating token t runs the whole prefix through the model again: t forward
rows per step. With it, one forward over the prompt (the prefill) fills the cache, and each
later step computes one token's K and V, writes them at its position and reads the rest.

Shapes: L layers, B batch, nkv key/value heads, P positions held, hs head size.
"""

from __future__ import annotations

from typing import Any, Self

import torch
from torch import Tensor


class KVCache:
    """Keys and values for ``n_layers`` layers, preallocated: (L, B, nkv, P, hs) each.

    Size in bytes = 2 (K and V) x layers x batch x kv_heads x head_dim x positions x
    bytes per number. SmolLM2-135M in float32: 2 x 30 x 3 x 64 x 4 = 46,080 bytes per
    position, so its 8,192-position context needs 377 MB.
    """

    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        max_pos: int,
        head_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        shape = (n_layers, batch, n_kv_heads, max_pos, head_dim)  # (L, B, nkv, P, hs)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_pos = max_pos

    @classmethod
    def for_model(cls, model: Any, max_pos: int, batch: int = 1) -> Self:
        """A cache shaped for ``model`` (its config, device and dtype), capped at its context."""
        cfg = model.config
        return cls(
            cfg.n_layers,
            batch,
            cfg.n_kv_heads,
            min(max_pos, cfg.max_seq_len),
            cfg.head_dim,
            dtype=model.dtype,
            device=model.device,
        )

    @staticmethod
    def bytes_for(
        n_layers: int,
        n_kv_heads: int,
        head_dim: int,
        positions: int,
        dtype_bytes: int,
        batch: int = 1,
    ) -> int:
        """2 x layers x batch x kv_heads x head_dim x positions x bytes."""
        return 2 * n_layers * batch * n_kv_heads * head_dim * positions * dtype_bytes

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def update(self, layer: int, start_pos: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (B, nkv, T, hs) at start_pos.., return all keys/values so far.

        Returns views (B, nkv, start_pos + T, hs) into the preallocated buffers: no copy.
        """
        B, _, T, _ = k.shape
        end = start_pos + T
        if end > self.max_pos:
            raise ValueError(f"cache holds {self.max_pos} positions, asked to write up to {end}")
        self.k[layer, :B, :, start_pos:end] = k
        self.v[layer, :B, :, start_pos:end] = v
        return self.k[layer, :B, :, :end], self.v[layer, :B, :, :end]
