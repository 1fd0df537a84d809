"""The packed twin that float32 decoding on the CPU runs on (``learn.lab.packed``).

References: the model's own forward pass (logits, KV cache) and ``generate(packed=False)``
(tokens); a tiny random model where SmolLM2 is not needed.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

from typing import Any

import pytest
import torch

from learn.lab.decoding import generate
from learn.lab.kvcache import KVCache
from learn.lab.llama import Llama, LlamaConfig, half_precision
from learn.lab.llama_gguf import chat_ids, load_smollm2
from learn.lab.lora import LoraSettings, with_lora
from learn.lab.packed import PackedLinear, can_pack, packed_model
from learn.lab.quantized_models import quantized_copy

pytestmark = pytest.mark.skipif(
    not can_pack(Llama(LlamaConfig(vocab_size=8, dim=8, n_layers=1, n_heads=2, n_kv_heads=1,
                                   hidden_dim=8, max_seq_len=8)).float()),
    reason="this torch build has no oneDNN packed linear",
)  # fmt: skip


@pytest.fixture(scope="module")
def smol() -> tuple[Llama, Any]:
    return load_smollm2("cpu")


def tiny(seed: int = 0) -> Llama:
    cfg = LlamaConfig(vocab_size=96, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                      hidden_dim=64, max_seq_len=64)  # fmt: skip
    torch.manual_seed(seed)
    model = Llama(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    return model


def test_the_twin_computes_what_the_model_computes(smol: tuple[Llama, Any]) -> None:
    """Logits and cache of a prefill and a few-token pass, the same within float32 rounding;
    every tensor but the packed matrices shared; made once per model."""
    model, tokenizer = smol
    twin = packed_model(model)
    assert packed_model(model) is twin
    assert sum(isinstance(m, PackedLinear) for m in twin.modules()) == 4 * 30 + 1  # + the head
    assert twin.norm.weight is model.norm.weight and twin.rope_cos is model.rope_cos
    ids = torch.tensor([tokenizer.encode("The river rises in the hills above the town.").ids])
    cache, twin_cache = KVCache.for_model(model, 64), KVCache.for_model(model, 64)
    with torch.inference_mode():
        model(ids[:, :4], cache, 0)
        twin(ids[:, :4], twin_cache, 0)
        ours = model(ids[:, 4:], cache, 4)  # (1, T, vocab)
        theirs = twin(ids[:, 4:], twin_cache, 4)
    torch.testing.assert_close(theirs, ours, atol=2e-3, rtol=1e-4)
    assert torch.equal(theirs.argmax(-1), ours.argmax(-1))
    S = ids.shape[1]
    torch.testing.assert_close(twin_cache.k[..., :S, :], cache.k[..., :S, :], atol=1e-3, rtol=1e-3)


def test_greedy_on_the_twin_equals_greedy_on_the_model(smol: tuple[Llama, Any]) -> None:
    model, tokenizer = smol
    ids = chat_ids(tokenizer, [{"role": "user", "content": "Name three rivers in Europe."}])
    packed = generate(model, ids, 24, stop_ids=())
    plain = generate(model, ids, 24, stop_ids=(), packed=False)
    assert packed.tokens == plain.tokens and len(packed.tokens) == 24


def test_the_twin_is_remade_when_the_weights_change_in_place() -> None:
    model = tiny()
    x = torch.tensor([[3, 1, 4, 1, 5]])
    twin = packed_model(model)
    with torch.no_grad():
        model.layers[0].feed_forward.w2.weight.mul_(-2.0)  # what an optimizer step does
    fresh = packed_model(model)
    assert fresh is not twin
    with torch.inference_mode():
        torch.testing.assert_close(fresh(x), model(x), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(twin(x), model(x), atol=1e-3)  # the stale one was wrong


def test_only_a_plain_float32_cpu_llama_is_packed() -> None:
    model = tiny()
    assert packed_model(model) is not model
    others = {
        "float16": half_precision(model),
        "int8 weights": quantized_copy(model, "int8-weight"),
        "LoRA layers": with_lora(model, LoraSettings(rank=2, alpha=4.0)),
    }
    for name, other in others.items():
        assert packed_model(other) is other, name
