"""nri-podres against a real containerd 1.7 (NRI 0.6.1) with runc, driven over CRI like a kubelet.

The truth is read from the running processes (/proc/<pid>/status) and the
cgroup files, never from the plugin's own logs alone. On this 2-CPU node the
example pod of the design is scaled down: a 2-CPU budget, a 1-CPU database,
two sidecars sharing the other CPU.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import grpc
import pytest

from conftest import POD_SCOPE_CONFIG, Containerd, Daemon
from cri import Container, Cri, MiB

pytestmark = pytest.mark.runtime

CONFIG = POD_SCOPE_CONFIG


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    return path


def truth(cri: Cri, ctr: Container) -> tuple[str, str]:
    """(Cpus_allowed_list, Mems_allowed_list) of the container's process."""
    info = cri.container_status(ctr)
    return info.cpus_allowed(), info.mems_allowed()


def wait_truth(cri: Cri, ctr: Container, cpus: str, timeout_s: float = 5.0) -> tuple[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        got = truth(cri, ctr)
        if got[0] == cpus or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def database_pod(cri: Cri, name: str = "tightly-coupled-database") -> tuple[list[Container], Container]:
    """Sidecars first (created before the app, as the kubelet does), then the 1-CPU database."""
    pod = cri.run_pod(name, cpu_millis=2000, memory_limit_bytes=256 * MiB)
    sidecars = [cri.run_container(pod, n) for n in ("metrics-exporter", "backup-agent")]
    database = cri.run_container(pod, "database", cpu_request_millis=1000, cpu_limit_millis=1000, memory_limit_bytes=128 * MiB)
    return sidecars, database


def test_registers_and_sees_events_with_identities(containerd: Containerd, cri: Cri, plugin, config: Path) -> None:
    """The plugin registers, is configured by containerd 1.7.24, and logs each event with pod and container names."""
    daemon: Daemon = plugin(config)
    configured = daemon.wait_for_event("plugin_configured")
    assert configured["runtime"] == "containerd"
    assert configured["nri_version"] == "0.6.1"
    pod = cri.run_pod("identity-pod", namespace="team-a", cpu_millis=1000, memory_limit_bytes=64 * MiB)
    daemon.wait_for_event("pod_admitted", pod_name="identity-pod", pod_namespace="team-a", pod_uid=pod.uid)
    ctr = cri.run_container(pod, "app", cpu_request_millis=1000, cpu_limit_millis=1000, memory_limit_bytes=32 * MiB)
    created = daemon.wait_for_event("container_allocated", container_name="app", pod_name="identity-pod")
    assert created["pool"] == "exclusive"
    assert truth(cri, ctr)[0] == created["cpus"]
    cri.stop(ctr)
    daemon.wait_for_event("container_released", container_name="app")
    cri.remove(ctr)
    daemon.wait_for_event("container_removed", container_name="app")
    cri.remove_pod(pod)
    daemon.wait_for_event("pod_released", pod_name="identity-pod")


def test_exclusive_database_and_sidecars_shrunk_when_it_arrives(containerd: Containerd, cri: Cri, plugin, config: Path) -> None:
    """The database gets one exclusive CPU with quota lifted; sidecars move off it to the pod pool; mems = node 0."""
    daemon = plugin(config)
    sidecars, database = database_pod(cri)
    db_cpus, db_mems = truth(cri, database)
    assert len(db_cpus) == 1 and db_cpus in "01"
    other = "1" if db_cpus == "0" else "0"
    for sidecar in sidecars:
        assert wait_truth(cri, sidecar, other) == (other, "0")
    info = cri.container_status(database)
    assert (info.cgroup_cpus(), info.cgroup_mems(), db_mems) == (db_cpus, "0", "0")
    assert info.cgroup_cfs_quota_us() == -1
    side_info = cri.container_status(sidecars[0])
    assert side_info.cgroup_cpus() == other
    assert side_info.cgroup_cfs_quota_us() == 200000  # a pod-shared container keeps its (pod) quota
    assert daemon.alive


def test_ordinary_pod_on_node_pool_and_release_on_delete(containerd: Containerd, cri: Cri, plugin, config: Path) -> None:
    """A burstable pod runs on the node shared pool; when a bubble is deleted, the pool grows back."""
    daemon = plugin(config)
    bubble = cri.run_pod("one-cpu", cpu_millis=1000, memory_limit_bytes=64 * MiB)
    app = cri.run_container(bubble, "app", cpu_request_millis=1000, cpu_limit_millis=1000, memory_limit_bytes=32 * MiB)
    app_cpu = truth(cri, app)[0]
    ordinary_pod = cri.run_pod("burstable", cpu_millis=500, cpu_limit_millis=0)
    web = cri.run_container(ordinary_pod, "web", cpu_request_millis=500)
    shared = "1" if app_cpu == "0" else "0"
    assert truth(cri, web) == (shared, "0")
    cri.remove_pod(bubble)
    daemon.wait_for_event("pod_released", pod_name="one-cpu")
    # The growth has no reply to ride on under NRI 0.6.1; the next reply carries it.
    probe_pod = cri.run_pod("next", cpu_millis=500, cpu_limit_millis=0)
    cri.run_container(probe_pod, "probe", cpu_request_millis=100)
    assert wait_truth(cri, web, "0-1") == ("0-1", "0")


def test_refused_pod_error_is_visible_through_cri(containerd: Containerd, cri: Cri, plugin, config: Path) -> None:
    """A budget no NUMA node can hold fails RunPodSandbox with the reason and the numbers."""
    plugin(config)
    with pytest.raises(grpc.RpcError) as err:
        cri.run_pod("too-big", cpu_millis=3000, memory_limit_bytes=64 * MiB)
    text = err.value.details()
    assert "TopologyAffinityError" in text
    assert "3" in text


def test_empty_pod_pool_refuses_the_sidecar(containerd: Containerd, cri: Cri, plugin, config: Path) -> None:
    """When exclusive containers use the whole budget, a shared container is refused, not run on exclusive CPUs."""
    plugin(config)
    pod = cri.run_pod("all-exclusive", cpu_millis=1000, memory_limit_bytes=64 * MiB)
    cri.run_container(pod, "app", cpu_request_millis=1000, cpu_limit_millis=1000, memory_limit_bytes=32 * MiB)
    with pytest.raises(grpc.RpcError) as err:
        cri.create_container(pod, "sidecar")
    assert "EmptyPodSharedPoolError" in err.value.details()


def wait_synchronized(daemon: Daemon, count: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(e.get("event") == "plugin_synchronized" for e in daemon.events()) < count:
        assert time.monotonic() < deadline, f"no synchronization #{count}:\n{daemon.output()[-3000:]}"
        time.sleep(0.1)


def test_restarts_move_nothing(containerd: Containerd, cri: Cri, plugin, config: Path) -> None:
    """SIGKILL + restart of the plugin, then a containerd restart, leave every container where it was."""
    daemon = plugin(config)
    sidecars, database = database_pod(cri)
    other = "1" if truth(cri, database)[0] == "0" else "0"
    wait_truth(cri, sidecars[0], other)
    before = {c.name: truth(cri, c) for c in [*sidecars, database]}
    daemon.kill(signal.SIGKILL)
    daemon.start()
    assert daemon.wait_for_event("plugin_synchronized")["moved"] == 0
    assert {c.name: truth(cri, c) for c in [*sidecars, database]} == before
    containerd.restart()
    wait_synchronized(daemon, 2)
    assert {c.name: truth(cri, c) for c in [*sidecars, database]} == before
    assert daemon.alive


def test_container_created_while_plugin_down_is_placed_on_return(containerd: Containerd, cri: Cri, plugin, config: Path) -> None:
    """A container the plugin never saw runs on every CPU; when the plugin returns it is moved off the exclusive one."""
    daemon = plugin(config)
    pod = cri.run_pod("db", cpu_millis=1000, memory_limit_bytes=64 * MiB)
    app = cri.run_container(pod, "app", cpu_request_millis=1000, cpu_limit_millis=1000, memory_limit_bytes=32 * MiB)
    app_cpu = truth(cri, app)[0]
    shared = "1" if app_cpu == "0" else "0"
    daemon.kill(signal.SIGKILL)
    late_pod = cri.run_pod("while-down", cpu_millis=200, cpu_limit_millis=0)
    late = cri.run_container(late_pod, "late", cpu_request_millis=200)
    assert truth(cri, late)[0] == "0-1"  # nobody placed it
    daemon.start()
    assert wait_truth(cri, late, shared) == (shared, "0")
    assert truth(cri, app)[0] == app_cpu


def test_plugin_started_after_pods_sees_them_in_synchronize(containerd: Containerd, cri: Cri, plugin, config: Path) -> None:
    """Pods that exist before the plugin are reported in Synchronize and adopted."""
    pod = cri.run_pod("pre-existing", cpu_millis=1000, memory_limit_bytes=64 * MiB)
    cri.run_container(pod, "app", cpu_request_millis=1000, cpu_limit_millis=1000, memory_limit_bytes=32 * MiB)
    daemon = plugin(config)
    synced = daemon.wait_for_event("plugin_synchronized")
    assert synced["pods"] >= 1
    assert synced["containers"] >= 1


def test_update_resources_cannot_pull_an_exclusive_container_off_its_cpus(containerd: Containerd, cri: Cri, plugin, config: Path) -> None:
    """An UpdateContainerResources that rewrites the cpuset (as a kubelet CPU manager would) is overridden:
    the plugin re-asserts its own sets on the target."""
    from cri import Resources

    daemon = plugin(config)
    sidecars, database = database_pod(cri)
    db_cpus = truth(cri, database)[0]
    cri.update_resources(database, Resources(1000, 1000, 128 * MiB, cpuset_cpus="0-1", cpuset_mems="0"))
    daemon.wait_for_event("container_updated", container_name="database")
    assert truth(cri, database) == (db_cpus, "0")
    assert cri.container_status(database).cgroup_cpus() == db_cpus
    other = "1" if db_cpus == "0" else "0"
    assert truth(cri, sidecars[0])[0] == other


def test_pod_deleted_after_a_containerd_restart_frees_its_cpus(containerd: Containerd, cri: Cri, plugin, config: Path) -> None:
    """containerd 1.7 sends no RemovePodSandbox for pods it ran before its restart; when such a pod
    blocks an admission, the plugin sees its sandbox process is gone and releases it, so the same
    request succeeds (where /proc cannot tell, it resynchronizes and the kubelet's retry succeeds)."""
    daemon = plugin(config)
    first = cri.run_pod("before-restart", cpu_millis=2000, memory_limit_bytes=64 * MiB)
    cri.run_container(first, "app", cpu_request_millis=1000, cpu_limit_millis=1000, memory_limit_bytes=32 * MiB)
    containerd.restart()
    wait_synchronized(daemon, 2)
    cri.remove_pod(first)
    attempts = 0
    deadline = time.monotonic() + 30
    while True:
        attempts += 1
        try:
            second = cri.run_pod("after-restart", cpu_millis=2000, memory_limit_bytes=64 * MiB)
            break
        except grpc.RpcError as err:  # the kubelet retries a failed RunPodSandbox; so do we
            assert "TopologyAffinityError" in err.details()
            assert time.monotonic() < deadline, daemon.output()[-3000:]
            time.sleep(1)
    assert attempts == 1, "this host's /proc shows the sandbox is gone: no retry needed"
    daemon.wait_for_event("pod_gone", pod_name="before-restart")
    ctr = cri.run_container(second, "app", cpu_request_millis=1000, cpu_limit_millis=1000, memory_limit_bytes=32 * MiB)
    assert len(truth(cri, ctr)[0]) == 1
