"""Machine files, the synthetic generator, the sysfs tree writer, and their round trips."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nri_podres.cpuset import CPUSet
from nri_podres.errors import TopologyError
from nri_podres.machine import (
    load_machine,
    machine_from_dict,
    machine_to_dict,
    machine_to_yaml,
    synthetic,
    write_sysfs_tree,
)
from nri_podres.sysfs import read_topology
from nri_podres.topology_view import topology_to_json
from tests.support import SYSFS_DUMPS

MACHINES = Path(__file__).resolve().parents[1] / "fixtures" / "machines"
GIB = 1 << 30

Row = Callable[[int], tuple[int, int, int, int]]  # cpu -> (core, socket, numa, l3)

# The kubelet's fixture topologies (policy_test.go), as k8s-semantics §4.1 gives them.
KUBELET: list[tuple[str, int, Row]] = [
    ("topoSingleSocketHT", 8, lambda c: (c % 4, 0, 0, 0)),
    ("topoDualSocketHT", 12, lambda c: (c % 6, c % 2, c % 2, 0)),
    ("topoDualSocketNoHT", 8, lambda c: (c, c // 4, c // 4, 0)),
    ("topoTripleSocketHT", 18, lambda c: (c // 2, (1, 0, 2)[c // 6], (1, 0, 2)[c // 6], 0)),
    ("topoDualSocketMultiNumaPerSocketHT", 80, lambda c: (c % 40, c % 40 // 20, c % 40 // 10, 0)),
    ("fakeTopoMultiSocketDualSocketPerNumaHT", 80, lambda c: (c % 40, c % 40 // 10, c % 40 // 20, 0)),
    ("topoDualSocketMultiNumaPerSocketHTLarge", 256, lambda c: (c % 128, c % 128 // 64, c % 128 // 16, 0)),
    ("topoSingleSocketSingleNumaPerSocketSMTSmallUncore", 128, lambda c: (c % 64, 0, 0, c % 64 // 4)),
    ("topoSmallSingleSocketSingleNumaPerSocketNoSMTUncore", 32, lambda c: (c, 0, 0, c // 8)),
    ("topoDualSocketSubNumaPerSocketHTMonolithicUncore", 240, lambda c: (c % 120, c % 120 // 60, c % 120 // 30, c % 120 // 60)),
    ("topoDualSocketSingleNumaPerSocketSMTUncore", 384, lambda c: (c % 192, c % 192 // 96, c % 192 // 96, c % 192 // 8)),
    ("kep4800Example", 32, lambda c: (c, 0, 0, c // 8)),
]


def test_every_machine_file_is_checked() -> None:
    """Every file in fixtures/machines has a row here (the quad-socket one has its own test)."""
    names = {p.stem for p in MACHINES.glob("*.yaml")}
    assert names == {name for name, _, _ in KUBELET} | {"topoQuadSocketFourWayHT"}


@pytest.mark.parametrize(("name", "n_cpus", "row"), KUBELET, ids=[k[0] for k in KUBELET])
def test_kubelet_fixture_rows(name: str, n_cpus: int, row: Row) -> None:
    """Each CPU sits on the core, socket, NUMA node and L3 group the kubelet fixture says."""
    topo = load_machine(MACHINES / f"{name}.yaml")
    assert str(topo.online) == f"0-{n_cpus - 1}"
    assert [(c.core, c.socket, c.numa, c.l3) for c in topo.cpus] == [row(c) for c in range(n_cpus)]
    assert topo.notes == ()


@pytest.mark.parametrize(
    ("name", "sockets", "nodes", "cores", "threads", "l3_groups"),
    [
        ("topoDualSocketHT", 2, 2, 6, 2, 1),
        ("topoDualSocketMultiNumaPerSocketHT", 2, 4, 40, 2, 1),
        ("fakeTopoMultiSocketDualSocketPerNumaHT", 4, 2, 40, 2, 1),
        ("topoDualSocketMultiNumaPerSocketHTLarge", 2, 8, 128, 2, 1),
        ("topoDualSocketSingleNumaPerSocketSMTUncore", 2, 2, 192, 2, 24),
        ("topoQuadSocketFourWayHT", 4, 4, 72, 4, 1),
    ],
)
def test_kubelet_fixture_shapes(name: str, sockets: int, nodes: int, cores: int, threads: int, l3_groups: int) -> None:
    """Counts of sockets, NUMA nodes, cores, threads per core and L3 groups."""
    topo = load_machine(MACHINES / f"{name}.yaml")
    shape = (len(topo.sockets), len(topo.numa_nodes), len(topo.cores), topo.threads_per_core, len(topo.l3_groups))
    assert shape == (sockets, nodes, cores, threads, l3_groups)


def test_quad_socket_core_groups() -> None:
    """topoQuadSocketFourWayHT keeps the kubelet's core ids and thread groups; NUMA = socket."""
    topo = load_machine(MACHINES / "topoQuadSocketFourWayHT.yaml")
    assert str(topo.cores[0]) == "0,109,169,229"
    assert str(topo.cores[64]) == "1,13,25,38"
    assert str(topo.cores[63]) == "37,108,168,228"
    assert str(topo.cores[62]) == "107,167,227,287"
    assert {c.socket for c in topo.cpus if c.core in (63, 62, 70)} == {3}
    assert all(c.numa == c.socket for c in topo.cpus)
    assert all(len(s) == 72 for s in topo.sockets.values())


# --- synthetic machines -------------------------------------------------------------


def test_synthetic_far_siblings() -> None:
    """2 sockets x 2 NUMA x 2 L3 x 4 cores x 2 threads, Intel-style numbering."""
    topo = synthetic(sockets=2, numa_per_socket=2, l3_per_numa=2, cores_per_l3=4, threads_per_core=2)
    assert len(topo.online) == 64
    assert str(topo.sockets[0]) == "0-15,32-47"
    assert str(topo.node[1].cpus) == "8-15,40-47"
    assert str(topo.l3_groups[0]) == "0-3,32-35"
    assert str(topo.cores[5]) == "5,37"
    assert topo.node[0].distance == (10, 11, 21, 21)
    assert topo.node[3].memory_bytes == 16 * GIB


def test_synthetic_adjacent_siblings() -> None:
    """Adjacent numbering puts a core's threads next to each other."""
    topo = synthetic(sockets=2, cores_per_l3=3, threads_per_core=2, siblings="adjacent")
    assert str(topo.cores[0]) == "0-1"
    assert str(topo.sockets[1]) == "6-11"
    assert topo.node[1].distance == (21, 10)


shapes = st.fixed_dictionaries(
    {
        "sockets": st.integers(1, 3),
        "numa_per_socket": st.integers(1, 3),
        "l3_per_numa": st.integers(1, 2),
        "cores_per_l3": st.integers(1, 4),
        "threads_per_core": st.integers(1, 4),
        "siblings": st.sampled_from(["adjacent", "far"]),
    }
)


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_synthetic_partitions(shape: dict[str, object]) -> None:
    """Every online CPU is in exactly one core, socket, NUMA node and L3 group."""
    topo = synthetic(**shape)  # type: ignore[arg-type]
    for groups in (topo.cores, topo.sockets, topo.l3_groups, {n.id: n.cpus for n in topo.numa_nodes}):
        assert sum(len(g) for g in groups.values()) == len(topo.online)
        union = CPUSet()
        for g in groups.values():
            union |= g
        assert union == topo.online


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_machine_dict_roundtrip(shape: dict[str, object]) -> None:
    """machine_to_dict, through YAML text, reads back as the same Topology."""
    topo = synthetic(**shape)  # type: ignore[arg-type]
    assert machine_from_dict(machine_to_dict(topo)) == topo
    assert machine_from_dict(yaml.safe_load(machine_to_yaml(topo))) == topo


@settings(max_examples=40, deadline=None)
@given(shapes)
def test_topology_json_roundtrip(shape: dict[str, object]) -> None:
    """The `topology --json` form, through JSON text, loads back as the same Topology."""
    topo = synthetic(**shape)  # type: ignore[arg-type]
    assert machine_from_dict(json.loads(json.dumps(topology_to_json(topo)))) == topo


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes)
def test_sysfs_tree_roundtrip(tmp_path_factory: pytest.TempPathFactory, shape: dict[str, object]) -> None:
    """Discovery of a written sysfs tree gives back the machine that was written."""
    topo = synthetic(**shape)  # type: ignore[arg-type]
    root = tmp_path_factory.mktemp("sys")
    assert read_topology(write_sysfs_tree(topo, root)) == topo


def test_sysfs_tree_roundtrip_offline_isolated_hugepages(tmp_path: Path) -> None:
    """Offline and isolated CPUs, memory-only nodes and hugepages survive the tree."""
    doc = {
        "cpus": [{"id": c, "core": c // 2, "socket": 0, "numa": 0, "l3": 0} for c in range(4)],
        "numa": {"0": {"memory": "4Gi", "distance": [10, 17], "hugepages": {"2Mi": 8}},
                 "1": {"memory": "64Gi", "distance": [17, 10]}},
        "offline": "4-5",
        "isolated": "2-3",
    }
    topo = machine_from_dict(doc)
    assert str(topo.node[1].cpus) == ""
    assert dict(topo.node[0].hugepages) == {2 << 20: 8}
    assert read_topology(write_sysfs_tree(topo, tmp_path)) == topo


@pytest.mark.parametrize("kind", ["json", "yaml"])
def test_kubelet_fixture_json_roundtrip_keeps_groups(kind: str, tmp_path: Path) -> None:
    """Saved as JSON (core ids renumbered by lowest CPU), a machine keeps every grouping."""
    topo = load_machine(MACHINES / "topoQuadSocketFourWayHT.yaml")
    path = tmp_path / f"m.{kind}"
    path.write_text(json.dumps(topology_to_json(topo)))
    back = load_machine(path)
    assert sorted(map(str, back.cores.values())) == sorted(map(str, topo.cores.values()))
    assert back.sockets == topo.sockets
    assert [n.cpus for n in back.numa_nodes] == [n.cpus for n in topo.numa_nodes]
    assert topology_to_json(back) == topology_to_json(topo)


# --- bad files ------------------------------------------------------------------------

ROW = {"id": 0, "core": 0, "socket": 0, "numa": 0}


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([1, 2], "a machine must be a mapping"),
        ({"numa": {}}, "needs a 'cpus' list"),
        ({"cpus": []}, "'cpus' must be a non-empty list"),
        ({"cpus": [ROW, {"id": 1, "socket": 0, "numa": 0}]}, "cpus[1]: missing key 'core'"),
        ({"cpus": [ROW, {**ROW, "core": 1}]}, "CPU 0 has two rows"),
        ({"cpus": [{**ROW, "id": -1}]}, "cpus[0].id: expected a non-negative integer"),
        ({"cpus": [{**ROW, "socket": "one"}]}, "cpus[0].socket"),
        ({"cpus": [{**ROW, "sockett": 0}]}, "unknown key cpus[0].'sockett'"),
        ({"cpus": [ROW, {"id": 1, "core": 0, "socket": 1, "numa": 0}]}, "core 0 spans CPUs 0"),
        ({"cpus": [{**ROW, "l3": 0}, {**ROW, "id": 1, "core": 1}]}, "'l3' must be given for every CPU or for none"),
        ({"cpus": [ROW], "numa": {"0": {"memory": "8Gx"}}}, "numa.0.memory: invalid quantity '8Gx'"),
        ({"cpus": [ROW], "numa": {"0": {"memory": "1.5"}}}, "numa.0.memory: invalid size"),
        ({"cpus": [ROW], "numa": {"0": {"distance": "10 20"}}}, "numa.0.distance: must be a list"),
        ({"cpus": [ROW], "numa": {"zero": {}}}, "numa.zero (node id)"),
        ({"cpus": [ROW], "numa": {"0": {"mem": 1}}}, "numa.0: unknown key 'mem'"),
        ({"cpus": [ROW], "offline": "0"}, "offline: CPUs 0 also have a row"),
        ({"cpus": [ROW], "isolated": "x"}, "isolated: invalid CPU/node list"),
        ({"cpus": [ROW], "extra": 1}, "unknown key 'extra'"),
    ],
)
def test_bad_rows_name_the_row_or_key(doc: object, fragment: str) -> None:
    """A bad explicit machine is a TopologyError naming the source and the bad row or key."""
    with pytest.raises(TopologyError) as info:
        machine_from_dict(doc, "m.yaml")
    assert str(info.value).startswith("m.yaml: ")
    assert fragment in str(info.value)


def _json_doc(**changes: object) -> dict[str, object]:
    doc = topology_to_json(synthetic(sockets=2, cores_per_l3=2, threads_per_core=1))
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        (_json_doc(sockets={"0": "0-2", "1": "2-3"}), "sockets: CPU 2 is in both 0 and 1"),
        (_json_doc(cores=["0", "1", "2"]), "cores: online CPUs 3 are in none"),
        (_json_doc(l3_groups=["0-1", "2-4"]), "l3_groups: CPUs 4 are not online"),
        (_json_doc(numa_nodes=[]), "numa_nodes: must be a mapping"),
        (_json_doc(cores="0-3"), "cores: must be a list of CPU lists"),
        (_json_doc(colour="blue"), "unknown key 'colour'"),
    ],
)
def test_bad_json_form_names_the_key(doc: object, fragment: str) -> None:
    """A bad topology-JSON machine is a TopologyError naming the key and the CPUs."""
    with pytest.raises(TopologyError, match="m.json: ") as info:
        machine_from_dict(doc, "m.json")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        ("missing.yaml", None, "cannot read machine file"),
        ("bad.yaml", "cpus: [", "not valid YAML"),
        ("bad.json", "{", "not valid JSON"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, text: str | None, fragment: str) -> None:
    """Unreadable or unparsable files are TopologyErrors naming the file."""
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(TopologyError, match=fragment) as info:
        load_machine(path)
    assert str(path) in str(info.value)


def test_quantities_and_defaults_in_files(tmp_path: Path) -> None:
    """Memory takes Kubernetes quantities; without l3 each socket is one L3 group, noted."""
    path = tmp_path / "m.yaml"
    path.write_text(
        "cpus:\n"
        "  - {id: 0, core: 0, socket: 0, numa: 0}\n"
        "  - {id: 1, core: 1, socket: 1, numa: 1, die: 1}\n"
        "numa:\n"
        '  "0": {memory: 512Mi, distance: [10, 21]}\n'
        "  1: {memory: 1G}\n"
    )
    topo = load_machine(path)
    assert topo.node[0].memory_bytes == 512 << 20
    assert topo.node[1].memory_bytes == 10**9
    assert [str(g) for g in topo.l3_groups.values()] == ["0", "1"]
    assert topo.by_id[1].die == 1
    assert topo.notes == ("no l3 given: one L3 group per socket",)


def test_discovered_machine_roundtrips_through_json() -> None:
    """A machine discovered from sysfs and saved as JSON loads back equal (sparse node ids too)."""
    for dump in ("48amd64-4pa2n6c-sparse.tar.bz2", "offline-cpu0-node0.tar.bz2"):
        topo = read_topology(SYSFS_DUMPS / dump)
        assert machine_from_dict(json.loads(json.dumps(topology_to_json(topo)))) == topo
        assert machine_from_dict(machine_to_dict(topo)) == topo

