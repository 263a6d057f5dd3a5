"""Rebuild the state from what the runtime reports (Synchronize): nothing running moves.

Order of work, every step in sorted id order so that the result is deterministic:

1. Bubbles: a pod keeps the bubble of the checkpoint when it still fits (right size,
   no reserved CPU, no overlap with bubbles adopted before it); without a checkpoint
   entry, the CPUs its containers run on are adopted as (the start of) its bubble.
2. Exclusive containers are adopted where they run when their CPUs are a valid slice
   (the right count, inside their pod's bubble — or free on the node for classic
   containers — and not overlapping another slice).
3. Pods without a valid bubble are admitted anew; partial bubbles are topped up,
   preferring their own NUMA nodes.
4. Exclusive containers without a valid slice are placed anew (falling back to the
   shared pool, with a reason, if that is impossible).
5. Shared containers get their pool.

``changed`` lists every running container whose CPUs or memory nodes differ from
what the runtime reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from nri_podres.allocator import allocate_cpus, take_by_topology
from nri_podres.cpuset import CPUSet
from nri_podres.errors import AdmissionError
from nri_podres.placement import Context, PodMode, charge_memory, classify, pod_mode, pod_pool
from nri_podres.admission import admit_pod, place
from nri_podres.resources import Assignment, ContainerInfo, Decision, Kind, PodInfo, request_from_pod
from nri_podres.state import ContainerRecord, PodRecord, Reservation, State


def reconcile(
    ctx: Context, pods: list[PodInfo], containers: list[ContainerInfo], checkpoint: State | None
) -> Decision:
    ckpt = checkpoint or State.empty()
    infos = {p.id: p for p in pods}
    for ctr in containers:
        infos.setdefault(ctr.pod_id, PodInfo(ctr.pod_id))
    members: dict[str, list[ContainerInfo]] = {}
    for ctr in sorted(containers, key=lambda c: (c.pod_id, c.id)):
        members.setdefault(ctr.pod_id, []).append(ctr)
    state, notes = State.empty(), []
    kinds = {c.id: _kind(ctx, ckpt, infos[c.pod_id], c) for c in containers}
    partial: dict[str, int] = {}
    for pod_id in sorted(infos):
        state, short = _adopt_pod(ctx, state, ckpt, infos[pod_id], members.get(pod_id, []), kinds)
        if short:
            partial[pod_id] = short
    state = _adopt_slices(ctx, state, ckpt, containers, kinds)
    state = _admit_rest(ctx, state, infos, partial, notes)
    state = _place_rest(ctx, state, containers, kinds, notes)
    changed = {
        c.id: state.containers[c.id].assignment
        for c in sorted(containers, key=lambda c: c.id)
        if c.running and (state.containers[c.id].assignment.cpus, state.containers[c.id].assignment.mems)
        != (c.cpus, c.mems)
    }
    reason = f"reconciled {len(infos)} pods, {len(containers)} containers; {len(changed)} re-placed"
    if notes:
        reason += "; " + "; ".join(notes)
    return Decision(state, None, changed, reason)


def _kind(ctx: Context, ckpt: State, pod: PodInfo, ctr: ContainerInfo) -> tuple[Kind, int]:
    known = ckpt.containers.get(ctr.id)
    if known is not None:
        return known.kind, known.cpus_requested
    return classify(ctx, _mode(ctx, ckpt, pod), pod, ctr)


def _mode(ctx: Context, ckpt: State, pod: PodInfo) -> PodMode:
    known = ckpt.pods.get(pod.id)
    if known is not None:
        return PodMode(known.mode)
    try:
        return pod_mode(ctx, pod)
    except AdmissionError:
        return PodMode.ORDINARY


def _adopt_pod(
    ctx: Context,
    state: State,
    ckpt: State,
    pod: PodInfo,
    members: list[ContainerInfo],
    kinds: Mapping[str, tuple[Kind, int]],
) -> tuple[State, int]:
    """Adopt the pod's bubble; returns how many CPUs it still lacks (-1: none adopted)."""
    mode = _mode(ctx, ckpt, pod)
    known = ckpt.pods.get(pod.id)
    if mode not in (PodMode.BUBBLE, PodMode.MEMORY_ONLY):
        return state.with_pod(PodRecord(pod, mode.value, 0, None)), 0
    budget = known.budget_cpus if known is not None else _budget(pod, mode)
    free = ctx.avail(state)
    if known is not None and known.reservation is not None:
        res = known.reservation
        if len(res.cpus) == budget and res.cpus <= free:
            return state.with_pod(replace(known, info=pod)), 0
    pod_members = [c for c in members if c.running and c.cpus and kinds[c.id][0] is not Kind.NODE_SHARED]
    seen = CPUSet()
    for c in pod_members:
        seen |= c.cpus or CPUSet()
    if mode is PodMode.MEMORY_ONLY or not seen or not seen <= free or len(seen) > budget:
        return state, -1
    numa = ctx.topo.nodes_of_cpus(seen)
    for c in pod_members:
        if c.mems and c.mems >= numa:
            numa = c.mems
            break
    memory = charge_memory(ctx, state, numa, pod.memory_limit_bytes or 0)
    record = PodRecord(pod, mode.value, budget, Reservation(seen, numa, memory), "adopted")
    return state.with_pod(record), budget - len(seen)


def _budget(pod: PodInfo, mode: PodMode) -> int:
    return request_from_pod(pod).whole_cpus if mode is PodMode.BUBBLE else 0


def _adopt_slices(
    ctx: Context,
    state: State,
    ckpt: State,
    containers: list[ContainerInfo],
    kinds: Mapping[str, tuple[Kind, int]],
) -> State:
    for ctr in sorted(containers, key=lambda c: (c.pod_id, c.id)):
        kind, n = kinds[ctr.id]
        pod = state.pods.get(ctr.pod_id)
        if not ctr.running or ctr.cpus is None or len(ctr.cpus) != n or pod is None:
            continue
        if kind is Kind.POD_EXCLUSIVE and pod.bubble is not None:
            if ctr.cpus <= pod_pool(state, pod):
                assignment = ctx.assignment(kind, ctr.cpus, pod.numa)
                state = state.with_container(
                    ContainerRecord(ctr.id, ctr.pod_id, ctr.name, kind, n, assignment)
                )
        elif kind is Kind.NODE_EXCLUSIVE and ctr.cpus <= ctx.avail(state):
            state = state.with_container(_node_slice(ctx, state, ckpt, ctr, n))
    return state


def _node_slice(ctx: Context, state: State, ckpt: State, ctr: ContainerInfo, n: int) -> ContainerRecord:
    assert ctr.cpus is not None
    known = ckpt.containers.get(ctr.id)
    if known is not None and known.reservation is not None and known.reservation.cpus == ctr.cpus:
        res = known.reservation
    else:
        numa = ctx.topo.nodes_of_cpus(ctr.cpus)
        res = Reservation(ctr.cpus, numa, charge_memory(ctx, state, numa, ctr.memory_limit_bytes or 0))
    assignment = ctx.assignment(Kind.NODE_EXCLUSIVE, ctr.cpus, res.numa)
    return ContainerRecord(ctr.id, ctr.pod_id, ctr.name, Kind.NODE_EXCLUSIVE, n, assignment, True, res)


def _admit_rest(
    ctx: Context, state: State, infos: Mapping[str, PodInfo], partial: Mapping[str, int], notes: list[str]
) -> State:
    for pod_id in sorted(infos):
        short = partial.get(pod_id, 0)
        if pod_id not in state.pods:
            try:
                state, _ = admit_pod(ctx, state, infos[pod_id])
            except AdmissionError as exc:
                notes.append(f"pod {pod_id} left on the node shared pool: {exc}")
                state = state.with_pod(PodRecord(infos[pod_id], PodMode.ORDINARY.value, 0, None))
        elif short > 0:
            state = _top_up(ctx, state, state.pods[pod_id], short, notes)
    return state


def _top_up(ctx: Context, state: State, pod: PodRecord, short: int, notes: list[str]) -> State:
    assert pod.reservation is not None
    avail = ctx.avail(state)
    if len(avail) < short:
        notes.append(f"pod {pod.id} bubble short of {short} CPUs")
        return state
    siblings = CPUSet()
    for cpu in pod.reservation.cpus:
        siblings |= ctx.topo.core_siblings(cpu)
    own = siblings & avail  # finish the cores it has, then its own NUMA nodes
    more = take_by_topology(ctx.topo, own, min(short, len(own)), ctx.options)
    home = ctx.topo.cpus_of_nodes(pod.reservation.numa)
    more |= allocate_cpus(ctx.topo, avail - more, short - len(more), home, ctx.options)
    numa = pod.reservation.numa | ctx.topo.nodes_of_cpus(more)
    res = replace(pod.reservation, cpus=pod.reservation.cpus | more, numa=numa)
    return state.with_pod(replace(pod, reservation=res))


def _place_rest(
    ctx: Context,
    state: State,
    containers: list[ContainerInfo],
    kinds: Mapping[str, tuple[Kind, int]],
    notes: list[str],
) -> State:
    ordered = sorted(containers, key=lambda c: (kinds[c.id][1] == 0, c.pod_id, c.id))
    for ctr in ordered:
        if ctr.id in state.containers:
            continue
        if not ctr.running:
            state = state.with_container(_stopped(ctx, state, ctr, kinds[ctr.id]))
            continue
        try:
            record, _ = place(ctx, state, ctr)
        except AdmissionError as exc:
            notes.append(f"container {ctr.id}: {exc}")
            record = _fallback(ctx, state, ctr)
        state = state.with_container(record)
    return state


def _stopped(ctx: Context, state: State, ctr: ContainerInfo, kind: tuple[Kind, int]) -> ContainerRecord:
    cpus = ctr.cpus if ctr.cpus is not None else ctx.node_pool(state)
    assignment = ctx.assignment(kind[0], cpus, ctr.mems)
    return ContainerRecord(ctr.id, ctr.pod_id, ctr.name, kind[0], kind[1], assignment, False)


def _fallback(ctx: Context, state: State, ctr: ContainerInfo) -> ContainerRecord:
    """Somewhere to run when the proper place is impossible: the pod pool, else the node's."""
    pod = state.pods[ctr.pod_id]
    pool = pod_pool(state, pod)
    if pool:
        assignment = ctx.assignment(Kind.POD_SHARED, pool, pod.numa)
        return ContainerRecord(ctr.id, ctr.pod_id, ctr.name, Kind.POD_SHARED, 0, assignment)
    assignment = Assignment(ctx.node_pool(state), ctx.topo.node_ids, Kind.NODE_SHARED.pool)
    return ContainerRecord(ctr.id, ctr.pod_id, ctr.name, Kind.NODE_SHARED, 0, assignment)
