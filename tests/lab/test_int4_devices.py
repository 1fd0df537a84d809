"""int4 weight-only layers choose the kernel of the device they are built on.

The CUDA branch (``_convert_weight_to_int4pack`` + ``_weight_int4pack_mm``) runs only on a
GPU, where ``bench/gpu.py`` checks it against de-quantize-then-matmul; here: which kernel a
weight gets and why, the refusal to run packed weights on another device, and that a
quantized copy of a model that has already run carries every buffer (the RoPE tables).
"""

from __future__ import annotations

import pytest
import torch

from learn.lab.llama import Llama, LlamaConfig
from learn.lab.quantize import Int4Linear, _inner_k_tiles, _int4_kernel
from learn.lab.quantized_models import quantized_copy

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    ("in_features", "tiles"),
    [(576, 4), (1536, 8), (192, 4), (64, 4), (32, 2), (48, 0), (16, 0)],  # SmolLM2's first
)
def test_the_cuda_layout_packs_the_most_k_tiles_that_divide_the_width(
    in_features: int, tiles: int
) -> None:
    assert _inner_k_tiles(in_features) == tiles
    assert all(in_features % (16 * t) for t in (2, 4, 8) if t > tiles)  # none larger fits


def test_each_device_gets_its_own_kernel() -> None:
    assert _int4_kernel(CPU, 1536, 576, 64) == "cpu"
    assert _int4_kernel(CUDA, 1536, 576, 64) == "cuda"  # SmolLM2's MLP, groups of 64
    assert _int4_kernel(CUDA, 49152, 576, 64) == "cuda"  # its tied embedding
    assert _int4_kernel(CUDA, 1536, 576, 48) == ""  # a group size the CUDA kernel lacks
    assert _int4_kernel(CUDA, 1540, 576, 64) == ""  # rows not in tiles of 8
    assert _int4_kernel(CUDA, 1536, 48, 16) == ""  # no whole pair of 16-column tiles
    assert _int4_kernel(torch.device("meta"), 1536, 576, 64) == ""  # de-quantize instead


def test_a_layer_built_on_the_cpu_uses_the_cpu_kernel_and_refuses_another_device() -> None:
    w = torch.randn(128, 256) * 0.05
    layer = Int4Linear(w, None, 64)
    assert layer.kernel == "cpu" and layer.fused
    x = torch.randn(2, 256)
    assert layer(x).shape == (2, 128)
    layer.to("meta")  # the CPU layout moved where no CPU kernel runs
    with pytest.raises(RuntimeError, match="quantize the model on the device it runs on"):
        layer(x.to("meta"))


def test_an_unfused_layer_keeps_our_own_bytes() -> None:
    layer = Int4Linear(torch.randn(128, 256), None, 64, fused=False)
    assert layer.kernel == "" and not layer.fused
    assert layer.packed.dtype == torch.uint8 and layer.packed.shape == (128, 128)


@pytest.fixture(scope="module")
def used_model() -> Llama:
    """A tiny Llama with seeded random weights that has already run once."""
    cfg = LlamaConfig(
        vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=128, max_seq_len=64
    )
    torch.manual_seed(0)
    model = Llama(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05) if p.dim() >= 2 else torch.nn.init.ones_(p)
    model.eval().requires_grad_(False)
    with torch.inference_mode():
        model(torch.tensor([[1, 2, 3]]), None, 0)
    return model


@pytest.mark.parametrize("variant", ["bf16", "fp16", "int8-weight", "int4-weight"])
def test_a_quantized_copy_of_a_used_model_carries_its_rope_tables(
    used_model: Llama, variant: str
) -> None:
    copied = quantized_copy(used_model, variant)
    assert copied.rope_cos.shape == used_model.rope_cos.shape
    assert all(t.device == used_model.device for t in [*copied.parameters(), *copied.buffers()])
    if variant in ("bf16", "fp16"):
        assert copied.rope_cos.dtype == copied.dtype  # cast with the weights
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        want = used_model(ids, None, 0).float()
        got = copied(ids, None, 0).float()
    assert torch.isfinite(got).all()
    assert (got - want).norm() / want.norm() < 0.25  # the same model, at lower precision
