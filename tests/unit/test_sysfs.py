"""Discovery from sysfs: real machines' trees (tarballs), fallbacks, and this host's /sys.

Each expected fact below was read by hand from the tarball's files
(physical_package_id, thread_siblings*, cache/index*/shared_cpu_*, node*/cpulist
or cpumap, meminfo, distance) before it was written down here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nri_podres.cpuset import CPUSet
from nri_podres.errors import TopologyError
from nri_podres.sysfs import read_topology
from nri_podres.topology import Topology

GIB = 1 << 30
from tests.support import SYSFS_DUMPS


@dataclass(frozen=True)
class Expected:
    """What a tarball's tree says, as CPU lists (text) and counts."""

    file: str
    online: str
    sockets: dict[int, str]
    nodes: dict[int, str]
    cores: int
    threads_per_core: int
    l3_groups: tuple[str, ...]
    offline: str = ""
    isolated: str = ""
    memory_bytes: dict[int, int | None] = field(default_factory=dict)
    distance: dict[int, tuple[int, ...]] = field(default_factory=dict)
    hugepages: dict[int, dict[int, int]] = field(default_factory=dict)
    core_samples: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # a fragment of each expected note, in order


EVEN_0_78 = ",".join(str(c) for c in range(0, 80, 2))
ODD_1_79 = ",".join(str(c) for c in range(1, 80, 2))


def _step(start: int, stop: int, step: int) -> str:
    return ",".join(str(c) for c in range(start, stop, step))


MACHINES = [
    Expected(
        "20em64t-hybrid-1p6c2t+2ca4co1t.tar.bz2", "0-19", {0: "0-19"}, {0: "0-19"},
        cores=14, threads_per_core=2, l3_groups=("0-19",), core_samples=("0-1", "10-11", "12", "19"),
        memory_bytes={0: 33269227520},
    ),
    Expected(
        "linux-amd64-61797caf7c0b6bca1725ad7975ed4773.tar.gz", "0-11", {0: "0-11"}, {0: "0-11"},
        cores=6, threads_per_core=2, l3_groups=("0-2,6-8", "3-5,9-11"), core_samples=("0,6", "5,11"),
        memory_bytes={0: None}, notes=("no cpu/online file",),
    ),
    Expected(
        "32intel64-2p8co2t+8ve.tar.bz2", "0-31", {0: "0-7,16-23", 1: "8-15,24-31"},
        {0: "0-7,16-23", 1: "8-15,24-31"}, cores=16, threads_per_core=2,
        l3_groups=("0-7,16-23", "8-15,24-31"), core_samples=("0,16", "15,31"),
        distance={0: (10, 21), 1: (21, 10)}, hugepages={0: {2 << 20: 2048, GIB: 0}},
    ),
    Expected(
        "memorysidecaches.tar.bz2", "0-79", {0: EVEN_0_78, 1: ODD_1_79},
        {n: _step(n, 80, 4) for n in range(4)}, cores=40, threads_per_core=2,
        l3_groups=(EVEN_0_78, ODD_1_79), core_samples=("0,40", "39,79"),
        distance={0: (10, 21, 11, 21)},
    ),
    Expected(
        "sysfs.tar.bz2", "0-79", {0: "0-19,40-59", 1: "20-39,60-79"},
        {
            0: "0-2,5-6,10-12,15-16,40-42,45-46,50-52,55-56",
            1: "3-4,7-9,13-14,17-19,43-44,47-49,53-54,57-59",
            2: "20-22,25-26,30-32,35-36,60-62,65-66,70-72,75-76",
            3: "23-24,27-29,33-34,37-39,63-64,67-69,73-74,77-79",
        },
        cores=40, threads_per_core=2, l3_groups=("0-19,40-59", "20-39,60-79"),
        core_samples=("0,40",), hugepages={2: {2 << 20: 2560, GIB: 0}},
    ),
    Expected(
        "test-data-sample2.tar.xz", "0-111", {0: _step(0, 112, 2), 1: _step(1, 112, 2)},
        {**{n: _step(n, 112, 4) for n in range(4)}, **{n: "" for n in range(4, 8)}},
        cores=56, threads_per_core=2, l3_groups=(_step(0, 112, 2), _step(1, 112, 2)),
        isolated="4-7,60-63", core_samples=("0,56", "55,111"),
        memory_bytes={0: 33181818880, 4: 133143986176, 7: 133143986176},
        distance={4: (17, 28, 28, 28, 10, 28, 28, 28)},
    ),
    Expected(
        "40intel64-2g2n4c+pcilocality.tar.bz2", "0-39", {s: _step(s, 40, 4) for s in range(4)},
        {n: _step(n, 40, 4) for n in range(4)}, cores=40, threads_per_core=1,
        l3_groups=tuple(_step(s, 40, 4) for s in range(4)),
    ),
    Expected(
        "64amd64-4s2n4ca2co.tar.bz2", "0-63", {s: f"{16 * s}-{16 * s + 15}" for s in range(4)},
        {n: f"{8 * n}-{8 * n + 7}" for n in range(8)}, cores=32, threads_per_core=2,
        l3_groups=tuple(f"{8 * n}-{8 * n + 7}" for n in range(8)), core_samples=("0-1", "62-63"),
    ),
    Expected(
        "48amd64-4pa2n6c-sparse.tar.bz2", "0-47", {s: f"{12 * s}-{12 * s + 11}" for s in range(4)},
        dict(zip((0, 1, 2, 33, 34, 45, 72, 73), (f"{6 * i}-{6 * i + 5}" for i in range(8)), strict=True)),
        cores=48, threads_per_core=1, l3_groups=tuple(f"{6 * i}-{6 * i + 5}" for i in range(8)),
        distance={33: (22, 16, 16, 10, 16, 16, 22, 22)},
    ),
    Expected(
        "96em64t-4no4pa3ca2co.tar.bz2", "0-95",
        {0: _step(1, 24, 4), 1: _step(0, 24, 4), 2: _step(2, 24, 4), 3: _step(3, 24, 4),
         4: _step(24, 48, 4), 15: _step(75, 96, 4)},
        {n: f"{24 * n}-{24 * n + 23}" for n in range(4)}, cores=96, threads_per_core=1,
        l3_groups=tuple(_step(g // 4 * 24 + g % 4, g // 4 * 24 + 24, 4) for g in range(16)),
        distance={0: (10, 26, 26, 26)}, notes=("no cpu/online file",),
    ),
    Expected(
        "16amd64-8n2c.tar.bz2", "0-15", {s: f"{2 * s}-{2 * s + 1}" for s in range(8)},
        {n: f"{2 * n}-{2 * n + 1}" for n in range(8)}, cores=16, threads_per_core=1,
        l3_groups=tuple(f"{2 * s}-{2 * s + 1}" for s in range(8)),
        distance={7: (20, 20, 20, 20, 20, 20, 20, 10)}, memory_bytes={1: 8 * GIB},
        notes=("no L3 cache info for CPUs 0-15: one L3 group per socket",),
    ),
    Expected(
        "offline-cpu0-node0.tar.bz2", "4-20", {0: _step(4, 21, 2), 1: _step(5, 21, 2)},
        {0: _step(4, 21, 2), 1: _step(5, 21, 2)}, cores=17, threads_per_core=1,
        l3_groups=(_step(4, 21, 2), _step(5, 21, 2)), offline="0-3,21-23",
        memory_bytes={0: None, 1: 64 * GIB}, distance={0: (), 1: (21, 10)},
        notes=("CPUs 4,6,8,10,12,14,16,18,20 are in no node's cpulist: placed by their cpuN/nodeM link",),
    ),
    Expected(
        "16em64t-4s2c2t-offlines.tar.bz2", "0-1,3-4,6-12,15",
        {0: "0,4,8,12", 1: "1,9", 2: "6,10", 3: "3,7,11,15"}, {0: "0-1,3-4,6-12,15"},
        cores=7, threads_per_core=2, l3_groups=("0,4,8,12", "1,9", "3,7,11,15", "6,10"),
        offline="2,5,13-14", core_samples=("0,8", "6", "10", "7,15"),
        memory_bytes={0: 16772456 * 1024}, notes=("no cpu/online file",),
    ),
    Expected(
        "128arm-2pa2n8cluster4co.tar.bz2", "0-127", {36: "0-63", 8442: "64-127"},
        {n: f"{32 * n}-{32 * n + 31}" for n in range(4)}, cores=128, threads_per_core=1,
        l3_groups=tuple(f"{32 * n}-{32 * n + 31}" for n in range(4)),
        distance={0: (10, 16, 32, 33)}, hugepages={0: {64 << 10: 0, 2 << 20: 0, 32 << 20: 0, GIB: 0}},
    ),
    Expected(
        "nvidiagpunumanodes.tar.bz2", "0-15,88-103", {0: "0-15", 8: "88-103"},
        {0: "0-15", 8: "88-103", **{n: "" for n in range(250, 256)}}, cores=8, threads_per_core=4,
        l3_groups=("0-7", "8-15", "88-95", "96-103"), core_samples=("0-3", "100-103"),
        memory_bytes={250: 15 * GIB}, distance={8: (40, 10, 80, 80, 80, 80, 80, 80)},
    ),
]

_cache: dict[str, Topology] = {}


def discovered(file: str) -> Topology:
    """Each tarball is read once per test session."""
    if file not in _cache:
        _cache[file] = read_topology(SYSFS_DUMPS / file)
    return _cache[file]


def test_every_tarball_has_a_row() -> None:
    """The table covers every sysfs dump in the fixtures directory."""
    on_disk = {p.name for p in SYSFS_DUMPS.iterdir() if ".tar" in p.name}
    assert on_disk == {m.file for m in MACHINES}


@pytest.mark.parametrize("m", MACHINES, ids=lambda m: m.file.split(".tar")[0])
def test_discovered_facts(m: Expected) -> None:
    """Online/offline/isolated CPUs, sockets, NUMA nodes, cores and L3 groups match the tree."""
    topo = discovered(m.file)
    assert str(topo.online) == m.online
    assert str(topo.offline_cpus) == m.offline
    assert str(topo.isolated_cpus) == m.isolated
    for sid, cpus in m.sockets.items():
        assert str(topo.sockets[sid]) == cpus, f"socket {sid}"
    assert {n.id: str(n.cpus) for n in topo.numa_nodes} == m.nodes
    assert len(topo.cores) == m.cores
    assert topo.threads_per_core == m.threads_per_core
    assert tuple(str(g) for g in topo.l3_groups.values()) == m.l3_groups
    cores = {str(c) for c in topo.cores.values()}
    assert set(m.core_samples) <= cores


@pytest.mark.parametrize("m", MACHINES, ids=lambda m: m.file.split(".tar")[0])
def test_discovered_node_details(m: Expected) -> None:
    """Memory, distance rows and hugepages per node are those of node*/meminfo, distance, hugepages."""
    topo = discovered(m.file)
    for nid, memory in m.memory_bytes.items():
        assert topo.node[nid].memory_bytes == memory, f"node {nid}"
    for nid, row in m.distance.items():
        assert topo.node[nid].distance == row, f"node {nid}"
    for nid, pages in m.hugepages.items():
        assert dict(topo.node[nid].hugepages) == pages, f"node {nid}"


@pytest.mark.parametrize("m", MACHINES, ids=lambda m: m.file.split(".tar")[0])
def test_notes_name_every_fallback(m: Expected) -> None:
    """Exactly the expected fallbacks are noted, and a complete tree needs none."""
    notes = discovered(m.file).notes
    assert len(notes) == len(m.notes)
    for note, fragment in zip(notes, m.notes, strict=True):
        assert fragment in note


@pytest.mark.parametrize("m", MACHINES, ids=lambda m: m.file.split(".tar")[0])
def test_every_online_cpu_in_exactly_one_group(m: Expected) -> None:
    """Cores, sockets, NUMA nodes and L3 groups each partition the online CPUs."""
    assert_partitions(discovered(m.file))


def assert_partitions(topo: Topology) -> None:
    for groups in (topo.cores, topo.sockets, topo.l3_groups, {n.id: n.cpus for n in topo.numa_nodes}):
        total = CPUSet()
        for cpus in groups.values():
            assert total.isdisjoint(cpus)
            total |= cpus
        assert total == topo.online


def test_directory_with_prefix_is_found(tmp_path: Path) -> None:
    """A directory holding the tree a few levels down is searched for devices/system/cpu."""
    import tarfile  # noqa: PLC0415

    with tarfile.open(SYSFS_DUMPS / "16em64t-4s2c2t-offlines.tar.bz2") as tar:
        tar.extractall(tmp_path, filter="data")
    assert read_topology(tmp_path) == discovered("16em64t-4s2c2t-offlines.tar.bz2")


def test_this_machine() -> None:
    """The real /sys: every CPU this process may use is online, and partitions hold."""
    topo = read_topology("/sys")
    assert CPUSet(os.sched_getaffinity(0)) <= topo.online
    assert len(topo.online) == os.cpu_count()
    assert_partitions(topo)


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_bare_tree_falls_back_visibly(tmp_path: Path) -> None:
    """No node dir, no cache dir, no topology dir: one node, one L3 per socket, a core per CPU, all noted."""
    _write(tmp_path, "devices/system/cpu/online", "0-3\n\0")
    for c in range(4):
        (tmp_path / f"devices/system/cpu/cpu{c}").mkdir(parents=True)
    topo = read_topology(tmp_path)
    assert str(topo.online) == "0-3"
    assert [str(n.cpus) for n in topo.numa_nodes] == ["0-3"]
    assert len(topo.cores) == 4
    assert [str(g) for g in topo.l3_groups.values()] == ["0-3"]
    assert len(topo.notes) == 4
    assert any("no NUMA node information" in n for n in topo.notes)
    assert any("one L3 group per socket" in n for n in topo.notes)
    assert any("no thread_siblings" in n for n in topo.notes)
    assert any("no physical_package_id" in n for n in topo.notes)


def test_cpu_in_no_node_goes_to_its_sockets_node(tmp_path: Path) -> None:
    """An online CPU no node lists, with no nodeM link, joins the node of its socket's other CPUs."""
    _write(tmp_path, "devices/system/cpu/online", "0-3")
    for c in range(4):
        _write(tmp_path, f"devices/system/cpu/cpu{c}/topology/physical_package_id", str(c // 2))
    _write(tmp_path, "devices/system/node/node0/cpulist", "0")
    _write(tmp_path, "devices/system/node/node1/cpulist", "2-3")
    topo = read_topology(tmp_path)
    assert str(topo.node[0].cpus) == "0-1"
    assert any("CPUs 1 are in no NUMA node" in n for n in topo.notes)


@pytest.mark.parametrize("where", ["missing", "empty-dir", "garbage-file"])
def test_no_tree_is_a_topology_error(tmp_path: Path, where: str) -> None:
    """A path with no devices/system/cpu, or an unreadable tarball, raises TopologyError naming it."""
    target = tmp_path / "nothing"
    if where == "empty-dir":
        target.mkdir()
    if where == "garbage-file":
        target.write_bytes(b"not a tarball")
    with pytest.raises(TopologyError, match="nothing"):
        read_topology(target)
