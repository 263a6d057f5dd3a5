"""End-to-end fixtures: a real, private containerd 1.7 with NRI, and plugin processes.

* ``containerd`` (session): runs ``tools/ctrd/setup.sh`` and starts the private
  containerd (``tools/ctrd/containerd.sh``), or reuses a running one when
  ``NRI_PODRES_E2E_REUSE=1``. Yields a :class:`Containerd` with the CRI client,
  the NRI socket, the work directory, log paths and ``restart()``.
* ``cri`` (function): the session's CRI client; pods a test creates are removed
  after it.
* ``plugin`` (function): factory starting ``python -m nri_podres run`` against
  the NRI socket; returns a :class:`Daemon` (kill / restart / wait_for_event).
* ``go_plugin`` (function): factory starting the Go no-op reference plugin.

Every test in this directory is marked ``runtime``. Without root, or when the
harness cannot come up, those tests are skipped with the reason — except under
``CI=true``, where they fail instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cri import Cri  # noqa: E402

from tests.support import harness_unavailable  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
# The daemon configuration of the runtime tests: pod scope, single-numa-node, and
# nothing reserved (a 2-CPU node has no CPU to spare for the system).
POD_SCOPE_CONFIG = """
[topology]
policy = "single-numa-node"
scope = "pod"
[cpu]
reserved-cpus = ""
[memory]
reserved = {}
"""
CTRD_TOOLS = REPO / "tools" / "ctrd"
GO_PLUGIN_BUILD = REPO / "benchmarks" / "go-noop-plugin" / "build.sh"
WORK_DIR = Path(os.environ.get("NRI_PODRES_E2E_DIR", "/var/tmp/nri-podres-e2e"))
CGROUP_PARENT = os.environ.get("NRI_PODRES_E2E_CGROUP_PARENT", "/nri-podres-e2e")
REUSE = os.environ.get("NRI_PODRES_E2E_REUSE") == "1"
SESSION_LABEL = "nri-podres-e2e/session"
SYNCHRONIZED = "plugin_synchronized"
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.runtime)


unavailable = partial(harness_unavailable, "e2e harness")  # skip on a developer machine, fail under CI


def _tool(script: Path, *args: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, "NRI_PODRES_E2E_DIR": str(WORK_DIR)}
    return subprocess.run(
        [str(script), *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )


def _tool_failure(proc: subprocess.CompletedProcess[str]) -> str:
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-8:]
    return f"{proc.args[0]} {' '.join(proc.args[1:])} exited {proc.returncode}: " + " | ".join(tail)


# --- containerd ---------------------------------------------------------------


@dataclass
class Containerd:
    """The private containerd of this test session."""

    work_dir: Path
    cri: Cri
    cri_socket: Path
    nri_socket: Path
    log_path: Path
    cgroup_parent: str
    session: str
    restarts: list[float] = field(default_factory=list)

    def restart(self) -> None:
        """Restart the containerd process only; running pods and containers survive."""
        proc = _tool(CTRD_TOOLS / "containerd.sh", "restart", timeout_s=60)
        if proc.returncode != 0:
            raise RuntimeError(_tool_failure(proc))
        self.cri.wait_ready()
        self.restarts.append(time.monotonic())

    restart_containerd = restart

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class _SessionLock:
    """Serialises test sessions that own the containerd of one work directory."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w")

    def acquire(self, timeout_s: float = 900) -> bool:
        deadline = time.monotonic() + timeout_s
        announced = False
        while True:
            try:
                fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return False
                if not announced:
                    print(f"\nwaiting for another e2e session to release {self._file.name}", file=sys.stderr)
                    announced = True
                time.sleep(1)

    def release(self) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


def _running() -> bool:
    return _tool(CTRD_TOOLS / "containerd.sh", "status", timeout_s=10).returncode == 0


@pytest.fixture(scope="session")
def containerd() -> Iterator[Containerd]:
    if sys.platform != "linux" or os.geteuid() != 0:
        unavailable("needs root on Linux (cgroups, mounts, runc)")
    reuse = REUSE and _running()
    lock = None
    if not reuse:
        lock = _SessionLock(WORK_DIR / "session.lock")
        if not lock.acquire():
            unavailable(f"another session holds {WORK_DIR / 'session.lock'}")
        setup = _tool(CTRD_TOOLS / "setup.sh")
        if setup.returncode != 0:
            lock.release()
            unavailable(_tool_failure(setup))
        _tool(CTRD_TOOLS / "containerd.sh", "stop", timeout_s=120)  # leftovers of a crashed run
        start = _tool(CTRD_TOOLS / "containerd.sh", "start", timeout_s=120)
        if start.returncode != 0:
            lock.release()
            unavailable(_tool_failure(start))
    session = uuid.uuid4().hex[:12]
    cri = None
    try:
        cri = Cri(
            WORK_DIR / "containerd.sock",
            WORK_DIR / "cri-stubs",
            log_root=WORK_DIR / "pod-logs",
            cgroup_parent=CGROUP_PARENT,
            pod_labels={SESSION_LABEL: session},
        )
        cri.wait_ready()
        yield Containerd(
            work_dir=WORK_DIR,
            cri=cri,
            cri_socket=WORK_DIR / "containerd.sock",
            nri_socket=WORK_DIR / "nri" / "nri.sock",
            log_path=WORK_DIR / "containerd.log",
            cgroup_parent=CGROUP_PARENT,
            session=session,
        )
    finally:
        if cri is not None:
            if reuse:
                cri.remove_all_pods({SESSION_LABEL: session})
            cri.close()
        if lock is not None:
            _tool(CTRD_TOOLS / "containerd.sh", "stop", timeout_s=120)
            lock.release()


@pytest.fixture
def cri(containerd: Containerd) -> Iterator[Cri]:
    """The CRI client; every pod the test made is removed afterwards."""
    mine = {SESSION_LABEL: containerd.session}
    before = {p.id for p in containerd.cri.list_pods(mine)}
    yield containerd.cri
    for sandbox in containerd.cri.list_pods(mine):
        if sandbox.id not in before:
            containerd.cri.remove_pod(sandbox.id)


# --- plugin processes ---------------------------------------------------------


class Daemon:
    """A plugin process; stdout and stderr go to ``log_path`` (JSON lines expected)."""

    def __init__(self, argv: Sequence[str], log_path: Path, name: str, env: Mapping[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.name = name
        self.env = dict(env or os.environ)
        self.proc: subprocess.Popen[bytes] | None = None
        self._start_offset = 0
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait_for: str | None = SYNCHRONIZED, timeout_s: float = 15.0) -> Daemon:
        assert not self.alive, f"{self.name} already running"
        self.log_path.touch()
        self._start_offset = self.log_path.stat().st_size
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env, cwd=REPO
            )
        self.starts += 1
        if wait_for:
            self.wait_for_event(wait_for, timeout_s=timeout_s)
        return self

    def kill(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int:
        """Send ``sig`` and wait for the exit; returns the exit code (SIGKILL after the timeout)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def wait_exit(self, timeout_s: float = 10.0) -> int:
        """Wait until the process exits by itself; returns its exit code."""
        assert self.proc is not None
        try:
            return int(self.proc.wait(timeout_s))
        except subprocess.TimeoutExpired:
            msg = f"{self.name} still running after {timeout_s} s:\n{self.output()[-3000:]}"
            raise AssertionError(msg) from None

    def restart(self, sig: int = signal.SIGTERM, wait_for: str | None = SYNCHRONIZED) -> Daemon:
        self.kill(sig)
        return self.start(wait_for=wait_for)

    def output(self, since_start: bool = True) -> str:
        data = self.log_path.read_bytes()
        return data[self._start_offset if since_start else 0 :].decode(errors="replace")

    def events(self, since_start: bool = True) -> list[dict[str, Any]]:
        """JSON-object lines of the output; other lines (tracebacks, Go's logrus) are ignored."""
        found = []
        for line in self.output(since_start).splitlines():
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    found.append(record)
        return found

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout_s: float = 10.0, since_start: bool = True
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            for record in self.events(since_start):
                if predicate(record):
                    return record
            if not self.alive:
                msg = f"{self.name} exited ({self.proc and self.proc.returncode}) before {what}:\n{self.output()[-3000:]}"
                raise AssertionError(msg)
            if time.monotonic() > deadline:
                msg = f"{self.name}: no {what} within {timeout_s} s:\n{self.output()[-3000:]}"
                raise AssertionError(msg)
            time.sleep(0.05)

    def wait_for_event(self, event: str, timeout_s: float = 10.0, since_start: bool = True, **fields: Any) -> dict[str, Any]:
        """The first logged record with ``event`` and the given field values."""

        def matches(record: dict[str, Any]) -> bool:
            return record.get("event") == event and all(record.get(k) == v for k, v in fields.items())

        return self.wait_for(matches, f"event {event} {fields or ''}".strip(), timeout_s, since_start)


@pytest.fixture
def plugin(containerd: Containerd, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Factory: ``plugin(config=None, args=(), wait_for="plugin_synchronized")`` → running daemon."""
    started: list[Daemon] = []

    def start(
        config: Path | str | None = None, args: Sequence[str] = (), wait_for: str | None = SYNCHRONIZED
    ) -> Daemon:
        n = len(started)
        state_dir = tmp_path / f"plugin-state-{n}"
        state_dir.mkdir()
        argv = [sys.executable, "-m", "nri_podres", "run", "--socket", str(containerd.nri_socket)]
        argv += ["--state-dir", str(state_dir)]
        if config is not None:
            argv += ["--config", str(config)]
        argv += ["--log-format", "json", *args]
        daemon = Daemon(argv, tmp_path / f"plugin-{n}.log", name="nri-podres")
        started.append(daemon)
        return daemon.start(wait_for=wait_for)

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture(scope="session")
def go_plugin_binary(containerd: Containerd) -> Path:
    build = _tool(GO_PLUGIN_BUILD, timeout_s=900)
    if build.returncode != 0:
        unavailable(_tool_failure(build))
    return containerd.work_dir / "bin" / "go-noop-plugin"


@pytest.fixture
def go_plugin(
    containerd: Containerd, go_plugin_binary: Path, tmp_path: Path
) -> Iterator[Callable[..., Daemon]]:
    """Factory: ``go_plugin(cpuset="")`` → the running Go no-op reference plugin."""
    started: list[Daemon] = []

    def start(cpuset: str = "", name: str = "go-noop", idx: str = "50") -> Daemon:
        argv = [str(go_plugin_binary), "-socket", str(containerd.nri_socket), "-name", name, "-idx", idx]
        if cpuset:
            argv += ["-cpuset", cpuset]
        daemon = Daemon(argv, tmp_path / f"go-plugin-{len(started)}.log", name=f"go plugin {name}")
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.kill()
