"""Chapter 3 playgrounds through the real worker: train BPE, step through, tokenize, cost."""

from __future__ import annotations

import json
import pydoc_data.topics
from datetime import datetime

import httpx
import pytest
from tokenizers import Tokenizer

from tests.support import finished_run, read_events, start_run

CLASSIC = "low " * 5 + "lowest " * 2 + "newer " * 6 + "wider " * 3 + "new " * 2
HELD_OUT = "Held-out text: naïve café, 3.14159, emoji 🙂 and <|endoftext|> markers.\n\tIndented."


@pytest.fixture(scope="module")
def trained(site: str) -> dict:
    """One tokenizer trained through the API on pasted text (shared by this module)."""
    corpus = "\n\n".join(list(pydoc_data.topics.topics.values())[:40])
    with httpx.Client(base_url=site, timeout=60) as client:
        run_id = start_run(
            client,
            "bpe-train",
            {
                "corpus": corpus,
                "vocab_size": 700,
                "pretokenizer": "gpt4",
                "special_tokens": ["<|endoftext|>"],
                "name": "docs-700",
            },
        )
        events = read_events(client, run_id)
        run = client.get(f"/api/runs/{run_id}").json()
    return {"run": run, "events": events, "corpus": corpus}


def test_training_streams_every_merge_in_order(trained: dict) -> None:
    merges = [m for e in trained["events"] if e["event"] == "partial" for m in e["data"]["merges"]]
    result = trained["run"]["result"]
    assert trained["run"]["status"] == "succeeded"
    assert [m["rank"] for m in merges] == list(range(1, result["merge_count"] + 1))
    assert result["vocab_size"] == 700 and result["merge_count"] == 700 - 256 - 1
    assert result["device"] == "cpu"  # integer work: the CPU, whatever the worker has
    started, finished = (
        datetime.fromisoformat(trained["run"][key]) for key in ("started_at", "finished_at")
    )
    assert 0 < result["train_seconds"] <= (finished - started).total_seconds()
    assert trained["run"]["device"] == "cpu"  # the handler's device is the one stored
    assert result["corpus_chars"] == len(trained["corpus"])
    assert merges[: len(result["first_merges"])] == result["first_merges"]
    progress = [e["data"]["pct"] for e in trained["events"] if e["event"] == "progress"]
    assert progress == sorted(progress) and progress[-1] >= 95


def test_the_trained_tokenizer_downloads_as_a_hf_tokenizer_json(
    trained: dict, api: httpx.Client, tmp_path
) -> None:
    from learn.lab.bpe import BPETokenizer
    from learn.models import TrainedTokenizer

    tokenizer_id = trained["run"]["result"]["tokenizer_id"]
    response = api.get(f"/api/tokenizers/{tokenizer_id}/tokenizer.json")
    assert response.status_code == 200
    assert "docs-700.tokenizer.json" in response.headers["content-disposition"]
    path = tmp_path / "tokenizer.json"
    path.write_bytes(response.content)
    theirs = Tokenizer.from_file(str(path))
    ours = BPETokenizer.from_dict(TrainedTokenizer.objects.get(pk=tokenizer_id).data)
    assert theirs.encode(HELD_OUT).ids == ours.encode(HELD_OUT)
    assert ours.decode(ours.encode(HELD_OUT)) == HELD_OUT

    listed = api.get("/api/tokenizers").json()
    assert any(t["id"] == tokenizer_id and t["name"] == "docs-700" for t in listed)
    assert (
        api.get("/api/tokenizers/00000000-0000-0000-0000-000000000000/tokenizer.json").status_code
        == 404
    )


def test_the_builtin_corpus_trains_without_pasting(api: httpx.Client) -> None:
    run = finished_run(api, "bpe-train", {"builtin": "python-docs", "vocab_size": 300})
    result = run["result"]
    assert result["corpus_chars"] > 400_000 and result["merge_count"] == 44
    assert result["name"].startswith("bpe-300-gpt2-")
    assert run["params"]["builtin"] == "python-docs"


def test_an_uploaded_file_is_a_corpus_and_bad_files_are_refused(api: httpx.Client) -> None:
    def upload(data: bytes, **form: str) -> httpx.Response:
        fields = {"source": "pasted", "vocab_size": "260", "pretokenizer": "whitespace", **form}
        return api.post(
            "/api/playgrounds/bpe-train/runs",
            data=fields,
            files={"corpus_file": ("corpus.txt", data, "text/plain")},
        )

    response = upload(CLASSIC.encode())
    assert response.status_code == 202, response.text
    events = read_events(api, response.json()["id"])
    merges = [m for e in events if e["event"] == "partial" for m in e["data"]["merges"]]
    assert merges[0] == {"rank": 1, "pair": ["e", "r"], "token": "er", "count": 9}

    bad = upload(b"caf\xe9 latin-1")
    assert bad.status_code == 422
    assert "not UTF-8" in bad.json()["detail"][0]["message"]


@pytest.mark.parametrize(
    ("params", "field", "says"),
    [
        ({"corpus": "abc", "vocab_size": 100}, "vocab_size", "256"),
        ({"corpus": "abc", "vocab_size": 50_001}, "vocab_size", "50000"),
        # checks across fields (the model's validator) name the whole body
        ({"corpus": "   "}, "body", "empty"),
        ({}, "body", "either"),
        ({"corpus": "abc", "builtin": "python-docs"}, "body", "not both"),
        ({"corpus": "abc", "pretokenizer": "gpt5"}, "pretokenizer", "gpt2"),
        ({"corpus": "abc", "special_tokens": ["<s>", "<s>"]}, "body", "different"),
        ({"corpus": "x" * (20 * 1024 * 1024 + 1)}, "body", "20 MB"),
    ],
)
def test_bad_training_requests_get_a_422_and_queue_nothing(
    api: httpx.Client, services, params: dict, field: str, says: str
) -> None:
    from learn.models import Run

    before = Run.objects.count()
    response = api.post("/api/playgrounds/bpe-train/runs", json=params)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(d["field"] == field and says in d["message"] for d in detail), detail
    assert Run.objects.count() == before


def test_step_through_walks_the_classic_example(api: httpx.Client) -> None:
    from learn.lab.bpe import BPEConfig
    from learn.lab.bpe_train import naive_train

    steps = finished_run(api, "bpe-step", {"corpus": CLASSIC, "steps": 5})["result"]["steps"]
    assert (steps[0]["pair"], steps[0]["count"]) == (["e", "r"], 9)
    assert {"symbols": ["n", "e", "w", "er"], "count": 6} in steps[0]["words"]
    naive = naive_train(CLASSIC, BPEConfig(256 + 5, "whitespace"))
    assert [tuple(s["pair"]) for s in steps] == naive
    bad = api.post("/api/playgrounds/bpe-step/runs", json={"corpus": CLASSIC, "steps": 41})
    assert bad.status_code == 422


def test_tokenize_gives_the_ids_of_the_reference_tokenizers(
    trained: dict, api: httpx.Client
) -> None:
    from transformers import AutoTokenizer

    from learn.lab.models import minilm_path, smollm2_gguf

    tokenizer_id = trained["run"]["result"]["tokenizer_id"]
    params = {"text": HELD_OUT, "tokenizers": ["smollm2", "minilm", tokenizer_id]}
    rows = finished_run(api, "tokenize", params)["result"]["tokenizers"]
    ids = {row["name"]: [p[0] for p in row["pieces"]] for row in rows}
    gguf = smollm2_gguf()
    smollm2 = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    minilm = AutoTokenizer.from_pretrained(minilm_path())
    by_family = {row["family"]: row for row in rows}
    assert len(rows) == 3
    assert ids[rows[0]["name"]] == smollm2.encode(HELD_OUT, add_special_tokens=False)
    assert ids[rows[1]["name"]] == minilm.encode(HELD_OUT, add_special_tokens=False)
    ours = by_family["our BPE, 700 tokens"]
    assert ours["name"] == "docs-700"
    assert [p[0] for p in ours["pieces"]].count(0) == 1  # <|endoftext|>: special, id 0
    raw = HELD_OUT.encode()
    for row in rows:  # every piece's offsets point into the text, in characters and bytes
        assert all(0 <= p[2] <= p[3] <= len(HELD_OUT) for p in row["pieces"])
        for piece in row["pieces"]:
            assert raw[piece[5] : piece[6]].decode() == HELD_OUT[piece[2] : piece[3]]
        assert row["stats"]["tokens"] == len(row["pieces"])


def test_token_cost_does_the_arithmetic(api: httpx.Client) -> None:
    text = "the quick brown fox " * 50
    params = {
        "text": text,
        "tokenizers": ["smollm2"],
        "context_window": 1000,
        "price_per_million": 2.0,
    }
    row = finished_run(api, "token-cost", params)["result"]["tokenizers"][0]
    tokens = row["stats"]["tokens"]
    assert 150 <= tokens <= 260  # four words, four or five tokens, fifty times
    assert row["cost"]["window_share"] == pytest.approx(tokens / 1000)
    assert row["cost"]["price"] == pytest.approx(tokens * 2.0 / 1e6)
    assert row["cost"]["fits"] is True
    assert row["stats"]["tokens_per_word"] == pytest.approx(tokens / 200, abs=1e-3)


def test_a_shared_link_prefills_the_tokenize_form(trained: dict, api: httpx.Client) -> None:
    tokenizer_id = trained["run"]["result"]["tokenizer_id"]
    page = api.get(
        "/chapters/tokenization/",
        params={"text": "shared <text>", "tokenizers": "minilm", "trained": tokenizer_id},
    ).text
    assert "shared &lt;text&gt;</textarea>" in page
    assert 'value="minilm" checked' in page and 'value="smollm2">' in page
    assert f'value="{tokenizer_id}" selected' in page


def test_unknown_tokenizers_are_refused(api: httpx.Client) -> None:
    response = api.post(
        "/api/playgrounds/tokenize/runs", json={"text": "hi", "tokenizers": ["gpt-9"]}
    )
    assert response.status_code == 422
    assert "unknown tokenizer 'gpt-9'" in json.dumps(response.json())
