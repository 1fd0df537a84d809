"""Chapters 4-5 and the quantization lab through the real worker, with the real SmolLM2."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from tests.support import finished_run, read_events, start_run, worker_device


def finished_run_status(api: httpx.Client, slug: str, params: dict) -> dict:
    """Start a run and follow it to its end, whatever that end is."""
    run_id = start_run(api, slug, params)
    read_events(api, run_id)
    return api.get(f"/api/runs/{run_id}").json()


REPEAT = "Repeat exactly: the red fox jumps over the red fence and the red fox runs home."


@pytest.fixture(scope="module")
def smollm2():
    from learn.lab.llama_gguf import load_smollm2

    return load_smollm2("cpu")


def test_generate_streams_tokens_and_greedy_equals_our_reference(api: httpx.Client, smollm2):
    from learn.lab.decoding import generate
    from learn.lab.llama_gguf import chat_prompt

    params = {"prompt": "Name three colours.", "max_new_tokens": 8, "temperature": 0}
    run_id = start_run(api, "generate", params)
    events = read_events(api, run_id)
    run = api.get(f"/api/runs/{run_id}").json()
    result = run["result"]
    streamed = [e["data"]["token"] for e in events if e["event"] == "partial"]
    model, tokenizer = smollm2
    reference = generate(
        model, chat_prompt(tokenizer, "Name three colours."), 8, tokenizer=tokenizer
    )
    assert streamed == result["tokens"] == reference.tokens
    assert result["device"] == run["device"] == worker_device(api, run["worker"])
    assert len(result["token_ms"]) == len(result["tokens"])
    assert result["ttft_ms"] == result["token_ms"][0] and result["text"] == reference.text


def test_attention_weights_are_causal_distributions(api: httpx.Client):
    result = finished_run(api, "attention", {"prompt": "One two three four five.", "layer": 3})[
        "result"
    ]
    weights, t = result["attention"], len(result["tokens"])
    assert len(weights) == result["heads"] == 9 and result["kv_heads"] == 3
    for head in weights:
        assert len(head) == t
        for i, row in enumerate(head):
            assert sum(row) == pytest.approx(1, abs=2e-3)
            assert all(v == 0 for v in row[i + 1 :])  # the causal mask
    probs = result["next"]["probs"]
    assert probs["1.0"] == sorted(probs["1.0"], reverse=True)
    assert max(probs["0.25"]) > max(probs["2.0"])  # cooler is sharper


def test_kv_cache_gives_the_same_tokens_and_measures_both(api: httpx.Client):
    result = finished_run(api, "kv-cache", {"prompt": "Count to five.", "max_new_tokens": 6})[
        "result"
    ]
    assert result["same_tokens"] and result["cache"]["tokens"] == result["no_cache"]["tokens"]
    assert result["cache_bytes_per_position"] == 2 * 30 * 3 * 64 * 4  # fp32 K and V
    sizes = result["cache_bytes_by_position"]
    assert sizes[-1] - sizes[-2] == result["cache_bytes_per_position"]
    # the speed-up is the two timed generations' ratio, recomputed from what they report
    cache, no_cache = result["cache"], result["no_cache"]
    assert result["speedup"] == pytest.approx(no_cache["total_ms"] / cache["total_ms"], rel=1e-2)
    for timed in (cache, no_cache):
        assert len(timed["token_ms"]) == len(timed["tokens"]) and timed["tokens"]
        assert timed["total_ms"] == pytest.approx(sum(timed["token_ms"]), rel=1e-3)


def test_speculative_decoding_returns_plain_greedy_output(api: httpx.Client):
    params = {"prompt": REPEAT, "max_new_tokens": 16, "num_draft": 6}
    result = finished_run(api, "speculative", params)["result"]
    for method in ("lookup", "draft"):
        assert result[method]["same_as_greedy"], method
        assert result[method]["tokens"] == result["plain"]["tokens"]
        pieces = "".join(p["text"] for p in result[method]["pieces"])
        assert pieces == result["plain"]["text"]
    assert result["lookup"]["accepted"] > 0  # the answer copies the prompt
    assert result["lookup"]["target_passes"] < len(result["plain"]["tokens"])
    drafted = [s["drafted"] for s in result["lookup"]["steps"][1:]]  # the draft length each step
    assert result["lookup"]["longest_draft"] == max(drafted) and max(drafted) <= 6
    assert result["lookup"]["speculated_steps"] == sum(d > 0 for d in drafted)


def test_sliding_window_scores_against_full_attention(api: httpx.Client):
    result = finished_run(api, "sparse-attention", {"windows": [16, 1024], "sinks": 4})["result"]
    rows = {(r["window"], r["sinks"]): r for r in result["rows"]}
    assert rows[(1024, 0)]["perplexity"] == pytest.approx(result["full_perplexity"], rel=1e-4)
    assert rows[(1024, 0)]["agreement"] == 1.0
    assert rows[(16, 0)]["perplexity"] > result["full_perplexity"]
    assert rows[(16, 4)]["perplexity"] < rows[(16, 0)]["perplexity"]  # sinks help


def test_positions_paged_cache_tiled_attention_and_moe(api: httpx.Client):
    pos = finished_run(api, "positions", {"positions": 64, "dims": 32})["result"]
    assert len(pos["encoding"]) == 64 and len(pos["encoding"][0]) == 32
    assert all(pos["similarity"][i][i] == pytest.approx(1, abs=1e-3) for i in range(64))
    assert pos["rope_by_distance"][0] == pytest.approx(32, rel=1e-3)  # q·k of ones(32)

    paged = finished_run(api, "paged-kv", {"requests": 6, "sharers": 3, "shared_prefix": 32})
    peak = paged["result"]["peak"]
    assert peak["allocated_slots"] <= peak["contiguous_slots"]
    assert paged["result"]["waste_paged"] < paged["result"]["waste_contiguous"]
    assert peak["blocks_shared"] >= 1
    snapshot = paged["result"]["snapshot"]
    blocks = [b for table in snapshot["tables"].values() for b in table]
    shared = {b for b in blocks if blocks.count(b) > 1}
    assert shared and all(snapshot["refcount"][b] == blocks.count(b) for b in set(blocks))
    tiny = finished_run_status(api, "paged-kv", {"requests": 8, "num_blocks": 4})
    assert tiny["status"] == "failed" and "The pool ran out" in tiny["error"]
    assert paged["result"]["decode"] is None  # no real decode unless asked

    tiled_run = finished_run(
        api, "tiled-attention", {"seq_lens": [64, 128], "d": 16, "heads": 2, "block_size": 32}
    )
    tiled = tiled_run["result"]
    assert len(tiled["rows"]) == 6
    assert tiled["device"] == worker_device(api, tiled_run["worker"])
    assert tiled["max_abs_diff"]["tiled"] < 1e-5 and tiled["max_abs_diff"]["naive"] < 1e-5

    moe = finished_run(api, "moe", {"tokens": 256, "experts": 4, "top_k": 2})["result"]
    assert sum(moe["stats"]["tokens_per_expert"]) == 256 * 2
    routing = moe["routing"]
    assert len(routing["probs"]) == 48 and all(len(row) == 4 for row in routing["probs"])
    for row, chosen in zip(routing["probs"], routing["chosen"], strict=True):
        assert sum(row) == pytest.approx(1, abs=1e-3)
        assert sorted(chosen) == sorted(sorted(range(4), key=lambda e: -row[e])[:2])


def test_quantize_fills_the_table_and_the_benchmarks_page(api: httpx.Client):
    params = {"model": "minilm", "variants": ["fp32", "int8-weight", "fp16"], "sentences": 32}
    run_id = start_run(api, "quantize", params)
    events = read_events(api, run_id)
    run = api.get(f"/api/runs/{run_id}").json()
    rows = run["result"]["rows"]
    assert [r["variant"] for r in rows] == ["fp32", "int8-weight", "fp16"]
    assert [e["data"]["row"]["variant"] for e in events if e["event"] == "partial"] == [
        "fp32",
        "int8-weight",
        "fp16",
    ]
    if worker_device(api, run["worker"]) == "cuda":  # fp16 runs on a GPU worker only
        assert not rows[2]["skipped"] and rows[2]["quality"]["cosine_mean"] > 0.99
    else:
        assert rows[2]["skipped"] and "CUDA" in rows[2]["skipped"]
    fp32, int8 = rows[0]["quality"], rows[1]["quality"]
    assert fp32 == {"cosine_mean": 1.0, "cosine_min": 1.0, "recall_at_10": 1.0}  # the reference
    assert rows[1]["size_ratio"] > 1.3
    # int8 is measured against fp32's vectors, not its own: close, never identical
    assert 0.99 < int8["cosine_mean"] < 1.0 and int8["cosine_min"] < int8["cosine_mean"]
    assert 0.5 <= int8["recall_at_10"] <= 1.0
    page = api.get("/benchmarks/").text
    assert run_id[:8] in page and "int8 weight-only" in page


def test_quantized_smollm2_still_generates(api: httpx.Client):
    params = {"variants": ["fp32", "int4-weight"], "group_size": 32, "new_tokens": 8}
    rows = finished_run(api, "quantize", params)["result"]["rows"]
    fp32, int4 = rows
    assert int4["size_ratio"] > 2.5  # the tied embedding stays in fp32
    assert int4["quality"]["sample"].strip()
    # groups of 32 land on the GGUF's own Q4_1 grid: nearly lossless here
    assert int4["quality"]["perplexity"] < fp32["quality"]["perplexity"] * 1.1


def test_weight_inspector_reports_the_error_a_reference_recomputes(api: httpx.Client, smollm2):
    from learn.lab.quantized_models import linear_weight
    from tests.lab.test_quantize import reference_round_trip

    result = finished_run(
        api, "weight-inspect", {"layer": 2, "matrix": "attention-out", "scheme": "int4"}
    )["result"]
    assert result["name"] == "layers.2.attention.wo" and result["shape"] == [576, 576]
    weight = linear_weight(smollm2[0].get_submodule(result["name"]))[0].double().numpy()
    restored, step = reference_round_trip(weight, "int4", result["group_size"])
    error = np.abs(restored - weight)
    assert result["max_abs_error"] == pytest.approx(error.max(), rel=1e-3)
    assert result["mean_abs_error"] == pytest.approx(error.mean(), rel=1e-3)
    assert result["max_error_over_half_scale"] == pytest.approx(
        (error / (step / 2)).max(), abs=1e-3
    )


def test_the_weight_inspectors_defaults_show_an_error_to_look_at(api: httpx.Client):
    """Its defaults avoid the one case with zero error (int4 in the GGUF's own groups of 32)."""
    result = finished_run(api, "weight-inspect", {})["result"]
    assert result["group_size"] == 64 and result["mean_abs_error"] > 0
    assert len(set(result["error"]["edges"])) > 2  # the error histogram has a real range


def test_paged_kv_real_decode_batches_requests_on_blocks(api: httpx.Client):
    """SmolLM2 serves 2 x N requests N at a time from a paged cache (tokens equal to
    per-request greedy are checked in tests/lab/test_paged_decode.py)."""
    params = {"requests": 2, "sharers": 1, "decode_concurrency": [1, 2], "decode_tokens": 4}
    run = finished_run(api, "paged-kv", params)
    d = run["result"]["decode"]
    assert d["device"] == run["result"]["device"] == worker_device(api, run["worker"])
    one, two = d["rows"]
    assert (one["concurrency"], one["requests"], two["requests"]) == (1, 2, 4)
    assert 4 * 2 <= two["new_tokens"] <= 4 * 4  # lengths drawn from [2, 4]
    assert one["tokens_per_s"] > 0 and two["tokens_per_s"] > 0 and d["generate_tokens_per_s"] > 0
    t = d["timeline"]
    assert t["concurrency"] == 2 and max(t["batch"]) == 2
    assert max(r["joined"] for r in t["requests"]) > 0  # the second two joined mid-flight
    slot = two["bytes_per_slot"]
    for owners, kv, held in zip(t["owners"], t["kv_bytes"], t["tokens_bytes"], strict=True):
        assert kv == sum(o >= 0 for o in owners) * d["block_size"] * slot
        assert held <= kv  # paged wastes less than a block per request
    assert max(t["kv_bytes"]) == two["peak_kv_bytes"]
    assert max(t["contiguous_bytes"]) == two["peak_contiguous_bytes"] > 0


@pytest.mark.parametrize(
    ("slug", "params", "says"),
    [
        ("generate", {"max_new_tokens": 257}, "less than or equal to 256"),
        ("attention", {"layer": 30}, "less than 30"),
        ("tiled-attention", {"seq_lens": [8192], "heads": 32}, "GiB of scores"),
        ("quantize", {"group_size": 48}, "group_size must be"),
        ("quantize", {"variants": ["int3"]}, "variants"),
        ("paged-kv", {"requests": 2, "sharers": 3}, "sharers cannot exceed"),
        ("paged-kv", {"decode_concurrency": [33]}, "outside 1-32"),
        ("paged-kv", {"decode_concurrency": [32, 32], "decode_tokens": 64}, "limit is 4,096"),
        ("sparse-attention", {"windows": [0]}, "1-1,024"),
        ("weight-inspect", {"model": "minilm", "layer": 7}, "MiniLM has layers 0-5"),
        ("weight-inspect", {"group_size": 128}, "do not divide this matrix's 576 inputs"),
        ("quantize", {"group_size": 128}, "pick 32 or 64"),
    ],
)
def test_bad_requests_get_a_422(api: httpx.Client, slug: str, params: dict, says: str):
    response = api.post(f"/api/playgrounds/{slug}/runs", json=params)
    assert response.status_code == 422, response.text
    assert says in response.text


def test_a_prompt_too_long_for_the_attention_view_fails_with_a_reason(api: httpx.Client):
    run = finished_run_status(api, "attention", {"prompt": "9 " * 299})  # ~300 tokens
    assert run["status"] == "failed" and "takes 160" in run["error"]


def test_mcts_takes_the_winning_move_and_refuses_impossible_boards(api: httpx.Client):
    result = finished_run(api, "mcts", {"board": "XX.OO....", "simulations": 500})["result"]
    assert result["player"] == "X" and result["move"] == 2  # three in a row
    assert result["after"] == "XXXOO...." and result["winner"] == "X"
    assert sum(result["visits"]) <= 500 and result["visits"][2] == max(result["visits"])
    for board, says in (("XXX......", "X moves first"), ("XXXOO....", "game is over")):
        response = api.post("/api/playgrounds/mcts/runs", json={"board": board})
        assert response.status_code == 422 and says in response.text
