"""Decision time of the allocator on a large synthetic machine.

2 sockets, 768 CPUs (384 cores x 2 threads), split into 8 or 24 NUMA nodes, with
250 pods already placed (each a 2-CPU bubble with one exclusive and one shared
container) plus 50 ordinary pods on the node shared pool. Every call starts from
the same state (the functions are pure), so the numbers are per decision.

    python benchmarks/bench_allocator.py [--calls N]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nri_podres import policy  # noqa: E402
from nri_podres.config import Config, MemoryConfig  # noqa: E402
from nri_podres.cpuset import CPUSet  # noqa: E402
from nri_podres.resources import ContainerInfo, PodInfo  # noqa: E402
from nri_podres.state import State  # noqa: E402
from nri_podres.topology import CPUInfo, NUMANode, Topology  # noqa: E402

GIB = 1 << 30
PERIOD = 100_000


def machine(nodes: int, cpus: int = 768, sockets: int = 2) -> Topology:
    cores = cpus // 2
    per_node = cores // nodes
    rows = []
    for c in range(cpus):
        core = c % cores
        numa = core // per_node
        rows.append(CPUInfo(id=c, core=core, socket=numa * sockets // nodes, numa=numa, l3=core // 8))
    return Topology.from_cpus(
        rows, [NUMANode(id=n, cpus=CPUSet(), memory_bytes=64 * GIB) for n in range(nodes)]
    )


def pod(pod_id: str, millis: int, memory_bytes: int, limit_millis: int | None = None) -> PodInfo:
    limit = millis if limit_millis is None else limit_millis
    return PodInfo(pod_id, pod_id, "bench", pod_id, {}, millis * 1024 // 1000,
                   limit * PERIOD // 1000, PERIOD, memory_bytes)


def ctr(p: PodInfo, ctr_id: str, millis: int | None) -> ContainerInfo:
    if millis is None:
        return ContainerInfo(ctr_id, p.id, ctr_id, {}, p.cpu_shares, p.cpu_quota, p.cpu_period,
                             p.memory_limit_bytes)
    return ContainerInfo(ctr_id, p.id, ctr_id, {}, millis * 1024 // 1000, millis * PERIOD // 1000,
                         PERIOD, GIB // 2)


def populate(topo: Topology, cfg: Config, n_pods: int) -> State:
    state = State.empty()
    for i in range(50):
        p = pod(f"web{i}", 250, GIB // 4, limit_millis=1000)
        state = policy.run_pod(topo, cfg, state, p).state
        state = policy.create_container(topo, cfg, state, p, ctr(p, f"web{i}-c", 250)).state
    for i in range(n_pods):
        p = pod(f"p{i}", 2000, GIB)
        state = policy.run_pod(topo, cfg, state, p).state
        state = policy.create_container(topo, cfg, state, p, ctr(p, f"p{i}-x", 1000)).state
        state = policy.create_container(topo, cfg, state, p, ctr(p, f"p{i}-sh", None)).state
    return state


def timed(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--pods", type=int, default=250)
    parser.add_argument("--gc-off", action="store_true", help="disable the cyclic GC while timing")
    args = parser.parse_args()
    if args.gc_off:
        gc.disable()
    cfg = Config(memory=MemoryConfig(reserved_bytes={}))
    print(f"{'NUMA':>4} {'decision':<44} {'median ms':>10} {'p99 ms':>8}")
    for nodes in (8, 24):
        topo = machine(nodes)
        t0 = time.perf_counter()
        state = populate(topo, cfg, args.pods)
        setup_s = time.perf_counter() - t0
        new_pod = pod("new", 4000, 2 * GIB)
        admitted = policy.run_pod(topo, cfg, state, new_pod).state
        existing = pod("p7", 2000, GIB)
        cases = {
            "create_container: shared, existing bubble":
                lambda: policy.create_container(topo, cfg, state, existing, ctr(existing, "n1", None)),
            "create_container: exclusive, new pod's bubble":
                lambda: policy.create_container(topo, cfg, admitted, new_pod, ctr(new_pod, "n2", 2000)),
            "create_container: pod never seen (admit+place)":
                lambda: policy.create_container(topo, cfg, state, new_pod, ctr(new_pod, "n3", 2000)),
            "run_pod: 4-CPU bubble (NUMA search)":
                lambda: policy.run_pod(topo, cfg, state, new_pod),
            "stop_container: exclusive slice back":
                lambda: policy.stop_container(topo, cfg, state, "p7-x"),
        }
        for name, fn in cases.items():
            median, p99 = timed(fn, args.calls)
            print(f"{nodes:>4} {name:<44} {median:>10.3f} {p99:>8.3f}")
        median, p99 = timed(lambda: _reconcile(topo, cfg, state), max(5, args.calls // 200))
        print(f"{nodes:>4} {'reconcile: 550 containers (with checkpoint)':<44} {median:>10.3f} {p99:>8.3f}")
        print(f"{nodes:>4} {'(setup: 300 pods, 550 containers placed)':<44} {setup_s * 1000:>10.1f}")
    return 0


def _reconcile(topo: Topology, cfg: Config, state: State) -> object:
    pods = [r.info for r in state.pods.values()]
    ctrs = [
        ContainerInfo(c.id, c.pod_id, c.name, {}, None, None, None, None,
                      c.assignment.cpus, c.assignment.mems)
        for c in state.containers.values()
    ]
    return policy.reconcile(topo, cfg, pods, ctrs, state)


if __name__ == "__main__":
    raise SystemExit(main())
