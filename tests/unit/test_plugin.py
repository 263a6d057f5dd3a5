"""The NRI handlers around the allocator: commit points, pending updates, checkpoint use."""

from __future__ import annotations

import json
import os
from pathlib import Path


import pytest
from structlog.testing import capture_logs

from nri_podres._proto import api_pb2 as pb
from nri_podres.checkpoint import CheckpointStore
from nri_podres.config import load_config
from nri_podres.errors import AdmissionError
from nri_podres.machine import synthetic
from nri_podres.plugin import PodresPlugin

TOPO = synthetic(sockets=2, numa_per_socket=1, cores_per_l3=4, threads_per_core=2)  # 16 CPUs, 2 nodes
CONFIG = load_config('[cpu]\nreserved-cpus = ""\n[memory]\nreserved = {}\n', "test")
GiB = 1 << 30


def sandbox(pid: str, cpus: int | None, memory: int = GiB) -> pb.PodSandbox:
    pod = pb.PodSandbox(id=pid, name=pid, namespace="default", uid=f"uid-{pid}")
    if cpus is not None:
        res = pod.linux.pod_resources
        res.cpu.shares.value = cpus * 1024
        res.cpu.quota.value = cpus * 100_000
        res.cpu.period.value = 100_000
        res.memory.limit.value = memory
    return pod


def container(cid: str, pod: pb.PodSandbox, cpus: int | None = None, memory: int = GiB // 2, cpuset: str = "", mems: str = "") -> pb.Container:
    ctr = pb.Container(id=cid, pod_sandbox_id=pod.id, name=cid, state=pb.CONTAINER_RUNNING)
    res = ctr.linux.resources
    if cpus is None:  # no resources of its own: CRI fills in the pod's limits
        res.CopyFrom(pod.linux.pod_resources)
    else:
        res.cpu.shares.value = cpus * 1024
        res.cpu.quota.value = cpus * 100_000
        res.cpu.period.value = 100_000
        res.memory.limit.value = memory
    res.cpu.cpus = cpuset
    res.cpu.mems = mems
    return ctr


def test_a_refused_request_changes_nothing() -> None:
    """An AdmissionError leaves the state exactly as it was (the commit point is after success)."""
    plugin = PodresPlugin(TOPO, CONFIG)
    plugin.run_pod_sandbox(sandbox("a", 8))
    before = plugin.state
    with pytest.raises(AdmissionError, match="TopologyAffinityError"):
        plugin.run_pod_sandbox(sandbox("b", 12))
    assert plugin.state is before


def test_sidecars_are_shrunk_in_the_create_reply_of_the_exclusive_container() -> None:
    """The reply that places the database carries updates for the sidecars, never for the database itself."""
    plugin = PodresPlugin(TOPO, CONFIG)
    pod = sandbox("p", 4)
    plugin.run_pod_sandbox(pod)
    side_adjust, _ = plugin.create_container(pod, container("side", pod))
    bubble = side_adjust.linux.resources.cpu.cpus
    db_adjust, updates = plugin.create_container(pod, container("db", pod, cpus=2))
    assert db_adjust.linux.resources.cpu.quota.value == -1
    assert [u.container_id for u in updates] == ["side"]
    from nri_podres.cpuset import CPUSet

    assert CPUSet.parse(updates[0].linux.resources.cpu.cpus) == CPUSet.parse(bubble) - CPUSet.parse(db_adjust.linux.resources.cpu.cpus)


def test_changes_without_a_reply_ride_on_the_next_one() -> None:
    """Removing a pod grows the node pool; the ordinary container learns it from the next reply."""
    plugin = PodresPlugin(TOPO, CONFIG)
    big = sandbox("big", 8)
    plugin.run_pod_sandbox(big)
    web_pod = sandbox("web", None)
    plugin.run_pod_sandbox(web_pod)
    web_adjust, _ = plugin.create_container(web_pod, container("web", web_pod, cpus=None))
    assert len(web_adjust.linux.resources.cpu.cpus.split(",")) >= 1
    plugin.remove_pod_sandbox(big)
    other = sandbox("other", None)
    plugin.run_pod_sandbox(other)
    _, updates = plugin.create_container(other, container("other", other))
    grown = {u.container_id: u.linux.resources.cpu.cpus for u in updates}
    assert grown == {"web": "0-15"}
    assert plugin.take_unsolicited_updates() == []  # delivered once


def test_checkpoint_keeps_a_bubble_without_containers_across_a_restart(tmp_path: Path) -> None:
    """A pod admitted before a restart, with no container yet, keeps the same bubble afterwards."""
    store = CheckpointStore(tmp_path)
    first = PodresPlugin(TOPO, CONFIG, save=lambda state: store.save(state.to_json()))
    first.synchronize([], [])
    pod = sandbox("early", 4)
    first.run_pod_sandbox(pod)
    bubble = first.state.pods["early"].bubble
    loaded = store.load()
    assert loaded.problem is None
    second = PodresPlugin(TOPO, CONFIG, checkpoint=loaded.data)
    second.synchronize([pod], [])
    assert second.state.pods["early"].bubble == bubble


def test_invalid_checkpoint_content_is_reported_and_ignored() -> None:
    """A checkpoint that parses as JSON but not as a state is logged and the runtime's view wins."""
    plugin = PodresPlugin(TOPO, CONFIG, checkpoint={"version": 1, "pods": "nonsense"})
    with capture_logs() as logs:
        plugin.synchronize([sandbox("p", 2)], [])
    assert any(entry["event"] == "checkpoint_ignored" for entry in logs)
    assert "p" in plugin.state.pods


def test_adoption_keeps_running_containers_where_they_are() -> None:
    """Synchronize adopts a valid exclusive set as it is, even if a fresh allocation would choose otherwise."""
    plugin = PodresPlugin(TOPO, CONFIG)
    pod = sandbox("p", 2)
    updates = plugin.synchronize([pod], [container("db", pod, cpus=2, cpuset="14,15", mems="1")])
    assert str(plugin.state.containers["db"].assignment.cpus) == "14-15"
    assert updates == []
    # the same set without mems is kept too; only the missing mems are filled in
    plugin = PodresPlugin(TOPO, CONFIG)
    (update,) = plugin.synchronize([pod], [container("db", pod, cpus=2, cpuset="14,15")])
    assert (update.linux.resources.cpu.cpus, update.linux.resources.cpu.mems) == ("14-15", "1")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "is corrupt"),
        (json.dumps({"version": 99, "state": {}}), "unsupported format version 99"),
        (json.dumps([1, 2]), "unsupported format version None"),
    ],
)
def test_corrupt_checkpoint_files_are_reported(tmp_path: Path, content: str, problem: str) -> None:
    """A checkpoint that cannot be used says why; it is never fatal."""
    (tmp_path / "checkpoint.json").write_text(content)
    loaded = CheckpointStore(tmp_path).load()
    assert loaded.data is None
    assert problem in (loaded.problem or "")


def test_checkpoint_is_written_atomically_and_root_only(tmp_path: Path) -> None:
    """The file is replaced whole (no temp files left) and readable by its owner only."""
    store = CheckpointStore(tmp_path / "state")
    for i in range(3):
        store.save({"n": i})
    assert sorted(os.listdir(tmp_path / "state")) == ["checkpoint.json"]
    assert (tmp_path / "state" / "checkpoint.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert store.load().data == {"n": 2}


def test_unknown_container_events_are_harmless() -> None:
    """Stop/remove/update of a container the runtime never announced is a no-op, not an error."""
    plugin = PodresPlugin(TOPO, CONFIG)
    pod = sandbox("p", None)
    before = plugin.state
    assert plugin.stop_container(pod, pb.Container(id="ghost", pod_sandbox_id="p")) == []
    plugin.remove_container(pod, pb.Container(id="ghost", pod_sandbox_id="p"))
    assert plugin.state.containers == before.containers




def test_refusal_with_pods_adopted_after_a_runtime_restart_asks_for_a_resync() -> None:
    """containerd 1.7 forgets to report removals of pods it ran before restarting; when such pods
    could be what blocks an admission, the plugin asks for a fresh Synchronize, at most every 30 s."""
    now = [100.0]
    plugin = PodresPlugin(TOPO, CONFIG, clock=lambda: now[0])
    plugin.synchronize([], [])
    plugin.connection_lost()  # the runtime went away (and may have restarted)
    plugin.synchronize([sandbox("a", 8), sandbox("b", 8)], [])
    for attempt in range(2):
        with pytest.raises(AdmissionError, match="TopologyAffinityError"):
            plugin.run_pod_sandbox(sandbox(f"c{attempt}", 2))
        assert plugin.take_resync_request() is (attempt == 0)
    now[0] += 31
    plugin.remove_pod_sandbox(sandbox("a", 8))
    plugin.remove_pod_sandbox(sandbox("b", 8))
    plugin.run_pod_sandbox(sandbox("d", 8))
    with pytest.raises(AdmissionError, match="TopologyAffinityError"):
        plugin.run_pod_sandbox(sandbox("e", 10))
    assert plugin.take_resync_request() is False  # "d" arrived through RunPodSandbox: certainly alive


def test_a_plugin_restart_alone_never_asks_for_a_resync() -> None:
    """Pods synchronized at start-up get their removal events from an unrestarted runtime."""
    plugin = PodresPlugin(TOPO, CONFIG)
    plugin.synchronize([sandbox("a", 8), sandbox("b", 8)], [])
    with pytest.raises(AdmissionError):
        plugin.run_pod_sandbox(sandbox("c", 2))
    assert plugin.take_resync_request() is False


def test_pods_whose_sandbox_process_is_gone_are_released_without_a_resync() -> None:
    """After a runtime restart, a refusal first releases adopted pods whose pause process has gone
    (seen alive through /proc at Synchronize, gone now), and the same request then succeeds."""
    alive = {"gone": True, "live": True}
    plugin = PodresPlugin(TOPO, CONFIG, sandbox_alive=lambda pid, sandbox_id: alive[sandbox_id])
    plugin.synchronize([], [])
    plugin.connection_lost()
    gone, live = sandbox("gone", 8), sandbox("live", 8)
    gone.pid, live.pid = 4242, 4343
    plugin.synchronize([gone, live], [])
    alive["gone"] = False  # deleted; containerd 1.7 said nothing
    plugin.run_pod_sandbox(sandbox("new", 8))
    assert set(plugin.state.pods) == {"live", "new"}
    assert plugin.take_resync_request() is False


@pytest.mark.parametrize(
    ("proc_shows_alive", "resync"),
    [
        # In its own PID namespace the plugin cannot see sandboxes: it never releases them
        # from /proc, it asks the runtime again instead.
        (False, True),
        # A full node whose adopted pods are verifiably alive is simply full: no reconnect.
        (True, False),
    ],
)
def test_adopted_sandboxes_are_never_released_on_a_guess(proc_shows_alive: bool, resync: bool) -> None:
    plugin = PodresPlugin(TOPO, CONFIG, sandbox_alive=lambda pid, sandbox_id: proc_shows_alive)
    plugin.synchronize([], [])
    plugin.connection_lost()
    a, b = sandbox("a", 8), sandbox("b", 8)
    a.pid, b.pid = 11, 12
    plugin.synchronize([a, b], [])
    with pytest.raises(AdmissionError):
        plugin.run_pod_sandbox(sandbox("new", 8))
    assert set(plugin.state.pods) == {"a", "b"}
    assert plugin.take_resync_request() is resync


def test_deferred_log_lines_wait_for_the_reply() -> None:
    """In the daemon an event's lines are written after its reply (after_reply), in order, none lost."""
    plugin = PodresPlugin(TOPO, CONFIG, defer_logs=True)
    pod = sandbox("p", 2)
    with capture_logs() as logs:
        plugin.synchronize([], [])
        plugin.run_pod_sandbox(pod)
        assert logs == []
        plugin.after_reply()
        assert [entry["event"] for entry in logs] == ["plugin_synchronized", "pod_admitted"]
        plugin.create_container(pod, container("db", pod, cpus=1))
        plugin.connection_lost()  # nothing held is dropped with the connection
    assert [entry["event"] for entry in logs][2:] == ["container_allocated"]
    assert logs[-1]["container_name"] == "db" and logs[-1]["pod_name"] == pod.name  # fields built at flush


def test_immediate_log_lines_by_default() -> None:
    """Outside the daemon (simulate, tests) lines are written as the event is handled."""
    plugin = PodresPlugin(TOPO, CONFIG)
    pod = sandbox("p", 2)
    with capture_logs() as logs:
        plugin.synchronize([], [])
        plugin.run_pod_sandbox(pod)
        plugin.create_container(pod, container("db", pod, cpus=1))
        assert [entry["event"] for entry in logs] == ["plugin_synchronized", "pod_admitted", "container_allocated"]
    assert logs[-1]["container_name"] == "db" and logs[-1]["pool"] == "exclusive"
