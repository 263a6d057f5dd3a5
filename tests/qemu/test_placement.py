"""NUMA placement proven on a real multi-node kernel: nri-podres in a 2-socket, 2-node guest.

The design's example pod scaled to the guest (a node = 2 cores x 2 threads):
a 4-CPU budget, a 2-CPU database on one whole core, two sidecars on the node's
other core, mems = that node. Placement is read from inside the running
containers (/proc/<pid>/status of their processes in the guest).
"""

from __future__ import annotations

import json
import time

import pytest

from nri_podres.cpuset import CPUSet, NodeSet
from tests.qemu.guest import FOUR_NODES_UNEVEN, TWO_NODES
from tests.qemu.runtime import MiB, ContainerSpec, GuestRuntime, PodOutcome, PodSpec

pytestmark = pytest.mark.qemu

BASE = '[cpu]\nreserved-cpus = ""\n[memory]\nreserved = {}\n'
SINGLE = '[topology]\npolicy = "single-numa-node"\n' + BASE
BEST_EFFORT = '[topology]\npolicy = "best-effort"\n' + BASE


def database_pod(name: str, budget: int = 4, database: int = 2) -> PodSpec:
    return PodSpec(name, cpu_millis=budget * 1000, memory_limit_bytes=256 * MiB, containers=(
        ContainerSpec("metrics-exporter"),
        ContainerSpec("backup-agent"),
        ContainerSpec.guaranteed("database", database * 1000, 128 * MiB),
    ))


def cores(runtime: GuestRuntime) -> list[CPUSet]:
    report = json.loads(runtime.nri_podres("topology", "--json").stdout)
    return [CPUSet.parse(c) for c in report["cores"]]


def assert_on_one_node(outcome: PodOutcome, runtime: GuestRuntime) -> int:
    """The example pod's shape: database on a whole core, sidecars on the other core, all one node."""
    assert outcome.admitted, f"{outcome.error}\n{runtime.plugin_log()[-3000:]}"
    # read again: the sidecars were shrunk when the database arrived after them
    outcome = runtime.placements(outcome)
    db, m, b = outcome["database"], outcome["metrics-exporter"], outcome["backup-agent"]
    assert db.cpus is not None and m.cpus is not None and b.cpus is not None
    assert db.cpus in cores(runtime), f"database on {db.cpus}, not a whole core"
    (node,) = [n for n in range(TWO_NODES.nodes) if db.cpus <= TWO_NODES.node_cpus(n)]
    assert m.cpus == b.cpus == TWO_NODES.node_cpus(node) - db.cpus
    assert db.mems == m.mems == b.mems == NodeSet([node])
    print(f"placed {outcome.spec.name}: database {db.cpus} mems {db.mems}; sidecars {m.cpus} mems {m.mems}")
    return node


def test_pods_fill_one_node_each_then_refusal_restarts_and_delete(guest_runtime: GuestRuntime) -> None:
    """Pod 1 on a node, pod 2 on the other, pod 3 refused (error through CRI); a plugin SIGKILL + restart
    and a containerd restart move nothing; deleting pod 1 lets the next pod take its node."""
    guest_runtime.start_plugin(SINGLE)
    first = guest_runtime.run_pod(database_pod("db-1"))
    node_1 = assert_on_one_node(first, guest_runtime)
    second = guest_runtime.run_pod(database_pod("db-2"))
    node_2 = assert_on_one_node(second, guest_runtime)
    assert {node_1, node_2} == {0, 1}

    third = guest_runtime.run_pod(database_pod("db-3"))
    assert not third.admitted
    assert "TopologyAffinityError" in (third.error or "")

    before = [guest_runtime.placements(p).containers for p in (first, second)]
    guest_runtime.kill_plugin()
    guest_runtime.restart_plugin()
    assert [guest_runtime.placements(p).containers for p in (first, second)] == before
    guest_runtime.restart_containerd()
    assert [guest_runtime.placements(p).containers for p in (first, second)] == before

    guest_runtime.remove_pod(first)
    # containerd 1.7 reports no removal of a pod it ran before its restart: the first try
    # is refused, the plugin resynchronizes, and the retry (the kubelet retries) fits.
    for attempt in range(1, 4):
        fourth = guest_runtime.run_pod(database_pod(f"db-4-{attempt}"))
        if fourth.admitted:
            break
        assert "TopologyAffinityError" in (fourth.error or "")
        time.sleep(2)
    assert '"resync_requested"' in guest_runtime.plugin_log() or attempt == 1
    assert assert_on_one_node(fourth, guest_runtime) == node_1


def test_best_effort_spans_both_nodes_when_one_is_too_small(guest_runtime: GuestRuntime) -> None:
    """A 6-CPU budget cannot fit a 4-CPU node: under best-effort it spans both, mems on both."""
    guest_runtime.start_plugin(BEST_EFFORT)
    wide = guest_runtime.run_pod(database_pod("wide", budget=6, database=4))
    assert wide.admitted, f"{wide.error}\n{guest_runtime.plugin_log()[-3000:]}"
    wide = guest_runtime.placements(wide)
    assert wide.cpus == wide["database"].cpus | wide["metrics-exporter"].cpus
    assert len(wide.cpus) == 6
    assert wide["database"].mems == wide["metrics-exporter"].mems == NodeSet([0, 1])
    assert wide["database"].cpus.isdisjoint(wide["metrics-exporter"].cpus)
    print(f"placed wide: database {wide['database'].cpus}, sidecars {wide['metrics-exporter'].cpus}, mems {wide['database'].mems}")


@pytest.mark.parametrize(("closest", "expected"), [(False, NodeSet([0, 1])), (True, NodeSet([0, 2]))])
def test_prefer_closest_numa_nodes_on_an_uneven_four_node_machine(guest_runtime_4: GuestRuntime, closest: bool, expected: NodeSet) -> None:
    """A 4-CPU pod needs two 2-CPU nodes: the kubelet's default picks {0,1}; with
    prefer-closest-numa-nodes the pair at distance 12, {0,2}, wins."""
    assert FOUR_NODES_UNEVEN.distance(0, 2) < FOUR_NODES_UNEVEN.distance(0, 1)
    config = f'[topology]\npolicy = "restricted"\nprefer-closest-numa-nodes = {str(closest).lower()}\n' + BASE
    guest_runtime_4.start_plugin(config)
    # 640Mi needs two 512Mi nodes for memory too, so two-node masks are the preferred hints of both
    # resources (with 128Mi the memory hint prefers one node and "restricted" refuses, as the kubelet does).
    pod = guest_runtime_4.run_pod(PodSpec("pair", cpu_millis=4000, memory_limit_bytes=640 * MiB, containers=(
        ContainerSpec.guaranteed("app", 2000, 64 * MiB), ContainerSpec("sidecar"),
    )))
    assert pod.admitted, f"{pod.error}\n{guest_runtime_4.plugin_log()[-3000:]}"
    pod = guest_runtime_4.placements(pod)
    nodes = NodeSet(n for n in range(FOUR_NODES_UNEVEN.nodes) if not pod.cpus.isdisjoint(FOUR_NODES_UNEVEN.node_cpus(n)))
    assert nodes == expected
    assert pod["app"].mems == expected
    print(f"placed pair (prefer-closest={closest}): app {pod['app'].cpus}, sidecar {pod['sidecar'].cpus}, mems {pod['app'].mems}")
