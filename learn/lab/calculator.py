"""A calculator for model-written expressions: our own evaluator over Python's ``ast``.

A language model's output is untrusted text. ``eval`` on it would run anything Python can
(``__import__('os').system(...)``), and even pure arithmetic can hang a worker
(``9**9**9`` has about 370 million digits). So the expression is parsed, never run: the
tree is walked node by node, and only an allow-list is evaluated — numbers, ``+ - * / //
% **``, unary signs, parentheses and a few named functions. Everything else (names,
attribute access, calls of anything not listed, subscripts, strings, comprehensions,
lambdas) is refused with a sentence saying what was refused. Sizes are bounded before
they are computed: the input length, the tree's depth, exponents, and every intermediate
result's magnitude.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

MAX_CHARS = 200  # an expression a person would type, not a program
MAX_DEPTH = 40  # nested operations (each level is one recursion of the walk)
MAX_EXPONENT = 1_000  # |b| in a ** b
MAX_MAGNITUDE = 1e100  # any number, given or intermediate


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot evaluate; the message says why."""


Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_SYMBOL = {ast.BitXor: "^", ast.BitAnd: "&", ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>"}


def _round(x: Number, digits: Number = 0) -> Number:
    if not isinstance(digits, int) or not -20 <= digits <= 20:
        raise CalculatorError("round(x, n) takes a whole number of digits n from -20 to 20")
    return round(x, digits)


def _sqrt(x: Number) -> float:
    if x < 0:
        raise CalculatorError(f"sqrt of a negative number ({x}) is not a real number")
    return math.sqrt(x)


def _log(x: Number) -> float:
    if x <= 0:
        raise CalculatorError(f"log needs a positive number, not {x}")
    return math.log(x)


@dataclass(frozen=True)
class _Function:
    fn: Callable[..., Number]
    arity: tuple[int, ...]  # the numbers of arguments it accepts


FUNCTIONS: dict[str, _Function] = {
    "sqrt": _Function(_sqrt, (1,)),
    "abs": _Function(abs, (1,)),
    "round": _Function(_round, (1, 2)),
    "min": _Function(min, tuple(range(2, 9))),
    "max": _Function(max, tuple(range(2, 9))),
    "log": _Function(_log, (1,)),
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}


def _checked(x: Number) -> Number:
    """``x`` when it is a finite number within the bounds; refuse it otherwise."""
    if isinstance(x, float) and not math.isfinite(x):
        raise CalculatorError("the result is not a finite number")
    if abs(x) > MAX_MAGNITUDE:
        raise CalculatorError(f"a number in this calculation exceeds {MAX_MAGNITUDE:g}")
    return x


def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise CalculatorError(f"exponents are limited to ±{MAX_EXPONENT}; {exponent} is too large")
    if base == 0 and exponent < 0:
        raise CalculatorError("0 cannot be raised to a negative power (division by zero)")
    if abs(base) > 1 and abs(exponent) * math.log10(abs(base)) > math.log10(MAX_MAGNITUDE):
        raise CalculatorError(f"{base} ** {exponent} would exceed {MAX_MAGNITUDE:g}")
    result = base**exponent
    if isinstance(result, complex):
        raise CalculatorError("a negative number to a fractional power is not a real number")
    return result


def _eval(node: ast.AST, depth: int) -> Number:
    if depth > MAX_DEPTH:
        raise CalculatorError(f"the expression nests deeper than {MAX_DEPTH} levels")
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise CalculatorError(f"only numbers are allowed, not {node.value!r}")
        return _checked(node.value)
    if isinstance(node, ast.BinOp):
        op = type(node.op)
        if op not in _BINARY:
            symbol = _SYMBOL.get(op, op.__name__)  # type: ignore[call-overload]
            hint = " (use ** for powers)" if symbol == "^" else ""
            raise CalculatorError(f"the operator {symbol} is not allowed{hint}")
        left, right = _eval(node.left, depth + 1), _eval(node.right, depth + 1)
        if op is ast.Pow:
            return _checked(_power(left, right))
        if op in (ast.Div, ast.FloorDiv, ast.Mod) and right == 0:
            raise CalculatorError("division by zero")
        return _checked(_BINARY[op](left, right))
    if isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise CalculatorError(f"the operator {type(node.op).__name__} is not allowed")
        return _checked(_UNARY[type(node.op)](_eval(node.operand, depth + 1)))
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        raise CalculatorError(f"unknown name '{node.id}': only numbers, pi and e are allowed")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            allowed = ", ".join(FUNCTIONS)
            raise CalculatorError(f"only these functions may be called: {allowed}")
        if node.keywords:
            raise CalculatorError("functions take plain arguments, no keywords")
        fn = FUNCTIONS[node.func.id]
        if len(node.args) not in fn.arity:
            raise CalculatorError(f"{node.func.id} takes {'/'.join(map(str, fn.arity))} arguments")
        args = [_eval(a, depth + 1) for a in node.args]
        return _checked(fn.fn(*args))
    if isinstance(node, ast.Attribute):
        raise CalculatorError("attribute access (a.b) is not allowed")
    if isinstance(node, ast.Tuple):
        raise CalculatorError("write numbers without thousands separators (1000, not 1,000)")
    raise CalculatorError(f"{type(node).__name__} is not allowed in a calculation")


def evaluate(expression: str) -> Number:
    """The value of an arithmetic ``expression``; raises ``CalculatorError`` with a reason
    for anything outside the allow-list or the bounds. Never runs the text as code."""
    text = expression.strip().replace("×", "*").replace("÷", "/")
    if not text:
        raise CalculatorError("the expression is empty")
    if len(text) > MAX_CHARS:
        raise CalculatorError(f"the expression is {len(text)} characters; at most {MAX_CHARS}")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"not an arithmetic expression: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # e.g. a null byte, deep parens
        raise CalculatorError("not an arithmetic expression the calculator can read") from exc
    try:
        return _eval(tree.body, 0)
    except (OverflowError, ValueError) as exc:
        if isinstance(exc, CalculatorError):
            raise
        raise CalculatorError(f"cannot compute this: {exc}") from exc


def format_number(x: Number) -> str:
    """A result as the model should read it: integers exactly, floats to 10 significant
    digits without trailing zeros."""
    if isinstance(x, int):
        return str(x)
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.10g}"


def calculator(expression: str) -> str:
    """The tool: the formatted value of ``expression`` (errors raise ``CalculatorError``)."""
    return format_number(evaluate(expression))
