"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nri_podres.sdnotify import Notifier, NullNotifier, watchdog_interval_s


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket at a filesystem path, as systemd's /run/systemd/notify."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield str(path), sock
    sock.close()


def received(sock: socket.socket) -> dict[str, str]:
    """One datagram parsed into its assignments."""
    data = sock.recv(4096).decode()
    assert data.endswith("\n"), "every assignment ends with a newline"
    return dict(line.split("=", 1) for line in data.splitlines())


def test_ready_with_status_is_one_datagram(supervisor: tuple[str, socket.socket]) -> None:
    """ready() sends READY=1 and the status line together."""
    path, sock = supervisor
    with Notifier.from_environ({"NOTIFY_SOCKET": path}) as notifier:
        assert isinstance(notifier, Notifier)
        assert notifier.ready("synchronized: 3 pods") is True
    assert received(sock) == {"READY": "1", "STATUS": "synchronized: 3 pods"}


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda n: n.status("connected"), {"STATUS": "connected"}),
        (lambda n: n.status("two\nlines"), {"STATUS": "two lines"}),
        (lambda n: n.watchdog(), {"WATCHDOG": "1"}),
        (lambda n: n.stopping(), {"STOPPING": "1"}),
        (lambda n: n.ready(), {"READY": "1"}),
        (lambda n: n.reloading(12345), {"RELOADING": "1", "MONOTONIC_USEC": "12345"}),
    ],
    ids=["status", "status-one-line", "watchdog", "stopping", "ready-bare", "reloading"],
)
def test_each_notification_sends_its_assignments(supervisor, call, expected) -> None:
    """Each method maps to the documented sd_notify keys."""
    path, sock = supervisor
    with Notifier.from_environ({"NOTIFY_SOCKET": path}) as notifier:
        assert call(notifier) is True
    assert received(sock) == expected


def test_abstract_socket_address() -> None:
    """A leading '@' names a socket in the Linux abstract namespace."""
    name = f"nri-podres-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        with Notifier.from_environ({"NOTIFY_SOCKET": "@" + name}) as notifier:
            assert notifier.watchdog() is True
        assert received(sock) == {"WATCHDOG": "1"}
    finally:
        sock.close()


def test_sender_credentials_are_ours(supervisor: tuple[str, socket.socket]) -> None:
    """The kernel attaches our pid, which is how systemd attributes the message."""
    path, sock = supervisor
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    with Notifier.from_environ({"NOTIFY_SOCKET": path}) as notifier:
        notifier.ready()
    _, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    creds = [data for level, kind, data in ancdata if kind == socket.SCM_CREDENTIALS]
    assert int.from_bytes(creds[0][:4], "little") == os.getpid()


@pytest.mark.parametrize("environ", [{}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:9"}])
def test_unsupervised_is_a_silent_null_object(environ: dict[str, str]) -> None:
    """Without a usable NOTIFY_SOCKET every call does nothing and reports False."""
    notifier = Notifier.from_environ(environ)
    assert isinstance(notifier, NullNotifier)
    assert [notifier.ready("x"), notifier.status("x"), notifier.watchdog(), notifier.stopping()] == [
        False
    ] * 4


def test_send_failure_returns_false_instead_of_raising(tmp_path: Path) -> None:
    """A socket that vanished makes sends fail quietly."""
    with Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "gone")}) as notifier:
        assert notifier.ready("x") is False
        assert notifier.watchdog() is False


def test_full_receive_queue_does_not_block(supervisor: tuple[str, socket.socket]) -> None:
    """Sends are non-blocking: a supervisor that stopped reading cannot stall us."""
    path, _ = supervisor
    with Notifier.from_environ({"NOTIFY_SOCKET": path}) as notifier:
        results = [notifier.status("x" * 1000) for _ in range(5000)]
    assert results[0] is True
    assert results[-1] is False


@pytest.mark.parametrize(
    ("environ", "expected_s"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
    ids=["half-interval", "our-pid", "other-pid", "bad-pid", "zero", "garbage", "unset"],
)
def test_watchdog_interval(environ: dict[str, str], expected_s: float | None) -> None:
    """Ping at half of WATCHDOG_USEC, only when WATCHDOG_PID is unset or ours."""
    assert watchdog_interval_s(environ, pid=4242) == expected_s


def test_watchdog_pid_defaults_to_this_process() -> None:
    """Without an explicit pid, WATCHDOG_PID is compared with os.getpid()."""
    assert watchdog_interval_s({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}) == 1.0
