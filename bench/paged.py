"""Batched decoding on the paged KV cache: tokens/s and KV memory by concurrency.

    python bench/paged.py [--concurrency 1,8,32,128] [--tokens 8] [--device cpu] [--random]

For each N, N requests (prompts of different lengths, token limits drawn from
[tokens / 2, tokens], stop tokens off) are served N at a time by
``learn.lab.paged_decode.serve``: one prefill per request, then one batched forward per
step for every running request, attention over block tables. The peer is our plain
batch-1 ``generate`` on the same model (tokens/s, prefill included, best of 2): the
ratio is what batching buys. Memory: peak bytes of paged blocks in use against a
contiguous cache per running request sized to its prompt + the token limit, and one sized
to ``--max-len`` positions (a static-cache server's reservation).

Before timing, a few requests are checked against per-request greedy ``generate`` in
float32 (same tokens expected). Uses SmolLM2-135M-Instruct when its files are installed
(and ``--random`` is not given), otherwise SmolLM2's exact shape with seeded random
weights. fp32 on the CPU, bf16 on CUDA. Prints a table; ends with ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from learn.lab.decoding import generate
from learn.lab.paged_decode import PagedRequest, concurrency_sweep, serve

TEXTS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves falling in a quiet park.",
    "Explain gravity to a child.",
    "List three uses of a paper clip, one line each, and say which is most surprising.",
]


def random_prompts(vocab: int, lengths: tuple[int, ...] = (24, 37, 18, 45), seed: int = 1):
    """Token ids of the given lengths, seeded (for a model with random weights)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]


def check_equal(model: Any, prompts: list[list[int]], tokens: int) -> dict[str, Any]:
    """Three requests joining at steps 0, 1, 2: paged batched greedy vs ``generate`` each."""
    reqs = [PagedRequest(p, tokens, arrival_step=i) for i, p in enumerate(prompts[:3])]
    run = serve(model, reqs, num_blocks=64, block_size=16, stop_ids=())
    same = [
        r.tokens == generate(model, q.ids, q.max_new_tokens, stop_ids=()).tokens
        for q, r in zip(reqs, run.results, strict=True)
    ]
    return {"requests": len(reqs), "tokens": tokens, "identical": all(same), "per_request": same}


def measure(
    model: Any,
    prompts: list[list[int]],
    concurrency: list[int],
    tokens: int,
    *,
    block_size: int = 16,
    repeats: int = 2,
    max_len: int = 2048,
) -> dict[str, Any]:
    """The paged sweep and the batch-1 ``generate`` peer on ``model``, interleaved, best
    of ``repeats`` each (by tokens/s); rows with ratios. Contiguous memory is given twice:
    sized to each request's prompt + ``tokens`` (the tightest a contiguous cache can be)
    and to a server-wide ``max_len`` per request (what a static-cache server reserves)."""
    n_peer = max(2, tokens)
    generate(model, prompts[0], 2, stop_ids=())  # warm-up
    concurrency_sweep(model, prompts, [1], 2, block_size=block_size)
    peer = 0.0
    best: dict[int, dict[str, Any]] = {}
    for _ in range(repeats):
        peer = max(peer, generate(model, prompts[0], n_peer, stop_ids=()).tokens_per_s)
        sweep = concurrency_sweep(
            model, prompts, concurrency, tokens, vary_lengths=True, block_size=block_size
        )
        for row in sweep:
            n = row["concurrency"]
            if n not in best or row["tokens_per_s"] > best[n]["tokens_per_s"]:
                best[n] = row
    rows = [best[n] for n in concurrency]
    for row in rows:
        row["vs_generate_batch1"] = round(row["tokens_per_s"] / peer, 2) if peer else None
        row["paged_vs_contiguous"] = round(
            row["peak_kv_bytes"] / max(row["peak_contiguous_bytes"], 1), 3
        )
        row["contiguous_max_len_bytes"] = row["concurrency"] * max_len * row["bytes_per_slot"]
    return {
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "tokens": tokens,
        "block_size": block_size,
        "max_len": max_len,
        "generate_batch1_tokens_per_s": round(peer, 2),
        "rows": rows,
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"paged batched decode on {result['device']} ({result['dtype']}), up to "
        f"{result['tokens']} new tokens per request; batch-1 generate: "
        f"{result['generate_batch1_tokens_per_s']} tok/s",
        "| concurrent | tokens | seconds | tok/s | decode tok/s | vs batch-1 generate "
        f"| peak paged KV | contiguous | paged / contiguous | contiguous @ {result['max_len']} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['concurrency']} | {r['new_tokens']} | {r['seconds']:.2f} | "
            f"{r['tokens_per_s']:.1f} | {r['decode_tokens_per_s']:.1f} | "
            f"{r['vs_generate_batch1']}x | {r['peak_kv_bytes'] / 2**20:.2f} MiB | "
            f"{r['peak_contiguous_bytes'] / 2**20:.2f} MiB | {r['paged_vs_contiguous']} | "
            f"{r['contiguous_max_len_bytes'] / 2**20:.0f} MiB |"
        )
    return "\n".join(lines)


def load(device: str, random: bool) -> tuple[Any, list[list[int]], str]:
    """(model in fp32, prompts, what it is): SmolLM2 when installed, else its shape with
    seeded random weights."""
    if not random:
        try:
            from learn.lab.llama_gguf import chat_prompt, load_smollm2

            model, tok = load_smollm2(device)
            return model.float(), [chat_prompt(tok, t) for t in TEXTS], "SmolLM2-135M"
        except (FileNotFoundError, ImportError):
            pass
    from learn.lab.llama import Llama, LlamaConfig

    torch.manual_seed(0)
    with torch.device(device):
        model = Llama(LlamaConfig())
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.02) if p.dim() >= 2 else torch.nn.init.ones_(p)
    model.init_rope()
    model = model.eval().requires_grad_(False)
    return model, random_prompts(model.config.vocab_size), "SmolLM2's shape, random weights"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", default="1,8,32,128")
    ap.add_argument("--tokens", type=int, default=8, help="most new tokens per request")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: as is)")
    ap.add_argument("--max-len", type=int, default=2048, help="a contiguous server's reservation")
    ap.add_argument("--random", action="store_true", help="SmolLM2's shape, random weights")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    concurrency = [int(x) for x in args.concurrency.split(",") if x]
    t0 = time.perf_counter()
    model, prompts, what = load(args.device, args.random)
    check = check_equal(model, prompts, 6)  # in fp32; measured in the device's dtype
    if args.device.startswith("cuda"):
        model = model.to(torch.bfloat16)
    print(f"{what}: paged batched greedy == per-request generate (fp32): {check['identical']}")
    result = measure(model, prompts, concurrency, args.tokens, max_len=args.max_len)
    result |= {"model": what, "equal_to_generate": check, "seconds": time.perf_counter() - t0}
    print(table(result))
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
