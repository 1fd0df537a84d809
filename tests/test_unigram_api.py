"""Unigram vs BPE through the real worker: one small run, compared with the lab run here,
and the bounds that refuse a run before anything is queued."""

from __future__ import annotations

import pydoc_data.topics

import httpx
import pytest

from learn.lab.unigram import SENTENCES
from tests.support import finished_run

CORPUS = "\n\n".join(list(pydoc_data.topics.topics.values())[:12])[:20_000]


@pytest.fixture(scope="module")
def run(site: str) -> dict:
    params = {"corpus": CORPUS, "vocab_size": 400, "words": ["tokenization", "naïveté"]}
    with httpx.Client(base_url=site, timeout=60) as client:
        return finished_run(client, "unigram", params)


def test_both_tokenizers_train_on_the_text_and_match_the_lab(run: dict) -> None:
    from learn.lab.bpe import BPEConfig
    from learn.lab.bpe_train import train_bpe
    from learn.lab.unigram import UnigramConfig, train_unigram

    result = run["result"]
    assert run["status"] == "succeeded" and result["device"] == run["device"] == "cpu"
    rows = {row["key"]: row for row in result["tokenizers"]}
    assert list(rows) == ["bpe", "unigram", "sentencepiece", "minilm", "smollm2"]
    assert rows["bpe"]["vocab_size"] == rows["unigram"]["vocab_size"] == 400
    assert all(rows[k]["train_seconds"] > 0 for k in ("bpe", "unigram", "sentencepiece"))
    # the worker's tokenizers are the lab's: retrain here and split the same words
    model, _ = train_unigram(CORPUS, UnigramConfig(400))
    bpe = train_bpe(CORPUS, BPEConfig(400, "gpt2"))
    assert rows["unigram"]["splits"] == [model.tokens(w) for w in result["words"]]
    bpe_splits = [[p.token for p in bpe.encode_with_offsets(w)] for w in result["words"]]
    assert rows["bpe"]["splits"] == bpe_splits
    assert rows["unigram"]["stats"]["tokens"] == len(model.encode(CORPUS))
    assert "".join(rows["unigram"]["splits"][0]).replace("▁", "") == "tokenization"
    history = result["log_likelihood"]
    assert history[1] >= history[0]  # the first EM sweeps, before any pruning
    agreement = result["agreement"]
    assert 0 < agreement["jaccard"] <= agreement["ours_in_theirs"] <= 1


def test_one_sentence_in_ten_languages_costs_what_the_tokenizers_say(run: dict) -> None:
    from tokenizers import Tokenizer

    from learn.lab.models import minilm_tokenizer_file

    languages = run["result"]["languages"]
    assert [entry["language"] for entry in languages] == list(SENTENCES)
    minilm = Tokenizer.from_file(str(minilm_tokenizer_file()))
    minilm.no_padding()  # it ships padded to 128 for batches
    for entry in languages:
        encoded = minilm.encode(entry["text"], add_special_tokens=False)
        assert entry["counts"]["minilm"] == len(encoded.ids)
        assert entry["unknown"]["minilm"] == encoded.tokens.count("[UNK]")
        assert entry["unknown"]["unigram"] == 0  # byte fallback: nothing is lost
    english, hindi = languages[0], languages[[e["language"] for e in languages].index("Hindi")]
    assert set(english["ratio"].values()) == {1.0}
    # trained on English text, our tokenizers pay far more for Hindi (bytes, 3 per letter)
    assert hindi["counts"]["bpe"] > 2 * english["counts"]["bpe"]
    assert hindi["counts"]["unigram"] > 2 * english["counts"]["unigram"]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"corpus": CORPUS, "vocab_size": 399}, "greater than or equal to 400"),
        ({"corpus": CORPUS, "vocab_size": 4001}, "less than or equal to 4000"),
        ({"corpus": "too short to learn from"}, "at least 50 words"),
        ({"corpus": "word " * 60_001}, "at most 300,000"),
        ({"corpus": "a " * 60 + "x" * 1_001}, "break it into lines"),
        ({"corpus": CORPUS, "builtin": "python-docs"}, "not both"),
        ({"builtin": "python-docs", "words": ["two words"]}, "without spaces"),
        ({"builtin": "python-docs", "words": ["w"] * 9}, "at most 8"),
    ],
)
def test_bad_requests_get_a_422_and_queue_nothing(
    api: httpx.Client, services, params: dict, says: str
) -> None:
    from learn.models import Run

    before = Run.objects.count()
    response = api.post("/api/playgrounds/unigram/runs", json=params)
    assert response.status_code == 422, response.text
    assert says in response.text, response.text
    assert Run.objects.count() == before


def test_the_lesson_offers_the_playground_and_the_whole_word_unk(api: httpx.Client) -> None:
    page = api.get("/chapters/tokenization/").text
    assert (
        'id="pg-unigram"' in page
        and 'name="vocab_size" type="number" value="1000" min="400"' in page
    )
    assert "<em>whole word</em>" in page and "a character it has never seen" not in page


def test_the_form_refuses_bad_input_with_a_sentence(api: httpx.Client, services) -> None:
    from learn.models import Run

    before = Run.objects.count()
    htmx = {"HX-Request": "true"}
    short = api.post(
        "/api/playgrounds/unigram/runs",
        data={"source": "pasted", "corpus": "a few words", "vocab_size": "1000"},
        headers=htmx,
    )
    assert short.status_code == 422 and "at least 50 words" in short.text
    large = api.post(
        "/api/playgrounds/unigram/runs",
        data={"source": "builtin", "vocab_size": "5000", "words": "one, two"},
        headers=htmx,
    )
    assert large.status_code == 422 and "4000" in large.text
    assert Run.objects.count() == before
