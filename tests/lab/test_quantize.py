"""Our int8/int4 weight quantizers: error bounds, the runtime layers, whole models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from learn.lab.quality import agreement, inspect_weight, kl_divergence, perplexity
from learn.lab.quantize import (
    Int4Linear,
    Int8Linear,
    dequantize_int4,
    dequantize_int8,
    int4_codes,
    quantize_int4,
    quantize_int8,
)
from learn.lab.quantized_models import quantized_copy, weight_bytes


def weight(out: int = 96, inp: int = 256, seed: int = 0) -> torch.Tensor:
    """Gaussian weights with a few large outliers, as trained layers have."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g) * 0.05
    w[3, 7], w[50, 100] = 1.5, -2.0
    return w


def test_int8_round_trip_error_is_at_most_half_a_step_per_element():
    w = weight()
    q = quantize_int8(w)
    assert q.q.dtype == torch.int8 and q.scale.shape == (96,)
    error = (dequantize_int8(q) - w).abs()
    assert torch.all(error <= q.scale[:, None] / 2 + 1e-7)
    assert q.q.abs().max() == 127  # the largest weight of each row uses the full range


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_round_trip_error_is_at_most_half_a_step_per_element(group_size: int):
    w = weight()
    q = quantize_int4(w, group_size)
    assert q.packed.dtype == torch.uint8 and q.packed.shape == (96, 128)
    assert q.scale.shape == (96, 256 // group_size)
    codes = int4_codes(q)
    assert codes.min() >= 0 and codes.max() <= 15
    step = q.scale.repeat_interleave(group_size, dim=1)
    assert torch.all((dequantize_int4(q) - w).abs() <= step / 2 + 1e-6)


def test_int4_needs_whole_groups():
    with pytest.raises(ValueError, match="multiple of 64"):
        quantize_int4(torch.randn(4, 100), 64)


@pytest.mark.parametrize("rows", [2, 40])  # the fused kernel decodes; big batches de-quantize
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_equals_dequantize_then_matmul(fused: bool, bias: bool, rows: int):
    linear = nn.Linear(256, 96, bias=bias)
    linear.weight.data = weight()
    layer = Int8Linear(linear.weight, linear.bias, fused=fused)
    x = torch.randn(rows, 5, 256)
    expected = nn.functional.linear(x, dequantize_int8(quantize_int8(linear.weight)), linear.bias)
    fused_decode = fused and rows * 5 <= 16  # the kernel path computes in bf16
    tolerance = 2e-2 if fused_decode else 1e-4
    torch.testing.assert_close(layer(x), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("rows", [3, 40])
@pytest.mark.parametrize("fused", [True, False])
def test_int4_linear_equals_dequantize_then_matmul(fused: bool, rows: int):
    linear = nn.Linear(256, 96)
    linear.weight.data = weight()
    layer = Int4Linear(linear.weight, linear.bias, 64, fused=fused)
    reference = dequantize_int4(quantize_int4(linear.weight, 64))
    torch.testing.assert_close(layer.dequantized(), reference, atol=1e-5, rtol=1e-5)
    x = torch.randn(rows, 256)
    expected = nn.functional.linear(x, reference, linear.bias)
    torch.testing.assert_close(layer(x), expected, atol=1e-4, rtol=1e-4)


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(512, 1024), nn.GELU(), nn.Linear(1024, 512)).eval()


def test_weight_bytes_shrink_as_the_maths_says():
    model = mlp()
    fp32 = weight_bytes(model)
    assert fp32 == 4 * sum(p.numel() for p in model.parameters())
    int8 = weight_bytes(quantized_copy(model, "int8-weight"))
    int4 = weight_bytes(quantized_copy(model, "int4-weight", group_size=64))
    dynamic = weight_bytes(quantized_copy(model, "int8-dynamic"))
    assert 3.5 < fp32 / int8 < 4.0  # 1 byte a weight + a scale per row + fp32 biases
    assert 6.0 < fp32 / int4 < 8.0  # half a byte + two floats per group of 64
    assert 3.5 < fp32 / dynamic < 4.0
    assert weight_bytes(quantized_copy(model, "bf16")) * 2 == fp32


@pytest.mark.parametrize(
    ("variant", "worst"),
    [("bf16", 0.02), ("int8-weight", 0.02), ("int8-dynamic", 0.05), ("int4-weight", 0.25)],
)
def test_quantized_models_stay_close_to_fp32(variant: str, worst: float):
    model = mlp()
    x = torch.randn(8, 512)
    quantized = quantized_copy(model, variant)
    with torch.inference_mode():
        reference = model(x)
        out = quantized(x.bfloat16() if variant == "bf16" else x).float()
    assert (out - reference).norm() / reference.norm() < worst


def test_quality_metrics():
    torch.manual_seed(1)
    logits = torch.randn(20, 50)
    targets = logits.argmax(-1)
    assert agreement(logits, logits) == 1.0
    assert kl_divergence(logits, logits) == pytest.approx(0.0, abs=1e-6)
    assert kl_divergence(logits, logits + torch.randn(20, 50)) > 0
    uniform = torch.zeros(20, 50)
    assert perplexity(uniform, targets) == pytest.approx(50.0, rel=1e-5)  # a fair 50-way guess
    assert perplexity(logits * 1000, targets) == pytest.approx(1.0, abs=1e-3)


def test_the_weight_inspector_respects_the_bound():
    for scheme in ("int8", "int4"):
        report = inspect_weight(weight(), scheme, 64)
        assert report["max_error_over_half_scale"] <= 1.0 + 1e-4
        assert sum(report["before"]["counts"]) == 96 * 256
        assert len(report["error"]["edges"]) == len(report["error"]["counts"]) + 1
    assert inspect_weight(weight(), "int4")["distinct_values_after"] <= 16 * 96 * 4
