"""CPUSet/NodeSet: the list format round-trips and the set algebra matches frozenset."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nri_podres.cpuset import CPUSet, NodeSet

ids = st.frozensets(st.integers(0, 1100), max_size=200)


@given(ids)
def test_text_roundtrip(members: frozenset[int]) -> None:
    """Formatting and re-parsing any CPU set yields the same set."""
    s = CPUSet(members)
    assert CPUSet.parse(str(s)) == s


@given(ids)
def test_iteration_sorted_and_len(members: frozenset[int]) -> None:
    """Iteration is ascending and len counts members, as for the frozenset."""
    s = CPUSet(members)
    assert list(s) == sorted(members)
    assert len(s) == len(members)
    assert bool(s) == bool(members)


@given(ids, ids)
def test_set_laws_match_frozenset(a: frozenset[int], b: frozenset[int]) -> None:
    """|, &, -, ^, <=, <, >= and isdisjoint agree with frozenset."""
    x, y = CPUSet(a), CPUSet(b)
    assert set(x | y) == a | b
    assert set(x & y) == a & b
    assert set(x - y) == a - b
    assert set(x ^ y) == a ^ b
    assert (x <= y) == (a <= b)
    assert (x < y) == (a < b)
    assert (x >= y) == (a >= b)
    assert x.isdisjoint(y) == a.isdisjoint(b)


@given(ids, st.integers(0, 300))
def test_take_first_min_max(members: frozenset[int], n: int) -> None:
    """take_first(n) is the n lowest ids; min and max are the extremes."""
    s = CPUSet(members)
    assert list(s.take_first(n)) == sorted(members)[:n]
    if members:
        assert (s.min(), s.max()) == (min(members), max(members))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        (" 0-3,8 ", [0, 1, 2, 3, 8]),
        ("5", [5]),
        ("0-1,1-2", [0, 1, 2]),
    ],
)
def test_parse_examples(text: str, expected: list[int]) -> None:
    """The kernel's list format, including overlaps and surrounding space."""
    assert list(CPUSet.parse(text)) == expected


@pytest.mark.parametrize("text", ["a", "3-1", "1,,2", "-1", "0-99999999"])
def test_parse_rejects_bad_text(text: str) -> None:
    """Malformed lists raise ValueError naming the list."""
    with pytest.raises(ValueError, match="invalid CPU/node list"):
        CPUSet.parse(text)


def test_cpu_and_node_sets_do_not_mix() -> None:
    """Combining a CPUSet with a NodeSet is a TypeError, and they are never equal."""
    with pytest.raises(TypeError):
        _ = CPUSet([1]) | NodeSet([1])  # type: ignore[operator]
    assert CPUSet([1]) != NodeSet([1])
