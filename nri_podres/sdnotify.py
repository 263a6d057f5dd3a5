"""The sd_notify protocol, spoken directly: one datagram of ``KEY=VALUE`` lines.

systemd names an ``AF_UNIX`` datagram socket in ``$NOTIFY_SOCKET``: a path
(``/run/systemd/notify``) or, with a leading ``@``, a Linux abstract address.
Each notification is one datagram; the kernel attaches our credentials, which is
how PID 1 knows the sender. Without the variable we are not supervised and every
call is a silent no-op (the :class:`NullNotifier`).

Notification is advisory: a send that fails returns ``False`` and never raises,
so the daemon cannot be brought down by its supervisor's socket.

The watchdog is pinged from the event loop at half the interval systemd asks for
(:func:`watchdog_interval_s`), so a wedged loop stops the pings and systemd
restarts us.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["NullNotifier", "Notifier", "watchdog_interval_s"]


def _address_from(value: str) -> str | bytes | None:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value, or None if unusable."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    return None  # vsock:… and relative names are not supported


def _one_line(text: str) -> str:
    """STATUS is a single line: newlines would start new assignments."""
    return " ".join(text.splitlines())


class Notifier:
    """Sends notifications to the supervisor's socket; every method returns success."""

    __slots__ = ("_address", "_sock")

    def __init__(self, address: str | bytes) -> None:
        self._address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier | NullNotifier:
        """A notifier for ``$NOTIFY_SOCKET``, or a do-nothing one when it is unset."""
        address = _address_from(environ.get("NOTIFY_SOCKET", ""))
        if address is None:
            return NullNotifier()
        return cls(address)

    def send(self, **assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram (keys as given, e.g. ``READY="1"``)."""
        payload = "".join(f"{key}={value}\n" for key, value in assignments.items())
        try:
            self._sock.sendto(payload.encode(), self._address)
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        """Startup (or reload) finished; ``status`` becomes ``systemctl status``'s line."""
        if status:
            return self.send(READY="1", STATUS=_one_line(status))
        return self.send(READY="1")

    def status(self, text: str) -> bool:
        """Replace the free-form status line."""
        return self.send(STATUS=_one_line(text))

    def watchdog(self) -> bool:
        """Tell the watchdog we are alive."""
        return self.send(WATCHDOG="1")

    def stopping(self) -> bool:
        """We began an orderly shutdown."""
        return self.send(STOPPING="1")

    def reloading(self, monotonic_usec: int) -> bool:
        """A reload began; ``monotonic_usec`` is ``CLOCK_MONOTONIC`` in microseconds."""
        return self.send(RELOADING="1", MONOTONIC_USEC=str(monotonic_usec))

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class NullNotifier:
    """Not supervised: every notification does nothing and reports ``False``."""

    __slots__ = ()

    def send(self, **assignments: str) -> bool:
        return False

    def ready(self, status: str = "") -> bool:
        return False

    def status(self, text: str) -> bool:
        return False

    def watchdog(self) -> bool:
        return False

    def stopping(self) -> bool:
        return False

    def reloading(self, monotonic_usec: int) -> bool:
        return False

    def close(self) -> None:
        pass

    def __enter__(self) -> NullNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        pass


def watchdog_interval_s(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``$WATCHDOG_USEC``), or None when off.

    The watchdog applies to us only when ``$WATCHDOG_PID`` is unset or names our
    process (``pid``, default ``os.getpid()``); a bad or non-positive value means off.
    """
    watchdog_pid = environ.get("WATCHDOG_PID")
    if watchdog_pid is not None:
        own_pid = os.getpid() if pid is None else pid
        if not watchdog_pid.strip().isdigit() or int(watchdog_pid) != own_pid:
            return None
    usec = environ.get("WATCHDOG_USEC", "").strip()
    if not usec.isdigit() or int(usec) == 0:
        return None
    return int(usec) / 1_000_000 / 2
