"""Finding and redacting personal data before text is indexed: emails, phone numbers,
payment card numbers and IBANs.

Each kind is a pattern that proposes candidates and a check that keeps the real ones:

- card numbers: 13 to 19 digits, in groups as cards print them (4-4-4-4, Amex 4-6-5,
  Diners 4-6-4, or one run), whose last digit is the Luhn check digit (ISO/IEC 7812);
- IBANs: a country code, two check digits and the account, as long as that country's
  IBANs are, whose mod-97 remainder is 1 (ISO 13616, the check every bank runs);
- emails: the usual ``local@domain.tld`` shape, except the user part of a URL
  (``ssh://git@host``, ``https://user@host``), which names an account, not a mailbox;
- phone numbers: ``+`` and a country code with 8 to 15 digits (E.164's limit), or a
  national number written in the common shapes (``(555) 123-4567``, ``555-123-4567``,
  ``020 7946 0958``, ``01 23 45 67 89``); dates, times, versions and national numbers
  labelled as orders, invoices, tickets or references are left alone.

Patterns are cheap and explainable; they also miss things ("alice at example dot com",
numbers spelled out) and take some look-alikes. :func:`score` measures both on labelled
samples, per kind. Offsets are Python string indices into the original text.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

KINDS = ("email", "phone", "card", "iban")
SAMPLE = Path(__file__).parent / "data" / "pii_samples.json"
PLACEHOLDER = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "iban": "[IBAN]"}

# IBAN length per country (ISO 13616 registry, SWIFT); a country not listed is not an IBAN.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SC": 31,
    "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


@dataclass(frozen=True)
class Found:
    """One piece of personal data: ``text[start:end]`` of the original text."""

    kind: str  # one of KINDS
    start: int
    end: int
    value: str


@dataclass
class Redaction:
    """The redacted text and what was taken out (offsets into the original)."""

    text: str
    found: list[Found]

    def counts(self) -> dict[str, int]:
        return {kind: sum(f.kind == kind for f in self.found) for kind in KINDS}


# --- checks ---------------------------------------------------------------------------


def luhn_valid(number: str) -> bool:
    """Whether the digits of ``number`` (separators ignored) end in a correct Luhn check
    digit: from the right, double every second digit, subtract 9 from doubles over 9;
    the sum must be a multiple of 10."""
    digits = [int(c) for c in number if c.isdigit()]
    if len(digits) < 2:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """Whether ``iban`` (spaces ignored, any case) is a well-formed IBAN: a known country,
    that country's length, and mod 97 = 1 once the first four characters are moved to
    the end and letters read as numbers (A = 10 … Z = 35)."""
    compact = iban.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]+", compact):
        return False
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


# --- finders --------------------------------------------------------------------------

_CARD = re.compile(r"(?<![\d+\w-])\d(?:[ -]?\d){12,18}(?![\d\w])")
_CARD_GROUPS = ((4, 4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 3), (4, 4, 4, 1), (4, 4, 5))
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){10,32}")
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w@-])"
)
_URL_USER = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/@]*$")  # "scheme://user" before "@"
_PHONE = re.compile(
    r"(?<![\w+/.:-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,8}(?:[ .-]\d{1,8}){0,5}"
    r"(?![\w/:-]|\.\d)"
)
_NANP = re.compile(r"(?:\+?1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[.-])\d{3}[.-]\d{4}")
_NATIONAL = re.compile(r"0\d{1,4}(?:[ .-]?\d{2,4}){2,4}")
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
_LABEL = re.compile(
    r"\b(?:order|invoice|ref(?:erence)?|ticket|case|tracking|account|id)(?:\s+(?:no\.?|number))?"
    r"[\s:#.]*$|#\s*$",
    re.IGNORECASE,
)


def _cards(text: str) -> Iterable[Found]:
    for m in _CARD.finditer(text):
        value = m.group()
        digits = re.sub(r"\D", "", value)
        groups = tuple(len(g) for g in re.split(r"[ -]", value))
        separators = set(re.findall(r"[ -]", value))
        grouped = len(groups) == 1 or (len(separators) == 1 and groups in _CARD_GROUPS)
        if 13 <= len(digits) <= 19 and grouped and luhn_valid(digits):
            yield Found("card", m.start(), m.end(), value)


def _ibans(text: str) -> Iterable[Found]:
    at = 0
    while m := _IBAN.search(text, at):
        at = m.start() + 1
        length = IBAN_LENGTHS.get(m.group()[:2])
        if length is None:
            continue
        # the pattern runs on into the next word; cut it at the country's length
        seen, end = 0, m.start()
        while end < m.end() and seen < length:
            seen += text[end] != " "
            end += 1
        value = text[m.start() : end]
        if seen == length and not text[end : end + 1].isalnum() and iban_valid(value):
            yield Found("iban", m.start(), end, value)
            at = end  # the next one may start right after (the pattern ran into it)


def _emails(text: str) -> Iterable[Found]:
    for m in _EMAIL.finditer(text):
        lo = max(0, m.start() - 300)  # a URL's start is near: look back a little only
        line_start = max(lo, *(text.rfind(c, lo, m.start()) + 1 for c in " \n\t<(\"'"))
        if _URL_USER.search(text[line_start : m.start()] + text[m.start() : m.end()].split("@")[0]):
            continue  # ssh://git@github.com: a URL's user, not a mailbox
        yield Found("email", m.start(), m.end(), m.group())


def _phone_shaped(value: str, before: str) -> bool:
    digits = re.sub(r"\D", "", value)
    if value.startswith("+"):  # a country code: a phone number whatever the label
        return 8 <= len(digits) <= 15
    if _DATE.fullmatch(value) or _LABEL.search(before[-32:]):
        return False
    if _NANP.fullmatch(value):
        return True
    return bool(_NATIONAL.fullmatch(value)) and 9 <= len(digits) <= 12


def _phones(text: str) -> Iterable[Found]:
    for m in _PHONE.finditer(text):
        value = m.group().rstrip(" .-")
        start = m.start()
        if _phone_shaped(value, text[max(0, start - 32) : start]):
            yield Found("phone", start, start + len(value), value)


# Earlier finders win overlaps: a checked number (card, IBAN) over a phone-shaped guess.
_FINDERS = (_ibans, _cards, _emails, _phones)


def find(text: str, kinds: Sequence[str] = KINDS) -> list[Found]:
    """The personal data in ``text`` of the given ``kinds``, in order, not overlapping."""
    taken: list[Found] = []  # sorted by start, never overlapping
    starts: list[int] = []
    for finder in _FINDERS:
        for f in finder(text):
            i = bisect_left(starts, f.start)
            free = (i == 0 or taken[i - 1].end <= f.start) and (
                i == len(taken) or f.end <= taken[i].start
            )
            if f.kind in kinds and free:
                taken.insert(i, f)
                starts.insert(i, f.start)
    return taken


def redact(text: str, kinds: Sequence[str] = KINDS) -> Redaction:
    """``text`` with each piece of personal data replaced by its placeholder
    (``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IBAN]``); the spans refer to the original."""
    found = find(text, kinds)
    parts, at = [], 0
    for f in found:
        parts += [text[at : f.start], PLACEHOLDER[f.kind]]
        at = f.end
    parts.append(text[at:])
    return Redaction("".join(parts), found)


# --- measuring ------------------------------------------------------------------------


@dataclass(frozen=True)
class Labelled:
    """A gold span: ``kind`` from KINDS, ``text[start:end]``."""

    kind: str
    start: int
    end: int


def match(gold: Sequence[Labelled], found: Sequence[Found]) -> list[tuple[int, int]]:
    """Pairs (gold index, found index) of the same kind whose spans overlap, each side
    used once (gold in order, each with the first free overlapping find)."""
    pairs: list[tuple[int, int]] = []
    used: set[int] = set()
    for gi, g in enumerate(gold):
        for fi, f in enumerate(found):
            if fi not in used and f.kind == g.kind and f.start < g.end and g.start < f.end:
                pairs.append((gi, fi))
                used.add(fi)
                break
    return pairs


def tally(gold: Sequence[Labelled], found: Sequence[Found]) -> dict[str, dict[str, int]]:
    """Per kind: ``caught`` (gold spans found), ``missed`` (gold spans not found) and
    ``false_positives`` (finds matching no gold span)."""
    pairs = match(gold, found)
    caught_gold = {gi for gi, _ in pairs}
    matched = {fi for _, fi in pairs}
    out = {kind: {"caught": 0, "missed": 0, "false_positives": 0} for kind in KINDS}
    for gi, g in enumerate(gold):
        out[g.kind]["caught" if gi in caught_gold else "missed"] += 1
    for fi, f in enumerate(found):
        if fi not in matched:
            out[f.kind]["false_positives"] += 1
    return out


def rates(counts: dict[str, int]) -> dict[str, float | None]:
    """Precision = caught / (caught + false positives); recall = caught / (caught + missed);
    None where there is nothing to divide by."""
    tp, fp, fn = counts["caught"], counts["false_positives"], counts["missed"]
    return {
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
    }


def sample() -> list[dict[str, Any]]:
    """The built-in labelled sample: ``[{"text", "note", "pii": [{"kind", "start", "end",
    "value"}]}]`` (``learn/lab/data/pii_samples.json``)."""
    return list(json.loads(SAMPLE.read_text(encoding="utf-8"))["samples"])


def pieces(
    text: str, gold: Sequence[Labelled], found: Sequence[Found], *, labelled: bool = True
) -> list[dict[str, Any]]:
    """``text`` cut at every span edge, for highlighting: each piece ``{"text", "kind",
    "status"}`` with status "caught" (labelled and found), "missed" (labelled only),
    "false_positive" (found, not labelled; "found" for a text with no labels at all,
    ``labelled=False``) or ""."""
    edges = sorted({0, len(text), *(x for s in [*gold, *found] for x in (s.start, s.end))})
    out: list[dict[str, Any]] = []
    for a, b in pairwise(edges):
        g = next((s for s in gold if s.start <= a < s.end), None)
        f = next((s for s in found if s.start <= a < s.end), None)
        if g and f:
            status = "caught" if g.kind == f.kind else "missed"
        elif g:
            status = "missed"
        elif f:
            status = "false_positive" if labelled else "found"
        else:
            status = ""
        kind = (g or f).kind if (g or f) else ""
        if out and out[-1]["status"] == status and out[-1]["kind"] == kind:
            out[-1]["text"] += text[a:b]
        else:
            out.append({"text": text[a:b], "kind": kind, "status": status})
    return out


def score(samples: Sequence[dict[str, Any]], kinds: Sequence[str] = KINDS) -> dict[str, Any]:
    """Run the redactor (for ``kinds``) on labelled samples (``{"text", "pii": [{"kind",
    "start", "end"}]}``) and add up, per kind and over all kinds, what it caught, missed and
    took by mistake, with precision and recall. Each sample comes back with its finds and
    gold spans, each marked ``status`` (caught / missed for gold, hit / false_positive for
    finds), and its text cut into highlighted ``pieces``."""
    per_kind = {kind: {"caught": 0, "missed": 0, "false_positives": 0} for kind in kinds}
    shown = []
    for item in samples:
        gold = [
            Labelled(g["kind"], g["start"], g["end"]) for g in item["pii"] if g["kind"] in kinds
        ]
        found = find(item["text"], kinds)
        for kind, counts in tally(gold, found).items():
            if kind in per_kind:
                for key, n in counts.items():
                    per_kind[kind][key] += n
        pairs = match(gold, found)
        caught, hit = {gi for gi, _ in pairs}, {fi for _, fi in pairs}
        shown.append(
            {
                "text": item["text"],
                "note": item.get("note", ""),
                "gold": [
                    {**asdict(g), "status": "caught" if i in caught else "missed"}
                    for i, g in enumerate(gold)
                ],
                "found": [
                    {**asdict(f), "status": "hit" if i in hit else "false_positive"}
                    for i, f in enumerate(found)
                ],
                "pieces": pieces(item["text"], gold, found),
            }
        )
    keys = ("caught", "missed", "false_positives")
    total = {key: sum(c[key] for c in per_kind.values()) for key in keys}
    return {
        "per_kind": {kind: {**c, **rates(c)} for kind, c in per_kind.items()},
        "overall": {**total, **rates(total)},
        "samples": shown,
    }
