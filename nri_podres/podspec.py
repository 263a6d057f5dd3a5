"""What the kubelet sends the runtime for a Kubernetes Pod manifest.

A model, not the kubelet: it reads a ``v1`` Pod (pod-level ``spec.resources``,
``initContainers`` with ``restartPolicy: Always`` as sidecars, ``containers``)
and produces the CRI numbers the runtime (and so NRI) would see, with the
kubelet's formulas: API defaulting (request := limit), pod-limit inheritance
for containers without limits (PodLevelResources), shares/quota conversion,
and the creation order (init and sidecar containers in spec order, each
standard init container run to completion before the next; then the apps).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nri_podres.errors import PodresError
from nri_podres.quantity import parse_quantity

CPU_PERIOD_US = 100_000
MIN_SHARES, MAX_SHARES = 2, 262_144


class ManifestError(PodresError):
    """A manifest the model cannot read; names the document and the field."""


@dataclass(frozen=True, slots=True)
class Amounts:
    """CPU in millis and memory in bytes; None where the manifest says nothing."""

    cpu_request_m: int | None = None
    cpu_limit_m: int | None = None
    memory_request_bytes: int | None = None
    memory_limit_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class CRIValues:
    cpu_shares: int
    cpu_quota: int | None  # None: no CFS limit
    cpu_period: int | None
    memory_limit_bytes: int | None


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    name: str
    kind: str  # init | sidecar | app
    amounts: Amounts


@dataclass(frozen=True, slots=True)
class PodSpec:
    name: str
    namespace: str
    uid: str
    annotations: Mapping[str, str]
    pod_amounts: Amounts | None  # spec.resources, when set
    containers: tuple[ContainerSpec, ...]  # in creation order

    def sandbox_values(self) -> CRIValues:
        return cri_values(self.effective_pod_amounts())

    def effective_pod_amounts(self) -> Amounts:
        """Pod-level values where set, else the containers' aggregate (max of init phase, sum of the rest)."""
        agg = _aggregate(self.containers)
        if self.pod_amounts is None:
            return agg
        p = self.pod_amounts
        return Amounts(
            p.cpu_request_m if p.cpu_request_m is not None else agg.cpu_request_m,
            p.cpu_limit_m if p.cpu_limit_m is not None else agg.cpu_limit_m,
            p.memory_request_bytes if p.memory_request_bytes is not None else agg.memory_request_bytes,
            p.memory_limit_bytes if p.memory_limit_bytes is not None else agg.memory_limit_bytes,
        )

    def container_values(self, ctr: ContainerSpec) -> CRIValues:
        """Container limits fall back to the pod-level limits (PodLevelResources)."""
        pod = self.pod_amounts or Amounts()
        a = ctr.amounts
        cpu_limit = a.cpu_limit_m if a.cpu_limit_m is not None else pod.cpu_limit_m
        memory_limit = a.memory_limit_bytes if a.memory_limit_bytes is not None else pod.memory_limit_bytes
        cpu_request = a.cpu_request_m if a.cpu_request_m is not None else cpu_limit
        return cri_values(Amounts(cpu_request, cpu_limit, None, memory_limit))


def shares_from_millis(millis: int | None) -> int:
    if not millis:
        return MIN_SHARES
    return max(MIN_SHARES, min(MAX_SHARES, millis * 1024 // 1000))


def quota_from_millis(millis: int | None, period_us: int = CPU_PERIOD_US) -> int | None:
    if not millis:
        return None
    return max(1000, millis * period_us // 1000)


def cri_values(a: Amounts) -> CRIValues:
    request = a.cpu_request_m if a.cpu_request_m is not None else a.cpu_limit_m
    quota = quota_from_millis(a.cpu_limit_m)
    return CRIValues(
        cpu_shares=shares_from_millis(request),
        cpu_quota=quota,
        cpu_period=CPU_PERIOD_US if quota is not None else None,
        memory_limit_bytes=a.memory_limit_bytes or None,
    )


def _aggregate(containers: tuple[ContainerSpec, ...]) -> Amounts:
    def total(kinds: set[str], field: str) -> int | None:
        values = [getattr(c.amounts, field) for c in containers if c.kind in kinds]
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    def phase_max(field: str) -> int | None:
        steady = total({"sidecar", "app"}, field)
        inits = [getattr(c.amounts, field) for c in containers if c.kind == "init"]
        values = [v for v in [steady, *inits] if v is not None]
        return max(values) if values else None

    return Amounts(phase_max("cpu_request_m"), phase_max("cpu_limit_m"), phase_max("memory_request_bytes"), phase_max("memory_limit_bytes"))


# ---- reading manifests ---------------------------------------------------------


def pod_from_manifest(doc: Mapping[str, Any], where: str) -> PodSpec:
    if doc.get("kind", "Pod") != "Pod":
        raise ManifestError(f"{where}: kind {doc.get('kind')!r} is not supported (want Pod)")
    meta = _mapping(doc.get("metadata", {}), f"{where}: metadata")
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{where}: metadata.name is required")
    namespace = str(meta.get("namespace", "default"))
    spec = _mapping(doc.get("spec", {}), f"{where}: spec")
    pod_amounts = _amounts(spec["resources"], f"{where}: spec.resources") if "resources" in spec else None
    containers: list[ContainerSpec] = []
    for i, raw in enumerate(spec.get("initContainers") or []):
        path = f"{where}: spec.initContainers[{i}]"
        c = _mapping(raw, path)
        kind = "sidecar" if c.get("restartPolicy") == "Always" else "init"
        containers.append(_container(c, kind, path))
    apps = spec.get("containers") or []
    if not apps:
        raise ManifestError(f"{where}: spec.containers must list at least one container")
    for i, raw in enumerate(apps):
        path = f"{where}: spec.containers[{i}]"
        containers.append(_container(_mapping(raw, path), "app", path))
    _check_unique(containers, where)
    uid = str(meta.get("uid") or hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:32])
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    return PodSpec(name, namespace, uid, annotations, pod_amounts, tuple(containers))


def _check_unique(containers: list[ContainerSpec], where: str) -> None:
    seen: set[str] = set()
    for c in containers:
        if c.name in seen:
            raise ManifestError(f"{where}: container name {c.name!r} is used twice")
        seen.add(c.name)


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ManifestError(f"{where} must be a mapping, got {type(value).__name__}")
    return value


def _container(c: Mapping[str, Any], kind: str, where: str) -> ContainerSpec:
    name = c.get("name")
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{where}.name is required")
    amounts = _amounts(c["resources"], f"{where}.resources") if "resources" in c else Amounts()
    return ContainerSpec(name, kind, amounts)


def _amounts(raw: object, where: str) -> Amounts:
    res = _mapping(raw or {}, where)
    requests = _mapping(res.get("requests") or {}, f"{where}.requests")
    limits = _mapping(res.get("limits") or {}, f"{where}.limits")
    cpu_req = _cpu(requests.get("cpu"), f"{where}.requests.cpu")
    cpu_lim = _cpu(limits.get("cpu"), f"{where}.limits.cpu")
    mem_req = _bytes(requests.get("memory"), f"{where}.requests.memory")
    mem_lim = _bytes(limits.get("memory"), f"{where}.limits.memory")
    # API defaulting: a limit without a request makes the request equal to the limit.
    if cpu_req is None and cpu_lim is not None:
        cpu_req = cpu_lim
    if mem_req is None and mem_lim is not None:
        mem_req = mem_lim
    if cpu_req is not None and cpu_lim is not None and cpu_req > cpu_lim:
        raise ManifestError(f"{where}: cpu request {cpu_req}m exceeds the limit {cpu_lim}m")
    return Amounts(cpu_req, cpu_lim, mem_req, mem_lim)


def _cpu(value: object, where: str) -> int | None:
    if value is None:
        return None
    try:
        millis = parse_quantity(str(value)) * 1000
    except ValueError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    if millis < 0 or millis != int(millis):
        raise ManifestError(f"{where}: {value!r} is not a whole number of millicpus")
    return int(millis)


def _bytes(value: object, where: str) -> int | None:
    if value is None:
        return None
    try:
        amount = parse_quantity(str(value))
    except ValueError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    if amount < 0:
        raise ManifestError(f"{where}: {value!r} is negative")
    return int(amount)
