"""Decisions per event: pools, releases, resizes, annotations, memory, reconcile."""

from __future__ import annotations

import json

import pytest

from nri_podres import policy
from nri_podres.config import Config, CPUConfig, MemoryConfig, TopologyConfig
from nri_podres.cpuset import CPUSet, NodeSet
from nri_podres.errors import AdmissionError
from nri_podres.resources import Pool
from nri_podres.state import State
from tests import topologies as t
from tests.topologies import GIB, Node, ctr_info, pod_info

C = CPUSet.parse


def cfg(policy_name: str = "single-numa-node", reserved: str = "0", **cpu: bool) -> Config:
    return Config(topology=TopologyConfig(policy=policy_name),
                  cpu=CPUConfig(reserved_cpus=C(reserved), **cpu),
                  memory=MemoryConfig(reserved_bytes={}))


def machine() -> t.Topology:
    """2 NUMA nodes x 8 cores x 2 threads, 32 GiB per node."""
    return t.synthetic(2, 1, 8, memory_bytes=32 * GIB)


def test_bubble_memory_is_charged_on_its_node() -> None:
    node = Node(machine(), cfg())
    node.run(pod_info("p", 4000, 10 * GIB))
    assert node.state.memory_charged_bytes(0) == 10 * GIB
    assert node.state.pods["p"].numa == NodeSet([0])


def test_memory_decides_the_node() -> None:
    node = Node(machine(), cfg())
    node.run(pod_info("big", 2000, 30 * GIB))
    node.run(pod_info("next", 2000, 8 * GIB))
    assert node.state.pods["next"].numa == NodeSet([1])


def test_topology_affinity_error_carries_the_numbers() -> None:
    node = Node(machine(), cfg())
    with pytest.raises(AdmissionError) as e:
        node.run(pod_info("p", 17000, GIB))
    assert e.value.reason == "TopologyAffinityError"
    assert "asked for 17 CPUs" in e.value.message
    assert "0: 15 CPUs" in e.value.message and "1: 16 CPUs" in e.value.message


def test_best_effort_spills_over_two_nodes() -> None:
    node = Node(machine(), cfg("best-effort"))
    node.run(pod_info("p", 20000, GIB))
    assert node.state.pods["p"].numa == NodeSet([0, 1])
    assert len(node.state.pods["p"].bubble or ()) == 20


def test_node_shared_containers_shrink_when_a_bubble_arrives() -> None:
    node = Node(machine(), cfg())
    web = pod_info("web", 500, GIB, limit_millis=1000)
    node.run(web)
    before = node.create(ctr_info(web, "w", 500, limit_millis=1000))
    assert before.pool is Pool.NODE_SHARED and before.cpus == node.topo.online
    reason = node.run(pod_info("db", 4000, GIB))
    assert "bubble of 4 CPUs" in reason
    assert node.changes[-1]["w"].cpus == node.topo.online - (node.state.pods["db"].bubble or C(""))
    d = policy.remove_pod(node.topo, node.cfg, node.state, "db")
    assert d.changed["w"].cpus == node.topo.online


def test_exclusive_container_stop_returns_its_slice() -> None:
    node = Node(machine(), cfg())
    pod = pod_info("p", 4000, 4 * GIB)
    node.run(pod)
    node.create(ctr_info(pod, "side"))
    app = node.create(ctr_info(pod, "init", 2000, GIB))
    assert len(node.state.containers["side"].assignment.cpus) == 2
    node.stop("init")
    assert node.state.containers["side"].assignment.cpus == node.state.pods["p"].bubble
    assert "side" in node.changes[-1]
    assert app.cpus <= node.changes[-1]["side"].cpus


def test_unknown_ids_are_no_ops() -> None:
    topo, c = machine(), cfg()
    empty = State.empty()
    assert policy.stop_container(topo, c, empty, "nope").state is empty
    assert policy.remove_container(topo, c, empty, "nope").changed == {}
    assert policy.remove_pod(topo, c, empty, "nope").state is empty


def test_create_without_run_pod_admits_the_pod_on_the_fly() -> None:
    topo, c = machine(), cfg()
    pod = pod_info("p", 2000, GIB)
    d = policy.create_container(topo, c, State.empty(), pod, ctr_info(pod, "a", 1000))
    assert d.assignment is not None and d.assignment.pool is Pool.EXCLUSIVE
    assert "bubble of 2 CPUs" in d.reason


def test_opt_out_pod_uses_the_node_pool() -> None:
    node = Node(machine(), cfg())
    pod = pod_info("p", 2000, GIB, annotations={"podres.nri.io/opt-out": "true"})
    node.run(pod)
    assert node.create(ctr_info(pod, "a", 2000)).pool is Pool.NODE_SHARED


def test_numa_preference_is_honoured_then_relaxed() -> None:
    node = Node(machine(), cfg())
    node.run(pod_info("p", 2000, GIB, annotations={"podres.nri.io/numa-node": "1"}))
    assert node.state.pods["p"].numa == NodeSet([1])
    reason = node.run(pod_info("q", 15000, GIB, annotations={"podres.nri.io/numa-node": "1"}))
    assert node.state.pods["q"].numa == NodeSet([0])
    assert "cannot hold it" in reason


@pytest.mark.parametrize(("key", "value"), [("podres.nri.io/opt-out", "yes"),
                                            ("podres.nri.io/numa-node", "7"),
                                            ("podres.nri.io/numa-node", "one")])
def test_invalid_annotations(key: str, value: str) -> None:
    node = Node(machine(), cfg())
    with pytest.raises(AdmissionError) as e:
        node.run(pod_info("p", 2000, GIB, annotations={key: value}))
    assert e.value.reason == "InvalidAnnotation"
    assert key in e.value.message and repr(value) in e.value.message


def test_fractional_budget_pins_memory_only() -> None:
    node = Node(machine(), cfg())
    pod = pod_info("p", 1500, 4 * GIB)
    node.run(pod)
    a = node.create(ctr_info(pod, "a", 1000))
    assert a.pool is Pool.NODE_SHARED and a.mems == NodeSet([0])
    assert node.state.memory_charged_bytes(0) == 4 * GIB


def test_container_scope_gives_classic_exclusives() -> None:
    c = Config(topology=TopologyConfig(scope="container"), cpu=CPUConfig(reserved_cpus=C("0")))
    node = Node(machine(), c)
    pod = pod_info("p", 3000, 2 * GIB)
    node.run(pod)
    a = node.create(ctr_info(pod, "a", 2000, GIB))
    assert a.pool is Pool.EXCLUSIVE and a.cpu_quota == -1 and len(a.cpus) == 2
    assert node.topo.nodes_of_cpus(a.cpus) == a.mems


def test_quota_is_kept_when_configured() -> None:
    node = Node(machine(), Config(cpu=CPUConfig(lift_quota_for_exclusive=False)))
    pod = pod_info("p", 3000, 2 * GIB)
    node.run(pod)
    assert node.create(ctr_info(pod, "a", 2000, GIB)).cpu_quota is None


def test_update_container_grows_and_shrinks_its_slice() -> None:
    node = Node(machine(), cfg())
    pod = pod_info("p", 6000, 6 * GIB)
    node.run(pod)
    node.create(ctr_info(pod, "side"))
    a = node.create(ctr_info(pod, "a", 2000, GIB))
    grown = policy.update_container(node.topo, node.cfg, node.state, "a", 3072, 300000, 100000, GIB)
    assert grown.assignment is not None and len(grown.assignment.cpus) == 3
    assert a.cpus <= grown.assignment.cpus and "side" in grown.changed
    too_big = policy.update_container(node.topo, node.cfg, grown.state, "a", 6144, 600000, 100000, GIB)
    assert too_big.state is grown.state and "kept" in too_big.reason
    shrunk = policy.update_container(node.topo, node.cfg, grown.state, "a", 1024, 100000, 100000, GIB)
    assert shrunk.assignment is not None and shrunk.assignment.cpus <= grown.assignment.cpus
    assert len(shrunk.assignment.cpus) == 1


def test_update_pod_grows_and_shrinks_the_bubble() -> None:
    node = Node(machine(), cfg())
    pod = pod_info("p", 4000, 4 * GIB)
    node.run(pod)
    node.create(ctr_info(pod, "side"))
    bubble = node.state.pods["p"].bubble or C("")
    grown = policy.update_pod(node.topo, node.cfg, node.state, pod_info("p", 6000, 4 * GIB))
    new_bubble = grown.state.pods["p"].bubble or C("")
    assert bubble < new_bubble and len(new_bubble) == 6 and grown.changed["side"].cpus == new_bubble
    shrunk = policy.update_pod(node.topo, node.cfg, grown.state, pod_info("p", 1000, 4 * GIB))
    assert len(shrunk.state.pods["p"].bubble or ()) == 1
    with pytest.raises(AdmissionError, match="TopologyAffinityError|grow"):
        policy.update_pod(node.topo, node.cfg, node.state, pod_info("p", 17000, 4 * GIB))


def test_checkpoint_round_trips_through_json() -> None:
    node = Node(machine(), cfg())
    pod = pod_info("p", 4000, 4 * GIB)
    node.run(pod)
    node.create(ctr_info(pod, "a", 2000, GIB))
    node.create(ctr_info(pod, "b"))
    again = State.from_json(json.loads(json.dumps(node.state.to_json())))
    assert again == node.state


def test_node_usage_per_numa_node() -> None:
    node = Node(machine(), cfg())
    pod = pod_info("p", 4000, 4 * GIB)
    node.run(pod)
    node.create(ctr_info(pod, "a", 2000, GIB))
    rows = node.state.node_usage(node.topo, C("0"))
    assert len(C(rows[0]["exclusive_cpus"])) == 2 and len(C(rows[0]["pod_pool_cpus"])) == 2
    assert rows[0]["memory_charged_bytes"] == 4 * GIB and rows[1]["free_cpus"] == "8-15,24-31"


# --- reconcile -------------------------------------------------------------------------


def _reported(node: Node) -> tuple[list, list]:  # type: ignore[type-arg]
    ctrs = []
    for pod_id, ids in node.state.by_pod.items():
        pod = node.pods[pod_id]
        for cid in ids:
            rec = node.state.containers[cid]
            values = _values[cid]
            ctrs.append(ctr_info(pod, cid, *values, cpus=rec.assignment.cpus, mems=rec.assignment.mems))
    return list(node.pods.values()), ctrs


_values: dict[str, tuple] = {}  # type: ignore[type-arg]


def _scenario() -> Node:
    node = Node(machine(), cfg())
    for i, (budget, parts) in enumerate([(4, [2, None]), (3, [1, 1, None]), (1, [None])]):
        pod = pod_info(f"p{i}", budget * 1000, 4 * GIB)
        node.run(pod)
        for j, size in enumerate(parts):
            cid = f"p{i}c{j}"
            _values[cid] = (None, None) if size is None else (size * 1000, GIB)
            node.create(ctr_info(pod, cid, *_values[cid]))
    return node


@pytest.mark.parametrize("with_checkpoint", [True, False])
def test_restart_moves_nothing(with_checkpoint: bool) -> None:
    node = _scenario()
    pods, ctrs = _reported(node)
    d = policy.reconcile(node.topo, node.cfg, pods, ctrs, node.state if with_checkpoint else None)
    assert d.changed == {}
    assert d.state.assignments() == node.state.assignments()


def test_reconcile_places_containers_without_a_valid_set() -> None:
    node = _scenario()
    pods, ctrs = _reported(node)
    stolen = node.state.containers["p0c0"].assignment.cpus
    broken = [c if c.id != "p1c0" else ctr_info(node.pods["p1"], "p1c0", 1000, GIB, cpus=stolen)
              for c in ctrs]
    d = policy.reconcile(node.topo, node.cfg, pods, broken, node.state)
    assert set(d.changed) == {"p1c0"}
    assert d.state.containers["p1c0"].assignment == node.state.containers["p1c0"].assignment


def test_reconcile_without_checkpoint_adopts_a_partial_bubble() -> None:
    node = Node(t.dual_socket_ht(), Config(cpu=CPUConfig(reserved_cpus=C("0"))))
    pod = pod_info("p", 2000)
    node.run(pod)
    node.create(ctr_info(pod, "c1", 1000))
    ctr = ctr_info(pod, "c1", 1000, cpus=C("2"), mems=NodeSet([0]))
    d = policy.reconcile(node.topo, node.cfg, [pod], [ctr], None)
    assert d.changed == {}
    assert d.state.pods["p"].bubble == C("2,8")
