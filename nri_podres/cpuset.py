"""Immutable sets of CPU ids and NUMA node ids, in the kernel's list format.

Backed by an ``int`` bitmask: union, intersection and difference are single
integer operations, which keeps the allocator fast on 4096-CPU machines.
``CPUSet`` and ``NodeSet`` are distinct types so that a type checker refuses
to mix CPU ids with node ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Self

_MAX_ID = 1 << 16  # far above any real machine; guards against "0-4294967295"


class _IdSet:
    """A frozen set of small non-negative integers."""

    __slots__ = ("_bits", "_text")
    _bits: int
    _text: str | None

    def __init__(self, ids: Iterable[int] = ()) -> None:
        bits = 0
        for i in ids:
            if not 0 <= i < _MAX_ID:
                msg = f"id {i} out of range 0..{_MAX_ID - 1}"
                raise ValueError(msg)
            bits |= 1 << i
        object.__setattr__(self, "_bits", bits)
        object.__setattr__(self, "_text", None)

    @classmethod
    def from_bits(cls, bits: int) -> Self:
        new = cls.__new__(cls)
        object.__setattr__(new, "_bits", bits)
        object.__setattr__(new, "_text", None)
        return new

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse ``"0-3,8,10-11"``; the empty string (or whitespace) is the empty set."""
        return cls.from_bits(_parse_bits(text))

    @property
    def bits(self) -> int:
        return self._bits

    def __setattr__(self, name: str, value: object) -> None:
        msg = f"{type(self).__name__} is immutable"
        raise AttributeError(msg)

    def __iter__(self) -> Iterator[int]:
        bits = self._bits
        while bits:
            low = bits & -bits
            yield low.bit_length() - 1
            bits ^= low

    def __len__(self) -> int:
        return self._bits.bit_count()

    def __bool__(self) -> bool:
        return self._bits != 0

    def __contains__(self, item: object) -> bool:
        return isinstance(item, int) and item >= 0 and bool(self._bits >> item & 1)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._bits == other._bits  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._bits))

    def _check(self, other: object) -> int:
        if type(other) is not type(self):
            msg = f"cannot combine {type(self).__name__} with {type(other).__name__}"
            raise TypeError(msg)
        return other._bits  # type: ignore[attr-defined,no-any-return]

    def __or__(self, other: Self) -> Self:
        return self.from_bits(self._bits | self._check(other))

    def __and__(self, other: Self) -> Self:
        return self.from_bits(self._bits & self._check(other))

    def __sub__(self, other: Self) -> Self:
        return self.from_bits(self._bits & ~self._check(other))

    def __xor__(self, other: Self) -> Self:
        return self.from_bits(self._bits ^ self._check(other))

    def __le__(self, other: Self) -> bool:
        return self._bits & ~self._check(other) == 0

    def __ge__(self, other: Self) -> bool:
        return self._check(other) & ~self._bits == 0

    def __lt__(self, other: Self) -> bool:
        return self <= other and self._bits != other._bits

    def __gt__(self, other: Self) -> bool:
        return self >= other and self._bits != other._bits

    def isdisjoint(self, other: Self) -> bool:
        return self._bits & self._check(other) == 0

    def min(self) -> int:
        if not self._bits:
            msg = f"min() of an empty {type(self).__name__}"
            raise ValueError(msg)
        return (self._bits & -self._bits).bit_length() - 1

    def max(self) -> int:
        if not self._bits:
            msg = f"max() of an empty {type(self).__name__}"
            raise ValueError(msg)
        return self._bits.bit_length() - 1

    def take_first(self, n: int) -> Self:
        """The ``n`` lowest ids (all of them if there are fewer)."""
        out = 0
        bits = self._bits
        for _ in range(n):
            if not bits:
                break
            low = bits & -bits
            out |= low
            bits ^= low
        return self.from_bits(out)

    def __str__(self) -> str:
        if self._text is None:
            text = _format_bits(self._bits)
            object.__setattr__(self, "_text", text)
            return text
        return self._text

    def __repr__(self) -> str:
        return f"{type(self).__name__}.parse({str(self)!r})"


@lru_cache(maxsize=1024)  # the sets in use at once: bubbles, slices, pools
def _format_bits(bits: int) -> str:
    """The list form; cached by value, not only per object: a fragmented 768-CPU set takes
    a third of a millisecond to format, and each decision computes the node pool afresh
    (a new object with the same bits) for its reply."""
    return ",".join(f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in _runs(bits))


@lru_cache(maxsize=8192)
def _parse_bits(text: str) -> int:
    """The bitmask of a list; cached because the runtime repeats the same lists (Synchronize)."""
    bits = 0
    text = text.strip()
    if not text:
        return 0
    for part in text.split(","):
        lo, hi = _parse_range(part.strip(), text)
        bits |= ((1 << (hi - lo + 1)) - 1) << lo
    return bits


def _parse_range(part: str, whole: str) -> tuple[int, int]:
    lo_text, sep, hi_text = part.partition("-")
    try:
        lo = int(lo_text)
        hi = int(hi_text) if sep else lo
    except ValueError:
        msg = f"invalid CPU/node list {whole!r}: bad element {part!r}"
        raise ValueError(msg) from None
    if lo < 0 or hi < lo or hi >= _MAX_ID:
        msg = f"invalid CPU/node list {whole!r}: bad range {part!r}"
        raise ValueError(msg)
    return lo, hi


def _runs(bits: int) -> Iterator[tuple[int, int]]:
    """Consecutive runs of set bits, as (first, last) pairs in ascending order."""
    pos = 0
    while bits:
        skip = (bits & -bits).bit_length() - 1
        bits >>= skip
        pos += skip
        length = (~bits & (bits + 1)).bit_length() - 1
        yield pos, pos + length - 1
        bits >>= length
        pos += length


class CPUSet(_IdSet):
    """A set of logical CPU ids."""

    __slots__ = ()


class NodeSet(_IdSet):
    """A set of NUMA node ids."""

    __slots__ = ()
