"""The forms offer exactly what the schemas accept and the lab can do: one list of names
(``learn.lab.facts``) feeds the checkboxes, the selects, the schemas and the lab."""

from __future__ import annotations

import re
from typing import get_args

import httpx

from learn.lab import facts


def _values(html: str, name: str) -> list[str]:
    return re.findall(rf'name="{name}" value="([^"]+)"', html)


def _checked(html: str, name: str) -> list[str]:
    return re.findall(rf'name="{name}" value="([^"]+)" checked', html)


def test_the_index_lab_offers_every_index_and_ticks_the_defaults(api: httpx.Client) -> None:
    from learn.playgrounds.vectors import IndexLabParams

    html = api.get("/chapters/vector-search/").text
    assert _values(html, "indexes") == list(get_args(facts.IndexName))
    assert sorted(_checked(html, "indexes")) == sorted(IndexLabParams().indexes)


def test_the_quantize_form_offers_every_variant_and_group_size(api: httpx.Client) -> None:
    from learn.playgrounds.inference import QuantizeParams

    html = api.get("/chapters/inference/").text
    assert _values(html, "variants") == list(get_args(facts.VariantName))
    assert _checked(html, "variants") == QuantizeParams().variants
    sizes = re.search(r'name="group_size">(.*?)</select>', html).group(1)
    assert re.findall(r"<option>(\d+)</option>", sizes) == [str(g) for g in facts.GROUP_SIZES]


def test_the_bpe_forms_offer_every_pretokenizer(api: httpx.Client) -> None:
    html = api.get("/chapters/tokenization/").text
    for select in re.findall(r'<select name="pretokenizer">(.*?)</select>', html, re.S):
        assert re.findall(r'value="(\w+)"', select) == list(get_args(facts.Pretokenizer))
