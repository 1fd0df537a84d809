"""Continuous batching on the paged KV cache (``learn.lab.paged_decode``) against
per-request decoding with ``learn.lab.decoding.generate``: same tokens, in fp32."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / huggingface_hub load

from typing import Any

import pytest
import torch

from learn.lab.decoding import generate
from learn.lab.kvcache import KVCache
from learn.lab.llama import Llama, LlamaConfig
from learn.lab.paged_decode import (
    PagedKVPool,
    PagedRequest,
    concurrency_sweep,
    decode_step,
    serve,
)

# prompt length, token limit, arrival step: different lengths, joining at different steps
MIX = [(5, 12, 0), (17, 9, 0), (3, 20, 2), (30, 6, 4), (9, 15, 4), (1, 8, 9)]


@pytest.fixture(scope="module")
def tiny() -> Llama:
    """A 2-layer Llama with GQA (4 query heads, 2 key/value heads), seeded random weights
    large enough (std 0.2) that its next-token choices are far from ties."""
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=128,
        max_seq_len=256, eos_id=2,
    )  # fmt: skip
    model = Llama(cfg)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2) if p.dim() >= 2 else torch.nn.init.ones_(p)
    model.init_rope()
    return model.eval().requires_grad_(False)


def mix(seed: int = 1) -> list[PagedRequest]:
    g = torch.Generator().manual_seed(seed)
    return [
        PagedRequest(torch.randint(3, 256, (n,), generator=g).tolist(), k, arrival_step=a)
        for n, k, a in MIX
    ]


def reference(model: Any, r: PagedRequest, stop_ids: tuple[int, ...] | None = ()) -> list[int]:
    return generate(
        model, r.ids, r.max_new_tokens, r.temperature, r.top_k, r.top_p, r.seed, stop_ids=stop_ids
    ).tokens


def test_decode_step_logits_equal_the_contiguous_cache(tiny: Llama) -> None:
    """Two requests of different lengths in one batched step, against each one's own
    forward with a contiguous cache."""
    bs = 4
    pool = PagedKVPool.for_model(tiny, num_blocks=16, block_size=bs)
    prompts = [[5, 9, 13, 40, 41, 42], [7, 8, 9]]
    tables = [[3, 11], [6]]  # not in order, not adjacent: the table is the only map
    want = []
    for ids, table in zip(prompts, tables, strict=True):
        cache = KVCache.for_model(tiny, len(ids) + 1)
        tiny(torch.tensor([ids[:-1]]), cache, 0)
        pool.write_prefill(table, cache, len(ids) - 1)
        want.append(tiny(torch.tensor([ids[-1:]]), cache, len(ids) - 1)[0, -1])
    got = decode_step(
        tiny,
        pool,
        tokens=torch.tensor([p[-1] for p in prompts]),
        positions=torch.tensor([len(p) - 1 for p in prompts]),
        tables=torch.tensor([tables[0], tables[1] + [0]]),  # padded with block 0
    )
    assert got.shape == (2, tiny.config.vocab_size)
    torch.testing.assert_close(got, torch.stack(want), atol=1e-5, rtol=1e-5)


def test_batched_paged_greedy_equals_per_request_generate(tiny: Llama) -> None:
    reqs = mix()
    run = serve(tiny, reqs, num_blocks=64, block_size=4, stop_ids=())
    for r, res in zip(reqs, run.results, strict=True):
        assert res.tokens == reference(tiny, r)
        assert res.stop_reason == "length" and res.joined_step == r.arrival_step
    assert max(s.batch for s in run.steps) >= 4  # they really ran together
    # requests joined while others were mid-decode, and left at different steps
    assert {r.finished_step for r in run.results} != {run.results[0].finished_step}
    assert run.stats["blocks_in_use_at_end"] == 0  # everything freed
    assert run.new_tokens == sum(r.max_new_tokens for r in reqs)
    assert run.stats["prefills"] == len(reqs) and run.stats["preemptions"] == 0


def test_stop_tokens_end_a_request_early_like_generate(tiny: Llama) -> None:
    reqs = mix(seed=2)
    free = reference(tiny, reqs[2])
    stop = free[len(free) // 2]  # a token it makes midway
    run = serve(tiny, reqs, num_blocks=64, block_size=4, stop_ids=(stop,))
    for r, res in zip(reqs, run.results, strict=True):
        want = reference(tiny, r, stop_ids=(stop,))
        assert res.tokens == want
        assert res.stop_reason == ("stop_token" if want[-1] == stop else "length")
    assert run.results[2].stop_reason == "stop_token"


def test_sampling_with_per_request_seeds_equals_generate(tiny: Llama) -> None:
    reqs = mix()
    for i, r in enumerate(reqs[:4]):
        r.temperature, r.top_k, r.seed = 0.9, 50, 100 + i
    run = serve(tiny, reqs, num_blocks=64, block_size=4, stop_ids=())
    for r, res in zip(reqs, run.results, strict=True):
        assert res.tokens == reference(tiny, r)


def test_freed_blocks_are_reused(tiny: Llama) -> None:
    """Two at a time through a pool that fits two: later requests get earlier blocks."""
    reqs = [PagedRequest([3 + i, 4, 5, 6], 6) for i in range(6)]
    run = serve(tiny, reqs, num_blocks=6, block_size=4, max_batch=2, record_owners=True)
    first = set(run.results[0].blocks) | set(run.results[1].blocks)
    assert set(run.results[4].blocks) <= set(range(6)) and set(run.results[4].blocks) & first
    for q, r in zip(reqs, run.results, strict=True):
        assert r.tokens == reference(tiny, q, None)
    assert [r.joined_step for r in run.results] == sorted(r.joined_step for r in run.results)
    for s in run.steps:  # the owner map agrees with the blocks counted as used
        assert s.owners is not None and sum(o >= 0 for o in s.owners) == s.blocks_used
        assert s.batch <= 2


def test_running_out_of_blocks_queues_and_preempts_instead_of_crashing(tiny: Llama) -> None:
    reqs = mix()
    run = serve(tiny, reqs, num_blocks=12, block_size=4, stop_ids=())
    assert run.stats["preemptions"] >= 1  # someone gave its blocks back and re-joined
    pairs = zip(reqs, run.results, strict=True)
    assert any(r.joined_step > q.arrival_step for q, r in pairs)  # someone waited its turn
    assert max(s.blocks_used for s in run.steps) <= 12
    for r, res in zip(reqs, run.results, strict=True):
        assert res.tokens == reference(tiny, r)  # recompute preemption changes nothing
    with pytest.raises(ValueError, match="give the pool more blocks"):
        serve(tiny, [PagedRequest(list(range(3, 40)), 20)], num_blocks=4, block_size=4)


def test_paged_memory_against_contiguous_reservations(tiny: Llama) -> None:
    rows = concurrency_sweep(
        tiny, [r.ids for r in mix()], [1, 4], 12, rounds=2, vary_lengths=True,
        block_size=4, record_owners_for=4,
    )  # fmt: skip
    one, four = rows
    assert one["concurrency"] == 1 and four["requests"] == 8
    assert four["new_tokens"] >= 8 * 6 and four["tokens_per_s"] > 0
    # blocks round each request up by < one block; contiguous reserves the longest length
    assert four["peak_tokens_bytes"] <= four["peak_kv_bytes"] < four["peak_contiguous_bytes"]
    timeline = four["timeline"]
    assert max(s["batch"] for s in timeline) == 4
    assert sum(len(s["joined"]) for s in timeline) == 8  # the last four joined mid-flight
    assert any(s["joined"] and s["left"] for s in timeline[1:])  # join and leave, one step


def test_smollm2_batched_paged_equals_generate() -> None:
    from learn.lab.llama_gguf import chat_prompt, load_smollm2

    model, tokenizer = load_smollm2("cpu")
    texts = ["What is the capital of France?", "Name three colours.", "Say hi."]
    reqs = [PagedRequest(chat_prompt(tokenizer, t), 6, arrival_step=i) for i, t in enumerate(texts)]
    run = serve(model, reqs, num_blocks=16, block_size=16)
    for r, res in zip(reqs, run.results, strict=True):
        assert res.tokens == reference(model, r, None)
    assert "Paris" in tokenizer.decode(run.results[0].tokens)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_paged_greedy_equals_generate_on_cuda(tiny: Llama) -> None:
    model = tiny.to("cuda")
    try:
        reqs = mix()
        run = serve(model, reqs, num_blocks=64, block_size=4, stop_ids=())
        assert run.device.startswith("cuda")
        for r, res in zip(reqs, run.results, strict=True):
            assert res.tokens == reference(model, r)
    finally:
        tiny.to("cpu")
