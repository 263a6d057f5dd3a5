"""NUMA choice: the kubelet's merged best hint, found without enumerating 2^N masks."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from nri_podres.cpuset import NodeSet
from nri_podres.hints import UNLIMITED, HintRequest, NodeCapacity, best_hint, min_affinity
from tests import topologies as t

GIB = 1 << 30


def caps(free: list[int], total: int = 8, memory_free: list[int] | None = None,
         memory_total: int = UNLIMITED) -> dict[int, NodeCapacity]:
    mem = memory_free or [UNLIMITED] * len(free)
    return {i: NodeCapacity(total, f, memory_total, m, NodeSet([i]), 0)
            for i, (f, m) in enumerate(zip(free, mem, strict=True))}


def test_min_affinity() -> None:
    assert min_affinity([8, 8, 8], 8) == 1
    assert min_affinity([8, 8, 8], 9) == 2
    assert min_affinity([8, 8], 17) == 3  # cannot fit at all
    assert min_affinity([8], 0) == 0


def test_single_numa_node_takes_the_lowest_node_that_fits() -> None:
    topo = t.dual_socket_ht()
    hint = best_hint(topo, caps([3, 6]), HintRequest(4, 0, "single-numa-node"))
    assert hint.mask == NodeSet([1]) and hint.preferred


def test_single_numa_node_refuses_a_pod_wider_than_a_node() -> None:
    topo = t.dual_socket_ht()
    hint = best_hint(topo, caps([8, 8]), HintRequest(9, 0, "single-numa-node"))
    assert hint.mask is None and not hint.preferred


def test_restricted_admits_two_nodes_when_two_are_needed() -> None:
    topo = t.dual_socket_ht()
    hint = best_hint(topo, caps([8, 8]), HintRequest(9, 0, "restricted"))
    assert hint.mask == NodeSet([0, 1]) and hint.preferred


def test_best_effort_widens_when_the_narrow_mask_is_full() -> None:
    topo = t.synthetic(4, 1, 4)
    hint = best_hint(topo, caps([2, 2, 8, 8]), HintRequest(4, 0, "best-effort"))
    assert hint.mask == NodeSet([2]) and hint.preferred
    hint = best_hint(topo, caps([3, 1, 1, 0]), HintRequest(4, 0, "best-effort"))
    assert hint.mask == NodeSet([0, 1]) and not hint.preferred


def test_memory_counts_too() -> None:
    topo = t.dual_socket_ht()
    nodes = caps([8, 8], memory_free=[GIB, 8 * GIB], memory_total=16 * GIB)
    assert best_hint(topo, nodes, HintRequest(2, 4 * GIB, "single-numa-node")).mask == NodeSet([1])


def test_a_node_with_single_node_memory_never_joins_a_wider_mask() -> None:
    topo = t.synthetic(3, 1, 4)
    nodes = caps([8, 8, 8])
    nodes[0] = NodeCapacity(8, 8, UNLIMITED, UNLIMITED, NodeSet([0]), 1)
    assert best_hint(topo, nodes, HintRequest(12, 0, "best-effort")).mask == NodeSet([1, 2])


def test_prefer_closest_picks_the_nearest_pair() -> None:
    topo = t.synthetic(4, 1, 4)
    far = (10, 30, 30, 12)
    rows = [far, (30, 10, 12, 30), (30, 12, 10, 30), (12, 30, 30, 10)]
    from dataclasses import replace

    topo = replace(topo, numa_nodes=tuple(replace(n, distance=rows[n.id]) for n in topo.numa_nodes))
    req = HintRequest(12, 0, "restricted", prefer_closest=True)
    assert best_hint(topo, caps([8, 8, 8, 8]), req).mask == NodeSet([1, 2])
    assert best_hint(topo, caps([8, 8, 8, 8]), HintRequest(12, 0, "restricted")).mask == NodeSet([0, 1])


def test_twenty_four_nodes_are_fine() -> None:
    topo = t.synthetic(2, 12, 2)
    free = [1] * 23 + [4]
    hint = best_hint(topo, caps(free, total=4), HintRequest(4, 0, "best-effort"))
    assert hint.mask == NodeSet([23]) and hint.preferred
    hint = best_hint(topo, caps([1] * 24, total=4), HintRequest(6, 0, "best-effort"))
    assert hint.mask == NodeSet(range(6))


def _brute_force(nodes: dict[int, NodeCapacity], cpus: int) -> NodeSet | None:
    """The kubelet's way: every mask, narrowest first, numerically smallest on ties."""
    fits = []
    for width in range(1, len(nodes) + 1):
        for combo in itertools.combinations(sorted(nodes), width):
            if sum(nodes[i].cpus_free for i in combo) >= cpus:
                fits.append(NodeSet(combo))
    return min(fits, key=lambda m: (len(m), m.bits), default=None)


@settings(max_examples=150, deadline=None)
@given(free=st.lists(st.integers(0, 8), min_size=1, max_size=9), cpus=st.integers(1, 40))
def test_search_equals_enumeration(free: list[int], cpus: int) -> None:
    topo = t.synthetic(1, len(free), 4)
    nodes = caps(free)
    hint = best_hint(topo, nodes, HintRequest(cpus, 0, "best-effort"))
    assert hint.mask == _brute_force(nodes, cpus)


def test_cpu_and_memory_pulling_apart_still_gets_a_fitting_mask() -> None:
    """Anti-correlated free CPU and memory on 24 nodes: a 2-D subset sum. The search
    is exact within its step budget, then falls back to a greedy mask that fits."""
    import random

    topo = t.synthetic(2, 12, 2)
    rng = random.Random(7)
    for _ in range(20):
        free = [rng.randint(0, 16) for _ in range(24)]
        mem = [(16 - f) * GIB + rng.randint(0, GIB) for f in free]
        nodes = {i: NodeCapacity(16, free[i], 32 * GIB, mem[i], NodeSet([i]), 0) for i in range(24)}
        req = HintRequest(rng.randint(1, 150), rng.randint(1, 150) * GIB, "best-effort")
        hint = best_hint(topo, nodes, req)
        assert hint == best_hint(topo, nodes, req)
        if hint.mask is not None:
            assert sum(free[i] for i in hint.mask) >= req.cpus
            assert sum(mem[i] for i in hint.mask) >= req.memory_bytes
        else:
            assert sum(free) < req.cpus or sum(mem) < req.memory_bytes
