"""Metrics: names, types and labels as scraped over real HTTP from 127.0.0.1."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nri_podres.errors import ConfigError
from nri_podres.metrics import Metrics, MetricsServer, parse_address

SNAPSHOT = {
    "numa": {
        0: {
            "cpus": {"free": 10, "exclusive": 6, "pod-shared": 2, "node-shared": 14, "reserved": 2},
            "memory_bytes": {"charged": 16 << 30, "free": 48 << 30},
        },
        1: {
            "cpus": {"free": 24, "exclusive": 0, "pod-shared": 0, "node-shared": 24, "reserved": 0},
            "memory_bytes": {"charged": 0, "free": 64 << 30},
        },
    },
    "pods": 1,
    "exclusive_containers": 1,
}


@pytest.fixture
def served() -> Iterator[tuple[Metrics, MetricsServer]]:
    metrics = Metrics(version="9.9.9")
    server = metrics.serve("127.0.0.1:0")
    yield metrics, server
    server.close()


def scrape(server: MetricsServer) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """GET /metrics and index every sample as name -> sorted label items -> value."""
    with urllib.request.urlopen(f"http://{server.host}:{server.port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def types_of(metrics: Metrics) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(metrics.exposition().decode())}


def test_snapshot_becomes_per_numa_gauges(served) -> None:
    """CPU pools, free CPUs and memory appear per NUMA node, with base units."""
    metrics, server = served
    metrics.snapshot_from(lambda: SNAPSHOT)
    samples = scrape(server)
    pools = samples["nri_podres_pool_cpus"]
    assert pools[(("numa_node", "0"), ("pool", "exclusive"))] == 6
    assert pools[(("numa_node", "0"), ("pool", "pod_shared"))] == 2
    assert pools[(("numa_node", "1"), ("pool", "node_shared"))] == 24
    assert sum(v for k, v in pools.items() if ("numa_node", "0") in k) == 24
    assert samples["nri_podres_free_cpus"] == {(("numa_node", "0"),): 10, (("numa_node", "1"),): 24}
    assert samples["nri_podres_memory_charged_bytes"][(("numa_node", "0"),)] == 16 << 30
    assert samples["nri_podres_memory_free_bytes"][(("numa_node", "1"),)] == 64 << 30
    assert samples["nri_podres_pod_bubbles"] == {(): 1}
    assert samples["nri_podres_exclusive_containers"] == {(): 1}


def test_vanished_numa_nodes_stop_being_reported(served) -> None:
    """A new snapshot replaces the old one whole: no stale label sets remain."""
    metrics, server = served
    metrics.snapshot_from(lambda: SNAPSHOT)
    metrics.snapshot_from(lambda: {"numa": {1: {"cpus": {"free": 3}}}, "pods": 0})
    samples = scrape(server)
    assert samples["nri_podres_free_cpus"] == {(("numa_node", "1"),): 3}
    assert "nri_podres_pool_cpus" not in samples
    assert samples["nri_podres_pod_bubbles"] == {(): 0}


def test_snapshot_is_taken_at_scrape_time(served) -> None:
    """Each scrape reports what the source describes then: no publishing step to forget."""
    metrics, server = served
    free = {"numa": {0: {"cpus": {"free": 5}}}}
    metrics.snapshot_from(lambda: free)
    assert scrape(server)["nri_podres_free_cpus"] == {(("numa_node", "0"),): 5}
    free = {"numa": {0: {"cpus": {"free": 99}}}}
    assert scrape(server)["nri_podres_free_cpus"] == {(("numa_node", "0"),): 99}


def test_event_counters_and_latency_histogram(served) -> None:
    """Counters end in _total; request latency is a histogram in seconds by method."""
    metrics, server = served
    metrics.count_allocation()
    metrics.count_allocation()
    metrics.count_rejection("TopologyAffinityError")
    metrics.count_reconnect()
    metrics.set_connected(True)
    metrics.observe_request("CreateContainer", 0.003)
    with pytest.raises(RuntimeError), metrics.time_request("Synchronize"):
        raise RuntimeError("a failing handler is still timed")
    samples = scrape(server)
    assert samples["nri_podres_allocations_total"] == {(): 2}
    assert samples["nri_podres_rejections_total"] == {(("reason", "TopologyAffinityError"),): 1}
    assert samples["nri_podres_reconnects_total"] == {(): 1}
    assert samples["nri_podres_nri_connected"] == {(): 1}
    buckets = samples["nri_podres_nri_request_duration_seconds_bucket"]
    assert buckets[(("le", "0.0025"), ("method", "CreateContainer"))] == 0
    assert buckets[(("le", "0.005"), ("method", "CreateContainer"))] == 1
    assert buckets[(("le", "2.0"), ("method", "CreateContainer"))] == 1
    assert samples["nri_podres_nri_request_duration_seconds_count"][(("method", "Synchronize"),)] == 1


def test_types_prefix_and_build_info(served) -> None:
    """Every own metric has the prefix and the right type; build info carries the version."""
    metrics, server = served
    types = types_of(metrics)
    own = {name: kind for name, kind in types.items() if not name.startswith("process_")}
    assert all(name.startswith("nri_podres_") for name in own)
    assert own["nri_podres_allocations"] == "counter"
    assert own["nri_podres_nri_request_duration_seconds"] == "histogram"
    assert own["nri_podres_pool_cpus"] == "gauge"
    assert "process_resident_memory_bytes" in types
    (labels,) = scrape(server)["nri_podres_build_info"]
    assert dict(labels)["version"] == "9.9.9"


def test_no_created_series_and_no_per_container_labels(served) -> None:
    """The _created companions are dropped and no label can carry a pod's identity."""
    metrics, server = served
    metrics.snapshot_from(lambda: SNAPSHOT)
    metrics.count_rejection("EmptyPodSharedPoolError")
    samples = scrape(server)
    assert not [name for name in samples if name.endswith("_created")]
    label_names = {k for series in samples.values() for labels in series for k, _ in labels}
    assert label_names <= {"numa_node", "pool", "reason", "method", "le", "version", "python"}


def test_two_instances_do_not_share_state() -> None:
    """Each Metrics has a private registry: no process-global collisions."""
    first, second = Metrics(), Metrics()
    first.count_allocation()
    assert b"nri_podres_allocations_total 1.0" in first.exposition()
    assert b"nri_podres_allocations_total 0.0" in second.exposition()


@pytest.mark.parametrize(
    ("address", "expected"),
    [("127.0.0.1:9189", ("127.0.0.1", 9189)), ("[::1]:80", ("::1", 80)), ("localhost:0", ("localhost", 0))],
)
def test_parse_address(address: str, expected: tuple[str, int]) -> None:
    """host:port, with brackets for IPv6."""
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["9189", "127.0.0.1", ":9189", "::1:80", "host:99999", "host:port"])
def test_bad_address_is_a_config_error(address: str) -> None:
    """A malformed address names the config key."""
    with pytest.raises(ConfigError, match="metrics.address"):
        parse_address(address)


def test_busy_port_is_a_config_error(served) -> None:
    """Listening where someone already listens fails with a message, not a traceback."""
    _, server = served
    with pytest.raises(ConfigError, match="cannot listen"):
        Metrics().serve(f"127.0.0.1:{server.port}")
