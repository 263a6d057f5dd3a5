"""Protobuf <-> core types. The only module where a CPU set becomes a string."""

from __future__ import annotations

from collections.abc import Mapping

from nri_podres._proto import api_pb2 as pb
from nri_podres.cpuset import CPUSet, NodeSet
from nri_podres.resources import ANNOTATIONS, Assignment, ContainerInfo, PodInfo


def _opt(msg: object, name: str) -> int | None:
    """The value of an Optional* wrapper field, or None when absent."""
    if not msg.HasField(name):  # type: ignore[attr-defined]
        return None
    return int(getattr(msg, name).value)


def _cpu_memory_values(res: pb.LinuxResources) -> dict[str, int | None]:
    cpu = res.cpu if res.HasField("cpu") else None
    mem = res.memory if res.HasField("memory") else None
    return {
        "cpu_shares": _opt(cpu, "shares") if cpu else None,
        "cpu_quota": _opt(cpu, "quota") if cpu else None,
        "cpu_period": _opt(cpu, "period") if cpu else None,
        "memory_limit_bytes": _opt(mem, "limit") if mem else None,
    }


def _own_annotations(annotations: Mapping[str, str]) -> dict[str, str]:
    """Ours only: a kubelet sets a dozen others, which no decision reads."""
    return {key: annotations[key] for key in ANNOTATIONS if key in annotations}


def pod_from_pb(pod: pb.PodSandbox) -> PodInfo:
    """The pod budget is the sandbox's ``linux.pod_resources`` (absent for most pods)."""
    values: dict[str, int | None] = {}
    if pod.HasField("linux") and pod.linux.HasField("pod_resources"):
        values = _cpu_memory_values(pod.linux.pod_resources)
    return PodInfo(
        id=pod.id,
        name=pod.name,
        namespace=pod.namespace,
        uid=pod.uid,
        annotations=_own_annotations(pod.annotations),
        **values,  # type: ignore[arg-type]
    )


def _parse_or_none(cls: type[CPUSet] | type[NodeSet], text: str) -> CPUSet | NodeSet | None:
    if not text:
        return None
    try:
        return cls.parse(text)
    except ValueError:
        return None  # a set we cannot read is a set we must not trust


def container_from_pb(ctr: pb.Container) -> ContainerInfo:
    values: dict[str, int | None] = {}
    cpus = mems = None
    if ctr.HasField("linux") and ctr.linux.HasField("resources"):
        res = ctr.linux.resources
        values = _cpu_memory_values(res)
        cpus = _parse_or_none(CPUSet, res.cpu.cpus)
        mems = _parse_or_none(NodeSet, res.cpu.mems)
    return ContainerInfo(
        id=ctr.id,
        pod_id=ctr.pod_sandbox_id,
        name=ctr.name,
        annotations=_own_annotations(ctr.annotations),
        cpus=cpus,  # type: ignore[arg-type]
        mems=mems,  # type: ignore[arg-type]
        running=ctr.state in (pb.CONTAINER_RUNNING, pb.CONTAINER_CREATED, pb.CONTAINER_PAUSED, pb.CONTAINER_UNKNOWN),
        **values,  # type: ignore[arg-type]
    )


def resize_values(res: pb.LinuxResources) -> dict[str, int | None]:
    """What an UpdateContainer (in-place resize) asks for."""
    return _cpu_memory_values(res)


def _fill_resources(res: pb.LinuxResources, a: Assignment) -> None:
    """Written in place: building a message apart and copying it in costs as much again."""
    res.cpu.cpus = str(a.cpus)
    res.cpu.mems = str(a.mems)
    if a.cpu_quota is not None:
        res.cpu.quota.value = a.cpu_quota


def adjustment_from_assignment(a: Assignment) -> pb.ContainerAdjustment:
    adjust = pb.ContainerAdjustment()
    _fill_resources(adjust.linux.resources, a)
    return adjust


def update_from_assignment(container_id: str, a: Assignment) -> pb.ContainerUpdate:
    update = pb.ContainerUpdate(container_id=container_id)
    _fill_resources(update.linux.resources, a)
    return update
