"""Each precision's size, speed and quality against fp32, for SmolLM2 and MiniLM.

    python bench/quantize.py [--group-size 32] [--new-tokens 64] [--sentences 256]
                             [--only minilm|smollm2] [--threads N] [--rounds 3] [--torchao]

Runs ``learn.lab.quantbench`` (the same code as the quantize playground) on this machine's
device. Goals on CPU (printed as met or not, never hidden): ``int8-smooth`` on MiniLM
(SmoothQuant's factors folded into the weights, then PyTorch's one-op dynamic int8, the
FFN output per token) ≥ 1.5× fp32 with cosine ≥ 0.99, and on SmolLM2 (our per-token
int8 after SmoothQuant's migration) perplexity within +5% (PyTorch's
one-scale-per-tensor int8 dynamic is printed next to it: the outlier problem); int8
weight-only SmolLM2 ≥ 3.5× smaller with perplexity within +2%; int4 group-wise (tied
embedding included) ≥ 6× smaller with perplexity within +10%. Ends with ``RESULT <json>``.

MiniLM's speed is the model alone on the first 64 paragraphs, tokenized and padded once;
each variant runs in rounds alternating with fp32, both warmed up, and its speed-up is
fp32's best round over its own, so that load on a shared machine hits both sides alike
(timed minutes apart, the same int8 model measured 1.78x in one run and 1.00x in the next).

``--torchao`` adds MiniLM under torchao's int8 (dynamic per-token activations, per-channel
weights: ``Int8DynamicActivationInt8WeightConfig``), the path PyTorch points to now that
``quantize_dynamic`` is deprecated, eager and compiled, paired with fp32 and our
``int8-smooth`` (``pip install '.[bench]'`` brings torchao).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learn.lab.embeddings import pick_device
from learn.lab.facts import VARIANT_LABELS
from learn.lab.models import library_versions
from learn.lab.quantbench import (
    TIMED_TEXTS,
    bench_minilm,
    bench_smollm2,
    calibration_texts,
    folded_int8_minilm,
    forward_all,
    paired_timing,
    paragraphs,
    token_batches,
)

VARIANTS = list(VARIANT_LABELS)  # every precision the playground offers


def table(model: str, rows: list[dict]) -> None:
    print(f"\n{model}")
    print(f"{'variant':<14} {'MB':>8} {'smaller':>8} {'speed':>10} {'vs fp32':>8}  quality")
    for r in rows:
        if r["skipped"]:
            print(f"{r['variant']:<14} skipped: {r['skipped']}")
            continue
        quality = ", ".join(f"{k} {v}" for k, v in r["quality"].items() if k != "sample")
        print(
            f"{r['variant']:<14} {r['weight_bytes'] / 1e6:>8.1f} {r['size_ratio']:>7.2f}x "
            f"{r['speed']:>10.1f} {r['speedup']:>7.2f}x  {quality}"
        )


def vs_torchao(rounds: int, sentences: int) -> dict:
    """MiniLM: fp32, our int8-smooth and torchao's int8, eager, and fp32 and torchao's int8
    under ``torch.compile`` (which also fuses the float parts), timed in the same rounds on
    the same batches (the CPU); cosine to eager fp32 on ``sentences`` paragraphs."""
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
    except ImportError as exc:
        return {"skipped": f"torchao is not importable ({exc}); pip install '.[bench]'"}
    import copy

    import numpy as np

    from learn.lab.embeddings import Encoder

    encoder = Encoder(device="cpu")
    base = encoder.model.float().eval()
    texts = list(paragraphs())[:sentences]
    batches = token_batches(encoder, texts[:TIMED_TEXTS], batch_size=32)

    def calibrate(model: torch.nn.Module) -> None:
        encoder.model = model
        encoder.encode(calibration_texts(), batch_size=32)

    ours = folded_int8_minilm(copy.deepcopy(base), calibrate)
    ao = copy.deepcopy(base)
    quantize_(
        ao,
        Int8DynamicActivationInt8WeightConfig(),
        filter_fn=lambda m, name: isinstance(m, torch.nn.Linear) and "pooler" not in name,
    )
    models = {"fp32": base, "int8-smooth (ours)": ours, "torchao int8 eager": ao}
    compile_s = {}
    for name, model in (("fp32", base), ("torchao int8", ao)):  # compiled fp32: the fair base
        compiled = torch.compile(model, dynamic=True)
        start = time.perf_counter()
        forward_all(compiled, batches, "cpu")  # compiles
        compile_s[name] = time.perf_counter() - start
        models[f"{name} compiled"] = compiled

    def vectors(model: torch.nn.Module) -> np.ndarray:
        encoder.model = model
        return encoder.encode(texts, batch_size=32)

    reference = vectors(base)
    seconds = paired_timing(
        [lambda m=m: forward_all(m, batches, "cpu") for m in models.values()], rounds
    )
    rows = []
    for (name, model), secs in zip(models.items(), seconds, strict=True):
        cos = np.sum(reference * vectors(model), axis=1)
        rows.append(
            {
                "variant": name,
                "speedup": seconds[0] / secs,
                "cosine_mean": float(cos.mean()),
                "cosine_min": float(cos.min()),
            }
        )
    encoder.model = base
    return {"rows": rows, "compile_s": compile_s, "torchao": version("torchao")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group-size", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--only", choices=["minilm", "smollm2"], help="one model's half")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--rounds", type=int, default=3, help="MiniLM timing rounds")
    parser.add_argument("--torchao", action="store_true", help="MiniLM under torchao's int8 too")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device()
    print(f"device {device}, torch threads {torch.get_num_threads()}")

    smollm2, minilm = [], []
    if args.only != "minilm":
        smollm2 = bench_smollm2(
            VARIANTS, device=device, group_size=args.group_size, new_tokens=args.new_tokens
        )
        table(f"SmolLM2-135M-Instruct, decode tokens/s, on {device}", smollm2)
    if args.only != "smollm2":
        minilm = bench_minilm(VARIANTS, device=device, sentences=args.sentences, rounds=args.rounds)
        table(f"all-MiniLM-L6-v2, sentences/s, on {device} (speed-up: paired with fp32)", minilm)

    by = {("smollm2", r["variant"]): r for r in smollm2} | {
        ("minilm", r["variant"]): r for r in minilm
    }
    goals = {}
    if minilm:
        smooth = by[("minilm", "int8-smooth")]
        goals["minilm_int8_smooth_speedup>=1.5"] = smooth["speedup"] >= 1.5
        goals["minilm_int8_smooth_cos>=0.99"] = smooth["quality"]["cosine_mean"] >= 0.99
    if smollm2:
        ppl = by[("smollm2", "fp32")]["quality"]["perplexity"]

        def ppl_rise(variant: str) -> float:
            return by[("smollm2", variant)]["quality"]["perplexity"] / ppl - 1

        int8w, int4w = by[("smollm2", "int8-weight")], by[("smollm2", "int4-weight")]
        goals |= {
            "smollm2_int8_smooth_ppl<=+5%": ppl_rise("int8-smooth") <= 0.05,
            "smollm2_int8_weight_smaller>=3.5": int8w["size_ratio"] >= 3.5,
            "smollm2_int8_weight_ppl<=+2%": ppl_rise("int8-weight") <= 0.02,
            "smollm2_int4_weight_smaller>=6": int4w["size_ratio"] >= 6,
            "smollm2_int4_weight_ppl<=+10%": ppl_rise("int4-weight") <= 0.10,
        }
    print("\nGoals:")
    for name, met in goals.items():
        print(f"  {'met ' if met else 'MISS'} {name}")
    if smollm2:
        print("  (the tied 49,152 x 576 embedding is int8 in int8-weight, int4 in int4-weight)")
    if smollm2 and minilm:
        torch_dyn = by[("minilm", "int8-dynamic")]["quality"]["cosine_mean"]
        print(
            f"  the outlier problem, PyTorch's int8 dynamic (one scale per tensor): MiniLM "
            f"cosine {torch_dyn}, SmolLM2 perplexity {ppl_rise('int8-dynamic'):+.1%}; with "
            f"SmoothQuant: {smooth['quality']['cosine_mean']}, "
            f"{ppl_rise('int8-smooth'):+.1%}"
        )
    torchao = vs_torchao(args.rounds, args.sentences) if args.torchao else None
    if torchao is not None:
        print("\nMiniLM under torchao's int8 (the maintained path), same batches and rounds:")
        if "skipped" in torchao:
            print(f"  skipped: {torchao['skipped']}")
        for r in torchao.get("rows", []):
            print(
                f"  {r['variant']:<24} {r['speedup']:>5.2f}x fp32  cosine mean "
                f"{r['cosine_mean']:.5f}, min {r['cosine_min']:.5f}"
            )
        if "compile_s" in torchao:
            took = ", ".join(f"{k} {v:.0f} s" for k, v in torchao["compile_s"].items())
            print(f"  (torchao {torchao['torchao']}; compiling took {took})")
    for rows in (smollm2, minilm):
        for r in rows:
            r["quality"].pop("sample", None)
    result = {
        "bench": "quantize",
        "device": device,
        "threads": torch.get_num_threads(),
        "group_size": args.group_size,
        "smollm2": smollm2,
        "minilm": minilm,
        "goals": goals,
        "versions": library_versions(),
    } | ({"torchao": torchao} if torchao is not None else {})
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
