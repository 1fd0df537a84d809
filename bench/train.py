"""Training throughput of our tiny GPT against transformers' GPT-2 of the same configuration.

    python bench/train.py [--steps 40] [--device cpu|cuda] [--threads 1]

Both models start from the same weights (ours copied into ``GPT2LMHeadModel`` by
``learn.lab.tinygpt.to_transformers``), get the same AdamW settings and learning-rate
schedule, and see the same batches (character tokens of Python's documentation topics,
which ship with Python), one step of ours then one of theirs, interleaved so that machine
noise falls on both. Each step is timed whole (forward, loss, backward, clipping, optimiser
step); tokens/s uses the median step time. The loss of both is the same cross-entropy on
their logits, so the curves should agree to float rounding: the table gives the largest
difference between the two per-step losses.

Then LoRA against full fine-tuning of SmolLM2 on the same batch (``bench/train_lora.py``:
step time, peak memory, weights trained; ``--lora-steps 0`` skips it). Unigram against
``sentencepiece`` is ``bench/unigram.py``. Ends with ``RESULT <json>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydoc_data.topics

import torch
import transformers

from learn.lab.tinygpt import GPTConfig, TinyGPT, to_transformers
from learn.lab.training import CharTokenizer, TrainConfig, get_batch, kd_loss, lr_at, split

CONFIGS = [  # (layers, width, heads, context, batch): the playground's default and two more
    (1, 32, 2, 32, 16),
    (2, 64, 4, 64, 16),
    (4, 128, 4, 128, 16),
]


def optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": other, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def race(shape: tuple[int, ...], data: torch.Tensor, vocab: int, steps: int, device: str) -> dict:
    layers, width, heads, context, batch = shape
    cfg = TrainConfig(steps=steps, batch_size=batch, context=context, warmup=max(1, steps // 10))
    ours = TinyGPT(GPTConfig(vocab, context, layers, heads, width), seed=0).to(device)
    theirs = to_transformers(ours).train()  # a copy of the same initial weights
    models = {
        "ours": (ours, lambda x: ours(x)),
        "transformers": (theirs, lambda x: theirs(x).logits),
    }
    optims = {name: optimizer(m, cfg) for name, (m, _) in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    losses: dict[str, list[float]] = {name: [] for name in models}
    gen = torch.Generator().manual_seed(0)
    for step in range(1, steps + 1):
        x, y = (t.to(device) for t in get_batch(data, batch, context, gen))
        lr = lr_at(step, cfg.lr, steps, cfg.warmup, cfg.min_lr_ratio)
        for name, (model, forward) in models.items():
            opt = optims[name]
            for group in opt.param_groups:
                group["lr"] = lr
            sync(device)
            tick = time.perf_counter()
            loss = kd_loss(forward(x), None, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sync(device)
            times[name].append(time.perf_counter() - tick)
            losses[name].append(loss.item())
    warm = max(1, steps // 5)  # the first steps include allocator and kernel warm-up
    tps = {n: batch * context / statistics.median(t[warm:]) for n, t in times.items()}
    diffs = [abs(a - b) for a, b in zip(losses["ours"], losses["transformers"], strict=True)]
    return {
        "layers": layers, "width": width, "heads": heads, "context": context, "batch": batch,
        "weights": ours.num_params(),
        "ours_tokens_per_s": round(tps["ours"], 1),
        "transformers_tokens_per_s": round(tps["transformers"], 1),
        "ratio": round(tps["ours"] / tps["transformers"], 3),
        "first_loss": round(losses["ours"][0], 4),
        "ours_final_loss": round(losses["ours"][-1], 4),
        "transformers_final_loss": round(losses["transformers"][-1], 4),
        "max_loss_diff": round(max(diffs), 6),
        "mean_loss_diff": round(statistics.mean(diffs), 6),
        # what "within noise" is measured against: how much the loss moves from one
        # step's batch to the next (median |loss_t - loss_t-1|, ours)
        "step_noise": round(statistics.median(
            abs(a - b) for a, b in zip(losses["ours"][1:], losses["ours"][:-1], strict=True)), 6),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument("--lora-steps", type=int, default=3, help="0: skip the LoRA section")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    text = "\n\n".join(pydoc_data.topics.topics.values())
    tok = CharTokenizer.from_text(text)
    data, _ = split(tok.encode(text))
    rows = [race(shape, data, len(tok), args.steps, args.device) for shape in CONFIGS]

    print(f"{args.steps} steps each, {len(tok)}-character vocabulary, on {args.device}")
    print(
        f"{'L':>2} {'C':>4} {'T':>4} {'B':>3} {'weights':>9} {'ours tok/s':>11} "
        f"{'HF tok/s':>10} {'ours/HF':>8} {'final ours':>10} {'final HF':>9} {'max Δloss':>10} "
        f"{'mean Δloss':>10} {'step noise':>10}"
    )
    for r in rows:
        print(
            f"{r['layers']:>2} {r['width']:>4} {r['context']:>4} {r['batch']:>3} "
            f"{r['weights']:>9,} {r['ours_tokens_per_s']:>11,.0f} "
            f"{r['transformers_tokens_per_s']:>10,.0f} {r['ratio']:>7.2f}× "
            f"{r['ours_final_loss']:>10.4f} {r['transformers_final_loss']:>9.4f} "
            f"{r['max_loss_diff']:>10.2g} {r['mean_loss_diff']:>10.2g} {r['step_noise']:>10.2g}"
        )
    result = {
        "benchmark": "train",
        "steps": args.steps,
        "rows": rows,
        "min_ratio": min(r["ratio"] for r in rows),
        "max_loss_diff": max(r["max_loss_diff"] for r in rows),
        "within_noise": all(r["mean_loss_diff"] <= r["step_noise"] for r in rows),
        "device": args.device,
        "threads": args.threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    if args.lora_steps:
        import train_lora  # bench/ is this script's folder, first on sys.path

        print()
        result["lora"] = train_lora.measure(args.device, batch=4, steps=args.lora_steps)
        train_lora.report(result["lora"])
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
