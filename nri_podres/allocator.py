"""Choosing which CPUs: the kubelet's ``takeByTopology``, reproduced rule for rule.

Packed ("topology-aware best fit"): whole NUMA nodes / sockets first (in the
hierarchy order the machine implies), then whole L3 (uncore) groups when asked,
then whole cores, then single CPUs. Every list of domains is sorted by the number
of free CPUs it still has, ascending, then by id — the *fullest* domain first, so
a partly used core is finished before a new one is broken. The NUMA-distributed
variant spreads a request evenly over the fewest NUMA nodes that keep the free
CPUs balanced.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from statistics import pstdev

from nri_podres.cpuset import CPUSet
from nri_podres.errors import AdmissionError
from nri_podres.topology import Topology


@dataclass(frozen=True, slots=True)
class TakeOptions:
    uncore: bool = False  # prefer-align-cpus-by-uncorecache
    distribute_across_numa: bool = False
    full_pcpus_only: bool = False


@dataclass(frozen=True, slots=True)
class _Layout:
    """Per-topology indices as bitmasks, built once per Topology."""

    numa_first: bool
    cpu_core: dict[int, int]
    cpu_socket: dict[int, int]
    cpu_numa: dict[int, int]
    cpu_l3: dict[int, int]
    core_bits: dict[int, int]
    socket_bits: dict[int, int]
    numa_bits: dict[int, int]
    l3_bits: dict[int, int]
    cpus_per_l3: int
    threads_per_core: int


def layout(topo: Topology) -> _Layout:
    cached = topo.__dict__.get("_podres_layout")
    if cached is None:
        cached = _build_layout(topo)
        topo.__dict__["_podres_layout"] = cached
    return cached


def _build_layout(topo: Topology) -> _Layout:
    numa_bits = {n.id: n.cpus.bits for n in topo.numa_nodes if n.cpus}
    l3 = {k: v.bits for k, v in topo.l3_groups.items()}
    return _Layout(
        numa_first=len(topo.sockets) >= len(numa_bits),
        cpu_core={c.id: c.core for c in topo.cpus},
        cpu_socket={c.id: c.socket for c in topo.cpus},
        cpu_numa={c.id: c.numa for c in topo.cpus},
        cpu_l3={c.id: c.l3 for c in topo.cpus},
        core_bits={k: v.bits for k, v in topo.cores.items()},
        socket_bits={k: v.bits for k, v in topo.sockets.items()},
        numa_bits=numa_bits,
        l3_bits=l3,
        cpus_per_l3=max(1, len(topo.cpus) // max(1, len(l3))),
        threads_per_core=topo.threads_per_core,
    )


def _ids(bits: int) -> list[int]:
    out = []
    while bits:
        low = bits & -bits
        out.append(low.bit_length() - 1)
        bits ^= low
    return out


class _Accumulator:
    """Free CPUs left, CPUs taken so far, and how many are still needed."""

    def __init__(self, lay: _Layout, free: int, need: int) -> None:
        self.lay = lay
        self.free = free
        self.taken = 0
        self.need = need

    def take(self, bits: int) -> None:
        self.free &= ~bits
        self.taken |= bits
        self.need -= bits.bit_count()

    def satisfied(self) -> bool:
        return self.need <= 0

    def is_free(self, domain_bits: int) -> bool:
        return domain_bits & self.free == domain_bits

    def sort(self, ids: list[int], bits_of: dict[int, int]) -> list[int]:
        free = self.free
        return sorted(ids, key=lambda i: ((bits_of[i] & free).bit_count(), i))

    def available(self, cpu_map: dict[int, int], bits_of: dict[int, int], within: int) -> list[int]:
        """Ids of the domains (per cpu_map) that have a free CPU inside ``within``."""
        ids = []
        left = self.free & within
        while left:  # one step per domain, not per CPU: its other CPUs are dropped at once
            domain = cpu_map[(left & -left).bit_length() - 1]
            ids.append(domain)
            left &= ~bits_of[domain]
        ids.sort()
        return ids

    # --- hierarchy orders, exactly as the kubelet derives them ---------------

    def sorted_numa(self) -> list[int]:
        lay = self.lay
        if lay.numa_first:
            return self.sort(self.available(lay.cpu_numa, lay.numa_bits, -1), lay.numa_bits)
        out: list[int] = []
        for socket in self.sorted_sockets():
            ids = self.available(lay.cpu_numa, lay.numa_bits, lay.socket_bits[socket])
            out.extend(self.sort(ids, lay.numa_bits))
        return out

    def sorted_sockets(self) -> list[int]:
        lay = self.lay
        if not lay.numa_first:
            return self.sort(self.available(lay.cpu_socket, lay.socket_bits, -1), lay.socket_bits)
        out: list[int] = []
        for numa in self.sorted_numa():
            ids = self.available(lay.cpu_socket, lay.socket_bits, lay.numa_bits[numa])
            out.extend(self.sort(ids, lay.socket_bits))
        return out

    def sorted_cores(self) -> list[int]:
        lay = self.lay
        if lay.numa_first:
            parents, parent_bits = self.sorted_sockets(), lay.socket_bits
        else:
            parents, parent_bits = self.sorted_numa(), lay.numa_bits
        out: list[int] = []
        for parent in parents:
            ids = self.available(lay.cpu_core, lay.core_bits, parent_bits[parent])
            out.extend(self.sort(ids, lay.core_bits))
        return out

    def sorted_l3(self) -> list[int]:
        out: list[int] = []
        for numa in self.sorted_numa():
            ids = self.available(self.lay.cpu_l3, self.lay.l3_bits, self.lay.numa_bits[numa])
            out.extend(self.sort(ids, self.lay.l3_bits))
        return out

    # --- the steps ----------------------------------------------------------

    def take_full(self, ids: list[int], bits_of: dict[int, int]) -> None:
        for i in ids:
            if self.satisfied():
                return
            bits = bits_of[i]
            if self.is_free(bits) and self.need >= bits.bit_count():
                self.take(bits)

    def take_full_levels(self) -> None:
        lay = self.lay
        if lay.numa_first:
            self.take_full(self.sorted_numa(), lay.numa_bits)
            self.take_full(self.sorted_sockets(), lay.socket_bits)
        else:
            self.take_full(self.sorted_sockets(), lay.socket_bits)
            self.take_full(self.sorted_numa(), lay.numa_bits)

    def take_uncore(self) -> None:
        for l3 in self.sorted_l3():
            if self.need >= self.lay.cpus_per_l3:
                self.take_full(self.sorted_l3(), self.lay.l3_bits)
            if self.satisfied():
                return
            self.take_partial_l3(l3)
            if self.satisfied():
                return

    def take_partial_l3(self, l3: int) -> None:
        lay = self.lay
        cores_needed = -(-self.need // lay.threads_per_core)
        cores = self.available(lay.cpu_core, lay.core_bits, lay.l3_bits[l3])[:cores_needed]
        candidate = 0
        for core in cores:
            candidate |= lay.core_bits[core] & self.free
        size = candidate.bit_count()
        if self.need % 2 and lay.threads_per_core > 1 and size > self.need:
            candidate &= ~(1 << (candidate.bit_length() - 1))
        if candidate.bit_count() == self.need:
            self.take(candidate)

    def take_remaining(self) -> None:
        for core in self.sorted_cores():
            for cpu in _ids(self.lay.core_bits[core] & self.free):
                self.take(1 << cpu)
                if self.satisfied():
                    return


def take_packed(topo: Topology, free: CPUSet, n: int, *, uncore: bool = False) -> CPUSet:
    """Pick ``n`` CPUs out of ``free`` the way the kubelet's packed policy does."""
    _check_enough(free, n)
    acc = _Accumulator(layout(topo), free.bits, n)
    if n == 0:
        return CPUSet()
    acc.take_full_levels()
    if not acc.satisfied() and uncore:
        acc.take_uncore()
    if not acc.satisfied():
        acc.take_full(acc.sorted_cores(), acc.lay.core_bits)
    if not acc.satisfied():
        acc.take_remaining()
    return CPUSet.from_bits(acc.taken)


def _check_enough(free: CPUSet, n: int) -> None:
    if n > len(free):
        raise AdmissionError(
            "UnexpectedAdmissionError",
            f"not enough cpus available to satisfy request: requested={n}, available={len(free)}",
        )


def take_by_topology(topo: Topology, free: CPUSet, n: int, options: TakeOptions) -> CPUSet:
    """The kubelet's dispatch: NUMA-distributed when asked, else packed (+uncore)."""
    if options.distribute_across_numa:
        group = topo.threads_per_core if options.full_pcpus_only else 1
        return take_distributed(topo, free, n, group)
    return take_packed(topo, free, n, uncore=options.uncore)


def allocate_cpus(
    topo: Topology, avail: CPUSet, n: int, aligned_to: CPUSet | None, options: TakeOptions
) -> CPUSet:
    """allocateCPUs: aligned CPUs first (up to n), the remainder from anywhere in avail."""
    _check_enough(avail, n)
    taken = CPUSet()
    if aligned_to is not None:
        aligned = avail & aligned_to
        taken = take_by_topology(topo, aligned, min(n, len(aligned)), options)
    if len(taken) < n:
        taken |= take_by_topology(topo, avail - taken, n - len(taken), options)
    return taken


# --- NUMA-distributed ---------------------------------------------------------


def take_distributed(topo: Topology, free: CPUSet, n: int, group: int) -> CPUSet:
    """Spread ``n`` CPUs evenly over the fewest NUMA nodes, ``group`` CPUs at a time."""
    _check_enough(free, n)
    lay = layout(topo)
    if n == 0 or n % group:
        return take_packed(topo, free, n)
    acc = _Accumulator(lay, free.bits, n)
    nodes = acc.sorted_numa()
    free_per = {m: (lay.numa_bits[m] & free.bits).bit_count() for m in nodes}
    best = _best_distribution(lay, nodes, free_per, n, group)
    if best is None:
        return take_packed(topo, free, n)
    combo, per_node, extra_nodes = best
    taken = CPUSet()
    for m in combo:
        taken |= take_packed(topo, CPUSet.from_bits(lay.numa_bits[m]) & free, per_node)
    for m in extra_nodes:
        node_free = CPUSet.from_bits(lay.numa_bits[m]) & free - taken
        taken |= take_packed(topo, node_free, group)
    return taken


def _best_distribution(
    lay: _Layout, nodes: list[int], free_per: dict[int, int], n: int, group: int
) -> tuple[tuple[int, ...], int, tuple[int, ...]] | None:
    total = sum(b.bit_count() for b in lay.numa_bits.values())
    groups_needed = -(-n // group)
    groups_per_numa = -(-(-(-total // group)) // max(1, len(lay.numa_bits)))
    min_k = -(-groups_needed // groups_per_numa)
    max_k = min(groups_needed, sum(1 for m in nodes if free_per[m]))
    for k in range(max(1, min_k), max_k + 1):
        best: tuple[float, tuple[int, ...], int, tuple[int, ...]] | None = None
        for combo in itertools.combinations(nodes, k):
            found = _score_combo(combo, free_per, n, group)
            if found is not None and (best is None or found[0] < best[0]):
                best = (found[0], combo, found[1], found[2])
                if found[0] == 0:
                    break
        if best is not None:
            return best[1], best[2], best[3]
    return None


def _score_combo(
    combo: tuple[int, ...], free_per: dict[int, int], n: int, group: int
) -> tuple[float, int, tuple[int, ...]] | None:
    """Balance score of spreading n over combo: even share, then one group per extra node."""
    k = len(combo)
    if sum(free_per[m] for m in combo) < n:
        return None
    per_node = (n // k // group) * group
    if any(free_per[m] < per_node for m in combo):
        return None
    after = dict(free_per)
    for m in combo:
        after[m] -= per_node
    rest = n - per_node * k
    if rest == 0:
        return round(pstdev(after.values()), 3), per_node, ()
    spare = [m for m in combo if after[m] >= group]
    best: tuple[float, int, tuple[int, ...]] | None = None
    for subset in itertools.combinations(spare, rest // group):
        trial = dict(after)
        for m in subset:
            trial[m] -= group
        score = round(pstdev(trial.values()), 3)
        if best is None or score < best[0]:
            best = (score, per_node, subset)
    return best
