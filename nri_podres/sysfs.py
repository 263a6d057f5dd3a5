"""Topology discovery from the kernel's sysfs: the only module that reads it.

``read_topology(root)`` takes ``/sys`` (the default), a directory holding a
copy of it at any depth, or a tarball of such a directory. Every gap in the
tree degrades to a documented fallback that is recorded in ``Topology.notes``.

Ids: ``socket`` is the kernel's ``physical_package_id`` and ``die`` its
``die_id``; ``core`` and ``l3`` are machine-wide indices numbered in the
order of each group's lowest CPU, so they are the same for the same machine
however it is described.
"""

from __future__ import annotations

import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nri_podres.cpuset import CPUSet
from nri_podres.errors import TopologyError
from nri_podres.topology import CPUInfo, NUMANode, Topology

_CPU_DIR = "devices/system/cpu"
_NODE_DIR = "devices/system/node"
_CPU_NAME = re.compile(r"cpu(\d+)")
_NODE_NAME = re.compile(r"node(\d+)")
_HUGEPAGE_NAME = re.compile(r"hugepages-(\d+)kB")
_MAX_SEARCH_DEPTH = 6


def read_topology(root: str | os.PathLike[str] = "/sys") -> Topology:
    """Discover the machine under ``root`` (a sysfs directory or a tarball of one)."""
    path = Path(root)
    if path.is_file():
        return _Reader(_TarTree.load(path)).topology()
    if not path.is_dir():
        msg = f"sysfs root {str(path)!r} is neither a directory nor a tarball"
        raise TopologyError(msg)
    return _Reader(_DirTree(find_sysfs_root(path))).topology()


def find_sysfs_root(base: Path) -> Path:
    """The directory at or below ``base`` that holds ``devices/system/cpu``."""
    for candidate in _walk_dirs(base, _MAX_SEARCH_DEPTH):
        if (candidate / _CPU_DIR).is_dir():
            return candidate
    msg = f"no {_CPU_DIR} directory found in {str(base)!r}"
    raise TopologyError(msg)


def _walk_dirs(base: Path, depth: int) -> Iterator[Path]:
    """Breadth-first directories under ``base``, in name order; symlinks not followed."""
    level = [base]
    for _ in range(depth + 1):
        yield from level
        nxt: list[Path] = []
        for d in level:
            try:
                nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.is_symlink()))
            except OSError:
                continue
        level = nxt


class _DirTree:
    """A sysfs tree on disk."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)

    def __str__(self) -> str:
        return self.root

    def read(self, rel: str) -> str | None:
        try:
            with open(os.path.join(self.root, rel), encoding="ascii", errors="replace") as f:  # noqa: PTH123 - hot path
                return f.read()
        except OSError:
            return None

    def listdir(self, rel: str) -> list[str]:
        try:
            return os.listdir(os.path.join(self.root, rel))
        except OSError:
            return []


class _TarTree:
    """The sysfs part of a tarball, held in memory: nothing is unpacked to disk.

    Only the files discovery reads are kept; every name is kept for listings.
    Member paths are taken relative to the directory holding ``devices/system``,
    whatever prefix (``sys/``, ``machine/sys/``...) the archive put before it.
    """

    _WANTED = frozenset(
        "online present isolated thread_siblings_list thread_siblings physical_package_id"
        " die_id level shared_cpu_list shared_cpu_map cpulist cpumap meminfo distance"
        " nr_hugepages".split()
    )

    def __init__(self, name: str, files: dict[str, str], children: dict[str, set[str]]) -> None:
        self.name = name
        self.files = files
        self.children = children

    def __str__(self) -> str:
        return self.name

    @classmethod
    def load(cls, archive: Path) -> _TarTree:
        files: dict[str, str] = {}
        children: dict[str, set[str]] = {}
        root: str | None = None  # the first prefix seen: one machine per archive
        try:
            with tarfile.open(archive) as tar:
                for member in tar:
                    prefix, sep, rel = member.name.partition("devices/system/")
                    if not sep or (prefix and not prefix.endswith("/")):
                        continue
                    root = prefix if root is None else root
                    if prefix != root:
                        continue
                    rel = sep + rel.rstrip("/")
                    parent, _, base = rel.rpartition("/")
                    children.setdefault(parent, set()).add(base)
                    if member.isfile() and base in cls._WANTED:
                        data = tar.extractfile(member)
                        files[rel] = data.read().decode("ascii", "replace") if data else ""
        except (tarfile.TarError, OSError, EOFError) as exc:
            msg = f"cannot read sysfs tarball {str(archive)!r}: {exc}"
            raise TopologyError(msg) from exc
        if _CPU_DIR.rpartition("/")[2] not in children.get("devices/system", ()):
            msg = f"no {_CPU_DIR} directory found in {str(archive)!r}"
            raise TopologyError(msg)
        return cls(str(archive), files, children)

    def read(self, rel: str) -> str | None:
        return self.files.get(rel)

    def listdir(self, rel: str) -> list[str]:
        return list(self.children.get(rel, ()))


@dataclass
class _Reader:
    """One pass over a sysfs tree; collects the notes as it falls back."""

    tree: _DirTree | _TarTree
    notes: list[str] = field(default_factory=list)

    def text(self, rel: str) -> str | None:
        raw = self.tree.read(rel)
        return None if raw is None else raw.replace("\0", "").strip()

    def integer(self, rel: str) -> int | None:
        raw = self.text(rel)
        try:
            return None if raw is None else int(raw)
        except ValueError:
            return None

    def cpu_list(self, rel_list: str, rel_mask: str | None = None) -> CPUSet | None:
        """A CPU list file, or else its hex-mask twin; None when neither reads."""
        raw = self.text(rel_list)
        if raw is not None:
            try:
                return CPUSet.parse(raw)
            except ValueError:
                pass
        if rel_mask is not None and (mask := self.text(rel_mask)) is not None:
            try:
                return CPUSet.from_bits(int(mask.replace(",", ""), 16))
            except ValueError:
                return None
        return None

    def names(self, rel: str, pattern: re.Pattern[str]) -> list[int]:
        entries = self.tree.listdir(rel)
        return sorted(int(m[1]) for e in entries if (m := pattern.fullmatch(e)))

    # --- the machine --------------------------------------------------------

    def topology(self) -> Topology:
        present, online = self.cpu_states()
        if not online:
            msg = f"no online CPU found under {str(self.tree)!r}"
            raise TopologyError(msg)
        sockets = self.sockets(online)
        dies = {cpu: self.die(cpu) for cpu in online}
        cores = _index(self.cores(online))
        l3 = _index(self.l3_groups(online, sockets))
        nodes, numa = self.numa(online, sockets)
        cpus = [CPUInfo(c, cores[c], sockets[c], numa[c], l3[c], dies[c]) for c in online]
        isolated = self.cpu_list(f"{_CPU_DIR}/isolated") or CPUSet()
        return Topology.from_cpus(
            cpus,
            nodes,
            offline_cpus=present - online,
            isolated_cpus=isolated & present,
            notes=tuple(self.notes),
        )

    def cpu_states(self) -> tuple[CPUSet, CPUSet]:
        """(present, online) CPUs; online ones are only those with a cpuN directory."""
        dirs = CPUSet(self.names(_CPU_DIR, _CPU_NAME))
        present = self.cpu_list(f"{_CPU_DIR}/present")
        present = dirs if present is None else present & dirs
        online = self.cpu_list(f"{_CPU_DIR}/online")
        if online is None:
            self.notes.append("no cpu/online file: CPUs are online unless their cpuN/online says 0")
            online = CPUSet(c for c in present if self.text(f"{_CPU_DIR}/cpu{c}/online") != "0")
        missing = online - dirs
        if missing:
            self.notes.append(f"CPUs {missing} listed online but absent from the tree: ignored")
        return present | (online & dirs), online & dirs

    def die(self, cpu: int) -> int:
        die = self.integer(f"{_CPU_DIR}/cpu{cpu}/topology/die_id")
        return die if die is not None and die >= 0 else 0

    def sockets(self, online: CPUSet) -> dict[int, int]:
        out: dict[int, int] = {}
        unknown = []
        for cpu in online:
            pkg = self.integer(f"{_CPU_DIR}/cpu{cpu}/topology/physical_package_id")
            if pkg is None or pkg < 0:
                unknown.append(cpu)
                pkg = 0
            out[cpu] = pkg
        if unknown:
            self.notes.append(f"no physical_package_id for CPUs {CPUSet(unknown)}: socket 0")
        return out

    def cores(self, online: CPUSet) -> Iterator[CPUSet]:
        """Thread-sibling groups; a CPU without sibling info is a core of its own."""
        seen = CPUSet()
        alone = []
        for cpu in online:
            if cpu in seen:
                continue
            topo = f"{_CPU_DIR}/cpu{cpu}/topology"
            sibs = self.cpu_list(f"{topo}/thread_siblings_list", f"{topo}/thread_siblings")
            if sibs is None:
                alone.append(cpu)
                sibs = CPUSet()
            group = ((sibs & online) - seen) | CPUSet((cpu,))
            seen |= group
            yield group
        if alone:
            self.notes.append(f"no thread_siblings for CPUs {CPUSet(alone)}: one core each")

    def l3_groups(self, online: CPUSet, sockets: dict[int, int]) -> Iterator[CPUSet]:
        """Groups sharing a level-3 cache; CPUs without one are grouped by socket."""
        seen = CPUSet()
        for cpu in online:
            if cpu in seen:
                continue
            shared = self.l3_of(cpu)
            if shared is None:
                continue
            group = ((shared & online) - seen) | CPUSet((cpu,))
            seen |= group
            yield group
        rest = online - seen
        if rest:
            self.notes.append(f"no L3 cache info for CPUs {rest}: one L3 group per socket")
            by_socket: dict[int, list[int]] = {}
            for cpu in rest:
                by_socket.setdefault(sockets[cpu], []).append(cpu)
            for members in by_socket.values():
                yield CPUSet(members)

    def l3_of(self, cpu: int) -> CPUSet | None:
        cache = f"{_CPU_DIR}/cpu{cpu}/cache"
        for index in self.names(cache, re.compile(r"index(\d+)")):
            if self.integer(f"{cache}/index{index}/level") == 3:  # noqa: PLR2004 - the cache level
                rel = f"{cache}/index{index}"
                return self.cpu_list(f"{rel}/shared_cpu_list", f"{rel}/shared_cpu_map")
        return None

    # --- NUMA ------------------------------------------------------------------

    def numa(self, online: CPUSet, sockets: dict[int, int]) -> tuple[list[NUMANode], dict[int, int]]:
        ids = self.names(_NODE_DIR, _NODE_NAME)
        if not ids:
            self.notes.append("no NUMA node information: one node 0 holds every CPU")
            return [NUMANode(0, online)], dict.fromkeys(online, 0)
        nodes = [self.node(nid, online) for nid in ids]
        numa: dict[int, int] = {}
        for node in nodes:
            for cpu in node.cpus - CPUSet(numa):
                numa[cpu] = node.id
        orphans = online - CPUSet(numa)
        if orphans:
            numa.update(self.place_orphans(orphans, numa, sockets))
        return nodes, numa

    def node(self, nid: int, online: CPUSet) -> NUMANode:
        rel = f"{_NODE_DIR}/node{nid}"
        cpus = self.cpu_list(f"{rel}/cpulist", f"{rel}/cpumap") or CPUSet()
        distance = tuple(int(v) for v in (self.text(f"{rel}/distance") or "").split())
        return NUMANode(nid, cpus & online, self.memory(rel), distance, self.hugepages(rel))

    def memory(self, rel: str) -> int | None:
        for line in (self.text(f"{rel}/meminfo") or "").splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[2] == "MemTotal:":  # noqa: PLR2004 - "Node N MemTotal: X kB"
                return int(fields[3]) * 1024
        return None

    def hugepages(self, rel: str) -> dict[int, int]:
        sizes = self.names(f"{rel}/hugepages", _HUGEPAGE_NAME)
        out = {}
        for kb in sizes:
            count = self.integer(f"{rel}/hugepages/hugepages-{kb}kB/nr_hugepages")
            out[kb * 1024] = count or 0
        return out

    def place_orphans(
        self, orphans: CPUSet, numa: dict[int, int], sockets: dict[int, int]
    ) -> Iterable[tuple[int, int]]:
        """Online CPUs no node lists: the cpuN/nodeM link, else their socket's node."""
        by_socket = {sockets[c]: n for c, n in sorted(numa.items(), reverse=True)}
        linked, guessed = [], []
        for cpu in orphans:
            nodes = self.names(f"{_CPU_DIR}/cpu{cpu}", _NODE_NAME)
            if nodes:
                linked.append(cpu)
                yield cpu, nodes[0]
            else:
                guessed.append(cpu)
                yield cpu, by_socket.get(sockets[cpu], min(numa.values(), default=0))
        if linked:
            self.notes.append(f"CPUs {CPUSet(linked)} are in no node's cpulist: placed by their cpuN/nodeM link")
        if guessed:
            self.notes.append(f"CPUs {CPUSet(guessed)} are in no NUMA node: placed in their socket's node")


def _index(groups: Iterable[CPUSet]) -> dict[int, int]:
    """CPU -> group index, groups numbered in the order of their lowest CPU."""
    out = {}
    for index, group in enumerate(sorted(groups, key=CPUSet.min)):
        for cpu in group:
            out[cpu] = index
    return out
