"""Pod-level in-place resize: grow or shrink a bubble without moving what runs in it.

Shrinking gives back CPUs of the pod shared pool only (never an exclusive slice) and
keeps at least one CPU when shared containers run. Growing takes CPUs from the
pod's NUMA nodes first; spilling to other nodes is allowed only where the policy
would have allowed it at admission (none / best-effort).
"""

from __future__ import annotations

from dataclasses import replace

from nri_podres.allocator import allocate_cpus, take_by_topology
from nri_podres.errors import AdmissionError
from nri_podres.placement import (
    Context,
    PodMode,
    charge_memory,
    pod_mode,
    pod_pool,
    running_shared,
)
from nri_podres.resources import PodInfo, request_from_pod
from nri_podres.state import PodRecord, Reservation, State


def resize_pod(ctx: Context, state: State, old: PodRecord, pod: PodInfo) -> tuple[PodRecord, str]:
    mode = pod_mode(ctx, pod)
    if mode.value != old.mode:
        raise AdmissionError(
            "UnsupportedPodResize",
            f"pod {old.namespace}/{old.name} would change from {old.mode} to {mode.value} "
            "placement; that needs a new pod",
        )
    if old.reservation is None:
        return replace(old, info=pod), "pod values updated; nothing reserved"
    req = request_from_pod(pod)
    n = req.whole_cpus if mode is PodMode.BUBBLE else 0
    res = old.reservation
    if n < old.budget_cpus:
        res, what = _shrink(ctx, state, old, n)
    elif n > old.budget_cpus:
        res, what = _grow(ctx, state, old, n)
    else:
        what = f"bubble kept at {n} CPUs"
    unreserved = state.with_pod(replace(old, reservation=None))
    memory = charge_memory(ctx, unreserved, res.numa, req.memory_bytes or 0)
    res = replace(res, memory_by_node=memory)
    return replace(old, info=pod, budget_cpus=n, reservation=res), what


def _shrink(ctx: Context, state: State, old: PodRecord, n: int) -> tuple[Reservation, str]:
    assert old.reservation is not None
    pool = pod_pool(state, old)
    drop = old.budget_cpus - n
    keep_min = 1 if running_shared(state, old.id) else 0
    if len(pool) - drop < keep_min:
        raise AdmissionError(
            "PodResizeError",
            f"cannot shrink pod {old.namespace}/{old.name} from {old.budget_cpus} to {n} CPUs: "
            f"its shared pool {pool or '-'} has {len(pool)} CPUs and exclusive slices cannot shrink",
        )
    keep = take_by_topology(ctx.topo, pool, len(pool) - drop, ctx.options)
    bubble = old.reservation.cpus - (pool - keep)
    return replace(old.reservation, cpus=bubble), f"bubble shrunk to {n} CPUs {bubble}"


def _grow(ctx: Context, state: State, old: PodRecord, n: int) -> tuple[Reservation, str]:
    assert old.reservation is not None
    extra = n - old.budget_cpus
    avail = ctx.avail(state)
    home = ctx.topo.cpus_of_nodes(old.reservation.numa)
    strict = ctx.cfg.topology.policy in ("restricted", "single-numa-node")
    if len(avail & home) < extra and (strict or len(avail) < extra):
        raise AdmissionError(
            "TopologyAffinityError",
            f"cannot grow pod {old.namespace}/{old.name} from {old.budget_cpus} to {n} CPUs: "
            f"NUMA {old.reservation.numa} has {len(avail & home)} free CPUs, the node "
            f"{len(avail)}, policy {ctx.cfg.topology.policy}",
        )
    more = allocate_cpus(ctx.topo, avail, extra, home, ctx.options)
    bubble = old.reservation.cpus | more
    numa = old.reservation.numa | ctx.topo.nodes_of_cpus(more)
    return replace(old.reservation, cpus=bubble, numa=numa), f"bubble grown to {n} CPUs {bubble}"
