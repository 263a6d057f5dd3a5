"""Prometheus metrics on a private registry: state gauges from a snapshot, event counters.

Names start with ``nri_podres_``, use base units (bytes, seconds) and counters end in
``_total``. No label names a pod or container (identity belongs in the logs); the
only labels are bounded sets: ``numa_node``, ``pool``, ``reason``, ``method``.

State gauges are not mutated one by one: the daemon hands :meth:`Metrics.snapshot_from`
a function that builds a snapshot of its (immutable) allocation state, and a custom
collector calls it at scrape time, in the exporter's thread. A decision therefore
costs the metrics nothing, the values of one scrape are consistent with each other,
and NUMA nodes or pools that vanish simply stop being reported. The ``_created``
companion series are left out.

Exported series:

==========================================================  ========  ======================
name                                                        type      labels
==========================================================  ========  ======================
``nri_podres_pool_cpus``                                    gauge     numa_node, pool
``nri_podres_free_cpus``                                    gauge     numa_node
``nri_podres_memory_charged_bytes``                         gauge     numa_node
``nri_podres_memory_free_bytes``                            gauge     numa_node
``nri_podres_pod_bubbles``                                  gauge
``nri_podres_exclusive_containers``                         gauge
``nri_podres_nri_connected``                                gauge
``nri_podres_allocations_total``                            counter
``nri_podres_rejections_total``                             counter   reason
``nri_podres_reconnects_total``                             counter
``nri_podres_nri_request_duration_seconds``                 histogram method
``nri_podres_build_info``                                   gauge     version, python
``process_*``                                               (the client library's)
==========================================================  ========  ======================
"""

from __future__ import annotations

import platform
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    start_http_server,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from nri_podres import __version__
from nri_podres.errors import ConfigError

__all__ = ["DEFAULT_ADDRESS", "Metrics", "MetricsServer", "parse_address"]

DEFAULT_ADDRESS = "127.0.0.1:9189"
PREFIX = "nri_podres_"
# The runtime gives up on a request after 2 s by default: resolve well below that.
REQUEST_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _with_str_keys(value: Any) -> Any:
    """The snapshot with every mapping key a string (node ids may come as ints)."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _with_str_keys(v) for k, v in value.items()})
    return value


def _pool_label(kind: str) -> str:
    return kind.replace("-", "_")


class _StateCollector:
    """Renders a snapshot taken at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, Any]] = lambda: _EMPTY

    def describe(self) -> list[Metric]:
        return []  # do not collect at registration time

    def collect(self) -> Iterator[Metric]:
        snapshot = _with_str_keys(self.source())
        numa: Mapping[str, Any] = snapshot.get("numa", _EMPTY)
        pool = GaugeMetricFamily(
            PREFIX + "pool_cpus",
            "CPUs per NUMA node in each pool (exclusive, pod_shared, node_shared, reserved).",
            labels=["numa_node", "pool"],
        )
        free = GaugeMetricFamily(
            PREFIX + "free_cpus", "CPUs per NUMA node not allocated to anything.", labels=["numa_node"]
        )
        charged = GaugeMetricFamily(
            PREFIX + "memory_charged_bytes",
            "Memory per NUMA node charged to pods and containers.",
            labels=["numa_node"],
        )
        free_memory = GaugeMetricFamily(
            PREFIX + "memory_free_bytes",
            "Memory per NUMA node still available for charging.",
            labels=["numa_node"],
        )
        for node_id in sorted(numa, key=_node_order):
            node = numa[node_id]
            for kind, count in node.get("cpus", _EMPTY).items():
                if kind == "free":
                    free.add_metric([node_id], count)
                else:
                    pool.add_metric([node_id, _pool_label(kind)], count)
            memory = node.get("memory_bytes", _EMPTY)
            if "charged" in memory:
                charged.add_metric([node_id], memory["charged"])
            if "free" in memory:
                free_memory.add_metric([node_id], memory["free"])
        yield from (pool, free, charged, free_memory)
        yield GaugeMetricFamily(
            PREFIX + "pod_bubbles", "Pods holding a NUMA-aligned CPU bubble.", snapshot.get("pods", 0)
        )
        yield GaugeMetricFamily(
            PREFIX + "exclusive_containers",
            "Containers running on exclusive CPUs.",
            snapshot.get("exclusive_containers", 0),
        )


def _node_order(node_id: str) -> tuple[int, str]:
    return (int(node_id), "") if node_id.isdigit() else (1 << 30, node_id)


class _WithoutCreated:
    """Exposes a registry without the ``*_created`` series (no process-wide switch)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """A running HTTP exporter; ``close()`` stops it and frees the port."""

    host: str
    port: int
    _server: WSGIServer

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) into its parts; ConfigError if malformed."""
    match = re.fullmatch(r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<p6>\d+)|(?P<host>[^:\[\]]+):(?P<port>\d+)", address)
    if match is None:
        raise ConfigError(f"metrics.address: {address!r} is not host:port")
    host = match["v6"] or match["host"]
    port = int(match["p6"] or match["port"])
    if port > 65535:
        raise ConfigError(f"metrics.address: port {port} in {address!r} is out of range")
    return host, port


class Metrics:
    """Every metric the daemon exports, on its own registry."""

    def __init__(self, version: str = __version__) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self.registry = _WithoutCreated(self._registry)
        self._state = _StateCollector()
        self._registry.register(self._state)
        ProcessCollector(registry=self._registry)
        reg = self._registry
        self._allocations = Counter(
            PREFIX + "allocations", "Containers given a CPU/memory assignment.", registry=reg
        )
        self._rejections = Counter(
            PREFIX + "rejections", "Pods or containers refused, by reason.", ["reason"], registry=reg
        )
        self._reconnects = Counter(
            PREFIX + "reconnects", "Connections to the runtime's NRI socket re-established.", registry=reg
        )
        self._connected = Gauge(
            PREFIX + "nri_connected", "1 while registered with the runtime, else 0.", registry=reg
        )
        self._request_duration = Histogram(
            PREFIX + "nri_request_duration_seconds",
            "Time to answer an NRI request, by method.",
            ["method"],
            buckets=REQUEST_BUCKETS_S,
            registry=reg,
        )
        build = Gauge(
            PREFIX + "build_info", "Build information (value 1).", ["version", "python"], registry=reg
        )
        build.labels(version=version, python=platform.python_version()).set(1)

    # --- state ---------------------------------------------------------------------------

    def snapshot_from(self, source: Callable[[], Mapping[str, Any]]) -> None:
        """Report the allocation state that ``source()`` describes at each scrape.

        ``source`` runs in the exporter's thread: it must only read state that is never
        mutated in place (the daemon passes a reference read of its immutable ``State``).

        ``source()`` returns plain data::

            {
                "numa": {
                    node_id: {                       # int or str, e.g. 0
                        "cpus": {kind: count},       # kind: "free", "exclusive", "pod-shared",
                                                     #       "node-shared", "reserved"
                        "memory_bytes": {"charged": n, "free": n},
                    },
                },
                "pods": n,                           # pods holding a bubble
                "exclusive_containers": n,
            }

        Every key is optional. CPU kinds other than ``free`` become the ``pool`` label
        (``-`` written as ``_``) of ``nri_podres_pool_cpus``; the pools are meant to
        partition a node's CPUs, so ``sum by (numa_node)`` is its CPU count. ``free``
        goes to ``nri_podres_free_cpus``.
        """
        self._state.source = source

    # --- events --------------------------------------------------------------------------

    def count_allocation(self) -> None:
        self._allocations.inc()

    def count_rejection(self, reason: str) -> None:
        """``reason`` is the error's kind (e.g. ``TopologyAffinityError``), never an id."""
        self._rejections.labels(reason=reason).inc()

    def count_reconnect(self) -> None:
        self._reconnects.inc()

    def set_connected(self, connected: bool) -> None:
        self._connected.set(1 if connected else 0)

    def observe_request(self, method: str, duration_s: float) -> None:
        self._request_duration.labels(method=method).observe(duration_s)

    @contextmanager
    def time_request(self, method: str) -> Iterator[None]:
        """Observe the duration of the ``with`` body (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe_request(method, time.perf_counter() - start)

    # --- exposition ----------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The text format a scrape returns (for tests, or a textfile collector)."""
        return generate_latest(self.registry)  # type: ignore[arg-type]

    def serve(self, address: str = DEFAULT_ADDRESS) -> MetricsServer:
        """Start the HTTP exporter (``/metrics``) in a daemon thread; port 0 picks one."""
        host, port = parse_address(address)
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)  # type: ignore[arg-type]
        except OSError as exc:
            raise ConfigError(f"metrics.address: cannot listen on {address!r}: {exc.strerror}") from exc
        return MetricsServer(host=host, port=server.server_address[1], _server=server)

