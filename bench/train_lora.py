"""LoRA vs full fine-tuning of SmolLM2 on the same batch: step time, peak memory, weights trained.

    python bench/train_lora.py [--device cpu|cuda] [--batch 4] [--steps 5]
                               [--rank 8] [--alpha 16] [--targets attention+mlp]

The batch: the first ``--batch`` built-in pairs (``learn/lab/data/lora_pairs.json``) in the
chat template, the loss on the response tokens, one AdamW step per step; the same batch on
both sides. LoRA trains the adapters of ``learn.lab.lora.with_lora``; full fine-tuning
trains every weight of the same model. Both keep the base weights in float32 (full
fine-tuning in bfloat16 without float32 master weights would not be a fair peer).

Step time: both sides in one process, alternating step by step after a warm-up step each
(a busy moment of the machine hits both alike); the best of ``--steps`` each. Peak memory,
measured in a fresh process per side (neither's memory counts against the other): on CUDA
``torch.cuda.max_memory_allocated`` during a warm-up step and one more, minus what was
allocated before them; on CPU the process's resident set, sampled every 2 ms, peak minus
before the first step (what the steps added: gradients, optimiser state, activations; the
weights are paged in first). Also counted, not measured: weights + gradients + AdamW's two
averages, in bytes ("state"). When SmolLM2's files are absent (a GPU machine with no model
store) the model is built at SmolLM2's shapes with random weights, and the batch is random
token ids of the same lengths; the result says so.

Ends with ``RESULT <json>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class RssPeak:
    """The process's resident set size, sampled in a thread: (peak - start) in bytes."""

    def __init__(self, every_s: float = 0.002) -> None:
        self.every_s, self.peak, self.running = every_s, 0, False
        self.page = os.sysconf("SC_PAGE_SIZE")

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self) -> RssPeak:
        self.start = self.peak = self.rss()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(self.every_s)

    def __exit__(self, *exc: object) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.rss())

    @property
    def added(self) -> int:
        return self.peak - self.start


def _model_and_batch(device: str, batch: int) -> tuple[Any, Any, Any, bool]:
    """SmolLM2 in float32 and the batch (ids, labels), or SmolLM2's shapes at random."""
    import torch

    from learn.lab.llama import Llama, LlamaConfig
    from learn.lab.lora import collate, encode_pair
    from learn.lab.lora_pairs import builtin

    pairs = builtin().pairs[:batch]
    try:
        from learn.lab.llama_gguf import load_smollm2

        model, tokenizer = load_smollm2(device)
        model = model.float()
        examples = [encode_pair(tokenizer, pair) for pair in pairs]
        random_weights = False
    except (FileNotFoundError, ImportError):
        from learn.lab.lora import Example

        cfg = LlamaConfig()
        torch.manual_seed(0)
        with torch.device(device):
            model = Llama(cfg)
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.02)
        model.init_rope()
        model = model.eval().requires_grad_(False)
        gen = torch.Generator().manual_seed(0)
        lengths = [62 + i % 6 for i in range(batch)]  # the built-in pairs' lengths, about
        examples = []
        for n in lengths:
            ids = torch.randint(0, cfg.vocab_size, (n,), generator=gen).tolist()
            examples.append(Example(ids=ids, labels=[-100] * 30 + ids[30:]))
        random_weights = True
    ids, labels = collate(examples, model.config.eos_id, model.device)
    return model, ids, labels, random_weights


def _side(side: str, device: str, batch: int, settings: Any) -> tuple[Any, list[Any], Any]:
    """(model, trained parameters, step function) for one side; the step returns seconds."""
    import torch

    from learn.lab.lora import adapter_parameters, response_loss, with_lora

    model, ids, labels, random_weights = _model_and_batch(device, batch)
    if side == "lora":
        model = with_lora(model, settings)
        params = adapter_parameters(model)
    else:
        model.requires_grad_(True)
        params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    cuda = device.startswith("cuda")

    def step() -> float:
        started = time.perf_counter()
        model.train()
        loss = response_loss(model, ids, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # keep the gradients' memory: a steady state
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - started

    with torch.no_grad():  # page the weights in: safetensors maps its file, so the first
        for p in model.parameters():  # step would count them as memory the step added
            p.sum()
    step.tokens, step.random_weights = int(ids.numel()), random_weights  # type: ignore[attr-defined]
    return model, params, step


def measure_side(
    side: str, *, device: str, batch: int, steps: int, rank: int, alpha: float, targets: str
) -> dict[str, Any]:
    """One side's memory, in this (fresh) process: a warm-up step and ``steps`` more."""
    import torch

    from learn.lab.lora import LoraSettings

    settings = LoraSettings(rank=rank, alpha=alpha, targets=targets)
    model, params, step = _side(side, device, batch, settings)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    with RssPeak() as rss:
        for _ in range(steps + 1):  # the first step allocates the gradients and Adam's state
            step()
    peak = torch.cuda.max_memory_allocated() - before if cuda else rss.added
    trainable = sum(p.numel() for p in params)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "side": side,
        "peak_bytes": peak,
        "peak_how": "cuda.max_memory_allocated" if cuda else "resident set sampled",
        "trainable": trainable,
        "weights": sum(p.numel() for p in model.parameters()),
        # weights + a gradient and AdamW's two averages per trained weight (float32)
        "state_bytes": weight_bytes + 3 * 4 * trainable,
        "tokens": step.tokens,  # type: ignore[attr-defined]
        "random_weights": step.random_weights,  # type: ignore[attr-defined]
        "threads": torch.get_num_threads(),
        "device": device,
    }


def time_interleaved(
    *, device: str, batch: int, steps: int, rank: int, alpha: float, targets: str
) -> dict[str, list[float]]:
    """Step times of both sides in one process, alternating LoRA and full step by step after
    a warm-up step each, so a busy moment of the machine hits both alike."""
    from learn.lab.lora import LoraSettings

    settings = LoraSettings(rank=rank, alpha=alpha, targets=targets)
    steps_of = {side: _side(side, device, batch, settings)[2] for side in ("lora", "full")}
    times: dict[str, list[float]] = {"lora": [], "full": []}
    for step in steps_of.values():
        step()  # warm-up
    for _ in range(steps):
        for side, step in steps_of.items():
            times[side].append(step())
    return times


def _side_in_subprocess(side: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--side",
        side,
        *("--device", args.device, "--batch", str(args.batch), "--steps", str(args.steps)),
        *("--rank", str(args.rank), "--alpha", str(args.alpha), "--targets", args.targets),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    line = next(line for line in out.splitlines() if line.startswith("SIDE "))
    return json.loads(line[5:])


def measure(
    device: str = "cpu",
    batch: int = 4,
    steps: int = 5,
    rank: int = 8,
    alpha: float = 16.0,
    targets: str = "attention+mlp",
) -> dict[str, Any]:
    """Memory: each side in a fresh subprocess. Step time: both sides interleaved in one
    more subprocess, the best of ``steps`` each."""
    args = argparse.Namespace(
        device=device, batch=batch, steps=steps, rank=rank, alpha=alpha, targets=targets
    )
    lora, full = (_side_in_subprocess(side, args) for side in ("lora", "full"))
    times = _side_in_subprocess("time", args)
    lora["step_s"], full["step_s"] = min(times["lora"]), min(times["full"])
    return {
        "bench": "train_lora",
        "device": device,
        "batch": batch,
        "tokens_per_step": lora["tokens"],
        "rank": rank,
        "alpha": alpha,
        "targets": targets,
        "steps": steps,
        "lora": lora,
        "full": full,
        "step_times_s": times,
        "speedup": full["step_s"] / lora["step_s"],
        "peak_ratio": full["peak_bytes"] / max(lora["peak_bytes"], 1),
        "state_ratio": full["state_bytes"] / lora["state_bytes"],
        "trainable_share": lora["trainable"] / full["trainable"],
        "random_weights": lora["random_weights"],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def report(result: dict[str, Any]) -> None:
    """The side-by-side table of one ``measure`` result."""
    lora, full = result["lora"], result["full"]
    print(
        f"SmolLM2-135M{' (random weights)' if result['random_weights'] else ''}, one batch of "
        f"{result['batch']} pairs ({result['tokens_per_step']} token slots), float32, "
        f"{result['device']}, {lora['threads']} threads; LoRA r={result['rank']} "
        f"alpha={result['alpha']:g} on {result['targets']}"
    )
    print(f"{'':28}{'LoRA':>16}{'full':>16}{'full / LoRA':>14}")
    print(
        f"{'step time (best of ' + str(result['steps']) + ')':28}{lora['step_s'] * 1e3:>13.0f} ms"
        f"{full['step_s'] * 1e3:>13.0f} ms{result['speedup']:>13.2f}×"
    )
    print(
        f"{'peak memory added':28}{_mb(lora['peak_bytes']):>16}{_mb(full['peak_bytes']):>16}"
        f"{result['peak_ratio']:>13.2f}×"
    )
    print(
        f"{'weights+grads+AdamW':28}{_mb(lora['state_bytes']):>16}"
        f"{_mb(full['state_bytes']):>16}{result['state_ratio']:>13.2f}×"
    )
    print(
        f"{'weights trained':28}{lora['trainable']:>16,}{full['trainable']:>16,}"
        f"{full['trainable'] / lora['trainable']:>13.1f}×"
    )
    print(f"(peak memory: {lora['peak_how']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--targets", default="attention+mlp")
    parser.add_argument("--side", choices=["lora", "full", "time"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # one side's memory, or the interleaved timing, in its own process
        settings = {k: getattr(args, k) for k in ("device", "batch", "rank", "alpha", "targets")}
        if args.side == "time":
            result: Any = time_interleaved(steps=args.steps, **settings)
        else:  # memory needs no more than a step after the warm-up
            result = measure_side(args.side, steps=1, **settings)
        print("SIDE " + json.dumps(result))
        return
    result = measure(args.device, args.batch, args.steps, args.rank, args.alpha, args.targets)
    report(result)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
