"""Decoding speed on SmolLM2-135M: KV cache, our loop vs transformers, speculative decoding.

    python bench/generate.py [--new-tokens 256] [--repeats 2] [--device cpu]

1. greedy with our KV cache vs full recomputation every step (goal >= 3x);
2. our cached loop vs ``transformers`` ``generate(do_sample=False)`` on the same weights
   (copied into ``LlamaForCausalLM``), same prompt, same token count (goal >= 1.0x);
3. prompt-lookup speculation vs plain greedy on a prompt that asks to repeat a passage
   (goal >= 2x, identical tokens asserted);
4. draft-model speculation (draft: the same weights in float16) vs plain greedy, reported
   as measured, with its acceptance rate;
5. prompt lookup on a prompt set (``learn/lab/data/spec_prompts.json``): input-grounded
   prompts (code edits, quoting, extraction, summaries with quotes; goal >= 1.5x overall)
   and open-ended ones (goal >= 0.95x), per prompt and overall (total plain time / total
   speculative time), for the old fixed drafts (10 tokens, matches down to 1 token) and the
   adaptive ones; identical tokens asserted on every prompt. Also the measured cost of one
   pass over T tokens, relative to plain greedy's 1-token step, through the model's own
   layers and through their packed twin (``learn.lab.packed``, which plain greedy and
   speculation both run on): what a draft costs to check, and what packing gives alone.

6. vs llama.cpp (when ``llama-cpp-python`` is installed: ``pip install '.[bench]'``): greedy
   decode tokens/s of llama.cpp on the same Q4_1 GGUF and of each of our CPU paths (fp32,
   int8 and int4 weight-only; the eager loop and the compiled static-cache step of
   ``learn.lab.fastdecode``) at 1 and 2 threads, GB/s of weights read per second, compile
   times, and the share of leading tokens equal to our fp32 loop's (goal: our fastest
   >= 0.5x llama.cpp). llama.cpp also runs a float32 copy of the GGUF (``f32_gguf``: the
   weights our fp32 path computes with), where its greedy tokens must equal ours (goal: all
   of them; on the Q4_1 file llama.cpp rounds activations to 8 bits, so they drift apart).

``--spec-only`` runs section 5 alone, ``--llama-only`` section 6 alone; ``--unpacked`` adds
plain greedy and adaptive prompt lookup on the model's own layers (what the draft policy
gives without the packed weights).

Timings are best of ``--repeats`` (the no-cache run: one run), runs interleaved so drift
hits both sides alike. Ends with ``RESULT <json>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything loads from local paths
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from transformers.utils import logging as hf_logging

from learn.lab.decoding import generate, greedy_no_cache
from learn.lab.fastdecode import generate_fast
from learn.lab.kvcache import KVCache
from learn.lab.llama import half_precision
from learn.lab.llama_gguf import chat_ids, chat_prompt, f32_gguf, load_smollm2
from learn.lab.llama_hf import to_hf
from learn.lab.models import library_versions, smollm2_gguf
from learn.lab.packed import packed_model
from learn.lab.quantized_models import quantized_copy, weight_bytes
from learn.lab.speculative import (
    prompt_set,
    speculative_draft_model,
    speculative_prompt_lookup,
)
from learn.lab.timing import best_of

STORY = "Write a long story about a lighthouse keeper who finds a message in a bottle."
PASSAGE = (
    "The river rises in the hills above the town and runs for forty miles before it "
    "reaches the sea. In spring the water is cold and fast, swollen by melting snow, and "
    "the old stone bridge near the mill shakes when the current is strongest. Fishermen "
    "say the best trout are found below the weir, where the water slows and turns green. "
    "In summer children swim in the shallow pools, and in autumn the banks are covered "
    "with fallen leaves that drift slowly toward the harbour."
)
QUOTE = f"Repeat the following passage exactly, word for word:\n\n{PASSAGE}"


def cpu_timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(CPU seconds of this process, result): on a shared machine, time spent waiting for a
    core is not counted. Equals wall time on a quiet one when torch uses one thread."""
    start = time.process_time()
    out = fn()
    return time.process_time() - start, out


def interleaved(
    fns: list[Callable[[], Any]], repeats: int, clock: str = "wall"
) -> tuple[list[float], list[Any]]:
    """``best_of`` for several functions, one run of each per round, so drift on the machine
    hits them all alike: (best seconds of each, last result of each). ``clock="cpu"``
    counts this process's CPU time instead of wall time."""
    timer = cpu_timed if clock == "cpu" else (lambda fn: best_of(fn, 1))
    rounds = [[timer(fn) for fn in fns] for _ in range(max(repeats, 1))]
    best = [min(r[i][0] for r in rounds) for i in range(len(fns))]
    return best, [result for _, result in rounds[-1]]


SPEC_GOALS = {"grounded": 1.5, "open": 0.95}  # prompt lookup / plain greedy, overall


@torch.inference_mode()
def pass_costs(
    model: Any,
    sizes: tuple[int, ...] = (1, 2, 3, 4, 8, 16, 32),
    repeats: int = 5,
    clock: str = "wall",
) -> dict[str, dict[int, float]]:
    """Seconds of one cached forward pass over T new tokens after a 128-token context,
    best of ``repeats``, for each T in ``sizes``, through the model's own layers
    ("plain") and through its packed twin ("packed", ``packed_model``): {"plain": {T:
    seconds}, "packed": {T: seconds}}. The two are interleaved; plain greedy decoding runs
    the packed T = 1 pass (the unpacked one with ``generate(packed=False)``)."""
    twin = packed_model(model)
    cache = KVCache.for_model(model, 128 + max(sizes))
    model(torch.zeros((1, 128), dtype=torch.long, device=model.device), cache, 0, last_only=True)
    out: dict[str, dict[int, float]] = {"plain": {}, "packed": {}}
    for T in sizes:
        x = torch.zeros((1, T), dtype=torch.long, device=model.device)
        fns = [lambda m=m, x=x: m(x, cache, 128).argmax(-1).tolist() for m in (model, twin)]
        out["plain"][T], out["packed"][T] = interleaved(fns, repeats, clock)[0]
    return out


def prompt_set_bench(
    model: Any, tok: Any, n: int, repeats: int, clock: str = "wall", unpacked: bool = False
) -> dict[str, Any]:
    """Section 5: plain greedy, old fixed prompt lookup and adaptive prompt lookup on every
    prompt of the set, interleaved; per prompt and per group (total time ratios). All run
    on the packed twin. With ``unpacked``, also plain greedy and adaptive prompt lookup on
    the model's own layers (``unpacked_x``: the one over the other)."""
    rows = []
    for p in prompt_set():
        ids = chat_ids(tok, p.messages)

        def plain(ids: list[int] = ids) -> list[int]:
            return generate(model, ids, n).tokens

        def fixed(ids: list[int] = ids) -> Any:  # before issue 15: 10 tokens, any match
            return speculative_prompt_lookup(
                model, ids, n, ngram=3, num_draft=10, min_ngram=1, adaptive=False
            )

        def adaptive(ids: list[int] = ids) -> Any:
            return speculative_prompt_lookup(model, ids, n)

        def plain_unpacked(ids: list[int] = ids) -> Any:
            return generate(model, ids, n, packed=False)

        def adaptive_unpacked(ids: list[int] = ids) -> Any:
            return speculative_prompt_lookup(model, ids, n, packed=False)

        runs = [plain, fixed, adaptive] + ([plain_unpacked, adaptive_unpacked] if unpacked else [])
        times, (toks, spec_f, spec_a, *spec_u) = interleaved(runs, repeats, clock)
        t_p, t_f, t_a = times[:3]
        assert spec_f.tokens == toks, f"fixed prompt lookup changed the output on {p.name}"
        assert spec_a.tokens == toks, f"adaptive prompt lookup changed the output on {p.name}"
        if unpacked:  # the unpacked pair agree with each other (sums in another order)
            assert spec_u[0].tokens == spec_u[1].tokens, f"unpacked lookup changed {p.name}"
        extra = {}
        if unpacked:
            extra = {"plain_unpacked_s": times[3], "unpacked_s": times[4]}
            extra["unpacked_x"] = times[3] / times[4]
        rows.append(
            {
                "name": p.name,
                "group": p.group,
                "kind": p.kind,
                "prompt_tokens": len(ids),
                "tokens": len(toks),
                "plain_s": t_p,
                "fixed_s": t_f,
                "adaptive_s": t_a,
                "fixed_x": t_p / t_f,
                "adaptive_x": t_p / t_a,
                "passes": spec_a.target_passes,
                "accepted": spec_a.accepted,
                "rejected": spec_a.rejected,
                "fixed_rejected": spec_f.rejected,
                "drafts": [s.drafted for s in spec_a.steps],
                "identical": True,
                **extra,
            }
        )
    overall = {}
    for group in SPEC_GOALS:
        mine = [r for r in rows if r["group"] == group]
        plain_s = sum(r["plain_s"] for r in mine)
        overall[group] = {
            "prompts": len(mine),
            "fixed_x": plain_s / sum(r["fixed_s"] for r in mine),
            "adaptive_x": plain_s / sum(r["adaptive_s"] for r in mine),
        }
        if unpacked:
            plain_u = sum(r["plain_unpacked_s"] for r in mine)
            overall[group]["unpacked_x"] = plain_u / sum(r["unpacked_s"] for r in mine)
            overall[group]["packing_alone_x"] = plain_u / plain_s
    return {"rows": rows, "overall": overall}


def print_prompt_set(spec: dict[str, Any], costs: dict[str, dict[int, float]]) -> None:
    base = costs["plain"][1]  # plain greedy's step
    for name, by_t in costs.items():
        print(
            f"{name} pass over T new tokens, vs a plain 1-token step: "
            + ", ".join(f"T={t} {s / base:.2f}x" for t, s in by_t.items())
        )
    print(
        f"(packed T=1 at {costs['packed'][1] / base:.2f}x: what packing alone does for a "
        "greedy step; plain greedy and speculation both run packed, so the ratios below are "
        "speculation's own)"
    )
    unpacked = "unpacked_x" in spec["rows"][0]
    print(
        f"{'prompt':<22}{'group':<9}{'tokens':>7}{'plain s':>9}{'fixed':>8}{'adaptive':>9}"
        + (f"{'unpacked':>9}" if unpacked else "")
        + f"{'passes':>7}{'acc':>5}{'rej':>5}"
    )
    for r in spec["rows"]:
        print(
            f"{r['name']:<22}{r['group']:<9}{r['tokens']:>7}{r['plain_s']:>9.2f}"
            f"{r['fixed_x']:>7.2f}x{r['adaptive_x']:>8.2f}x"
            + (f"{r['unpacked_x']:>8.2f}x" if unpacked else "")
            + f"{r['passes']:>7}{r['accepted']:>5}{r['rejected']:>5}"
        )
    for group, o in spec["overall"].items():
        goal = SPEC_GOALS[group]
        met = "met" if o["adaptive_x"] >= goal else "missed"
        extra = (
            f", both unpacked {o['unpacked_x']:.2f}x (packing alone: plain greedy "
            f"{o['packing_alone_x']:.2f}x faster)"
            if unpacked
            else ""
        )
        print(
            f"prompt lookup, {group} ({o['prompts']} prompts): fixed {o['fixed_x']:.2f}x, "
            f"adaptive {o['adaptive_x']:.2f}x{extra}  (goal >= {goal:.2f}x: {met})"
        )
    print("identical tokens on every prompt: True (asserted)")


def spec_result(spec: dict[str, Any], costs: dict[str, dict[int, float]]) -> dict[str, Any]:
    """The prompt set's part of RESULT."""
    o = spec["overall"]
    base = costs["plain"][1]
    return {
        "spec_prompts": [
            {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
            for r in spec["rows"]
        ],
        "spec_overall": {g: {k: round(v, 3) for k, v in d.items()} for g, d in o.items()},
        "verify_pass_cost": {
            name: {str(t): round(s / base, 3) for t, s in by_t.items()}
            for name, by_t in costs.items()
        },
        "spec_goals": {
            f"prompt_lookup_{g}/greedy": {"min": goal, "met": o[g]["adaptive_x"] >= goal}
            for g, goal in SPEC_GOALS.items()
        }
        | {"prompt_lookup_identical": {"met": all(r["identical"] for r in spec["rows"])}},
    }


# -- 6: our fastest CPU decode vs llama.cpp on the same GGUF ------------------------------

LLAMA_GOAL = 0.5  # our fastest path / llama.cpp, decode tokens/s at the same thread count
LLAMA_F32 = "llama.cpp F32"  # llama.cpp on the float32 copy: the same weights as our fp32
OUR_PATHS = {"fp32": "fp32", "int8": "int8-weight", "int4": "int4-weight"}


def llama_cpp_greedy(llm: Any, ids: list[int], n: int) -> tuple[list[int], float]:
    """llama.cpp's greedy continuation of ``ids``: (n tokens, seconds from the first token
    to the last, i.e. n - 1 decode steps; the prefill is not counted)."""
    tokens: list[int] = []
    start = 0.0
    gen = llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True)
    for token in gen:
        if not tokens:
            start = time.perf_counter()
        tokens.append(int(token))
        if len(tokens) == n:
            break
    return tokens, time.perf_counter() - start


def ours_greedy(model: Any, ids: list[int], n: int, compiled: bool) -> tuple[list[int], float]:
    """Our greedy continuation: (n tokens, seconds of its n - 1 decode steps). ``compiled``:
    the static cache and the compiled step (``learn.lab.fastdecode``), else ``generate``."""
    if compiled:
        out, _ = generate_fast(model, ids, n, stop_ids=(), compile="auto")
    else:
        out = generate(model, ids, n, stop_ids=())
    return out.tokens, sum(out.token_ms[1:]) / 1e3


def leading_share(a: list[int], b: list[int]) -> float:
    """The share of ``a`` that equals ``b`` before their first difference."""
    same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), len(a))
    return same / len(a) if a else 0.0


def vs_llama_cpp(
    model: Any, tok: Any, n: int, repeats: int, threads: tuple[int, ...] = (1, 2)
) -> dict[str, Any]:
    """Section 6: greedy decode tokens/s of llama.cpp (llama-cpp-python) on SmolLM2's Q4_1
    GGUF and of each of our paths (fp32, int8 and int4 weight-only; the eager loop and the
    compiled static-cache step) on the same chat prompt, at each thread count, interleaved,
    best of ``repeats``; GB/s of weights read; token agreement with our fp32 loop."""
    if model.device.type != "cpu":
        return {"skipped": "a CPU comparison: run with --device cpu (llama.cpp here is CPU-only)"}
    try:
        import llama_cpp
    except ImportError as exc:
        return {"skipped": f"llama_cpp is not importable ({exc}); pip install '.[bench]'"}
    ids = chat_ids(tok, [{"role": "user", "content": STORY}])
    models = {name: quantized_copy(model, v) for name, v in OUR_PATHS.items()}
    before = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    try:
        for th in threads:
            torch.set_num_threads(th)
            peers = {
                name: llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=len(ids) + n + 16,
                    n_threads=th,
                    n_threads_batch=th,
                    verbose=False,
                )
                for name, path in (("llama.cpp", smollm2_gguf()), (LLAMA_F32, f32_gguf()))
            }
            sizes = {name: llama_cpp.llama_model_size(llm.model) for name, llm in peers.items()}
            runs: dict[str, Callable[[], tuple[list[int], float]]] = {
                name: lambda llm=llm: llama_cpp_greedy(llm, ids, n) for name, llm in peers.items()
            }
            compile_s: dict[str, float] = {}
            notes: dict[str, str] = {}
            for name, m in models.items():
                sizes[f"{name} eager"] = sizes[f"{name} compiled"] = weight_bytes(m)
                runs[f"{name} eager"] = lambda m=m: ours_greedy(m, ids, n, compiled=False)
                runs[f"{name} compiled"] = lambda m=m: ours_greedy(m, ids, n, compiled=True)
                _, dec = generate_fast(m, ids, 2, stop_ids=(), compile="auto")  # compiles
                compile_s[f"{name} compiled"] = dec.report.compile_s
                notes[f"{name} compiled"] = dec.report.error or dec.report.mode
            best = dict.fromkeys(runs, float("inf"))
            tokens: dict[str, list[int]] = {}
            for _ in range(max(repeats, 1)):
                for name, fn in runs.items():
                    tokens[name], secs = fn()
                    best[name] = min(best[name], secs)
            for name in runs:
                tps = (n - 1) / best[name]
                rows.append(
                    {
                        "threads": th,
                        "path": name,
                        "tokens_per_s": tps,
                        "weight_mb": sizes[name] / 1e6,
                        "gb_per_s": sizes[name] * tps / 1e9,
                        "compile_s": compile_s.get(name),
                        "compiled": notes.get(name, ""),
                        "same_as_fp32": leading_share(tokens[name], tokens["fp32 eager"]),
                    }
                )
            del peers
    finally:
        torch.set_num_threads(before)
    summary = {}
    for th in threads:
        mine = [r for r in rows if r["threads"] == th]
        peer = next(r for r in mine if r["path"] == "llama.cpp")
        ours = [r for r in mine if not r["path"].startswith("llama.cpp")]
        fastest = max(ours, key=lambda r: r["tokens_per_s"])
        ratio = fastest["tokens_per_s"] / peer["tokens_per_s"]
        f32 = next(r for r in mine if r["path"] == LLAMA_F32)["same_as_fp32"]
        summary[str(th)] = {
            "fastest": fastest["path"],
            "ratio": ratio,
            "met": ratio >= LLAMA_GOAL,
            "f32_same": f32,
        }
    return {"prompt_tokens": len(ids), "new_tokens": n, "rows": rows, "summary": summary}


def print_vs_llama_cpp(res: dict[str, Any], repeats: int) -> None:
    print("-- vs llama.cpp: SmolLM2-135M Q4_1 GGUF, greedy, same chat prompt")
    if "skipped" in res:
        print(f"skipped: {res['skipped']}")
        return
    print(
        f"prompt {res['prompt_tokens']} tokens, {res['new_tokens']} new; decode tokens/s "
        f"(prefill not counted), best of {repeats}, wall clock"
    )
    print(
        f"{'threads':>7}  {'path':<15}{'tokens/s':>9}{'GB/s':>7}{'weights MB':>11}"
        f"{'compile s':>10}{'same as fp32':>13}  note"
    )
    for r in res["rows"]:
        comp = f"{r['compile_s']:.1f}" if r["compile_s"] is not None else "-"
        print(
            f"{r['threads']:>7}  {r['path']:<15}{r['tokens_per_s']:>9.1f}{r['gb_per_s']:>7.2f}"
            f"{r['weight_mb']:>11.1f}{comp:>10}{r['same_as_fp32']:>13.2f}  {r['compiled']}"
        )
    for th, s in res["summary"].items():
        met = "met" if s["met"] else "missed"
        same = "met" if s["f32_same"] == 1.0 else "missed"
        print(
            f"{th} thread(s): our fastest ({s['fastest']}) = {s['ratio']:.2f}x llama.cpp "
            f"(goal >= {LLAMA_GOAL}x: {met}); {LLAMA_F32} greedy tokens equal to our fp32's: "
            f"{s['f32_same']:.0%} (goal 100%: {same})"
        )
    print(
        "same as fp32: share of leading tokens equal to our fp32 loop's. On the Q4_1 file "
        "llama.cpp rounds activations to 8 bits in its dot products; its F32 copy holds the "
        "weights our fp32 path uses. int8/int4 are our own re-quantizations."
    )


def llama_cpp_result(res: dict[str, Any]) -> dict[str, Any]:
    """The section's part of RESULT: rows rounded, and its goals."""
    if "skipped" in res:
        return {"vs_llama_cpp": res, "llama_goals": {}}
    rows = [
        {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()} for r in res["rows"]
    ]
    goals = {
        f"fastest_cpu/llama_cpp_{th}thread": {
            "min": LLAMA_GOAL,
            "met": s["met"],
            "value": round(s["ratio"], 3),
        }
        for th, s in res["summary"].items()
    } | {
        f"llama_cpp_f32_same_tokens_{th}thread": {"min": 1.0, "met": s["f32_same"] == 1.0}
        for th, s in res["summary"].items()
    }
    return {"vs_llama_cpp": {**res, "rows": rows}, "llama_goals": goals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--num-draft", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--spec-tokens", type=int, default=128, help="new tokens, prompt set")
    parser.add_argument("--spec-only", action="store_true", help="only the prompt set (5)")
    parser.add_argument("--llama-only", action="store_true", help="only vs llama.cpp (6)")
    parser.add_argument("--llama-tokens", type=int, default=128, help="new tokens, section 6")
    parser.add_argument(
        "--unpacked",
        action="store_true",
        help="prompt set: also plain greedy and adaptive lookup on unpacked weights",
    )
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="prompt set timing: wall, or process CPU time (a busy shared machine, 1 thread)",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    n = args.new_tokens

    load_s, (model, tok) = best_of(lambda: load_smollm2(args.device), 1)
    if args.llama_only:  # section 6 alone
        llama = vs_llama_cpp(model, tok, args.llama_tokens, args.repeats)
        print_vs_llama_cpp(llama, args.repeats)
        part = llama_cpp_result(llama)
        only = {"bench": "generate", "device": str(model.device), "goals": part["llama_goals"]}
        print("RESULT " + json.dumps(only | {"vs_llama_cpp": part["vs_llama_cpp"]}))
        return
    hf = to_hf(model)
    story, quote = chat_prompt(tok, STORY), chat_prompt(tok, QUOTE)
    generate(model, story, 8, stop_ids=())  # warm-up
    costs = pass_costs(model, clock=args.clock)
    spec = prompt_set_bench(
        model, tok, args.spec_tokens, args.repeats, args.clock, unpacked=args.unpacked
    )
    if args.spec_only:
        print(
            f"device {model.device}, dtype {model.dtype}, torch threads {torch.get_num_threads()}"
        )
        print(
            f"prompt set: {args.spec_tokens} new tokens at most, best of {args.repeats}, "
            f"{args.clock} clock"
        )
        print_prompt_set(spec, costs)
        result = {
            "bench": "generate",
            "device": str(model.device),
            "dtype": str(model.dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(),
            "spec_tokens": args.spec_tokens,
            "clock": args.clock,
            "goals": spec_result(spec, costs)["spec_goals"],
            **spec_result(spec, costs),
            "versions": library_versions(),
        }
        print("RESULT " + json.dumps(result))
        return

    # -- 1 and 2: cached loop, transformers, no cache, on the same prompt and token count
    x = torch.tensor([story], device=model.device)

    def ours() -> list[int]:
        return generate(model, story, n, stop_ids=()).tokens

    @torch.inference_mode()
    def theirs() -> list[int]:
        out = hf.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=None,  # like stop_ids=(): exactly n tokens
            pad_token_id=2,
        )
        return out[0, len(story) :].tolist()

    generate(model, story, 8, stop_ids=())  # warm-up both
    theirs_warm = hf.generate(x, max_new_tokens=8, do_sample=False, pad_token_id=2)
    del theirs_warm
    (t_ours, t_hf), (tok_ours, tok_hf) = interleaved([ours, theirs], args.repeats)
    t_slow, tok_slow = best_of(lambda: greedy_no_cache(model, story, n, stop_ids=()).tokens, 1)
    assert tok_slow == tok_ours, "cached and uncached greedy decoding disagree"

    # -- 3: prompt lookup on a prompt whose answer is in the input
    def plain_quote() -> list[int]:
        return generate(model, quote, n).tokens

    def lookup_quote() -> Any:
        return speculative_prompt_lookup(model, quote, n, ngram=3, num_draft=10)

    (t_plain_q, t_lookup), (tok_plain_q, spec_q) = interleaved(
        [plain_quote, lookup_quote], args.repeats
    )
    assert spec_q.tokens == tok_plain_q, "prompt lookup changed the output"

    # -- 4: a float16 copy drafts for the float32 model, on the open-ended prompt
    draft = half_precision(model)
    generate(draft, story, 4, stop_ids=())  # warm-up

    def drafted() -> Any:
        return speculative_draft_model(model, draft, story, n, args.num_draft, stop_ids=())

    (t_plain_d, t_draft), (tok_plain_d, spec_d) = interleaved([ours, drafted], args.repeats)
    assert spec_d.tokens == tok_plain_d, "draft-model speculation changed the output"

    tps = {
        "ours_kv_cache": n / t_ours,
        "ours_no_cache": n / t_slow,
        "transformers_generate": n / t_hf,
        "plain_greedy_quote": len(tok_plain_q) / t_plain_q,
        "prompt_lookup_quote": len(spec_q.tokens) / t_lookup,
        "plain_greedy_story": n / t_plain_d,
        "draft_model_story": n / t_draft,
    }
    ratios = {
        "kv_cache/no_cache": t_slow / t_ours,
        "ours/transformers": t_hf / t_ours,
        "prompt_lookup/greedy": t_plain_q / t_lookup,
        "draft_model/greedy": t_plain_d / t_draft,
    }
    goals = {"kv_cache/no_cache": 3.0, "ours/transformers": 1.0, "prompt_lookup/greedy": 2.0}
    same_as_hf = tok_ours == tok_hf
    pairs = zip(tok_ours, tok_hf, strict=False)
    first_diff = next((i for i, (a, b) in enumerate(pairs) if a != b), None)

    device, threads = str(model.device), torch.get_num_threads()
    print(
        f"device {device}, dtype {model.dtype}, torch threads {threads}, model load {load_s:.2f} s"
    )
    print(f"prompts: story {len(story)} tokens, quote {len(quote)} tokens; best of {args.repeats}")
    print(f"{'run':<34}{'tokens':>7}{'seconds':>10}{'tokens/s':>10}")
    rows = [
        ("ours, KV cache (story)", n, t_ours),
        ("ours, no cache (story, 1 run)", n, t_slow),
        ("transformers generate (story)", n, t_hf),
        ("plain greedy (quote)", len(tok_plain_q), t_plain_q),
        ("prompt lookup (quote)", len(spec_q.tokens), t_lookup),
        ("plain greedy (story)", n, t_plain_d),
        (f"draft fp16, k={args.num_draft} (story)", n, t_draft),
    ]
    for name, count, secs in rows:
        print(f"{name:<34}{count:>7}{secs:>10.2f}{count / secs:>10.1f}")
    for name, r in ratios.items():
        goal = f"  (goal >= {goals[name]:.1f}x)" if name in goals else ""
        print(f"{name:<34}{r:>7.2f}x{goal}")
    print(
        f"prompt lookup: {spec_q.accepted} accepted / {spec_q.rejected} rejected drafts, "
        f"{spec_q.target_passes} passes for {len(spec_q.tokens)} tokens"
    )
    print(
        f"draft model: acceptance {spec_d.acceptance_rate:.2f}, "
        f"{spec_d.target_passes} target passes for {n} tokens"
    )
    print(f"ours == transformers tokens: {same_as_hf} (first difference at {first_diff})")
    print_prompt_set(spec, costs)
    extra = spec_result(spec, costs)

    result = {
        "bench": "generate",
        "device": device,
        "dtype": str(model.dtype).removeprefix("torch."),
        "threads": threads,
        "new_tokens": n,
        "prompt_tokens": {"story": len(story), "quote": len(quote)},
        "model_load_s": round(load_s, 3),
        "figures": [{"name": k, "value": round(v, 2), "unit": "tokens/s"} for k, v in tps.items()]
        + [
            {"name": "prompt_lookup_accepted", "value": spec_q.accepted, "unit": "tokens"},
            {"name": "prompt_lookup_rejected", "value": spec_q.rejected, "unit": "tokens"},
            {
                "name": "draft_acceptance",
                "value": round(spec_d.acceptance_rate, 4),
                "unit": "ratio",
            },
        ],
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "goals": {k: {"min": g, "met": ratios[k] >= g} for k, g in goals.items()}
        | extra["spec_goals"],
        "identical": {
            "kv_cache==no_cache": tok_slow == tok_ours,
            "ours==transformers": same_as_hf,
            "prompt_lookup==greedy": spec_q.tokens == tok_plain_q,
            "draft_model==greedy": spec_d.tokens == tok_plain_d,
        },
        "versions": library_versions(),
        **{k: v for k, v in extra.items() if k != "spec_goals"},
    }
    llama = llama_cpp_result(vs_llama_cpp(model, tok, args.llama_tokens, args.repeats))
    print_vs_llama_cpp(llama["vs_llama_cpp"], args.repeats)
    result["goals"] |= llama["llama_goals"]
    result["vs_llama_cpp"] = llama["vs_llama_cpp"]
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
