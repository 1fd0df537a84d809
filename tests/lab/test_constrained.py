"""Grammar-constrained decoding (learn.lab.constrained) on SmolLM2-135M-Instruct."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import torch

from learn.lab.constrained import json_constraint
from learn.lab.decoding import generate
from learn.lab.json_schema import EXAMPLES, check_answer, schema_problem, size
from learn.lab.llama_gguf import chat_ids, load_smollm2

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
REVIEW = {
    "type": "object",
    "properties": {
        "product": {"type": "string", "maxLength": 24},
        "rating": {"enum": [1, 2, 3, 4, 5]},
        "verdict": {"type": "string", "enum": ["buy", "skip"]},
    },
    "required": ["product", "rating", "verdict"],
    "additionalProperties": False,
}
EVENT = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 24},
        "date": {"type": "string", "format": "date"},
        "place": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 16}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
    "required": ["title", "date", "place"],
    "additionalProperties": False,
}
CASES = [
    (PERSON, "Give me a fictional person as JSON."),
    (REVIEW, "Review a pair of headphones as JSON."),
    (EVENT, "Invent a concert as JSON with a date and a city."),
]


@pytest.fixture(scope="module")
def smollm2() -> tuple[Any, Any]:
    return load_smollm2("cpu")


@pytest.mark.parametrize("seed", [3, 11])
@pytest.mark.parametrize(("schema", "prompt"), CASES, ids=["person", "review", "event"])
def test_constrained_sampling_always_yields_schema_valid_json(
    smollm2: tuple[Any, Any], schema: dict[str, Any], prompt: str, seed: int
) -> None:
    model, tok = smollm2
    ids = chat_ids(tok, [{"role": "user", "content": prompt}])
    c = json_constraint(schema, tok)
    gen = generate(model, ids, 96, temperature=1.0, seed=seed, tokenizer=tok, constraint=c)
    assert gen.stop_reason == "grammar", gen.text
    jsonschema.validate(json.loads(gen.text), schema)  # raises if invalid
    assert c.steps == len(gen.tokens) and c.mask_ms > 0


def test_the_mask_allows_exactly_what_the_engine_accepts(smollm2: tuple[Any, Any]) -> None:
    """At every step of a constrained run, our unpacked bitmask equals the engine's
    one-byte-per-token mask, and single-token checks agree on a sample of both sides."""
    model, tok = smollm2
    ids = chat_ids(tok, [{"role": "user", "content": "Review a phone as JSON."}])
    c = json_constraint(REVIEW, tok)
    gen = generate(model, ids, 64, temperature=0.8, seed=5, tokenizer=tok, constraint=c)
    assert gen.stop_reason == "grammar"
    replay = json_constraint(REVIEW, tok)
    g = torch.Generator().manual_seed(0)
    for token in gen.tokens:
        ok = replay.allowed()  # (vocab,) bool
        bias = torch.frombuffer(bytearray(replay.matcher.compute_logit_bias()), dtype=torch.uint8)
        assert torch.equal(ok, bias[: ok.numel()] > 0)
        assert ok[token], "the sampled token was outside the mask"
        allowed = ok.nonzero().flatten()
        refused = (~ok).nonzero().flatten()
        for t in allowed[torch.randint(len(allowed), (20,), generator=g)].tolist():
            assert replay.matcher.validate_tokens([t]) == 1
        for t in refused[torch.randint(len(refused), (20,), generator=g)].tolist():
            assert replay.matcher.validate_tokens([t]) == 0
        replay.advance(token)
    assert replay.done and replay.accepting


def test_masked_logits_keep_allowed_values_and_forbid_the_rest(smollm2: tuple[Any, Any]) -> None:
    _, tok = smollm2
    c = json_constraint(PERSON, tok)
    logits = torch.randn(tok.get_vocab_size() + 64)  # an output layer padded past the vocab
    out = c.mask(logits)
    ok = c.allowed()
    assert torch.equal(out[: ok.numel()][ok], logits[: ok.numel()][ok])
    assert torch.isinf(out[: ok.numel()][~ok]).all() and torch.isinf(out[ok.numel() :]).all()
    assert ok[tok.token_to_id("{")] and ok.sum() < 100  # an object must open
    with pytest.raises(ValueError, match="rejected"):
        c.advance(tok.token_to_id("hello"))


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "strin"}, "Invalid type"),
        ({"type": "object", "properties": {"a": {"$ref": "#/nope"}}}, "does not exist"),
        ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
    ],
)
def test_a_schema_the_engine_rejects_raises_a_readable_value_error(
    smollm2: tuple[Any, Any], schema: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        json_constraint(schema, smollm2[1])


def test_size_counts_properties_over_all_levels_and_nesting_depth() -> None:
    assert size(PERSON) == (2, 1)
    assert size(EVENT) == (4, 2)  # title, date, place + city; place nests one level
    assert size(EXAMPLES["order"]["schema"]) == (4, 3)  # object > array > object
    assert size({"type": "string"}) == (0, 0)
    alternatives = {"anyOf": [PERSON, REVIEW]}  # alternatives add properties, not depth
    assert size(alternatives) == (5, 1)


def test_every_example_is_within_the_bounds_and_compiles() -> None:
    for key, example in EXAMPLES.items():
        assert schema_problem(example["schema"]) is None, key
    deep = {"type": "object", "properties": {"a": {"type": "array", "items": EVENT}}}
    assert "4 levels" in (schema_problem(deep) or "")
    wide = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(21)}}
    assert "21 properties" in (schema_problem(wide) or "")


@pytest.mark.parametrize(
    ("text", "parses", "valid", "buried", "error"),
    [
        ('{"name": "Ann", "age": 30}', True, True, False, ""),
        (' {"name": "Ann", "age": 30}\n', True, True, False, ""),
        ('{"name": "Ann", "age": "30"}', True, False, False, "at age: '30' is not of type"),
        ('{"name": "Ann"}', True, False, False, "'age' is a required property"),
        ('{"name": "Ann", "age": 30, "x": 1}', True, False, False, "Additional properties"),
        ('Here it is:\n```json\n{"name": "Ann", "age": 30}\n```', False, False, True, "not JSON"),
        ('{"name": "Ann", "age": 3', False, False, False, "not JSON"),
    ],
)
def test_check_answer_parses_validates_and_finds_buried_objects(
    text: str, parses: bool, valid: bool, buried: bool, error: str
) -> None:
    check = check_answer(text, PERSON)
    assert (check.parses, check.valid, check.buried) == (parses, valid, buried)
    assert error in check.error
    try:  # the reference: jsonschema on its own
        jsonschema.validate(json.loads(text), PERSON)
        reference = True
    except (ValueError, jsonschema.ValidationError):
        reference = False
    assert check.valid is reference


def test_a_date_format_is_checked_on_the_answer() -> None:
    schema = {"type": "string", "format": "date"}
    assert check_answer('"2025-06-30"', schema).valid
    assert not check_answer('"2025-13-45"', schema).valid
