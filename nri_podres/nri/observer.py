"""Feeds transport events into the metrics and the systemd status line."""

from __future__ import annotations

from typing import Any


class MetricsObserver:
    def __init__(self, metrics: Any, notifier: Any) -> None:
        self._metrics = metrics
        self._notifier = notifier
        self._connections = 0

    def request_served(self, method: str, seconds: float, code: int) -> None:
        if self._metrics is not None:
            self._metrics.observe_request(method, seconds)

    def connected(self) -> None:
        self._connections += 1
        if self._metrics is not None:
            self._metrics.set_connected(True)
            if self._connections > 1:
                self._metrics.count_reconnect()

    def disconnected(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.set_connected(False)
        self._notifier.status(f"disconnected from the runtime: {reason}; reconnecting")
