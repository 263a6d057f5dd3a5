"""Time topology discovery on a synthetic 1024-CPU sysfs tree (and a 768-CPU, 24-node one).

Run: python benchmarks/bench_topology.py
Prints the median of several reads per machine; the bar is "well under a second".
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from nri_podres.machine import synthetic, write_sysfs_tree
from nri_podres.sysfs import read_topology

MACHINES = {
    "1024 CPUs: 2 sockets x 4 NUMA x 2 L3 x 32 cores x 2 threads": {
        "sockets": 2, "numa_per_socket": 4, "l3_per_numa": 2, "cores_per_l3": 32, "threads_per_core": 2,
    },
    "768 CPUs: 2 sockets x 12 NUMA x 2 L3 x 8 cores x 2 threads": {
        "sockets": 2, "numa_per_socket": 12, "l3_per_numa": 2, "cores_per_l3": 8, "threads_per_core": 2,
    },
}
RUNS = 7


def main() -> None:
    for name, shape in MACHINES.items():
        topo = synthetic(**shape)  # type: ignore[arg-type]
        with tempfile.TemporaryDirectory() as tmp:
            root = write_sysfs_tree(topo, Path(tmp))
            assert read_topology(root) == topo  # warm the page cache; check it
            times = []
            for _ in range(RUNS):
                start = time.perf_counter()
                read_topology(root)
                times.append(time.perf_counter() - start)
        median_ms = statistics.median(times) * 1000
        print(f"{name}: discovery median {median_ms:.1f} ms, best {min(times) * 1000:.1f} ms ({RUNS} runs)")


if __name__ == "__main__":
    main()
