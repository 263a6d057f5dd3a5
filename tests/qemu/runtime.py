"""containerd, CRI pods and the nri-podres daemon inside a booted :class:`Guest`.

    runtime = GuestRuntime(guest)
    runtime.start_containerd()
    runtime.start_plugin(config_toml)                 # nri-podres run, waits until connected
    outcome = runtime.run_pod(PodSpec("db", cpu_millis=4000, memory_limit_bytes=1 * GiB,
                                      containers=(ContainerSpec.guaranteed("main", 2000, 256 * MiB),)))
    outcome["main"].cpus, outcome["main"].mems      # the kernel's Cpus/Mems_allowed_list
    runtime.kill_plugin(); runtime.restart_plugin()   # SIGKILL, then the same command again

Every placement is read from ``/proc/<pid>/status`` inside the guest.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.qemu.guest import REPO, Guest, GuestError

from nri_podres.cpuset import CPUSet, NodeSet

MiB = 1 << 20
GiB = 1 << 30
HOST_E2E_DIR = "/var/tmp/nri-podres-e2e"
GUEST_E2E_DIR = "/run/nrp-e2e"
GUEST_PLUGIN_DIR = "/run/nrp-plugin"
GUEST_SIDE = REPO / "tests" / "qemu" / "guest_side.py"
CONTAINERD_SCRIPT = REPO / "tools" / "qemu" / "guest-containerd.sh"
CONNECTED = re.compile(r'plugin \\?"[^"\\]*\\?" connected')
SYNCHRONIZED = re.compile(r'"event":\s*"plugin_synchronized"')


# --- what a scenario asks for ---------------------------------------------------


@dataclass(frozen=True)
class ContainerSpec:
    """One container, in kubelet units; limits left at 0 fall back to the pod's (as the kubelet does)."""

    name: str
    cpu_request_millis: int = 0
    cpu_limit_millis: int = 0
    memory_limit_bytes: int = 0
    cpuset_cpus: str = ""  # CRI cpuset_cpus/cpuset_mems, as a kubelet with its own managers would set
    cpuset_mems: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def guaranteed(cls, name: str, cpu_millis: int, memory_limit_bytes: int) -> ContainerSpec:
        return cls(name, cpu_millis, cpu_millis, memory_limit_bytes)

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name, "cpu_request_millis": self.cpu_request_millis,
            "cpu_limit_millis": self.cpu_limit_millis, "memory_limit_bytes": self.memory_limit_bytes,
            "cpuset_cpus": self.cpuset_cpus, "cpuset_mems": self.cpuset_mems,
            "annotations": dict(self.annotations),
        }


@dataclass(frozen=True)
class PodSpec:
    """A pod: its pod-level budget (``cpu_millis`` request = limit unless ``cpu_limit_millis``)
    and its containers, created in this order."""

    name: str
    cpu_millis: int = 0
    memory_limit_bytes: int = 0
    containers: tuple[ContainerSpec, ...] = ()
    namespace: str = "default"
    uid: str | None = None
    cpu_limit_millis: int | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name, "namespace": self.namespace, "uid": self.uid,
            "cpu_millis": self.cpu_millis, "cpu_limit_millis": self.cpu_limit_millis,
            "memory_limit_bytes": self.memory_limit_bytes, "annotations": dict(self.annotations),
            "containers": [c.to_wire() for c in self.containers],
        }


# --- what came out -------------------------------------------------------------


@dataclass(frozen=True)
class ContainerPlacement:
    """Where a container runs: the kernel's view of its process (``cpus``/``mems``) and the
    OCI spec's cpuset strings; ``error`` is the CRI error text when it was refused."""

    name: str
    id: str
    error: str | None
    state: str = ""
    pid: int = 0
    cpus: CPUSet | None = None
    mems: NodeSet | None = None
    spec_cpus: str = ""
    spec_mems: str = ""

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> ContainerPlacement:
        cpus, mems = wire.get("cpus", ""), wire.get("mems", "")
        return cls(
            name=wire.get("name", ""), id=wire.get("id", ""), error=wire.get("error"),
            state=wire.get("state", ""), pid=int(wire.get("pid", 0) or 0),
            cpus=CPUSet.parse(cpus) if cpus else None, mems=NodeSet.parse(mems) if mems else None,
            spec_cpus=wire.get("spec_cpus", ""), spec_mems=wire.get("spec_mems", ""),
        )


@dataclass(frozen=True)
class PodOutcome:
    """RunPodSandbox's result (``error``: the CRI error text of a refused pod) and each container's."""

    spec: PodSpec
    pod_id: str
    error: str | None
    containers: tuple[ContainerPlacement, ...]

    @property
    def admitted(self) -> bool:
        return self.error is None

    def __getitem__(self, name: str) -> ContainerPlacement:
        for container in self.containers:
            if container.name == name:
                return container
        raise KeyError(name)

    @property
    def cpus(self) -> CPUSet:
        """Union of the CPUs every container of the pod may run on."""
        union = CPUSet.parse("")
        for container in self.containers:
            if container.cpus is not None:
                union = union | container.cpus
        return union


@dataclass
class PluginProcess:
    pid: int
    argv: tuple[str, ...]
    log: str


# --- the runtime in the guest --------------------------------------------------


class GuestRuntime:
    """containerd + CRI + the nri-podres daemon in one guest."""

    def __init__(self, guest: Guest, *, host_e2e_dir: str = HOST_E2E_DIR, guest_e2e_dir: str = GUEST_E2E_DIR,
                 nri_timeout: str = "10s") -> None:
        self.guest = guest
        self.host_e2e_dir = host_e2e_dir
        self.e2e_dir = guest_e2e_dir
        self.nri_timeout = nri_timeout
        self.plugin: PluginProcess | None = None

    @property
    def nri_socket(self) -> str:
        return f"{self.e2e_dir}/nri/nri.sock"

    @property
    def containerd_log_path(self) -> str:
        return f"{self.e2e_dir}/containerd.log"

    # containerd

    def _containerd(self, action: str, timeout_s: float = 300.0) -> str:
        env = {"NRP_HOST_E2E_DIR": self.host_e2e_dir, "NRI_PODRES_E2E_DIR": self.e2e_dir,
               "NRP_GUEST_NRI_TIMEOUT": self.nri_timeout}
        return self.guest.run(["/bin/bash", str(CONTAINERD_SCRIPT), action], env=env, timeout_s=timeout_s).stdout

    def start_containerd(self) -> str:
        """Start containerd (NRI on) and import the images; no-op when running."""
        return self._containerd("start")

    def restart_containerd(self) -> str:
        """SIGTERM containerd and start it again; pods keep running (their shims outlive it).
        A connected plugin is disconnected by this (containerd 1.7 does not reconnect it)."""
        return self._containerd("restart")

    def stop_containerd(self) -> str:
        return self._containerd("stop")

    def containerd_log(self) -> str:
        return self.guest.read_file(self.containerd_log_path)

    def connected_count(self) -> int:
        """How many times containerd has logged a plugin connecting."""
        try:
            return len(CONNECTED.findall(self.containerd_log()))
        except GuestError:
            return 0

    # pods

    def run_pod(self, spec: PodSpec, timeout_s: float = 300.0) -> PodOutcome:
        """Run the sandbox, then create+start the containers in order; never raises for a refusal."""
        wire = self.guest.call(GUEST_SIDE, "run_pod", timeout_s=timeout_s, e2e_dir=self.e2e_dir, pod=spec.to_wire())
        return PodOutcome(spec, wire["pod_id"], wire["error"],
                          tuple(ContainerPlacement.from_wire(c) for c in wire["containers"]))

    def placement(self, container: ContainerPlacement | str) -> ContainerPlacement:
        """Re-read a running container's placement now (e.g. after a restart)."""
        cid = container if isinstance(container, str) else container.id
        wire = self.guest.call(GUEST_SIDE, "placement", e2e_dir=self.e2e_dir, container_id=cid)
        name = "" if isinstance(container, str) else container.name
        return ContainerPlacement.from_wire({"name": name, "error": None, **wire})

    def placements(self, outcome: PodOutcome) -> PodOutcome:
        """The same pod with every started container's placement re-read."""
        fresh = tuple(self.placement(c) if c.id and c.error is None else c for c in outcome.containers)
        return PodOutcome(outcome.spec, outcome.pod_id, outcome.error, fresh)

    def remove_pod(self, outcome: PodOutcome) -> None:
        if outcome.pod_id:
            self.guest.call(GUEST_SIDE, "remove_pod", timeout_s=300.0, e2e_dir=self.e2e_dir, pod_id=outcome.pod_id)

    def remove_all_pods(self) -> list[str]:
        return list(self.guest.call(GUEST_SIDE, "remove_all_pods", timeout_s=600.0, e2e_dir=self.e2e_dir))

    # the nri-podres daemon

    def start_plugin(self, config_toml: str = "", *, state_dir: str | None = f"{GUEST_PLUGIN_DIR}/state",
                     extra_args: Sequence[str] = (), wait_connected: bool = True,
                     timeout_s: float = 180.0) -> PluginProcess:
        """``python -m nri_podres run --socket <guest NRI> --config <file> --state-dir <dir>``
        from this checkout with its .venv; waits for containerd to log it connected."""
        config_path = f"{GUEST_PLUGIN_DIR}/config.toml"
        self.guest.write_file(config_path, config_toml)
        argv = [str(REPO / ".venv" / "bin" / "python"), "-m", "nri_podres", "run",
                "--socket", self.nri_socket, "--config", config_path]
        if state_dir is not None:
            argv += ["--state-dir", state_dir]
        argv += ["--log-format", "json", *extra_args]
        return self._launch(tuple(argv), wait_connected=wait_connected, timeout_s=timeout_s)

    def _launch(self, argv: tuple[str, ...], *, wait_connected: bool, timeout_s: float) -> PluginProcess:
        log = f"{GUEST_PLUGIN_DIR}/plugin.log"
        before = (self.connected_count(), self.synchronized_count())
        pid = self.guest.spawn(argv, log=log, cwd=REPO, env={"PYTHONDONTWRITEBYTECODE": "1"})
        self.plugin = PluginProcess(pid, argv, log)
        if wait_connected:  # the daemon's own plugin_synchronized event, or containerd's log line
            deadline = time.monotonic() + timeout_s
            while self.synchronized_count() <= before[1] and self.connected_count() <= before[0]:
                rc = self.guest.wait(pid)
                if rc is not None:
                    raise GuestError(f"nri-podres exited with {rc} before connecting:\n{self.plugin_log()}")
                if time.monotonic() > deadline:
                    raise GuestError(f"nri-podres not connected after {timeout_s} s:\n{self.plugin_log()}")
                time.sleep(0.5)
        return self.plugin

    def kill_plugin(self, signum: int = signal.SIGKILL, timeout_s: float = 60.0) -> int | None:
        """Signal the daemon (SIGKILL by default) and wait for it to exit; its exit code."""
        if self.plugin is None:
            return None
        self.guest.signal(self.plugin.pid, signum)
        return self.guest.wait(self.plugin.pid, timeout_s=timeout_s)

    def restart_plugin(self, *, signum: int = signal.SIGKILL, wait_connected: bool = True,
                       timeout_s: float = 180.0) -> PluginProcess:
        """Kill the running daemon (if alive) and start the same command line again."""
        if self.plugin is None:
            raise GuestError("no plugin was started")
        if self.guest.wait(self.plugin.pid) is None:
            self.kill_plugin(signum)
        return self._launch(self.plugin.argv, wait_connected=wait_connected, timeout_s=timeout_s)

    def plugin_alive(self) -> bool:
        return self.plugin is not None and self.guest.wait(self.plugin.pid) is None

    def plugin_log(self) -> str:
        """The daemon's whole log (every start appends to the same file)."""
        try:
            return self.guest.read_file(f"{GUEST_PLUGIN_DIR}/plugin.log")
        except GuestError:
            return ""

    def synchronized_count(self) -> int:
        """How many times the daemon has logged ``plugin_synchronized``."""
        return len(SYNCHRONIZED.findall(self.plugin_log()))

    def stop_plugin(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.plugin is not None and self.guest.wait(self.plugin.pid) is None:
            if self.kill_plugin(signal.SIGTERM, timeout_s=30.0) is None:
                self.kill_plugin(signal.SIGKILL)
        self.plugin = None

    # in-guest commands of this checkout

    def nri_podres(self, *args: str, timeout_s: float = 120.0, check: bool = True) -> Any:
        """``python -m nri_podres ARGS`` in the guest from this checkout; a CommandResult."""
        argv = [str(REPO / ".venv" / "bin" / "python"), "-m", "nri_podres", *args]
        return self.guest.run(argv, cwd=REPO, timeout_s=timeout_s, check=check,
                              env={"PYTHONDONTWRITEBYTECODE": "1"})
