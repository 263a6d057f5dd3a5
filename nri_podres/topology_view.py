"""How a Topology is shown: a stable JSON form and a table for people."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nri_podres.cpuset import CPUSet
from nri_podres.quantity import format_bytes
from nri_podres.topology import NUMANode, Topology


def topology_to_json(topo: Topology) -> dict[str, Any]:
    """The JSON contract of ``nri-podres topology --json`` (ids as string keys).

    ``cores`` and ``l3_groups`` are CPU lists ordered by their lowest CPU;
    ``dies``, ``hugepages`` (page size in bytes -> pages) and ``notes`` are extras.
    """
    return {
        "online_cpus": str(topo.online),
        "offline_cpus": str(topo.offline_cpus),
        "isolated_cpus": str(topo.isolated_cpus),
        "threads_per_core": topo.threads_per_core,
        "sockets": {str(sid): str(cpus) for sid, cpus in topo.sockets.items()},
        "numa_nodes": {str(n.id): _node_json(n) for n in topo.numa_nodes},
        "cores": _ordered(topo.cores.values()),
        "l3_groups": _ordered(topo.l3_groups.values()),
        "dies": {str(d): str(cpus) for d, cpus in _dies(topo).items()},
        "notes": list(topo.notes),
    }


def _node_json(node: NUMANode) -> dict[str, Any]:
    return {
        "cpus": str(node.cpus),
        "memory_bytes": node.memory_bytes,
        "distance": list(node.distance),
        "hugepages": {str(size): count for size, count in sorted(node.hugepages.items())},
    }


def _ordered(groups: Any) -> list[str]:  # noqa: ANN401 - any iterable of CPUSet
    return [str(g) for g in sorted(groups, key=CPUSet.min)]


def _dies(topo: Topology) -> dict[int, CPUSet]:
    acc: dict[int, int] = {}
    for c in topo.cpus:
        acc[c.die] = acc.get(c.die, 0) | 1 << c.id
    return {d: CPUSet.from_bits(bits) for d, bits in sorted(acc.items())}


def render_table(topo: Topology, reserved: CPUSet = CPUSet()) -> str:  # noqa: B008 - immutable
    """A summary line, the socket, NUMA and L3 tables, and the discovery notes."""
    lines = [
        *_summary(topo, reserved),
        "",
        *_table(("SOCKET", "#CPU", "CORES", "NUMA NODES", "L3 GROUPS", "CPUS"), _socket_rows(topo)),
        "",
        *_table(("NUMA", "#CPU", "CORES", "MEMORY", "HUGEPAGES", "DISTANCE", "CPUS"), _node_rows(topo)),
        "",
        *_table(("L3", "#CPU", "CORES", "SOCKET", "NUMA", "CPUS"), _l3_rows(topo)),
    ]
    if topo.notes:
        lines += ["", "Notes:", *(f"  - {note}" for note in topo.notes)]
    return "\n".join(lines) + "\n"


def _summary(topo: Topology, reserved: CPUSet) -> list[str]:
    counts = sorted({len(s) for s in topo.cores.values()})
    threads = f"{counts[0]} thread" if counts == [1] else f"{counts[0]}-{counts[-1]} threads"
    threads = f"{counts[0]} threads" if len(counts) == 1 and counts[0] > 1 else threads
    machine = (
        f"{len(topo.online)} online CPUs: {_plural(len(topo.sockets), 'socket')}, "
        f"{_plural(len(topo.numa_nodes), 'NUMA node')}, {_plural(len(topo.cores), 'core')} "
        f"({threads} per core), {_plural(len(topo.l3_groups), 'L3 group')}"
    )
    return _table(
        ("Machine", machine),
        [
            ("Online CPUs", _cpus(topo.online)),
            ("Offline CPUs", _cpus(topo.offline_cpus)),
            ("Isolated CPUs", _cpus(topo.isolated_cpus)),
            ("Reserved CPUs", _cpus(reserved)),
        ],
        header_sep=":",
    )


def _socket_rows(topo: Topology) -> list[Sequence[str]]:
    return [
        (str(sid), *_sizes(topo, cpus), _ids(topo, cpus, "numa"), _ids(topo, cpus, "l3"), str(cpus))
        for sid, cpus in topo.sockets.items()
    ]


def _node_rows(topo: Topology) -> list[Sequence[str]]:
    rows = []
    for node in topo.numa_nodes:
        memory = "?" if node.memory_bytes is None else _gib(node.memory_bytes)
        pages = ", ".join(f"{format_bytes(size)}: {count}" for size, count in sorted(node.hugepages.items()))
        distance = " ".join(map(str, node.distance)) or "?"
        cpus = str(node.cpus) if node.cpus else "- (memory only)"
        rows.append((str(node.id), *_sizes(topo, node.cpus), memory, pages or "-", distance, cpus))
    return rows


def _l3_rows(topo: Topology) -> list[Sequence[str]]:
    return [
        (str(lid), *_sizes(topo, cpus), _ids(topo, cpus, "socket"), _ids(topo, cpus, "numa"), str(cpus))
        for lid, cpus in topo.l3_groups.items()
    ]


def _sizes(topo: Topology, cpus: CPUSet) -> tuple[str, str]:
    """(CPU count, core count) as cells."""
    return str(len(cpus)), str(len({topo.by_id[c].core for c in cpus}))


def _ids(topo: Topology, cpus: CPUSet, attr: str) -> str:
    return ",".join(str(i) for i in sorted({getattr(topo.by_id[c], attr) for c in cpus}))


def _cpus(cpus: CPUSet, empty: str = "-") -> str:
    return f"{cpus} ({len(cpus)})" if cpus else empty


def _gib(size_bytes: int) -> str:
    return f"{size_bytes / (1 << 30):.1f} GiB"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], header_sep: str = "") -> list[str]:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    all_rows = [tuple(header), *(tuple(r) for r in rows)]
    if header_sep:
        all_rows = [(f"{r[0]}{header_sep}", *r[1:]) for r in all_rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(r, widths)), r[-1]]).rstrip() for r in all_rows]
