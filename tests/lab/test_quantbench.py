"""Quality measures of the quantization benchmark on the real SmolLM2."""

from __future__ import annotations

import pytest
import torch

from learn.lab.quality import perplexity
from learn.lab.quantbench import HELD_OUT
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


def test_quantized_smollm2_is_smaller_and_still_predicts(smollm2, held_out):
    model, _ = smollm2
    fp32 = perplexity(model(held_out)[0, :-1], held_out[0, 1:])
    for variant, smaller, worse in (("int8-weight", 2.3, 1.02), ("int4-weight", 2.7, 1.1)):
        quantized = quantized_copy(model, variant, group_size=32)
        assert weight_bytes(model) / weight_bytes(quantized) > smaller
        with torch.inference_mode():
            ppl = perplexity(quantized(held_out)[0, :-1], held_out[0, 1:])
        assert ppl < fp32 * worse, variant
