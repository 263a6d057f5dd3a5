"""Which NUMA nodes: the topology manager's decision, without enumerating 2^N masks.

The kubelet lists every NUMA mask that can hold the request, marks as *preferred*
those as narrow as the machine allows (``min_affinity``: the fewest nodes whose
*total* capacity covers the request), merges the CPU and memory lists and keeps the
best: preferred first, then the narrowest, then the numerically smallest mask (or,
with prefer-closest-numa-nodes, the one with the lowest mean distance).

We reach the same answer directly. Widths are tried from ``min_affinity`` up; for
one width, a depth-first search picks the highest node first, smallest id first,
then recurses below it, so masks come out in increasing numeric order. A branch is
cut when even the best nodes left below it (the largest free CPU counts; the
largest free memory; the largest of CPU and memory weighted together) cannot cover
what is still needed — a bound
that never cuts a feasible mask, so the first mask found is the kubelet's choice.
A sub-search that found nothing is remembered by (nodes left, highest allowed,
need): any later sub-search at the same place needing at least as much of both
resources is skipped.

Choosing a mask under two resources is a two-dimensional subset-sum, so no rule is
both exact and fast on every input. The search is exact (and typically takes well
under a millisecond on 24 nodes) unless CPU and memory pull in opposite directions
across many wide masks; after ``_SEARCH_BUDGET`` steps in all it stops and
takes a greedy mask instead (nodes covering most of what is still missing first),
which fits but may be wider than the narrowest.
The memory manager's group rule holds too: a node that already holds memory for a
single-node owner never joins a multi-node mask, and a multi-node group is reused
only whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from bisect import insort
from functools import lru_cache
from itertools import islice

from nri_podres.cpuset import NodeSet
from nri_podres.topology import Topology

UNLIMITED = 1 << 62
_CLOSEST_SCAN_LIMIT = 4096  # masks examined per width when ranking by distance
_MEMO_PER_PLACE = 16  # failed needs remembered per (nodes left, highest allowed)
_SEARCH_BUDGET = 10_000  # search steps per decision before the greedy fallback


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    """What one NUMA node holds (total) and has left (free), for one decision."""

    cpus_total: int
    cpus_free: int
    memory_total_bytes: int  # allocatable; UNLIMITED when unknown
    memory_free_bytes: int
    group: NodeSet  # nodes its memory is currently shared with (itself if none)
    memory_owners: int


@dataclass(frozen=True, slots=True)
class Hint:
    mask: NodeSet | None  # None: no affinity possible / needed
    preferred: bool


@dataclass(frozen=True, slots=True)
class HintRequest:
    cpus: int
    memory_bytes: int
    policy: str
    prefer_closest: bool = False


def min_affinity(totals: Sequence[int], need: int) -> int:
    """The fewest nodes whose total capacity covers ``need`` (0 when nothing is needed)."""
    if need <= 0:
        return 0
    acc = 0
    for width, total in enumerate(sorted(totals, reverse=True), start=1):
        acc += total
        if acc >= need:
            return width
    return len(totals) + 1


def best_hint(topo: Topology, nodes: Mapping[int, NodeCapacity], req: HintRequest) -> Hint:
    """The merged best hint for a request over CPUs and memory, under ``req.policy``."""
    ids = sorted(nodes)
    cpu_min = min_affinity([nodes[i].cpus_total for i in ids], req.cpus)
    mem_min = min_affinity([nodes[i].memory_total_bytes for i in ids], req.memory_bytes)
    widest = max(cpu_min, mem_min, 1)
    preferred_width = widest if {cpu_min, mem_min} - {0} == {widest} else None
    if req.policy == "single-numa-node":
        widths: range = range(1, 2) if preferred_width == 1 else range(0)
    elif req.policy == "restricted":
        widths = range(widest, widest + 1) if preferred_width else range(0)
    else:
        widths = range(widest, len(ids) + 1)
    budget = [_SEARCH_BUDGET]
    for width in widths:
        try:
            mask = _first_mask(topo, nodes, ids, width, req, budget)
        except _OutOfBudget:
            mask = _greedy(nodes, ids, req)
            if mask is None:
                break
        if mask is not None:
            return Hint(mask, preferred=len(mask) == preferred_width)
    return Hint(None, preferred=False)


class _OutOfBudget(Exception):
    pass


def _greedy(nodes: Mapping[int, NodeCapacity], ids: list[int], req: HintRequest) -> NodeSet | None:
    """Fallback when the exact search runs out of budget: add the nodes that cover the
    most of what is still missing (CPU and memory weighted together) until both fit."""
    fresh = [i for i in ids if nodes[i].memory_owners == 0]
    c0, m0 = max(1, req.cpus), max(1, min(req.memory_bytes, UNLIMITED))
    chosen: list[int] = []
    need_cpu, need_mem = req.cpus, req.memory_bytes
    while need_cpu > 0 or need_mem > 0:
        left = [i for i in fresh if i not in chosen]
        if not left:
            return None
        def cover(i: int) -> int:
            n = nodes[i]
            return min(n.cpus_free, max(0, need_cpu)) * m0 + min(n.memory_free_bytes, max(0, need_mem)) * c0
        best = max(left, key=lambda i: (cover(i), -i))
        chosen.append(best)
        need_cpu -= nodes[best].cpus_free
        need_mem -= nodes[best].memory_free_bytes
    return NodeSet(chosen)


def _first_mask(
    topo: Topology,
    nodes: Mapping[int, NodeCapacity],
    ids: list[int],
    width: int,
    req: HintRequest,
    budget: list[int],
) -> NodeSet | None:
    candidates = _masks_of_width(nodes, ids, width, req, budget)
    if not req.prefer_closest or width == 1 or req.policy == "single-numa-node":
        return next(candidates, None)
    found = list(islice(candidates, _CLOSEST_SCAN_LIMIT))
    if not found:
        return None
    return min(found, key=lambda m: (_mean_distance(topo, m), m.bits))


def _mean_distance(topo: Topology, mask: NodeSet) -> float:
    members = list(mask)
    pairs = [(a, b) for a in members for b in members if a < b]
    return sum(topo.distance(a, b) for a, b in pairs) / max(1, len(pairs))


def _masks_of_width(
    nodes: Mapping[int, NodeCapacity], ids: list[int], width: int, req: HintRequest,
    budget: list[int],
) -> Iterator[NodeSet]:
    """Feasible masks of ``width`` nodes, in increasing numeric order."""
    if width == 1:
        for i in ids:
            n = nodes[i]
            if len(n.group) <= 1 and _fits([n], req):
                yield NodeSet([i])
        return
    groups = sorted(
        {n.group for n in nodes.values() if len(n.group) == width and n.memory_owners},
        key=lambda g: g.bits,
    )
    groups = [g for g in groups if _fits([nodes[i] for i in g], req)]
    fresh = [i for i in ids if nodes[i].memory_owners == 0]
    searched = _search(nodes, fresh, width, req, budget)
    # merge the two ascending streams
    pending = next(searched, None)
    for g in groups:
        while pending is not None and pending.bits < g.bits:
            yield pending
            pending = next(searched, None)
        yield g
    while pending is not None:
        yield pending
        pending = next(searched, None)


def _fits(members: Sequence[NodeCapacity], req: HintRequest) -> bool:
    return sum(m.cpus_free for m in members) >= req.cpus and sum(
        m.memory_free_bytes for m in members
    ) >= req.memory_bytes


def _search(
    nodes: Mapping[int, NodeCapacity], ids: list[int], width: int, req: HintRequest,
    budget: list[int],
) -> Iterator[NodeSet]:
    cpu = [nodes[i].cpus_free for i in ids]
    mem = [min(nodes[i].memory_free_bytes, UNLIMITED) for i in ids]
    cpu_best = _top_sums(tuple(cpu), width)
    mem_best = _top_sums(tuple(mem), width)
    # both needs met => the weighted sum cpu*M + mem*C is too (C, M: the full needs)
    c0, m0 = max(1, req.cpus), max(1, min(req.memory_bytes, UNLIMITED))
    mix = [c * m0 + m * c0 for c, m in zip(cpu, mem, strict=True)]
    mix_best = _top_sums(tuple(mix), width)
    failed: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def walk(k: int, below: int, need_cpu: int, need_mem: int) -> Iterator[tuple[int, ...]]:
        need_cpu, need_mem = max(0, need_cpu), max(0, need_mem)
        budget[0] -= 1
        if k == 0:
            if need_cpu == 0 and need_mem == 0:
                yield ()
            return
        known = failed.setdefault((k, below), [])
        if any(need_cpu >= c and need_mem >= m for c, m in known):
            return  # a smaller need already failed here
        found = False
        for h in range(k - 1, below):
            budget[0] -= 1
            if budget[0] < 0:
                raise _OutOfBudget
            rest_cpu, rest_mem = need_cpu - cpu[h], need_mem - mem[h]
            if cpu_best[h][k - 1] < rest_cpu or mem_best[h][k - 1] < rest_mem:
                continue
            if mix_best[h][k - 1] < max(0, rest_cpu) * m0 + max(0, rest_mem) * c0:
                continue
            for tail in walk(k - 1, h, rest_cpu, rest_mem):
                found = True
                yield (h, *tail)
        if not found and len(known) < _MEMO_PER_PLACE:
            known.append((need_cpu, need_mem))

    for picked in walk(width, len(ids), req.cpus, req.memory_bytes):
        yield NodeSet(ids[p] for p in picked)


@lru_cache(maxsize=256)
def _top_sums(values: tuple[int, ...], width: int) -> tuple[tuple[int, ...], ...]:
    """top[h][j]: the sum of the j largest values among values[:h], for j <= width."""
    out = []
    ranked: list[int] = []  # the (up to) width largest so far, descending
    for h in range(len(values) + 1):
        sums = [0]
        for v in ranked:
            sums.append(sums[-1] + v)
        sums.extend([sums[-1]] * (width + 1 - len(sums)))
        out.append(tuple(sums))
        if h < len(values):
            insort(ranked, values[h], key=lambda x: -x)
            del ranked[width:]
    return tuple(out)
