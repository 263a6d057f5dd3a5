"""End-to-end overhead against a real containerd: no plugin vs nri-podres vs the Go no-op plugin.

Brings up its own private containerd (tools/ctrd) in a work directory of its own, so
that it never touches the one the test suite uses:

    NRI_PODRES_BENCH_DIR            default /var/tmp/nri-podres-bench
    NRI_PODRES_BENCH_CGROUP_PARENT  default /nri-podres-bench

In alternating batches (round 1: none, nri-podres, Go; round 2: the same; ...) it
times the CRI RunPodSandbox and CreateContainer calls of small burstable pods (100m
request, no limit: the node is 2 CPUs and must never run out), the way a kubelet
makes them. A plugin runs only during its own batch (started, waited for until it
has synchronized, stopped after); the pods of a batch are removed after it. Prints
the medians per variant, each plugin's overhead over "no plugin" (difference of
medians, and median of the per-round differences) and the ratio of the overheads.

A sub-millisecond difference between two plugins drowns in the runtime's own
variance (a CreateContainer takes ~20 ms here, give or take several). So a second
phase puts each plugin behind ``wire_probe.py``, a relay on the NRI socket, and
times the plugin's own share of every call (request handed over -> answer back)
in alternating batches: the same measure for both plugins, without the runtime's noise.

    python benchmarks/bench_e2e.py [--rounds 6] [--calls 10] [--wire-rounds 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from cri import Cri  # noqa: E402
from timing import Results, percentile  # noqa: E402

WORK_DIR = Path(os.environ.get("NRI_PODRES_BENCH_DIR", "/var/tmp/nri-podres-bench"))
CGROUP_PARENT = os.environ.get("NRI_PODRES_BENCH_CGROUP_PARENT", "/nri-podres-bench")
CTRD = REPO / "tools" / "ctrd"
GO_BUILD = HERE / "go-noop-plugin" / "build.sh"
LABEL = {"nri-podres-bench": "e2e"}
VARIANTS = ("no plugin", "nri-podres", "Go no-op plugin")
PY_NOOP = "Python no-op"  # our own stack deciding nothing: wire phase only
PY_CPUSET = "Python, fixed cpuset"  # the same, answering every CreateContainer with a cpuset
WIRE_VARIANTS = ("nri-podres", PY_NOOP, "Go no-op plugin")
WIRE_SHORT = {"nri-podres": "podres", PY_NOOP: "pynoop", "Go no-op plugin": "go"}
NRI_SOCKET = WORK_DIR / "nri" / "nri.sock"
WIRE_CALLS = {"CreateContainer": "CreateContainer", "RunPodSandbox": "StateChange/RUN_POD_SANDBOX"}
PODRES_CONFIG = '[cpu]\nreserved-cpus = ""\n\n[memory]\nreserved = {}\n'


def tool(script: Path, *args: str, timeout_s: float = 900) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "NRI_PODRES_E2E_DIR": str(WORK_DIR),
           "NRI_PODRES_E2E_CGROUP_PARENT": CGROUP_PARENT}
    proc = subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    for line in (proc.stdout + proc.stderr).strip().splitlines():
        print(f"  {line}", file=sys.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{script.name} {' '.join(args)} exited {proc.returncode}")


class PluginProcess:
    """A plugin running for one batch; its output goes to a log file."""

    def __init__(self, argv: Sequence[str], log_path: Path) -> None:
        self.log_path = log_path
        self.offset = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as out:
            self.proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=REPO)

    def wait_for(self, event: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[self.offset:].decode(errors="replace")
            for line in text.splitlines():
                if line.startswith("{") and json.loads(line).get("event") == event:
                    return
            if self.proc.poll() is not None:
                raise SystemExit(f"plugin exited ({self.proc.returncode}) before {event}:\n{text[-2000:]}")
            time.sleep(0.02)
        raise SystemExit(f"plugin: no {event} within {timeout_s} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Samples:
    run_pod_ms: list[float] = field(default_factory=list)
    create_ms: list[float] = field(default_factory=list)
    round_medians: list[tuple[float, float]] = field(default_factory=list)  # (run pod, create) per round


def start_plugin(variant: str, tmp: Path, go_binary: Path, nri_socket: Path = NRI_SOCKET) -> PluginProcess | None:
    if variant == "nri-podres":
        config = tmp / "config.toml"
        config.write_text(PODRES_CONFIG)
        state = tmp / "state"
        state.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "nri_podres", "run", "--socket", str(nri_socket), "--no-metrics",
                "--admin-socket", str(tmp / "admin.sock"), "--state-dir", str(state), "--config", str(config),
                "--log-format", "json"]
        plugin = PluginProcess(argv, tmp / "nri-podres.log")
    elif variant in (PY_NOOP, PY_CPUSET):
        argv = [sys.executable, str(HERE / "py_noop_plugin.py"), "--socket", str(nri_socket)]
        if variant == PY_CPUSET:  # every online CPU: a burstable pod loses nothing
            argv += ["--cpus", ",".join(map(str, sorted(os.sched_getaffinity(0)))), "--mems", "0"]
        plugin = PluginProcess(argv, tmp / "py-noop.log")
    elif variant == "Go no-op plugin":
        argv = [str(go_binary), "-socket", str(nri_socket), "-name", "go-noop", "-idx", "50"]
        plugin = PluginProcess(argv, tmp / "go-noop.log")
    else:
        return None
    plugin.wait_for("plugin_synchronized")
    return plugin


def batch(cri: Cri, round_no: int, variant: str, calls: int, samples: Samples) -> None:
    run_ms, create_ms = [], []
    tag = "".join(ch for ch in variant.lower() if ch.isalnum())[:12]  # a valid pod name part
    for i in range(calls):
        t0 = time.perf_counter()
        pod = cri.run_pod(f"bench-{tag}-{round_no}-{i}", cpu_millis=100, cpu_limit_millis=0, labels=LABEL)
        t1 = time.perf_counter()
        cri.create_container(pod, "app", cpu_request_millis=100)
        t2 = time.perf_counter()
        run_ms.append((t1 - t0) * 1000)
        create_ms.append((t2 - t1) * 1000)
    samples.run_pod_ms += run_ms
    samples.create_ms += create_ms
    samples.round_medians.append((statistics.median(run_ms), statistics.median(create_ms)))
    cri.remove_all_pods(LABEL)


class WireProbe:
    """benchmarks/wire_probe.py in its own process: a plugin dials it instead of the runtime."""

    def __init__(self, tmp: Path) -> None:
        self.socket, self.out = tmp / "probe.sock", tmp / "probe.json"
        self.socket.unlink(missing_ok=True)
        argv = [sys.executable, str(HERE / "wire_probe.py"), "--listen", str(self.socket),
                "--upstream", str(NRI_SOCKET), "--out", str(self.out)]
        self.proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("wire probe did not start listening")
            time.sleep(0.02)

    def samples_ms(self) -> dict[str, list[float]]:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        return json.loads(self.out.read_text())


def wire_rounds(cri: Cri, tmp: Path, go_binary: Path, rounds: int, calls: int) -> dict[str, dict[str, list[float]]]:
    """Each plugin behind the probe, in alternating batches: its own share of each call, ms."""
    held: dict[str, dict[str, list[float]]] = {v: {c: [] for c in WIRE_CALLS} for v in WIRE_VARIANTS}
    for round_no in range(1, rounds + 1):
        order = WIRE_VARIANTS if round_no % 2 else tuple(reversed(WIRE_VARIANTS))
        for variant in order:
            probe = WireProbe(tmp)
            plugin = start_plugin(variant, tmp, go_binary, probe.socket)
            try:
                batch(cri, 1000 + round_no, variant, calls, Samples())
            finally:
                if plugin is not None:
                    plugin.stop()
            seen = probe.samples_ms()
            for call, key in WIRE_CALLS.items():
                held[variant][call] += seen.get(key, [])
        print(f"  wire round {round_no}/{rounds} done", file=sys.stderr)
    return held


def report_wire(held: dict[str, dict[str, list[float]]], results: Results) -> None:
    print("\nThe plugin's own share of each call, timed on the wire by a relay (request handed over ->"
          " answer back), ms:")
    print(f"{'call':<18}{'variant':<18}{'n':>5}{'median':>9}{'p90':>9}")
    for call in WIRE_CALLS:
        medians = {}
        for variant, calls in held.items():
            values = sorted(calls[call])
            if not values:
                continue
            medians[variant] = statistics.median(values)
            print(f"{call:<18}{variant:<18}{len(values):>5}{medians[variant]:>9.3f}{percentile(values, 0.9):>9.3f}")
            short = WIRE_SHORT[variant]
            results.put(f"wire|{call}|{short}_median_ms", medians[variant])
            results.put(f"wire|{call}|{short}_p90_ms", percentile(values, 0.9))
        if len(medians) == len(WIRE_VARIANTS):
            ratio = medians["nri-podres"] / medians["Go no-op plugin"]
            floor = medians[PY_NOOP] / medians["Go no-op plugin"]
            print(f"{call:<18}{'ratio nri-podres/Go':<23}{ratio:>9.2f}")
            print(f"{call:<18}{'ratio Python no-op/Go':<23}{floor:>9.2f}")
            results.put(f"wire|{call}|ratio", ratio)
            results.put(f"wire|{call}|pynoop_ratio", floor)


def alternating_rounds(cri: Cri, tmp: Path, go_binary: Path, variants: Sequence[str], rounds: int, calls: int,
                       phase: str, first_pod: int = 0) -> dict[str, Samples]:
    """CRI timings of each variant, in batches whose order flips every round; a plugin runs only in its batch."""
    samples = {v: Samples() for v in variants}
    for round_no in range(1, rounds + 1):
        order = variants if round_no % 2 else tuple(reversed(variants))
        for variant in order:
            plugin = start_plugin(variant, tmp, go_binary)
            try:
                batch(cri, first_pod + round_no, variant, calls, samples[variant])
            finally:
                if plugin is not None:
                    plugin.stop()
        print(f"  {phase} round {round_no}/{rounds} done", file=sys.stderr)
    return samples


def report_cpuset(samples: dict[str, Samples], results: Results) -> None:
    plain, pinned = samples[PY_NOOP].create_ms, samples[PY_CPUSET].create_ms
    diff = statistics.median(pinned) - statistics.median(plain)
    lo, hi = interval(pinned, plain)
    print(f"\nApplying a cpuset, CreateContainer at the CRI level ({len(plain)} calls each): no adjustment "
          f"{statistics.median(plain):.2f} ms, fixed cpuset {statistics.median(pinned):.2f} ms, "
          f"difference {diff:+.2f} ms (95% bootstrap interval [{lo:+.2f}, {hi:+.2f}])")
    results.put("cpuset|create_diff_ms", diff)
    results.put("cpuset|create_diff_ci_ms", [lo, hi])


def overheads(samples: dict[str, Samples], variant: str, index: int) -> tuple[float, float]:
    """(difference of medians, median of per-round differences) vs no plugin, ms."""
    def pick(s: Samples) -> list[float]:
        return s.run_pod_ms if index == 0 else s.create_ms

    diff = statistics.median(pick(samples[variant])) - statistics.median(pick(samples["no plugin"]))
    rounds = [a[index] - b[index] for a, b in zip(samples[variant].round_medians, samples["no plugin"].round_medians)]
    return diff, statistics.median(rounds)


def interval(a: list[float], b: list[float], resamples: int = 2000) -> tuple[float, float]:
    """95% bootstrap interval of median(a) - median(b): how far noise alone moves the overhead."""
    rng = random.Random(1)
    diffs = sorted(
        statistics.median(rng.choices(a, k=len(a))) - statistics.median(rng.choices(b, k=len(b)))
        for _ in range(resamples)
    )
    return percentile(diffs, 0.025), percentile(diffs, 0.975)


def report(samples: dict[str, Samples], results: Results) -> None:
    print(f"{'variant':<18}{'n':>5}{'RunPodSandbox med':>19}{'p90':>8}{'CreateContainer med':>21}{'p90':>8}")
    for variant, s in samples.items():
        run, create = sorted(s.run_pod_ms), sorted(s.create_ms)
        print(f"{variant:<18}{len(create):>5}{statistics.median(run):>19.2f}{percentile(run, 0.9):>8.2f}"
              f"{statistics.median(create):>21.2f}{percentile(create, 0.9):>8.2f}")
        results.put(f"{variant}|run_pod_median_ms", statistics.median(run))
        results.put(f"{variant}|create_median_ms", statistics.median(create))
        results.put(f"{variant}|n", len(create))
    print("\nOverhead vs no plugin, ms (difference of medians; median of per-round differences):")
    for index, call in enumerate(("RunPodSandbox", "CreateContainer")):
        ours = overheads(samples, "nri-podres", index)
        go = overheads(samples, "Go no-op plugin", index)
        ratio = ours[0] / go[0] if go[0] > 0 else float("nan")
        print(f"  {call:<16} nri-podres {ours[0]:+7.2f} ({ours[1]:+.2f})   Go no-op {go[0]:+7.2f} ({go[1]:+.2f})"
              f"   ratio nri-podres/Go {ratio:.2f}")
        key = "run_pod" if index == 0 else "create"
        base = samples["no plugin"].run_pod_ms if index == 0 else samples["no plugin"].create_ms
        for variant, short in (("nri-podres", "podres"), ("Go no-op plugin", "go")):
            mine = samples[variant].run_pod_ms if index == 0 else samples[variant].create_ms
            lo, hi = interval(mine, base)
            print(f"  {'':<16}   {variant} overhead, 95% bootstrap interval: [{lo:+.2f}, {hi:+.2f}] ms")
            results.put(f"{key}|overhead_{short}_ci_ms", [lo, hi])
        results.put(f"{key}|overhead_podres_ms", ours[0])
        results.put(f"{key}|overhead_go_ms", go[0])
        results.put(f"{key}|overhead_podres_rounds_ms", ours[1])
        results.put(f"{key}|overhead_go_rounds_ms", go[1])
        results.put(f"{key}|ratio", ratio)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="alternating end-to-end rounds (0: the wire phase only)")
    parser.add_argument("--calls", type=int, default=10, help="pods per batch")
    parser.add_argument("--wire-rounds", type=int, default=4, help="rounds with each plugin behind the timing relay")
    parser.add_argument("--cpuset-rounds", type=int, default=0,
                        help="rounds of a Python no-op plugin without and with a fixed cpuset answer (the runtime's cost of applying one)")
    parser.add_argument("--keep-running", action="store_true", help="leave the private containerd running")
    parser.add_argument("--json", help="also write the numbers here (for benchmarks/summary.py)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_e2e: needs root (containerd, runc, cgroups); skipped", file=sys.stderr)
        return 0
    print(f"private containerd in {WORK_DIR} (cgroup parent {CGROUP_PARENT})", file=sys.stderr)
    tool(CTRD / "setup.sh")
    tool(GO_BUILD)
    tool(CTRD / "containerd.sh", "stop", timeout_s=120)  # leftovers of an earlier run
    tool(CTRD / "containerd.sh", "start", timeout_s=120)
    results = Results("e2e")
    try:
        cri = Cri(WORK_DIR / "containerd.sock", WORK_DIR / "cri-stubs", log_root=WORK_DIR / "pod-logs",
                  cgroup_parent=CGROUP_PARENT)
        cri.wait_ready()
        results.put("runtime", cri.version())
        go_binary = WORK_DIR / "bin" / "go-noop-plugin"
        with tempfile.TemporaryDirectory(prefix="nri-podres-bench-") as tmp_text:
            tmp = Path(tmp_text)
            batch(cri, 0, "warm-up", args.calls, Samples())  # image, snapshotter and cgroup caches
            samples = alternating_rounds(cri, tmp, go_binary, VARIANTS, args.rounds, args.calls, "end-to-end")
            held = wire_rounds(cri, tmp, go_binary, args.wire_rounds, args.calls)
            # What applying a cpuset costs the runtime: one Python plugin answering with none vs a fixed one.
            pinned = alternating_rounds(cri, tmp, go_binary, (PY_NOOP, PY_CPUSET), args.cpuset_rounds, args.calls,
                                        "cpuset", first_pod=2000)
        if args.rounds:
            print(f"End to end on {cri.version()}, {args.rounds} rounds x {args.calls} pods per variant, "
                  "alternating; ms of the CRI call")
            report(samples, results)
        if args.wire_rounds:
            report_wire(held, results)
        if args.cpuset_rounds:
            report_cpuset(pinned, results)
        cri.close()
    finally:
        if not args.keep_running:
            tool(CTRD / "containerd.sh", "stop", timeout_s=120)
    results.write(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
