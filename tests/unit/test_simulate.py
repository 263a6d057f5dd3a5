"""`nri-podres simulate`: the daemon's own handlers, fed what containerd would send, on multi-NUMA machines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nri_podres.config import load_config
from nri_podres.cpuset import CPUSet
from nri_podres.machine import load_machine, synthetic
from nri_podres.podspec import ManifestError, pod_from_manifest
from nri_podres.simulate import Simulator

REPO = Path(__file__).resolve().parents[2]
DUAL = REPO / "examples" / "dual-socket-32cpu.yaml"
EXAMPLE = REPO / "examples" / "tightly-coupled-database.yaml"
CONFIG = load_config('[cpu]\nreserved-cpus = ""\n[memory]\nreserved = {}\n', "test")


def pod(name: str, budget: str | None, db: str | None = None, sidecars: int = 2, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "initContainers": [{"name": f"sidecar-{i}", "restartPolicy": "Always"} for i in range(sidecars)],
        "containers": [{"name": "database"}],
    }
    if budget is not None:
        spec["resources"] = {"requests": {"cpu": budget, "memory": "4Gi"}, "limits": {"cpu": budget, "memory": "4Gi"}}
    if db is not None:
        spec["containers"][0]["resources"] = {"requests": {"cpu": db, "memory": "2Gi"}, "limits": {"cpu": db, "memory": "2Gi"}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "annotations": annotations or {}}, "spec": spec}


def run(sim: Simulator, *docs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    for i, doc in enumerate(docs):
        sim.apply(pod_from_manifest(doc, f"doc {i}"))
    return {p["name"]: p for p in sim.result()["pods"]}


def containers(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in p["containers"]}


def test_design_example_on_a_dual_socket_machine() -> None:
    """Database: 6 exclusive CPUs on whole cores, quota lifted; sidecars share the other 2; one NUMA node."""
    topo = load_machine(DUAL)
    sim = Simulator(topo, load_config("", "default"))
    result = run(sim, *yaml.safe_load_all(EXAMPLE.read_text()))
    p = result["tightly-coupled-database"]
    assert p["admitted"] and p["numa_nodes"] == [0]
    bubble = CPUSet.parse(p["cpus"])
    assert len(bubble) == 8 and bubble <= topo.node[0].cpus
    assert 0 not in bubble  # reserved-cpus = "0" by default
    c = containers(p)
    db = CPUSet.parse(c["database"]["cpus"])
    assert (len(db), c["database"]["pool"], c["database"]["cpu_quota"]) == (6, "exclusive", -1)
    assert all(topo.core_siblings(cpu) <= db for cpu in db), "the database's CPUs are whole cores"
    for name in ("metrics-exporter", "backup-agent"):
        assert CPUSet.parse(c[name]["cpus"]) == bubble - db
        assert (c[name]["pool"], c[name]["kind"], c[name]["mems"], c[name]["cpu_quota"]) == ("pod-shared", "sidecar", "0", None)
    assert c["database"]["mems"] == "0"


def test_second_pod_lands_on_the_other_node_and_a_third_is_refused() -> None:
    """Two 16-CPU bubbles fill both nodes; a third pod fails with TopologyAffinityError and numbers."""
    topo = load_machine(DUAL)
    sim = Simulator(topo, CONFIG)
    result = run(sim, pod("a", "16", "12"), pod("b", "16", "12"), pod("c", "4", "2"))
    assert result["a"]["numa_nodes"] != result["b"]["numa_nodes"]
    assert {tuple(result["a"]["numa_nodes"]), tuple(result["b"]["numa_nodes"])} == {(0,), (1,)}
    assert not result["c"]["admitted"]
    assert result["c"]["error"]["reason"] == "TopologyAffinityError"
    assert "4" in result["c"]["error"]["message"]
    assert result["c"]["containers"] == []


def test_delete_frees_the_node_for_the_next_pod_and_the_node_pool_grows() -> None:
    """After a delete the freed node takes the next pod; ordinary pods see the node pool change."""
    topo = load_machine(DUAL)
    sim = Simulator(topo, CONFIG)
    run(sim, pod("a", "16", "12"), pod("web", None, sidecars=0))
    web_before = containers(next(p for p in sim.result()["pods"] if p["name"] == "web"))["database"]["cpus"]
    assert CPUSet.parse(web_before) == topo.online - topo.node[0].cpus or CPUSet.parse(web_before) == topo.online - topo.node[1].cpus
    assert sim.delete("a")
    result = run(sim, pod("b", "16", "12"))
    assert result["b"]["admitted"]
    assert "a" not in result


def test_sidecars_shrink_when_the_exclusive_container_arrives() -> None:
    """Created first, the sidecars run on the whole bubble; the database's arrival moves them off its CPUs."""
    topo = synthetic(sockets=1, numa_per_socket=2, cores_per_l3=4, threads_per_core=2)
    sim = Simulator(topo, CONFIG)
    result = run(sim, pod("p", "4", "2"))
    c = containers(result["p"])
    bubble = CPUSet.parse(result["p"]["cpus"])
    db = CPUSet.parse(c["database"]["cpus"])
    assert len(db) == 2 and db <= bubble
    assert CPUSet.parse(c["sidecar-0"]["cpus"]) == bubble - db


def test_best_effort_spans_nodes_and_mems_cover_them() -> None:
    """Under best-effort a pod larger than a node spans two, with mems on both."""
    topo = load_machine(DUAL)
    cfg = load_config('[topology]\npolicy = "best-effort"\n[cpu]\nreserved-cpus = ""\n[memory]\nreserved = {}\n', "test")
    sim = Simulator(topo, cfg)
    result = run(sim, pod("wide", "20", "16"))
    assert result["wide"]["admitted"]
    assert result["wide"]["numa_nodes"] == [0, 1]
    assert containers(result["wide"])["database"]["mems"] == "0-1"


def test_numa_annotation_is_a_preference_within_the_budget() -> None:
    """podres.nri.io/numa-node picks the node; the bubble is still exactly the budget."""
    topo = load_machine(DUAL)
    sim = Simulator(topo, CONFIG)
    result = run(sim, pod("pinned", "4", "2", annotations={"podres.nri.io/numa-node": "1"}))
    assert result["pinned"]["numa_nodes"] == [1]
    assert len(CPUSet.parse(result["pinned"]["cpus"])) == 4


def test_empty_pod_pool_refuses_the_sidecar() -> None:
    """A budget entirely taken by the exclusive container leaves nothing for sidecars: refused, with the reason."""
    topo = load_machine(DUAL)
    sim = Simulator(topo, CONFIG)
    result = run(sim, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "full"}, "spec": {
        "resources": {"limits": {"cpu": "2", "memory": "1Gi"}},
        "containers": [{"name": "db", "resources": {"limits": {"cpu": "2", "memory": "512Mi"}}}, {"name": "late-sidecar"}],
    }})
    assert not result["full"]["admitted"]
    assert result["full"]["error"]["reason"] == "EmptyPodSharedPoolError"


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({"kind": "Deployment"}, "kind 'Deployment' is not supported"),
        ({"metadata": {}, "spec": {"containers": [{"name": "a"}]}}, "metadata.name is required"),
        ({"metadata": {"name": "x"}, "spec": {}}, "spec.containers must list at least one container"),
        ({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "lots"}}}]}}, "spec.containers[0].resources.limits.cpu"),
        ({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a"}, {"name": "a"}]}}, "container name 'a' is used twice"),
        ({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]}}, "exceeds the limit"),
    ],
)
def test_bad_manifests_name_the_field(doc: dict[str, Any], error: str) -> None:
    """A manifest error says which document and which field."""
    with pytest.raises(ManifestError, match=__import__("re").escape(error)):
        pod_from_manifest(doc, "pods.yaml document 1")


def test_cli_json_contract(tmp_path: Path) -> None:
    """`simulate --json` prints the documented shape; a {delete: NAME} document removes the pod."""
    manifest = tmp_path / "pods.yaml"
    manifest.write_text(yaml.safe_dump_all([pod("keep", "4", "2"), pod("gone", "4", "2"), {"delete": "gone"}]))
    out = subprocess.run(
        [sys.executable, "-m", "nri_podres", "simulate", "--machine", str(DUAL), "--json", str(manifest)],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout
    result = json.loads(out)
    assert [p["name"] for p in result["pods"]] == ["keep"]
    p = result["pods"][0]
    assert set(p) >= {"name", "namespace", "admitted", "error", "numa_nodes", "cpus", "containers"}
    assert set(p["containers"][0]) >= {"name", "kind", "pool", "cpus", "mems", "cpu_quota", "state"}
    assert set(result["node"]) >= {"shared_pool", "reserved_cpus"}
    assert result["node"]["reserved_cpus"] == "0"


def test_cli_reports_bad_input_without_a_traceback(tmp_path: Path) -> None:
    """A broken manifest is one clear line on stderr and exit 2."""
    manifest = tmp_path / "bad.yaml"
    manifest.write_text("kind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: a, resources: {limits: {cpu: lots}}}]}\n")
    proc = subprocess.run([sys.executable, "-m", "nri_podres", "simulate", "--machine", str(DUAL), str(manifest)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert "bad.yaml document 1: spec.containers[0].resources.limits.cpu" in proc.stderr
    assert "Traceback" not in proc.stderr
