"""The kubelet-verified cases (k8s-semantics §4.2 B1–B21, §4.3 P1–P18, KEP §1.13).

CPU ids are exact. Where the runtime cannot see what the kubelet sees — container
roles, and the whole pod spec at admission — the scenario is replayed as the
runtime sees it (containers created one at a time; a standard init container is
stopped before the next one is created) and the test says what differs.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from nri_podres.allocator import TakeOptions, allocate_cpus, take_packed
from nri_podres.config import Config, CPUConfig, TopologyConfig
from nri_podres.cpuset import CPUSet, NodeSet
from nri_podres.errors import AdmissionError
from nri_podres.placement import Context, check_smt
from nri_podres.resources import Pool
from nri_podres.state import State
from tests import topologies as t
from tests.topologies import GIB, Node, ctr_info, pod_info

C = CPUSet.parse


def config(reserved: str = "0", policy: str = "single-numa-node", scope: str = "pod",
           **cpu: bool) -> Config:
    return Config(topology=TopologyConfig(policy=policy, scope=scope),
                  cpu=CPUConfig(reserved_cpus=C(reserved), **cpu))


# --- §4.2 building blocks: single allocations ---------------------------------------

PACKED = [
    # id, topology, free, request, aligned NUMA nodes, uncore, expected
    ("B1", t.dual_socket_ht, "0-11", 2, None, False, "0,6"),
    ("B2", t.dual_socket_ht, "0-11", 2, "1", False, "1,7"),
    ("B3", t.dual_socket_ht, "0-11", 8, "0", False, "0-2,4,6-8,10"),
    ("B4", t.dual_socket_ht, "0-11", 8, "1", False, "0,1,3,5-7,9,11"),
    ("B5", t.single_socket_ht, "1-7", 1, None, False, "4"),
    ("B7", t.dual_socket_ht, "1,3-11", 6, None, False, "1,3,5,7,9,11"),
    ("B8", t.dual_socket_ht, "2-4,6-11", 6, None, False, "2-4,8-10"),
    ("B9", t.dual_socket_no_ht, "1,3-7", 4, None, False, "4-7"),
    ("B10", t.dual_socket_no_ht, "1,3,6,7", 4, None, False, "1,3,6,7"),
    ("B11", t.dual_socket_ht, "1,3-11", 8, None, False, "1,3-5,7,9-11"),
    ("B12", t.dual_socket_multi_numa_per_socket_ht, "2,11,21,22", 2, "0,2", False, "2,21"),
    ("B14", t.small_uncore_128, "2-63,66-127", 3, None, True, "2,3,66"),
    ("B15a", t.small_uncore_128, "2-63,65-127", 3, None, True, "2,65,66"),
    ("B15b", t.small_uncore_128, "2-63,65-127", 4, None, True, "4,5,68,69"),
    ("B15c", t.small_uncore_128, "2-63,65-127", 11, None, True, "2,4-7,65,66,68-71"),
    ("B16", t.small_uncore_128, "2-63,66-127", 2, None, True, "2,66"),
    ("B17", t.no_smt_uncore, "4-31", 5, None, True, "8-12"),
]


@pytest.mark.parametrize(("case", "machine", "free", "n", "numa", "uncore", "expected"), PACKED,
                         ids=[row[0] for row in PACKED])
def test_building_block(case, machine, free, n, numa, uncore, expected):  # type: ignore[no-untyped-def]
    topo = machine()
    aligned = topo.cpus_of_nodes(NodeSet.parse(numa)) if numa else None
    got = allocate_cpus(topo, C(free), n, aligned, TakeOptions(uncore=uncore))
    assert got == C(expected), case


def test_b6_full_pcpus_only_rejects_a_lone_thread() -> None:
    ctx = Context(t.single_socket_ht(), config(full_pcpus_only=True))
    with pytest.raises(AdmissionError, match="requested 1 cpus not multiple cpus per core = 2") as e:
        check_smt(ctx, State.empty(), 1)
    assert e.value.reason == "SMTAlignmentError"


def test_b13_full_pcpus_only_counts_physical_cpus() -> None:
    ctx = Context(t.dual_socket_ht(), config(reserved="1,6", full_pcpus_only=True))
    with pytest.raises(AdmissionError, match="available physical CPUs = 8, requested CPUs = 10"):
        check_smt(ctx, State.empty(), 10)


def test_b18_a_socket_worth_takes_the_whole_socket() -> None:
    topo = t.quad_socket_four_way_ht()
    got = take_packed(topo, topo.online - C("3-7,11"), 72)
    assert got == topo.sockets[0]


def test_b19_classic_init_slice_is_reused_after_it_ends() -> None:
    """Kubelet keeps the init's CPUs until removal and lets the app reuse them; we
    release them when the init container stops. The end state is the same."""
    node = Node(t.single_socket_ht(), config(reserved="", policy="none", scope="container"))
    pod = pod_info("p", 4000, 2 * GIB)
    node.run(pod)
    assert node.create(ctr_info(pod, "init", 4000, GIB)).cpus == C("0,1,4,5")
    assert policy_pool(node) == C("2,3,6,7")
    node.stop("init")
    assert node.create(ctr_info(pod, "app", 2000, GIB)).cpus == C("0,4")
    assert policy_pool(node) == C("1-3,5-7")


def test_b20_restartable_init_keeps_its_slice() -> None:
    node = Node(t.single_socket_ht(), config(reserved="", policy="none", scope="container"))
    pod = pod_info("p", 6000, 2 * GIB)
    node.run(pod)
    node.create(ctr_info(pod, "sidecar", 4000, GIB))
    node.create(ctr_info(pod, "app", 2000, GIB))
    assert policy_pool(node) == C("3,7")


def test_b21_uncore_keeps_both_slices_in_one_cache() -> None:
    topo = t.dual_socket_uncore_384()
    busy = topo.l3_groups[0] | topo.l3_groups[12] | C("0,1,96,97,192,193,288,289")
    first = take_packed(topo, topo.online - busy, 12, uncore=True)
    second = take_packed(topo, topo.online - busy - first, 2, uncore=True)
    assert first | second <= topo.l3_groups[1]


def policy_pool(node: Node) -> CPUSet:
    return Context(node.topo, node.cfg).node_pool(node.state)


# --- §4.3 pod-level scenarios on DualSocketHT, reserved {0}, single-numa-node --------


def dual() -> Node:
    return Node(t.dual_socket_ht(), config())


def test_p1_one_exclusive_container_leaves_the_pool_unused() -> None:
    node = dual()
    pod = pod_info("p", 2000)
    node.run(pod)
    assert node.bubble("p") == "2,8"
    assert node.create(ctr_info(pod, "c1", 1000)).cpus == C("2")
    assert policy_pool(node) == C("0,1,3-7,9-11")


def test_p2_one_cpu_pod_with_a_shared_container() -> None:
    node = dual()
    pod = pod_info("p", 1000)
    node.run(pod)
    assert node.create(ctr_info(pod, "sh")).cpus == C("6")
    assert policy_pool(node) == C("0-5,7-11")


def test_p3_exclusives_take_lone_threads_first() -> None:
    node = dual()
    pod = pod_info("p", 3000)
    node.run(pod)
    assert node.bubble("p") == "2,6,8"
    assert node.create(ctr_info(pod, "gu1", 1000)).cpus == C("6")
    assert node.create(ctr_info(pod, "gu2", 1000)).cpus == C("2")
    assert node.create(ctr_info(pod, "ngu")).cpus == C("8")
    assert policy_pool(node) == C("0,1,3-5,7,9-11")


def test_p4_init_slices_are_reused() -> None:
    node = dual()
    pod = pod_info("p", 2000)
    node.run(pod)
    assert node.create(ctr_info(pod, "i1", 1000)).cpus == C("2")
    node.stop("i1")
    assert node.create(ctr_info(pod, "i2", 1000)).cpus == C("2")
    node.stop("i2")
    assert node.create(ctr_info(pod, "g1", 1000)).cpus == C("2")
    assert node.create(ctr_info(pod, "g2", 1000)).cpus == C("8")


def test_p5_exclusive_sidecar_among_shared_inits() -> None:
    node = dual()
    pod = pod_info("p", 3000)
    node.run(pod)
    assert node.create(ctr_info(pod, "init1")).cpus == C("2,6,8")
    node.stop("init1")
    assert node.create(ctr_info(pod, "sidecar", 1000)).cpus == C("6")
    assert node.create(ctr_info(pod, "init3")).cpus == C("2,8")
    node.stop("init3")
    assert node.create(ctr_info(pod, "app-x", 1000)).cpus == C("2")
    assert node.create(ctr_info(pod, "app-sh")).cpus == C("8")
    assert policy_pool(node) == C("0,1,3-5,7,9-11")


def test_p6_shared_sidecar_shrinks_when_the_exclusive_app_arrives() -> None:
    """Kubelet gives the sidecar the final pool {2,8} at admission; we learn the app
    later, so the sidecar starts on {2,6,8} and is shrunk in the app's reply."""
    node = dual()
    pod = pod_info("p", 3000)
    node.run(pod)
    assert node.create(ctr_info(pod, "init1")).cpus == C("2,6,8")
    node.stop("init1")
    assert node.create(ctr_info(pod, "sidecar")).cpus == C("2,6,8")
    assert node.create(ctr_info(pod, "init3")).cpus == C("2,6,8")
    node.stop("init3")
    assert node.create(ctr_info(pod, "app-x", 1000)).cpus == C("6")
    assert node.changes[-1]["sidecar"].cpus == C("2,8")
    assert node.create(ctr_info(pod, "app-sh")).cpus == C("2,8")
    assert node.cpus("sidecar") == "2,8"


@pytest.mark.parametrize("topology_policy", ["best-effort", "restricted", "single-numa-node"])
def test_p7_no_room_for_the_shared_container(topology_policy: str) -> None:
    """Kubelet rejects at admission (TopologyAffinityError under restricted and
    single-numa-node); we only see the shared container when it is created."""
    node = Node(t.dual_socket_ht(), config(policy=topology_policy))
    pod = pod_info("p", 2000)
    node.run(pod)
    node.create(ctr_info(pod, "x1", 1000))
    node.create(ctr_info(pod, "x2", 1000))
    before = node.state
    with pytest.raises(AdmissionError) as e:
        node.create(ctr_info(pod, "sh"))
    assert e.value.reason == "EmptyPodSharedPoolError"
    assert node.state is before


def test_p8_burstable_pod_gets_nothing() -> None:
    node = dual()
    pod = pod_info("p", 2000, limit_millis=1000)
    node.run(pod)
    a = node.create(ctr_info(pod, "x1", 1000))
    assert a.pool is Pool.NODE_SHARED
    assert a.cpus == t.dual_socket_ht().online


# P9–P18: the kubelet's admission validation, replayed as creation sequences.
# Steps: "x<n>" exclusive, "sh" shared, "half" 500m/1000m; prefix "i:" = standard
# init (stopped before the next step), "a:" = restartable init (keeps running).
VALIDATION = [
    ("P9", 4, ["x2", "sh"], True),
    ("P10", 4, ["x2", "x2"], True),
    ("P11", 6, ["x3", "x2", "half", "sh"], True),
    ("P12", 5, ["x3", "x2", "sh"], False),
    ("P13", 2, ["i:x1", "a:x1", "sh"], True),
    ("P14", 2, ["i:x2", "x2"], True),
    ("P15", 2, ["a:x2", "i:sh"], False),
    ("P16", 2, ["i:sh", "a:x2"], True),
    ("P17", 2, ["a:x2", "a:sh"], False),
    ("P18", 2, ["a:x1", "x1"], True),
]


@pytest.mark.parametrize(("case", "budget", "steps", "valid"), VALIDATION,
                         ids=[row[0] for row in VALIDATION])
def test_validation_sequences(case: str, budget: int, steps: list[str], valid: bool) -> None:
    node = Node(t.dual_socket_ht(memory_bytes=64 * GIB), config(policy="best-effort"))
    pod = pod_info("p", budget * 1000, 8 * GIB)
    node.run(pod)
    try:
        for i, step in enumerate(steps):
            role, _, size = step.rpartition(":")
            name = f"c{i}"
            if size == "sh":
                node.create(ctr_info(pod, name))
            elif size == "half":
                node.create(ctr_info(pod, name, 500, GIB, limit_millis=1000))
            else:
                node.create(ctr_info(pod, name, int(size[1:]) * 1000, GIB))
            if role == "i":
                node.stop(name)
    except AdmissionError as e:
        assert not valid, f"{case}: {e}"
        assert e.reason == "EmptyPodSharedPoolError"
    else:
        assert valid, f"{case} should have been rejected"


# --- §1.13 KEP and tutorial examples --------------------------------------------------


def test_kep_pod_scope_shared_only() -> None:
    node = dual()
    pod = pod_info("p", 4000, 4 * GIB)
    node.run(pod)
    sets = {node.create(ctr_info(pod, c)).cpus for c in ("c1", "c2", "c3")}
    assert len(sets) == 1 and len(next(iter(sets))) == 4


def test_kep_pod_scope_mixed() -> None:
    node = dual()
    pod = pod_info("p", 4000, 4 * GIB)
    node.run(pod)
    c1 = node.create(ctr_info(pod, "c1", 2000, 2 * GIB))
    c2 = node.create(ctr_info(pod, "c2"))
    c3 = node.create(ctr_info(pod, "c3"))
    assert len(c1.cpus) == 2 and c1.cpu_quota == -1
    assert c2.cpus == c3.cpus and len(c2.cpus) == 2 and c2.cpu_quota is None
    assert c1.cpus.isdisjoint(c2.cpus) and c1.mems == c2.mems == NodeSet([0])


def test_kep_pod_scope_empty_pool_is_rejected() -> None:
    node = dual()
    pod = pod_info("p", 5000, 5 * GIB)
    node.run(pod)
    node.create(ctr_info(pod, "c1", 3000, 3 * GIB))
    node.create(ctr_info(pod, "c2", 2000, 2 * GIB))
    with pytest.raises(AdmissionError, match="EmptyPodSharedPoolError"):
        node.create(ctr_info(pod, "c3"))


def test_tutorial_empty_shared_pool() -> None:
    """Kubelet: TopologyAffinityError at admission. We see the resource-less sidecar
    before the app, so it is the 3-CPU app that cannot empty the running sidecar's pool."""
    node = dual()
    pod = pod_info("p", 4000, 4 * GIB)
    node.run(pod)
    node.create(ctr_info(pod, "metrics-sidecar", 1000, GIB))
    node.create(ctr_info(pod, "logging-sidecar"))
    with pytest.raises(AdmissionError, match="leaving no cpus for its running shared"):
        node.create(ctr_info(pod, "main-app", 3000, 3 * GIB))


def test_kep_container_scope_mixed() -> None:
    node = Node(t.dual_socket_ht(), config(scope="container"))
    pod = pod_info("p", 4000, 4 * GIB)
    node.run(pod)
    c1 = node.create(ctr_info(pod, "c1", 2000, 2 * GIB))
    c2 = node.create(ctr_info(pod, "c2"))
    assert c1.pool is Pool.EXCLUSIVE and len(c1.cpus) == 2
    assert len(node.topo.nodes_of_cpus(c1.cpus)) == 1
    assert c2.pool is Pool.NODE_SHARED and c2.cpus == node.topo.online - c1.cpus


def test_kep_container_scope_no_container_resources() -> None:
    node = Node(t.dual_socket_ht(), config(scope="container"))
    pod = pod_info("p", 4000, 4 * GIB)
    node.run(pod)
    assert node.create(ctr_info(pod, "c1")).pool is Pool.NODE_SHARED


def test_design_example_on_a_dual_socket_machine() -> None:
    """design.md §1: database 6 exclusive on whole cores, sidecars share 2, one NUMA node."""
    topo = t.synthetic(sockets=2, nodes_per_socket=1, cores_per_node=8, memory_bytes=64 * GIB)
    node = Node(topo, config())
    pod = pod_info("db", 8000, 16 * GIB, name="tightly-coupled-database")
    node.run(pod)
    node.create(ctr_info(pod, "metrics-exporter"))
    node.create(ctr_info(pod, "backup-agent"))
    db = node.create(ctr_info(pod, "database", 6000, 12 * GIB))
    sidecar = node.state.containers["metrics-exporter"].assignment
    assert len(db.cpus) == 6 and db.cpu_quota == -1
    assert all(topo.core_siblings(c) <= db.cpus for c in db.cpus), "whole cores"
    assert sidecar == node.state.containers["backup-agent"].assignment
    assert len(sidecar.cpus) == 2 and sidecar.cpus.isdisjoint(db.cpus)
    assert db.mems == sidecar.mems == NodeSet([0])
    assert db.cpus | sidecar.cpus <= topo.node[0].cpus
    assert set(node.changes[-1]) == {"metrics-exporter", "backup-agent"}
    assert replace(sidecar, cpus=db.cpus) != sidecar
