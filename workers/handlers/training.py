"""Chapter 4's training handlers: train a tiny GPT, distil SmolLM2 into one, sample from it.

Training runs on the worker's device. Its model is saved beside the run
(``learn.playgrounds.training.model_folder``) at every evaluation, and once more when the
run is cancelled or runs out of time, so a stopped run keeps its last checkpoint; the
curves go to the page as they are measured (and into ``curves.json`` beside the model).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from learn import queries
from learn.playgrounds import PlaygroundError
from learn.playgrounds.training import (
    TIME_BUDGET_S,
    DistillParams,
    SampleParams,
    TrainParams,
    model_folder,
)
from workers import modelcache
from workers.handlers import Job

if TYPE_CHECKING:
    from learn.lab.training import Outcome, Student

STEP_LOSS_POINTS = 500  # the per-step curve sent to the page, thinned to this many points


class Tokens:
    """A tokenizer as the loop needs it: encode, decode, size, and how to rebuild it."""

    def __init__(self, encode: Any, decode: Any, size: int, info: dict[str, Any]) -> None:
        self.encode, self.decode, self.size, self.info = encode, decode, size, info


def _tokens(spec: dict[str, Any] | str, text: str = "") -> Tokens:
    """Characters of ``text`` (or of a saved list), or a BPE tokenizer trained in chapter 3."""
    from learn.lab.training import CharTokenizer

    if spec == "chars" or (isinstance(spec, dict) and spec.get("kind") == "chars"):
        chars = (
            CharTokenizer.from_text(text) if spec == "chars" else CharTokenizer(list(spec["chars"]))
        )  # type: ignore[index]
        return Tokens(chars.encode, chars.decode, len(chars), chars.to_dict())
    from learn.lab.bpe import BPETokenizer

    tokenizer_id = spec if isinstance(spec, str) else spec["tokenizer_id"]
    try:
        trained = queries.trained_tokenizer(tokenizer_id)
    except Exception as exc:  # deleted since
        raise PlaygroundError(f"The BPE tokenizer {tokenizer_id} is gone; train another.") from exc
    bpe = BPETokenizer.from_dict(trained.data)
    info = {"kind": "bpe", "tokenizer_id": str(trained.pk), "name": trained.name}
    return Tokens(bpe.encode, bpe.decode, len(bpe), info)


def _thinned(values: list[float], points: int = STEP_LOSS_POINTS) -> dict[str, list[Any]]:
    step = max(1, -(-len(values) // points))
    steps = list(range(1, len(values) + 1, step))
    return {"steps": steps, "loss": [values[s - 1] for s in steps]}


def _split(ids: list[int], context: int) -> tuple[Any, Any]:
    from learn.lab.training import split

    train, val = split(ids)
    if len(val) <= context + 1:
        raise PlaygroundError(
            f"The text is {len(ids):,} tokens; its held-out tenth ({len(val):,}) is shorter "
            f"than one window of {context} tokens. Give more text or a shorter context."
        )
    return train, val


def _config(p: TrainParams | DistillParams) -> Any:
    from learn.lab.training import TrainConfig

    return TrainConfig(
        steps=p.steps,
        batch_size=p.batch_size,
        context=p.context,
        lr=p.lr,
        warmup=p.warmup,
        eval_every=max(1, p.steps // 20),
        sample_every=max(1, p.steps // 6),
        seed=p.seed,
        max_seconds=TIME_BUDGET_S,
    )


def _student_result(s: Student) -> dict[str, Any]:
    return {"evals": s.evals, "step_loss": _thinned(s.step_loss), "samples": s.samples}


def _outcome(out: Outcome, job: Job) -> dict[str, Any]:
    return {
        "steps_done": out.steps_done,
        "tokens_per_s": round(out.tokens_per_s, 1),
        "seconds": round(out.seconds, 2),
        "stopped": out.stopped,
        "time_budget_s": TIME_BUDGET_S,
        "device": job.device,
    }


def train_gpt(p: TrainParams, job: Job) -> dict[str, Any]:
    import torch

    from learn.lab import tinygpt
    from learn.lab.training import Diverged, Student, train

    job.emit("progress", pct=1, message="Reading the text")
    text = p.corpus()
    job.emit("progress", pct=2, message=f"Tokenizing {len(text):,} characters")
    tokens = _tokens(p.tokenizer, text)
    ids = tokens.encode(text)
    train_ids, val_ids = _split(ids, p.context)
    cfg = tinygpt.GPTConfig(tokens.size, p.context, p.n_layer, p.n_head, p.n_embd)
    torch.manual_seed(p.seed)
    model = tinygpt.TinyGPT(cfg, seed=p.seed).to(job.device)
    student = Student("model", model)
    folder = model_folder(job.run_id)
    last: dict[str, Any] = {}

    def keep(step: int) -> None:
        tinygpt.save(model, folder, {"tokenizer": tokens.info, "step": step})
        tinygpt.write_atomic(folder / "curves.json", json.dumps(_student_result(student)))

    def relay(kind: str, /, **data: Any) -> None:
        if kind == "partial" and data.get("part") == "attention":
            last.update(data["head"])
        job.emit(kind, **data)

    job.emit(
        "log",
        message=f"{model.num_params():,} weights, {tokens.size:,}-token vocabulary, "
        f"{len(train_ids):,} training and {len(val_ids):,} validation tokens",
    )
    config = _config(p)
    config.attn_layer, config.attn_head = p.attn_layer, p.attn_head
    try:
        out = train(
            [student], train_ids, val_ids, config, decode=tokens.decode, checkpoint=keep, emit=relay
        )
    except Diverged as exc:  # the last checkpoint (before the blow-up) stays
        raise PlaygroundError(str(exc)) from exc
    except BaseException:  # cancelled, or the worker's time limit: keep what it learned
        if student.step_loss:
            keep(len(student.step_loss))
        raise
    keep(out.steps_done)
    return {
        **_outcome(out, job),
        **_student_result(student),
        "config": asdict(cfg),
        "weights": model.num_params(),
        "tokenizer": {**tokens.info, "vocab_size": tokens.size},
        "corpus_chars": len(text),
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
        "attention": last,
        "uniform_loss": round(math.log(tokens.size), 4),
        "gap": round(student.evals[-1]["val"] - student.evals[-1]["train"], 4),
        "layer": p.attn_layer,
        "head": p.attn_head,
        "lr": p.lr,
    }


def distill(p: DistillParams, job: Job) -> dict[str, Any]:
    import torch

    from learn.lab import tinygpt
    from learn.lab.training import Diverged, Student, train

    job.emit("progress", pct=1, message="Loading SmolLM2, the teacher")
    teacher, tokenizer = modelcache.smollm2()
    text = p.corpus()
    job.emit("progress", pct=3, message=f"Tokenizing {len(text):,} characters with SmolLM2's BPE")
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    train_ids, val_ids = _split(ids, p.context)
    cfg = tinygpt.GPTConfig(teacher.config.vocab_size, p.context, p.n_layer, p.n_head, p.n_embd)
    students = [
        Student("soft", tinygpt.TinyGPT(cfg, seed=p.seed).to(job.device), alpha=p.alpha),
        Student("hard", tinygpt.TinyGPT(cfg, seed=p.seed).to(job.device), alpha=0.0),
    ]  # the same initial weights: only the labels differ

    @torch.inference_mode()
    def teach(x: torch.Tensor) -> torch.Tensor:
        return teacher(x.to(teacher.device)).float().to(x.device)  # (B, T, V)

    config = _config(p)
    config.temperature = p.temperature
    config.sample_tokens = 40
    job.emit(
        "log",
        message=f"Two students of {students[0].model.num_params():,} weights each; "
        f"{len(train_ids):,} training and {len(val_ids):,} validation tokens",
    )
    try:
        out = train(
            students,
            train_ids,
            val_ids,
            config,
            decode=lambda ids: tokenizer.decode(ids),
            teacher=teach,
            emit=job.emit,
        )
    except Diverged as exc:
        raise PlaygroundError(str(exc)) from exc
    return {
        **_outcome(out, job),
        "students": {s.name: _student_result(s) for s in students},
        "teacher_val": None if out.teacher_val is None else round(out.teacher_val, 4),
        "config": asdict(cfg),
        "weights": students[0].model.num_params(),
        "temperature": p.temperature,
        "alpha": p.alpha,
        "corpus_chars": len(text),
        "train_tokens": len(train_ids),
        "val_tokens": len(val_ids),
    }


def sample(p: SampleParams, job: Job) -> dict[str, Any]:
    from learn.lab import tinygpt

    model, ours = tinygpt.load(model_folder(p.model), job.device)
    tokens = _tokens(ours["tokenizer"])
    prompt = tokens.encode(p.prompt)
    out = model.generate(
        prompt, p.max_new_tokens, temperature=p.temperature, top_k=p.top_k or None, seed=p.seed
    )
    return {
        "prompt": p.prompt,
        "text": tokens.decode(out),
        "tokens": len(out),
        "trained_steps": ours.get("step"),
        "model": p.model,
        "device": job.device,
    }
