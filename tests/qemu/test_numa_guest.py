"""The QEMU tier's own ground truth: the guest really is a 2-node NUMA machine,
containerd runs in it, and a CRI cpuset on node 1 lands on node 1's CPUs and memory."""

from __future__ import annotations

import json

import pytest

from nri_podres.cpuset import CPUSet, NodeSet
from tests.qemu.guest import TWO_NODES, Guest
from tests.qemu.runtime import MiB, ContainerSpec, GuestRuntime, PodSpec

pytestmark = pytest.mark.qemu

NODE_SYSFS = "/sys/devices/system/node"


@pytest.mark.parametrize("node", range(TWO_NODES.nodes))
def test_sysfs_shows_each_node_with_its_cpus_and_distances(numa_guest: Guest, node: int) -> None:
    online = numa_guest.run(f"cat {NODE_SYSFS}/online").stdout.strip()
    cpulist = numa_guest.run(f"cat {NODE_SYSFS}/node{node}/cpulist").stdout.strip()
    distance = numa_guest.run(f"cat {NODE_SYSFS}/node{node}/distance").stdout.split()

    assert NodeSet.parse(online) == NodeSet.parse(f"0-{TWO_NODES.nodes - 1}")
    assert CPUSet.parse(cpulist) == TWO_NODES.node_cpus(node)
    assert [int(d) for d in distance] == TWO_NODES.distance_row(node)


def test_cpus_come_as_smt_pairs_on_two_sockets(numa_guest: Guest) -> None:
    script = ("for c in /sys/devices/system/cpu/cpu[0-9]*; do "
              "echo ${c##*cpu} $(cat $c/topology/physical_package_id) $(cat $c/topology/thread_siblings_list); done")
    rows = sorted(tuple(line.split()) for line in numa_guest.run(script).stdout.splitlines())
    by_cpu = {int(cpu): (int(socket), CPUSet.parse(siblings)) for cpu, socket, siblings in rows}

    assert sorted(by_cpu) == list(range(TWO_NODES.cpu_count))
    assert {cpu: socket for cpu, (socket, _) in by_cpu.items()} == {cpu: cpu // 4 for cpu in range(8)}
    assert {cpu: siblings for cpu, (_, siblings) in by_cpu.items()} == {
        cpu: CPUSet.parse(f"{cpu & ~1}-{cpu | 1}") for cpu in range(8)
    }


def test_containerd_answers_cri_in_the_guest(guest_runtime: GuestRuntime) -> None:
    log = guest_runtime.containerd_log()
    sock = guest_runtime.guest.run(["test", "-S", guest_runtime.nri_socket], check=False)

    assert "serving..." in log
    assert sock.rc == 0, f"no NRI socket at {guest_runtime.nri_socket}"


def test_cri_cpuset_on_node_1_confines_the_process_to_node_1(guest_runtime: GuestRuntime) -> None:
    node1 = TWO_NODES.node_cpus(1)
    pod = PodSpec("numa-probe", cpu_millis=2000, memory_limit_bytes=256 * MiB, containers=(
        ContainerSpec("probe", 2000, 2000, 128 * MiB, cpuset_cpus=str(node1), cpuset_mems="1"),
    ))

    outcome = guest_runtime.run_pod(pod)

    assert outcome.admitted, outcome.error
    probe = outcome["probe"]
    assert probe.error is None
    assert probe.state == "CONTAINER_RUNNING"
    assert (probe.spec_cpus, probe.spec_mems) == (str(node1), "1")
    assert (probe.cpus, probe.mems) == (node1, NodeSet.parse("1"))
    assert guest_runtime.placement(probe).cpus == node1  # re-read later: still there


def test_nri_podres_topology_in_the_guest_reports_two_nodes(guest_runtime: GuestRuntime) -> None:
    result = guest_runtime.nri_podres("topology", "--json")

    report = json.loads(result.stdout)
    assert report["threads_per_core"] == TWO_NODES.threads_per_core
    assert {int(node): CPUSet.parse(entry["cpus"]) for node, entry in report["numa_nodes"].items()} == {
        node: TWO_NODES.node_cpus(node) for node in range(TWO_NODES.nodes)
    }
    assert report["numa_nodes"]["1"]["distance"] == TWO_NODES.distance_row(1)


def test_nri_podres_daemon_runs_in_the_guest_and_sigkill_restart_moves_nothing(guest_runtime: GuestRuntime) -> None:
    guest_runtime.start_plugin("")
    pod = PodSpec("bubble", cpu_millis=2000, memory_limit_bytes=256 * MiB, containers=(
        ContainerSpec.guaranteed("main", 1000, 128 * MiB),
        ContainerSpec("sidecar"),
    ))
    outcome = guest_runtime.run_pod(pod)
    assert outcome.admitted, f"{outcome.error}\n{guest_runtime.plugin_log()[-3000:]}"
    assert all(c.error is None for c in outcome.containers), outcome.containers

    guest_runtime.kill_plugin()
    guest_runtime.restart_plugin()

    assert guest_runtime.plugin_alive()
    assert guest_runtime.placements(outcome).containers == outcome.containers


def test_four_node_guest_has_the_uneven_distances(numa_guest_4: Guest) -> None:
    topology = numa_guest_4.topology
    rows = [numa_guest_4.run(f"cat {NODE_SYSFS}/node{n}/distance").stdout.split() for n in range(topology.nodes)]
    cpulists = [numa_guest_4.run(f"cat {NODE_SYSFS}/node{n}/cpulist").stdout.strip() for n in range(topology.nodes)]

    assert [[int(d) for d in row] for row in rows] == [topology.distance_row(n) for n in range(topology.nodes)]
    assert [CPUSet.parse(c) for c in cpulists] == [topology.node_cpus(n) for n in range(topology.nodes)]
    assert topology.distance(0, 2) < topology.distance(0, 1)
