"""Offline simulation: Pod manifests -> the NRI calls a runtime would make -> the daemon's own handlers.

``Simulator`` plays containerd 1.7 (NRI 0.6.1): it serializes each request,
passes it through the same ``Stub.handle`` the daemon serves the socket with,
applies the replies (the new container's adjustment and the updates for the
others) to its model of the running containers, and records the outcome.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from nri_podres._proto import api_pb2 as pb
from nri_podres.config import Config
from nri_podres.errors import RPCError
from nri_podres.nri.stub import PLUGIN_SERVICE, Stub
from nri_podres.placement import Context
from nri_podres.plugin import PodresPlugin
from nri_podres.podspec import CRIValues, ContainerSpec, PodSpec
from nri_podres.topology import Topology


@dataclass
class ContainerOutcome:
    name: str
    kind: str
    id: str
    cpus: str = ""
    mems: str = ""
    cpu_quota: int | None = None
    pool: str = "node-shared"
    state: str = "created"


@dataclass
class PodOutcome:
    spec: PodSpec
    sandbox: pb.PodSandbox
    admitted: bool = True
    error: dict[str, str] | None = None
    containers: list[ContainerOutcome] = field(default_factory=list)


def _id(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def _resources(values: CRIValues) -> pb.LinuxResources:
    res = pb.LinuxResources()
    res.cpu.shares.value = values.cpu_shares
    if values.cpu_quota is not None:
        res.cpu.quota.value = values.cpu_quota
        res.cpu.period.value = values.cpu_period or 100_000
    if values.memory_limit_bytes is not None:
        res.memory.limit.value = values.memory_limit_bytes
    return res


def _split_error(message: str) -> dict[str, str]:
    reason, sep, rest = message.partition(": ")
    if sep and reason.isidentifier():
        return {"reason": reason, "message": rest}
    return {"reason": "Error", "message": message}


class Simulator:
    def __init__(self, topology: Topology, config: Config) -> None:
        self.plugin = PodresPlugin(topology, config)
        self.stub = Stub(self.plugin, config.plugin.name, config.plugin.index)
        self.pods: dict[str, PodOutcome] = {}
        self._containers: dict[str, pb.Container] = {}  # the runtime's view of live containers
        self._call("Configure", pb.ConfigureRequest(runtime_name="containerd", runtime_version="1.7.24"), pb.ConfigureResponse)
        self._call("Synchronize", pb.SynchronizeRequest(), pb.SynchronizeResponse)

    def _call(self, method: str, request: Any, response_type: type[Any]) -> Any:
        return response_type.FromString(self.stub.handle(PLUGIN_SERVICE, method, request.SerializeToString()))

    def _event(self, event: int, pod: pb.PodSandbox, container: pb.Container | None = None) -> None:
        req = pb.StateChangeEvent(event=event, pod=pod)
        if container is not None:
            req.container.CopyFrom(container)
        self._call("StateChange", req, pb.Empty)

    # ---- runtime actions ----

    def apply(self, spec: PodSpec) -> PodOutcome:
        key = f"{spec.namespace}/{spec.name}"
        if key in self.pods:
            self.delete(spec.name, spec.namespace)
        sandbox = pb.PodSandbox(id=_id("pod", key), name=spec.name, uid=spec.uid, namespace=spec.namespace, annotations=spec.annotations)
        sandbox.linux.pod_resources.CopyFrom(_resources(spec.sandbox_values()))
        outcome = PodOutcome(spec, sandbox)
        self.pods[key] = outcome
        try:
            self._event(pb.RUN_POD_SANDBOX, sandbox)
        except RPCError as exc:
            outcome.admitted = False
            outcome.error = _split_error(exc.message)
            self._event(pb.STOP_POD_SANDBOX, sandbox)
            self._event(pb.REMOVE_POD_SANDBOX, sandbox)
            return outcome
        for ctr in spec.containers:
            if not self._run_container(outcome, ctr):
                break
        return outcome

    def _run_container(self, outcome: PodOutcome, ctr: ContainerSpec) -> bool:
        spec, sandbox = outcome.spec, outcome.sandbox
        container = pb.Container(id=_id("ctr", spec.namespace, spec.name, ctr.name), pod_sandbox_id=sandbox.id, name=ctr.name)
        container.linux.resources.CopyFrom(_resources(spec.container_values(ctr)))
        record = ContainerOutcome(ctr.name, ctr.kind, container.id)
        outcome.containers.append(record)
        try:
            resp = self._call("CreateContainer", pb.CreateContainerRequest(pod=sandbox, container=container), pb.CreateContainerResponse)
        except RPCError as exc:
            outcome.admitted = False
            outcome.error = _split_error(exc.message)
            record.state = "failed"
            return False
        container.linux.resources.MergeFrom(resp.adjust.linux.resources)
        self._containers[container.id] = container
        self._apply_updates(resp.update)
        container.state = pb.CONTAINER_RUNNING
        record.state = "running"
        self._event(pb.START_CONTAINER, sandbox, container)
        if ctr.kind == "init":  # runs to completion before the next container starts
            self._snapshot(record)
            self._stop(sandbox, container, record)
        return True

    def _stop(self, sandbox: pb.PodSandbox, container: pb.Container, record: ContainerOutcome) -> None:
        container.state = pb.CONTAINER_STOPPED
        resp = self._call("StopContainer", pb.StopContainerRequest(pod=sandbox, container=container), pb.StopContainerResponse)
        self._containers.pop(container.id, None)
        self._apply_updates(resp.update)
        record.state = "exited"

    def _apply_updates(self, updates: list[pb.ContainerUpdate]) -> None:
        for u in updates:
            target = self._containers.get(u.container_id)
            if target is None:
                continue  # the runtime skips unknown ids silently
            cpu = u.linux.resources.cpu
            if cpu.cpus:
                target.linux.resources.cpu.cpus = cpu.cpus
            if cpu.mems:
                target.linux.resources.cpu.mems = cpu.mems
            if cpu.HasField("quota"):
                target.linux.resources.cpu.quota.value = cpu.quota.value

    def delete(self, name: str, namespace: str = "default") -> bool:
        outcome = self.pods.pop(f"{namespace}/{name}", None)
        if outcome is None:
            return False
        for record in outcome.containers:
            container = self._containers.get(record.id)
            if container is not None:
                self._stop(outcome.sandbox, container, record)
            self._event(pb.REMOVE_CONTAINER, outcome.sandbox, pb.Container(id=record.id, pod_sandbox_id=outcome.sandbox.id, name=record.name))
        self._event(pb.STOP_POD_SANDBOX, outcome.sandbox)
        self._event(pb.REMOVE_POD_SANDBOX, outcome.sandbox)
        return True

    # ---- results ----

    def _snapshot(self, record: ContainerOutcome) -> None:
        container = self._containers.get(record.id)
        if container is None:
            return
        cpu = container.linux.resources.cpu
        record.cpus, record.mems = cpu.cpus, cpu.mems
        rec = self.plugin.state.containers.get(record.id)
        record.pool = rec.assignment.pool.value if rec else "node-shared"
        record.cpu_quota = rec.assignment.cpu_quota if rec else None

    def result(self) -> dict[str, Any]:
        pods = []
        for outcome in self.pods.values():
            for record in outcome.containers:
                if record.state == "running":
                    self._snapshot(record)
            pods.append(self._pod_json(outcome))
        node = self.plugin.state.node_usage(self.plugin.topology, self.plugin.config.cpu.reserved_cpus)
        shared = _node_shared_pool(self.plugin)
        return {
            "pods": pods,
            "node": {"shared_pool": shared, "reserved_cpus": str(self.plugin.config.cpu.reserved_cpus), "numa": node},
        }

    def _pod_json(self, outcome: PodOutcome) -> dict[str, Any]:
        rec = self.plugin.state.pods.get(outcome.sandbox.id)
        bubble = rec.bubble if rec else None
        numa = rec.numa if rec else None
        return {
            "name": outcome.spec.name,
            "namespace": outcome.spec.namespace,
            "admitted": outcome.admitted,
            "error": outcome.error,
            "numa_nodes": list(numa) if numa is not None else [],
            "cpus": str(bubble) if bubble is not None else "",
            "containers": [
                {"name": r.name, "kind": r.kind, "pool": r.pool, "cpus": r.cpus, "mems": r.mems, "cpu_quota": r.cpu_quota, "state": r.state}
                for r in outcome.containers
            ],
        }


def _node_shared_pool(plugin: PodresPlugin) -> str:
    return str(Context(plugin.topology, plugin.config).node_pool(plugin.state))
