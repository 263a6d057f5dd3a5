"""Operations against the real containerd: journald fields, sd_notify, metrics, status and explain."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, Containerd, Daemon
from cri import Cri, MiB

from tests.support import journal_entry

pytestmark = pytest.mark.runtime

CONFIG = '[cpu]\nreserved-cpus = ""\n[memory]\nreserved = {}\n'


def datagram_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    return sock


def drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(1 << 20))
        except TimeoutError:
            return out


def test_daemon_under_systemd_like_environment(containerd: Containerd, cri: Cri, tmp_path: Path) -> None:
    """With NOTIFY_SOCKET/WATCHDOG_USEC and journal logging, the daemon says READY after Synchronize,
    pings the watchdog, logs decisions as journal fields, exports metrics and answers status/explain."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    notify = datagram_socket(tmp_path / "notify.sock")
    journal = datagram_socket(tmp_path / "journal.sock")
    admin_sock = tmp_path / "run" / "admin.sock"
    argv = [
        sys.executable, "-m", "nri_podres", "run", "--socket", str(containerd.nri_socket),
        "--config", str(config), "--state-dir", str(tmp_path / "state"), "--admin-socket", str(admin_sock),
        "--metrics-address", "127.0.0.1:0", "--log-format", "journal", "--journal-socket", str(tmp_path / "journal.sock"),
    ]
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}
    daemon = Daemon(argv, tmp_path / "daemon.log", name="nri-podres", env=env)
    env["WATCHDOG_PID"] = ""  # any pid: the child's pid is not known before it starts
    daemon.start(wait_for=None)
    try:
        deadline = time.monotonic() + 20
        notes: list[str] = []
        while not any(n.startswith("READY=1") or "\nREADY=1" in n for n in notes) and time.monotonic() < deadline:
            notes += [d.decode() for d in drain(notify)]
        ready = next(n for n in notes if "READY=1" in n)
        assert re.search(r"STATUS=\d+ pods, \d+ containers placed on 2 CPUs", ready)
        time.sleep(0.5)
        assert any("WATCHDOG=1" in d.decode() for d in drain(notify)), "no watchdog ping within 0.5 s"

        pod = cri.run_pod("ops-pod", namespace="prod", cpu_millis=1000, memory_limit_bytes=64 * MiB)
        cri.run_container(pod, "db", cpu_request_millis=1000, cpu_limit_millis=1000, memory_limit_bytes=32 * MiB)
        time.sleep(0.3)
        records = [journal_entry(d) for d in drain(journal)]
        allocated = [r for r in records if r.get("MESSAGE", "").startswith("container_allocated")]
        assert allocated, f"no container_allocated entry among {[r.get('MESSAGE', '')[:40] for r in records]}"
        entry = allocated[-1]
        assert entry["POD_NAMESPACE"] == "prod"
        assert entry["POD_NAME"] == "ops-pod"
        assert entry["CONTAINER_NAME"] == "db"
        assert entry["POOL"] == "exclusive"
        assert entry["PRIORITY"] == "6"
        assert re.fullmatch(r"[0-9a-f]{32}", entry["MESSAGE_ID"])
        assert entry["SYSLOG_IDENTIFIER"] == "nri-podres"

        status = subprocess.run(
            [sys.executable, "-m", "nri_podres", "status", "--admin-socket", str(admin_sock), "--json"],
            capture_output=True, text=True, cwd=REPO, timeout=20, check=True,
        )
        reply = json.loads(status.stdout)
        assert reply["synchronized"] is True
        (ours,) = [p for p in reply["pods"] if p["name"] == "ops-pod"]
        assert ours["containers"][0]["pool"] == "exclusive"
        assert oct(admin_sock.stat().st_mode & 0o777) == "0o600"
        explain = subprocess.run(
            [sys.executable, "-m", "nri_podres", "explain", "prod/ops-pod", "--admin-socket", str(admin_sock)],
            capture_output=True, text=True, cwd=REPO, timeout=20, check=True,
        )
        assert "pod prod/ops-pod (bubble)" in explain.stdout
        assert "db: exclusive" in explain.stdout
        table = subprocess.run(
            [sys.executable, "-m", "nri_podres", "status", "--admin-socket", str(admin_sock)],
            capture_output=True, text=True, cwd=REPO, timeout=20, check=True,
        ).stdout
        assert "prod/ops-pod" in table and "EXCLUSIVE" in table
        drain(notify)  # watchdog pings fill the queue over a slow run; make room for the last word
        assert daemon.kill() == 0
        assert any("STOPPING=1" in d.decode() for d in drain(notify)), "no STOPPING=1 on SIGTERM"
    finally:
        daemon.kill()
        notify.close()
        journal.close()


def test_metrics_are_exported_from_the_running_daemon(containerd: Containerd, cri: Cri, plugin, tmp_path: Path) -> None:
    """The Prometheus text shows pool sizes per NUMA node, allocations and request latency."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    daemon = plugin(config, args=["--metrics-address", "127.0.0.1:0", "--admin-socket", str(tmp_path / "admin.sock")])
    url = daemon.wait_for_event("plugin_starting")["metrics"]
    pod = cri.run_pod("metered", cpu_millis=1000, memory_limit_bytes=64 * MiB)
    cri.run_container(pod, "app", cpu_request_millis=1000, cpu_limit_millis=1000, memory_limit_bytes=32 * MiB)
    with pytest.raises(Exception):  # noqa: B017,PT011 - the refusal itself is tested elsewhere
        cri.run_pod("refused", cpu_millis=4000, memory_limit_bytes=64 * MiB)
    text = urllib.request.urlopen(url, timeout=5).read().decode()  # noqa: S310 - loopback URL the daemon printed
    assert 'nri_podres_pool_cpus{numa_node="0",pool="exclusive"} 1.0' in text
    assert "nri_podres_allocations_total 1.0" in text
    assert 'nri_podres_rejections_total{reason="TopologyAffinityError"} 1.0' in text
    assert 'nri_podres_nri_request_duration_seconds_count{method="CreateContainer"} 1.0' in text
    assert "nri_podres_nri_connected 1.0" in text
