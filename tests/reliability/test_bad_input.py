"""Bad input wherever a user or the runtime can reach the daemon, checked on the real process.

Each case gets a clear, specific error (the tests assert its text) and leaves
everything else running. The unit tests hold the per-function tables (config
keys, annotations, sysfs fallbacks, checkpoint files); here the same mistakes
go through ``nri-podres run`` and ``simulate`` as a person or a runtime makes them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nri_podres._proto import api_pb2 as pb
from nri_podres.config import default_config, load_config
from nri_podres.errors import RPCError
from nri_podres.nri.stub import PLUGIN_SERVICE, Stub
from nri_podres.plugin import PodresPlugin
from nri_podres.podspec import pod_from_manifest
from nri_podres.simulate import Simulator
from nri_podres.ttrpc import Code
from tests import topologies as t
from tests.reliability.harness import GIB, MACHINE, REPO, container, daemon, pod, resources, run_argv, run_pod

EX_CONFIG = 78


def run_once(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """A daemon that is expected to exit by itself (a bad configuration)."""
    return subprocess.run(run_argv(tmp_path, *extra), capture_output=True, text=True, timeout=30, check=False, cwd=REPO)


# --- configuration: exit 78 and a message naming the key ------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[cpu]\nreserved-cpus = "0-x"', ["cpu.reserved-cpus", "'0-x'"]),
        ('[cpu]\nreserved-cpus = "40-41"', ["cpu.reserved-cpus", "'40-41'", "CPU(s) 40-41 this machine does not have", "online: 0-31"]),
        ('[topology]\npolicy = "strict"', ["topology.policy", "'strict'"]),
        ('[plugin]\nindex = "9"', ["plugin.index", "'9'"]),
        ('[memory]\nreserved = { "0" = "lots" }', ["memory.reserved.0", "'lots'"]),
        ('[cpu]\nfull-pcpu-only = true', ["cpu.full-pcpu-only", "unknown key"]),
        ("[cpu\n", ["invalid TOML"]),
    ],
)
def test_malformed_config_exits_78_naming_the_key(tmp_path: Path, text: str, expected: list[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    proc = run_once(tmp_path, "--machine", str(MACHINE), "--config", str(config))
    assert proc.returncode == EX_CONFIG, proc.stderr
    assert proc.stderr.startswith(f"nri-podres: {config}: ") or "reserved-cpus" in proc.stderr
    for fragment in expected:
        assert fragment in proc.stderr
    assert not (tmp_path / "admin.sock").exists()  # it stopped before serving anything


@pytest.mark.parametrize(("make", "expected"), [
    (lambda p: p / "missing.toml", "config file {p} does not exist"),
    (lambda p: (p / "dir.toml").mkdir() or p / "dir.toml", "cannot read config file {p}: Is a directory"),
])
def test_unreadable_config_file_exits_78(tmp_path: Path, make: Any, expected: str) -> None:
    path = make(tmp_path)
    proc = run_once(tmp_path, "--machine", str(MACHINE), "--config", str(path))
    assert (proc.returncode, proc.stderr.strip()) == (EX_CONFIG, "nri-podres: " + expected.format(p=path))


def test_sysfs_without_a_cpu_tree_exits_78_naming_the_path(tmp_path: Path) -> None:
    empty = tmp_path / "sys"
    empty.mkdir()
    proc = run_once(tmp_path, "--sysfs", str(empty))
    assert proc.returncode == EX_CONFIG
    assert proc.stderr.strip() == f"nri-podres: no devices/system/cpu directory found in '{empty}'"


@pytest.mark.parametrize(("content", "problem"), [
    ("{not json", "is corrupt: Expecting property name enclosed in double quotes"),
    ('{"version": 99, "state": {}}', "has unsupported format version 99 (want 1)"),
    ("[]", "has unsupported format version None (want 1)"),
    (None, "cannot read {path}: Is a directory"),
])
def test_corrupt_or_unreadable_checkpoint_is_logged_and_the_daemon_serves(tmp_path: Path, content: str | None, problem: str) -> None:
    """checkpoint_ignored names the file and the reason; the daemon registers, synchronizes and places pods."""
    path = tmp_path / "state" / "checkpoint.json"
    path.parent.mkdir()
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)

    async def scenario() -> None:
        async with daemon(tmp_path) as d:
            ignored = d.event("checkpoint_ignored")
            assert str(path) in ignored["problem"] and problem.format(path=path) in ignored["problem"]
            assert (await d.call("Synchronize", pb.SynchronizeRequest())).code == 0
            db = pod("db", 2000, GIB)
            assert (await d.call("StateChange", run_pod(db))).code == 0
            assert [p["name"] for p in (await d.status())["pods"]] == ["db"]

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_checkpoint_with_invalid_content_is_ignored_at_synchronize(tmp_path: Path) -> None:
    """Valid JSON of the right version but nonsense inside: reported at the first Synchronize, runtime's view wins."""
    path = tmp_path / "state" / "checkpoint.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"version": 1, "state": {"pods": {"x": {"bubble": "not-a-cpuset"}}}}))

    async def scenario() -> None:
        async with daemon(tmp_path) as d:
            synced = await d.call("Synchronize", pb.SynchronizeRequest(pods=[pod("survivor", 1000, GIB)]))
            assert synced.code == 0
            assert d.event("checkpoint_ignored")["problem"].startswith("checkpoint content is invalid: ")
            assert [p["name"] for p in (await d.status())["pods"]] == ["survivor"]

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_runtime_bad_requests_get_specific_errors_and_change_nothing(tmp_path: Path) -> None:
    """Impossible budgets, bad annotations, over-budget containers and ids never announced: each answered
    with its own error, while the good pod beside them keeps its CPUs and the daemon keeps serving."""

    async def scenario() -> None:
        async with daemon(tmp_path) as d:
            assert (await d.call("Synchronize", pb.SynchronizeRequest())).code == 0
            good = pod("good", 4000, 4 * GIB)
            assert (await d.call("StateChange", run_pod(good))).code == 0
            app = pb.CreateContainerResponse.FromString(
                (await d.call("CreateContainer", pb.CreateContainerRequest(pod=good, container=container(good, "app", 2000, GIB)))).payload)
            before = await d.status()

            refusals = [
                (run_pod(pod("whole-node", 40000, GIB)), "TopologyAffinityError: ", "asked for 40 CPUs and 1Gi memory under policy single-numa-node; free per NUMA node: 0: 11 CPUs"),
                (run_pod(pod("bigger-than-numa", 17000, GIB)), "TopologyAffinityError: ", "asked for 17 CPUs"),
                (run_pod(pod("memory", 1000, 200 * GIB)), "TopologyAffinityError: ", "200Gi memory"),
                (run_pod(pod("maybe", 1000, GIB, {"podres.nri.io/opt-out": "maybe"})), "InvalidAnnotation: ", "podres.nri.io/opt-out: 'maybe' is not 'true' or 'false'"),
                (run_pod(pod("nowhere", 1000, GIB, {"podres.nri.io/numa-node": "7"})), "InvalidAnnotation: ", "podres.nri.io/numa-node: '7' is not a list of this machine's NUMA nodes (0-1)"),
            ]
            for request, reason, detail in refusals:
                resp = await d.call("StateChange", request)
                assert resp.code == Code.RESOURCE_EXHAUSTED, resp.message
                assert resp.message.startswith(reason) and detail in resp.message, resp.message

            small = pod("small", 2000, GIB)
            assert (await d.call("StateChange", run_pod(small))).code == 0
            too_big = await d.call("CreateContainer", pb.CreateContainerRequest(pod=small, container=container(small, "app", 3000, GIB // 2)))
            assert too_big.code == Code.RESOURCE_EXHAUSTED
            assert "exclusive container app requests 3 cpus, but only 2 available in pod default/small" in too_big.message
            greedy = await d.call("CreateContainer", pb.CreateContainerRequest(pod=small, container=container(small, "all", 2000, GIB // 2)))
            assert greedy.code == 0
            side = await d.call("CreateContainer", pb.CreateContainerRequest(pod=small, container=container(small, "sidecar")))
            assert side.code == Code.RESOURCE_EXHAUSTED and side.message.startswith("EmptyPodSharedPoolError: ")

            ghost = pb.Container(id="never-announced", pod_sandbox_id="id-ghost", name="ghost", state=pb.CONTAINER_RUNNING)
            for method, request in [
                ("UpdateContainer", pb.UpdateContainerRequest(pod=pod("ghost"), container=ghost, linux_resources=resources(8000, GIB))),
                ("StopContainer", pb.StopContainerRequest(pod=pod("ghost"), container=ghost)),
                ("StateChange", pb.StateChangeEvent(event=pb.REMOVE_CONTAINER, pod=pod("ghost"), container=ghost)),
                ("StateChange", pb.StateChangeEvent(event=pb.REMOVE_POD_SANDBOX, pod=pod("ghost"))),
            ]:
                resp = await d.call(method, request)
                assert resp.code == 0, f"{method}: {resp.message}"
                if method != "StateChange":
                    assert not pb.UpdateContainerResponse.FromString(resp.payload).update  # nobody is moved

            after = await d.status()
            good_before = next(p for p in before["pods"] if p["name"] == "good")
            good_after = next(p for p in after["pods"] if p["name"] == "good")
            assert good_after == good_before
            assert good_after["containers"][0]["cpus"] == app.adjust.linux.resources.cpu.cpus
            assert sorted(p["name"] for p in after["pods"]) == ["good", "small"]

    asyncio.run(asyncio.wait_for(scenario(), 90))


# --- simulate: the same mistakes in manifests -------------------------------------------


def manifest(name: str, cpu: str, memory: str = "1Gi", annotations: dict[str, str] | None = None,
             containers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
            "containers": containers or [{"name": "app", "image": "x"}],
        },
    }


def exclusive(name: str, cpu: str) -> dict[str, Any]:
    return {"name": name, "image": "x", "resources": {"requests": {"cpu": cpu, "memory": "256Mi"}, "limits": {"cpu": cpu, "memory": "256Mi"}}}


@pytest.mark.parametrize(("doc", "admitted", "error"), [
    (manifest("zero", "0"), True, None),  # no CPU budget: an ordinary pod on the node shared pool
    (manifest("fraction", "1500m"), True, None),  # fractional budget: memory pinned, CPUs shared (no bubble)
    (manifest("node", "13"), False, "TopologyAffinityError: Pod Scope pod with pod-level resources failed admission under pod-scope topology manager: asked for 13 CPUs and 1Gi memory under policy single-numa-node; free per NUMA node: 0: 5 CPUs, 15Gi; 1: 6 CPUs, 16Gi"),
    (manifest("opt", "2", annotations={"podres.nri.io/opt-out": "yes"}), False, "InvalidAnnotation: podres.nri.io/opt-out: 'yes' is not 'true' or 'false'"),
    (manifest("numa", "2", annotations={"podres.nri.io/numa-node": "0-9"}), False, "InvalidAnnotation: podres.nri.io/numa-node: '0-9' is not a list of this machine's NUMA nodes (0-1)"),
    (manifest("over", "2", containers=[exclusive("app", "3")]), False, "exclusive container app requests 3 cpus, but only 2 available in pod default/over"),
    (manifest("half", "2", containers=[exclusive("app", "1500m"), {"name": "side", "image": "x"}]), True, None),
])
def test_simulated_budgets_and_annotations(doc: dict[str, Any], admitted: bool, error: str | None) -> None:
    """Budgets that cannot be placed and annotations that do not parse are refused with their reason; others placed."""
    sim = Simulator(t.dual_socket_ht(memory_bytes=16 * GIB), load_config('[topology]\npolicy = "single-numa-node"', "t"))
    sim.apply(pod_from_manifest(doc, "doc"))
    result = sim.result()["pods"][0]
    assert result["admitted"] is admitted, result
    if error is not None:
        assert error in f"{result['error']['reason']}: {result['error']['message']}"


@pytest.mark.parametrize(("text", "error"), [
    ("kind: Deployment\nmetadata: {name: x}\n", "m.yaml document 1: kind 'Deployment' is not supported (want Pod)"),
    ("kind: Pod\nmetadata: {}\nspec: {containers: [{name: a}]}\n", "m.yaml document 1: metadata.name is required"),
    ("kind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, resources: {requests: {cpu: '0.0001'}}}]}\n", "is not a whole number of millicpus"),
    ("kind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, resources: {requests: {cpu: '2'}, limits: {cpu: '1'}}}]}\n", "cpu request 2000m exceeds the limit 1000m"),
    ("kind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, resources: {requests: {memory: '-1Gi'}}}]}\n", "is negative"),
    ("- [unbalanced\n", "m.yaml: not valid YAML"),
    ("{delete: nobody}\n", "m.yaml document 1: delete of unknown pod 'nobody'"),
])
def test_simulate_cli_rejects_malformed_manifests_with_exit_2(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "nri_podres", "simulate", "--machine", str(MACHINE), str(path)],
                          capture_output=True, text=True, timeout=30, check=False, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("nri-podres simulate: ")
    assert error.replace("m.yaml", str(path)) in proc.stderr or error in proc.stderr



def test_sysfs_with_missing_files_starts_and_names_every_fallback(tmp_path: Path) -> None:
    """Only the online list and bare cpuN directories: the daemon runs, and its first log line lists what it assumed."""
    sysfs = tmp_path / "sys"
    (sysfs / "devices/system/cpu").mkdir(parents=True)
    (sysfs / "devices/system/cpu/online").write_text("0-3\n")
    for cpu in range(4):
        (sysfs / f"devices/system/cpu/cpu{cpu}").mkdir()
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(run_argv(tmp_path, "--sysfs", str(sysfs)), stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        for _ in range(200):
            lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
            if any(e["event"] == "nri_disconnected" for e in lines):
                break
            assert proc.poll() is None, log_path.read_text()
            time.sleep(0.05)
        starting = next(e for e in lines if e["event"] == "plugin_starting")
        assert (starting["cpus"], starting["numa_nodes"]) == ("0-3", 1)
        notes = " | ".join(starting["notes"])
        for fallback in ("no NUMA node information", "one L3 group per socket", "no thread_siblings", "no physical_package_id"):
            assert fallback in notes
        assert proc.poll() is None  # still running, dialling the runtime
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


@pytest.mark.parametrize(("ctr_id", "sandbox", "error"), [
    ("", "id-b", "InvalidRequest: container 'x' of pod default/b has no id"),
    ("c1", "", "InvalidRequest: container 'x' names pod sandbox '' but arrived with pod default/b ('id-b')"),
    ("c1", "id-other", "InvalidRequest: container 'x' names pod sandbox 'id-other' but arrived with pod default/b ('id-b')"),
])
def test_container_without_identity_is_refused(ctr_id: str, sandbox: str, error: str) -> None:
    """Found by fuzzing: a container with an empty id aliased "no container" and was left on CPUs an
    exclusive container then took. A runtime always names both; anything else is refused as such."""

    stub = Stub(PodresPlugin(t.dual_socket_ht(memory_bytes=16 * GIB), default_config()), "podres", "90")
    b = pod("b", 1000, GIB)
    stub.handle(PLUGIN_SERVICE, "StateChange", run_pod(b).SerializeToString())
    bad = pb.Container(id=ctr_id, pod_sandbox_id=sandbox, name="x", state=pb.CONTAINER_CREATED)
    with pytest.raises(RPCError) as err:
        stub.handle(PLUGIN_SERVICE, "CreateContainer", pb.CreateContainerRequest(pod=b, container=bad).SerializeToString())
    assert (err.value.code, err.value.message) == (Code.RESOURCE_EXHAUSTED, error)
    assert not stub.plugin.state.containers
