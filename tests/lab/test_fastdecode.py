"""The static-cache decoder (``learn.lab.fastdecode``) against the eager loop it replaces.

Reference: ``learn.lab.decoding.generate`` (itself checked against full recomputation and
transformers). A tiny random Llama makes the checks fast; SmolLM2 runs a few tokens to show
the same on the real weights and on an int8 copy. The compiled test compiles a one-layer
model (inductor keeps the generated code on disk, so later runs are quicker).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from learn.lab.decoding import generate
from learn.lab.fastdecode import (
    FastDecoder,
    StaticKVCache,
    forward_static,
    generate_fast,
    gumbel_noise,
    pick,
)
from learn.lab.kvcache import KVCache
from learn.lab.llama import Llama, LlamaConfig

N = 24  # new tokens on the tiny model


def tiny(n_layers: int = 2, seed: int = 0) -> Llama:
    """A random Llama with SmolLM2's layout (GQA, tied embeddings) at toy sizes."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=256, dim=64, n_layers=n_layers, n_heads=4, n_kv_heads=2,
                      hidden_dim=96, max_seq_len=512)  # fmt: skip
    model = Llama(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)  # large enough that logits are far from ties
    model.init_rope()
    return model.eval().requires_grad_(False)


PROMPT = [5, 17, 33, 9, 100, 3, 250, 42]


@pytest.fixture(scope="module")
def model() -> Llama:
    return tiny()


@pytest.fixture(scope="module")
def reference(model: Llama) -> list[int]:
    return generate(model, PROMPT, N, stop_ids=()).tokens


def test_the_static_cache_writes_in_place_at_the_positions_given() -> None:
    cache = StaticKVCache(2, 1, 2, 16, 4)
    k_before = cache.k[1]
    k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)  # (B, nkv, T, hs)
    keys, values = cache.update(1, torch.tensor([4, 5, 6]), k, v)
    assert keys is k_before and keys.shape == (1, 2, 16, 4)  # the same buffer, full length
    torch.testing.assert_close(keys[:, :, 4:7], k, rtol=0, atol=0)
    torch.testing.assert_close(values[:, :, 4:7], v, rtol=0, atol=0)
    assert keys[:, :, :4].abs().sum() == 0 and cache.k[0].abs().sum() == 0  # nothing else
    assert cache.nbytes == 2 * 2 * (1 * 2 * 16 * 4) * 4


@torch.inference_mode()
def test_prefill_and_each_step_give_the_eager_models_logits(model: Llama) -> None:
    dec = FastDecoder(model, 128, compile=False)
    logits = dec.prefill(PROMPT)  # (1, V)
    cache = KVCache.for_model(model, 128)
    expected = model(torch.tensor([PROMPT]), cache, 0, last_only=True)[:, -1]
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)  # the same ops: exact
    for i, token in enumerate([7, 8, 9]):
        pos = len(PROMPT) + i
        x = torch.tensor([[token]])
        got = forward_static(model, model.embed_tokens(x), torch.tensor([pos]), dec.cache)
        want = model(x, cache, pos, last_only=True)[:, -1]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # masked over P slots


def test_the_eager_static_path_gives_the_loops_greedy_tokens(
    model: Llama, reference: list[int]
) -> None:
    out, dec = generate_fast(model, PROMPT, N, stop_ids=(), compile=False)
    assert out.tokens == reference
    assert not dec.compiled and dec.report.error == ""
    assert out.prompt_tokens == len(PROMPT) and len(out.token_ms) == N
    assert dec.max_pos == 128  # 8 + 24 positions, rounded up to the bucket


@pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None,
    reason="torch.compile on the CPU needs a C++ compiler (g++)",
)
def test_the_compiled_step_gives_the_loops_greedy_tokens() -> None:
    one = tiny(n_layers=1, seed=1)
    reference = generate(one, PROMPT, N, stop_ids=()).tokens
    out, dec = generate_fast(one, PROMPT, N, stop_ids=(), compile=True)
    assert dec.report.mode == "inductor" and dec.report.compile_s > 0
    assert out.tokens == reference
    again, dec2 = generate_fast(one, PROMPT[:5], N, stop_ids=(), compile=True)
    assert dec2 is dec  # the compiled step is reused for another prompt in the same bucket
    assert again.tokens == generate(one, PROMPT[:5], N, stop_ids=()).tokens
    # sampling: the same noise through the compiled and the eager step, the same draws
    hot, _ = generate_fast(one, PROMPT, 12, 1.2, top_k=20, seed=5, stop_ids=(), compile=True)
    cold, _ = generate_fast(one, PROMPT, 12, 1.2, top_k=20, seed=5, stop_ids=(), compile=False)
    assert hot.tokens == cold.tokens and len(set(hot.tokens)) > 1


def test_a_failed_compile_falls_back_to_eager_and_says_why(
    model: Llama, reference: list[int]
) -> None:
    dec = FastDecoder(model, 128, compile="auto", options={"_raise_error_for_testing": True})
    step = dec.step()
    assert not dec.compiled and "Error" in dec.report.error
    with torch.inference_mode():
        dec.prefill(PROMPT)
        first = torch.tensor([[reference[0]]])
        nxt = step(first, torch.tensor([len(PROMPT)]), None)
    assert nxt.item() == reference[1]
    strict = FastDecoder(model, 128, compile=True, options={"_raise_error_for_testing": True})
    with pytest.raises(Exception):  # noqa: B017 (whatever the backend raises)
        strict.step()


def test_it_stops_at_a_stop_token_inside_a_chunk(model: Llama, reference: list[int]) -> None:
    j = next(i for i in range(2, N) if reference[i] not in reference[:i])  # first new token
    out, _ = generate_fast(model, PROMPT, N, stop_ids=[reference[j]], compile=False, check_every=5)
    assert out.tokens == reference[: j + 1] and out.stop_reason == "stop_token"
    events: list[dict[str, object]] = []
    generate_fast(model, PROMPT, 6, stop_ids=(), compile=False, check_every=4,
                  emit=lambda kind, **d: events.append(d))  # fmt: skip
    assert [e["token"] for e in events] == reference[:6]  # every token streamed, once


def test_device_sampling_draws_from_the_softmax_at_its_temperature() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])  # (1, V)
    draws = 20_000
    gen = torch.Generator().manual_seed(0)
    for temperature in (0.7, 1.5):  # one step, the temperature carried by the noise
        noise = gumbel_noise((draws, 6), temperature, gen)
        got = pick(logits.expand(draws, -1), None, noise)  # (draws,)
        freq = torch.bincount(got, minlength=6).float() / draws
        expected = (logits[0] / temperature).softmax(-1)
        torch.testing.assert_close(freq, expected, rtol=0, atol=0.015)
    hot = pick(logits.expand(draws, -1), 2, gumbel_noise((draws, 6), 5.0, gen))
    assert set(hot.tolist()) == {0, 1}  # hot, but only the 2 likeliest
    assert pick(logits, None, None).item() == 0  # greedy


def test_sampling_is_reproducible_with_a_seed(model: Llama) -> None:
    a, _ = generate_fast(model, PROMPT, 12, 0.9, seed=3, stop_ids=(), compile=False)
    b, _ = generate_fast(model, PROMPT, 12, 0.9, seed=3, stop_ids=(), compile=False)
    c, _ = generate_fast(model, PROMPT, 12, 0.9, seed=4, stop_ids=(), compile=False)
    assert a.tokens == b.tokens and a.tokens != c.tokens


def test_a_prompt_longer_than_the_context_is_refused(model: Llama) -> None:
    with pytest.raises(ValueError, match="exceed"):
        generate_fast(model, list(range(500)), 100, compile=False)


@pytest.fixture(scope="module")
def smol() -> tuple[Llama, Any]:
    from learn.lab.llama_gguf import load_smollm2

    return load_smollm2("cpu")


def test_smollm2_static_path_gives_the_loops_greedy_tokens(smol: tuple[Llama, Any]) -> None:
    from learn.lab.llama_gguf import chat_prompt

    model, tok = smol
    ids = chat_prompt(tok, "Name three colours.")
    out, _ = generate_fast(model, ids, 8, stop_ids=(), compile=False)
    assert out.tokens == generate(model, ids, 8, stop_ids=()).tokens


def test_an_int8_weight_only_copy_runs_through_the_same_step(model: Llama) -> None:
    from learn.lab.quantized_models import quantized_copy

    int8 = quantized_copy(model, "int8-weight")  # its layers, its tied int8 table
    out, _ = generate_fast(int8, PROMPT, N, stop_ids=(), compile=False)
    assert out.tokens == generate(int8, PROMPT, N, stop_ids=()).tokens
