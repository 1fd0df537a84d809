"""The tiny GPT and its training loop: our forward equals transformers' GPT-2 with the same
weights, the loss falls on a toy corpus, a too-high learning rate ends with an
explanation, and the distillation loss reaches its known limits (alpha = 0 is plain
cross-entropy; T -> infinity flattens the targets and becomes logit matching)."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / huggingface_hub load

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from learn.lab import tinygpt
from learn.lab.training import (
    CharTokenizer,
    Diverged,
    Student,
    TrainConfig,
    kd_loss,
    lr_at,
    split,
    train,
)

TOY = "the quick brown fox jumps over the lazy dog. " * 120


def small(vocab: int = 40, **kw: int) -> tinygpt.TinyGPT:
    cfg = tinygpt.GPTConfig(
        **{"vocab_size": vocab, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, **kw}
    )
    return tinygpt.TinyGPT(cfg, seed=0)


def test_forward_equals_transformers_gpt2_with_the_same_weights() -> None:
    model = small(vocab=97, n_layer=3, n_head=4, n_embd=48)
    with torch.no_grad():  # move off the initial values, so biases and norms matter too
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    peer = tinygpt.to_transformers(model)
    ids = torch.randint(0, 97, (3, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, theirs = model(ids), peer(ids).logits
        _, att = model.forward_with_attention(ids, layer=1)
        shown = model.forward_with_attention(ids, layer=1)[0]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shown, ours, atol=1e-5, rtol=1e-5)  # written-out = SDPA
    assert att.shape == (3, 4, 32, 32)
    torch.testing.assert_close(att.sum(-1), torch.ones(3, 4, 32))
    assert float(att.triu(1).abs().max()) == 0.0  # causal: nothing from the future


def test_saved_files_load_in_transformers_and_back(tmp_path: Path) -> None:
    from transformers import GPT2LMHeadModel

    model = small()
    tinygpt.save(model, tmp_path, {"tokenizer": {"kind": "chars", "chars": "ab"}, "step": 7})
    ids = torch.randint(0, 40, (2, 16), generator=torch.Generator().manual_seed(0))
    loaded, ours = tinygpt.load(tmp_path)
    peer = GPT2LMHeadModel.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids))
        torch.testing.assert_close(peer(ids).logits, model(ids), atol=1e-5, rtol=1e-5)
    assert ours["step"] == 7 and ours["tokenizer"]["chars"] == "ab"


def test_the_loss_falls_on_a_toy_corpus_and_samples_become_words() -> None:
    tok = CharTokenizer.from_text(TOY)
    assert tok.decode(tok.encode("lazy dog")) == "lazy dog"
    train_ids, val_ids = split(tok.encode(TOY))
    model = small(vocab=len(tok))
    cfg = TrainConfig(steps=80, batch_size=8, context=32, lr=3e-3, warmup=5, eval_every=20,
                      sample_every=80, sample_tokens=40)  # fmt: skip
    events: list[dict] = []
    out = train([Student("m", model)], train_ids, val_ids, cfg, decode=tok.decode,
                emit=lambda kind, **d: events.append({"event": kind, **d}))  # fmt: skip
    evals = out.students[0].evals
    assert [e["step"] for e in evals] == [0, 20, 40, 60, 80]
    assert evals[0]["val"] == pytest.approx(math.log(len(tok)), abs=0.3)  # a uniform guess
    assert evals[-1]["val"] < 0.5 * evals[0]["val"]
    assert out.steps_done == 80 and len(out.students[0].step_loss) == 80
    assert out.tokens_per_s > 0 and out.stopped == "done"
    words = set(out.students[0].samples[-1]["text"].split())
    assert words & set(TOY.split())  # noise has become (some) words
    parts = [e.get("part") for e in events if e["event"] == "partial"]
    assert parts.count("eval") == 5 and parts.count("attention") == 5 and "sample" in parts


def test_a_learning_rate_far_too_high_ends_with_an_explanation() -> None:
    tok = CharTokenizer.from_text(TOY)
    train_ids, val_ids = split(tok.encode(TOY))
    cfg = TrainConfig(steps=30, batch_size=8, context=32, lr=1.0, warmup=2, eval_every=10,
                      sample_every=30)  # fmt: skip
    saved: list[int] = []
    with pytest.raises(Diverged, match="learning rate") as err:
        train([Student("m", small(vocab=len(tok)))], train_ids, val_ids, cfg,
              decode=tok.decode, checkpoint=saved.append)  # fmt: skip
    assert err.value.step <= 30 and saved and saved[-1] < err.value.step


def test_time_budget_stops_a_run_and_says_so() -> None:
    tok = CharTokenizer.from_text(TOY)
    train_ids, val_ids = split(tok.encode(TOY))
    cfg = TrainConfig(steps=1_000, batch_size=2, context=16, max_seconds=0.0, eval_every=500)
    out = train([Student("m", small(vocab=len(tok)))], train_ids, val_ids, cfg, decode=tok.decode)
    assert out.stopped == "time" and out.steps_done == 1
    assert [e["step"] for e in out.students[0].evals] == [0, 1]  # the stop is evaluated


def test_learning_rate_warms_up_then_follows_a_cosine_to_a_tenth() -> None:
    assert lr_at(5, 1.0, 100, 10) == pytest.approx(0.5)
    assert lr_at(10, 1.0, 100, 10) == pytest.approx(1.0)
    assert lr_at(55, 1.0, 100, 10) == pytest.approx(0.55)  # half way down the cosine
    assert lr_at(100, 1.0, 100, 10) == pytest.approx(0.1)


def test_alpha_zero_is_plain_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 11, generator=gen), torch.randn(2, 5, 11, generator=gen)
    y = torch.randint(0, 11, (2, 5), generator=gen)
    ce = F.cross_entropy(s.reshape(-1, 11), y.reshape(-1))
    assert kd_loss(s, t, y, temperature=3.0, alpha=0.0) == ce
    assert kd_loss(s, None, y) == ce
    # and alpha = 1 ignores the labels entirely
    other = (y + 1) % 11
    assert kd_loss(s, t, y, temperature=3.0, alpha=1.0) == kd_loss(
        s, t, other, temperature=3.0, alpha=1.0
    )


def test_soft_loss_is_zero_when_student_equals_teacher_at_any_temperature() -> None:
    s = torch.randn(3, 4, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.zeros(3, 4, dtype=torch.long)
    for temperature in (0.5, 1.0, 4.0):
        assert float(kd_loss(s, s.clone(), y, temperature=temperature, alpha=1.0)) == pytest.approx(
            0, abs=1e-12
        )


def test_high_temperature_flattens_the_targets_and_becomes_logit_matching() -> None:
    """Hinton et al. (2015), section 2.1: as T grows, T^2 * KL tends to half the mean squared
    difference of the centred logits, while the targets tend to uniform and the KL itself
    (and its gradient) vanishes like 1/T^2."""
    gen = torch.Generator().manual_seed(4)
    s = torch.randn(2, 3, 13, generator=gen, dtype=torch.float64)
    t = torch.randn(2, 3, 13, generator=gen, dtype=torch.float64)
    y = torch.zeros(2, 3, dtype=torch.long)
    d = (s - s.mean(-1, keepdim=True)) - (t - t.mean(-1, keepdim=True))
    matching = float((d**2).mean(-1).mean() / 2)
    big = float(kd_loss(s, t, y, temperature=1e4, alpha=1.0))
    assert big == pytest.approx(matching, rel=1e-3)
    assert float((F.softmax(t / 1e4, -1) - 1 / 13).abs().max()) < 1e-4  # uniform targets

    def kl_grad(temperature: float) -> float:
        z = s.clone().requires_grad_()
        (kd_loss(z, t, y, temperature=temperature, alpha=1.0) / temperature**2).backward()
        assert z.grad is not None
        return float(z.grad.norm())

    assert kl_grad(10.0) / kl_grad(100.0) == pytest.approx(100, rel=0.05)


def test_distillation_trains_two_students_on_the_same_batches_one_teacher_call_each() -> None:
    tok = CharTokenizer.from_text(TOY)
    train_ids, val_ids = split(tok.encode(TOY))
    teacher_model = small(vocab=len(tok), n_layer=1)
    calls: list[tuple[int, ...]] = []

    def teacher(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return teacher_model(x)

    soft, hard = (
        Student("soft", small(vocab=len(tok)), alpha=0.9),
        Student("hard", small(vocab=len(tok))),
    )
    cfg = TrainConfig(steps=12, batch_size=4, context=16, eval_every=6, sample_every=12,
                      sample_tokens=8, eval_batches=2, temperature=2.0)  # fmt: skip
    out = train([soft, hard], train_ids, val_ids, cfg, decode=tok.decode, teacher=teacher)
    assert len(calls) == 12 + cfg.eval_batches  # each batch once, plus scoring the teacher
    assert soft.evals[0] == hard.evals[0]  # the same start: only the labels differ
    assert soft.step_loss != hard.step_loss
    assert out.teacher_val is not None and out.teacher_val > 0


def test_greedy_generation_takes_the_argmax_of_the_full_forward_each_step() -> None:
    model = small(vocab=40, block_size=8).eval()
    prompt = [3, 1, 4, 1, 5]
    out = model.generate(prompt, 6, temperature=0)
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(6):  # the reference: the whole (cropped) context, every position
            ids.append(int(model(torch.tensor([ids[-8:]]))[0, -1].argmax()))
    assert out == ids[len(prompt) :]
    sampled = model.generate(prompt, 20, temperature=1.0, top_k=3, seed=1)
    assert sampled == model.generate(prompt, 20, temperature=1.0, top_k=3, seed=1)  # seeded
