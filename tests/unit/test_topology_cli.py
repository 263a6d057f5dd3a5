"""`nri-podres topology`: the table and the JSON contract, from a machine file, a tarball and /sys."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nri_podres.cli import main

MACHINES = Path(__file__).resolve().parents[1] / "fixtures" / "machines"
from tests.support import SYSFS_DUMPS


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["topology", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_contract_for_a_machine_file(capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON form has exactly the documented keys and values for topoDualSocketHT."""
    code, out, _ = run(capsys, "--machine", str(MACHINES / "topoDualSocketHT.yaml"), "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["online_cpus"] == "0-11"
    assert doc["offline_cpus"] == ""
    assert doc["isolated_cpus"] == ""
    assert doc["threads_per_core"] == 2
    assert doc["sockets"] == {"0": "0,2,4,6,8,10", "1": "1,3,5,7,9,11"}
    assert doc["numa_nodes"]["1"] == {"cpus": "1,3,5,7,9,11", "memory_bytes": None, "distance": [], "hugepages": {}}
    assert doc["cores"] == ["0,6", "1,7", "2,8", "3,9", "4,10", "5,11"]
    assert doc["l3_groups"] == ["0-11"]


def test_json_for_a_tarball_with_memory_only_nodes(capsys: pytest.CaptureFixture[str]) -> None:
    """Memory-only nodes have "cpus": "" and their memory; isolated CPUs are listed."""
    code, out, _ = run(capsys, "--sysfs", str(SYSFS_DUMPS / "test-data-sample2.tar.xz"), "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["numa_nodes"]["5"]["cpus"] == ""
    assert doc["numa_nodes"]["5"]["memory_bytes"] == 133143986176
    assert doc["isolated_cpus"] == "4-7,60-63"
    assert doc["cores"][:2] == ["0,56", "1,57"]
    assert len(doc["l3_groups"]) == 2


def test_table_is_aligned_and_complete(capsys: pytest.CaptureFixture[str]) -> None:
    """The table shows sockets, NUMA nodes with memory, L3 groups, special CPUs and notes, aligned."""
    code, out, _ = run(capsys, "--sysfs", str(SYSFS_DUMPS / "offline-cpu0-node0.tar.bz2"), "--reserved-cpus", "4-5")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("Machine:        17 online CPUs: 2 sockets, 2 NUMA nodes, 17 cores (1 thread per core)")
    assert "Offline CPUs:   0-3,21-23 (7)" in lines
    assert "Reserved CPUs:  4-5 (2)" in lines
    numa_header = lines.index(next(line for line in lines if line.startswith("NUMA ")))
    header, node0, node1 = lines[numa_header : numa_header + 3]
    assert header.split() == ["NUMA", "#CPU", "CORES", "MEMORY", "HUGEPAGES", "DISTANCE", "CPUS"]
    assert node1.split()[:5] == ["1", "8", "8", "64.0", "GiB"]
    for col in ("#CPU", "CORES", "MEMORY", "CPUS"):
        start = header.index(col)
        assert node0[start] != " " and node1[start] != " " and node1[start - 1] == " "
    assert "Notes:" in lines
    assert any("cpuN/nodeM link" in line for line in lines)


def test_table_for_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    """The default source is /sys, and it shows this host's CPUs."""
    code, out, _ = run(capsys)
    assert code == 0
    assert f"{os.cpu_count()} online CPU" in out.splitlines()[0]


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        (["--machine", "/nonexistent/m.yaml"], 1, "/nonexistent/m.yaml: cannot read machine file"),
        (["--sysfs", "/nonexistent"], 1, "neither a directory nor a tarball"),
        (["--reserved-cpus", "x"], 2, "--reserved-cpus"),
    ],
)
def test_errors_go_to_stderr(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, fragment: str) -> None:
    """Bad input gives a one-line message on stderr and a non-zero exit, no traceback."""
    got, out, err = run(capsys, *argv)
    assert (got, out) == (code, "")
    assert fragment in err


def test_sysfs_and_machine_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    """--sysfs and --machine cannot be given together."""
    with pytest.raises(SystemExit):
        main(["topology", "--sysfs", "/sys", "--machine", "m.yaml"])
    assert "not allowed with" in capsys.readouterr().err
