"""Properties over random machines and random pod lifecycles (hypothesis, stateful).

- no CPU is in two exclusive slices, bubbles never overlap each other or a
  classic exclusive slice;
- a bubble lies within its NUMA nodes, and on one node under single-numa-node;
- a running shared container never has an empty pool, and always sits on its pool;
- the same event on the same state gives the same decision;
- reconcile of what the runtime would report (with the checkpoint) changes nothing;
- releasing everything gives back the initial, empty state.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from nri_podres import policy
from nri_podres.config import Config, CPUConfig, MemoryConfig, TopologyConfig
from nri_podres.cpuset import CPUSet
from nri_podres.errors import AdmissionError
from nri_podres.placement import Context, pod_pool
from nri_podres.resources import ContainerInfo, Decision, Kind, PodInfo, Pool
from nri_podres.state import State
from tests import topologies as t
from tests.topologies import GIB, ctr_info, pod_info


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = State.empty()
        self.pods: dict[str, PodInfo] = {}
        self.ctrs: dict[str, ContainerInfo] = {}
        self.serial = 0

    @initialize(
        sockets=st.integers(1, 2), per_socket=st.integers(1, 3), cores=st.integers(2, 4),
        threads=st.integers(1, 2), memory_gib=st.sampled_from([None, 8, 16]),
        topology_policy=st.sampled_from(["none", "best-effort", "restricted", "single-numa-node"]),
        scope=st.sampled_from(["pod", "pod", "container"]), reserved=st.sampled_from(["", "0"]),
        strict=st.booleans(),
    )
    def machine(self, sockets, per_socket, cores, threads, memory_gib, topology_policy,  # type: ignore[no-untyped-def]
                scope, reserved, strict) -> None:
        mem = None if memory_gib is None else memory_gib * GIB
        self.topo = t.synthetic(sockets, per_socket, cores, threads, memory_bytes=mem)
        self.cfg = Config(
            topology=TopologyConfig(policy=topology_policy, scope=scope),
            cpu=CPUConfig(reserved_cpus=CPUSet.parse(reserved), strict_cpu_reservation=strict),
            memory=MemoryConfig(reserved_bytes={}),
        )

    def _apply(self, call, *args) -> Decision | None:  # type: ignore[no-untyped-def]
        try:
            first = call(self.topo, self.cfg, self.state, *args)
        except AdmissionError:
            try:
                call(self.topo, self.cfg, self.state, *args)
            except AdmissionError:
                return None
            raise AssertionError("an admission error is not deterministic") from None
        again = call(self.topo, self.cfg, self.state, *args)
        assert again == first, "decisions are deterministic"
        self._check_changed(first)
        self.state = first.state
        return first

    def _check_changed(self, d: Decision) -> None:
        before = self.state.assignments()
        after = d.state.assignments()
        for cid, a in d.changed.items():
            assert after[cid] == a and before.get(cid) != a
        for cid, a in after.items():
            if cid in before and before[cid] != a:
                assert cid in d.changed or a == d.assignment, f"{cid} changed silently"

    @rule(budget=st.integers(1, 6), fractional=st.booleans(), burstable=st.booleans(),
          memory_gib=st.integers(1, 6))
    def run_pod(self, budget: int, fractional: bool, burstable: bool, memory_gib: int) -> None:
        self.serial += 1
        pid = f"pod{self.serial}"
        millis = budget * 1000 - (500 if fractional else 0)
        pod = pod_info(pid, millis, memory_gib * GIB, limit_millis=millis + (1000 if burstable else 0))
        if self._apply(policy.run_pod, pod) is not None:
            self.pods[pid] = pod

    @precondition(lambda self: bool(self.pods))
    @rule(data=st.data(), size=st.sampled_from([None, None, 1, 2, 3]))
    def create(self, data: st.DataObject, size: int | None) -> None:
        pid = data.draw(st.sampled_from(sorted(self.pods)))
        self.serial += 1
        cid = f"c{self.serial}"
        pod = self.pods[pid]
        ctr = ctr_info(pod, cid) if size is None else ctr_info(pod, cid, size * 1000, GIB // 2)
        if self._apply(policy.create_container, pod, ctr) is not None:
            self.ctrs[cid] = ctr

    @precondition(lambda self: bool(self.state.assignments()))
    @rule(data=st.data(), remove=st.booleans())
    def stop(self, data: st.DataObject, remove: bool) -> None:
        cid = data.draw(st.sampled_from(sorted(self.state.assignments())))
        self._apply(policy.remove_container if remove else policy.stop_container, cid)

    @precondition(lambda self: bool(self.pods))
    @rule(data=st.data())
    def remove_pod(self, data: st.DataObject) -> None:
        pid = data.draw(st.sampled_from(sorted(self.pods)))
        self._apply(policy.remove_pod, pid)
        del self.pods[pid]

    @invariant()
    def slices_and_bubbles_do_not_overlap(self) -> None:
        if not hasattr(self, "topo"):
            return
        seen = CPUSet()
        for ctr in self.state.containers.values():
            if ctr.running and ctr.kind is Kind.NODE_EXCLUSIVE:
                assert seen.isdisjoint(ctr.assignment.cpus)
                seen |= ctr.assignment.cpus
        for pod in self.state.pods.values():
            bubble = pod.bubble or CPUSet()
            assert seen.isdisjoint(bubble)
            seen |= bubble
            inside = CPUSet()
            for ctr in self.state.pod_containers(pod.id):
                if ctr.running and ctr.kind is Kind.POD_EXCLUSIVE:
                    assert inside.isdisjoint(ctr.assignment.cpus) and ctr.assignment.cpus <= bubble
                    inside |= ctr.assignment.cpus
        assert seen == self.state.taken

    @invariant()
    def bubbles_respect_the_policy(self) -> None:
        if not hasattr(self, "topo"):
            return
        for pod in self.state.pods.values():
            if pod.bubble is None or pod.numa is None:
                continue
            assert not pod.bubble & self.cfg.cpu.reserved_cpus
            if self.cfg.topology.policy in ("restricted", "single-numa-node"):
                assert pod.bubble <= self.topo.cpus_of_nodes(pod.numa)
            if self.cfg.topology.policy == "single-numa-node":
                assert len(pod.numa) == 1

    @invariant()
    def shared_containers_sit_on_their_pool(self) -> None:
        if not hasattr(self, "topo"):
            return
        node_pool = Context(self.topo, self.cfg).node_pool(self.state)
        for ctr in self.state.containers.values():
            if not ctr.running:
                continue
            if ctr.kind is Kind.POD_SHARED:
                pool = pod_pool(self.state, self.state.pods[ctr.pod_id])
                assert pool and ctr.assignment.cpus == pool
            elif ctr.assignment.pool is Pool.NODE_SHARED:
                assert node_pool and ctr.assignment.cpus == node_pool

    @invariant()
    def restart_changes_nothing(self) -> None:
        if not hasattr(self, "topo"):
            return
        reported = []
        for cid, ctr in self.state.containers.items():
            a = ctr.assignment
            base = self.ctrs[cid]
            reported.append(ContainerInfo(cid, base.pod_id, base.name, {}, base.cpu_shares,
                                          base.cpu_quota, base.cpu_period, base.memory_limit_bytes,
                                          a.cpus, a.mems, ctr.running))
        d = policy.reconcile(self.topo, self.cfg, list(self.pods.values()), reported, self.state)
        assert d.changed == {}
        assert d.state.assignments() == self.state.assignments()

    def teardown(self) -> None:
        if not hasattr(self, "topo"):
            return
        for pid in sorted(self.pods):
            self.state = policy.remove_pod(self.topo, self.cfg, self.state, pid).state
        assert not self.state.pods and not self.state.containers
        assert self.state.taken == CPUSet()
        assert all(v == 0 for v in self.state.totals.memory_bytes.values())
        assert all(owners == 0 for _, owners in self.state.totals.groups.values())


Lifecycle.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLifecycle = Lifecycle.TestCase
