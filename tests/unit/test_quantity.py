"""Kubernetes quantities as machine files and configuration write them."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nri_podres.quantity import format_bytes, parse_bytes, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8Gi", 8 << 30),
        ("512Mi", 512 << 20),
        ("1Ki", 1024),
        ("2Ti", 2 << 40),
        ("1G", 10**9),
        ("1k", 1000),
        ("3M", 3 * 10**6),
        ("4T", 4 * 10**12),
        ("250m", Fraction(1, 4)),
        ("1500m", Fraction(3, 2)),
        ("0.5", Fraction(1, 2)),
        ("1.5Gi", 3 << 29),
        ("1e3", 1000),
        ("42", 42),
        (" 7 ", 7),
        (64, 64),
    ],
)
def test_parse_quantity(text: str | int, value: Fraction | int) -> None:
    """Binary and decimal suffixes, milli, decimals, exponents and plain integers."""
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Gi", "8 Gi", "8GB", "1.2.3", "abc", "8gi", True, 1.5, None])
def test_bad_quantity_names_the_text(text: object) -> None:
    """Unreadable quantities raise ValueError quoting the text."""
    with pytest.raises(ValueError, match="invalid quantity") as info:
        parse_quantity(text)  # type: ignore[arg-type]
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("text", ["-1", "0.5", "100m"])
def test_bytes_must_be_whole_and_non_negative(text: str) -> None:
    """Sizes are whole, non-negative byte counts."""
    with pytest.raises(ValueError, match="invalid size"):
        parse_bytes(text)


@given(st.integers(0, 1 << 62))
def test_format_bytes_roundtrip(size: int) -> None:
    """format_bytes writes a quantity that parses back to the same size."""
    assert parse_bytes(format_bytes(size)) == size
