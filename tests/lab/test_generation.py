"""Our Llama and decoders on the real SmolLM2-135M, checked against transformers.

The model loads once for the module (converted from the GGUF on the very first run, then
from the safetensors cache); generations are short (<= 20 new tokens) to keep CPU time low.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / huggingface_hub load

from pathlib import Path
from typing import Any

import pytest
import torch

from learn.lab.decoding import generate, greedy_no_cache, kv_cache_comparison
from learn.lab.kvcache import KVCache
from learn.lab.llama import Llama, LlamaConfig, inspect_next_token, truncated
from learn.lab.llama_gguf import chat_prompt, load_smollm2, write_f32_gguf
from learn.lab.llama_hf import hf_state_dict, to_hf
from learn.lab.models import smollm2_gguf
from learn.lab.quantized_models import quantized_copy
from learn.lab.speculative import (
    lookup_draft,
    speculative_draft_model,
    speculative_prompt_lookup,
)

N = 20  # new tokens per generation
QUOTE = (
    "The committee met on Tuesday to review the budget. After a long debate, it approved "
    "new funding for the city library and the public swimming pool."
)


@pytest.fixture(scope="module")
def smol() -> tuple[Llama, Any]:
    return load_smollm2("cpu")


@pytest.fixture(scope="module")
def model(smol: tuple[Llama, Any]) -> Llama:
    return smol[0]


@pytest.fixture(scope="module")
def tokenizer(smol: tuple[Llama, Any]) -> Any:
    return smol[1]


@pytest.fixture(scope="module")
def gguf_reader() -> Any:
    from gguf import GGUFReader

    return GGUFReader(str(smollm2_gguf()))  # ~3 s: it parses the whole vocabulary


@pytest.fixture(scope="module")
def hf_model(model: Llama) -> Any:
    return to_hf(model)


@pytest.fixture(scope="module")
def prompt(tokenizer: Any) -> list[int]:
    return chat_prompt(tokenizer, "What is the capital of France?")


@pytest.fixture(scope="module")
def quote_prompt(tokenizer: Any) -> list[int]:
    return chat_prompt(tokenizer, f"Repeat this passage word for word:\n\n{QUOTE}")


@pytest.fixture(scope="module")
def greedy(model: Llama, prompt: list[int]) -> list[int]:
    return generate(model, prompt, N, stop_ids=()).tokens


def test_q_and_k_are_unpermuted_as_transformers_does(model: Llama, gguf_reader: Any) -> None:
    from gguf import dequantize
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    ours = hf_state_dict(model)
    cfg = {"num_attention_heads": 9, "num_key_value_heads": 3}
    processor = LlamaTensorProcessor(config=cfg)
    tensors = {t.name: t for t in gguf_reader.tensors}
    for layer in (0, 17):
        for gguf_name, hf_name in (("attn_q", "q_proj"), ("attn_k", "k_proj")):
            t = tensors[f"blk.{layer}.{gguf_name}.weight"]
            name = f"blk.{layer}.{gguf_name}.weight"
            ref = processor.process(dequantize(t.data, t.tensor_type), name).weights
            mine = ours[f"model.layers.{layer}.self_attn.{hf_name}.weight"]
            assert torch.equal(mine, torch.from_numpy(ref.copy()).float())


def test_chat_prompt_renders_the_gguf_template(tokenizer: Any, gguf_reader: Any) -> None:
    from jinja2 import Template

    field = gguf_reader.fields["tokenizer.chat_template"]
    template = Template(field.contents())
    messages = [{"role": "user", "content": "Hi there"}]
    text = template.render(messages=messages, add_generation_prompt=True)
    assert chat_prompt(tokenizer, "Hi there") == tokenizer.encode(text).ids
    assert tokenizer.decode(chat_prompt(tokenizer, "Hi"), skip_special_tokens=False).endswith(
        "<|im_start|>assistant\n"
    )


def test_logits_match_transformers(model: Llama, hf_model: Any, prompt: list[int]) -> None:
    x = torch.tensor([prompt])
    with torch.inference_mode():
        ours = model(x)
        theirs = hf_model(x).logits
    assert ours.shape == (1, len(prompt), 49152)
    torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-4)


def test_cached_logits_equal_full_recompute(model: Llama, prompt: list[int]) -> None:
    x = torch.tensor([prompt])
    cache = KVCache.for_model(model, len(prompt))
    with torch.inference_mode():
        full = model(x)
        head = model(x[:, :-5], cache, 0)  # prefill, then one token at a time, then 3 at once
        steps = [model(x[:, i : i + 1], cache, i) for i in range(len(prompt) - 5, len(prompt) - 3)]
        tail = model(x[:, -3:], cache, len(prompt) - 3)
    torch.testing.assert_close(torch.cat([head, *steps, tail], 1), full, atol=1e-4, rtol=1e-4)


def test_kv_cache_greedy_equals_no_cache_and_transformers(
    model: Llama, hf_model: Any, prompt: list[int], greedy: list[int], tokenizer: Any
) -> None:
    slow = greedy_no_cache(model, prompt, N, stop_ids=())
    x = torch.tensor([prompt])
    with torch.inference_mode():  # eos_token_id=None: run past <|im_end|> as we do
        hf = hf_model.generate(
            x, attention_mask=torch.ones_like(x), max_new_tokens=N, do_sample=False,
            eos_token_id=None, pad_token_id=2,
        )  # fmt: skip
    assert len(greedy) == N
    assert greedy == slow.tokens
    assert greedy == hf[0, len(prompt) :].tolist()
    assert "Paris" in tokenizer.decode(greedy)


@pytest.fixture(scope="module")
def f32_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_f32_gguf(smollm2_gguf(), tmp_path_factory.mktemp("gguf") / "smollm2.f32.gguf")


def test_the_f32_gguf_copy_holds_the_dequantized_weights_and_metadata(
    f32_copy: Path, gguf_reader: Any
) -> None:
    from gguf import GGUFReader, dequantize

    copy = GGUFReader(str(f32_copy))
    assert [t.name for t in copy.tensors] == [t.name for t in gguf_reader.tensors]
    for old, new in zip(gguf_reader.tensors, copy.tensors, strict=True):
        assert new.tensor_type.name == "F32" and list(new.shape) == list(old.shape)
        want = dequantize(old.data, old.tensor_type).astype("float32").reshape(new.data.shape)
        assert (new.data == want).all(), old.name
    assert copy.fields["general.file_type"].contents() == 0  # LlamaFileType.ALL_F32
    for name in ("tokenizer.chat_template", "llama.rope.freq_base", "tokenizer.ggml.merges"):
        assert copy.fields[name].contents() == gguf_reader.fields[name].contents()


def test_llama_cpp_on_the_f32_copy_greedy_equals_ours(
    f32_copy: Path, model: Llama, prompt: list[int], greedy: list[int]
) -> None:
    """The same weights, so the same greedy tokens: what bench/generate.py section 6 checks
    at 128 tokens. (On the Q4_1 file llama.cpp rounds activations to 8 bits and drifts.)"""
    llama_cpp = pytest.importorskip("llama_cpp", reason="optional: pip install '.[bench]'")
    llm = llama_cpp.Llama(
        model_path=str(f32_copy), n_ctx=len(prompt) + N + 8, n_threads=2, verbose=False
    )
    gen = llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0)
    theirs = [int(t) for _, t in zip(range(N), gen, strict=False)]
    assert theirs == greedy


def test_generate_streams_tokens_and_reports_timing(
    model: Llama, tokenizer: Any, prompt: list[int], greedy: list[int]
) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    out = generate(model, prompt, N, tokenizer=tokenizer, emit=lambda k, **d: events.append((k, d)))
    stop = greedy.index(2) + 1 if 2 in greedy else N  # default stop: <|im_end|>
    assert out.tokens == greedy[:stop]
    assert [d["token"] for _, d in events] == out.tokens
    assert "".join(d["text"] for _, d in events) == out.text
    assert all(k == "partial" and d["ms"] > 0 for k, d in events)
    assert out.device == "cpu" and out.ttft_ms == out.token_ms[0] and out.tokens_per_s > 0
    assert out.cache_bytes == KVCache.bytes_for(30, 3, 64, len(prompt) + N, 4)


def test_sampling_is_reproducible_with_a_seed(model: Llama, prompt: list[int]) -> None:
    kw: dict[str, Any] = {"temperature": 0.9, "top_k": 40, "top_p": 0.9, "stop_ids": ()}
    a = generate(model, prompt, 8, seed=7, **kw)
    b = generate(model, prompt, 8, seed=7, **kw)
    assert a.tokens == b.tokens


def test_kv_cache_nbytes_equals_the_formula(model: Llama) -> None:
    cache = KVCache.for_model(model, 100, batch=2)
    assert cache.k.shape == (30, 2, 3, 100, 64)
    assert cache.nbytes == 2 * 30 * 3 * 64 * 100 * 4 * 2
    assert cache.nbytes == KVCache.bytes_for(30, 3, 64, 100, 4, batch=2)
    half = KVCache(4, 1, 2, 10, 8, dtype=torch.float16)
    assert half.nbytes == KVCache.bytes_for(4, 2, 8, 10, 2)


def test_kv_cache_comparison_runs_both_ways(model: Llama, prompt: list[int]) -> None:
    out = kv_cache_comparison(model, prompt, 6)
    assert out["same_tokens"] and len(out["cache"].tokens) == 6
    assert out["cache_bytes_per_position"] == 2 * 30 * 3 * 64 * 4


def test_lookup_draft_copies_what_followed_the_last_ngram() -> None:
    seq = [1, 2, 3, 4, 5, 9, 2, 3]
    assert lookup_draft(seq, ngram=2, num_draft=3) == [4, 5, 9]
    assert lookup_draft([1, 2, 3], ngram=3, num_draft=3) == []


def test_prompt_lookup_speculation_equals_greedy(model: Llama, quote_prompt: list[int]) -> None:
    plain = generate(model, quote_prompt, N, stop_ids=())
    spec = speculative_prompt_lookup(model, quote_prompt, N, ngram=3, num_draft=8, stop_ids=())
    assert spec.tokens == plain.tokens
    assert spec.accepted > 0 and spec.target_passes < N  # the quote was found and reused
    assert spec.accepted == sum(s.accepted for s in spec.steps)
    assert spec.target_passes == len(spec.steps) and spec.steps[0].drafted == 0  # the prefill
    assert len(spec.tokens) <= spec.accepted + len(spec.steps)  # each pass: accepted + 1
    assert spec.rejected == sum(s.drafted - s.accepted for s in spec.steps)


def test_prompt_lookup_stops_like_greedy(model: Llama, prompt: list[int]) -> None:
    plain = generate(model, prompt, N)  # stops at <|im_end|>
    spec = speculative_prompt_lookup(model, prompt, N)
    assert spec.tokens == plain.tokens


def test_draft_model_speculation_equals_greedy(
    model: Llama, prompt: list[int], greedy: list[int]
) -> None:
    draft = truncated(model, 6)  # early exit: shares the weights, costs a fifth
    spec = speculative_draft_model(model, draft, prompt, N, num_draft=3, stop_ids=())
    assert spec.tokens == greedy
    assert spec.accepted + spec.rejected == sum(s.drafted for s in spec.steps)
    self_spec = speculative_draft_model(model, model, prompt, N, num_draft=4, stop_ids=())
    assert self_spec.tokens == greedy and self_spec.rejected == 0  # a perfect draft


def test_inspect_next_token(model: Llama, tokenizer: Any, prompt: list[int]) -> None:
    view = inspect_next_token(model, tokenizer, prompt, layer=3, top=20)
    att = torch.tensor(view.attention)  # (nh, T, T)
    assert att.shape == (9, len(prompt), len(prompt))
    torch.testing.assert_close(att.sum(-1), torch.ones(9, len(prompt)))
    assert torch.all(att.triu(1) == 0)  # nothing attends to the future
    probs = [p for _, _, p in view.top]
    assert len(probs) == 20 and probs == sorted(probs, reverse=True)
    first = generate(model, prompt, 1).tokens[0]
    assert view.top[0][0] == first and len(view.tokens) == len(prompt)


def test_next_token_probabilities_at_each_temperature_are_softmax_of_logits_over_t(
    model: Llama, tokenizer: Any, prompt: list[int]
) -> None:
    view = inspect_next_token(model, tokenizer, prompt, layer=0, top=5, temperatures=(0.5, 2.0))
    with torch.inference_mode():
        logits = model(torch.tensor([prompt]))[0, -1].float()  # (V,)
    ids = [t for t, _, _ in view.top]
    for t in (0.5, 2.0):
        expected = (logits / t).softmax(-1)[ids]
        torch.testing.assert_close(torch.tensor(view.probs_at[t]), expected, atol=1e-5, rtol=1e-4)
    assert view.probs_at[0.5][0] > view.top[0][2] > view.probs_at[2.0][0]  # colder = sharper


def test_rope_tables_are_buffers_that_move_with_the_model_but_are_not_saved() -> None:
    cfg = LlamaConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2,
                      hidden_dim=48, max_seq_len=16)  # fmt: skip
    model = Llama(cfg)
    assert model.rope_cos.shape == (16, 8) and model.rope_cos.dtype == torch.float32
    assert "rope_cos" not in model.state_dict() and "rope_sin" not in model.state_dict()
    half = model.to(torch.bfloat16)
    assert half.rope_cos.dtype == half.rope_sin.dtype == torch.bfloat16


def test_a_bf16_copy_of_a_model_that_has_run_generates(
    model: Llama, prompt: list[int], greedy: list[int]
) -> None:
    # ``greedy`` ran the fp32 model first: a RoPE table cached as a plain attribute would
    # have stayed float32 through .to(bfloat16), and attention would mix the two dtypes
    bf16 = quantized_copy(model, "bf16")
    assert bf16.dtype == bf16.rope_cos.dtype == torch.bfloat16
    out = generate(bf16, prompt, 8, stop_ids=())
    assert len(out.tokens) == 8
    assert out.tokens[:3] == greedy[:3]  # bf16 rounding may drift later, not this soon
    assert model.rope_cos.dtype == torch.float32  # the original is untouched


def test_the_text_stream_sends_each_piece_once_and_never_half_a_character() -> None:
    from tokenizers import Tokenizer

    from learn.lab.decoding import TextStream
    from learn.lab.smollm2_text import smollm2_tokenizer_file

    tokenizer = Tokenizer.from_file(str(smollm2_tokenizer_file()))
    text = "Hello, wörld! 你好，世界 🤖🚀 naïve café\n  indented  code()  "
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    stream = TextStream(tokenizer)
    pieces = [stream.push(token) for token in ids]
    assert "".join(pieces) == tokenizer.decode(ids) == stream.text
    assert not any("\ufffd" in piece for piece in pieces)
    assert pieces.count("") > 0  # the emoji's bytes span tokens: held back, then sent whole
