"""Attention, positions, the paged allocator, MoE routing and MCTS, each against a reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from learn.lab.attention import (
    apply_rope,
    measure,
    naive_attention,
    position_similarity,
    receptive_field,
    rope_cos_sin,
    rope_scores_by_distance,
    sdpa,
    sinusoidal_positions,
    sliding_window_mask,
    tiled_attention,
)
from learn.lab.mcts import mcts, winner
from learn.lab.moe import MoE, moe_demo
from learn.lab.paged import OutOfBlocks, PagedKVAllocator, Request, simulate_paged

SHAPES = [  # (B, H, T, S, hs): T and S not multiples of the block, T != S, a single query
    (1, 1, 1, 1, 8),
    (2, 3, 17, 17, 16),
    (1, 4, 100, 100, 32),
    (2, 2, 33, 70, 64),
    (1, 2, 70, 33, 8),
    (1, 1, 1, 45, 16),
]


def qkv(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, ...]:
    B, H, T, S, hs = shape
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, H, T, hs, generator=g),
        torch.randn(B, H, S, hs, generator=g),
        torch.randn(B, H, S, hs, generator=g),
    )


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_naive_attention_equals_sdpa(shape: tuple[int, ...], causal: bool) -> None:
    q, k, v = qkv(shape)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(naive_attention(q, k, v, causal), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block_size", [1, 7, 16, 64])
def test_tiled_attention_equals_sdpa(shape: tuple[int, ...], causal: bool, block_size: int) -> None:
    q, k, v = qkv(shape, seed=1)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    out = tiled_attention(q, k, v, causal, block_size)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_tiled_attention_survives_large_scores() -> None:
    q, k, v = qkv((1, 2, 40, 40, 16), seed=2)
    q = q * 300  # exp() of these scores overflows without the running-max subtraction
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(tiled_attention(q, k, v, True, 8), ref, atol=1e-4, rtol=1e-4)


def test_sdpa_wrapper_and_sliding_window_mask() -> None:
    q, k, v = qkv((1, 2, 20, 20, 8), seed=3)
    torch.testing.assert_close(sdpa(q, k, v, True), naive_attention(q, k, v, True))
    mask = sliding_window_mask(6, 3)
    assert mask.tolist()[5] == [False, False, False, True, True, True]
    assert mask.sum(1).tolist() == [1, 2, 3, 3, 3, 3]
    assert receptive_field(window=3, layers=4) == 9
    window = F.scaled_dot_product_attention(q, k, v, attn_mask=sliding_window_mask(20, 5))
    torch.testing.assert_close(naive_attention(q, k, v, mask=sliding_window_mask(20, 5)), window)
    # a window as long as the sequence is plain causal attention
    torch.testing.assert_close(
        naive_attention(q, k, v, mask=sliding_window_mask(20, 20)), sdpa(q, k, v, True)
    )


@pytest.mark.parametrize("theta", [10000.0, 100000.0])
def test_rope_equals_transformers_llama(theta: float) -> None:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import (
        LlamaRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    cfg = LlamaConfig(
        hidden_size=256, num_attention_heads=4, head_dim=64, max_position_embeddings=512,
        rope_theta=theta,
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 50, 64, generator=g), torch.randn(2, 2, 50, 64, generator=g)
    positions = torch.arange(7, 57)[None].expand(2, -1)  # an offset, as after a cache
    hf_cos, hf_sin = LlamaRotaryEmbedding(cfg)(q, positions)
    hf_q, hf_k = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    cos, sin = rope_cos_sin(torch.arange(7, 57), 64, theta)
    torch.testing.assert_close(cos, hf_cos[0])
    torch.testing.assert_close(apply_rope(q, cos, sin), hf_q)
    torch.testing.assert_close(apply_rope(k, cos, sin), hf_k)


def test_rope_scores_depend_on_distance_only() -> None:
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(64, generator=g), torch.randn(64, generator=g)
    cos, sin = rope_cos_sin(200, 64)
    rq, rk = apply_rope(q.expand(200, 64), cos, sin), apply_rope(k.expand(200, 64), cos, sin)
    torch.testing.assert_close(rq[10] @ rk[3], rq[110] @ rk[103], atol=1e-4, rtol=1e-4)
    decay = rope_scores_by_distance(64, 256)
    assert decay[0] == pytest.approx(64.0) and decay[1] < decay[0]


def test_sinusoidal_positions() -> None:
    pe = sinusoidal_positions(50, 16)
    assert pe.shape == (50, 16)
    assert pe[0, 0::2].abs().max() == 0 and torch.all(pe[0, 1::2] == 1)
    assert torch.allclose(pe[7, 0], torch.sin(torch.tensor(7.0)))
    sim = position_similarity(pe)
    assert torch.allclose(sim.diagonal(), torch.ones(50))
    assert sim[10, 11] > sim[10, 30]  # nearby positions look alike


def test_measure_reports_time_and_the_quadratic_memory_of_naive_attention() -> None:
    naive = measure("naive", 256, 128, 4, repeats=1)
    tiled = measure("tiled", 256, 128, 4, block_size=32, repeats=1)
    assert naive.ms > 0 and naive.device == "cpu" and "profiler" in naive.memory_method
    assert naive.peak_bytes >= 4 * 256 * 256 * 4  # at least one (H, T, T) fp32 score matrix
    assert tiled.peak_bytes < naive.peak_bytes


# --- paged KV cache -------------------------------------------------------------------


def check_invariants(a: PagedKVAllocator) -> None:
    counts = [0] * a.num_blocks
    for table in a.tables.values():
        assert len(table) == len(set(table)), "a sequence lists a block twice"
        for b in table:
            counts[b] += 1
    assert counts == a.refcount, "refcounts disagree with the block tables"
    assert not set(a.free_blocks) & {b for b, n in enumerate(counts) if n}, "a used block is free"
    assert len(a.free_blocks) + sum(1 for n in counts if n) == a.num_blocks, "a block leaked"
    for sid, table in a.tables.items():
        assert len(table) == -(-a.lengths[sid] // a.block_size)  # ceil: no spare blocks


def test_paged_allocator_allocates_grows_and_frees() -> None:
    a = PagedKVAllocator(num_blocks=20, block_size=4, max_len=64)
    a.allocate("a", 10)
    a.allocate("b", 3)
    check_invariants(a)
    assert len(a.tables["a"]) == 3 and len(a.tables["b"]) == 1
    assert not set(a.tables["a"]) & set(a.tables["b"]), "two sequences own one block"
    a.append("b", 2)  # crosses into a second block
    check_invariants(a)
    s = a.stats()
    assert s.logical_tokens == 15 and s.allocated_slots == 20 and s.waste_slots == 5
    assert s.contiguous_slots == 128 and s.contiguous_waste_slots == 113
    a.free("a")
    a.free("b")
    check_invariants(a)
    assert len(a.free_blocks) == 20 and a.stats().blocks_used == 0


def test_paged_allocator_shares_full_prefix_blocks_with_refcounts() -> None:
    a = PagedKVAllocator(num_blocks=32, block_size=4)
    a.allocate("sys", 10)  # blocks: full, full, half
    a.allocate("u1", 14, share_prefix_with="sys", prefix_tokens=10)
    a.allocate("u2", 12, share_prefix_with="sys", prefix_tokens=10)
    check_invariants(a)
    shared = a.tables["sys"][:2]
    assert a.tables["u1"][:2] == shared and a.tables["u2"][:2] == shared
    assert [a.refcount[b] for b in shared] == [3, 3]
    assert a.tables["sys"][2] not in a.tables["u1"], "a partly filled block was shared"
    assert a.stats().blocks_shared == 2
    a.free("sys")
    check_invariants(a)
    assert [a.refcount[b] for b in shared] == [2, 2]  # still used by u1 and u2
    a.free("u1")
    a.free("u2")
    check_invariants(a)
    assert sorted(a.free_blocks) == list(range(32))


def test_paged_allocator_runs_out_cleanly() -> None:
    a = PagedKVAllocator(num_blocks=3, block_size=4)
    a.allocate("a", 8)
    with pytest.raises(OutOfBlocks):
        a.allocate("b", 8)
    check_invariants(a)
    assert "b" not in a.tables and len(a.free_blocks) == 1


def test_simulated_serving_frees_everything_and_beats_contiguous() -> None:
    reqs = [
        Request(20, 30, 0, True),
        Request(25, 10, 2, True),
        Request(5, 40, 3),
        Request(50, 5, 9),
    ]
    history = simulate_paged(reqs, block_size=8, num_blocks=64, max_len=256, shared_prefix=16)
    peak = max(history, key=lambda s: s.allocated_slots)
    assert peak.allocated_slots < peak.contiguous_slots
    assert max(s.blocks_shared for s in history) == 2
    assert history[-1].blocks_used == 0 and history[-1].sequences == 0


# --- MoE and MCTS ---------------------------------------------------------------------


def test_moe_routing_weights_counts_and_output() -> None:
    torch.manual_seed(0)
    layer = MoE(dim=16, hidden=32, n_experts=6, top_k=2)
    x = torch.randn(50, 16)
    probs, experts, weights = layer.route(x)
    torch.testing.assert_close(probs.sum(-1), torch.ones(50))
    torch.testing.assert_close(weights.sum(-1), torch.ones(50))
    assert (experts[:, 0] != experts[:, 1]).all()
    with torch.no_grad():
        y, stats = layer(x)
        dense = torch.stack([e(x) for e in layer.experts], 1)  # (N, E, C): every expert
        ref = (dense.gather(1, experts[..., None].expand(-1, -1, 16)) * weights[..., None]).sum(1)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    assert sum(stats.tokens_per_expert) == 100
    assert sum(stats.load_fraction) == pytest.approx(1.0)
    assert sum(stats.mean_router_prob) == pytest.approx(1.0)
    assert stats.dropped_tokens == 0


def test_moe_skewed_router_is_unbalanced_and_capacity_drops() -> None:
    even = moe_demo(n_tokens=400, router_skew=0.0)["stats"]
    skewed = moe_demo(n_tokens=400, router_skew=20.0, capacity_factor=1.0)["stats"]
    assert skewed.load_balance_loss > even.load_balance_loss
    assert skewed.max_over_mean_load > even.max_over_mean_load
    assert skewed.dropped_tokens > 0


@pytest.mark.parametrize(
    ("board", "best"),
    [
        ("XX.OO....", 2),  # X completes the top row
        ("OO.XX....", 5),  # X wins on the middle row rather than block
        ("X.X.O....", 1),  # O must block the top row
    ],
)
def test_mcts_finds_the_winning_or_saving_move(board: str, best: int) -> None:
    result = mcts(board, simulations=1500, seed=0)
    assert result.move == best
    assert result.visits[best] == max(result.visits)
    assert all(result.visits[i] == 0 for i, c in enumerate(board) if c != ".")
    assert sum(result.visits) == 1500


def test_mcts_self_play_from_empty_board_is_a_draw() -> None:
    board, player = "." * 9, "X"
    while winner(board) is None:
        move = mcts(board, simulations=800, seed=1).move
        board = board[:move] + player + board[move + 1 :]
        player = "O" if player == "X" else "X"
    assert winner(board) == "draw"
