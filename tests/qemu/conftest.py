"""Fixtures of the QEMU tier: a multi-NUMA guest running containerd, booted once per topology.

* ``guest_pool`` (session): at most one live guest; asking for another topology
  powers the current one off first (two emulated guests would share 2 CPUs).
* ``numa_guest`` (function): the 2-node guest (:data:`TWO_NODES`), booted on first use.
* ``numa_guest_4`` (function): the 4-node guest with uneven distances (:data:`FOUR_NODES_UNEVEN`).
* ``guest_runtime`` / ``guest_runtime_4`` (function): :class:`GuestRuntime` on those guests,
  containerd started; after the test, its plugin is stopped and every pod removed.

Setup (``tools/qemu/setup.sh``, ``tools/ctrd/setup.sh``) runs once per session.
Every test here is marked ``qemu``. Without root, or when the guest cannot be
set up, they are skipped with the reason — except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.qemu.guest import FOUR_NODES_UNEVEN, REPO, TWO_NODES, Guest, GuestError, GuestTopology
from tests.qemu.runtime import GUEST_PLUGIN_DIR, HOST_E2E_DIR, GuestRuntime
from tests.support import harness_unavailable

HERE = Path(__file__).resolve().parent
#: seconds spent on setup and boots this session, printed at the end (see ``timings``)
timings: dict[str, float] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.qemu)


unavailable = partial(harness_unavailable, "QEMU tier")  # skip on a developer machine, fail under CI


def _setup(script: Path, env: dict[str, str]) -> None:
    started = time.monotonic()
    proc = subprocess.run([str(script)], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=900, check=False)
    timings[f"setup {script.parent.name}"] = time.monotonic() - started
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
        unavailable(f"{script} exited {proc.returncode}: {tail}")


class GuestPool:
    """One live guest at a time, kept across tests; a different topology replaces it."""

    def __init__(self) -> None:
        self._prepared = False
        self._guest: Guest | None = None
        self._runtime: GuestRuntime | None = None

    def _prepare(self) -> None:
        if self._prepared:
            return
        if sys.platform != "linux" or os.geteuid() != 0:
            unavailable("needs root on Linux (9p passthrough of /, cgroups, runc)")
        _setup(REPO / "tools" / "qemu" / "setup.sh", {})
        _setup(REPO / "tools" / "ctrd" / "setup.sh", {"PYTHON": sys.executable, "NRI_PODRES_E2E_DIR": HOST_E2E_DIR})
        self._prepared = True

    def guest(self, topology: GuestTopology) -> Guest:
        self._prepare()
        if self._guest is not None and (self._guest.topology != topology or not self._guest.alive()):
            self.close()
        if self._guest is None:
            try:
                self._guest = Guest.boot(topology)
            except GuestError as exc:
                unavailable(str(exc))
            timings[f"boot {topology.nodes} nodes"] = self._guest.boot_seconds
        return self._guest

    def runtime(self, topology: GuestTopology) -> GuestRuntime:
        guest = self.guest(topology)
        if self._runtime is None or self._runtime.guest is not guest:
            self._runtime = GuestRuntime(guest)
            started = time.monotonic()
            self._runtime.start_containerd()
            timings[f"containerd start {topology.nodes} nodes"] = time.monotonic() - started
        return self._runtime

    def close(self) -> None:
        if self._guest is not None:
            self._guest.shutdown()
        self._guest = None
        self._runtime = None


@pytest.fixture(scope="session")
def guest_pool() -> Iterator[GuestPool]:
    pool = GuestPool()
    try:
        yield pool
    finally:
        pool.close()
        if timings:
            print("\nQEMU tier timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))


@pytest.fixture
def numa_guest(guest_pool: GuestPool) -> Guest:
    return guest_pool.guest(TWO_NODES)


@pytest.fixture
def numa_guest_4(guest_pool: GuestPool) -> Guest:
    return guest_pool.guest(FOUR_NODES_UNEVEN)


def _clean(runtime: GuestRuntime) -> None:
    if not runtime.guest.alive():
        return
    runtime.stop_plugin()
    runtime.remove_all_pods()
    runtime.guest.run(["rm", "-rf", GUEST_PLUGIN_DIR])  # no checkpoint leaks into the next test


@pytest.fixture
def guest_runtime(guest_pool: GuestPool) -> Iterator[GuestRuntime]:
    runtime = guest_pool.runtime(TWO_NODES)
    yield runtime
    _clean(runtime)


@pytest.fixture
def guest_runtime_4(guest_pool: GuestPool) -> Iterator[GuestRuntime]:
    runtime = guest_pool.runtime(FOUR_NODES_UNEVEN)
    yield runtime
    _clean(runtime)
