"""Unit conversion for the agent: "42 km to miles" → "26.09759 mi".

Each unit is a factor to its dimension's base unit (metre, kilogram, litre, second,
metre per second, square metre); temperatures, which have offsets, are converted through
kelvin. The input is parsed with one regular expression, never evaluated.
"""

from __future__ import annotations

import re

from learn.lab.calculator import format_number

MAX_CHARS = 80


class UnitError(ValueError):
    """A conversion the tool cannot read or do; the message says why."""


# name → (dimension, factor to the base unit); the first name of each unit is its symbol
_UNITS: list[tuple[tuple[str, ...], str, float]] = [
    (("mm", "millimetre", "millimeter"), "length", 1e-3),
    (("cm", "centimetre", "centimeter"), "length", 1e-2),
    (("m", "metre", "meter"), "length", 1.0),
    (("km", "kilometre", "kilometer"), "length", 1e3),
    (("in", "inch", "inches"), "length", 0.0254),
    (("ft", "foot", "feet"), "length", 0.3048),
    (("yd", "yard"), "length", 0.9144),
    (("mi", "mile"), "length", 1609.344),
    (("nmi", "nautical mile", "nautical miles"), "length", 1852.0),
    (("mg", "milligram"), "mass", 1e-6),
    (("g", "gram"), "mass", 1e-3),
    (("kg", "kilogram", "kilo"), "mass", 1.0),
    (("t", "tonne", "metric ton"), "mass", 1e3),
    (("oz", "ounce"), "mass", 0.028349523125),
    (("lb", "pound", "lbs"), "mass", 0.45359237),
    (("ml", "millilitre", "milliliter"), "volume", 1e-3),
    (("l", "litre", "liter"), "volume", 1.0),
    (("gal", "gallon", "us gallon"), "volume", 3.785411784),
    (("cup",), "volume", 0.2365882365),
    (("s", "sec", "second"), "time", 1.0),
    (("min", "minute"), "time", 60.0),
    (("h", "hr", "hour"), "time", 3600.0),
    (("day",), "time", 86400.0),
    (("week",), "time", 604800.0),
    (("m/s", "metre per second", "meter per second"), "speed", 1.0),
    (("km/h", "kph", "kmh", "kilometre per hour", "kilometer per hour"), "speed", 1 / 3.6),
    (("mph", "mile per hour"), "speed", 0.44704),
    (("kn", "knot"), "speed", 1852 / 3600),
    (("m2", "m²", "square metre", "square meter"), "area", 1.0),
    (("km2", "km²", "square kilometre", "square kilometer"), "area", 1e6),
    (("ha", "hectare"), "area", 1e4),
    (("acre",), "area", 4046.8564224),
    (("b", "byte"), "data", 1.0),
    (("kb", "kilobyte"), "data", 1e3),
    (("mb", "megabyte"), "data", 1e6),
    (("gb", "gigabyte"), "data", 1e9),
    (("kib", "kibibyte"), "data", 1024.0),
    (("mib", "mebibyte"), "data", 1024.0**2),
    (("gib", "gibibyte"), "data", 1024.0**3),
]
_TEMPERATURES = {  # name → (symbol, to kelvin, from kelvin)
    "c": "°C",
    "celsius": "°C",
    "°c": "°C",
    "f": "°F",
    "fahrenheit": "°F",
    "°f": "°F",
    "k": "K",
    "kelvin": "K",
}
_TO_KELVIN = {"°C": lambda x: x + 273.15, "°F": lambda x: (x - 32) * 5 / 9 + 273.15, "K": float}
_FROM_KELVIN = {
    "°C": lambda k: k - 273.15,
    "°F": lambda k: (k - 273.15) * 9 / 5 + 32,
    "K": float,
}

_SHOWN = {"b": "B", "kb": "kB", "mb": "MB", "gb": "GB", "kib": "KiB", "mib": "MiB", "gib": "GiB"}
LOOKUP: dict[str, tuple[str, str, float]] = {}  # name → (symbol, dimension, factor)
for _names, _dimension, _factor in _UNITS:
    _symbol = _SHOWN.get(_names[0], _names[0])
    for _name in _names:
        LOOKUP[_name] = (_symbol, _dimension, _factor)
        if len(_name) > 3 and not _name.endswith("s"):
            LOOKUP[_name + "s"] = (_symbol, _dimension, _factor)  # plurals

UNIT_WORDS = frozenset(  # every unit name of more than one letter, one word each
    word for name in [*LOOKUP, *_TEMPERATURES] for word in name.split() if len(word) > 1
)

_PATTERN = re.compile(
    r"^\s*(?P<value>[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?)\s*(?P<src>[^\d].*?)\s+(?:to|in|into|->)\s+"
    r"(?P<dst>.+?)\s*$",
    re.IGNORECASE,
)


def _unit(name: str) -> tuple[str, str, float] | str:
    """(symbol, dimension, factor) of a unit, or the temperature symbol it names."""
    key = " ".join(name.lower().replace("degrees ", "").replace("degree ", "").split())
    if key in _TEMPERATURES:
        return _TEMPERATURES[key]
    if key in LOOKUP:
        return LOOKUP[key]
    raise UnitError(f"unknown unit '{name}'")


def convert(query: str) -> tuple[float, str]:
    """The value and unit symbol of a conversion written as "<number> <unit> to <unit>"."""
    if len(query) > MAX_CHARS:
        raise UnitError(f"the conversion is {len(query)} characters; at most {MAX_CHARS}")
    found = _PATTERN.match(query.replace(",", ""))
    if not found:
        raise UnitError("write the conversion as '<number> <unit> to <unit>', e.g. '5 km to mi'")
    value = float(found["value"])
    src, dst = _unit(found["src"]), _unit(found["dst"])
    if isinstance(src, str) or isinstance(dst, str):
        if not (isinstance(src, str) and isinstance(dst, str)):
            raise UnitError(f"cannot convert {found['src']} to {found['dst']}")
        return _FROM_KELVIN[dst](_TO_KELVIN[src](value)), dst
    if src[1] != dst[1]:
        raise UnitError(f"cannot convert {src[1]} ({found['src']}) to {dst[1]} ({found['dst']})")
    return value * src[2] / dst[2], dst[0]


def regex_escape(text: str) -> str:
    """``text`` as a literal in a grammar engine's regular expression (Rust syntax, which
    rejects some of Python's ``re.escape`` escapes, e.g. of a space)."""
    return "".join("\\" + c if c in r"\.^$|?*+()[]{}-" else c for c in text)


NUMBER_PATTERN = r"-?[0-9]{1,9}(\.[0-9]{1,6})?"


def input_pattern() -> str:
    """The conversions this tool reads, as one regular expression over its input:
    ``<number> <unit> to <unit>`` with each unit one of the names it knows. Under
    constrained decoding a model can only write a unit the tool has."""
    scales = ("celsius", "fahrenheit", "Celsius", "Fahrenheit")
    temperatures = [f"{d} {n}" for d in ("degree", "degrees") for n in scales]
    names = {*LOOKUP, *_TEMPERATURES, *_SHOWN.values(), *temperatures, "C", "F", "K", "L"}
    capitalised = {n.capitalize() for n in names if n[:1].isalpha() and len(n) > 2}
    names = sorted(names | capitalised | {n.title() for n in temperatures})
    unit = "(" + "|".join(regex_escape(n) for n in names) + ")"
    return f"{NUMBER_PATTERN} {unit} to {unit}"


def unit_convert(query: str) -> str:
    """The tool: "42 km to mi" → "26.0975945 mi" (errors raise ``UnitError``)."""
    value, symbol = convert(query)
    return f"{format_number(round(value, 6))} {symbol}"
