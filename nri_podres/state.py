"""The allocation state: immutable, persistent-style (every change returns a new State).

A *reservation* is what an owner holds on the node: CPUs taken out of the node
shared pool, the NUMA nodes its memory lives on and the bytes charged per node.
Owners are pod bubbles and classic (node-exclusive) containers. The State keeps
running totals of all reservations, so a change costs O(what changed), not
O(all pods).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nri_podres.cpuset import CPUSet, NodeSet
from nri_podres.resources import Assignment, Kind, PodInfo, Pool
from nri_podres.topology import Topology

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Reservation:
    cpus: CPUSet
    numa: NodeSet
    memory_by_node: tuple[tuple[int, int], ...] = ()  # (node id, bytes charged)


@dataclass(frozen=True, slots=True)
class PodRecord:
    info: PodInfo
    mode: str  # placement.PodMode value
    budget_cpus: int  # whole CPUs of the bubble; 0 when the pod has none
    reservation: Reservation | None
    note: str = ""

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def namespace(self) -> str:
        return self.info.namespace

    @property
    def bubble(self) -> CPUSet | None:
        return self.reservation.cpus if self.reservation and self.budget_cpus else None

    @property
    def numa(self) -> NodeSet | None:
        return self.reservation.numa if self.reservation else None


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    id: str
    pod_id: str
    name: str
    kind: Kind
    cpus_requested: int  # whole exclusive CPUs; 0 for shared containers
    assignment: Assignment
    running: bool = True
    reservation: Reservation | None = None  # node-exclusive containers only


@dataclass(frozen=True, slots=True)
class _Totals:
    taken_bits: int = 0  # CPUs held by reservations (bubbles + node-exclusive slices)
    memory_bytes: Mapping[int, int] = field(default_factory=dict)
    groups: Mapping[int, tuple[NodeSet, int]] = field(default_factory=dict)  # node -> (mask, owners)

    def apply(self, res: Reservation, sign: int) -> _Totals:
        taken = self.taken_bits | res.cpus.bits if sign > 0 else self.taken_bits & ~res.cpus.bits
        memory = dict(self.memory_bytes)
        for node, size in res.memory_by_node:
            memory[node] = memory.get(node, 0) + sign * size
        groups = dict(self.groups)
        for node in res.numa:
            owners = groups.get(node, (NodeSet([node]), 0))[1] + sign
            groups[node] = (res.numa, owners) if owners > 0 else (NodeSet([node]), 0)
        return _Totals(taken, memory, groups)


@dataclass(frozen=True, slots=True)
class State:
    pods: Mapping[str, PodRecord]
    containers: Mapping[str, ContainerRecord]
    by_pod: Mapping[str, tuple[str, ...]]
    node_shared: frozenset[str]  # running containers on the node shared pool
    totals: _Totals

    @classmethod
    def empty(cls) -> State:
        return cls({}, {}, {}, frozenset(), _Totals())

    # --- updates --------------------------------------------------------------

    def with_pod(self, pod: PodRecord) -> State:
        totals = self.totals
        old = self.pods.get(pod.id)
        if old is not None and old.reservation is not None:
            totals = totals.apply(old.reservation, -1)
        if pod.reservation is not None:
            totals = totals.apply(pod.reservation, +1)
        pods = dict(self.pods)
        pods[pod.id] = pod
        return State(pods, self.containers, self.by_pod, self.node_shared, totals)

    def without_pod(self, pod_id: str) -> State:
        state = self
        for ctr_id in self.by_pod.get(pod_id, ()):
            state = state.without_container(ctr_id)
        old = state.pods.get(pod_id)
        if old is None:
            return state
        totals = state.totals
        if old.reservation is not None:
            totals = totals.apply(old.reservation, -1)
        pods = dict(state.pods)
        del pods[pod_id]
        by_pod = dict(state.by_pod)
        by_pod.pop(pod_id, None)
        return State(pods, state.containers, by_pod, state.node_shared, totals)

    def with_container(self, ctr: ContainerRecord) -> State:
        state = self.without_container(ctr.id) if ctr.id in self.containers else self
        totals = state.totals
        if ctr.reservation is not None and ctr.running:
            totals = totals.apply(ctr.reservation, +1)
        containers = dict(state.containers)
        containers[ctr.id] = ctr
        by_pod = dict(state.by_pod)
        by_pod[ctr.pod_id] = (*by_pod.get(ctr.pod_id, ()), ctr.id)
        shared = state.node_shared
        if ctr.running and ctr.assignment.pool is Pool.NODE_SHARED:
            shared = shared | {ctr.id}
        return State(state.pods, containers, by_pod, shared, totals)

    def without_container(self, ctr_id: str) -> State:
        old = self.containers.get(ctr_id)
        if old is None:
            return self
        totals = self.totals
        if old.reservation is not None and old.running:
            totals = totals.apply(old.reservation, -1)
        containers = dict(self.containers)
        del containers[ctr_id]
        by_pod = dict(self.by_pod)
        rest = tuple(c for c in by_pod.get(old.pod_id, ()) if c != ctr_id)
        if rest:
            by_pod[old.pod_id] = rest
        else:
            by_pod.pop(old.pod_id, None)
        return State(self.pods, containers, by_pod, self.node_shared - {ctr_id}, totals)

    def with_assignments(self, updates: Mapping[str, Assignment]) -> State:
        """Re-point containers at new CPU sets without touching reservations."""
        if not updates:
            return self
        containers = dict(self.containers)
        for ctr_id, assignment in updates.items():
            c = containers[ctr_id]
            containers[ctr_id] = ContainerRecord(
                c.id, c.pod_id, c.name, c.kind, c.cpus_requested, assignment, c.running,
                c.reservation,
            )
        return State(self.pods, containers, self.by_pod, self.node_shared, self.totals)

    # --- queries --------------------------------------------------------------

    @property
    def taken(self) -> CPUSet:
        return CPUSet.from_bits(self.totals.taken_bits)

    def memory_charged_bytes(self, node: int) -> int:
        return self.totals.memory_bytes.get(node, 0)

    def memory_group(self, node: int) -> tuple[NodeSet, int]:
        group = self.totals.groups.get(node)
        return group if group is not None else (NodeSet.from_bits(1 << node), 0)

    def pod_containers(self, pod_id: str) -> list[ContainerRecord]:
        return [self.containers[c] for c in self.by_pod.get(pod_id, ())]

    def assignments(self) -> dict[str, Assignment]:
        return {c.id: c.assignment for c in self.containers.values() if c.running}

    def node_usage(self, topo: Topology, reserved: CPUSet) -> list[dict[str, Any]]:
        """Per NUMA node: exclusive, pod-pool, node-shared and free CPUs; memory charged."""
        exclusive = CPUSet()
        for ctr in self.containers.values():
            if ctr.running and ctr.assignment.pool is Pool.EXCLUSIVE:
                exclusive |= ctr.assignment.cpus
        bubbles = CPUSet()
        for pod in self.pods.values():
            if pod.bubble is not None:
                bubbles |= pod.bubble
        rows = []
        for node in topo.numa_nodes:
            rows.append({
                "node": node.id,
                "exclusive_cpus": str(exclusive & node.cpus),
                "pod_pool_cpus": str((bubbles - exclusive) & node.cpus),
                "node_shared_cpus": str(node.cpus - self.taken),
                "free_cpus": str(node.cpus - self.taken - reserved),
                "memory_charged_bytes": self.memory_charged_bytes(node.id),
                "memory_total_bytes": node.memory_bytes,
            })
        return rows

    # --- checkpoint -----------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "pods": [_pod_to_json(p) for p in sorted(self.pods.values(), key=lambda p: p.id)],
            "containers": [
                _container_to_json(self.containers[c])
                for pod_id in sorted(self.by_pod)
                for c in self.by_pod[pod_id]
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> State:
        if data.get("version") != FORMAT_VERSION:
            msg = f"unsupported checkpoint version {data.get('version')!r}"
            raise ValueError(msg)
        state = cls.empty()
        for raw in data["pods"]:
            state = state.with_pod(_pod_from_json(raw))
        for raw in data["containers"]:
            state = state.with_container(_container_from_json(raw))
        return state


def _res_to_json(res: Reservation | None) -> dict[str, Any] | None:
    if res is None:
        return None
    return {"cpus": str(res.cpus), "numa": str(res.numa),
            "memory_by_node": [list(pair) for pair in res.memory_by_node]}


def _res_from_json(raw: Mapping[str, Any] | None) -> Reservation | None:
    if raw is None:
        return None
    return Reservation(
        CPUSet.parse(raw["cpus"]), NodeSet.parse(raw["numa"]),
        tuple((int(n), int(b)) for n, b in raw["memory_by_node"]),
    )


_POD_FIELDS = ("id", "name", "namespace", "uid", "cpu_shares", "cpu_quota", "cpu_period",
               "memory_limit_bytes")


def _pod_to_json(pod: PodRecord) -> dict[str, Any]:
    info = {k: getattr(pod.info, k) for k in _POD_FIELDS}
    info["annotations"] = dict(pod.info.annotations)
    return {"info": info, "mode": pod.mode, "budget_cpus": pod.budget_cpus,
            "reservation": _res_to_json(pod.reservation), "note": pod.note}


def _pod_from_json(raw: Mapping[str, Any]) -> PodRecord:
    info = PodInfo(**{k: raw["info"][k] for k in _POD_FIELDS},
                   annotations=dict(raw["info"]["annotations"]))
    return PodRecord(info, raw["mode"], int(raw["budget_cpus"]),
                     _res_from_json(raw["reservation"]), raw["note"])


def _container_to_json(ctr: ContainerRecord) -> dict[str, Any]:
    a = ctr.assignment
    return {"id": ctr.id, "pod_id": ctr.pod_id, "name": ctr.name, "kind": ctr.kind.value,
            "cpus_requested": ctr.cpus_requested, "running": ctr.running,
            "assignment": {"cpus": str(a.cpus), "mems": str(a.mems), "pool": a.pool.value,
                           "cpu_quota": a.cpu_quota},
            "reservation": _res_to_json(ctr.reservation)}


def _container_from_json(raw: Mapping[str, Any]) -> ContainerRecord:
    a = raw["assignment"]
    assignment = Assignment(CPUSet.parse(a["cpus"]), NodeSet.parse(a["mems"]),
                            Pool(a["pool"]), a["cpu_quota"])
    return ContainerRecord(raw["id"], raw["pod_id"], raw["name"], Kind(raw["kind"]),
                           int(raw["cpus_requested"]), assignment, bool(raw["running"]),
                           _res_from_json(raw["reservation"]))
