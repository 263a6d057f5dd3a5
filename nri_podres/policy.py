"""Decisions per runtime event: pure functions from (machine, config, state, event).

Each returns a ``Decision``: the new State, the subject container's Assignment (if
any), the other containers whose Assignment changed, and a short reason. On an
``AdmissionError`` nothing changes (the caller keeps its old State).

Containers are learned one at a time. A pod's shared containers run on its bubble
minus the exclusive slices of its *running* containers, so a later exclusive
container shrinks them (they appear in ``changed``), and an exclusive container
that stops (a finished init container) gives its slice back to the pool.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from nri_podres.admission import admit_pod, place
from nri_podres.allocator import take_by_topology
from nri_podres.config import Config
from nri_podres.cpuset import CPUSet
from nri_podres.errors import AdmissionError
from nri_podres.placement import Context, PodMode, classify, refresh, take_slice
from nri_podres.pod_resize import resize_pod
from nri_podres.reconcile import reconcile as _reconcile
from nri_podres.resources import ContainerInfo, Decision, Kind, PodInfo
from nri_podres.state import ContainerRecord, State
from nri_podres.topology import Topology

__all__ = [
    "create_container", "reconcile", "remove_container", "remove_pod", "run_pod",
    "stop_container", "update_container", "update_pod",
]


def run_pod(topo: Topology, cfg: Config, state: State, pod: PodInfo) -> Decision:
    """Reserve the pod's bubble (or note it uses the node shared pool)."""
    ctx = Context(topo, cfg)
    if pod.id in state.pods:
        return Decision(state, None, {}, "pod already known")
    new, reason = admit_pod(ctx, state, pod)
    new, changed = refresh(ctx, state, new, ())
    return Decision(new, None, changed, reason)


def create_container(
    topo: Topology, cfg: Config, state: State, pod: PodInfo, ctr: ContainerInfo
) -> Decision:
    """The container's assignment, and every other container it changes."""
    _check_identity(pod, ctr)
    ctx = Context(topo, cfg)
    known = state.containers.get(ctr.id)
    if known is not None and known.running:
        return Decision(state, known.assignment, {}, "container already placed")
    base, prefix = state, ""
    if ctr.pod_id not in base.pods:
        base, prefix = admit_pod(ctx, base, replace(pod, id=ctr.pod_id))
        prefix += "; "
    record, reason = place(ctx, base, ctr)
    new, changed = refresh(ctx, state, base.with_container(record), [ctr.pod_id], ctr.id)
    return Decision(new, record.assignment, changed, prefix + reason)


def _check_identity(pod: PodInfo, ctr: ContainerInfo) -> None:
    """A runtime always names the container and its pod; an empty id would alias "no container"."""
    if not ctr.id:
        raise AdmissionError("InvalidRequest", f"container {ctr.name!r} of pod {pod.namespace}/{pod.name} has no id")
    if not ctr.pod_id or (pod.id and ctr.pod_id != pod.id):
        raise AdmissionError(
            "InvalidRequest",
            f"container {ctr.name!r} names pod sandbox {ctr.pod_id!r} but arrived with pod {pod.namespace}/{pod.name} ({pod.id!r})",
        )


def stop_container(topo: Topology, cfg: Config, state: State, ctr_id: str) -> Decision:
    """A stopped container's exclusive CPUs go back to its pod's pool (or the node)."""
    ctr = state.containers.get(ctr_id)
    if ctr is None or not ctr.running:
        return Decision(state, None, {}, "not running: nothing to release")
    ctx = Context(topo, cfg)
    new = state.with_container(replace(ctr, running=False))
    new, changed = refresh(ctx, state, new, [ctr.pod_id], ctr_id)
    return Decision(new, None, changed, _released(ctr))


def remove_container(topo: Topology, cfg: Config, state: State, ctr_id: str) -> Decision:
    ctr = state.containers.get(ctr_id)
    if ctr is None:
        return Decision(state, None, {}, "unknown container")
    ctx = Context(topo, cfg)
    new, changed = refresh(ctx, state, state.without_container(ctr_id), [ctr.pod_id], ctr_id)
    return Decision(new, None, changed, _released(ctr) if ctr.running else "removed")


def _released(ctr: ContainerRecord) -> str:
    if ctr.kind in (Kind.POD_EXCLUSIVE, Kind.NODE_EXCLUSIVE):
        return f"released exclusive CPUs {ctr.assignment.cpus}"
    return "stopped"


def remove_pod(topo: Topology, cfg: Config, state: State, pod_id: str) -> Decision:
    """Release the bubble; the node shared pool grows."""
    pod = state.pods.get(pod_id)
    if pod is None and pod_id not in state.by_pod:
        return Decision(state, None, {}, "unknown pod")
    ctx = Context(topo, cfg)
    new, changed = refresh(ctx, state, state.without_pod(pod_id), ())
    bubble = pod.bubble if pod is not None else None
    return Decision(new, None, changed, f"released bubble {bubble}" if bubble else "removed")


def update_container(
    topo: Topology,
    cfg: Config,
    state: State,
    ctr_id: str,
    cpu_shares: int | None,
    cpu_quota: int | None,
    cpu_period: int | None,
    memory_limit_bytes: int | None,
) -> Decision:
    """In-place resize: keep the decision, or grow/shrink it where the pools allow."""
    old = state.containers.get(ctr_id)
    if old is None or not old.running:
        return Decision(state, None, {}, "unknown or stopped container: nothing to do")
    ctx = Context(topo, cfg)
    pod = state.pods[old.pod_id]
    info = ContainerInfo(ctr_id, old.pod_id, old.name, {}, cpu_shares, cpu_quota, cpu_period,
                         memory_limit_bytes)
    kind, n = classify(ctx, PodMode(pod.mode), pod.info, info)
    if (kind, n) == (old.kind, old.cpus_requested):
        return Decision(state, old.assignment, {}, "resize keeps the same placement")
    try:
        record, reason = _resized(ctx, state, old, info, kind, n)
    except AdmissionError as exc:
        return Decision(state, old.assignment, {}, f"kept {old.assignment.cpus}: {exc}")
    without = state.without_container(ctr_id)
    new, changed = refresh(ctx, state, without.with_container(record), [old.pod_id], ctr_id)
    return Decision(new, record.assignment, changed, reason)


def _resized(
    ctx: Context, state: State, old: ContainerRecord, info: ContainerInfo, kind: Kind, n: int
) -> tuple[ContainerRecord, str]:
    if kind is Kind.POD_EXCLUSIVE and old.kind is Kind.POD_EXCLUSIVE:
        pod = state.pods[old.pod_id]
        mine = old.assignment.cpus
        if n < old.cpus_requested:
            keep = take_by_topology(ctx.topo, mine, n, ctx.options)
        else:
            extra = take_slice(ctx, state, pod, old.name, n - old.cpus_requested)
            keep = mine | extra
        assignment = replace(old.assignment, cpus=keep)
        return replace(old, cpus_requested=n, assignment=assignment), f"resized to {keep}"
    return place(ctx, state.without_container(old.id), info)


def update_pod(topo: Topology, cfg: Config, state: State, pod: PodInfo) -> Decision:
    """Pod-level resize: grow or shrink the bubble, or say why it cannot."""
    ctx = Context(topo, cfg)
    old = state.pods.get(pod.id)
    if old is None:
        return run_pod(topo, cfg, state, pod)
    new_pod, reason = resize_pod(ctx, state, old, pod)
    new, changed = refresh(ctx, state, state.with_pod(new_pod), [pod.id])
    return Decision(new, None, changed, reason)


def reconcile(
    topo: Topology,
    cfg: Config,
    pods: Iterable[PodInfo],
    containers: Iterable[ContainerInfo],
    checkpoint: State | None,
) -> Decision:
    """Rebuild the state from what the runtime reports; running containers stay put."""
    return _reconcile(Context(topo, cfg), list(pods), list(containers), checkpoint)


def pod_cpus(state: State, pod_id: str) -> CPUSet | None:
    """The pod's bubble, for display."""
    pod = state.pods.get(pod_id)
    return None if pod is None else pod.bubble


