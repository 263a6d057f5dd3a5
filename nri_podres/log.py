"""Logging: structlog events rendered as JSON lines, for a console, or as journald entries.

:func:`configure_logging` runs once at start-up. Every format shares the processors
``merge_contextvars``, ``add_log_level`` and ``TimeStamper(fmt="iso", utc=True)``; then

- ``json``: ``dict_tracebacks`` + one JSON object per line on ``stream`` (stdout);
- ``console``: structlog's ``ConsoleRenderer`` (colours, pretty tracebacks);
- ``journal``: one entry per event sent with journald's *native protocol* to
  ``/run/systemd/journal/socket``, so every bound field becomes a journal field and
  ``journalctl -u nri-podres POD_NAME=web-0`` filters on it;
- ``auto``: ``journal`` when ``$JOURNAL_STREAM`` names the device and inode of our
  stdout or stderr (systemd connected it to the journal) and the socket exists;
  otherwise ``console`` on a TTY and ``json`` everywhere else.

A journal entry carries

- ``MESSAGE``: a one-line summary (``event: key=value ...``), followed by the
  traceback when there is one;
- ``PRIORITY``: the syslog level of the structlog level (debug 7, info 6, warning 4,
  error 3, critical 2);
- ``MESSAGE_ID``: :func:`message_id` of the event name: the UUID version 5 (SHA-1
  name-based) of the event name in the namespace ``uuid5(NAMESPACE_URL, "nri-podres")``,
  as 32 hex digits. It is the same on every host and release, so one kind of event can
  be found across restarts: ``journalctl MESSAGE_ID=$(python3 -c 'import uuid;
  print(uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, "nri-podres"), "container_allocated").hex)')``;
- ``SYSLOG_IDENTIFIER=nri-podres``;
- every other field, its key upper-cased and reduced to ``[A-Z0-9_]`` (no leading
  ``_``, which journald reserves for trusted fields; no leading digit; 64 characters
  at most): ``pod_name`` becomes ``POD_NAME``, ``latency_ms`` ``LATENCY_MS``.

Values with a newline use the binary length-prefixed form. An entry too large for
one datagram is passed as a sealed memfd, as journald documents; when that fails
too, values are cut and the entry says so. If journald cannot be reached the event
is written as a JSON line to ``fallback`` (stderr) instead: logging never raises.

Records from the standard ``logging`` module (asyncio, libraries) are routed into
the same pipeline, so each format has one output.
"""

from __future__ import annotations

import array
import errno
import fcntl
import json
import logging
import os
import re
import socket
import struct
import sys
import uuid
from collections.abc import Iterable, Mapping, MutableMapping
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

import structlog

from nri_podres.errors import ConfigError

__all__ = [
    "JOURNAL_SOCKET",
    "JournalLogger",
    "configure_logging",
    "encode_native",
    "journal_fields",
    "message_id",
    "resolve_format",
]

JOURNAL_SOCKET = "/run/systemd/journal/socket"
SYSLOG_IDENTIFIER = "nri-podres"
FORMATS = ("auto", "json", "console", "journal")
LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
PRIORITIES: Mapping[str, int] = {
    "debug": 7,
    "info": 6,
    "warning": 4,
    "warn": 4,
    "error": 3,
    "exception": 3,
    "critical": 2,
    "fatal": 2,
}
_MESSAGE_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "nri-podres")
_OWN_FIELDS = frozenset({"MESSAGE", "PRIORITY", "MESSAGE_ID", "SYSLOG_IDENTIFIER"})
_SKIPPED_KEYS = frozenset({"event", "level", "timestamp", "exception"})
_INVALID_KEY_CHARS = re.compile(r"[^A-Z0-9_]")
_MAX_KEY_CHARS = 64
_TRUNCATED_VALUE_BYTES = 2048


# --- the journal's native protocol (pure functions) -------------------------------------


@lru_cache(maxsize=1024)
def message_id(event: str) -> str:
    """The stable 128-bit MESSAGE_ID of an event name, as 32 lower-case hex digits."""
    return uuid.uuid5(_MESSAGE_ID_NAMESPACE, event).hex


@lru_cache(maxsize=1024)
def field_name(key: str) -> str | None:
    """A journal field name for a structlog key, or None if nothing usable is left."""
    name = _INVALID_KEY_CHARS.sub("_", key.upper()).lstrip("_")
    if not name:
        return None
    if name[0].isdigit():
        name = "F_" + name
    if name in _OWN_FIELDS:
        name = "X_" + name
    return name[:_MAX_KEY_CHARS]


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def _summary(event_dict: Mapping[str, Any]) -> str:
    """The human one-liner: ``event: key=value ...`` (foreign records: ``logger: text``)."""
    event = _text(event_dict.get("event", ""))
    pairs = " ".join(
        f"{key}={_text(value)}"
        for key, value in event_dict.items()
        if key not in _SKIPPED_KEYS and key != "logger"
    )
    head = f"{event_dict['logger']}: {event}" if "logger" in event_dict else event
    return f"{head}: {pairs}" if pairs else head


def journal_fields(event_dict: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The journal entry for one rendered structlog event, as ordered (name, value) pairs.

    Foreign stdlib records (they carry a ``logger`` key) get no MESSAGE_ID: their
    event is free text, not a stable name.
    """
    message = _summary(event_dict)
    if event_dict.get("exception"):
        message = f"{message}\n{_text(event_dict['exception']).rstrip()}"
    fields = [
        ("MESSAGE", message),
        ("PRIORITY", str(PRIORITIES.get(str(event_dict.get("level", "info")), 6))),
        ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER),
    ]
    if "logger" not in event_dict:
        fields.append(("MESSAGE_ID", message_id(_text(event_dict.get("event", "")))))
    for key, value in event_dict.items():
        name = field_name(key) if key not in _SKIPPED_KEYS else None
        if name is not None and value is not None:
            fields.append((name, _text(value)))
    return fields


def encode_native(fields: Iterable[tuple[str, str | bytes]]) -> bytes:
    """Serialize fields in journald's native format.

    ``KEY=value\\n`` when the value has no newline; otherwise ``KEY\\n``, the value's
    length as 64-bit little-endian, the raw bytes and ``\\n``.
    """
    out = bytearray()
    for name, value in fields:
        raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        key = name.encode("ascii")
        if b"\n" in raw:
            out += key + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n"
        else:
            out += key + b"=" + raw + b"\n"
    return bytes(out)


def _truncated(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    cut = [(name, value[:_TRUNCATED_VALUE_BYTES]) for name, value in fields]
    note = f"entry too large for the journal: values cut to {_TRUNCATED_VALUE_BYTES} characters"
    return [*cut, ("NRI_PODRES_TRUNCATED", note)]


# --- the sink ----------------------------------------------------------------------------


class JournalLogger:
    """A structlog logger whose messages are event dicts sent to journald's socket."""

    def __init__(self, socket_path: str = JOURNAL_SOCKET, fallback: TextIO | None = None) -> None:
        self._path = socket_path
        self._fallback = fallback
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    def msg(self, event_dict: MutableMapping[str, Any]) -> None:
        """Send one entry; on failure write it as a JSON line to the fallback stream."""
        fields = journal_fields(event_dict)
        if not self._send(fields):
            stream = self._fallback if self._fallback is not None else sys.stderr
            stream.write(json.dumps(dict(event_dict), default=str) + "\n")
            stream.flush()

    log = debug = info = warn = warning = error = err = critical = fatal = exception = msg

    def _send(self, fields: list[tuple[str, str]]) -> bool:
        payload = encode_native(fields)
        try:
            self._sock.sendto(payload, self._path)
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                return False
            return self._send_memfd(payload) or self._send_plain(encode_native(_truncated(fields)))
        return True

    def _send_plain(self, payload: bytes) -> bool:
        try:
            self._sock.sendto(payload, self._path)
        except OSError:
            return False
        return True

    def _send_memfd(self, payload: bytes) -> bool:
        """Pass a sealed memfd holding the entry, with an empty datagram."""
        try:
            fd = os.memfd_create("nri-podres-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        except OSError:
            return False
        try:
            os.write(fd, payload)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            self._sock.sendmsg([], rights, 0, self._path)
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def close(self) -> None:
        self._sock.close()


def _pass_event_dict(
    _logger: object, _method: str, event_dict: MutableMapping[str, Any]
) -> tuple[tuple[MutableMapping[str, Any]], dict[str, Any]]:
    """Final processor for the journal: hand the whole event dict to JournalLogger.msg."""
    return (event_dict,), {}


# --- configuration -----------------------------------------------------------------------


def _same_file(stream: TextIO, dev_inode: tuple[int, int]) -> bool:
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == dev_inode


def _journal_stream(environ: Mapping[str, str]) -> tuple[int, int] | None:
    dev, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and inode.isdigit()):
        return None
    return int(dev), int(inode)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError, AttributeError):
        return False


def resolve_format(
    fmt: str,
    stream: TextIO,
    environ: Mapping[str, str],
    journal_socket: str = JOURNAL_SOCKET,
) -> str:
    """The concrete format ``auto`` stands for here; other formats are returned as given."""
    if fmt not in FORMATS:
        raise ConfigError(f"log.format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    journal = _journal_stream(environ)
    if journal is not None and Path(journal_socket).is_socket():
        if any(_same_file(s, journal) for s in (stream, sys.stderr)):
            return "journal"
    return "console" if _is_tty(stream) else "json"


class _StdlibBridge(logging.Handler):
    """Routes records of the standard logging module into the structlog pipeline."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            structlog.get_logger().log(
                record.levelno, record.getMessage(), logger=record.name, exc_info=record.exc_info
            )
        except Exception:  # noqa: BLE001 - logging.Handler's contract: never raise
            self.handleError(record)


def _install_stdlib_bridge(level: int) -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StdlibBridge)]:
        root.removeHandler(handler)
    root.addHandler(_StdlibBridge())
    root.setLevel(level)


def configure_logging(
    fmt: str = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    journal_socket: str = JOURNAL_SOCKET,
    fallback: TextIO | None = None,
) -> str:
    """Configure structlog (and route stdlib logging into it); returns the format chosen.

    ``stream`` defaults to stdout, ``fallback`` (used when journald cannot be reached)
    to stderr, ``environ`` to ``os.environ``. Raises ConfigError for an unknown
    format or level.
    """
    stream = sys.stdout if stream is None else stream
    environ = os.environ if environ is None else environ
    if level.lower() not in LEVELS:
        raise ConfigError(f"log.level: {level!r} is not one of {', '.join(LEVELS)}")
    min_level = LEVELS[level.lower()]
    chosen = resolve_format(fmt, stream, environ, journal_socket)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    factory: Any
    if chosen == "journal":
        processors = [*shared, structlog.processors.format_exc_info, _pass_event_dict]
        sink = JournalLogger(journal_socket, fallback)
        factory = lambda *_args: sink  # noqa: E731 - one sink shared by every logger
    elif chosen == "console":
        processors = [*shared, structlog.dev.ConsoleRenderer()]
        factory = structlog.PrintLoggerFactory(file=stream)
    else:
        renderer = structlog.processors.JSONRenderer()
        processors = [*shared, structlog.processors.dict_tracebacks, renderer]
        factory = structlog.PrintLoggerFactory(file=stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    _install_stdlib_bridge(min_level)
    return chosen
