"""Training a language model, live: the loop the "Train a tiny GPT" and "Distillation"
playgrounds run, in the manner of nanoGPT's ``train.py``.

One loop trains one or more *students* on the same batches (a plain run has one; the
distillation playground trains a soft-label and a hard-label student side by side, so
any difference between their curves is the labels', not the data's or the seed's):

    for step in 1..steps:
        x, y = a random batch of B windows of T tokens from the training split, y = x shifted by 1
        teacher logits (if any), computed once for the batch      (B, T, V)
        each student: loss = kd_loss(logits, teacher, y, T, alpha) -> backward -> clip -> AdamW
        every eval_every steps: train and validation loss on fixed batches, tokens/s,
            one head's attention on a fixed text; every sample_every steps: a sample

The learning rate warms up linearly, then follows a cosine down to ``min_lr_ratio`` of its
peak (Loshchilov & Hutter's SGDR schedule without restarts, as nanoGPT uses). A loss that
is not a finite number, or that climbs far above what guessing uniformly would score, stops
the run with ``Diverged`` and an explanation a learner can act on.

Shapes: B batch, T context, V vocabulary.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from learn.lab.events import Emit, no_emit
from learn.lab.tinygpt import TinyGPT

# --------------------------------------------------------------------------- tokens


class CharTokenizer:
    """One token per character: the most frequent ``max_chars`` characters of a text
    (id 0 is ``unknown``, what every other character becomes)."""

    unknown = "\ufffd"

    def __init__(self, chars: Sequence[str]) -> None:
        self.chars = [self.unknown, *[c for c in chars if c != self.unknown]]
        self.ids = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str, max_chars: int = 255) -> CharTokenizer:
        common = [c for c, _ in Counter(text).most_common(max_chars)]
        return cls(sorted(common))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        return [self.ids.get(c, 0) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] if 0 <= i < len(self.chars) else self.unknown for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "chars", "chars": "".join(self.chars[1:])}


def split(ids: Sequence[int], val_fraction: float = 0.1) -> tuple[Tensor, Tensor]:
    """(train, validation): the text's last ``val_fraction`` is held out, as nanoGPT does,
    so validation text is text the model never trains on (not a shuffled neighbour)."""
    data = torch.tensor(ids, dtype=torch.long)
    cut = int(len(data) * (1 - val_fraction))
    return data[:cut], data[cut:]


def get_batch(
    data: Tensor, batch_size: int, context: int, gen: torch.Generator
) -> tuple[Tensor, Tensor]:
    """B random windows: x (B, T) and the next tokens y (B, T) (x shifted left by one)."""
    starts = torch.randint(len(data) - context, (batch_size,), generator=gen)  # (B,)
    x = torch.stack([data[s : s + context] for s in starts.tolist()])  # (B, T)
    y = torch.stack([data[s + 1 : s + 1 + context] for s in starts.tolist()])  # (B, T)
    return x, y


# ---------------------------------------------------------------------- the losses


def kd_loss(
    student: Tensor,
    teacher: Tensor | None,
    targets: Tensor,
    *,
    temperature: float = 1.0,
    alpha: float = 0.0,
) -> Tensor:
    """Knowledge distillation (Hinton, Vinyals & Dean, 2015): logits (B, T, V), targets (B, T).

        loss = alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T))
             + (1 − alpha) · cross_entropy(student, targets)

    ``alpha = 0`` is plain next-token cross-entropy (hard labels). The T² keeps the soft
    term's gradients the same size as T changes: as T → ∞ both softmaxes flatten towards
    uniform (the KL itself, and its gradient, vanish like 1/T²), and T²·KL tends to
    ``mean((s − mean s − (t − mean t))²) / 2`` per position, i.e. matching the centred logits.
    """
    V = student.shape[-1]
    hard = F.cross_entropy(student.reshape(-1, V), targets.reshape(-1))
    if alpha == 0 or teacher is None:
        return hard
    s = F.log_softmax(student.reshape(-1, V) / temperature, dim=-1)  # (B*T, V)
    t = F.log_softmax(teacher.reshape(-1, V).to(student.dtype) / temperature, dim=-1)
    soft = F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2
    return alpha * soft + (1 - alpha) * hard


def lr_at(step: int, peak: float, steps: int, warmup: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine from ``peak`` to ``min_ratio·peak``
    at the last step (steps count from 1)."""
    if step <= warmup:
        return peak * step / max(warmup, 1)
    progress = (step - warmup) / max(steps - warmup, 1)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class Diverged(Exception):
    """The loss stopped being a usable number: the message says why and what to change."""

    def __init__(self, step: int, loss: float, lr: float, uniform: float) -> None:
        what = "not a number" if not math.isfinite(loss) else f"{loss:.1f}"
        super().__init__(
            f"Training diverged at step {step}: the loss became {what} (guessing uniformly "
            f"scores {uniform:.2f}). The learning rate, {lr:.3g} at that step, is too high "
            "for this model: each update overshoots, the next one overshoots further, and the "
            "numbers blow up. Try a learning rate 3 to 10 times smaller, or more warm-up steps."
        )
        self.step, self.loss, self.lr = step, loss, lr


# ---------------------------------------------------------------------- the loop


@dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 16  # B
    context: int = 64  # T, at most the model's block_size
    lr: float = 3e-3  # the peak learning rate
    warmup: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1  # AdamW's, on the matrices only (not biases, norms)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 25
    eval_batches: int = 4
    sample_every: int = 50
    sample_tokens: int = 120
    seed: int = 0
    max_seconds: float | None = None  # stop (and say so) after this much wall time
    temperature: float = 2.0  # distillation only
    attn_layer: int = 0  # the head whose attention pattern is shown
    attn_head: int = 0
    attn_tokens: int = 32


@dataclass
class Student:
    """One model being trained, its own optimiser and its curves."""

    name: str
    model: TinyGPT
    alpha: float = 0.0  # weight of the teacher's soft labels (0: hard labels only)
    step_loss: list[float] = field(default_factory=list)  # every step's training loss
    evals: list[dict[str, float]] = field(default_factory=list)  # {step, train, val}
    samples: list[dict[str, Any]] = field(default_factory=list)  # {step, text}
    optimizer: torch.optim.Optimizer | None = None

    def make_optimizer(self, cfg: TrainConfig) -> None:
        decay = [p for n, p in self.model.named_parameters() if p.dim() >= 2]
        other = [p for n, p in self.model.named_parameters() if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": other, "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


@dataclass
class Outcome:
    """What a run did: the students (their curves), speed, and why it stopped."""

    students: list[Student]
    steps_done: int
    tokens_per_s: float  # training steps only, evaluation excluded
    seconds: float
    stopped: str  # "done" or "time"
    teacher_val: float | None = None  # the teacher's own validation loss, if there is one


Teacher = Callable[[Tensor], Tensor]  # ids (B, T) -> logits (B, T, V)


@torch.no_grad()
def evaluate(model: TinyGPT, batches: list[tuple[Tensor, Tensor]]) -> float:
    """Mean next-token cross-entropy (nats per token) over fixed batches."""
    model.eval()
    losses = [kd_loss(model(x), None, y).item() for x, y in batches]
    model.train()
    return sum(losses) / len(losses)


def train(
    students: list[Student],
    train_data: Tensor,
    val_data: Tensor,
    cfg: TrainConfig,
    *,
    decode: Callable[[list[int]], str],
    teacher: Teacher | None = None,
    checkpoint: Callable[[int], None] | None = None,
    emit: Emit = no_emit,
) -> Outcome:
    """Train every student on the same batches for ``cfg.steps`` (or ``cfg.max_seconds``).

    Emits ``partial`` events: ``part="eval"`` (step, per student train/val loss, tokens/s,
    lr), ``part="sample"`` (step, per student text), ``part="attention"`` (step, head:
    {step, tokens, weights (T, T)} of one head of the first student), and ``progress``.
    Raises ``Diverged`` when the loss blows up.
    """
    device = students[0].model.device
    V = students[0].model.config.vocab_size
    T = min(cfg.context, students[0].model.config.block_size)
    if len(train_data) <= T + 1 or len(val_data) <= T + 1:
        raise ValueError(
            f"the text is too short for a context of {T} tokens: it needs more than {T + 1} "
            "tokens in both the training and the validation part"
        )
    gen = torch.Generator().manual_seed(cfg.seed)
    fixed = torch.Generator().manual_seed(cfg.seed + 1)  # the same eval batches every time
    eval_b = min(cfg.batch_size, 8)  # evaluation must not cost more than the training
    evals = {
        "train": [
            _to(get_batch(train_data, eval_b, T, fixed), device) for _ in range(cfg.eval_batches)
        ],
        "val": [
            _to(get_batch(val_data, eval_b, T, fixed), device) for _ in range(cfg.eval_batches)
        ],
    }
    probe = val_data[: min(cfg.attn_tokens, T)].to(device)[None]  # (1, t)
    prompt = val_data[: min(16, T)].tolist()
    for s in students:
        s.model.train()
        s.make_optimizer(cfg)
    teacher_val = None
    if teacher is not None:
        with torch.no_grad():
            teacher_val = sum(kd_loss(teacher(x), None, y).item() for x, y in evals["val"]) / len(
                evals["val"]
            )
    uniform = math.log(V)
    started = time.perf_counter()
    train_seconds, tokens, step, stopped = 0.0, 0, 0, "done"
    every = max(1, cfg.steps // 100)

    def report(step: int) -> None:
        row = {
            "part": "eval",
            "step": step,
            "lr": lr,
            "tokens_per_s": round(tokens / max(train_seconds, 1e-9), 1),
            "losses": {},
            "teacher": None if teacher_val is None else round(teacher_val, 4),
        }
        for s in students:
            point = {
                "step": step,
                "train": evaluate(s.model, evals["train"]),
                "val": evaluate(s.model, evals["val"]),
            }
            s.evals.append(
                {k: round(v, 4) if isinstance(v, float) else v for k, v in point.items()}
            )
            row["losses"][s.name] = s.evals[-1]
        emit("partial", **row)
        with torch.no_grad():
            s0 = students[0].model
            s0.eval()
            _, att = s0.forward_with_attention(probe, cfg.attn_layer)
            s0.train()
        weights = att[0, cfg.attn_head]  # (t, t)
        emit(
            "partial",
            part="attention",
            step=step,
            head={
                "step": step,
                "tokens": [decode([i]) for i in probe[0].tolist()],
                "weights": [[round(float(w), 3) for w in r] for r in weights],
            },
        )
        if checkpoint is not None:
            checkpoint(step)

    def sample(step: int) -> None:
        texts = {}
        for s in students:
            s.model.eval()
            ids = s.model.generate(
                prompt, cfg.sample_tokens, temperature=0.8, top_k=40, seed=cfg.seed
            )
            s.model.train()
            s.samples.append({"step": step, "text": decode(ids)})
            texts[s.name] = s.samples[-1]["text"]
        emit("partial", part="sample", step=step, prompt=decode(prompt), texts=texts)

    lr = lr_at(1, cfg.lr, cfg.steps, cfg.warmup, cfg.min_lr_ratio)
    report(0)
    for step in range(1, cfg.steps + 1):
        lr = lr_at(step, cfg.lr, cfg.steps, cfg.warmup, cfg.min_lr_ratio)
        tick = time.perf_counter()
        x, y = _to(get_batch(train_data, cfg.batch_size, T, gen), device)
        with torch.no_grad():
            target = teacher(x) if teacher is not None else None  # once per batch, all students
        for s in students:
            assert s.optimizer is not None
            for group in s.optimizer.param_groups:
                group["lr"] = lr
            loss = kd_loss(s.model(x), target, y, temperature=cfg.temperature, alpha=s.alpha)
            value = loss.item()
            exploded = s.alpha == 0 and step > cfg.warmup and value > 2 * uniform + 2
            if not math.isfinite(value) or exploded:  # (a soft term may exceed ln V: T² · KL)
                raise Diverged(step, value, lr, uniform)
            s.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(s.model.parameters(), cfg.grad_clip)
            s.optimizer.step()
            s.step_loss.append(round(value, 4))
        train_seconds += time.perf_counter() - tick
        tokens += x.numel()
        over = cfg.max_seconds is not None and time.perf_counter() - started > cfg.max_seconds
        if step % cfg.eval_every == 0 or step == cfg.steps or over:
            report(step)
        if step % cfg.sample_every == 0 or step == cfg.steps or over:
            sample(step)
        if step % every == 0:
            emit("progress", pct=100 * step / cfg.steps, message=f"step {step} of {cfg.steps}")
        if over:
            stopped = "time"
            break
    return Outcome(
        students=students,
        steps_done=step,
        tokens_per_s=tokens / max(train_seconds, 1e-9),
        seconds=time.perf_counter() - started,
        stopped=stopped,
        teacher_val=teacher_val,
    )


def _to(batch: tuple[Tensor, Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    return batch[0].to(device), batch[1].to(device)
