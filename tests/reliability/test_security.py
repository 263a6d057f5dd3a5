"""Security: who can reach the daemon, what it writes, what it runs, and what annotations can buy.

- the admin socket and the checkpoint are root-only: file modes, and a process
  switched to ``nobody`` is refused (its own forked child, uid 65534);
- the metrics exporter listens on loopback unless configured otherwise;
- the package never shells out;
- an annotation never gives a pod more CPUs than its budget, nor another pod's CPUs.
"""

from __future__ import annotations

import ast
import asyncio
import os
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nri_podres
from nri_podres import admin, policy
from nri_podres._proto import api_pb2 as pb
from nri_podres.config import Config, CPUConfig, MemoryConfig, TopologyConfig, default_config, load_config
from nri_podres.cpuset import CPUSet
from nri_podres.errors import AdmissionError
from nri_podres.metrics import Metrics
from nri_podres.podspec import pod_from_manifest
from nri_podres.resources import Pool
from nri_podres.simulate import Simulator
from nri_podres.state import State
from tests import topologies as t
from tests.reliability.harness import GIB, REPO, daemon, pod, run_pod

NOBODY = 65534
PACKAGE = Path(nri_podres.__file__).resolve().parent


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory anyone may traverse (tmp_path is root-only, which would hide what the file modes do)."""
    path = Path(tempfile.mkdtemp(prefix="nri-podres-sec-"))
    path.chmod(0o755)
    yield path
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() and not child.is_symlink() else child.unlink()
    path.rmdir()


def as_nobody(action: Callable[[], str]) -> str:
    """Run ``action`` in a forked child that dropped to uid/gid 65534; returns what it reported."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges for good, then try
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                result = action()
            except Exception as exc:  # noqa: BLE001 - report anything to the parent
                result = f"{type(exc).__name__}: {exc}"
            os.write(write_fd, result.encode()[:4000])
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as r:
        out = r.read().decode()
    os.waitpid(pid, 0)
    return out


def connect(path: Path) -> Callable[[], str]:
    def attempt() -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(path))
            except PermissionError:
                return "refused: EACCES"
            return "connected"

    return attempt


needs_root = pytest.mark.skipif(os.geteuid() != 0 and os.environ.get("CI") != "true", reason="needs root to drop to nobody")


# --- the admin socket and the checkpoint of a running daemon ----------------------------


@needs_root
def test_admin_socket_and_checkpoint_of_a_running_daemon_are_root_only(tmp_path: Path, open_dir: Path) -> None:
    """Socket 0600 in a 0700 directory it creates; checkpoint 0600; nobody can connect or read,
    even where the directories would let them; root can. Loosening the mode lets nobody in:
    the mode is what keeps them out."""
    admin_socket = open_dir / "run" / "admin.sock"
    state_dir = open_dir / "state"
    state_dir.mkdir(mode=0o755)
    state_dir.chmod(0o755)

    async def scenario() -> None:
        async with daemon(tmp_path, state_dir=state_dir, admin_socket=admin_socket) as d:
            await d.call("Synchronize", pb.SynchronizeRequest())
            assert (await d.call("StateChange", run_pod(pod("db", 2000, GIB)))).code == 0
            checkpoint = state_dir / "checkpoint.json"
            for _ in range(100):
                if checkpoint.exists():
                    break
                await asyncio.sleep(0.05)
            assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o600
            assert stat.S_IMODE(admin_socket.stat().st_mode) == 0o600
            assert stat.S_ISSOCK(admin_socket.stat().st_mode)
            assert stat.S_IMODE(admin_socket.parent.stat().st_mode) == 0o700

            assert [p["name"] for p in (await d.status())["pods"]] == ["db"]  # root: served
            admin_socket.parent.chmod(0o755)  # only the socket's own mode is left in the way
            assert as_nobody(connect(admin_socket)) == "refused: EACCES"
            assert as_nobody(lambda: str(admin.query(admin_socket, {"cmd": "status"}))) == (
                f"AdminError: permission denied on {admin_socket}: run as root")
            assert as_nobody(lambda: checkpoint.read_text()[:10]).startswith("PermissionError")

            admin_socket.chmod(0o666)  # the control: with a loose mode, nobody gets in
            assert as_nobody(connect(admin_socket)) == "connected"
            admin_socket.chmod(0o600)

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_admin_server_replaces_only_a_stale_socket(open_dir: Path) -> None:
    """A regular file (or a symlink to one) at the socket path is never deleted or followed."""
    target = open_dir / "precious"
    target.write_text("keep me")
    link = open_dir / "admin.sock"
    link.symlink_to(target)

    async def scenario() -> None:
        with pytest.raises(admin.AdminError, match=f"admin socket: {link} exists and is not a socket"):
            async with admin.AdminServer(link, {}):
                pass

    asyncio.run(scenario())
    assert target.read_text() == "keep me" and link.is_symlink()


# --- metrics -----------------------------------------------------------------------------


def test_metrics_listen_on_loopback_unless_configured() -> None:
    """The default address (built-in and in the shipped config) is 127.0.0.1; the exporter binds exactly the host given."""
    assert default_config().metrics.address.startswith("127.0.0.1:")
    shipped = load_config((REPO / "packaging" / "config.toml").read_text(), "config.toml")
    assert shipped.metrics.address.startswith("127.0.0.1:")
    server = Metrics().serve("127.0.0.1:0")
    try:
        bound = server._server.server_address  # noqa: SLF001 - the socket it really bound
        assert bound[0] == "127.0.0.1" and server.host == "127.0.0.1"
    finally:
        server.close()


# --- no shell-outs -------------------------------------------------------------------------

FORBIDDEN_MODULES = {"subprocess", "pty", "commands"}
FORBIDDEN_CALLS = {"system", "popen", "execv", "execve", "execvp", "execvpe", "execl", "execle", "execlp", "execlpe",
                   "spawnv", "spawnve", "spawnvp", "spawnvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "posix_spawn",
                   "posix_spawnp", "create_subprocess_exec", "create_subprocess_shell", "startfile"}


def package_sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "_proto" not in p.parts)


def test_package_never_shells_out() -> None:
    """No subprocess/pty import, no os.system/exec*/spawn*/popen, no asyncio subprocess, no shell=True."""
    offenders = []
    for path in package_sources():
        text = path.read_text()
        tree = ast.parse(text, str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                offenders += [f"{path.name}: import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
                offenders.append(f"{path.name}: from {node.module} import ...")
            elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_CALLS:
                offenders.append(f"{path.name}:{node.lineno}: .{node.attr}")
            elif isinstance(node, ast.keyword) and node.arg == "shell":
                offenders.append(f"{path.name}:{node.lineno}: shell=")
        for word in ("subprocess", "os.system", "shell=True"):
            if word in text:
                offenders.append(f"{path.name}: mentions {word}")
    assert len(package_sources()) > 30  # the scan really saw the package
    assert offenders == []


def test_the_scan_would_catch_a_shell_out(tmp_path: Path) -> None:
    """The checker above is not vacuous: each forbidden form is found in a sample."""
    sample = "import subprocess\nimport os\nos.system('x')\nsubprocess.run(['a'], shell=True)\n"
    tree = ast.parse(sample)
    found = {type(n).__name__ for n in ast.walk(tree)
             if (isinstance(n, ast.Import) and n.names[0].name in FORBIDDEN_MODULES)
             or (isinstance(n, ast.Attribute) and n.attr in FORBIDDEN_CALLS)
             or (isinstance(n, ast.keyword) and n.arg == "shell")}
    assert found == {"Import", "Attribute", "keyword"}


# --- annotations cannot buy CPUs ----------------------------------------------------------

ANNOTATION = "podres.nri.io/numa-node"


@st.composite
def scenario(draw: st.DrawFn) -> tuple:  # type: ignore[type-arg]
    sockets, cores, threads = draw(st.integers(1, 2)), draw(st.integers(2, 4)), draw(st.integers(1, 2))
    per_socket = draw(st.integers(1, 2))
    topo = t.synthetic(sockets, per_socket, cores, threads, memory_bytes=16 * GIB)
    n_nodes = sockets * per_socket
    node_lists = [str(n) for n in range(n_nodes)] + ([f"0-{n_nodes - 1}"] if n_nodes > 1 else [])
    pods = draw(st.lists(st.tuples(
        st.integers(1, len(topo.online)),  # whole-CPU budget
        st.sampled_from([None, "true", "false", *node_lists]),  # numa-node annotation (or opt-out value)
        st.booleans(),  # opt-out instead of numa-node
        st.lists(st.integers(1, 4), max_size=3),  # exclusive containers' CPUs
        st.booleans(),  # a sidecar too
    ), min_size=1, max_size=8))
    policy_name = draw(st.sampled_from(["none", "best-effort", "restricted", "single-numa-node"]))
    return topo, policy_name, pods


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_annotations_never_buy_more_than_the_budget_or_another_pods_cpus(case: tuple) -> None:  # type: ignore[type-arg]
    """Property through the policy: with any NUMA preference or opt-out, a bubble has exactly the
    budget's CPUs, bubbles and exclusive slices never overlap, and a container stays in its own bubble.
    An annotated pod is admitted only if the same pod without the annotation could have been."""
    topo, policy_name, pods = case
    cfg = Config(topology=TopologyConfig(policy=policy_name, scope="pod"), cpu=CPUConfig(reserved_cpus=CPUSet()),
                 memory=MemoryConfig(reserved_bytes={}))
    state = State.empty()
    for i, (budget, value, opt_out, exclusives, sidecar) in enumerate(pods):
        annotations = {} if value is None else {("podres.nri.io/opt-out" if opt_out else ANNOTATION): value}
        info = t.pod_info(f"p{i}", budget * 1000, GIB, annotations=annotations)
        plain = t.pod_info(f"p{i}", budget * 1000, GIB)
        try:
            decision = policy.run_pod(topo, cfg, state, info)
        except AdmissionError:
            continue  # refused (no room, or a bad value): it got nothing
        if state.pods.get(info.id) is None and decision.state.pods[info.id].mode == "bubble":
            policy.run_pod(topo, cfg, state, plain)  # the same pod without annotations fits too
        state = decision.state
        for j, n in enumerate(exclusives):
            try:
                state = policy.create_container(topo, cfg, state, info, t.ctr_info(info, f"p{i}-x{j}", n * 1000, GIB // 8)).state
            except AdmissionError:
                pass
        if sidecar:
            try:
                state = policy.create_container(topo, cfg, state, info, t.ctr_info(info, f"p{i}-side")).state
            except AdmissionError:
                pass
        check_no_cpu_is_bought(state, pods)


def check_no_cpu_is_bought(state: State, pods: list[tuple]) -> None:  # type: ignore[type-arg]
    taken = CPUSet()
    for pid, rec in state.pods.items():
        if rec.mode != "bubble":
            continue
        budget = pods[int(pid[1:])][0]
        assert len(rec.bubble) == budget, f"pod {pid} has {rec.bubble} for a budget of {budget}"
        assert not (taken & rec.bubble), f"pod {pid}'s bubble {rec.bubble} overlaps another's"
        taken |= rec.bubble
    for rec in state.containers.values():
        if not rec.running:
            continue
        pod_rec = state.pods[rec.pod_id]
        if pod_rec.mode == "bubble":
            assert rec.assignment.cpus <= pod_rec.bubble, f"{rec.id} left its bubble"
        elif rec.assignment.pool is Pool.EXCLUSIVE:
            assert not (rec.assignment.cpus & taken), f"{rec.id} took bubble CPUs"
            taken |= rec.assignment.cpus


def simulate(docs: list[dict]) -> dict:  # type: ignore[type-arg]
    sim = Simulator(t.dual_socket_ht(memory_bytes=16 * GIB), load_config('[topology]\npolicy = "single-numa-node"\n[cpu]\nreserved-cpus = ""', "t"))
    for doc in docs:
        sim.apply(pod_from_manifest(doc, doc["metadata"]["name"]))
    return {p["name"]: p for p in sim.result()["pods"]}


def guaranteed_pod(name: str, cpus: int, annotations: dict[str, str] | None = None, container_annotations: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    return {
        "kind": "Pod", "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "resources": {"requests": {"cpu": str(cpus), "memory": "1Gi"}, "limits": {"cpu": str(cpus), "memory": "1Gi"}},
            "containers": [{"name": "app", "image": "x", "annotations": container_annotations or {}}],
        },
    }


def test_simulated_pod_preferring_a_full_node_gets_the_other_one_never_its_cpus() -> None:
    """dual_socket_ht: node 0 = even CPUs, node 1 = odd CPUs, 6 each. A fills node 0; B prefers node 0."""
    out = simulate([guaranteed_pod("a", 6), guaranteed_pod("b", 2, {ANNOTATION: "0"})])
    a, b = CPUSet.parse(out["a"]["cpus"]), CPUSet.parse(out["b"]["cpus"])
    assert out["a"]["numa_nodes"] == [0] and len(a) == 6
    assert out["b"]["admitted"] and out["b"]["numa_nodes"] == [1] and len(b) == 2
    assert not (a & b)


def test_simulated_preference_cannot_squeeze_a_pod_into_a_full_node() -> None:
    """Both nodes mostly taken: a pod preferring node 0 is refused with the numbers, not given A's CPUs."""
    out = simulate([guaranteed_pod("a", 6), guaranteed_pod("c", 5), guaranteed_pod("b", 2, {ANNOTATION: "0"})])
    assert not out["b"]["admitted"]
    assert out["b"]["error"]["reason"] == "TopologyAffinityError"
    assert "asked for 2 CPUs" in out["b"]["error"]["message"]


def test_container_annotations_and_spanning_preferences_do_not_widen_a_bubble() -> None:
    """A container cannot pick NUMA nodes; a pod preferring both nodes still gets exactly its budget."""
    out = simulate([guaranteed_pod("x", 2, {ANNOTATION: "0-1"}, {ANNOTATION: "0-1", "podres.nri.io/opt-out": "true"})])
    x = out["x"]
    assert x["admitted"] and len(CPUSet.parse(x["cpus"])) == 2 and len(x["numa_nodes"]) == 1
    (app,) = x["containers"]
    assert CPUSet.parse(app["cpus"]) <= CPUSet.parse(x["cpus"])
