"""Chapter 4's fine-tuning handler: LoRA adapters on a copy of this worker's SmolLM2.

The shared model (``modelcache.smollm2()``) is never changed: ``learn.lab.lora.with_lora``
copies its module tree and injects the adapters into the copy. The test prompts are
answered by the base model first, then by the tuned copy. The adapter is saved beside the
run (``adapter_path``) at the end, and also when the run is cancelled or runs out of time,
so a stopped run keeps what it learned; the loss curve goes to the page step by step.
"""

from __future__ import annotations

from typing import Any

from learn.playgrounds import PlaygroundError
from learn.playgrounds.finetune import ADAPTER_FILES, MAX_PAIR_TOKENS, LoraParams, adapter_path
from workers import modelcache
from workers.handlers import Job

BASE_NAME = "SmolLM2-135M-Instruct"
TIME_BUDGET_S = 300  # training stops here, whatever the bounds estimated, and says so
CURVE_W, CURVE_H = 400, 140  # the loss chart's drawing box (SVG user units)


def curve_points(losses: list[float], steps: int, top: float) -> str:
    """An SVG polyline's points for ``losses`` on a chart of ``steps`` steps by 0..``top``."""
    if not losses:
        return ""
    dx = CURVE_W / max(steps - 1, 1)
    return " ".join(
        f"{i * dx:.1f},{CURVE_H - CURVE_H * min(loss, top) / top:.1f}"
        for i, loss in enumerate(losses)
    )


def _save(model: Any, settings: Any, run_id: str) -> int:
    """Write the adapter beside the run, ours and the PEFT bundle; our file's size in bytes."""
    from learn.lab.lora import adapter_file, transformers_peft_zip

    files = {
        ADAPTER_FILES[0]: adapter_file(model, settings, BASE_NAME),
        ADAPTER_FILES[1]: transformers_peft_zip(model, settings),
    }
    for name, data in files.items():
        path = adapter_path(run_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_bytes(data)
        partial.replace(path)  # atomic: a download never reads half a file
    return len(files[ADAPTER_FILES[0]])


def finetune(p: LoraParams, job: Job) -> dict[str, Any]:
    from learn.lab.lora import (
        LoraSettings,
        LoraTrainer,
        LossDiverged,
        answer,
        encode_pair,
        sizes,
        with_lora,
    )
    from learn.lab.lora_pairs import builtin, common_marker, has_marker

    job.emit("progress", pct=1, message="Loading SmolLM2")
    base, tokenizer = modelcache.smollm2()
    pairs = p.pair_list()
    examples = [encode_pair(tokenizer, pair) for pair in pairs]
    longest = max(len(e.ids) for e in examples)
    if longest > MAX_PAIR_TOKENS:  # the form counted the same tokens; this is a backstop
        raise PlaygroundError(
            f"A pair is {longest} tokens in the chat template; at most {MAX_PAIR_TOKENS}."
        )
    if p.pairs is None:
        marker: tuple[str, str] | None = (builtin().marker, "start")
    else:  # what all of the learner's responses share, if anything, is the style to count
        marker = common_marker([pair.response for pair in pairs])
    before = []
    for i, prompt in enumerate(p.prompts):
        job.emit("progress", pct=2 + 3 * i / len(p.prompts), message="Answering before tuning")
        before.append(answer(base, tokenizer, prompt, p.max_new_tokens))
        job.emit("log", message=f"Before: {prompt} → {before[-1]['text']}")

    settings = LoraSettings(rank=p.rank, alpha=p.alpha, targets=p.targets)
    model = with_lora(base, settings, seed=p.seed)
    size = sizes(model)
    job.emit(
        "log",
        message=f"{size.trainable:,} adapter weights train ({100 * size.share:.2f} % of "
        f"{size.base:,}); the base model stays frozen",
    )
    trainer = LoraTrainer(
        model, examples, lr=p.lr, batch_size=p.batch_size, pad_id=base.config.eos_id, seed=p.seed
    )
    top: list[float] = []  # the chart's height: the first loss, rounded up

    def live(kind: str, /, **data: Any) -> None:
        if kind == "partial":
            top[:] = top or [max(1.0, float(int(data["loss"]) + 1))]
            data["points"] = curve_points(trainer.losses, p.steps, top[0])
            data["top"] = top[0]
        elif kind == "progress":
            data["pct"] = 5 + 85 * data["pct"] / 100
        job.emit(kind, **data)

    stopped = ""
    try:
        if not trainer.run(p.steps, emit=live, time_budget_s=TIME_BUDGET_S):
            stopped = (
                f"Stopped after {trainer.steps} of {p.steps} steps: training here may take "
                f"{TIME_BUDGET_S} s."
            )
            job.emit("log", message=stopped)
    except LossDiverged as exc:  # nothing worth keeping: the adapter has blown up
        raise PlaygroundError(str(exc)) from exc
    except BaseException:  # cancelled, or the worker's time limit: keep what it learned
        if trainer.steps:
            _save(model, settings, job.run_id)
        raise

    after = []
    for i, prompt in enumerate(p.prompts):
        job.emit("progress", pct=91 + 8 * i / len(p.prompts), message="Answering after tuning")
        after.append(answer(model, tokenizer, prompt, p.max_new_tokens))
    adapter_bytes = _save(model, settings, job.run_id)
    losses = trainer.losses
    top_loss = max(1.0, float(int(losses[0]) + 1))
    answers = [
        {
            "prompt": prompt,
            "before": b["text"],
            "after": a["text"],
            "before_marked": bool(marker) and has_marker(b["text"], *marker),
            "after_marked": bool(marker) and has_marker(a["text"], *marker),
        }
        for prompt, b, a in zip(p.prompts, before, after, strict=True)
    ]
    return {
        "source": "builtin" if p.pairs is None else "own",
        "pairs": len(pairs),
        "rank": p.rank,
        "alpha": p.alpha,
        "scaling": settings.scaling,
        "targets": p.targets,
        "lr": p.lr,
        "batch_size": p.batch_size,
        "steps": p.steps,
        "steps_done": trainer.steps,
        "stopped": stopped,
        "losses": [round(v, 4) for v in losses],
        "first_loss": round(losses[0], 4),
        "last_loss": round(losses[-1], 4),
        "points": curve_points(losses, p.steps, top_loss),
        "top": top_loss,
        "tokens": trainer.tokens,
        "train_seconds": round(trainer.seconds, 2),
        "tokens_per_s": round(trainer.tokens_per_s, 1),
        "answers": answers,
        "marker": marker[0] if marker else None,  # what every training response shares
        "marker_where": marker[1] if marker else None,  # "start" or "end"
        "marked_before": sum(a["before_marked"] for a in answers),
        "marked_after": sum(a["after_marked"] for a in answers),
        "trainable": size.trainable,
        "base_params": size.base,
        "share": size.share,
        "adapter_bytes": adapter_bytes,
        "base_bytes": size.base_bytes,
        "base_dtype": str(base.dtype).removeprefix("torch."),
        "device": job.device,
    }
