"""The PII redactor: its checks against published valid numbers and every single-digit
error, the labelled sample, and properties over generated text (offsets are right, and
nothing it caught survives redaction)."""

from __future__ import annotations

import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learn.lab import pii

# Published test card numbers (card networks' and payment processors' test sets).
VALID_CARDS = [
    "4111 1111 1111 1111",  # Visa
    "4242424242424242",  # Visa (Stripe)
    "5555-5555-5555-4444",  # Mastercard
    "3782 822463 10005",  # American Express, 4-6-5
    "3056 930902 5904",  # Diners Club, 4-6-4
    "6011 1111 1111 1117",  # Discover
    "4222222222222",  # Visa, 13 digits
]
# IBANs from the registry's and banks' published examples.
VALID_IBANS = [
    "GB82 WEST 1234 5698 7654 32",
    "DE89 3704 0044 0532 0130 00",
    "FR14 2004 1010 0505 0001 3M02 606",
    "NL91 ABNA 0417 1643 00",
    "BE68 5390 0754 7034",
    "NO93 8601 1117 947",
    "CH93 0076 2011 6238 5295 7",
]


def _luhn_digit(body: str) -> str:
    """The check digit that makes ``body + digit`` pass Luhn (computed the other way round:
    try all ten)."""
    return next(d for d in string.digits if pii.luhn_valid(body + d))


def _iban(country: str, bban: str) -> str:
    """A valid IBAN for ``bban``: check digits 98 - (number mod 97), ISO 13616."""
    moved = bban + country + "00"
    check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
    return f"{country}{check:02d}{bban}"


@pytest.mark.parametrize("number", VALID_CARDS)
def test_published_card_numbers_pass_luhn_and_every_single_digit_change_fails(number: str) -> None:
    assert pii.luhn_valid(number)
    digits = [c for c in number if c.isdigit()]
    for i, d in enumerate(digits):
        for other in string.digits.replace(d, ""):
            changed = "".join([*digits[:i], other, *digits[i + 1 :]])
            assert not pii.luhn_valid(changed), changed  # Luhn catches every single error


@pytest.mark.parametrize("iban", VALID_IBANS)
def test_published_ibans_pass_mod_97_and_changed_ones_fail(iban: str) -> None:
    assert pii.iban_valid(iban) and pii.iban_valid(iban.lower())
    compact = iban.replace(" ", "")
    for i in range(2, len(compact)):
        if compact[i].isdigit():
            for other in string.digits.replace(compact[i], ""):
                assert not pii.iban_valid(compact[:i] + other + compact[i + 1 :])
    assert not pii.iban_valid(compact + "0")  # the country's length is part of the check
    assert not pii.iban_valid("ZZ" + compact[2:])  # no such country


def test_the_sample_is_labelled_with_right_offsets_and_every_kind() -> None:
    samples = pii.sample()
    assert len(samples) >= 25
    kinds = set()
    for s in samples:
        for g in s["pii"]:
            assert s["text"][g["start"] : g["end"]] == g["value"]
            kinds.add(g["kind"])
    assert kinds == set(pii.KINDS)
    assert sum(not s["pii"] for s in samples) >= 8  # tricky negatives


def test_the_redactor_on_the_sample_catches_each_kind_and_says_what_it_missed() -> None:
    scored = pii.score(pii.sample())
    for kind in pii.KINDS:
        assert scored["per_kind"][kind]["recall"] >= 0.7, (kind, scored["per_kind"][kind])
    assert scored["overall"]["precision"] >= 0.85
    missed = [g for s in scored["samples"] for g in s["gold"] if g["status"] == "missed"]
    assert {"carol at example dot com"} <= {
        s["text"][g["start"] : g["end"]] for s in scored["samples"] for g in s["gold"]
        if g["status"] == "missed"
    }  # fmt: skip
    assert missed  # patterns do not see through obfuscation: the page must show that


def test_the_per_kind_numbers_are_the_spans_counted_again() -> None:
    scored = pii.score(pii.sample())
    for kind in pii.KINDS:
        gold = [g for s in scored["samples"] for g in s["gold"] if g["kind"] == kind]
        found = [f for s in scored["samples"] for f in s["found"] if f["kind"] == kind]
        counts = scored["per_kind"][kind]
        assert counts["caught"] == sum(g["status"] == "caught" for g in gold)
        assert counts["missed"] == sum(g["status"] == "missed" for g in gold)
        assert counts["false_positives"] == sum(f["status"] == "false_positive" for f in found)
        assert counts["caught"] == sum(f["status"] == "hit" for f in found)  # one to one
        hits = counts["caught"]
        assert counts["recall"] == pytest.approx(hits / len(gold))
        assert counts["precision"] == pytest.approx(hits / len(found))


@pytest.mark.parametrize(
    "text",
    [
        "The meeting moved from 2024-03-15 to 15.04.2024 at 10:30.",
        "Your order number 123-456-7890 has shipped.",
        "The card 4111 1111 1111 1112 was refused.",
        "The IBAN GB82 WEST 1234 5698 7654 33 bounced.",
        "Clone ssh://git@github.com/forward-pass/site.git now.",
        "Upgrade from v1.2.3; host 192.168.1.20; ISBN 978-0-306-40615-7.",
        "The town grew to 1,250,000 people, up 3.5 per cent since 2019.",
    ],
)
def test_look_alikes_are_left_alone(text: str) -> None:
    assert pii.find(text) == []
    assert pii.redact(text).text == text


def test_the_pieces_rebuild_the_text_and_mark_each_status() -> None:
    for s in pii.score(pii.sample())["samples"]:
        assert "".join(p["text"] for p in s["pieces"]) == s["text"]
        marked = {p["status"] for p in s["pieces"]} - {""}
        assert marked == {g["status"] for g in s["gold"]} | {
            f["status"] for f in s["found"] if f["status"] == "false_positive"
        }


filler = st.text(alphabet=string.ascii_letters + " ,;", max_size=30).map(lambda t: f" {t} ")


@st.composite
def personal(draw: st.DrawFn) -> tuple[str, str]:
    kind = draw(st.sampled_from(pii.KINDS))
    rng = random.Random(draw(st.integers(0, 2**32)))
    if kind == "email":
        user = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 10)))
        return kind, f"{user}.{rng.randint(1, 99)}@example{rng.randint(1, 9)}.org"
    if kind == "phone":
        return kind, f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}"
    if kind == "card":
        body = "4" + "".join(rng.choices(string.digits, k=14))
        digits = body + _luhn_digit(body)
        return kind, " ".join(digits[i : i + 4] for i in range(0, 16, 4))
    bban = "".join(rng.choices(string.ascii_uppercase, k=4)) + "".join(
        rng.choices(string.digits, k=14)
    )
    return kind, _iban("GB", bban)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(filler, personal()), min_size=1, max_size=6), filler)
def test_generated_pii_is_found_at_its_offsets_and_gone_after_redaction(
    parts: list[tuple[str, tuple[str, str]]], tail: str
) -> None:
    text, expected = "", []
    for before, (kind, value) in parts:
        text += before
        expected.append((kind, len(text), len(text) + len(value)))
        text += value
    text += tail
    found = pii.find(text)
    assert [(f.kind, f.start, f.end) for f in found] == expected
    for f in found:
        assert text[f.start : f.end] == f.value
    red = pii.redact(text)
    for f in found:
        assert f.value not in red.text
    assert sum(red.text.count(pii.PLACEHOLDER[k]) for k in pii.KINDS) == len(expected)
    assert red.counts() == {k: sum(e[0] == k for e in expected) for k in pii.KINDS}


def test_only_the_kinds_asked_for_are_redacted() -> None:
    text = "Mail ann@example.com or call +44 20 7946 0958."
    red = pii.redact(text, ["phone"])
    assert red.text == "Mail ann@example.com or call [PHONE]."
