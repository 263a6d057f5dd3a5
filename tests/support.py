"""Helpers more than one test tier needs."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI") == "true"
REPO = Path(__file__).resolve().parents[1]
# Real machines' sysfs trees (tarballs), kept beside the checkout unless named.
SYSFS_DUMPS = Path(os.environ.get("NRI_PODRES_FIXTURES", REPO.parent / "shared" / "fixtures")) / "sysfs"


def harness_unavailable(tier: str, reason: str) -> None:
    """Skip (developer machine) or fail (CI) a test whose harness cannot run."""
    if IN_CI:
        pytest.fail(f"{tier} unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"{tier} unavailable: {reason}")


def parse_native(payload: bytes) -> dict[str, bytes]:
    """Decode journald's native datagram format: ``KEY=value`` lines, or
    ``KEY\\n<u64 little-endian length><bytes>\\n`` for values with newlines."""
    fields: dict[str, bytes] = {}
    pos = 0
    while pos < len(payload):
        newline = payload.index(b"\n", pos)
        line = payload[pos:newline]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            pos = newline + 1
        else:
            key = line
            (size,) = struct.unpack_from("<Q", payload, newline + 1)
            start = newline + 1 + 8
            value = payload[start : start + size]
            assert payload[start + size : start + size + 1] == b"\n"
            pos = start + size + 1
        assert key.decode() not in fields, "no field is sent twice"
        fields[key.decode()] = value
    return fields


def journal_entry(payload: bytes) -> dict[str, str]:
    return {k: v.decode() for k, v in parse_native(payload).items()}
