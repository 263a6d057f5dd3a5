"""Decision time of every lifecycle event on large synthetic machines, 0 / 250 / 500 pods placed.

Machines: 2 sockets with 768 CPUs split into 8, 24 or 64 NUMA nodes, and 4096 CPUs
(16 nodes). Background pods: the mix of benchmarks/workload.py (the design's example
pod, small budget pods, ordinary pods). On top of that background a new example pod
goes through its life: RunPodSandbox, CreateContainer (the 6-CPU exclusive container,
then a sidecar), StopContainer + RemoveContainer of the exclusive one, RemovePodSandbox;
plus CreateContainer of an ordinary pod and a reconcile (Synchronize after a restart)
of everything placed. The policy functions are pure, so each call starts from the same
state and the numbers are per decision.

Last, "Synchronize of 500 containers" through the plugin handler
(``PodresPlugin.synchronize`` with protobuf pods and containers, as the daemon gets
them, JSON logging to /dev/null), after a restart (checkpoint) and without one.

    python benchmarks/bench_decisions.py [--quick] [--json FILE]

Cells are "median / p99" in milliseconds (wall clock); the counts of calls are printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from timing import Results, Stats, measure  # noqa: E402
from workload import MACHINES, PodSpec, container_pb, db_pod, machine, ordinary_pod, pod_mix, pod_pb, pods_with_containers  # noqa: E402

from nri_podres import log, policy  # noqa: E402
from nri_podres.config import Config  # noqa: E402
from nri_podres.errors import AdmissionError  # noqa: E402
from nri_podres.plugin import PodresPlugin  # noqa: E402
from nri_podres.resources import ContainerInfo  # noqa: E402
from nri_podres.state import State  # noqa: E402
from nri_podres.topology import Topology  # noqa: E402

POD_COUNTS = (0, 250, 500)
SYNC_CONTAINERS = 500
OPS = (
    "run_pod (8-CPU bubble)",
    "create_container (6 exclusive)",
    "create_container (sidecar)",
    "create_container (ordinary pod)",
    "stop_container (exclusive)",
    "remove_container (exclusive)",
    "remove_pod (8-CPU bubble)",
    "reconcile (all placed, checkpoint)",
)


def populate(topo: Topology, cfg: Config, state: State, specs: list[PodSpec]) -> tuple[State, int]:
    """Place the pods' sandboxes and containers; returns the state and how many were refused."""
    refused = 0
    for spec in specs:
        try:
            state = policy.run_pod(topo, cfg, state, spec.pod).state
            for ctr in spec.containers:
                state = policy.create_container(topo, cfg, state, spec.pod, ctr).state
        except AdmissionError:
            refused += 1
    return state, refused


def runtime_view(state: State) -> tuple[list, list[ContainerInfo]]:
    """What a runtime reports after a restart: every pod, every container with its cpuset."""
    pods = [r.info for r in state.pods.values()]
    ctrs = []
    for c in state.containers.values():
        pod = state.pods[c.pod_id].info
        ctrs.append(ContainerInfo(c.id, c.pod_id, c.name, {}, pod.cpu_shares, pod.cpu_quota, pod.cpu_period,
                                  pod.memory_limit_bytes, c.assignment.cpus, c.assignment.mems))
    return pods, ctrs


def lifecycle(topo: Topology, cfg: Config, background: State, calls: int, reconcile_calls: int) -> dict[str, Stats]:
    """Time each event of a new example pod's life on top of ``background``."""
    db = db_pod("new-db")
    database, sidecar1, sidecar2 = db.containers
    ordinary = ordinary_pod("new-web")

    def step(fn: Callable[[], object]) -> State:
        return fn().state  # type: ignore[attr-defined]

    s_run = step(lambda: policy.run_pod(topo, cfg, background, db.pod))
    s_x = step(lambda: policy.create_container(topo, cfg, s_run, db.pod, database))
    s_sc1 = step(lambda: policy.create_container(topo, cfg, s_x, db.pod, sidecar1))
    s_full = step(lambda: policy.create_container(topo, cfg, s_sc1, db.pod, sidecar2))
    s_stopped = step(lambda: policy.stop_container(topo, cfg, s_full, database.id))
    s_removed = step(lambda: policy.remove_container(topo, cfg, s_stopped, database.id))
    s_empty = s_removed
    for c in (sidecar1, sidecar2):
        s_empty = step(lambda c=c: policy.remove_container(topo, cfg, s_empty, c.id))
    s_ord = step(lambda: policy.run_pod(topo, cfg, background, ordinary.pod))
    pods, ctrs = runtime_view(background)

    cases: dict[str, tuple[Callable[[], object], int]] = {
        OPS[0]: (lambda: policy.run_pod(topo, cfg, background, db.pod), calls),
        OPS[1]: (lambda: policy.create_container(topo, cfg, s_run, db.pod, database), calls),
        OPS[2]: (lambda: policy.create_container(topo, cfg, s_x, db.pod, sidecar1), calls),
        OPS[3]: (lambda: policy.create_container(topo, cfg, s_ord, ordinary.pod, ordinary.containers[0]), calls),
        OPS[4]: (lambda: policy.stop_container(topo, cfg, s_full, database.id), calls),
        OPS[5]: (lambda: policy.remove_container(topo, cfg, s_stopped, database.id), calls),
        OPS[6]: (lambda: policy.remove_pod(topo, cfg, s_empty, db.pod.id), calls),
        OPS[7]: (lambda: policy.reconcile(topo, cfg, pods, ctrs, background), reconcile_calls),
    }
    return {name: measure(fn, n) for name, (fn, n) in cases.items()}


def plugin_synchronize(topo: Topology, cfg: Config, calls: int) -> dict[str, Stats]:
    """Synchronize of SYNC_CONTAINERS containers through PodresPlugin, protobuf in and out."""
    specs = pods_with_containers(SYNC_CONTAINERS, prefix="s")
    state, refused = populate(topo, cfg, State.empty(), specs)
    assert not refused, f"{refused} pods refused while building the Synchronize state"
    placed = state.assignments()
    pods = [pod_pb(s.pod) for s in specs]
    ctrs = [container_pb(c, placed.get(c.id)) for s in specs for c in s.containers]
    assert len(ctrs) == SYNC_CONTAINERS
    checkpoint = state.to_json()

    def fresh(with_checkpoint: bool) -> Callable[[], PodresPlugin]:
        return lambda: PodresPlugin(topo, cfg, checkpoint=checkpoint if with_checkpoint else None)

    def sync(plugin: PodresPlugin) -> None:
        plugin.synchronize(pods, ctrs)

    return {
        "restart (checkpoint)": measure(sync, calls, setup=fresh(True)),  # type: ignore[arg-type]
        "no checkpoint": measure(sync, calls, setup=fresh(False)),  # type: ignore[arg-type]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--json", help="also write the numbers here (for benchmarks/summary.py)")
    parser.add_argument("--machines", default=",".join(MACHINES), help="comma-separated labels (default: all)")
    args = parser.parse_args()
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    log.configure_logging("json", "info", stream=devnull)
    cfg = Config()
    labels = args.machines.split(",")
    results = Results("decisions")
    table: dict[tuple[str, int], dict[str, Stats]] = {}
    sync_table: dict[str, dict[str, Stats]] = {}
    counts: dict[str, str] = {}
    started = time.perf_counter()
    for label in labels:
        topo = machine(label)
        big = len(topo.online) > 1024
        calls = (30 if big else 100) if args.quick else (150 if big else 400)
        reconcile_calls = 3 if args.quick or big else 8
        sync_calls = 3 if args.quick else (5 if big else 10)
        counts[label] = f"{calls} calls per event, {reconcile_calls} reconciles, {sync_calls} Synchronizes"
        state, placed, t0 = State.empty(), 0, time.perf_counter()
        for n_pods in POD_COUNTS:
            state, refused = populate(topo, cfg, state, list(pod_mix(placed, n_pods - placed)))
            placed = n_pods
            if refused:
                print(f"  note: {label}: {refused} background pods refused while placing {n_pods}", file=sys.stderr)
            table[(label, n_pods)] = lifecycle(topo, cfg, state, calls, reconcile_calls)
            print(f"  {label}, {n_pods} pods ({len(state.containers)} containers): done "
                  f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        sync_table[label] = plugin_synchronize(topo, cfg, sync_calls)
        for n_pods in POD_COUNTS:
            for op, st in table[(label, n_pods)].items():
                results.put(f"{label}|{n_pods}|{op}", st)
        for case, st in sync_table[label].items():
            results.put(f"{label}|sync500|{case}", st)

    print("Decision time, ms: median / p99 (wall clock)\n")
    width = max(len(op) for op in OPS) + 10
    header = f"{'event':<{width}}" + "".join(f"{label:>18}" for label in labels)
    print(header)
    print("-" * len(header))
    for n_pods in POD_COUNTS:
        for op in OPS:
            row = f"{op + f' @{n_pods}':<{width}}"
            row += "".join(f"{table[(label, n_pods)][op].cell():>18}" for label in labels)
            print(row)
        print()
    print(f"Synchronize of {SYNC_CONTAINERS} containers through PodresPlugin.synchronize (protobuf), ms:")
    for case in ("restart (checkpoint)", "no checkpoint"):
        row = f"{'  ' + case:<{width}}" + "".join(f"{sync_table[label][case].cell():>18}" for label in labels)
        print(row)
    print("\nCPU time of the same calls (thread time, median / p99): the plugin's own cost on a busy machine")
    for n_pods in POD_COUNTS:
        for op in OPS:
            row = f"{op + f' @{n_pods}':<{width}}"
            row += "".join(f"{table[(label, n_pods)][op].cpu_cell():>18}" for label in labels)
            print(row)
        print()
    for case in ("restart (checkpoint)", "no checkpoint"):
        row = f"{'  Synchronize 500, ' + case:<{width}}"
        row += "".join(f"{sync_table[label][case].cpu_cell():>18}" for label in labels)
        print(row)
    print("\nIterations:")
    for label, text in counts.items():
        print(f"  {label}: {text}")
    print(f"(total {time.perf_counter() - started:.0f} s)")
    results.write(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
