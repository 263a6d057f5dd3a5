"""Resident memory of a real ``nri-podres run`` daemon: idle, and with 500 containers placed.

The daemon runs as its own process on a machine file (768 CPUs, 24 NUMA nodes) and
connects to a fake runtime built on our own codecs (tests/protocol/fake_runtime.py)
listening on a Unix socket. Two daemons:

* "events": registers and synchronizes with nothing (idle), then gets
  RunPodSandbox + CreateContainer for the pods of the workload mix until 500
  containers are placed;
* "restart": gets the same 500 containers in its first Synchronize.

RSS is VmRSS of /proc/<pid>/status (VmHWM: the peak); the checkpoint writer is
given time to finish first.

    python benchmarks/bench_memory.py [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from timing import Results, percentile  # noqa: E402
from workload import container_pb, machine, pod_pb, pods_with_containers  # noqa: E402

from nri_podres._proto import api_pb2 as pb  # noqa: E402
from nri_podres.machine import machine_to_yaml  # noqa: E402
from tests.protocol.fake_runtime import FakeRuntime  # noqa: E402

MACHINE = "768/24N"
CONTAINERS = 500
MIB = 1 << 20


def proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(key)


def cpu_ms(pid: int) -> float:
    """utime + stime of a process (clock ticks; 10 ms resolution on most kernels)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> tuple[float, float]:
    return proc_status_kib(pid, "VmRSS") / 1024, proc_status_kib(pid, "VmHWM") / 1024


class Runtime:
    """The listening side: one FakeRuntime per accepted daemon connection."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[FakeRuntime] = asyncio.Queue()
        self.pumps: list[asyncio.Task[None]] = []

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rt = FakeRuntime(reader, writer)
        self.pumps.append(asyncio.create_task(rt.pump()))
        await self.accepted.put(rt)


async def settle(seconds: float = 1.0) -> None:
    await asyncio.sleep(seconds)  # background checkpoint writes


async def one_daemon(tmp: Path, name: str, at_restart: bool) -> dict[str, float]:
    topo = machine(MACHINE)
    machine_file = tmp / "machine.yaml"
    machine_file.write_text(machine_to_yaml(topo))
    config = tmp / "config.toml"
    config.write_text('[cpu]\nreserved-cpus = ""\n\n[memory]\nreserved = {}\n')
    sock = tmp / f"{name}.sock"
    state_dir = tmp / f"{name}-state"
    state_dir.mkdir()
    runtime = Runtime()
    server = await asyncio.start_unix_server(runtime.accept, str(sock))
    argv = [sys.executable, "-m", "nri_podres", "run", "--socket", str(sock), "--machine", str(machine_file),
            "--config", str(config), "--state-dir", str(state_dir), "--admin-socket", str(tmp / f"{name}.admin"),
            "--no-metrics", "--log-format", "json", "--log-level", "warning"]
    log_file = (tmp / f"{name}.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO)
    out: dict[str, float] = {}
    try:
        rt = await asyncio.wait_for(runtime.accepted.get(), 30)
        await asyncio.wait_for(rt.registered, 10)
        await rt.call("Configure", pb.ConfigureRequest(runtime_name="containerd", runtime_version="1.7.24~ds1"))
        specs = pods_with_containers(CONTAINERS, prefix="m")
        if at_restart:
            request = pb.SynchronizeRequest(pods=[pod_pb(s.pod) for s in specs],
                                            containers=[container_pb(c) for s in specs for c in s.containers])
            await settle()
            c0, t0 = cpu_ms(proc.pid), time.perf_counter()
            reply = await rt.call("Synchronize", request, timeout_s=60)
            out["sync_ms"] = (time.perf_counter() - t0) * 1000
            out["sync_cpu_ms"] = cpu_ms(proc.pid) - c0
            assert reply.code == 0, reply.message
        else:
            assert (await rt.call("Synchronize", pb.SynchronizeRequest())).code == 0
            await settle()
            out["idle_rss_mib"], _ = rss_mib(proc.pid)
            create_ms: list[float] = []
            for spec in specs:
                pod = pod_pb(spec.pod)
                reply = await rt.call("RunPodSandbox", pb.RunPodSandboxRequest(pod=pod))
                if reply.code == 12:  # UNIMPLEMENTED on a 1.7 runtime: the 0.6.1 StateChange form
                    reply = await rt.call("StateChange", pb.StateChangeEvent(event=pb.RUN_POD_SANDBOX, pod=pod))
                assert reply.code == 0, reply.message
                for ctr in spec.containers:
                    request = pb.CreateContainerRequest(pod=pod, container=container_pb(ctr))
                    t0 = time.perf_counter()
                    reply = await rt.call("CreateContainer", request)
                    create_ms.append((time.perf_counter() - t0) * 1000)
                    assert reply.code == 0, reply.message
            late = sorted(create_ms[-100:])
            out["late_create_median_ms"], out["late_create_p99_ms"] = statistics.median(late), percentile(late, 0.99)
        await settle()
        out["loaded_rss_mib"], out["peak_rss_mib"] = rss_mib(proc.pid)
        return out
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log_file.close()
        server.close()
        for task in runtime.pumps:
            task.cancel()


def baseline_rss_mib() -> float:
    """A bare interpreter that imported the daemon's modules: the floor under any Python daemon."""
    code = ("import nri_podres.daemon, nri_podres.commands.run, sys, pathlib;"
            "print([l for l in pathlib.Path('/proc/self/status').read_text().splitlines() if l.startswith('VmRSS')][0])")
    line = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    return int(line.split()[1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the numbers here (for benchmarks/summary.py)")
    args = parser.parse_args()
    results = Results("memory")
    with tempfile.TemporaryDirectory(prefix="nri-podres-mem-") as tmp_text:
        events = asyncio.run(one_daemon(Path(tmp_text), "events", at_restart=False))
        restart = asyncio.run(one_daemon(Path(tmp_text), "restart", at_restart=True))
    base = baseline_rss_mib()
    print(f"Daemon resident memory on a {MACHINE} machine file, MiB (VmRSS; peak VmHWM)")
    print(f"  interpreter + daemon modules imported, nothing running: {base:6.1f}")
    print(f"  idle (registered, synchronized, 0 containers):           {events['idle_rss_mib']:6.1f}")
    print(f"  {CONTAINERS} containers placed by CreateContainer:               "
          f"{events['loaded_rss_mib']:6.1f}  (peak {events['peak_rss_mib']:.1f})")
    print(f"  {CONTAINERS} containers from one Synchronize:                    "
          f"{restart['loaded_rss_mib']:6.1f}  (peak {restart['peak_rss_mib']:.1f}; "
          f"Synchronize answered in {restart['sync_ms']:.0f} ms over the socket, "
          f"{restart['sync_cpu_ms']:.0f} ms of the daemon's CPU time)")
    print(f"  CreateContainer round trip to the daemon, the last 100 (400-500 containers placed): "
          f"median {events['late_create_median_ms']:.2f} ms, p99 {events['late_create_p99_ms']:.2f} ms")
    results.put("late_create_median_ms", events["late_create_median_ms"])
    results.put("late_create_p99_ms", events["late_create_p99_ms"])
    results.put("baseline_rss_mib", base)
    results.put("idle_rss_mib", events["idle_rss_mib"])
    results.put("loaded_rss_mib", events["loaded_rss_mib"])
    results.put("loaded_peak_rss_mib", events["peak_rss_mib"])
    results.put("sync_loaded_rss_mib", restart["loaded_rss_mib"])
    results.put("sync_peak_rss_mib", restart["peak_rss_mib"])
    results.put("sync_socket_ms", restart["sync_ms"])
    results.put("sync_socket_cpu_ms", restart["sync_cpu_ms"])
    results.write(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
