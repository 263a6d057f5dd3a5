"""A real ``nri-podres run`` process in front of a fake runtime (our codecs over a Unix socket)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nri_podres import admin
from nri_podres._proto import api_pb2 as pb
from tests.protocol.fake_runtime import FakeRuntime

REPO = Path(__file__).resolve().parents[2]
MACHINE = REPO / "examples" / "dual-socket-32cpu.yaml"  # 2 NUMA nodes x 16 CPUs, 64Gi each
GIB = 1 << 30
DEFAULT_CONFIG = '[cpu]\nreserved-cpus = "0"\n[topology]\npolicy = "single-numa-node"\n'


def run_argv(tmp_path: Path, *extra: str, state_dir: Path | None = None, admin_socket: Path | None = None) -> list[str]:
    return [sys.executable, "-m", "nri_podres", "run", "--socket", str(tmp_path / "nri.sock"),
            "--state-dir", str(state_dir or tmp_path / "state"), "--admin-socket", str(admin_socket or tmp_path / "admin.sock"),
            "--no-metrics", "--log-format", "json", *extra]


@dataclass
class Running:
    proc: asyncio.subprocess.Process
    runtime: FakeRuntime
    log_path: Path
    admin_socket: Path

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]

    def event(self, name: str) -> dict[str, Any]:
        found = [e for e in self.events() if e["event"] == name]
        assert found, f"no {name} in:\n{self.log_path.read_text()[-3000:]}"
        return found[0]

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(admin.query, self.admin_socket, {"cmd": "status"})

    async def call(self, method: str, request: Any) -> Any:
        return await self.runtime.call(method, request, timeout_s=10)


@contextlib.asynccontextmanager
async def daemon(tmp_path: Path, *extra: str, state_dir: Path | None = None, admin_socket: Path | None = None) -> AsyncIterator[Running]:
    """``nri-podres run`` on a 2-NUMA machine file, connected to a fake runtime that has configured it."""
    accepted: asyncio.Queue[FakeRuntime] = asyncio.Queue()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rt = FakeRuntime(reader, writer)
        asyncio.get_running_loop().create_task(rt.pump())
        await accepted.put(rt)

    server = await asyncio.start_unix_server(accept, str(tmp_path / "nri.sock"))
    log_path = tmp_path / "daemon.log"
    config = tmp_path / "config.toml"
    config.write_text(DEFAULT_CONFIG)
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *run_argv(tmp_path, "--machine", str(MACHINE), "--config", str(config), *extra, state_dir=state_dir, admin_socket=admin_socket),
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        rt = await asyncio.wait_for(accepted.get(), 20)
        await asyncio.wait_for(rt.registered, 10)
        running = Running(proc, rt, log_path, admin_socket or tmp_path / "admin.sock")
        resp = await running.call("Configure", pb.ConfigureRequest(runtime_name="containerd", runtime_version="1.7.24"))
        assert resp.code == 0
        yield running
        assert proc.returncode is None, f"daemon exited {proc.returncode}:\n{log_path.read_text()[-3000:]}"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 10)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        server.close()


def resources(cpu_millis: int, memory_bytes: int) -> pb.LinuxResources:
    res = pb.LinuxResources()
    res.cpu.shares.value = cpu_millis * 1024 // 1000
    res.cpu.quota.value = cpu_millis * 100
    res.cpu.period.value = 100000
    res.memory.limit.value = memory_bytes
    return res


def pod(name: str, cpu_millis: int = 0, memory_bytes: int = 0, annotations: dict[str, str] | None = None) -> pb.PodSandbox:
    p = pb.PodSandbox(id=f"id-{name}", name=name, namespace="default", uid=f"uid-{name}")
    p.annotations.update(annotations or {})
    if cpu_millis:
        p.linux.pod_resources.CopyFrom(resources(cpu_millis, memory_bytes))
    return p


def container(p: pb.PodSandbox, name: str, cpu_millis: int = 0, memory_bytes: int = 0) -> pb.Container:
    c = pb.Container(id=f"{p.id}-{name}", pod_sandbox_id=p.id, name=name, state=pb.CONTAINER_CREATED)
    if cpu_millis:
        c.linux.resources.CopyFrom(resources(cpu_millis, memory_bytes))
    return c


def run_pod(p: pb.PodSandbox) -> pb.StateChangeEvent:
    return pb.StateChangeEvent(event=pb.RUN_POD_SANDBOX, pod=p)
