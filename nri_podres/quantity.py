"""Kubernetes resource quantities: ``"8Gi"``, ``"512Mi"``, ``"1G"``, ``"250m"``, ``"1e3"``.

``parse_quantity`` is exact (a ``Fraction``), so ``"0.1"`` stays one tenth;
``parse_bytes`` is the form sizes want: a non-negative whole number.
"""

from __future__ import annotations

import re
from fractions import Fraction

_BINARY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
_DECIMAL = {
    "m": Fraction(1, 1000),
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
}
_SUFFIXES = "|".join(sorted((*_BINARY, *_DECIMAL), key=len, reverse=True))
_PATTERN = re.compile(
    rf"(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))(?:(?P<suffix>{_SUFFIXES})|[eE](?P<exp>[+-]?\d+))?"
)


def parse_quantity(text: str | int) -> Fraction:
    """The value of a Kubernetes quantity; ValueError names the text it could not read."""
    if isinstance(text, bool):
        msg = f"invalid quantity {text!r}: expected a number or a string like '8Gi'"
        raise ValueError(msg)  # noqa: TRY004 - a bad value, not a programming error
    if isinstance(text, int):
        return Fraction(text)
    if not isinstance(text, str):
        msg = f"invalid quantity {text!r}: expected a number or a string like '8Gi'"
        raise ValueError(msg)  # noqa: TRY004 - a bad value, not a programming error
    match = _PATTERN.fullmatch(text.strip())
    if match is None:
        msg = f"invalid quantity {text!r}: expected a number with an optional suffix (Ki, Mi, Gi, Ti, k, M, G, T, m)"
        raise ValueError(msg)
    value = Fraction(match["number"])
    if match["exp"] is not None:
        return value * Fraction(10) ** int(match["exp"])
    suffix = match["suffix"] or ""
    return value * _BINARY.get(suffix, _DECIMAL.get(suffix, 1))


def parse_bytes(text: str | int) -> int:
    """A size in bytes: a quantity that is a whole, non-negative number."""
    value = parse_quantity(text)
    if value < 0 or value.denominator != 1:
        msg = f"invalid size {text!r}: must be a whole, non-negative number of bytes"
        raise ValueError(msg)
    return int(value)


def format_bytes(size_bytes: int) -> str:
    """The shortest exact binary-suffixed form: 8589934592 -> ``"8Gi"``, 1000 -> ``"1000"``."""
    for suffix, scale in sorted(_BINARY.items(), key=lambda kv: kv[1], reverse=True):
        if size_bytes and size_bytes % scale == 0:
            return f"{size_bytes // scale}{suffix}"
    return str(size_bytes)
