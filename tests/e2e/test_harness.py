"""The end-to-end harness itself: a real containerd, real runc, the kubelet-like
CRI client, and an NRI plugin (the Go no-op reference) whose adjustment lands.

No nri-podres daemon is involved here; these tests prove that what the other
end-to-end tests observe (OCI spec, cgroup files, the process's allowed CPUs)
is what the runtime really did.
"""

from __future__ import annotations

import pytest
from cri import MiB, Cri, cpu_quota_us, cpu_shares

pytestmark = pytest.mark.runtime


@pytest.mark.parametrize(
    ("millicpu", "shares", "quota_us"),
    [(0, 2, 0), (1, 2, 1000), (250, 256, 25000), (1000, 1024, 100000), (2500, 2560, 250000)],
)
def test_kubelet_cpu_formulas(millicpu: int, shares: int, quota_us: int) -> None:
    assert (cpu_shares(millicpu), cpu_quota_us(millicpu)) == (shares, quota_us)


def test_container_runs_with_kubelet_resources(cri: Cri) -> None:
    pod = cri.run_pod("plain", cpu_millis=2000, memory_limit_bytes=1024 * MiB)
    app = cri.run_container(pod, "app", cpu_request_millis=500, cpu_limit_millis=1000, memory_limit_bytes=256 * MiB)
    sidecar = cri.run_container(pod, "sidecar")  # no resources: inherits the pod's limits

    app_info, sidecar_info = cri.container_status(app), cri.container_status(sidecar)
    assert (app_info.state, sidecar_info.state) == ("CONTAINER_RUNNING", "CONTAINER_RUNNING")
    assert dict(app_info.cpu) == {"shares": 512, "quota": 100000, "period": 100000}
    assert dict(sidecar_info.cpu) == {"shares": 2048, "quota": 200000, "period": 100000}
    assert app_info.memory["limit"] == 256 * MiB
    assert sidecar_info.memory["limit"] == 1024 * MiB
    assert app_info.cgroups_path == f"{pod.cgroup_parent}/{app.id}"
    assert (app_info.cgroup_shares(), app_info.cgroup_cfs_quota_us()) == (512, 100000)
    # no cpuset asked for: the process may run anywhere, and reports so itself
    reported = cri.wait_for_log(app, "Cpus_allowed_list").split(":", 1)[1].strip()
    assert reported == app_info.cpus_allowed() == app_info.cgroup_cpus()
    inside = cri.exec(app, ["cat", "/proc/self/status"])
    assert inside.exit_code == 0
    assert f"Cpus_allowed_list:\t{reported}" in inside.stdout


def test_cri_cpuset_lands_in_spec_cgroup_and_process(cri: Cri) -> None:
    pod = cri.run_pod("pinned", cpu_millis=1000)
    ctr = cri.run_container(pod, "app", cpu_request_millis=1000, cpu_limit_millis=1000, cpuset_cpus="1")

    info = cri.container_status(ctr)
    assert (info.spec_cpus, info.cgroup_cpus(), info.cpus_allowed()) == ("1", "1", "1")
    assert cri.wait_for_log(ctr, "Cpus_allowed_list").endswith("\t1")


def test_nri_plugin_adjustment_lands(cri: Cri, go_plugin) -> None:
    plugin = go_plugin(cpuset="0")
    pod = cri.run_pod("adjusted", cpu_millis=2000)
    ctr = cri.run_container(pod, "app", cpu_request_millis=1000, cpu_limit_millis=1000)

    info = cri.container_status(ctr)
    assert (info.spec_cpus, info.cgroup_cpus(), info.cpus_allowed()) == ("0", "0", "0")
    seen = plugin.wait_for_event("run_pod_sandbox", pod="default/adjusted")
    assert (seen["shares"], seen["quota"]) == (2048, 200000)  # the pod-level budget reaches NRI
    plugin.wait_for_event("create_container", container="app", container_id=ctr.id)
    plugin.wait_for_event("start_container", container="app")


def test_containerd_restart_keeps_containers_and_drops_plugins(containerd, cri: Cri, go_plugin) -> None:
    plugin = go_plugin()
    pod = cri.run_pod("survivor", cpu_millis=1000)
    ctr = cri.run_container(pod, "app", cpuset_cpus="1")
    pid = cri.container_status(ctr).pid

    containerd.restart()

    after = cri.container_status(ctr)
    assert (after.state, after.pid, after.cpus_allowed()) == ("CONTAINER_RUNNING", pid, "1")
    # the runtime drops its NRI plugins; reconnecting is the plugin's job (this one just exits)
    assert plugin.wait_exit() == 0
    plugin.wait_for_event("plugin_disconnected")
    fresh = go_plugin(name="go-noop-again")
    fresh_pod = cri.run_pod("after-restart")
    cri.run_container(fresh_pod, "app")
    fresh.wait_for_event("create_container", pod="default/after-restart")
