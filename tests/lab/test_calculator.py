"""The agent's calculator: Python's arithmetic on random expressions, and a refusal (with a
reason) for everything outside its allow-list or its bounds."""

from __future__ import annotations

import math
import random

import pytest

from learn.lab.calculator import (
    MAX_CHARS,
    MAX_DEPTH,
    CalculatorError,
    calculator,
    evaluate,
    format_number,
)
from learn.lab.units import UnitError, convert, unit_convert


def _expression(rng: random.Random, depth: int = 0) -> str:
    """A random arithmetic expression Python and the calculator both accept."""
    if depth >= 3 or rng.random() < 0.3:
        return rng.choice([str(rng.randint(0, 999)), f"{rng.uniform(0, 100):.3f}"])
    op = rng.choice(["+", "-", "*", "/", "//", "%", "**", "neg"])
    if op == "neg":
        return f"-({_expression(rng, depth + 1)})"
    if op == "**":
        return f"({_expression(rng, depth + 1)}) ** {rng.randint(0, 3)}"
    return f"({_expression(rng, depth + 1)}) {op} ({_expression(rng, depth + 1)})"


def test_it_agrees_with_python_arithmetic_on_random_expressions() -> None:
    rng = random.Random(12)
    compared = 0
    for _ in range(600):
        text = _expression(rng)
        try:
            expected = eval(text, {"__builtins__": {}}, {})  # the reference, on our own text
        except (ZeroDivisionError, OverflowError):
            with pytest.raises(CalculatorError):
                evaluate(text)
            continue
        if isinstance(expected, complex) or abs(expected) > 1e100:
            continue
        got = evaluate(text)
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-12), text
        assert type(got) is type(expected), text  # integers stay exact integers
        compared += 1
    assert compared > 450


def test_functions_and_constants_match_the_math_module() -> None:
    assert evaluate("sqrt(1764)") == 42
    assert evaluate("round(2.567, 2)") == 2.57
    assert evaluate("max(3, -1, 7) - min(4, 2)") == 5
    assert evaluate("abs(-2.5) * pi") == pytest.approx(2.5 * math.pi)
    assert evaluate("log(e ** 2)") == pytest.approx(2)
    assert calculator("347 * 29") == "10063"
    assert calculator("7 / 8") == "0.875"
    assert format_number(1 / 3) == "0.3333333333"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("__import__('os').system('ls')", "only these functions"),
        ("__import__", "unknown name"),
        ("(1).real", "attribute access"),
        ("().__class__.__bases__", "attribute access"),
        ("x + 1", "unknown name 'x'"),
        ("open('/etc/passwd')", "only these functions"),
        ("9**9**9", "exponents are limited"),
        ("10 ** 101", "would exceed"),
        ("2 ** 10000", "exponents are limited"),
        ("1e400", "not a finite number"),
        ("1e308 * 10", "exceeds"),
        ("10**99 * 10**99", "exceeds"),
        ("-" * 60 + "1", f"deeper than {MAX_DEPTH}"),
        ("-(" * 45 + "1" + ")" * 45, f"deeper than {MAX_DEPTH}"),
        ("1+" * 150 + "1", f"at most {MAX_CHARS}"),
        ("[1, 2]", "List is not allowed"),
        ("'a' * 3", "only numbers"),
        ("lambda: 0", "Lambda is not allowed"),
        ("1 if 1 else 2", "IfExp is not allowed"),
        ("2 ^ 3", "use ** for powers"),
        ("1 < 2", "Compare is not allowed"),
        ("1,000 * 2", "thousands separators"),
        ("7 // 0", "division by zero"),
        ("(-8) ** 0.5", "not a real number"),
        ("sqrt(-1)", "not a real number"),
        ("round(2.5, 100)", "digits"),
        ("sqrt(x=4)", "no keywords"),
        ("True + 1", "only numbers"),
        ("", "empty"),
        ("1 +", "not an arithmetic expression"),
        ("a\x00b", "not an arithmetic expression"),
    ],
)
def test_it_refuses_hostile_and_oversized_input_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(CalculatorError) as refused:
        evaluate(text)
    assert reason in str(refused.value), str(refused.value)


def test_unit_conversion_matches_the_definitions() -> None:
    assert convert("42 km to miles")[0] == pytest.approx(42_000 / 1609.344)
    assert convert("100 F to C") == (pytest.approx(37.7777778), "°C")
    assert convert("0 celsius to kelvin")[0] == pytest.approx(273.15)
    assert convert("5 feet in cm")[0] == pytest.approx(152.4)
    assert convert("1 GiB to MB")[0] == pytest.approx(1073.741824)
    assert unit_convert("2.5 litres to ml") == "2500 ml"
    for bad, reason in [
        ("5 km to kg", "cannot convert length"),
        ("10 parsecs to m", "unknown unit"),
        ("lots of metres", "<number> <unit> to <unit>"),
        ("1 km to " + "m" * 100, "at most"),
    ]:
        with pytest.raises(UnitError) as refused:
            convert(bad)
        assert reason in str(refused.value)
