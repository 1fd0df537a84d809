"""LoRA fine-tuning through the real worker: a tiny run whose answers and adapter match
what the lab computes here, a cancelled run that keeps its curve and adapter, a learning
rate that blows up, and the bounds that refuse a run before anything is queued."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from learn.lab.lora_pairs import builtin
from tests.support import event_stream, finished_run, read_events, start_run, take_until, wait_until

PROMPT = "What is a rainbow?"
TINY = {"steps": 2, "batch_size": 1, "rank": 2, "alpha": 4, "max_new_tokens": 8}
OWN = "\n".join(
    json.dumps({"instruction": f"Question {i}?", "response": f"Answer {i}. Over and out."})
    for i in range(3)
)


@pytest.fixture(scope="module")
def run(site: str) -> dict:
    with httpx.Client(base_url=site, timeout=60) as client:
        return finished_run(client, "lora-finetune", {**TINY, "pairs": OWN, "prompts": [PROMPT]})


@pytest.fixture(scope="module")
def smollm2():
    import torch

    from learn.lab.llama_gguf import load_smollm2

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker's pool process: the same sums, the same tokens
    yield load_smollm2("cpu")
    torch.set_num_threads(threads)


def test_a_tiny_run_trains_the_adapter_and_answers_before_and_after(run: dict, api) -> None:
    result = run["result"]
    assert run["status"] == "succeeded" and result["device"] == run["device"] == "cpu"
    assert result["steps_done"] == 2 and len(result["losses"]) == 2
    assert result["pairs"] == 3 and result["source"] == "own"
    assert (result["marker"], result["marker_where"]) == ("Over and out.", "end")
    assert "pairs" not in run["params"] and run["params"]["pairs_chars"] == len(OWN)
    assert result["points"].count(",") == 2  # two points on the curve
    assert result["tokens"] > 0 and result["tokens_per_s"] > 0
    # rank 2 on 4 projections a layer: 2 · (in + out) weights each, 30 layers
    per_layer = 2 * ((576 + 960) + (576 + 576) + (576 + 3072) + (1536 + 576))
    assert result["trainable"] == 30 * per_layer
    assert result["share"] == pytest.approx(30 * per_layer / result["base_params"])
    assert result["base_bytes"] == 4 * result["base_params"]  # float32 on the CPU
    [answer] = result["answers"]
    assert answer["prompt"] == PROMPT and answer["before"] and answer["after"]
    events = read_events(api, run["id"])
    steps = [e["data"] for e in events if e["event"] == "partial"]
    assert [s["step"] for s in steps] == [1, 2] and all(s["steps"] == 2 for s in steps)
    assert [s["loss"] for s in steps] == result["losses"]


def test_the_adapter_downloads_and_reproduces_the_after_answer(run: dict, api, smollm2) -> None:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load

    from learn.lab.lora import LoraSettings, answer, lora_layers, merged, with_lora

    response = api.get(f"/api/runs/{run['id']}/lora/adapter.safetensors")
    assert response.status_code == 200, response.text
    assert "attachment" in response.headers["content-disposition"]
    assert len(response.content) == run["result"]["adapter_bytes"]
    tensors = load(response.content)
    assert len(tensors) == 2 * 4 * 30
    assert tensors["layers.0.attention.wqkv.lora_A.weight"].shape == (2, 576)
    # the reference: the same base with the downloaded adapter, here
    model, tokenizer = smollm2
    tuned = with_lora(model, LoraSettings(rank=2, alpha=4))
    set_peft_model_state_dict(tuned, tensors)
    assert any(
        layer.lora_B["default"].weight.abs().sum() > 0 for layer in lora_layers(tuned).values()
    )
    [row] = run["result"]["answers"]
    assert answer(model, tokenizer, PROMPT, 8)["text"] == row["before"]
    assert answer(tuned, tokenizer, PROMPT, 8)["text"] == row["after"]
    ids = torch.tensor([tokenizer.encode(PROMPT).ids])
    torch.testing.assert_close(merged(tuned)(ids), tuned(ids), rtol=1e-4, atol=1e-3)
    assert api.get(f"/api/runs/{uuid.uuid4()}/lora/adapter.safetensors").status_code == 404
    assert api.get(f"/api/runs/{run['id']}/lora/model.bin").status_code == 422


def test_the_peft_zip_loads_onto_transformers_llama_with_the_same_logits(
    run: dict, api, smollm2, tmp_path
) -> None:
    import io
    import zipfile

    import torch
    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load

    from learn.lab.llama_hf import to_hf
    from learn.lab.lora import LoraSettings, with_lora

    response = api.get(f"/api/runs/{run['id']}/lora/adapter-peft.zip")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    zipfile.ZipFile(io.BytesIO(response.content)).extractall(tmp_path)
    model, tokenizer = smollm2
    hf = PeftModel.from_pretrained(to_hf(model), str(tmp_path))
    ours = with_lora(model, LoraSettings(rank=2, alpha=4))
    adapter = api.get(f"/api/runs/{run['id']}/lora/adapter.safetensors").content
    set_peft_model_state_dict(ours, load(adapter))
    ids = torch.tensor([tokenizer.encode(PROMPT).ids])
    torch.testing.assert_close(hf(ids).logits.float(), ours(ids), rtol=1e-3, atol=1e-3)


def test_a_cancelled_run_keeps_its_curve_and_its_adapter(api) -> None:
    from learn.models import Run

    run_id = start_run(api, "lora-finetune", {**TINY, "steps": 100, "prompts": [PROMPT]})
    with event_stream(api, run_id, timeout=60) as events:
        take_until(events, lambda e: e["event"] == "partial")
        assert api.post(f"/api/runs/{run_id}/cancel").status_code == 200
    events = read_events(api, run_id)
    assert events[-1]["data"] == {"status": "cancelled"}
    assert next(e["data"]["step"] for e in events if e["event"] == "partial") == 1
    assert Run.objects.get(pk=run_id).status == "cancelled"
    adapter = wait_until(
        lambda: (
            (r := api.get(f"/api/runs/{run_id}/lora/adapter.safetensors")).status_code == 200 and r
        ),
        "the cancelled run's adapter was saved",
    )
    from safetensors.torch import load

    assert len(load(adapter.content)) == 2 * 4 * 30  # A and B, 4 projections, 30 layers


def test_a_learning_rate_of_one_ends_the_run_with_an_explanation(api) -> None:
    params = {**TINY, "rank": 8, "alpha": 16, "batch_size": 2, "steps": 8, "lr": 1.0}
    run_id = start_run(api, "lora-finetune", {**params, "prompts": [PROMPT]})
    read_events(api, run_id)
    run = api.get(f"/api/runs/{run_id}").json()
    assert run["status"] == "failed", run
    assert "Training diverged" in run["error"] and "ten times smaller" in run["error"]
    assert api.get(f"/api/runs/{run_id}/lora/adapter.safetensors").status_code == 404


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"rank": 0}, "greater than or equal to 1"),
        ({"rank": 65}, "less than or equal to 64"),
        ({"steps": 121}, "less than or equal to 120"),
        ({"batch_size": 9}, "less than or equal to 8"),
        ({"steps": 61, "batch_size": 4}, "at most 240"),
        ({"lr": 0}, "greater than 0"),
        ({"targets": "mlp"}, "attention"),
        ({"prompts": []}, "at least 1"),
        ({"prompts": ["a"] * 5}, "at most 4"),
        ({"prompts": ["x" * 401]}, "test prompt 1 is 401 characters"),
        ({"pairs": "no pairs here"}, "JSON line"),
        ({"pairs": OWN.splitlines()[0]}, "at least 2"),
        ({"pairs": OWN + "\n{oops"}, "line 4 is not valid JSON"),
        (
            {"pairs": OWN + "\n" + json.dumps({"instruction": "Tell", "response": "无" * 300})},
            "pair 4 is",
        ),
        (
            {
                "pairs": "\n".join(
                    json.dumps({"instruction": "Tell", "response": "无" * 70}) for _ in range(2)
                ),
                "steps": 60,
                "batch_size": 4,
            },
            "tokens of training; at most 16,000",
        ),
    ],
)
def test_bad_requests_get_a_422_and_queue_nothing(
    api: httpx.Client, services, params: dict, says: str
) -> None:
    from learn.models import Run

    before = Run.objects.count()
    response = api.post("/api/playgrounds/lora-finetune/runs", json=params)
    assert response.status_code == 422, response.text
    assert says in response.text, response.text
    assert Run.objects.count() == before


def test_the_lesson_offers_the_playground_with_the_builtin_test_prompts(api) -> None:
    page = api.get("/chapters/transformers/").text
    assert 'id="pg-lora-finetune"' in page and "Hu et al." in page
    form = page[page.index('id="pg-lora-finetune"') :]
    textarea = form[form.index('name="prompts"') :]
    shown = textarea[textarea.index(">") + 1 : textarea.index("</textarea>")]
    assert shown.split("\n") == list(builtin().heldout)
