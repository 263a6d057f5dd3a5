"""Machines described in a file, or generated: the other way to build a Topology.

Two file forms are accepted (YAML or JSON):

* explicit rows, one per online CPU::

    cpus:
      - {id: 0, core: 0, socket: 0, numa: 0, l3: 0}      # die optional; l3 optional
    numa:                                                # optional
      "0": {memory: 8Gi, distance: [10, 21], hugepages: {2Mi: 512}}
    offline: "8-11"                                      # optional CPU lists
    isolated: ""

* the ``nri-podres topology --json`` output, so a discovered machine can be
  saved and replayed anywhere.

``synthetic(...)`` builds regular machines for tests and benchmarks, and
``write_sysfs_tree`` lays any topology out as a sysfs tree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from nri_podres.cpuset import CPUSet
from nri_podres.errors import TopologyError
from nri_podres.machine_tree import write_sysfs_tree
from nri_podres.quantity import format_bytes, parse_bytes
from nri_podres.topology import CPUInfo, NUMANode, Topology

__all__ = [
    "load_machine",
    "machine_from_dict",
    "machine_to_dict",
    "machine_to_yaml",
    "synthetic",
    "write_sysfs_tree",
]

_ROW_KEYS = ("id", "core", "socket", "numa", "l3", "die")
_TOP_KEYS = frozenset({"cpus", "numa", "offline", "isolated", "notes", "description"})
_JSON_KEYS = frozenset(
    {"online_cpus", "offline_cpus", "isolated_cpus", "threads_per_core", "sockets", "numa_nodes",
     "cores", "l3_groups", "dies", "notes"}
)
_NODE_KEYS = frozenset({"memory", "memory_bytes", "distance", "hugepages", "cpus"})


def load_machine(path: str | os.PathLike[str]) -> Topology:
    """Read a machine file; TopologyError names the file and the bad row or key."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"{source}: cannot read machine file: {exc.strerror or exc}"
        raise TopologyError(msg) from exc
    try:
        data = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        msg = f"{source}: not valid {'JSON' if source.endswith('.json') else 'YAML'}: {exc}"
        raise TopologyError(msg) from exc
    return machine_from_dict(data, source)


def machine_from_dict(data: object, source: str = "<machine>") -> Topology:
    """Build a Topology from either file form, already parsed."""
    if not isinstance(data, Mapping):
        msg = f"{source}: a machine must be a mapping with 'cpus' (or 'online_cpus'), got {type(data).__name__}"
        raise TopologyError(msg)
    if "cpus" in data:
        return _from_rows(data, source)
    if "online_cpus" in data:
        return _from_json(data, source)
    msg = f"{source}: a machine needs a 'cpus' list (or the topology JSON's 'online_cpus')"
    raise TopologyError(msg)


# --- explicit rows -----------------------------------------------------------------


def _from_rows(data: Mapping[str, Any], source: str) -> Topology:
    _no_unknown(data, _TOP_KEYS, source, "")
    rows = data["cpus"]
    if not isinstance(rows, list) or not rows:
        msg = f"{source}: 'cpus' must be a non-empty list of CPU rows"
        raise TopologyError(msg)
    notes = list(_notes(data, source))
    cpus = [_row(row, i, source) for i, row in enumerate(rows)]
    given_l3 = sum(c.l3 >= 0 for c in cpus)
    if given_l3 == 0:
        cpus = [_with_l3(c, c.socket) for c in cpus]
        notes.append("no l3 given: one L3 group per socket")
    elif given_l3 != len(cpus):
        msg = f"{source}: cpus: 'l3' must be given for every CPU or for none"
        raise TopologyError(msg)
    online = _check_rows(cpus, source)
    offline = _cpu_list(data, "offline", source)
    if offline & online:
        msg = f"{source}: offline: CPUs {offline & online} also have a row in 'cpus'"
        raise TopologyError(msg)
    nodes = _nodes(data.get("numa") or {}, source, "numa")
    return Topology.from_cpus(
        cpus, nodes, offline_cpus=offline, isolated_cpus=_cpu_list(data, "isolated", source),
        notes=tuple(notes),
    )


def _row(row: object, index: int, source: str) -> CPUInfo:
    where = f"{source}: cpus[{index}]"
    if not isinstance(row, Mapping):
        msg = f"{where}: a CPU row must be a mapping like {{id: 0, core: 0, socket: 0, numa: 0}}"
        raise TopologyError(msg)
    _no_unknown(row, frozenset(_ROW_KEYS), source, f"cpus[{index}].")
    values = {}
    for key in _ROW_KEYS:
        if key not in row and key in ("l3", "die"):
            values[key] = -1 if key == "l3" else 0
            continue
        if key not in row:
            msg = f"{where}: missing key {key!r}"
            raise TopologyError(msg)
        values[key] = _natural(row[key], f"{where}.{key}")
    return CPUInfo(**values)


def _with_l3(cpu: CPUInfo, l3: int) -> CPUInfo:
    return CPUInfo(cpu.id, cpu.core, cpu.socket, cpu.numa, l3, cpu.die)


def _check_rows(cpus: list[CPUInfo], source: str) -> CPUSet:
    """No CPU twice; a core's threads share one socket and one NUMA node."""
    seen: dict[int, CPUInfo] = {}
    cores: dict[int, CPUInfo] = {}
    for cpu in cpus:
        if cpu.id in seen:
            msg = f"{source}: cpus: CPU {cpu.id} has two rows"
            raise TopologyError(msg)
        seen[cpu.id] = cpu
        first = cores.setdefault(cpu.core, cpu)
        if (first.socket, first.numa) != (cpu.socket, cpu.numa):
            msg = (
                f"{source}: cpus: core {cpu.core} spans CPUs {first.id} (socket {first.socket},"
                f" numa {first.numa}) and {cpu.id} (socket {cpu.socket}, numa {cpu.numa})"
            )
            raise TopologyError(msg)
    return CPUSet(seen)


# --- the topology JSON form -----------------------------------------------------


def _from_json(data: Mapping[str, Any], source: str) -> Topology:
    _no_unknown(data, _JSON_KEYS, source, "")
    online = _cpu_list(data, "online_cpus", source)
    socket = _assign(_keyed_lists(data, "sockets", source), online, source, "sockets")
    cores = _assign(dict(enumerate(_lists(data, "cores", source))), online, source, "cores")
    l3 = _assign(dict(enumerate(_lists(data, "l3_groups", source))), online, source, "l3_groups")
    dies_given = _keyed_lists(data, "dies", source) if "dies" in data else {0: online}
    die = _assign(dies_given, online, source, "dies")
    raw_nodes = data.get("numa_nodes")
    if not isinstance(raw_nodes, Mapping):
        msg = f"{source}: numa_nodes: must be a mapping of node id to node"
        raise TopologyError(msg)
    nodes = _nodes(raw_nodes, source, "numa_nodes")
    numa = _assign({n.id: n.cpus for n in nodes}, online, source, "numa_nodes")
    cpus = [CPUInfo(c, cores[c], socket[c], numa[c], l3[c], die[c]) for c in online]
    return Topology.from_cpus(
        cpus, nodes, offline_cpus=_cpu_list(data, "offline_cpus", source),
        isolated_cpus=_cpu_list(data, "isolated_cpus", source), notes=tuple(_notes(data, source)),
    )


def _assign(groups: Mapping[int, CPUSet], online: CPUSet, source: str, key: str) -> dict[int, int]:
    """CPU -> the id of its group; every online CPU in exactly one group."""
    out: dict[int, int] = {}
    for gid, members in groups.items():
        for cpu in members:
            if cpu in out:
                msg = f"{source}: {key}: CPU {cpu} is in both {out[cpu]} and {gid}"
                raise TopologyError(msg)
            out[cpu] = gid
    missing, extra = online - CPUSet(out), CPUSet(out) - online
    if missing or extra:
        what = f"online CPUs {missing} are in none" if missing else f"CPUs {extra} are not online"
        msg = f"{source}: {key}: {what}"
        raise TopologyError(msg)
    return out


def _keyed_lists(data: Mapping[str, Any], key: str, source: str) -> dict[int, CPUSet]:
    raw = data.get(key)
    if not isinstance(raw, Mapping):
        msg = f"{source}: {key}: must be a mapping of id to CPU list"
        raise TopologyError(msg)
    return {_natural(k, f"{source}: {key} id {k!r}"): _parse_cpus(v, f"{source}: {key}.{k}") for k, v in raw.items()}


def _lists(data: Mapping[str, Any], key: str, source: str) -> list[CPUSet]:
    raw = data.get(key)
    if not isinstance(raw, list):
        msg = f"{source}: {key}: must be a list of CPU lists"
        raise TopologyError(msg)
    return [_parse_cpus(v, f"{source}: {key}[{i}]") for i, v in enumerate(raw)]


# --- shared pieces ---------------------------------------------------------------


def _nodes(raw: object, source: str, key: str) -> list[NUMANode]:
    if not isinstance(raw, Mapping):
        msg = f"{source}: {key}: must be a mapping of node id to {{memory, distance}}"
        raise TopologyError(msg)
    return [_node(nid, spec, f"{source}: {key}.{nid}") for nid, spec in raw.items()]


def _node(nid: object, spec: object, where: str) -> NUMANode:
    node_id = _natural(nid, f"{where} (node id)")
    spec = {} if spec is None else spec
    if not isinstance(spec, Mapping):
        msg = f"{where}: must be a mapping like {{memory: 8Gi, distance: [10, 21]}}"
        raise TopologyError(msg)
    unknown = sorted(str(k) for k in spec if k not in _NODE_KEYS)
    if unknown:
        msg = f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_NODE_KEYS))})"
        raise TopologyError(msg)
    memory = spec.get("memory", spec.get("memory_bytes"))
    distance = spec.get("distance") or []
    if not isinstance(distance, list):
        msg = f"{where}.distance: must be a list of integers"
        raise TopologyError(msg)
    hugepages = spec.get("hugepages") or {}
    if not isinstance(hugepages, Mapping):
        msg = f"{where}.hugepages: must be a mapping of page size to count"
        raise TopologyError(msg)
    return NUMANode(
        node_id,
        _parse_cpus(spec.get("cpus", ""), f"{where}.cpus"),
        None if memory is None else _bytes(memory, f"{where}.memory"),
        tuple(_natural(d, f"{where}.distance[{i}]") for i, d in enumerate(distance)),
        {_bytes(k, f"{where}.hugepages"): _natural(v, f"{where}.hugepages.{k}") for k, v in hugepages.items()},
    )


def _no_unknown(data: Mapping[Any, Any], known: frozenset[str], source: str, prefix: str) -> None:
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        msg = f"{source}: unknown key {prefix}{unknown[0]!r} (known: {', '.join(sorted(known))})"
        raise TopologyError(msg)


def _notes(data: Mapping[str, Any], source: str) -> list[str]:
    notes = data.get("notes") or []
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        msg = f"{source}: notes: must be a list of strings"
        raise TopologyError(msg)
    return list(notes)


def _cpu_list(data: Mapping[str, Any], key: str, source: str) -> CPUSet:
    return _parse_cpus(data.get(key) or "", f"{source}: {key}")


def _parse_cpus(value: object, where: str) -> CPUSet:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # YAML reads a lone CPU "3" as an integer
    if not isinstance(value, str):
        msg = f"{where}: expected a CPU list like '0-3,8', got {value!r}"
        raise TopologyError(msg)
    try:
        return CPUSet.parse(value)
    except ValueError as exc:
        msg = f"{where}: {exc}"
        raise TopologyError(msg) from exc


def _natural(value: object, where: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"{where}: expected a non-negative integer, got {value!r}"
        raise TopologyError(msg)
    return value


def _bytes(value: object, where: str) -> int:
    try:
        return parse_bytes(value)  # type: ignore[arg-type]
    except ValueError as exc:
        msg = f"{where}: {exc}"
        raise TopologyError(msg) from exc


# --- writing and generating -------------------------------------------------------


def machine_to_dict(topo: Topology) -> dict[str, Any]:
    """The explicit-rows form of ``topo``; ``machine_from_dict`` reads it back equal."""
    rows = []
    for c in topo.cpus:
        row = {"id": c.id, "core": c.core, "socket": c.socket, "numa": c.numa, "l3": c.l3}
        if c.die:
            row["die"] = c.die
        rows.append(row)
    out: dict[str, Any] = {"cpus": rows, "numa": {str(n.id): _node_dict(n) for n in topo.numa_nodes}}
    if topo.offline_cpus:
        out["offline"] = str(topo.offline_cpus)
    if topo.isolated_cpus:
        out["isolated"] = str(topo.isolated_cpus)
    if topo.notes:
        out["notes"] = list(topo.notes)
    return out


def _node_dict(node: NUMANode) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if node.memory_bytes is not None:
        out["memory"] = format_bytes(node.memory_bytes)
    if node.distance:
        out["distance"] = list(node.distance)
    if node.hugepages:
        out["hugepages"] = {format_bytes(size): count for size, count in sorted(node.hugepages.items())}
    return out


def machine_to_yaml(topo: Topology, comment: str = "") -> str:
    """A machine file, one flow-style line per CPU row: compact and diffable."""
    data = machine_to_dict(topo)
    lines = [f"# {line}" for line in comment.splitlines()]
    lines.append("cpus:")
    lines += [f"  - {_flow(row)}" for row in data["cpus"]]
    lines.append("numa:")
    lines += [f'  "{nid}": {_flow(spec)}' for nid, spec in data["numa"].items()]
    for key in ("offline", "isolated"):
        if key in data:
            lines.append(f'{key}: "{data[key]}"')
    if "notes" in data:
        lines.append("notes:")
        lines += [f"  - {json.dumps(note)}" for note in data["notes"]]
    return "\n".join(lines) + "\n"


def _flow(value: object) -> str:
    """YAML flow style for the ints, strings, lists and mappings a machine file holds."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_flow(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, str) and (not value.isidentifier() or value in ("yes", "no", "on", "off", "null", "true", "false")):
        return json.dumps(value)
    return str(value)


def synthetic(  # noqa: PLR0913 - one knob per level of a regular machine
    *,
    sockets: int = 1,
    numa_per_socket: int = 1,
    l3_per_numa: int = 1,
    cores_per_l3: int = 4,
    threads_per_core: int = 2,
    siblings: Literal["adjacent", "far"] = "far",
    memory_per_node_bytes: int = 16 << 30,
) -> Topology:
    """A regular machine: sockets x NUMA per socket x L3 per NUMA x cores x threads.

    ``siblings="adjacent"`` numbers a core's threads 2n, 2n+1 (AMD style);
    ``"far"`` numbers them n, n + cores (Intel style). Distances are 10 to
    itself, 11 within a socket and 21 across sockets.
    """
    per_socket = numa_per_socket * l3_per_numa * cores_per_l3
    total_cores = sockets * per_socket
    cpus = []
    for core in range(total_cores):
        l3 = core // cores_per_l3
        numa = l3 // l3_per_numa
        for thread in range(threads_per_core):
            cpu = core * threads_per_core + thread if siblings == "adjacent" else thread * total_cores + core
            cpus.append(CPUInfo(cpu, core, core // per_socket, numa, l3))
    n_nodes = sockets * numa_per_socket

    def dist(a: int, b: int) -> int:
        return 10 if a == b else 11 if a // numa_per_socket == b // numa_per_socket else 21

    nodes = [
        NUMANode(n, CPUSet(), memory_per_node_bytes, tuple(dist(n, m) for m in range(n_nodes)))
        for n in range(n_nodes)
    ]
    return Topology.from_cpus(cpus, nodes)
