"""Float32 inference on a CPU with the weights arranged once, in oneDNN's blocked layout.

``learn.lab.llama.Linear`` computes ``x @ W`` with a plain matmul, whose CPU library
re-arranges W into its working layout on every call. For training and for reading the
model that is fine; for decoding, where the same weights are read again for every token,
it is wasted work: on 2 cores the packed copy decodes about 1.5x faster and pre-fills a
prompt about 2x faster (``bench/generate.py`` measures the pass costs both ways).

``packed_model(model)`` gives a twin of a float32 ``Llama`` whose matrices are held packed
(``PackedLinear``) and whose other tensors (norms, RoPE tables, the embedding rows) are
the model's own. It is made once per model and remade if the model's weights change in
place (a training step, a ``load_state_dict``). Everything that decodes calls it:
``learn.lab.decoding.generate``, speculative and paged decoding, the re-ranker. Anything
else (a quantized or half-precision copy, a GPU model, a model with LoRA layers) is
returned unchanged. The twin computes the same float32 arithmetic summed in another order: logits
agree with the model's to ~1e-4.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
from torch import Tensor, nn

from learn.lab.llama import Linear, Llama

PACK_ROWS = 16  # the row count oneDNN's layout is chosen for; any other count works too


def can_pack(model: Any) -> bool:
    """oneDNN's packed float32 matmul is there, and ``model`` is a plain float32 ``Llama``
    on the CPU: made only of this package's modules (no quantized or LoRA layers)."""
    ops = torch.ops.mkldnn
    return (
        isinstance(model, Llama)
        and model.device.type == "cpu"
        and model.dtype == torch.float32
        and model.embed_q is None
        and torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
        and all(_ours(m) for m in model.modules())
    )


def _ours(module: nn.Module) -> bool:
    """A module of ``learn.lab.llama`` (or the list holding its blocks), nothing wrapped."""
    return type(module).__module__ == Llama.__module__ or type(module) is nn.ModuleList


class PackedLinear(nn.Module):
    """``y = x @ W`` with W held once in oneDNN's blocked layout (float32, CPU)."""

    def __init__(self, weight: Tensor, rows: int = PACK_ROWS) -> None:
        """``weight`` (in, out), as ``learn.lab.llama.Linear`` keeps it."""
        super().__init__()
        w = weight.detach().t().contiguous()  # (out, in), the layout oneDNN packs from
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(w, rows))

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in) -> (..., out)."""
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, None, "none", [], "")


class PackedEmbedding(nn.Module):
    """The tied (C, vocab) table: rows looked up as the model does, logits through a
    ``PackedLinear`` (the ``embed_q`` protocol of ``learn.lab.llama.Llama``)."""

    def __init__(self, table: Tensor) -> None:
        """``table`` (C, vocab), the model's ``embed``."""
        super().__init__()
        self.table = table
        self.head = PackedLinear(table)

    def lookup(self, ids: Tensor) -> Tensor:
        return self.table.t()[ids]  # (..., C)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)  # (..., vocab)


def _with_packed(module: nn.Module) -> nn.Module:
    """A copy of the module tree in which every ``Linear`` is a ``PackedLinear``; all
    other parameters and buffers are shared with the original, not copied."""
    if isinstance(module, Linear):
        return PackedLinear(module.weight)
    clone = copy.copy(module)  # its own attribute dict; the tensors in it are shared
    clone._parameters = dict(module._parameters)
    clone._buffers = dict(module._buffers)
    clone._modules = {k: m if m is None else _with_packed(m) for k, m in module._modules.items()}
    return clone


def _versions(model: nn.Module) -> tuple[int, ...]:
    """Each parameter's in-place write counter: it moves when an optimizer step or a
    ``load_state_dict`` changes the weights."""
    return tuple(p._version for p in model.parameters())


_TWINS: weakref.WeakKeyDictionary[Any, tuple[tuple[int, ...], Any]] = weakref.WeakKeyDictionary()


def packed_model(model: Any) -> Any:
    """The twin of ``model`` with packed matrices (see the module docstring; +4 bytes per
    weight, ~1 s to make for SmolLM2-135M), or ``model`` itself where packing does not
    apply. Same interface, same KV cache layout."""
    if not can_pack(model):
        return model
    versions = _versions(model)
    held = _TWINS.get(model)
    if held is not None and held[0] == versions:
        return held[1]
    twin = _with_packed(model)
    twin.embed_q = PackedEmbedding(model.embed)  # the output layer is the largest matmul
    _TWINS[model] = (versions, twin)
    return twin
