"""Quality measures of the quantization benchmark on the real SmolLM2, and how the MiniLM
bench times its variants."""

from __future__ import annotations

import pytest
import torch

from learn.lab.quality import perplexity
from learn.lab.quantbench import HELD_OUT, bench_minilm, calibration_texts, paired_timing
from learn.lab.quantized_models import quantized_copy, weight_bytes


@pytest.fixture(scope="module")
def smollm2():
    from learn.lab.llama_gguf import load_smollm2

    return load_smollm2("cpu")


@pytest.fixture(scope="module")
def held_out(smollm2) -> torch.Tensor:
    return torch.tensor([smollm2[1].encode(HELD_OUT.read_text()).ids[:100]])  # (1, T)


def test_perplexity_equals_transformers_loss_for_fp32(smollm2, held_out):
    from learn.lab.llama_hf import to_hf

    model, _ = smollm2
    with torch.inference_mode():
        ours = perplexity(model(held_out)[0, :-1], held_out[0, 1:])
        loss = to_hf(model)(input_ids=held_out, labels=held_out).loss  # mean token NLL
    assert ours == pytest.approx(float(torch.exp(loss)), rel=1e-4)


@pytest.fixture(scope="module")
def whole_text(smollm2) -> torch.Tensor:
    return torch.tensor([smollm2[1].encode(HELD_OUT.read_text()).ids])  # (1, T), T ≈ 330


def test_quantized_smollm2_is_smaller_and_still_predicts(smollm2, held_out):
    model, _ = smollm2
    fp32 = perplexity(model(held_out)[0, :-1], held_out[0, 1:])
    for variant, smaller, worse in (("int8-weight", 2.3, 1.02), ("int4-weight", 6.0, 1.12)):
        quantized = quantized_copy(model, variant, group_size=32)
        assert weight_bytes(model) / weight_bytes(quantized) > smaller
        with torch.inference_mode():
            ppl = perplexity(quantized(held_out)[0, :-1], held_out[0, 1:])
        assert ppl < fp32 * worse, variant


def test_smoothquant_brings_dynamic_int8_perplexity_back(smollm2, whole_text):
    """PyTorch's one-scale-per-tensor int8 loses most of the model on the held-out text;
    per-token scales after SmoothQuant's migration (calibrated on other text) stay within
    5 % of fp32, the bench's goal."""
    model, tokenizer = smollm2
    calibration = torch.tensor([tokenizer.encode(" ".join(calibration_texts())).ids[:256]])

    def ppl(m: torch.nn.Module) -> float:
        with torch.inference_mode():
            return perplexity(m(whole_text)[0, :-1], whole_text[0, 1:])

    fp32 = ppl(model)
    per_tensor = ppl(quantized_copy(model, "int8-dynamic"))
    smoothed = ppl(
        quantized_copy(model, "int8-smooth", fused=False, calibrate=lambda m: m(calibration))
    )  # 8-bit activations through torch._int_mm, as the bench runs SmolLM2
    assert per_tensor > fp32 * 1.5  # the outlier problem
    assert smoothed < fp32 * 1.05  # and its fix


def test_paired_timing_warms_up_then_alternates_and_keeps_the_best():
    calls: list[str] = []
    ticks = iter([0.0, 3.0, 3.0, 4.0, 4.0, 5.0, 5.0, 9.0])  # a: 3 then 1 s; b: 1 then 4 s

    def side(name: str):
        return lambda: calls.append(name)

    best = paired_timing([side("a"), side("b")], rounds=2, clock=lambda: next(ticks))
    assert calls == ["a", "b", "a", "b", "a", "b"]  # one warm-up each, then one of each a round
    assert best == [1.0, 1.0]


def test_minilm_rows_time_each_variant_against_fp32_in_the_same_rounds():
    """A small run of the MiniLM bench: int8 after SmoothQuant keeps cosine >= 0.99 to fp32,
    and its speed-up is the paired one (fp32's best / its best), not a ratio of two rows
    measured minutes apart."""
    events: list[dict] = []
    rows = bench_minilm(
        ["int8-smooth"],
        sentences=24,
        queries=8,
        timed=16,
        rounds=1,
        emit=lambda kind, **data: events.append(data) if kind == "partial" else None,
    )
    fp32, smooth = rows
    assert fp32["variant"] == "fp32" and fp32["speedup"] == 1.0
    assert smooth["quality"]["cosine_mean"] >= 0.99 and smooth["size_ratio"] > 1.3  # fp32 table
    assert smooth["speedup"] > 0 and smooth["device"] == "cpu"
    assert [e["row"]["variant"] for e in events] == ["fp32", "int8-smooth"]
