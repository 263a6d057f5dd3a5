"""Value types at the allocator's edge: what the runtime tells us, what we decide.

``PodInfo`` / ``ContainerInfo`` carry the CRI numbers exactly as NRI reports them
(``None`` = absent). ``request_from_*`` turn them into CPU/memory requests with the
kubelet's own inverse formulas (shares → millis, quota/period → millis).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nri_podres.cpuset import CPUSet, NodeSet

if TYPE_CHECKING:
    from nri_podres.state import State

OPT_OUT_ANNOTATION = "podres.nri.io/opt-out"
NUMA_NODE_ANNOTATION = "podres.nri.io/numa-node"
ANNOTATIONS = (OPT_OUT_ANNOTATION, NUMA_NODE_ANNOTATION)  # the only ones read (and checkpointed)
QUOTA_LIFTED = -1


@dataclass(frozen=True, slots=True)
class PodInfo:
    id: str
    name: str = ""
    namespace: str = ""
    uid: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    cpu_shares: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    memory_limit_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    id: str
    pod_id: str
    name: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    cpu_shares: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    memory_limit_bytes: int | None = None
    cpus: CPUSet | None = None
    mems: NodeSet | None = None
    running: bool = True


class Pool(enum.Enum):
    EXCLUSIVE = "exclusive"
    POD_SHARED = "pod-shared"
    NODE_SHARED = "node-shared"


class Kind(enum.Enum):
    """Our guess at a container's role, from its numbers (NRI does not say)."""

    POD_EXCLUSIVE = "pod-exclusive"  # whole CPUs carved out of its pod's bubble
    POD_SHARED = "pod-shared"  # the bubble minus the exclusive slices
    NODE_EXCLUSIVE = "node-exclusive"  # classic Guaranteed container, CPUs from the node
    NODE_SHARED = "node-shared"  # everything else

    @property
    def pool(self) -> Pool:
        if self in (Kind.POD_EXCLUSIVE, Kind.NODE_EXCLUSIVE):
            return Pool.EXCLUSIVE
        return Pool.POD_SHARED if self is Kind.POD_SHARED else Pool.NODE_SHARED


@dataclass(frozen=True, slots=True)
class Assignment:
    cpus: CPUSet
    mems: NodeSet
    pool: Pool
    cpu_quota: int | None = None  # None: leave untouched; -1: lifted


@dataclass(frozen=True, slots=True)
class Decision:
    state: State
    assignment: Assignment | None
    changed: Mapping[str, Assignment]
    reason: str


@dataclass(frozen=True, slots=True)
class Request:
    """CPU and memory a pod or container asks for, in the units the allocator uses."""

    cpu_millis: int | None  # None: no CPU limit/request visible
    guaranteed: bool  # cpu request == limit and a memory limit is set
    memory_bytes: int | None

    @property
    def whole_cpus(self) -> int:
        """The integer CPU count, or 0 when the request is not a whole number ≥ 1."""
        if self.cpu_millis is None or self.cpu_millis <= 0 or self.cpu_millis % 1000:
            return 0
        return self.cpu_millis // 1000


def millis_from_shares(shares: int) -> int:
    """The kubelet's inverse of MilliCPUToShares."""
    if shares < 2:
        return 0
    return -(-shares * 1000 // 1024)


def millis_from_quota(quota: int, period: int) -> int | None:
    if quota <= 0 or period <= 0:
        return None
    return quota * 1000 // period


def request_from_values(
    shares: int | None, quota: int | None, period: int | None, memory_limit_bytes: int | None
) -> Request:
    """Guaranteed iff the request (shares) and the limit (quota) give the same millis.

    Shares saturate at 262144 (256 CPUs), so above that the quota alone decides.
    """
    limit = None if quota is None else millis_from_quota(quota, period or 100_000)
    request = None if shares is None else millis_from_shares(shares)
    memory = memory_limit_bytes if memory_limit_bytes and memory_limit_bytes > 0 else None
    if limit is None:
        return Request(cpu_millis=request, guaranteed=False, memory_bytes=memory)
    same = request == limit or (shares == 262144 and limit >= 256_000)
    return Request(cpu_millis=limit, guaranteed=same and memory is not None, memory_bytes=memory)


def request_from_pod(pod: PodInfo) -> Request:
    return request_from_values(
        pod.cpu_shares, pod.cpu_quota, pod.cpu_period, pod.memory_limit_bytes
    )


def request_from_container(ctr: ContainerInfo) -> Request:
    return request_from_values(
        ctr.cpu_shares, ctr.cpu_quota, ctr.cpu_period, ctr.memory_limit_bytes
    )


def inherits_pod_values(pod: PodInfo, ctr: ContainerInfo) -> bool:
    """A container without resources gets the pod's limits in CRI (and shares from them)."""
    return (
        ctr.cpu_quota == pod.cpu_quota
        and (ctr.cpu_period or 100_000) == (pod.cpu_period or 100_000)
        and ctr.memory_limit_bytes == pod.memory_limit_bytes
    )
