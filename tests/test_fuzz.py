"""Schemathesis against the running stack's own /api/openapi.json: no input gives a 5xx.

Each operation gets positive and negative cases; each playground's schema is the body of
its own ``POST /api/playgrounds/<slug>/runs`` operation. Operations that start runs get
negative cases only (positive ones would queue real jobs on the worker the suite shares,
and the bounds allow jobs of minutes). So next to nothing is queued, which the test checks
by sending every case with an API key of its own and counting that key's runs afterwards:
a schema cannot say all a validator does (a text of 2,000 characters plus trailing spaces
breaks ``maxLength`` but is stripped to fit), so a rare negative case is a valid run; the
fuzzer cancels those. About 400 cases in under a minute; `bench/fuzz.py` runs 10,000+.
"""

from __future__ import annotations

import pytest

from bench.fuzz import fuzz

EXAMPLES = 12  # per operation and mode


@pytest.fixture(scope="module")
def fuzz_key(services) -> tuple[str, str]:
    from learn import services as actions

    key, plaintext = actions.create_api_key("fuzz", requests_per_minute=10_000)
    return f"key:{key.pk}", plaintext


def test_no_generated_request_gets_a_server_error(site: str, fuzz_key, services) -> None:
    from learn.models import Run

    owner, plaintext = fuzz_key
    tally = fuzz(site, examples=EXAMPLES, headers={"Authorization": f"Bearer {plaintext}"})
    assert not tally.errors, "\n\n".join(tally.errors[:5])
    runs = [label for label in tally.statuses if "/runs negative" in label]
    assert len(runs) >= 20  # every playground's operation was exercised
    assert tally.cases >= 400
    sent = sum(sum(tally.statuses[label].values()) for label in runs)
    refused = sum(n for label in runs for s, n in tally.statuses[label].items() if 400 <= s < 500)
    started = Run.objects.filter(owner=owner)
    assert sent - refused == len(tally.started) == started.count() <= sent // 100
    assert not any(run.is_active for run in started)  # the fuzzer cancelled what it started
