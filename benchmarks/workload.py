"""The pods the benchmarks place: the design's example pod, small budget pods, ordinary pods.

Every 10 pods hold
  1 "db" pod:     8-CPU / 16 GiB budget; ``database`` 6 exclusive CPUs + 2 sidecars
  2 "small" pods: 2-CPU / 2 GiB budget; ``app`` 1 exclusive CPU + 1 sidecar
  7 ordinary pods (no pod-level budget): one burstable container, 250m request, 1 CPU limit
so 500 pods hold 700 containers on 600 whole CPUs of bubbles. The CRI values are the
ones a kubelet sends (a sidecar without resources gets the pod's limits, shares 2).

Also the protobuf forms the runtime sends (``pod_pb``/``container_pb``), with the
labels, annotations, environment and mounts of a typical kubelet container, so
that codec and conversion costs are not flattered by empty messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from nri_podres._proto import api_pb2 as pb
from nri_podres.resources import Assignment, ContainerInfo, PodInfo
from nri_podres.topology import Topology

GIB = 1 << 30
PERIOD_US = 100_000
SIDECAR_SHARES = 2  # no CPU request

# Synthetic machines (nri_podres.machine.synthetic keyword arguments) by label.
MACHINES: dict[str, dict[str, int]] = {
    "768/8N": {"sockets": 2, "numa_per_socket": 4, "l3_per_numa": 4, "cores_per_l3": 12, "threads_per_core": 2},
    "768/24N": {"sockets": 2, "numa_per_socket": 12, "l3_per_numa": 2, "cores_per_l3": 8, "threads_per_core": 2},
    "768/64N": {"sockets": 2, "numa_per_socket": 32, "l3_per_numa": 1, "cores_per_l3": 6, "threads_per_core": 2},
    "4096/16N": {"sockets": 2, "numa_per_socket": 8, "l3_per_numa": 8, "cores_per_l3": 16, "threads_per_core": 2},
}
MACHINE_MEMORY_BYTES = {"768/8N": 2048 * GIB, "768/24N": 2048 * GIB, "768/64N": 2048 * GIB, "4096/16N": 8192 * GIB}


def machine(label: str) -> Topology:
    from nri_podres.machine import synthetic

    shape = MACHINES[label]
    nodes = shape["sockets"] * shape["numa_per_socket"]
    return synthetic(**shape, memory_per_node_bytes=MACHINE_MEMORY_BYTES[label] // nodes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class PodSpec:
    pod: PodInfo
    containers: tuple[ContainerInfo, ...]
    kind: str  # "db", "small", "ordinary"


def budget_pod(pod_id: str, cpus: int, memory_bytes: int) -> PodInfo:
    return PodInfo(pod_id, pod_id, "bench", f"uid-{pod_id}", {}, cpus * 1024, cpus * PERIOD_US, PERIOD_US, memory_bytes)


def guaranteed(pod: PodInfo, name: str, cpus: int, memory_bytes: int) -> ContainerInfo:
    return ContainerInfo(f"{pod.id}-{name}", pod.id, name, {}, cpus * 1024, cpus * PERIOD_US, PERIOD_US, memory_bytes)


def sidecar(pod: PodInfo, name: str) -> ContainerInfo:
    """No resources of its own: the kubelet fills in the pod's limits."""
    return ContainerInfo(f"{pod.id}-{name}", pod.id, name, {}, SIDECAR_SHARES, pod.cpu_quota, pod.cpu_period,
                         pod.memory_limit_bytes)


def db_pod(pod_id: str) -> PodSpec:
    pod = budget_pod(pod_id, 8, 16 * GIB)
    ctrs = (guaranteed(pod, "database", 6, 12 * GIB), sidecar(pod, "metrics-exporter"), sidecar(pod, "backup-agent"))
    return PodSpec(pod, ctrs, "db")


def small_pod(pod_id: str) -> PodSpec:
    pod = budget_pod(pod_id, 2, 2 * GIB)
    return PodSpec(pod, (guaranteed(pod, "app", 1, GIB), sidecar(pod, "proxy")), "small")


def ordinary_pod(pod_id: str) -> PodSpec:
    pod = PodInfo(pod_id, pod_id, "bench", f"uid-{pod_id}")
    ctr = ContainerInfo(f"{pod_id}-web", pod_id, "web", {}, 256, PERIOD_US, PERIOD_US, GIB // 2)
    return PodSpec(pod, (ctr,), "ordinary")


def pod_mix(start: int, count: int, prefix: str = "p") -> Iterator[PodSpec]:
    """Pods number ``start`` .. ``start + count - 1`` of the mix."""
    for i in range(start, start + count):
        slot = i % 10
        pod_id = f"{prefix}{i:04d}"
        if slot == 0:
            yield db_pod(pod_id)
        elif slot in (3, 7):
            yield small_pod(pod_id)
        else:
            yield ordinary_pod(pod_id)


def pods_with_containers(n_containers: int, prefix: str = "p") -> list[PodSpec]:
    """The first pods of the mix holding exactly ``n_containers`` containers (the last one trimmed)."""
    out: list[PodSpec] = []
    total = 0
    for spec in pod_mix(0, n_containers, prefix):
        if total >= n_containers:
            break
        keep = spec.containers[: n_containers - total]
        out.append(PodSpec(spec.pod, keep, spec.kind))
        total += len(keep)
    return out


# --- protobuf, as the runtime sends it -------------------------------------------


def _resources(res: pb.LinuxResources, shares: int | None, quota: int | None, period: int | None,
               memory: int | None) -> None:
    if shares is not None:
        res.cpu.shares.value = shares
    if quota is not None:
        res.cpu.quota.value = quota
    if period is not None:
        res.cpu.period.value = period
    if memory is not None:
        res.memory.limit.value = memory


def pod_pb(pod: PodInfo) -> pb.PodSandbox:
    msg = pb.PodSandbox(id=pod.id, name=pod.name, uid=pod.uid, namespace=pod.namespace, runtime_handler="runc")
    msg.labels.update({
        "io.kubernetes.pod.name": pod.name, "io.kubernetes.pod.namespace": pod.namespace,
        "io.kubernetes.pod.uid": pod.uid, "app": pod.name,
    })
    msg.annotations.update({"kubernetes.io/config.seen": "2025-01-01T00:00:00Z", "kubernetes.io/config.source": "api"})
    msg.linux.cgroup_parent = f"/kubepods/pod{pod.uid}"
    msg.linux.cgroups_path = f"/kubepods/pod{pod.uid}/{pod.id}"
    if pod.cpu_quota is not None:
        _resources(msg.linux.pod_resources, pod.cpu_shares, pod.cpu_quota, pod.cpu_period, pod.memory_limit_bytes)
    msg.ips.append("10.0.0.1")
    return msg


def container_pb(ctr: ContainerInfo, placed: Assignment | None = None, state: int = pb.CONTAINER_RUNNING) -> pb.Container:
    """``placed``: the cpuset the container runs with (what Synchronize reports)."""
    msg = pb.Container(id=ctr.id, pod_sandbox_id=ctr.pod_id, name=ctr.name, state=state)  # type: ignore[arg-type]
    msg.labels.update({
        "io.kubernetes.container.name": ctr.name, "io.kubernetes.pod.name": ctr.pod_id,
        "io.kubernetes.pod.namespace": "bench", "io.kubernetes.pod.uid": f"uid-{ctr.pod_id}",
    })
    msg.annotations.update({"io.kubernetes.container.restartCount": "0",
                            "io.kubernetes.container.terminationMessagePath": "/dev/termination-log"})
    msg.args.extend(["/bin/server", "--port=8080", "--log-level=info"])
    msg.env.extend([f"VAR_{i}=value-{i}" for i in range(8)] + ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"])
    for i, dest in enumerate(("/etc/hosts", "/dev/termination-log", "/etc/hostname", "/etc/resolv.conf",
                              "/var/run/secrets/kubernetes.io/serviceaccount")):
        msg.mounts.add(destination=dest, type="bind", source=f"/var/lib/kubelet/pods/{ctr.pod_id}/m{i}",
                       options=["rbind", "rprivate", "rw"])
    res = msg.linux.resources
    _resources(res, ctr.cpu_shares, ctr.cpu_quota, ctr.cpu_period, ctr.memory_limit_bytes)
    if placed is not None:
        res.cpu.cpus = str(placed.cpus)
        res.cpu.mems = str(placed.mems)
    msg.linux.cgroups_path = f"/kubepods/poduid-{ctr.pod_id}/{ctr.id}"
    return msg
