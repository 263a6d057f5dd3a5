"""Lay a Topology out as a sysfs tree, the way the kernel shows it.

For tests and benchmarks of discovery: ``read_topology(dir)`` of what
``write_sysfs_tree(topo, dir)`` wrote gives back ``topo`` (with ids numbered
as discovery numbers them).
"""

from __future__ import annotations

import os
from pathlib import Path

from nri_podres.cpuset import CPUSet
from nri_podres.topology import CPUInfo, NUMANode, Topology

_L1_L2 = ((0, 1, "Data"), (1, 1, "Instruction"), (2, 2, "Unified"))


def write_sysfs_tree(topo: Topology, dest: str | os.PathLike[str]) -> Path:
    """Write ``topo`` under ``dest`` (which stands for ``/sys``); returns ``dest``."""
    root = Path(dest)
    cpu_dir = root / "devices/system/cpu"
    present = topo.online | topo.offline_cpus
    _write(cpu_dir / "online", str(topo.online))
    _write(cpu_dir / "present", str(present))
    _write(cpu_dir / "possible", str(present))
    _write(cpu_dir / "offline", str(topo.offline_cpus))
    _write(cpu_dir / "isolated", str(topo.isolated_cpus))
    for cpu in topo.cpus:
        _write_cpu(cpu_dir / f"cpu{cpu.id}", cpu, topo)
    for cpu_id in topo.offline_cpus:
        _write(cpu_dir / f"cpu{cpu_id}/online", "0")  # the kernel hides topology/ and cache/
    node_dir = root / "devices/system/node"
    _write(node_dir / "online", str(topo.node_ids))
    _write(node_dir / "possible", str(topo.node_ids))
    for node in topo.numa_nodes:
        _write_node(node_dir / f"node{node.id}", node)
    return root


def _write_cpu(path: Path, cpu: CPUInfo, topo: Topology) -> None:
    siblings = topo.cores[cpu.core]
    package = topo.sockets[cpu.socket]
    if cpu.id:
        _write(path / "online", "1")  # cpu0 has no online file on most machines
    topology = path / "topology"
    _write(topology / "physical_package_id", str(cpu.socket))
    _write(topology / "die_id", str(cpu.die))
    _write(topology / "core_id", str(cpu.core))
    _write(topology / "thread_siblings_list", str(siblings))
    _write(topology / "thread_siblings", _mask(siblings))
    _write(topology / "core_siblings_list", str(package))
    _write(topology / "package_cpus_list", str(package))
    for index, level, kind in _L1_L2:
        _write_cache(path / f"cache/index{index}", level, kind, siblings, cpu.core)
    _write_cache(path / "cache/index3", 3, "Unified", topo.l3_groups[cpu.l3], cpu.l3)
    (path / f"node{cpu.numa}").mkdir(exist_ok=True)  # stands for the kernel's symlink


def _write_cache(path: Path, level: int, kind: str, shared: CPUSet, cache_id: int) -> None:
    _write(path / "level", str(level))
    _write(path / "type", kind)
    _write(path / "id", str(cache_id))
    _write(path / "shared_cpu_list", str(shared))
    _write(path / "shared_cpu_map", _mask(shared))


def _write_node(path: Path, node: NUMANode) -> None:
    _write(path / "cpulist", str(node.cpus))
    _write(path / "cpumap", _mask(node.cpus))
    if node.distance:
        _write(path / "distance", " ".join(map(str, node.distance)))
    if node.memory_bytes is not None:
        kb = node.memory_bytes // 1024
        _write(path / "meminfo", f"Node {node.id} MemTotal:       {kb} kB\nNode {node.id} MemFree:        {kb} kB")
    for size, count in node.hugepages.items():
        _write(path / f"hugepages/hugepages-{size // 1024}kB/nr_hugepages", str(count))


def _mask(cpus: CPUSet) -> str:
    """The kernel's hex mask: 32-bit words, most significant first, comma-separated."""
    bits = cpus.bits
    words = [f"{(bits >> shift) & 0xFFFFFFFF:08x}" for shift in range(0, max(bits.bit_length(), 1), 32)]
    return ",".join(reversed(words))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="ascii")
