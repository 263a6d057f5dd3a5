"""Runs INSIDE the guest, in the agent's process (``Guest.call``): pods over CRI.

Plain JSON-able dicts in and out, since the host drives it over the agent.
The CRI client is the project's kubelet stand-in, ``tests/e2e/cri.py``, talking
to the guest's containerd (``tools/qemu/guest-containerd.sh``); it is imported
once and its connection is kept across calls (and containerd restarts).
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
_lock = threading.Lock()
_clients: dict[str, Any] = {}
_pods: dict[str, Any] = {}  # pod id -> cri.Pod, for removal


def _cri_module() -> Any:
    module = sys.modules.get("nrp_e2e_cri")
    if module is None:
        spec = importlib.util.spec_from_file_location("nrp_e2e_cri", REPO / "tests" / "e2e" / "cri.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["nrp_e2e_cri"] = module
        spec.loader.exec_module(module)
    return module


def _client(e2e_dir: str) -> Any:
    with _lock:
        client = _clients.get(e2e_dir)
        if client is None:
            cri = _cri_module()
            root = Path(e2e_dir)
            client = cri.Cri(root / "containerd.sock", root / "cri-stubs", log_root=root / "pod-logs",
                             timeout_s=120.0)
            _clients[e2e_dir] = client
        return client


def _error_text(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    return str(details()) if callable(details) else f"{type(exc).__name__}: {exc}"


def _placement(client: Any, container_id: str) -> dict[str, Any]:
    cri = _cri_module()
    info = client.container_status(container_id)
    result = {"id": container_id, "state": info.state, "pid": info.pid,
              "spec_cpus": info.spec_cpus, "spec_mems": info.spec_mems, "cpus": "", "mems": ""}
    if info.pid:
        try:
            result["cpus"] = cri.cpus_allowed(info.pid)
            result["mems"] = cri.mems_allowed(info.pid)
        except (OSError, KeyError):
            pass  # the process is gone
    return result


def run_pod(e2e_dir: str, pod: dict[str, Any]) -> dict[str, Any]:
    """RunPodSandbox, then create+start each container in order.

    ``pod``: name, namespace, uid (optional), cpu_millis, cpu_limit_millis (optional),
    memory_limit_bytes, annotations, containers: [{name, cpu_request_millis,
    cpu_limit_millis, memory_limit_bytes, cpuset_cpus, cpuset_mems, annotations}].
    A refused sandbox gives ``error`` and no containers; a refused container gives
    its ``error`` and the next containers are still tried.
    """
    client = _client(e2e_dir)
    try:
        sandbox = client.run_pod(
            pod["name"], pod.get("namespace", "default"), pod.get("uid"),
            cpu_millis=pod.get("cpu_millis", 0), memory_limit_bytes=pod.get("memory_limit_bytes", 0),
            cpu_limit_millis=pod.get("cpu_limit_millis"), annotations=pod.get("annotations"),
        )
    except Exception as exc:  # the runtime's answer is what the test looks at
        return {"pod_id": "", "uid": pod.get("uid", ""), "error": _error_text(exc), "containers": []}
    _pods[sandbox.id] = sandbox
    containers = []
    for spec in pod.get("containers", []):
        entry: dict[str, Any] = {"name": spec["name"], "id": "", "error": None}
        try:
            container = client.create_container(
                sandbox, spec["name"],
                cpu_request_millis=spec.get("cpu_request_millis", 0),
                cpu_limit_millis=spec.get("cpu_limit_millis", 0),
                memory_limit_bytes=spec.get("memory_limit_bytes", 0),
                cpuset_cpus=spec.get("cpuset_cpus", ""), cpuset_mems=spec.get("cpuset_mems", ""),
                annotations=spec.get("annotations"),
            )
            entry["id"] = container.id
            client.start(container)
            entry.update(_placement(client, container.id))
        except Exception as exc:
            entry["error"] = _error_text(exc)
        containers.append(entry)
    return {"pod_id": sandbox.id, "uid": sandbox.uid, "error": None, "containers": containers}


def placement(e2e_dir: str, container_id: str) -> dict[str, Any]:
    """A container's state, pid, OCI spec cpuset and /proc/<pid>/status allowed lists, now."""
    return _placement(_client(e2e_dir), container_id)


def remove_pod(e2e_dir: str, pod_id: str) -> None:
    client = _client(e2e_dir)
    client.remove_pod(_pods.pop(pod_id, pod_id))


def remove_all_pods(e2e_dir: str) -> list[str]:
    _pods.clear()
    return list(_client(e2e_dir).remove_all_pods())
