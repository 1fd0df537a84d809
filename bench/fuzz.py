"""Schemathesis against a running site: thousands of generated requests, no 5xx allowed.

    python bench/fuzz.py http://127.0.0.1:8000 [--examples 300] [--runs negative|all]
        [--key fp-…] [--seed 0]

Every operation of the site's own /api/openapi.json gets ``--examples`` cases in each
mode: positive (fits the schema) and negative (breaks it). Operations that start a run
(``POST …/runs``) get negative cases only unless ``--runs all``: positive ones would queue
real jobs (then mostly meet the rate limits and the in-flight cap, which is a test too);
any run a case did start is cancelled at the end. Prints the count of each status per
operation, every 5xx seen, and ends with ``RESULT {json}``. Exit status 1 on any 5xx.
Without a URL (as in `make bench`) it says how to run it and skips.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

POSITIVE, NEGATIVE = GenerationMode.POSITIVE, GenerationMode.NEGATIVE


@dataclass
class Tally:
    """What came back: statuses per operation, and each server error in full."""

    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # run ids a case created (to cancel)

    @property
    def cases(self) -> int:
        return sum(sum(c.values()) for c in self.statuses.values())

    def record(self, label: str, case: Any, response: Any) -> None:
        self.statuses.setdefault(label, Counter())[response.status_code] += 1
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except Exception as exc:  # a FailureGroup naming the check and the request
            self.errors.append(f"{label} → {response.status_code}: {exc}"[:2000])
        if response.status_code == 202:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.started.append(response.json()["id"])


def starts_runs(operation: Any) -> bool:
    return operation.method.upper() == "POST" and operation.path.endswith("/runs")


def only_negative_for_runs(operation: Any) -> list[GenerationMode]:
    return [NEGATIVE] if starts_runs(operation) else [POSITIVE, NEGATIVE]


def fuzz(
    base_url: str,
    *,
    examples: int,
    modes_of: Callable[[Any], list[GenerationMode]] = only_negative_for_runs,
    headers: dict[str, str] | None = None,
    seed: int | None = 0,
) -> Tally:
    """``examples`` cases per operation and mode, sent to ``base_url``; nothing raises."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json")
    session = requests.Session()
    tally = Tally()

    def cases_of(operation: Any, mode: GenerationMode) -> Callable[[], None]:
        label = f"{operation.method.upper()} {operation.path} {mode.value}"

        @hypothesis.settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=seed is not None,
            phases=[Phase.generate],  # no shrinking: every case counts once
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def send(case: Any) -> None:
            response = case.call(base_url=base_url, session=session, headers=headers)
            tally.record(label, case, response)

        return send

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in modes_of(operation):
            # nothing to break (no parameters, no body): no negative case exists
            with contextlib.suppress(hypothesis.errors.Unsatisfiable):
                cases_of(operation, mode)()
    for run_id in tally.started:
        session.post(f"{base_url}/api/runs/{run_id}/cancel", headers=headers, timeout=30)
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", nargs="?", default=os.environ.get("FP_FUZZ_URL", ""))
    parser.add_argument("--examples", type=int, default=300, help="per operation and mode")
    parser.add_argument("--runs", choices=["negative", "all"], default="negative")
    parser.add_argument("--key", default="", help="an API key: the runs are then its own")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.url:
        print("bench/fuzz.py needs a running site: python bench/fuzz.py http://127.0.0.1:8000")
        print("RESULT " + json.dumps({"bench": "fuzz", "skipped": "no site URL given"}))
        return 0
    base = args.url.rstrip("/")
    headers = {"Authorization": f"Bearer {args.key}"} if args.key else None
    modes_of = (lambda op: [POSITIVE, NEGATIVE]) if args.runs == "all" else only_negative_for_runs
    started = time.perf_counter()
    tally = fuzz(base, examples=args.examples, modes_of=modes_of, headers=headers, seed=args.seed)
    seconds = time.perf_counter() - started
    total: Counter[int] = Counter()
    for label, counts in sorted(tally.statuses.items()):
        total.update(counts)
        shown = "  ".join(f"{status}×{n}" for status, n in sorted(counts.items()))
        print(f"{label:<70} {shown}")
    for error in tally.errors:
        print(f"SERVER ERROR {error}", file=sys.stderr)
    counts = ", ".join(f"{status}×{n}" for status, n in sorted(total.items()))
    print(f"\n{tally.cases:,} cases in {seconds:.0f} s ({tally.cases / seconds:.0f}/s): {counts}")
    result = {
        "bench": "fuzz",
        "url": base,
        "cases": tally.cases,
        "seconds": round(seconds, 1),
        "statuses": {str(s): n for s, n in sorted(total.items())},
        "server_errors": len(tally.errors),
        "runs_started_and_cancelled": len(tally.started),
        "operations": len(tally.statuses),
    }
    print("RESULT " + json.dumps(result))
    return 1 if tally.errors else 0


if __name__ == "__main__":
    sys.exit(main())
