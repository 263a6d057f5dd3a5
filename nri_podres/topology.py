"""The machine as the allocator sees it: frozen, built once, queried often.

``sysfs.read_topology`` and ``machine.load_machine`` are the two ways to build
one; everything else only reads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from nri_podres.cpuset import CPUSet, NodeSet


@dataclass(frozen=True, slots=True)
class CPUInfo:
    """One online logical CPU and where it sits.

    ``core`` is a machine-wide core index (thread siblings share it), so two
    sockets never produce the same core id. ``l3`` is a machine-wide index of
    the last-level (uncore) cache group.
    """

    id: int
    core: int
    socket: int
    numa: int
    l3: int
    die: int = 0


@dataclass(frozen=True, slots=True)
class NUMANode:
    """A NUMA node; ``cpus`` is empty for a memory-only node."""

    id: int
    cpus: CPUSet
    memory_bytes: int | None = None
    distance: tuple[int, ...] = ()
    hugepages: Mapping[int, int] = field(default_factory=dict)  # page size bytes -> count


@dataclass(frozen=True)
class Topology:
    """Online CPUs with their core/socket/NUMA/L3 placement, and the NUMA nodes.

    ``notes`` records every fallback taken while discovering the machine
    (e.g. "no cache info: one L3 group per socket") so that output can show it.
    """

    cpus: tuple[CPUInfo, ...]
    numa_nodes: tuple[NUMANode, ...]
    offline_cpus: CPUSet = CPUSet()
    isolated_cpus: CPUSet = CPUSet()
    notes: tuple[str, ...] = ()

    @classmethod
    def from_cpus(
        cls,
        cpus: Iterable[CPUInfo],
        numa_nodes: Iterable[NUMANode] = (),
        **kwargs: object,
    ) -> Topology:
        """Build a topology, adding a NUMA node for every node id a CPU names."""
        rows = tuple(sorted(cpus, key=lambda c: c.id))
        nodes = {n.id: n for n in numa_nodes}
        for nid in sorted({c.numa for c in rows} - nodes.keys()):
            nodes[nid] = NUMANode(id=nid, cpus=CPUSet())
        fixed = []
        for nid in sorted(nodes):
            node = nodes[nid]
            node_cpus = CPUSet(c.id for c in rows if c.numa == nid)
            fixed.append(
                NUMANode(nid, node_cpus, node.memory_bytes, node.distance, node.hugepages)
            )
        return cls(cpus=rows, numa_nodes=tuple(fixed), **kwargs)  # type: ignore[arg-type]

    # --- indices, computed once on first use -------------------------------

    @cached_property
    def by_id(self) -> dict[int, CPUInfo]:
        return {c.id: c for c in self.cpus}

    @cached_property
    def online(self) -> CPUSet:
        return CPUSet(c.id for c in self.cpus)

    @cached_property
    def node_ids(self) -> NodeSet:
        return NodeSet(n.id for n in self.numa_nodes)

    @cached_property
    def node(self) -> dict[int, NUMANode]:
        return {n.id: n for n in self.numa_nodes}

    @cached_property
    def cores(self) -> dict[int, CPUSet]:
        """Core id -> its online thread siblings."""
        return _group(self.cpus, lambda c: c.core)

    @cached_property
    def sockets(self) -> dict[int, CPUSet]:
        return _group(self.cpus, lambda c: c.socket)

    @cached_property
    def l3_groups(self) -> dict[int, CPUSet]:
        return _group(self.cpus, lambda c: c.l3)

    @cached_property
    def threads_per_core(self) -> int:
        return max((len(s) for s in self.cores.values()), default=1)

    def cpus_of_nodes(self, nodes: NodeSet) -> CPUSet:
        out = 0
        for nid in nodes:
            out |= self.node[nid].cpus.bits
        return CPUSet.from_bits(out)

    def nodes_of_cpus(self, cpus: CPUSet) -> NodeSet:
        return NodeSet(self.by_id[c].numa for c in cpus)

    def core_siblings(self, cpu: int) -> CPUSet:
        return self.cores[self.by_id[cpu].core]

    @cached_property
    def _node_position(self) -> dict[int, int]:
        return {n.id: i for i, n in enumerate(self.numa_nodes)}

    def distance(self, a: int, b: int) -> int:
        """NUMA distance; 10 to itself and 20 elsewhere when the row is unknown.

        The kernel's row lists the nodes in id order, one entry per node, so with
        sparse node ids (0, 8, 250...) the entry for ``b`` is at ``b``'s position.
        """
        row = self.node[a].distance
        pos = self._node_position[b]
        if len(row) == len(self.numa_nodes):
            return row[pos]
        if b < len(row):
            return row[b]
        return 10 if a == b else 20


def _group(cpus: Iterable[CPUInfo], key: object) -> dict[int, CPUSet]:
    acc: dict[int, int] = {}
    for c in cpus:
        k = key(c)  # type: ignore[operator]
        acc[k] = acc.get(k, 0) | 1 << c.id
    return {k: CPUSet.from_bits(v) for k, v in sorted(acc.items())}
