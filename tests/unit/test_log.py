"""Logging formats; the journal sink is checked against a real datagram socket."""

from __future__ import annotations

import array
import io
import json
import logging
import os
import pty
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from nri_podres.errors import ConfigError
from nri_podres.log import (
    configure_logging,
    encode_native,
    field_name,
    message_id,
    resolve_format,
)
from tests.support import journal_entry, parse_native


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Each test configures logging from scratch and leaves no handler behind."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler).__name__ == "_StdlibBridge":
            root.removeHandler(handler)


@pytest.fixture
def journald(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket standing in for /run/systemd/journal/socket."""
    path = tmp_path / "journal.socket"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield str(path), sock
    sock.close()


def receive_entry(sock: socket.socket) -> dict[str, str]:
    return journal_entry(sock.recv(1 << 20))


def test_journal_entry_carries_bound_fields_upper_cased(journald) -> None:
    """Every bound field becomes a journal field next to MESSAGE, PRIORITY and the ids."""
    path, sock = journald
    assert configure_logging("journal", "info", journal_socket=path) == "journal"
    structlog.contextvars.bind_contextvars(pod_namespace="default")
    structlog.get_logger().info(
        "container_allocated",
        pod_name="db-0",
        container_name="database",
        cpus="2-7",
        mems="0",
        decision="exclusive",
        latency_ms=0.42,
    )
    entry = receive_entry(sock)
    assert entry["MESSAGE"] == (
        "container_allocated: pod_name=db-0 container_name=database "
        "cpus=2-7 mems=0 decision=exclusive latency_ms=0.42 pod_namespace=default"
    )
    assert entry["PRIORITY"] == "6"
    assert entry["SYSLOG_IDENTIFIER"] == "nri-podres"
    assert entry["MESSAGE_ID"] == message_id("container_allocated")
    assert {k: entry[k] for k in ("POD_NAMESPACE", "POD_NAME", "CONTAINER_NAME", "CPUS")} == {
        "POD_NAMESPACE": "default",
        "POD_NAME": "db-0",
        "CONTAINER_NAME": "database",
        "CPUS": "2-7",
    }
    assert (entry["MEMS"], entry["DECISION"], entry["LATENCY_MS"]) == ("0", "exclusive", "0.42")
    assert "TIMESTAMP" not in entry and "LEVEL" not in entry


@pytest.mark.parametrize(
    ("method", "priority"),
    [("debug", "7"), ("info", "6"), ("warning", "4"), ("error", "3"), ("critical", "2")],
)
def test_priority_follows_the_level(journald, method: str, priority: str) -> None:
    """The structlog level maps to the syslog priority journald filters on."""
    path, sock = journald
    configure_logging("journal", "debug", journal_socket=path)
    getattr(structlog.get_logger(), method)("something_happened")
    assert receive_entry(sock)["PRIORITY"] == priority


def test_message_id_is_a_stable_128_bit_id_per_event_name() -> None:
    """MESSAGE_ID is uuid5 of the event name in the project's namespace, so it never drifts."""
    assert message_id("container_allocated") == message_id("container_allocated")
    assert message_id("container_allocated") != message_id("container_rejected")
    assert len(message_id("x")) == 32 and int(message_id("x"), 16) >= 0
    # Pinned: a changed derivation would break saved journalctl queries.
    assert message_id("nri_registered") == "620dad0dbad054ec831a41dbfb8a70ac"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("pod_name", "POD_NAME"),
        ("cpu-set.v2", "CPU_SET_V2"),
        ("_pid", "PID"),
        ("9lives", "F_9LIVES"),
        ("message", "X_MESSAGE"),
        ("priority", "X_PRIORITY"),
        ("ünïcode", "N_CODE"),
        ("___", None),
        ("k" * 80, "K" * 64),
    ],
)
def test_field_names_are_sanitized(key: str, expected: str | None) -> None:
    """Keys become [A-Z0-9_] names that do not start with '_' or a digit, ≤ 64 chars."""
    assert field_name(key) == expected


def test_multi_line_values_use_the_length_prefixed_form(journald) -> None:
    """A value with newlines is sent as KEY\\n<u64 LE length><bytes>\\n, byte for byte."""
    path, sock = journald
    configure_logging("journal", "info", journal_socket=path)
    structlog.get_logger().warning("config_rejected", detail="line one\nline two\n")
    raw = sock.recv(1 << 20)
    value = b"line one\nline two\n"
    assert b"DETAIL\n" + struct.pack("<Q", len(value)) + value + b"\n" in raw
    entry = parse_native(raw)
    assert entry["DETAIL"] == value
    assert entry["MESSAGE"].startswith(b"config_rejected: detail=line one\nline two")


def test_traceback_is_one_multi_line_message(journald) -> None:
    """An exception is logged as one entry whose MESSAGE holds the traceback."""
    path, sock = journald
    configure_logging("journal", "info", journal_socket=path)
    try:
        raise ValueError("bad cpuset '3-1'")
    except ValueError:
        structlog.get_logger().exception("handler_failed", method="CreateContainer")
    entry = receive_entry(sock)
    first, *rest = entry["MESSAGE"].splitlines()
    assert first == "handler_failed: method=CreateContainer"
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: bad cpuset '3-1'"
    assert entry["PRIORITY"] == "3"


def test_oversized_entry_travels_in_a_sealed_memfd(journald) -> None:
    """An entry over the datagram limit arrives as an empty datagram carrying one memfd."""
    path, sock = journald
    configure_logging("journal", "info", journal_socket=path)
    big = "x" * 400_000
    structlog.get_logger().info("synchronized", containers=big)
    fds = array.array("i")
    data, ancdata, _, _ = sock.recvmsg(1 << 16, socket.CMSG_SPACE(fds.itemsize))
    assert data == b""
    level, kind, cmsg = ancdata[0]
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    fds.frombytes(cmsg[: fds.itemsize])
    with os.fdopen(fds[0], "rb") as memfd:
        memfd.seek(0)  # the sender's write left the shared file offset at the end
        entry = parse_native(memfd.read())
    assert entry["CONTAINERS"] == big.encode()
    assert entry["MESSAGE_ID"] == message_id("synchronized").encode()


def test_unreachable_journal_falls_back_to_json_on_stderr(tmp_path: Path) -> None:
    """When journald's socket is gone, the event is written as a JSON line instead."""
    fallback = io.StringIO()
    configure_logging("journal", "info", journal_socket=str(tmp_path / "none"), fallback=fallback)
    structlog.get_logger().info("pod_admitted", pod_name="web")
    line = json.loads(fallback.getvalue())
    assert (line["event"], line["pod_name"], line["level"]) == ("pod_admitted", "web", "info")


def test_json_lines_with_utc_timestamp_and_context() -> None:
    """The JSON format writes one object per line, with context variables merged in."""
    out = io.StringIO()
    assert configure_logging("json", "info", stream=out) == "json"
    structlog.contextvars.bind_contextvars(nri_event="CreateContainer")
    log = structlog.get_logger()
    log.debug("not_shown")
    log.info("container_allocated", cpus="0-3")
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["event"] == "container_allocated"
    assert (line["level"], line["cpus"], line["nri_event"]) == ("info", "0-3", "CreateContainer")
    assert line["timestamp"].endswith("Z")


def test_json_tracebacks_are_structured() -> None:
    """dict_tracebacks turns exc_info into a list of structured frames, not text."""
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    try:
        raise KeyError("pod")
    except KeyError:
        structlog.get_logger().exception("handler_failed")
    line = json.loads(out.getvalue())
    assert line["exception"][0]["exc_type"] == "KeyError"
    assert line["exception"][0]["frames"]


def test_stdlib_records_join_the_same_pipeline() -> None:
    """A foreign stdlib record (e.g. from asyncio) is rendered like our own events."""
    out = io.StringIO()
    configure_logging("json", "warning", stream=out)
    logging.getLogger("asyncio").warning("Executing %s took %.3f seconds", "task", 0.5)
    logging.getLogger("asyncio").info("hidden below the level")
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["event"] == "Executing task took 0.500 seconds"
    assert (line["logger"], line["level"]) == ("asyncio", "warning")


def test_foreign_records_in_the_journal_have_no_message_id(journald) -> None:
    """Free-text stdlib messages are not event names, so they get no MESSAGE_ID."""
    path, sock = journald
    configure_logging("journal", "info", journal_socket=path)
    logging.getLogger("asyncio").error("socket closed")
    entry = receive_entry(sock)
    assert entry["MESSAGE"] == "asyncio: socket closed"
    assert "MESSAGE_ID" not in entry and entry["PRIORITY"] == "3"


def test_auto_picks_journal_only_when_journal_stream_matches(journald, tmp_path: Path) -> None:
    """auto = journal iff $JOURNAL_STREAM is our stream's dev:inode and the socket exists."""
    path, _ = journald
    with open(tmp_path / "stdout", "w") as stream:
        st = os.fstat(stream.fileno())
        matching = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        other = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"}
        assert resolve_format("auto", stream, matching, path) == "journal"
        assert resolve_format("auto", stream, other, path) == "json"
        assert resolve_format("auto", stream, {}, path) == "json"
        assert resolve_format("auto", stream, matching, str(tmp_path / "none")) == "json"
        assert resolve_format("auto", stream, {"JOURNAL_STREAM": "garbage"}, path) == "json"


def test_auto_picks_console_on_a_terminal() -> None:
    """On a real TTY (a pty here) auto renders for humans."""
    controller, terminal = pty.openpty()
    try:
        with open(terminal, "w", closefd=False) as stream:
            assert resolve_format("auto", stream, {}) == "console"
            assert configure_logging("console", "info", stream=stream) == "console"
            structlog.get_logger().info("hello_operator", cpus="0-1")
        text = os.read(controller, 4096).decode()
        assert "hello_operator" in text and "cpus" in text
    finally:
        os.close(controller)
        os.close(terminal)


@pytest.mark.parametrize(("fmt", "level"), [("xml", "info"), ("json", "verbose")])
def test_bad_format_or_level_is_a_config_error(fmt: str, level: str) -> None:
    """Unknown values name the key and the value."""
    with pytest.raises(ConfigError, match=r"log\.(format|level)"):
        configure_logging(fmt, level, stream=io.StringIO())


def test_encode_native_round_trips_mixed_fields() -> None:
    """Plain and binary fields decode back to the same pairs."""
    fields = [("A", "1"), ("B", "two\nlines"), ("C", b"\x00bin\n")]
    assert parse_native(encode_native(fields)) == {"A": b"1", "B": b"two\nlines", "C": b"\x00bin\n"}


def test_without_memfd_an_oversized_entry_is_cut_and_says_so(journald, monkeypatch) -> None:
    """If no memfd can be made, values are truncated and the entry carries a note."""
    path, sock = journald

    def no_memfd(*_args: object) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "memfd_create", no_memfd)
    configure_logging("journal", "info", journal_socket=path)
    structlog.get_logger().info("synchronized", containers="x" * 400_000)
    entry = receive_entry(sock)
    assert entry["CONTAINERS"] == "x" * 2048
    assert "values cut to 2048" in entry["NRI_PODRES_TRUNCATED"]
