"""Read-only views of the live allocation: ``status``, ``explain`` and the metrics snapshot."""

from __future__ import annotations

from typing import Any

from nri_podres.cpuset import CPUSet
from nri_podres.errors import PodresError
from nri_podres.placement import Context
from nri_podres.resources import Pool
from nri_podres.state import PodRecord, State
from nri_podres.topology import Topology


def _pod_json(state: State, pod: PodRecord, reasons: dict[str, str]) -> dict[str, Any]:
    return {
        "id": pod.id,
        "name": pod.name,
        "namespace": pod.namespace,
        "uid": pod.info.uid,
        "mode": pod.mode,
        "cpus": str(pod.bubble) if pod.bubble is not None else "",
        "numa_nodes": list(pod.numa) if pod.numa is not None else [],
        "memory_bytes": dict(pod.reservation.memory_by_node) if pod.reservation else {},
        "why": reasons.get(pod.id, pod.note),
        "containers": [
            {
                "id": c.id,
                "name": c.name,
                "kind": c.kind.value,
                "pool": c.assignment.pool.value,
                "cpus": str(c.assignment.cpus),
                "mems": str(c.assignment.mems),
                "cpu_quota": c.assignment.cpu_quota,
                "running": c.running,
                "why": reasons.get(c.id, ""),
            }
            for c in state.pod_containers(pod.id)
        ],
    }


def status(topo: Topology, ctx: Context, state: State, reasons: dict[str, str], synchronized: bool) -> dict[str, Any]:
    return {
        "synchronized": synchronized,
        "online_cpus": str(topo.online),
        "reserved_cpus": str(ctx.reserved),
        "node_shared_pool": str(ctx.node_pool(state)),
        "numa": state.node_usage(topo, ctx.reserved),
        "pods": [_pod_json(state, p, reasons) for _, p in sorted(state.pods.items(), key=lambda kv: (kv[1].namespace, kv[1].name))],
    }


def explain(state: State, reasons: dict[str, str], query: str) -> dict[str, Any]:
    """One pod by ``namespace/name``, ``name``, uid or sandbox id."""
    ns, _, name = query.rpartition("/")
    matches = [
        p for p in state.pods.values()
        if query in (p.id, p.info.uid) or (p.name == name and (not ns or p.namespace == ns))
    ]
    if not matches:
        raise PodresError(f"no pod matches {query!r}")
    if len(matches) > 1:
        found = ", ".join(f"{p.namespace}/{p.name}" for p in matches)
        raise PodresError(f"{query!r} is ambiguous: {found}; use namespace/name")
    return _pod_json(state, matches[0], reasons)


def metrics_snapshot(topo: Topology, ctx: Context, state: State) -> dict[str, Any]:
    numa: dict[str, Any] = {}
    for row in state.node_usage(topo, ctx.reserved):
        node = topo.node[row["node"]]
        exclusive = CPUSet.parse(row["exclusive_cpus"])
        pod_pool = CPUSet.parse(row["pod_pool_cpus"])
        free = CPUSet.parse(row["free_cpus"])
        reserved = ctx.reserved & node.cpus
        total = node.memory_bytes
        charged = row["memory_charged_bytes"]
        numa[str(node.id)] = {
            # a partition of the node's CPUs; "free" CPUs form the node shared pool
            "cpus": {"exclusive": len(exclusive), "pod-shared": len(pod_pool), "reserved": len(reserved), "free": len(free)},
            "memory_bytes": {"charged": charged, "free": max(0, total - charged) if total is not None else 0},
        }
    return {
        "numa": numa,
        "pods": sum(1 for p in state.pods.values() if p.bubble is not None),
        "exclusive_containers": sum(1 for c in state.containers.values() if c.running and c.assignment.pool is Pool.EXCLUSIVE),
    }
