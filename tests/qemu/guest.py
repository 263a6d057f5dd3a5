"""A multi-NUMA Linux guest under QEMU (software emulation), driven from the host.

The guest boots Debian's kernel (``tools/qemu/setup.sh``) with no disk: its root
is this machine's ``/`` shared read-only over virtio-9p under a tmpfs overlay,
so it runs this checkout and its ``.venv`` at the same paths as the host. A
command agent (``tools/qemu/guest_agent.py``) answers JSON lines on a
virtio-serial port, which QEMU exposes here as a unix socket.

    with Guest.boot(TWO_NODES) as guest:
        guest.run("cat /sys/devices/system/node/online").stdout   # "0-1\\n"

One boot serves many scenarios; everything the guest writes lives in its RAM.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nri_podres.cpuset import CPUSet

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools" / "qemu"
DEFAULT_QEMU_DIR = Path(os.environ.get("NRI_PODRES_QEMU_DIR", "/var/tmp/nri-podres-qemu"))
AGENT_PORT = "nrp.agent"
DEFAULT_DISTANCE = 21


class GuestError(RuntimeError):
    """The guest could not be booted, or a request to it failed."""


class GuestTimeout(GuestError):
    """A request to the guest got no answer in time."""


class CommandFailed(GuestError):
    def __init__(self, command: object, result: CommandResult) -> None:
        super().__init__(f"guest command {command!r} exited {result.rc}:\n{result.stdout}{result.stderr}")
        self.result = result


# --- topology -----------------------------------------------------------------


@dataclass(frozen=True)
class GuestTopology:
    """What QEMU emulates: sockets × cores × threads CPUs split evenly, in order, over the nodes.

    ``distances`` maps a node pair ``(a, b)`` with ``a < b`` to its SLIT distance
    (default 21); a node's distance to itself is 10.
    """

    sockets: int
    cores_per_socket: int
    threads_per_core: int
    nodes: int
    node_memory_mib: int
    distances: Mapping[tuple[int, int], int] = field(default_factory=dict)

    @property
    def cpu_count(self) -> int:
        return self.sockets * self.cores_per_socket * self.threads_per_core

    @property
    def cpus_per_node(self) -> int:
        if self.cpu_count % self.nodes:
            raise ValueError(f"{self.cpu_count} CPUs do not split evenly over {self.nodes} nodes")
        return self.cpu_count // self.nodes

    def node_cpus(self, node: int) -> CPUSet:
        first = node * self.cpus_per_node
        return CPUSet.parse(f"{first}-{first + self.cpus_per_node - 1}")

    def distance(self, a: int, b: int) -> int:
        if a == b:
            return 10
        return self.distances.get((min(a, b), max(a, b)), DEFAULT_DISTANCE)

    def distance_row(self, node: int) -> list[int]:
        return [self.distance(node, other) for other in range(self.nodes)]

    def qemu_args(self) -> list[str]:
        args = [
            "-m", f"{self.node_memory_mib * self.nodes}M",
            "-smp", f"{self.cpu_count},sockets={self.sockets},cores={self.cores_per_socket},"
                    f"threads={self.threads_per_core}",
        ]
        for node in range(self.nodes):
            cpus = self.node_cpus(node)
            args += ["-object", f"memory-backend-ram,id=mem{node},size={self.node_memory_mib}M",
                     "-numa", f"node,nodeid={node},cpus={cpus.min()}-{cpus.max()},memdev=mem{node}"]
        for a, b in itertools.combinations(range(self.nodes), 2):
            args += ["-numa", f"dist,src={a},dst={b},val={self.distance(a, b)}"]
        return args


#: 2 sockets × 2 cores × 2 threads, one NUMA node per socket: node 0 = CPUs 0-3, node 1 = 4-7.
TWO_NODES = GuestTopology(sockets=2, cores_per_socket=2, threads_per_core=2, nodes=2, node_memory_mib=1024)

#: 4 sockets × 1 core × 2 threads, one node per socket (node n = CPUs 2n, 2n+1), with an
#: uneven distance matrix: node 0's closest peer is node 2 (12), node 1's is node 3 (15);
#: every other pair is 21. A 4-CPU pod from node 0 should span {0, 2} under
#: prefer-closest-numa-nodes, where the default picks {0, 1}.
FOUR_NODES_UNEVEN = GuestTopology(
    sockets=4, cores_per_socket=1, threads_per_core=2, nodes=4, node_memory_mib=512,
    distances={(0, 2): 12, (1, 3): 15},
)


# --- the command channel -------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    rc: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False


class AgentChannel:
    """JSON-lines requests over the agent's socket; replies matched by id, any order."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._ids = itertools.count(1)
        self._pending: dict[int, list[Any]] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed: str | None = None
        self._reader = threading.Thread(target=self._read_loop, name="guest-agent-reader", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = self._sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._deliver(json.loads(line))
        except OSError:
            pass
        with self._lock:
            self._closed = "the guest agent's connection closed"
            for slot in self._pending.values():
                slot[0].set()

    def _deliver(self, reply: dict[str, Any]) -> None:
        with self._lock:
            slot = self._pending.get(reply.get("id"))
        if slot is not None:
            slot[1] = reply
            slot[0].set()

    def request(self, op: str, reply_within_s: float, **args: Any) -> Any:
        request_id = next(self._ids)
        slot: list[Any] = [threading.Event(), None]
        with self._lock:
            if self._closed:
                raise GuestError(self._closed)
            self._pending[request_id] = slot
        try:
            data = json.dumps({"id": request_id, "op": op, **args}).encode() + b"\n"
            with self._send_lock:
                self._sock.sendall(data)
            if not slot[0].wait(reply_within_s):
                raise GuestTimeout(f"guest agent: no answer to {op} within {reply_within_s} s")
        finally:
            with self._lock:
                self._pending.pop(request_id, None)
        reply = slot[1]
        if reply is None:
            raise GuestError(self._closed or "no reply")
        if not reply["ok"]:
            raise GuestError(f"guest agent: {op} failed:\n{reply['error']}")
        return reply["result"]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)


# --- the guest ------------------------------------------------------------------


class Guest:
    """A booted guest. Build with :meth:`boot`; end with :meth:`shutdown` (or ``with``)."""

    def __init__(self, topology: GuestTopology, process: subprocess.Popen[bytes], channel: AgentChannel,
                 run_dir: Path, boot_seconds: float, boots: int) -> None:
        self.topology = topology
        self.process = process
        self.run_dir = run_dir
        self.boot_seconds = boot_seconds
        self.boots = boots
        self.keep_run_dir = False  # set to keep console.log etc. after a clean shutdown
        self._channel = channel

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    # boot / shutdown

    @classmethod
    def boot(cls, topology: GuestTopology = TWO_NODES, *, qemu_dir: Path = DEFAULT_QEMU_DIR,
             run_dir: Path | None = None, cgroup: str = "v1", boot_timeout_s: float = 180.0,
             tries: int = 3, accel: str = "tcg,thread=single") -> Guest:
        """Boot and wait for the agent; a guest silent past ``boot_timeout_s`` is booted again.

        Single-threaded TCG by default: under multi-threaded TCG on a 2-CPU host, the
        guest kernel's live code patching (a static key flipped when runc creates the
        first memory cgroup, ``text_poke_bp``) left vCPUs spinning on the int3 at
        ``kmem_cache_alloc`` for minutes (soft lockups, failed tests); one thread runs
        every vCPU in turn, sees its own code writes at once, and is no slower here."""
        for needed in ("vmlinuz", "initrd.cpio.gz"):
            if not (qemu_dir / needed).is_file():
                raise GuestError(f"{qemu_dir / needed} missing: run tools/qemu/setup.sh")
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is None:
            raise GuestError("qemu-system-x86_64 not installed: run tools/qemu/setup.sh")
        run_dir = Path(run_dir or tempfile.mkdtemp(prefix="guest-", dir=qemu_dir))
        run_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        failures = []
        for attempt in range(1, tries + 1):
            process, sock_path = cls._start_qemu(qemu, topology, qemu_dir, run_dir, cgroup, accel)
            try:
                channel = cls._connect(process, sock_path, started_at=time.monotonic(), timeout_s=boot_timeout_s)
            except BaseException as exc:
                _kill(process)
                if not isinstance(exc, GuestError):
                    raise
                saved = run_dir / f"console-try{attempt}.log"
                with contextlib.suppress(OSError):
                    shutil.copy(run_dir / "console.log", saved)
                failures.append(f"try {attempt}: {exc} (console: {saved})")
                continue
            return cls(topology, process, channel, run_dir, time.monotonic() - started, attempt)
        raise GuestError("guest did not come up:\n" + "\n".join(failures))

    @staticmethod
    def _start_qemu(qemu: str, topology: GuestTopology, qemu_dir: Path, run_dir: Path, cgroup: str,
                    accel: str) -> tuple[subprocess.Popen[bytes], Path]:
        sock_path = run_dir / "agent.sock"
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        append = (f"console=ttyS0 panic=-1 mitigations=off nrp.init={TOOLS / 'guest-init.sh'} "
                  f"nrp.cgroup={cgroup}")
        argv = [
            qemu, "-accel", accel, "-cpu", "max,vendor=GenuineIntel", *topology.qemu_args(),
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-kernel", str(qemu_dir / "vmlinuz"), "-initrd", str(qemu_dir / "initrd.cpio.gz"),
            "-append", append,
            "-chardev", f"socket,id=agent,path={sock_path},server=on,wait=off",
            "-device", "virtio-serial-pci", "-device", f"virtserialport,chardev=agent,name={AGENT_PORT}",
            "-serial", f"file:{run_dir / 'console.log'}",
            "-display", "none", "-monitor", "none", "-nodefaults", "-no-reboot",
        ]
        (run_dir / "qemu.argv").write_text("\n".join(argv) + "\n")
        with open(run_dir / "qemu.log", "ab") as log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       preexec_fn=_die_with_parent)
        return process, sock_path

    @staticmethod
    def _connect(process: subprocess.Popen[bytes], sock_path: Path, *, started_at: float,
                 timeout_s: float) -> AgentChannel:
        deadline = started_at + timeout_s
        while not sock_path.exists():
            if process.poll() is not None:
                raise GuestError(f"qemu exited with {process.returncode} before listening")
            if time.monotonic() > deadline:
                raise GuestError("qemu never created the agent socket")
            time.sleep(0.05)
        while True:  # the socket file appears at bind(), connections succeed after listen()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(sock_path))
                break
            except (ConnectionRefusedError, FileNotFoundError):
                sock.close()
                if process.poll() is not None or time.monotonic() > deadline:
                    raise GuestError("could not connect to the agent socket") from None
                time.sleep(0.05)
        channel = AgentChannel(sock)
        while True:  # pings queue up until the agent opens its port; any answer means up
            if process.poll() is not None:
                channel.close()
                raise GuestError(f"qemu exited with {process.returncode} during boot")
            try:
                channel.request("ping", reply_within_s=2.0)
                return channel
            except GuestTimeout:
                if time.monotonic() > deadline:
                    channel.close()
                    raise GuestError(f"agent silent {timeout_s:.0f} s after qemu started") from None

    def shutdown(self, timeout_s: float = 20.0) -> None:
        """Power the guest off (agent request), killing QEMU if it lingers."""
        if self.process.poll() is None:
            with contextlib.suppress(GuestError):
                self._channel.request("shutdown", reply_within_s=5.0)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _kill(self.process)
        self._channel.close()
        if self.process.returncode == 0 and not self.keep_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def alive(self) -> bool:
        return self.process.poll() is None

    # requests

    def request(self, op: str, reply_within_s: float = 60.0, **args: Any) -> Any:
        """One raw agent request (see guest_agent.py for the operations)."""
        if not self.alive():
            raise GuestError(f"qemu has exited ({self.process.returncode}); console: {self.console_log}")
        return self._channel.request(op, reply_within_s=reply_within_s, **args)

    def run(self, command: str | Sequence[str], *, timeout_s: float = 120.0, env: Mapping[str, str] | None = None,
            cwd: str | Path | None = None, input: str | None = None, check: bool = True) -> CommandResult:
        """Run a shell string (bash -c) or an argv in the guest; wait for it.

        ``check`` raises :class:`CommandFailed` on a non-zero exit or a timeout.
        """
        args: dict[str, Any] = {"sh": command} if isinstance(command, str) else {"argv": list(command)}
        reply = self.request("exec", reply_within_s=timeout_s + 30.0, env=dict(env or {}),
                             cwd=str(cwd) if cwd else None, timeout_s=timeout_s, input=input, **args)
        result = CommandResult(reply["rc"], reply["stdout"], reply["stderr"], reply["seconds"], reply["timed_out"])
        if check and result.rc != 0:
            raise CommandFailed(command, result)
        return result

    def spawn(self, argv: Sequence[str], *, log: str, env: Mapping[str, str] | None = None,
              cwd: str | Path | None = None) -> int:
        """Start a background process (own session) with stdout+stderr appended to ``log``; its pid."""
        return int(self.request("spawn", argv=list(argv), log=log, env=dict(env or {}),
                                cwd=str(cwd) if cwd else None)["pid"])

    def signal(self, pid: int, signum: int) -> bool:
        """Send a signal; False when no such process."""
        return bool(self.request("signal", pid=pid, signum=int(signum))["sent"])

    def wait(self, pid: int, timeout_s: float = 0.0) -> int | None:
        """Exit code of a spawned process; None while it runs (after waiting up to ``timeout_s``)."""
        return self.request("wait", reply_within_s=timeout_s + 30.0, pid=pid, timeout_s=timeout_s)["rc"]

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file in the guest (atomically; parents created)."""
        self.request("write_file", path=path, text=text, mode=mode)

    def read_file(self, path: str) -> str:
        return str(self.request("read_file", path=path)["text"])

    def call(self, path: str | Path, function: str, *, timeout_s: float = 120.0, **kwargs: Any) -> Any:
        """Call ``function(**kwargs)`` of the Python file ``path`` inside the agent's process."""
        return self.request("call", reply_within_s=timeout_s, path=str(path), function=function, kwargs=kwargs)["value"]

    def uptime_s(self) -> float:
        return float(self.request("ping", reply_within_s=10.0)["uptime_s"])


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10)


@contextlib.contextmanager
def booted(topology: GuestTopology = TWO_NODES, **kwargs: Any) -> Iterator[Guest]:
    guest = Guest.boot(topology, **kwargs)
    try:
        yield guest
    finally:
        guest.shutdown()
