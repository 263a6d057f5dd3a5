"""The building blocks of every decision: classify, reserve, carve, recompute pools.

``policy`` strings these together per runtime event; ``reconcile`` uses them to
rebuild a state. Everything here is pure.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import cached_property

from nri_podres.allocator import TakeOptions, allocate_cpus, take_by_topology
from nri_podres.config import Config
from nri_podres.cpuset import CPUSet, NodeSet
from nri_podres.errors import AdmissionError
from nri_podres.hints import UNLIMITED, Hint, HintRequest, NodeCapacity, best_hint
from nri_podres.quantity import format_bytes
from nri_podres.resources import (
    NUMA_NODE_ANNOTATION,
    OPT_OUT_ANNOTATION,
    QUOTA_LIFTED,
    Assignment,
    ContainerInfo,
    Kind,
    PodInfo,
    Pool,
    inherits_pod_values,
    request_from_container,
    request_from_pod,
)
from nri_podres.state import ContainerRecord, PodRecord, Reservation, State
from nri_podres.topology import Topology

POD_SCOPE_MESSAGE = "Pod Scope pod with pod-level resources failed admission under pod-scope topology manager"


class PodMode(enum.Enum):
    BUBBLE = "bubble"  # whole-CPU Guaranteed budget under pod scope
    MEMORY_ONLY = "memory-only"  # fractional Guaranteed budget: memory pinned, CPUs shared
    CLASSIC = "classic"  # container scope (or unknown pod values): per-container exclusives
    ORDINARY = "ordinary"  # Burstable/BestEffort or opted out: node shared pool


@dataclass(frozen=True)
class Context:
    topo: Topology
    cfg: Config

    @cached_property
    def reserved(self) -> CPUSet:
        return self.cfg.cpu.reserved_cpus & self.topo.online

    @cached_property
    def options(self) -> TakeOptions:
        c = self.cfg.cpu
        return TakeOptions(
            uncore=c.prefer_align_cpus_by_uncorecache,
            distribute_across_numa=c.distribute_cpus_across_numa,
            full_pcpus_only=c.full_pcpus_only,
        )

    @cached_property
    def reserved_physical(self) -> CPUSet:
        out = CPUSet()
        for cpu in self.reserved:
            out |= self.topo.core_siblings(cpu)
        return out

    @cached_property
    def node_facts(self) -> tuple[tuple[int, int, int, int], ...]:
        """Per NUMA node with CPUs, what no decision changes: (id, CPU bits, CPUs not
        reserved, allocatable memory bytes) -- computed once, read by every NUMA choice."""
        reserved = self.reserved.bits
        return tuple(
            (node.id, node.cpus.bits, (node.cpus.bits & ~reserved).bit_count(), self.memory_allocatable(node.id))
            for node in self.topo.numa_nodes
            if node.cpus.bits
        )

    def avail(self, state: State) -> CPUSet:
        """CPUs free for new bubbles and exclusive containers."""
        return self.topo.online - state.taken - self.reserved

    def node_pool(self, state: State) -> CPUSet:
        pool = self.topo.online - state.taken
        if self.cfg.cpu.strict_cpu_reservation:
            pool -= self.reserved
        return pool or self.reserved or self.topo.online

    def memory_allocatable(self, node: int) -> int:
        total = self.topo.node[node].memory_bytes
        if total is None:
            return UNLIMITED
        return max(0, total - self.cfg.memory.reserved_bytes.get(node, 0))

    def assignment(self, kind: Kind, cpus: CPUSet, mems: NodeSet | None) -> Assignment:
        quota = None
        if kind.pool is Pool.EXCLUSIVE and self.cfg.cpu.lift_quota_for_exclusive:
            quota = QUOTA_LIFTED
        return Assignment(cpus, mems if mems else self.topo.node_ids, kind.pool, quota)


# --- classification ----------------------------------------------------------------


def pod_mode(ctx: Context, pod: PodInfo) -> PodMode:
    if _opted_out(pod):
        return PodMode.ORDINARY
    if pod.cpu_shares is None and pod.cpu_quota is None and pod.memory_limit_bytes is None:
        return PodMode.CLASSIC  # the runtime does not report pod values: judge containers
    req = request_from_pod(pod)
    if not req.guaranteed:
        return PodMode.ORDINARY
    if not ctx.cfg.pod_scope:
        return PodMode.CLASSIC
    return PodMode.BUBBLE if req.whole_cpus else PodMode.MEMORY_ONLY


def _opted_out(pod: PodInfo) -> bool:
    value = pod.annotations.get(OPT_OUT_ANNOTATION)
    if value is None:
        return False
    if value not in ("true", "false"):
        raise AdmissionError(
            "InvalidAnnotation", f"{OPT_OUT_ANNOTATION}: {value!r} is not 'true' or 'false'"
        )
    return value == "true"


def preferred_nodes(ctx: Context, pod: PodInfo) -> NodeSet | None:
    value = pod.annotations.get(NUMA_NODE_ANNOTATION)
    if value is None:
        return None
    try:
        nodes = NodeSet.parse(value)
    except ValueError:
        nodes = NodeSet()
    if not nodes or not nodes <= ctx.topo.node_ids:
        raise AdmissionError(
            "InvalidAnnotation",
            f"{NUMA_NODE_ANNOTATION}: {value!r} is not a list of this machine's NUMA nodes "
            f"({ctx.topo.node_ids})",
        )
    return nodes


def classify(ctx: Context, mode: PodMode, pod: PodInfo, ctr: ContainerInfo) -> tuple[Kind, int]:
    """The container's kind and its whole exclusive CPUs (0 when shared)."""
    req = request_from_container(ctr)
    whole = req.whole_cpus if req.guaranteed else 0
    if whole and pod.cpu_quota is not None and inherits_pod_values(pod, ctr):
        whole = 0  # no resources of its own: CRI filled in the pod's limits
    if mode is PodMode.BUBBLE:
        return (Kind.POD_EXCLUSIVE, whole) if whole else (Kind.POD_SHARED, 0)
    if mode is PodMode.CLASSIC and whole:
        return Kind.NODE_EXCLUSIVE, whole
    return Kind.NODE_SHARED, 0


# --- NUMA choice -------------------------------------------------------------------


def capacities(ctx: Context, state: State) -> dict[int, NodeCapacity]:
    avail = ctx.avail(state).bits
    out = {}
    for node_id, cpu_bits, cpus_total, allocatable in ctx.node_facts:
        group, owners = state.memory_group(node_id)
        out[node_id] = NodeCapacity(
            cpus_total=cpus_total,
            cpus_free=(cpu_bits & avail).bit_count(),
            memory_total_bytes=allocatable,
            memory_free_bytes=max(0, allocatable - state.memory_charged_bytes(node_id)),
            group=group,
            memory_owners=owners,
        )
    return out


def choose_numa(
    ctx: Context, state: State, cpus: int, memory_bytes: int, prefer: NodeSet | None
) -> tuple[Hint, str]:
    """The NUMA mask for a request; a preference is tried first and never required."""
    policy = ctx.cfg.topology.policy
    if policy == "none":
        return Hint(None, preferred=False), ""
    caps = capacities(ctx, state)
    req = HintRequest(cpus, memory_bytes, policy, ctx.cfg.topology.prefer_closest_numa_nodes)
    if prefer is not None:
        sub = {k: v for k, v in caps.items() if k in prefer}
        hint = best_hint(ctx.topo, sub, req)
        if hint.mask is not None and (hint.preferred or policy in ("best-effort", "none")):
            return hint, f"preferred NUMA {prefer} honoured"
    hint = best_hint(ctx.topo, caps, req)
    note = "" if prefer is None else f"preferred NUMA {prefer} cannot hold it; "
    if policy in ("restricted", "single-numa-node") and not hint.preferred:
        raise AdmissionError("TopologyAffinityError", _affinity_message(ctx, caps, cpus, memory_bytes, note))
    return hint, note.rstrip("; ")


def _affinity_message(
    ctx: Context, caps: dict[int, NodeCapacity], cpus: int, memory_bytes: int, note: str
) -> str:
    free = "; ".join(
        f"{nid}: {c.cpus_free} CPUs, {_bytes(c.memory_free_bytes)}" for nid, c in caps.items()
    )
    return (
        f"{POD_SCOPE_MESSAGE}: asked for {cpus} CPUs and {_bytes(memory_bytes)} memory "
        f"under policy {ctx.cfg.topology.policy}; {note}free per NUMA node: {free}"
    )


def _bytes(size: int) -> str:
    return "unlimited" if size >= UNLIMITED else format_bytes(size)


def charge_memory(ctx: Context, state: State, mask: NodeSet, size: int) -> tuple[tuple[int, int], ...]:
    """Fill the mask's nodes in order, spilling to the next (the memory manager's walk)."""
    out = []
    left = size
    nodes = list(mask)
    for i, node in enumerate(nodes):
        free = max(0, ctx.memory_allocatable(node) - state.memory_charged_bytes(node))
        take = left if i == len(nodes) - 1 else min(left, free)
        if take > 0:
            out.append((node, take))
            left -= take
    return tuple(out)


# --- reservations --------------------------------------------------------------------


def reserve(
    ctx: Context, state: State, cpus: int, memory_bytes: int, prefer: NodeSet | None
) -> tuple[Reservation, str]:
    """A NUMA-aligned reservation of ``cpus`` whole CPUs and ``memory_bytes`` of memory."""
    if cpus:
        check_smt(ctx, state, cpus)
    hint, note = choose_numa(ctx, state, cpus, memory_bytes, prefer)
    aligned = ctx.topo.cpus_of_nodes(hint.mask) if hint.mask is not None else None
    taken = allocate_cpus(ctx.topo, ctx.avail(state), cpus, aligned, ctx.options)
    numa = hint.mask if hint.mask is not None else ctx.topo.nodes_of_cpus(taken)
    if not numa:
        numa = ctx.topo.node_ids
    memory = charge_memory(ctx, state, numa, memory_bytes)
    return Reservation(taken, numa, memory), note


def check_smt(ctx: Context, state: State, n: int) -> None:
    if not ctx.cfg.cpu.full_pcpus_only:
        return
    per_core = ctx.topo.threads_per_core
    if n % per_core:
        raise AdmissionError(
            "SMTAlignmentError",
            f"SMT Alignment Error: requested {n} cpus not multiple cpus per core = {per_core}",
        )
    physical = len(ctx.topo.online - state.taken - ctx.reserved_physical)
    if n > physical:
        raise AdmissionError(
            "SMTAlignmentError",
            "SMT Alignment Error: not enough free physical CPUs: available physical CPUs = "
            f"{physical}, requested CPUs = {n}, CPUs per core = {per_core}",
        )


# --- pools ---------------------------------------------------------------------------


def pod_exclusive(state: State, pod_id: str, skip: str = "") -> CPUSet:
    out = CPUSet()
    for ctr in state.pod_containers(pod_id):
        if ctr.running and ctr.kind is Kind.POD_EXCLUSIVE and ctr.id != skip:
            out |= ctr.assignment.cpus
    return out


def pod_pool(state: State, pod: PodRecord) -> CPUSet:
    if pod.bubble is None:
        return CPUSet()
    return pod.bubble - pod_exclusive(state, pod.id)


def running_shared(state: State, pod_id: str, skip: str = "") -> list[ContainerRecord]:
    return [
        c for c in state.pod_containers(pod_id)
        if c.running and c.kind is Kind.POD_SHARED and c.id != skip
    ]


def take_slice(ctx: Context, state: State, pod: PodRecord, name: str, n: int, skip: str = "") -> CPUSet:
    """Carve ``n`` exclusive CPUs out of the pod's pool, keeping the pool non-empty."""
    pool = (pod.bubble or CPUSet()) - pod_exclusive(state, pod.id, skip)
    if n > len(pool):
        raise AdmissionError(
            "EmptyPodSharedPoolError",
            f"pod rejected, exclusive container {name} requests {n} cpus, but only "
            f"{len(pool)} available in pod {pod.namespace}/{pod.name} (pool {pool or '-'}, "
            f"budget {pod.budget_cpus})",
        )
    if n == len(pool) and running_shared(state, pod.id, skip):
        raise AdmissionError(
            "EmptyPodSharedPoolError",
            f"pod rejected, exclusive container {name} requests {n} cpus, the whole pod shared "
            f"pool {pool} of pod {pod.namespace}/{pod.name}, leaving no cpus for its running "
            "shared containers",
        )
    return take_by_topology(ctx.topo, pool, n, ctx.options)


def refresh(
    ctx: Context, old: State, new: State, pods: Iterable[str], skip: str = ""
) -> tuple[State, dict[str, Assignment]]:
    """Re-point shared containers of ``pods`` (and of the node, if its pool moved)."""
    changed: dict[str, Assignment] = {}
    for pod_id in sorted(set(pods)):
        pod = new.pods.get(pod_id)
        if pod is None or pod.bubble is None:
            continue
        pool = pod_pool(new, pod)
        for ctr in running_shared(new, pod_id):
            target = replace(ctr.assignment, cpus=pool, mems=pod.numa or ctx.topo.node_ids)
            if target != ctr.assignment and pool:
                changed[ctr.id] = target
    # The node pool is what reservations leave: it can only move when they changed.
    node_pool = ctx.node_pool(new) if new.totals.taken_bits != old.totals.taken_bits else None
    if node_pool is not None and node_pool != ctx.node_pool(old):
        for ctr_id in sorted(new.node_shared):
            ctr = new.containers[ctr_id]
            a = ctr.assignment
            if a.cpus != node_pool:
                changed[ctr_id] = Assignment(node_pool, a.mems, a.pool, a.cpu_quota)
    changed.pop(skip, None)
    return new.with_assignments(changed), changed
