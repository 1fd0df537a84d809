"""LoRA on our Llama (peft's adapters): the tuned copy starts as the base model, only the
adapters learn, the loss falls, and merging W + (BA)ᵀ·alpha/r gives the same logits.

A tiny random Llama with SmolLM2's real tokenizer keeps these fast."""

from __future__ import annotations

import json

import pytest
import torch

from learn.lab import lora_pairs
from learn.lab.llama import Linear, Llama, LlamaConfig
from learn.lab.lora import (
    TARGETS,
    LoraSettings,
    LoraTrainer,
    LossDiverged,
    adapter_file,
    adapter_parameters,
    collate,
    delta_weight,
    encode_pair,
    lora_layers,
    merged,
    response_loss,
    sizes,
    transformers_peft_zip,
    with_lora,
)
from learn.lab.lora_pairs import Pair

CFG = LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=64, max_seq_len=256)


@pytest.fixture(scope="module")
def tokenizer():
    from learn.lab.llama_gguf import load_tokenizer

    return load_tokenizer()


@pytest.fixture
def base() -> Llama:
    torch.manual_seed(0)
    model = Llama(CFG)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    torch.nn.init.normal_(model.embed, std=0.5)  # logits with room to move
    for block in model.layers:  # norms at 1, as a trained model's are near
        block.attention_norm.weight.data.fill_(1.0)
        block.ffn_norm.weight.data.fill_(1.0)
    model.norm.weight.data.fill_(1.0)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def examples(tokenizer):
    pairs = list(lora_pairs.builtin().pairs[:4])
    return [encode_pair(tokenizer, pair) for pair in pairs]


def _ids(n: int = 12) -> torch.Tensor:
    return torch.randint(0, CFG.vocab_size, (2, n), generator=torch.Generator().manual_seed(1))


def _trained(base: Llama, examples, steps: int = 6, **kw) -> tuple[Llama, LoraTrainer]:
    model = with_lora(base, LoraSettings(rank=4, alpha=8, **kw), seed=3)
    trainer = LoraTrainer(model, examples, lr=3e-2, batch_size=2, pad_id=CFG.eos_id)
    trainer.run(steps)
    return model, trainer


def test_at_init_the_tuned_copy_gives_the_base_models_logits_and_the_base_is_untouched(
    base: Llama,
) -> None:
    model = with_lora(base, LoraSettings(rank=8, alpha=16))
    ids = _ids()
    assert torch.equal(model(ids), base(ids))  # B starts at zero: exactly the base model
    assert set(lora_layers(model)) == {
        f"layers.{i}.{part}"
        for i in range(CFG.n_layers)
        for part in ("attention.wqkv", "attention.wo", "feed_forward.w13", "feed_forward.w2")
    }
    assert not lora_layers(base)  # the adapters went into the copy's modules
    assert all(type(b.attention.wqkv) is Linear for b in base.layers)


def test_one_adapted_projection_computes_x_w_plus_x_at_bt_times_alpha_over_r(
    base: Llama,
) -> None:
    model = with_lora(base, LoraSettings(rank=4, alpha=12))
    layer = lora_layers(model)["layers.0.attention.wo"]
    torch.nn.init.normal_(layer.lora_B["default"].weight)  # a non-zero update to check
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight  # (r, in), (out, r)
    x = torch.randn(2, 5, CFG.dim)
    w = base.layers[0].attention.wo.weight  # (in, out)
    expected = x @ w + (x @ a.t() @ b.t()) * 12 / 4
    torch.testing.assert_close(layer(x), expected)


def test_only_the_adapters_get_gradients_and_the_base_weights_never_change(
    base: Llama, examples
) -> None:
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = with_lora(base, LoraSettings(rank=4, alpha=8, targets="attention"))
    ids, labels = collate(examples[:2], CFG.eos_id, model.device)
    response_loss(model, ids, labels).backward()
    adapters = {id(p) for p in adapter_parameters(model)}
    for name, p in model.named_parameters():
        if id(p) in adapters:
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert all(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    assert {n.rsplit(".", 1)[-1] for n in lora_layers(model)} == set(TARGETS["attention"])
    LoraTrainer(model, examples, lr=1e-2, batch_size=2).run(3)
    after = base.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sizes_count_r_times_in_plus_out_per_adapted_matrix(base: Llama) -> None:
    model = with_lora(base, LoraSettings(rank=4, alpha=8))
    qkv_out = (CFG.n_heads + 2 * CFG.n_kv_heads) * CFG.head_dim
    per_layer = 4 * (
        (CFG.dim + qkv_out)
        + (CFG.dim + CFG.dim)
        + (CFG.dim + 2 * CFG.hidden_dim)
        + (CFG.hidden_dim + CFG.dim)
    )
    size = sizes(model)
    assert size.trainable == CFG.n_layers * per_layer
    assert size.base == sum(p.numel() for p in base.parameters())
    assert size.adapter_bytes == 4 * size.trainable
    assert size.share == pytest.approx(size.trainable / size.base)


def test_the_loss_on_the_responses_falls(base: Llama, examples) -> None:
    _, trainer = _trained(base, examples, steps=24)
    first, last = sum(trainer.losses[:4]) / 4, sum(trainer.losses[-4:]) / 4
    assert last < 0.75 * first, trainer.losses
    assert trainer.tokens == 12 * sum(len(e.ids) for e in examples)  # 24 steps of 2: 12 epochs
    assert trainer.tokens_per_s > 0


def test_the_prompt_and_padding_are_not_learned(tokenizer, examples) -> None:
    pair = lora_pairs.builtin().pairs[0]
    example = encode_pair(tokenizer, pair)
    learned = [t for t in example.labels if t != -100]
    assert tokenizer.decode(learned, skip_special_tokens=False) == pair.response + "<|im_end|>"
    assert example.ids[-len(learned) :] == learned
    _, labels = collate(examples[:2], pad_id=CFG.eos_id, device=torch.device("cpu"))
    short = min(range(2), key=lambda i: len(examples[i].ids))
    assert (labels[short, len(examples[short].ids) :] == -100).all()


def test_merged_weights_give_the_adapter_models_logits(base: Llama, examples) -> None:
    model, _ = _trained(base, examples)
    ids = _ids()
    folded = merged(model)
    assert not lora_layers(folded)
    torch.testing.assert_close(folded(ids), model(ids), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(base(ids), model(ids), atol=1e-3)  # training did change it
    for layer in lora_layers(model).values():  # our ΔW is peft's, in our (in, out) layout
        torch.testing.assert_close(delta_weight(layer), layer.get_delta_weight("default"))


def test_the_adapter_file_holds_a_and_b_with_its_settings(base: Llama, examples, tmp_path) -> None:
    from safetensors import safe_open
    from safetensors.torch import load

    model, _ = _trained(base, examples, steps=2)
    settings = LoraSettings(rank=4, alpha=8)
    data = adapter_file(model, settings, "tiny")
    tensors = load(data)
    assert len(tensors) == 2 * len(lora_layers(model))
    a = tensors["layers.1.feed_forward.w13.lora_A.weight"]
    b = tensors["layers.1.feed_forward.w13.lora_B.weight"]
    assert a.shape == (4, CFG.dim) and b.shape == (2 * CFG.hidden_dim, 4)
    layer = lora_layers(model)["layers.1.feed_forward.w13"]
    assert torch.equal(b, layer.lora_B["default"].weight)
    path = tmp_path / "adapter.safetensors"
    path.write_bytes(data)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["rank"] == "4" and meta["alpha"] == "8" and meta["base_model"] == "tiny"


@pytest.mark.parametrize("targets", ["attention", "attention+mlp"])
def test_the_peft_bundle_gives_transformers_llama_the_same_logits(
    base: Llama, examples, tmp_path, targets: str
) -> None:
    """The reference: transformers' LlamaForCausalLM with our weights, and PEFT loading the
    bundle onto it the way a learner would, scores tokens as our tuned model does."""
    import io
    import zipfile

    from peft import PeftModel

    from learn.lab.llama_hf import to_hf

    model, _ = _trained(base, examples, targets=targets)
    data = transformers_peft_zip(model, LoraSettings(rank=4, alpha=8, targets=targets), "tiny")
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and config["peft_type"] == "LORA"
    hf = PeftModel.from_pretrained(to_hf(base), str(tmp_path))
    ids = _ids()
    torch.testing.assert_close(hf(ids).logits.float(), model(ids), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(to_hf(base)(ids).logits.float(), model(ids), atol=1e-3)


def test_a_learning_rate_far_too_high_ends_with_an_explanation(base: Llama, examples) -> None:
    model = with_lora(base, LoraSettings(rank=4, alpha=8))
    trainer = LoraTrainer(model, examples, lr=1e6, batch_size=2, max_grad_norm=float("inf"))
    with pytest.raises(LossDiverged, match="learning rate of 1e\\+06") as caught:
        trainer.run(20)
    assert "ten times smaller" in str(caught.value)
    assert len(trainer.losses) == caught.value.step - 1


def test_bfloat16_base_gets_float32_adapters_and_keeps_its_dtype(base: Llama) -> None:
    half = Llama.from_state_dict(CFG, {k: v.bfloat16() for k, v in base.state_dict().items()})
    model = with_lora(half, LoraSettings(rank=2, alpha=4))
    assert {p.dtype for p in adapter_parameters(model)} == {torch.float32}
    assert sizes(model).base_bytes == 2 * sizes(model).base
    assert model(_ids()).dtype == torch.float32  # logits are float32 either way


def test_the_builtin_pairs_all_carry_the_marker_and_hold_out_their_test_prompts() -> None:
    data = lora_pairs.builtin()
    assert len(data.pairs) >= 50
    assert all(lora_pairs.has_marker(p.response, data.marker) for p in data.pairs)
    assert not set(data.heldout) & {p.instruction for p in data.pairs}
    assert lora_pairs.has_marker("arr matey, the sea!", data.marker)
    assert not lora_pairs.has_marker("The sea, arr matey!", data.marker)


def test_a_learners_own_style_marker_is_what_all_their_responses_share() -> None:
    common = lora_pairs.common_marker
    assert common(["Arr, matey! Rain.", "arr matey? Snow."]) == ("Arr, matey!", "start")
    assert common(["Rain. Yours, the Owl.", "Snow. Yours, the Owl."]) == ("Yours, the Owl.", "end")
    assert common(["Rain falls.", "Snow falls"]) == ("falls.", "end")
    assert common(["Rain.", "Snow."]) is None and common(["alone"]) is None
    assert common(["A: rain. Over and out.", "A: snow. Over and out."]) == ("Over and out.", "end")
    assert common(["Ahh: rain. Out.", "Ahh: snow. Out."]) == ("Ahh:", "start")  # a tie
    assert lora_pairs.has_marker("Hail. yours the owl", "Yours, the Owl.", "end")


def test_pairs_parse_from_json_lines_and_from_blocks() -> None:
    lines = "\n".join(json.dumps({"instruction": f"q{i}", "response": f"a{i}"}) for i in range(3))
    assert lora_pairs.parse_pairs(lines) == [Pair(f"q{i}", f"a{i}") for i in range(3)]
    blocks = (
        "### Instruction\nWhat is rain?\n### Response\nWater.\n\n"
        "### Instruction:\nSnow?\n### response\nIce,\nfalling."
    )
    assert lora_pairs.parse_pairs(blocks) == [
        Pair("What is rain?", "Water."),
        Pair("Snow?", "Ice,\nfalling."),
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "paste some pairs"),
        ("just some text", "JSON line"),
        ('{"instruction": "a", "response": "b"}', "at least 2"),
        ('{"instruction": "a", "response": "b"}\n{"q": 1}', "line 2 should be"),
        ('{"instruction": "a", "response": "b"}\n{bad', "line 2 is not valid JSON"),
        ('{"instruction": "a", "response": "b"}\n{"x": ' + "[" * 100_000, "nested too deeply"),
        ("### Instruction\na\n### Response\nb\n### Response\nc", "pair 2 should be"),
        ("hello\n### Instruction\na\n### Response\nb", "before the first"),
        (
            "### Instruction\na\n### Response\n\n### Instruction\nb\n### Response\nc",
            "pair 1 has an empty",
        ),
        (
            "\n".join(json.dumps({"instruction": "q", "response": "a"}) for _ in range(201)),
            "at most 200",
        ),
        (
            "\n".join(json.dumps({"instruction": "q", "response": "a" * 601}) for _ in range(2)),
            "pair 1's response is 601 characters",
        ),
    ],
)
def test_bad_pairs_are_refused_with_a_sentence(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        lora_pairs.parse_pairs(text)
