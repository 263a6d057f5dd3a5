"""takeByTopology beyond the kubelet table: errors, dispatch, the NUMA-distributed variant."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nri_podres.allocator import TakeOptions, take_by_topology, take_distributed, take_packed
from nri_podres.cpuset import CPUSet
from nri_podres.errors import AdmissionError
from tests import topologies as t

C = CPUSet.parse


def test_not_enough_cpus_names_the_numbers() -> None:
    topo = t.dual_socket_ht()
    with pytest.raises(AdmissionError, match="requested=5, available=4") as e:
        take_packed(topo, C("0-3"), 5)
    assert e.value.reason == "UnexpectedAdmissionError"


def test_zero_is_empty() -> None:
    assert take_packed(t.dual_socket_ht(), C("0-11"), 0) == CPUSet()


def test_whole_cores_before_lone_threads() -> None:
    topo = t.dual_socket_ht()
    assert take_packed(topo, C("0,2,4,6,8,10"), 4) == C("0,2,6,8")


def test_distributed_spreads_evenly_over_nodes() -> None:
    topo = t.synthetic(sockets=2, nodes_per_socket=2, cores_per_node=4)
    got = take_distributed(topo, topo.online, 8, group=1)
    per_node = sorted(len(got & n.cpus) for n in topo.numa_nodes)
    assert per_node == [0, 0, 0, 8] or per_node == [0, 0, 4, 4] or per_node == [2, 2, 2, 2]
    wide = take_distributed(topo, topo.online, 16, group=2)
    assert sorted(len(wide & n.cpus) for n in topo.numa_nodes) in ([0, 0, 8, 8], [4, 4, 4, 4], [0, 0, 0, 16])


def test_distributed_balances_uneven_free_cpus() -> None:
    topo = t.synthetic(sockets=1, nodes_per_socket=2, cores_per_node=4)
    busy = C("0-2")  # node 0 has 5 free, node 1 has 8
    got = take_by_topology(topo, topo.online - busy, 4, TakeOptions(distribute_across_numa=True))
    assert len(got) == 4 and got.isdisjoint(busy)


def test_uneven_group_falls_back_to_packed() -> None:
    topo = t.synthetic(sockets=1, nodes_per_socket=2, cores_per_node=4)
    assert take_distributed(topo, topo.online, 3, group=2) == take_packed(topo, topo.online, 3)


@settings(max_examples=80, deadline=None)
@given(busy=st.sets(st.integers(0, 31), max_size=24), n=st.integers(0, 32),
       uncore=st.booleans(), distribute=st.booleans())
def test_takes_exactly_n_free_cpus(busy: set[int], n: int, uncore: bool, distribute: bool) -> None:
    topo = t.synthetic(sockets=2, nodes_per_socket=2, cores_per_node=4, cores_per_l3=4)
    free = topo.online - CPUSet(busy)
    opts = TakeOptions(uncore=uncore and not distribute, distribute_across_numa=distribute)
    if n > len(free):
        with pytest.raises(AdmissionError):
            take_by_topology(topo, free, n, opts)
        return
    got = take_by_topology(topo, free, n, opts)
    assert len(got) == n and got <= free
    assert got == take_by_topology(topo, free, n, opts)  # deterministic
