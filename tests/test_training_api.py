"""Train a tiny GPT through the real worker: a ten-step run of a one-layer, width-32 model
whose curves, samples and attention come back whole; its kept model downloaded and loaded
by transformers, and generated from; a diverging run that ends with the reason; a
cancelled run that keeps its checkpoint; and the bounds that refuse a run with a 422."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers / huggingface_hub load

from pathlib import Path

import httpx
import pytest

from tests.support import event_stream, finished_run, read_events, start_run, take_until

TEXT = "the quick brown fox jumps over the lazy dog, then naps in the sun. " * 60
TINY = {"source": "text", "text": TEXT, "n_layer": 1, "n_embd": 32, "n_head": 2,
        "context": 16, "batch_size": 4, "steps": 10, "warmup": 2}  # fmt: skip


@pytest.fixture(scope="module")
def client(site: str) -> httpx.Client:
    with httpx.Client(base_url=site, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def trained(client: httpx.Client) -> tuple[dict, list[dict]]:
    run_id = start_run(client, "train-gpt", TINY)
    events = read_events(client, run_id)
    return client.get(f"/api/runs/{run_id}").json(), events


def test_a_tiny_run_succeeds_with_whole_curves_samples_and_attention(trained: tuple) -> None:
    run, events = trained
    assert run["status"] == "succeeded", run
    result = run["result"]
    assert result["device"] == run["device"] and result["stopped"] == "done"
    assert [e["step"] for e in result["evals"]] == list(range(11))  # step 0, then each step
    assert result["step_loss"]["steps"] == list(range(1, 11))
    assert result["evals"][-1]["val"] < result["evals"][0]["val"]
    assert [s["step"] for s in result["samples"]] == list(range(1, 11))
    assert result["tokens_per_s"] > 0 and result["weights"] > 0
    assert (
        result["tokenizer"]["kind"] == "chars"
        and result["tokenizer"]["vocab_size"] == len(set(TEXT)) + 1
    )
    head = result["attention"]
    assert len(head["tokens"]) == 16 and len(head["weights"]) == 16
    assert all(abs(sum(row) - 1) < 0.01 for row in head["weights"])
    parts = [e["data"].get("part") for e in events if e["event"] == "partial"]
    assert parts.count("eval") == 11 and parts.count("attention") == 11


def test_the_kept_model_downloads_loads_in_transformers_and_generates(
    client: httpx.Client, trained: tuple, tmp_path: Path
) -> None:
    import torch
    from transformers import GPT2LMHeadModel

    run_id = trained[0]["id"]
    for name in ("model.safetensors", "config.json"):
        response = client.get(f"/api/runs/{run_id}/model/{name}")
        assert response.status_code == 200, response.text
        (tmp_path / name).write_bytes(response.content)
    model = GPT2LMHeadModel.from_pretrained(tmp_path)
    assert model.config.n_layer == 1 and model.config.n_embd == 32
    with torch.no_grad():
        logits = model(torch.zeros(1, 16, dtype=torch.long)).logits
    assert logits.shape == (1, 16, len(set(TEXT)) + 1) and torch.isfinite(logits).all()
    curves = client.get(f"/api/runs/{run_id}/model/curves.json").json()
    assert curves["evals"] == trained[0]["result"]["evals"]
    sample = finished_run(
        client, "train-gpt-sample", {"model": run_id, "prompt": "the ", "max_new_tokens": 30}
    )
    assert len(sample["result"]["text"]) == 30  # a character model: one token, one character
    assert sample["result"]["trained_steps"] == 10
    missing = client.get(f"/api/runs/{sample['id']}/model/config.json")
    assert missing.status_code == 404 and "Train a tiny GPT" in missing.json()["message"]


def test_a_learning_rate_far_too_high_ends_the_run_with_the_reason(client: httpx.Client) -> None:
    run_id = start_run(client, "train-gpt", {**TINY, "lr": 1.0, "warmup": 0})
    events = read_events(client, run_id)
    run = client.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "failed", run
    assert "diverged" in run["error"] and "learning rate" in run["error"], run["error"]
    assert any(e["event"] == "error" and "smaller" in e["data"]["message"] for e in events)


def test_cancel_keeps_the_curves_so_far_and_the_last_checkpoint(client: httpx.Client) -> None:
    run_id = start_run(client, "train-gpt", {**TINY, "steps": 2_000, "batch_size": 2})
    with event_stream(client, run_id) as stream:
        seen = take_until(
            stream, lambda e: e["data"].get("part") == "eval" and e["data"]["step"] > 0
        )
        assert client.post(f"/api/runs/{run_id}/cancel").status_code == 200
        rest = list(stream)
    assert rest[-1]["data"]["status"] == "cancelled"
    assert [e for e in seen if e["data"].get("part") == "eval"]
    from tests.support import wait_until

    weights = wait_until(
        lambda: (r := client.get(f"/api/runs/{run_id}/model/config.json")).status_code == 200 and r,
        "the checkpoint of the cancelled run",
    )
    assert weights.json()["forward_pass"]["step"] >= 1


@pytest.mark.parametrize(
    ("slug", "change", "says"),
    [
        ("train-gpt", {"n_embd": 50, "n_head": 4}, "not divisible"),
        ("train-gpt", {"steps": 5_000}, "less than or equal to 2000"),
        ("train-gpt", {"lr": 5.0}, "less than or equal to 1"),
        ("train-gpt", {"text": "too short"}, "at least 2,000"),
        ("train-gpt", {"text": None}, "give your text"),
        ("train-gpt", {"tokenizer": "nonsense"}, "unknown tokenizer"),
        ("train-gpt", {"attn_layer": 3}, "the head shown must exist"),
        ("train-gpt", {"n_layer": 6, "n_embd": 256, "context": 256, "batch_size": 64,
                       "steps": 2_000}, "TFLOP"),
        ("distill", {"steps": 400, "batch_size": 16, "context": 128}, "teacher would read"),
        ("distill", {"temperature": 0}, "greater than or equal to 0.5"),
        ("train-gpt-sample", {"model": "00000000-0000-0000-0000-000000000000"},
         "train a model first"),
    ],
)  # fmt: skip
def test_out_of_bounds_settings_get_a_422_that_says_why(
    client: httpx.Client, slug: str, change: dict, says: str
) -> None:
    body = {**TINY, **change} if slug != "train-gpt-sample" else change
    if slug == "distill":
        body = {k: v for k, v in body.items() if k not in {"attn_layer", "tokenizer"}}
    response = client.post(f"/api/playgrounds/{slug}/runs", json=body)
    assert response.status_code == 422, response.text
    assert says in response.text, response.text


def test_the_form_offers_your_bpe_tokenizers_only_and_training_uses_one(
    client: httpx.Client, services
) -> None:
    from learn.lab.bpe import BPEConfig
    from learn.lab.bpe_train import train_bpe
    from learn.models import Run, TrainedTokenizer

    bpe = train_bpe(TEXT, BPEConfig(280, "gpt2"))

    def tokenizer(owner: str) -> TrainedTokenizer:
        run = Run.objects.create(playground="bpe-train", params={}, owner=owner, status="succeeded")
        return TrainedTokenizer.objects.create(
            name=f"bpe of {owner}", run=run, vocab_size=len(bpe), pretokenizer="gpt2",
            data=bpe.to_dict(), corpus_chars=len(TEXT),
        )  # fmt: skip

    mine, theirs = tokenizer("ip:127.0.0.1"), tokenizer("session:someone-else")
    page = client.get("/chapters/transformers/").text
    assert 'id="pg-train-gpt"' in page and 'id="pg-distill"' in page
    assert f'value="{mine.id}"' in page and f'value="{theirs.id}"' not in page
    run = finished_run(client, "train-gpt", {**TINY, "tokenizer": str(mine.id)})
    result = run["result"]
    assert result["tokenizer"] == {
        "kind": "bpe", "tokenizer_id": str(mine.id), "name": mine.name, "vocab_size": len(bpe)
    }  # fmt: skip
    assert result["train_tokens"] + result["val_tokens"] == len(bpe.encode(TEXT))


def test_distillation_trains_both_students_from_one_start_with_the_teacher(
    client: httpx.Client,
) -> None:
    tiny = {**TINY, "context": 8, "batch_size": 1, "n_head": 2}
    run = finished_run(client, "distill", tiny)
    result = run["result"]
    soft, hard = result["students"]["soft"]["evals"], result["students"]["hard"]["evals"]
    assert [e["step"] for e in soft] == [e["step"] for e in hard] == list(range(11))
    assert soft[0] == hard[0]  # the same initial weights: only the labels differ
    assert result["students"]["soft"]["step_loss"] != result["students"]["hard"]["step_loss"]
    assert result["config"]["vocab_size"] == 49_152  # SmolLM2's tokens, so the labels align
    assert 0 < result["teacher_val"] < soft[0]["val"]  # the teacher knows the text far better
    assert result["device"] == run["device"] and result["alpha"] == 0.9


def test_an_uploaded_text_that_is_too_large_or_not_utf8_is_a_422_on_the_file_field(
    client: httpx.Client,
) -> None:
    def upload(data: bytes) -> httpx.Response:
        form = {"source": "text", "n_layer": "1", "n_embd": "32", "n_head": "2", "steps": "10"}
        files = {"text_file": ("mine.txt", data, "text/plain")}
        return client.post("/api/playgrounds/train-gpt/runs", data=form, files=files)

    for data, says in ((b"caf\xe9 latin-1", "not UTF-8"), (b"a" * (2 * 2**20 + 1), "2 MB")):
        response = upload(data)
        assert response.status_code == 422, response.text
        problem = response.json()["detail"][0]
        assert problem["field"] == "text_file" and says in problem["message"], problem
