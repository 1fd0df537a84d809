"""Our int8/int4 weight quantizers: error bounds, the runtime layers, whole models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from learn.lab.quality import agreement, inspect_weight, kl_divergence, perplexity
from learn.lab.quantize import (
    Int4Embedding,
    Int4Linear,
    Int8Linear,
    dequantize_int4,
    dequantize_int8,
    int4_codes,
    quantize_int4,
    quantize_int8,
)
from learn.lab.quantized_models import activation_absmax, quantized_copy, weight_bytes
from learn.lab.smoothquant import Int8DynamicLinear, smoothing_factors


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


@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_round_trip_error_is_at_most_half_a_step_per_element(
    group_size: int, scale_dtype: torch.dtype
):
    w = weight()
    q = quantize_int4(w, group_size, scale_dtype)
    assert q.scale.dtype == q.minimum.dtype == scale_dtype
    assert q.packed.dtype == torch.uint8 and q.packed.shape == (96, 128)
    assert q.scale.shape == (96, 256 // group_size)
    codes = int4_codes(q)
    assert codes.min() >= 0 and codes.max() <= 15
    step = q.scale.float().repeat_interleave(group_size, dim=1)
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
    reference = dequantize_int4(quantize_int4(linear.weight, 64, torch.float16))
    # the kernel takes bf16 scales and activations: a step of 2^-8 relative
    tolerance = 1e-2 if fused else 1e-5
    torch.testing.assert_close(layer.dequantized(), reference, atol=tolerance, rtol=tolerance)
    x = torch.randn(rows, 256)
    expected = nn.functional.linear(x, reference, linear.bias)
    tolerance = 5e-2 if fused else 1e-4
    torch.testing.assert_close(layer(x), expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("fused", [True, False])
def test_int4_embedding_gathers_the_rows_it_multiplies_by(fused: bool):
    table = weight(256, 192, seed=3)  # (vocab, C): four of the kernel's 64-row blocks
    embedding = Int4Embedding(table, group_size=32, fused=fused)
    ids = torch.tensor([[0, 63, 64, 200], [255, 1, 128, 64]])
    rows = embedding.lookup(ids)  # (2, 4, 192)
    q = quantize_int4(table, 32, torch.float16)
    if embedding.fused:  # recompute from the codes and the kernel's bf16 scale and zero
        codes = int4_codes(q).float().unflatten(-1, (-1, 32))  # (vocab, C/g, g)
        scale, zero = embedding.linear.scale_zero.float().transpose(0, 1).unbind(-1)
        expected = ((codes - 8) * scale[..., None] + zero[..., None]).flatten(1)[ids]
    else:
        expected = dequantize_int4(q)[ids]
    assert torch.equal(rows, expected)  # gathered from the packed nibbles, exactly
    # and they are the rows the output projection multiplies by
    every = embedding.lookup(torch.arange(256))  # (vocab, C)
    torch.testing.assert_close(embedding.linear.dequantized(), every, atol=1e-2, rtol=1e-2)
    x = torch.randn(3, 192)
    torch.testing.assert_close(embedding(x), x @ every.T, atol=5e-2, rtol=5e-2)
    assert (rows - table[ids]).abs().max() <= q.scale.float().max() * 0.51 + 1e-2


def test_smoothquant_migration_leaves_the_float_function_unchanged():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(32, 256, generator=g, dtype=torch.float64)
    x[:, [5, 77]] *= 40  # two outlier channels, loud in every token
    w = weight().double()
    s = smoothing_factors(x.abs().amax(0), w, alpha=0.5).double()  # (in,)
    migrated = (x / s) @ (w * s).T  # X·diag(s)⁻¹ · (W·diag(s))ᵀ
    torch.testing.assert_close(migrated, x @ w.T, atol=1e-10, rtol=1e-10)
    # what it buys: the activations' channel ranges move closer together
    spread = x.abs().amax(0).max() / x.abs().amax(0).median()
    assert (x / s).abs().amax(0).max() / (x / s).abs().amax(0).median() < spread / 4


def w8a8_reference(x: torch.Tensor, w: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
    """Per-token int8 activations, per-row int8 weights, in float64 from the formulas."""
    x, w = x.double(), w.double()
    if s is not None:
        x, w = x / s.double(), w * s.double()
    sw = w.abs().amax(1, keepdim=True) / 127
    sx = x.abs().amax(1, keepdim=True) / 127
    return (torch.round(x / sx) * sx) @ (torch.round(w / sw) * sw).T


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("smooth", [True, False])
def test_int8_dynamic_linear_is_per_token_w8a8(fused: bool, smooth: bool):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(24, 256, generator=g)
    x[3] *= 50  # one loud token: with per-token scales it spoils only its own row
    w = weight()
    s = smoothing_factors(x.abs().amax(0), w) if smooth else None
    layer = Int8DynamicLinear(w, None, smooth=s, fused=fused)
    expected = w8a8_reference(x, w, s).float()
    before = x.clone()
    out = layer(x)
    assert torch.equal(x, before)  # the fused path divides rows in place, never the input's
    if layer.fused:  # fbgemm: 7-bit activations from [-1, 1], a step 4x coarser than ours
        assert (out - expected).norm() / expected.norm() < 0.05
    else:
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    quiet = [r for r in range(24) if r != 3]  # the other tokens stay close to float
    reference = x @ w.T
    error = (out[quiet] - reference[quiet]).norm() / reference[quiet].norm()
    one_scale = x.abs().max() / 127  # what a single scale for the tensor would do to them
    coarse = (torch.round(x / one_scale) * one_scale) @ dequantize_int8(quantize_int8(w)).T
    coarse_error = (coarse[quiet] - reference[quiet]).norm() / reference[quiet].norm()
    assert error < 0.05 and error < coarse_error / 3


def test_smoothing_rescues_dynamic_int8_from_outlier_channels():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 256)).eval()
    loud = torch.ones(256)
    loud[[10, 90, 200]] = 60.0  # a few channels large in every token, as in transformers

    def batch(n: int) -> torch.Tensor:
        return torch.randn(n, 256) * loud

    calibration, x = batch(64), batch(32)
    with torch.inference_mode():
        reference = model(x)

    def error(variant: str, **kw: object) -> float:
        with torch.inference_mode():
            out = quantized_copy(model, variant, **kw)(x)
        return float((out - reference).norm() / reference.norm())

    per_tensor = error("int8-dynamic")
    smoothed = error("int8-smooth", calibrate=lambda m: m(calibration))
    unsmoothed = error("int8-smooth", calibrate=lambda m: m(calibration), alpha=0.0)
    assert smoothed < unsmoothed / 2 and smoothed < per_tensor / 2
    absmax = activation_absmax(model, lambda m: m(calibration))
    assert set(absmax) == {"0", "2"} and absmax["0"].shape == (256,)
    torch.testing.assert_close(absmax["0"], calibration.abs().amax(0))


def test_int8_smooth_needs_calibration():
    with pytest.raises(ValueError, match="calibrate"):
        quantized_copy(mlp(), "int8-smooth")


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
    x = torch.randn(4, 512)
    smooth = weight_bytes(quantized_copy(model, "int8-smooth", calibrate=lambda m: m(x)))
    assert 3.5 < fp32 / int8 < 4.0  # 1 byte a weight + a scale per row + fp32 biases
    assert 6.9 < fp32 / int4 < 7.2  # half a byte + two 16-bit numbers per group of 64
    assert 3.5 < fp32 / dynamic < 4.0
    assert 3.4 < fp32 / smooth < 4.0  # as dynamic, plus a smoothing factor per input
    assert weight_bytes(quantized_copy(model, "bf16")) * 2 == fp32


@pytest.mark.parametrize(
    ("variant", "worst"),
    [
        ("bf16", 0.02),
        ("int8-weight", 0.02),
        ("int8-dynamic", 0.05),
        ("int8-smooth", 0.05),
        ("int4-weight", 0.25),
    ],
)
def test_quantized_models_stay_close_to_fp32(variant: str, worst: float):
    model = mlp()
    x = torch.randn(8, 512)
    quantized = quantized_copy(model, variant, calibrate=lambda m: m(torch.randn(16, 512)))
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


def reference_round_trip(w: np.ndarray, scheme: str, group_size: int) -> tuple[np.ndarray, ...]:
    """Quantize and restore (out, in) weights in float64 numpy, from the formulas alone:
    int8 symmetric per row (step = absmax / 127), int4 asymmetric per group of
    ``group_size`` (step = (max - min) / 15, codes 0-15 from the minimum). Returns the
    restored weights and each element's step, both (out, in)."""
    if scheme == "int8":
        step = np.abs(w).max(axis=1, keepdims=True) / 127
        return np.clip(np.round(w / step), -127, 127) * step, np.broadcast_to(step, w.shape)
    g = w.reshape(w.shape[0], -1, group_size)
    low, high = g.min(axis=-1, keepdims=True), g.max(axis=-1, keepdims=True)
    step = (high - low) / 15
    restored = np.clip(np.round((g - low) / step), 0, 15) * step + low
    return restored.reshape(w.shape), np.broadcast_to(step, g.shape).reshape(w.shape)


@pytest.mark.parametrize(("scheme", "group_size"), [("int8", 64), ("int4", 32), ("int4", 64)])
def test_the_weight_inspector_reports_the_error_a_reference_recomputes(
    scheme: str, group_size: int
):
    w = weight()
    report = inspect_weight(w, scheme, group_size)
    restored, step = reference_round_trip(w.double().numpy(), scheme, group_size)
    error = np.abs(restored - w.double().numpy())
    assert report["max_abs_error"] == pytest.approx(error.max(), rel=1e-4)
    assert report["mean_abs_error"] == pytest.approx(error.mean(), rel=1e-4)
    half_steps = error / (step / 2)
    assert report["max_error_over_half_scale"] == pytest.approx(half_steps.max(), abs=1e-3)
    assert half_steps.max() <= 1 + 1e-6  # the bound, from the reference, not the report
    assert half_steps.max() > 0.5  # some element really is near half a step away
    assert sum(report["before"]["counts"]) == 96 * 256
    assert len(report["error"]["edges"]) == len(report["error"]["counts"]) + 1
    assert inspect_weight(weight(), "int4")["distinct_values_after"] <= 16 * 96 * 4


@pytest.fixture(scope="module")
def minilm():
    from learn.lab.embeddings import Encoder

    return Encoder(device="cpu")


@pytest.fixture(scope="module")
def minilm_absmax(minilm) -> dict[str, torch.Tensor]:
    from learn.lab.quantbench import calibration_texts

    def run(model: nn.Module) -> None:
        minilm.model = model
        minilm.encode(calibration_texts()[:16], batch_size=16)

    base = minilm.model
    try:
        return activation_absmax(base, run)
    finally:
        minilm.model = base


def encode_with(encoder, model: nn.Module, texts: list[str]) -> np.ndarray:
    base, encoder.model = encoder.model, model
    try:
        return encoder.encode(texts, batch_size=16)
    finally:
        encoder.model = base


def test_folding_smoothquant_into_minilm_leaves_its_function_unchanged(minilm, minilm_absmax):
    import copy

    from learn.lab.smoothquant import ScaledInput, fold_smoothing_bert

    base = minilm.model
    folded = copy.deepcopy(base)
    assert fold_smoothing_bert(folded, minilm_absmax) == 5 * len(base.encoder.layer)
    first, was = folded.encoder.layer[0], base.encoder.layer[0]
    assert isinstance(first.attention.self, ScaledInput)  # Q/K/V read h / s
    value = first.attention.self.inner.value
    assert not torch.allclose(value.weight, was.attention.self.value.weight)  # it did fold
    batch = minilm.tokenizer(
        ["A list is a mutable sequence.", "Generators yield values lazily, one at a time."],
        padding=True,
        return_tensors="pt",
    )
    with torch.inference_mode():
        expected = base(**batch).last_hidden_state  # (2, T, 384)
        got = folded(**batch).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_folded_smoothquant_int8_minilm_keeps_cosine_to_fp32(minilm, minilm_absmax):
    """One-op dynamic int8 after folding: cosine >= 0.99 to fp32 embeddings, where the same
    op on the unsmoothed model (PyTorch's quantize_dynamic) loses several times more."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    from learn.lab.quantbench import paragraphs
    from learn.lab.smoothquant import folded_int8_bert

    texts = list(paragraphs()[:16])  # never among the calibration texts (the last 64)
    model = folded_int8_bert(minilm.model, minilm_absmax, skip=("pooler",))
    first = model.encoder.layer[0]
    assert isinstance(first.attention.self.inner.query, DynamicLinear)
    assert isinstance(first.output.dense, Int8DynamicLinear)  # GELU's output: per token
    assert isinstance(model.pooler.dense, nn.Linear)
    reference = encode_with(minilm, minilm.model, texts)
    cosine = np.sum(reference * encode_with(minilm, model, texts), axis=1)  # (16,)
    plain = quantized_copy(minilm.model, "int8-dynamic")
    plain_cosine = np.sum(reference * encode_with(minilm, plain, texts), axis=1)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.98
    assert 1 - cosine.mean() < (1 - plain_cosine.mean()) / 3
