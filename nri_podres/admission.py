"""Admitting a pod and placing one container: the two steps every event reuses.

``policy`` wraps them per runtime event; ``reconcile`` uses them to place what it
could not adopt. Pure, like everything in the core.
"""

from __future__ import annotations

from nri_podres.errors import AdmissionError
from nri_podres.placement import (
    Context,
    PodMode,
    classify,
    pod_mode,
    pod_pool,
    preferred_nodes,
    reserve,
    take_slice,
)
from nri_podres.resources import ContainerInfo, Kind, PodInfo, request_from_container, request_from_pod
from nri_podres.state import ContainerRecord, PodRecord, State


def admit_pod(ctx: Context, state: State, pod: PodInfo) -> tuple[State, str]:
    mode = pod_mode(ctx, pod)
    prefer = preferred_nodes(ctx, pod)
    req = request_from_pod(pod)
    if mode is PodMode.BUBBLE:
        n = req.whole_cpus
        res, note = reserve(ctx, state, n, req.memory_bytes or 0, prefer)
        record = PodRecord(pod, mode.value, n, res, note)
        reason = f"bubble of {n} CPUs {res.cpus} on NUMA {res.numa}"
    elif mode is PodMode.MEMORY_ONLY:
        res, note = reserve(ctx, state, 0, req.memory_bytes or 0, prefer)
        record = PodRecord(pod, mode.value, 0, res, note)
        reason = f"fractional CPU budget: node shared CPUs, memory pinned to NUMA {res.numa}"
    else:
        record = PodRecord(pod, mode.value, 0, None)
        note = ""
        reason = f"{mode.value} pod: node shared pool"
    return state.with_pod(record), reason + (f" ({note})" if note else "")


def place(ctx: Context, state: State, ctr: ContainerInfo) -> tuple[ContainerRecord, str]:
    """Place one container of a known pod (no other container is touched here)."""
    pod = state.pods[ctr.pod_id]
    kind, n = classify(ctx, PodMode(pod.mode), pod.info, ctr)
    res = None
    if kind is Kind.POD_EXCLUSIVE:
        cpus = take_slice(ctx, state, pod, ctr.name, n)
        reason = f"{n} exclusive CPUs {cpus} from the bubble of {pod.namespace}/{pod.name}"
    elif kind is Kind.POD_SHARED:
        cpus = pod_pool(state, pod)
        if not cpus:
            raise AdmissionError(
                "EmptyPodSharedPoolError",
                f"pod rejected, shared container {ctr.name} has no cpus left in the pool of pod "
                f"{pod.namespace}/{pod.name}: exclusive slices hold all {pod.budget_cpus}",
            )
        reason = f"pod shared pool {cpus} of {pod.namespace}/{pod.name}"
    elif kind is Kind.NODE_EXCLUSIVE:
        res, note = reserve(ctx, state, n, request_from_container(ctr).memory_bytes or 0, None)
        cpus = res.cpus
        reason = f"{n} exclusive CPUs {cpus} from the node (container scope)" + (
            f" ({note})" if note else ""
        )
    else:
        cpus = ctx.node_pool(state)
        reason = "node shared pool"
    mems = res.numa if res is not None else pod.numa
    assignment = ctx.assignment(kind, cpus, mems)
    record = ContainerRecord(ctr.id, ctr.pod_id, ctr.name, kind, n, assignment, True, res)
    return record, reason
