"""A small CRI client that plays the kubelet against a real containerd.

It speaks the CRI ``runtime.v1`` API over gRPC with the Python stubs that
``tools/ctrd/setup.sh`` compiles into the work directory, and it fills the
requests the way a kubelet does (cgroupfs driver): host-network pods under a
private cgroup parent, sandbox resources from the pod-level budget, container
shares/quota/period from requests and limits (falling back to the pod-level
limits), the kubelet's ``io.kubernetes.*`` labels.

It also reads the truth the kernel holds for a container: the process's
``Cpus_allowed_list``/``Mems_allowed_list`` and the cgroup files.

Run as a script it removes every pod (used by ``tools/ctrd/containerd.sh stop``)::

    python tests/e2e/cri.py cleanup --socket DIR/containerd.sock --stubs DIR/cri-stubs
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

CPU_PERIOD_US = 100_000
MIN_SHARES = 2
MAX_SHARES = 262_144
MIN_QUOTA_US = 1_000
MiB = 1 << 20
GiB = 1 << 30

DEFAULT_IMAGE = "localhost/probe:e2e"
DEFAULT_CGROUP_PARENT = "/nri-podres-e2e"
CGROUP_ROOT = Path("/sys/fs/cgroup")

POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"


# --- kubelet formulas ---------------------------------------------------------


def cpu_shares(millicpu: int) -> int:
    """cpu.shares for a CPU request: 0 → 2; else clamp(m·1024/1000, 2, 262144)."""
    if millicpu <= 0:
        return MIN_SHARES
    return max(MIN_SHARES, min(MAX_SHARES, millicpu * 1024 // 1000))


def cpu_quota_us(millicpu: int, period_us: int = CPU_PERIOD_US) -> int:
    """CFS quota for a CPU limit: 0 (no limit) → 0; else max(1000, m·period/1000)."""
    if millicpu <= 0:
        return 0
    return max(MIN_QUOTA_US, millicpu * period_us // 1000)


@dataclass(frozen=True)
class Resources:
    """Requests and limits of a pod (pod-level) or a container, kubelet units."""

    cpu_request_millis: int = 0
    cpu_limit_millis: int = 0
    memory_limit_bytes: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""

    @classmethod
    def guaranteed(cls, cpu_millis: int, memory_limit_bytes: int = 0) -> Resources:
        return cls(cpu_millis, cpu_millis, memory_limit_bytes)

    def within(self, pod: Resources) -> Resources:
        """The values a kubelet uses for a container of a pod with pod-level resources.

        A container without a CPU (memory) limit gets the pod's; a container
        with a limit but no request has request = limit (API defaulting).
        """
        cpu_limit = self.cpu_limit_millis or pod.cpu_limit_millis
        memory = self.memory_limit_bytes or pod.memory_limit_bytes
        request = self.cpu_request_millis or self.cpu_limit_millis
        return Resources(request, cpu_limit, memory, self.cpuset_cpus, self.cpuset_mems)

    @property
    def shares(self) -> int:
        return cpu_shares(self.cpu_request_millis or self.cpu_limit_millis)

    @property
    def quota_us(self) -> int:
        return cpu_quota_us(self.cpu_limit_millis)

    def to_proto(self, pb: ModuleType) -> Any:
        return pb.LinuxContainerResources(
            cpu_period=CPU_PERIOD_US,
            cpu_quota=self.quota_us,
            cpu_shares=self.shares,
            memory_limit_in_bytes=self.memory_limit_bytes,
            cpuset_cpus=self.cpuset_cpus,
            cpuset_mems=self.cpuset_mems,
        )


# --- what the client hands out ------------------------------------------------


@dataclass(frozen=True)
class Pod:
    id: str
    name: str
    namespace: str
    uid: str
    cgroup_parent: str
    log_directory: str
    resources: Resources
    config: Any = field(repr=False)


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    pod: Pod
    resources: Resources

    @property
    def log_file(self) -> Path:
        return Path(self.pod.log_directory) / f"{self.name}.log"


@dataclass(frozen=True)
class ContainerInfo:
    """ContainerStatus(verbose): state, process and the OCI spec the runtime used."""

    id: str
    state: str  # CONTAINER_CREATED / CONTAINER_RUNNING / CONTAINER_EXITED / ...
    pid: int
    spec: Mapping[str, Any] = field(repr=False)

    @property
    def cgroups_path(self) -> str:
        return str(self.spec.get("linux", {}).get("cgroupsPath", ""))

    @property
    def cpu(self) -> Mapping[str, Any]:
        """``linux.resources.cpu`` of the OCI spec (shares, quota, period, cpus, mems)."""
        return self.spec.get("linux", {}).get("resources", {}).get("cpu", {}) or {}

    @property
    def memory(self) -> Mapping[str, Any]:
        return self.spec.get("linux", {}).get("resources", {}).get("memory", {}) or {}

    @property
    def spec_cpus(self) -> str:
        return str(self.cpu.get("cpus", ""))

    @property
    def spec_mems(self) -> str:
        return str(self.cpu.get("mems", ""))

    # the kernel's view
    def cpus_allowed(self) -> str:
        return cpus_allowed(self.pid)

    def mems_allowed(self) -> str:
        return mems_allowed(self.pid)

    def cgroup_cpus(self) -> str:
        return read_cgroup(self.cgroups_path, "cpuset", "cpuset.cpus")

    def cgroup_mems(self) -> str:
        return read_cgroup(self.cgroups_path, "cpuset", "cpuset.mems")

    def cgroup_cfs_quota_us(self) -> int:
        return int(read_cgroup(self.cgroups_path, "cpu", "cpu.cfs_quota_us"))

    def cgroup_shares(self) -> int:
        return int(read_cgroup(self.cgroups_path, "cpu", "cpu.shares"))


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


# --- kernel truth -------------------------------------------------------------


def proc_status(pid: int, key: str) -> str:
    """One field of /proc/<pid>/status, e.g. ``Cpus_allowed_list``."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name == key:
                return value.strip()
    msg = f"/proc/{pid}/status has no {key}"
    raise KeyError(msg)


def cpus_allowed(pid: int) -> str:
    return proc_status(pid, "Cpus_allowed_list")


def mems_allowed(pid: int) -> str:
    return proc_status(pid, "Mems_allowed_list")


def read_cgroup(cgroups_path: str, controller: str, filename: str) -> str:
    """A cgroup v1 (hybrid layout) file of ``cgroups_path``, stripped."""
    path = CGROUP_ROOT / controller / cgroups_path.lstrip("/") / filename
    return path.read_text().strip()


def remove_cgroup_tree(cgroup_path: str) -> None:
    """rmdir ``cgroup_path`` and everything below it in every hierarchy (deepest first)."""
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / cgroup_path.lstrip("/")
        if not top.is_dir():
            continue
        dirs = [Path(d) for d, _, _ in os.walk(top)]
        for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            try:
                d.rmdir()
            except OSError:
                pass


def load_stubs(stubs_dir: str | Path) -> tuple[ModuleType, ModuleType]:
    """Import ``cri_api_pb2``/``cri_api_pb2_grpc`` compiled by setup.sh."""
    path = str(stubs_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("cri_api_pb2"), importlib.import_module("cri_api_pb2_grpc")


# --- the client ---------------------------------------------------------------


class Cri:
    """Kubelet-like CRI client; pods are host-network pods under ``cgroup_parent``."""

    def __init__(
        self,
        socket: str | Path,
        stubs_dir: str | Path,
        *,
        log_root: str | Path,
        cgroup_parent: str = DEFAULT_CGROUP_PARENT,
        image: str = DEFAULT_IMAGE,
        pod_labels: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.pb, pb_grpc = load_stubs(stubs_dir)
        self._channel = grpc.insecure_channel(f"unix://{socket}")
        self.runtime = pb_grpc.RuntimeServiceStub(self._channel)
        self.log_root = Path(log_root)
        self.cgroup_parent = cgroup_parent
        self.image = image
        self.pod_labels = dict(pod_labels or {})  # added to every pod this client runs
        self.timeout_s = timeout_s

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: str, request: Any) -> Any:
        return getattr(self.runtime, method)(request, timeout=self.timeout_s)

    def version(self) -> str:
        v = self._call("Version", self.pb.VersionRequest())
        return f"{v.runtime_name} {v.runtime_version}"

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.version()
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # pods

    def run_pod(
        self,
        name: str,
        namespace: str = "default",
        uid: str | None = None,
        *,
        cpu_millis: int = 0,
        memory_limit_bytes: int = 0,
        cpu_limit_millis: int | None = None,
        annotations: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Pod:
        """RunPodSandbox with a pod-level budget.

        ``cpu_millis`` is the pod-level CPU request; the limit defaults to the
        same value (a Guaranteed pod); pass ``cpu_limit_millis=0`` for none.
        """
        pb = self.pb
        uid = uid or str(uuid.uuid4())
        limit = cpu_millis if cpu_limit_millis is None else cpu_limit_millis
        resources = Resources(cpu_millis, limit, memory_limit_bytes)
        log_directory = self.log_root / f"{namespace}_{name}_{uid}"
        log_directory.mkdir(parents=True, exist_ok=True)
        cgroup_parent = f"{self.cgroup_parent}/pod{uid}"
        all_labels = {**self.pod_labels, **(labels or {}), POD_NAME: name, POD_NAMESPACE: namespace, POD_UID: uid}
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
            # no hostname: a host-network pod shares the host's UTS namespace
            log_directory=str(log_directory),
            labels=all_labels,
            annotations=dict(annotations or {}),
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=cgroup_parent,
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD)
                ),
                resources=resources.to_proto(pb) if cpu_millis or limit or memory_limit_bytes else None,
            ),
        )
        reply = self._call("RunPodSandbox", pb.RunPodSandboxRequest(config=config))
        return Pod(reply.pod_sandbox_id, name, namespace, uid, cgroup_parent, str(log_directory), resources, config)

    def stop_pod(self, pod: Pod) -> None:
        self._call("StopPodSandbox", self.pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))

    def remove_pod(self, pod: Pod | str) -> None:
        """Stop and remove a pod (a :class:`Pod` or a sandbox id) and its containers,
        then do the kubelet's part: remove the pod cgroup and log directory."""
        if isinstance(pod, Pod):
            pod_id, cgroup_parent, log_directory = pod.id, pod.cgroup_parent, pod.log_directory
        else:
            pod_id = pod
            reply = self._call("PodSandboxStatus", self.pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
            config = json.loads(reply.info.get("info", "{}")).get("config", {})
            cgroup_parent = config.get("linux", {}).get("cgroup_parent", "")
            log_directory = config.get("log_directory", "")
        self._call("StopPodSandbox", self.pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        self._call("RemovePodSandbox", self.pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        if cgroup_parent:
            remove_cgroup_tree(cgroup_parent)
        if log_directory:
            shutil.rmtree(log_directory, ignore_errors=True)

    def list_pods(self, labels: Mapping[str, str] | None = None) -> list[Any]:
        """PodSandbox messages of the pods the runtime knows (optionally with these labels)."""
        filt = self.pb.PodSandboxFilter(label_selector=dict(labels)) if labels else None
        return list(self._call("ListPodSandbox", self.pb.ListPodSandboxRequest(filter=filt)).items)

    def remove_all_pods(self, labels: Mapping[str, str] | None = None) -> list[str]:
        """Remove every pod (optionally only those with these labels); returns their names."""
        removed = []
        for sandbox in self.list_pods(labels):
            self.remove_pod(sandbox.id)
            removed.append(f"{sandbox.metadata.namespace}/{sandbox.metadata.name}")
        return removed

    # containers

    def create_container(
        self,
        pod: Pod,
        name: str,
        *,
        cpu_request_millis: int = 0,
        cpu_limit_millis: int = 0,
        memory_limit_bytes: int = 0,
        cpuset_cpus: str = "",
        cpuset_mems: str = "",
        annotations: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        command: Sequence[str] = (),
        args: Sequence[str] = (),
        image: str | None = None,
    ) -> Container:
        """CreateContainer with kubelet-computed resources (see ``Resources.within``)."""
        pb = self.pb
        own = Resources(cpu_request_millis, cpu_limit_millis, memory_limit_bytes, cpuset_cpus, cpuset_mems)
        resources = own.within(pod.resources)
        all_labels = {
            **(labels or {}),
            POD_NAME: pod.name,
            POD_NAMESPACE: pod.namespace,
            POD_UID: pod.uid,
            CONTAINER_NAME: name,
        }
        all_annotations = {"io.kubernetes.container.restartCount": "0", **(annotations or {})}
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=image or self.image),
            command=list(command),
            args=list(args),
            log_path=f"{name}.log",
            labels=all_labels,
            annotations=all_annotations,
            linux=pb.LinuxContainerConfig(resources=resources.to_proto(pb)),
        )
        reply = self._call(
            "CreateContainer",
            pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=config, sandbox_config=pod.config),
        )
        return Container(reply.container_id, name, pod, resources)

    def start(self, container: Container) -> None:
        self._call("StartContainer", self.pb.StartContainerRequest(container_id=container.id))

    def run_container(self, pod: Pod, name: str, **kwargs: Any) -> Container:
        """create_container + start."""
        container = self.create_container(pod, name, **kwargs)
        self.start(container)
        return container

    def stop(self, container: Container, timeout_s: int = 5) -> None:
        self._call("StopContainer", self.pb.StopContainerRequest(container_id=container.id, timeout=timeout_s))

    def remove(self, container: Container) -> None:
        self._call("RemoveContainer", self.pb.RemoveContainerRequest(container_id=container.id))

    def update_resources(self, container: Container, resources: Resources) -> None:
        """UpdateContainerResources (reaches NRI plugins as UpdateContainer)."""
        self._call(
            "UpdateContainerResources",
            self.pb.UpdateContainerResourcesRequest(container_id=container.id, linux=resources.to_proto(self.pb)),
        )

    def list_containers(self, pod: Pod | None = None) -> list[Any]:
        """Container messages, optionally of one pod."""
        filt = self.pb.ContainerFilter(pod_sandbox_id=pod.id) if pod else None
        return list(self._call("ListContainers", self.pb.ListContainersRequest(filter=filt)).containers)

    def container_status(self, container: Container | str) -> ContainerInfo:
        cid = container if isinstance(container, str) else container.id
        reply = self._call("ContainerStatus", self.pb.ContainerStatusRequest(container_id=cid, verbose=True))
        info = json.loads(reply.info.get("info", "{}"))
        state = self.pb.ContainerState.Name(reply.status.state)
        return ContainerInfo(cid, state, int(info.get("pid", 0)), info.get("runtimeSpec", {}))

    def exec(self, container: Container, cmd: Sequence[str], timeout_s: int = 10) -> ExecResult:
        """ExecSync: run ``cmd`` inside the container (the probe image has busybox)."""
        reply = self._call(
            "ExecSync", self.pb.ExecSyncRequest(container_id=container.id, cmd=list(cmd), timeout=timeout_s)
        )
        return ExecResult(reply.exit_code, reply.stdout.decode(), reply.stderr.decode())

    # container logs (CRI format: "<time> <stream> <P|F> <text>")

    @staticmethod
    def log_lines(container: Container) -> list[str]:
        try:
            raw = container.log_file.read_text()
        except FileNotFoundError:
            return []
        return [line.split(" ", 3)[3] for line in raw.splitlines() if line.count(" ") >= 3]

    def wait_for_log(self, container: Container, text: str, timeout_s: float = 5.0) -> str:
        """The first line of the container's output that contains ``text``."""
        deadline = time.monotonic() + timeout_s
        while True:
            for line in self.log_lines(container):
                if text in line:
                    return line
            if time.monotonic() > deadline:
                msg = f"{container.name}: no log line with {text!r} within {timeout_s} s"
                raise TimeoutError(msg)
            time.sleep(0.05)


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CRI helper for the private test containerd")
    parser.add_argument("command", choices=["cleanup", "version"])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--stubs", required=True)
    parser.add_argument("--cgroup-parent", default=DEFAULT_CGROUP_PARENT)
    args = parser.parse_args(argv)
    cri = Cri(args.socket, args.stubs, log_root=Path(args.stubs).parent / "pod-logs", cgroup_parent=args.cgroup_parent)
    try:
        if args.command == "version":
            print(cri.version())
        else:
            for name in cri.remove_all_pods():
                print(f"removed pod {name}")
            remove_cgroup_tree(args.cgroup_parent)
    finally:
        cri.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
