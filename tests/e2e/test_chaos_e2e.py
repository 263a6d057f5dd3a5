"""Chaos against the real containerd: random pods, plugin SIGKILLs, containerd restarts.

A seeded sequence of steps creates and deletes pods of every kind the node can
hold (pod-level pods with an exclusive container and a sidecar, pod-level pods
with one container, classic Guaranteed, Burstable, BestEffort), while the
plugin is SIGKILLed at random moments (also between the CRI calls of one pod)
and restarted, and containerd itself is restarted. After every step an
invariant checker reads the truth from the running containers
(``/proc/<pid>/status``) and the plugin's status (``nri-podres status --json``
over the admin socket) and checks the rules below.

Size: ``NRI_PODRES_CHAOS_STEPS`` steps (default 24, about a minute and a half
here) within ``NRI_PODRES_CHAOS_SECONDS`` (default 100); ``NRI_PODRES_CHAOS_SEED``
replays a run (default 20260; ``random`` draws one). The seed is printed, and named in every failure.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from conftest import POD_SCOPE_CONFIG, Containerd, Daemon
from cri import Cri, MiB, Pod

from nri_podres.cpuset import CPUSet

pytestmark = pytest.mark.runtime

STEPS = int(os.environ.get("NRI_PODRES_CHAOS_STEPS", "24"))
SECONDS = float(os.environ.get("NRI_PODRES_CHAOS_SECONDS", "100"))
# A fixed default keeps the suite repeatable; NRI_PODRES_CHAOS_SEED=random explores.
_SEED_TEXT = os.environ.get("NRI_PODRES_CHAOS_SEED", "20260")
SEED = random.SystemRandom().randrange(1 << 32) if _SEED_TEXT == "random" else int(_SEED_TEXT)
CONFIG = POD_SCOPE_CONFIG
POD_KINDS = ("pod-level", "pod-level-one", "classic", "burstable", "best-effort")


# --- what the plugin says, what the kernel says --------------------------------


@dataclass(frozen=True)
class Seen:
    """One running container as the kernel runs it and as the plugin books it."""

    id: str
    pod_id: str
    cpus: CPUSet  # Cpus_allowed_list of its process
    mems: str
    pool: str  # from the plugin's status; "" when the plugin does not know it
    booked_cpus: CPUSet | None


@dataclass
class Snapshot:
    status: dict[str, Any]
    containers: dict[str, Seen]
    runtime_pods: set[str]

    @property
    def online(self) -> CPUSet:
        return CPUSet.parse(self.status["online_cpus"])

    def pods(self) -> dict[str, dict[str, Any]]:
        return {p["id"]: p for p in self.status["pods"]}


def plugin_status(admin_socket: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "nri_podres", "status", "--json", "--admin-socket", str(admin_socket)],
        capture_output=True, text=True, timeout=20, check=False,
    )
    assert proc.returncode == 0, f"status exited {proc.returncode}: {proc.stderr.strip()}"
    return json.loads(proc.stdout)


def snapshot(cri: Cri, admin_socket: Path) -> Snapshot:
    status = plugin_status(admin_socket)
    booked = {c["id"]: c for p in status["pods"] for c in p["containers"] if c["running"]}
    seen = {}
    for ctr in cri.list_containers():
        if cri.pb.ContainerState.Name(ctr.state) != "CONTAINER_RUNNING":
            continue
        info = cri.container_status(ctr.id)
        try:
            cpus, mems = info.cpus_allowed(), info.mems_allowed()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited between the listing and the read
        b = booked.get(ctr.id)
        seen[ctr.id] = Seen(ctr.id, ctr.pod_sandbox_id, CPUSet.parse(cpus), mems, b["pool"] if b else "",
                            CPUSet.parse(b["cpus"]) if b else None)
    ready = {p.id for p in cri.list_pods() if cri.pb.PodSandboxState.Name(p.state) == "SANDBOX_READY"}
    return Snapshot(status, seen, ready)


def in_fallback(snap: Snapshot) -> bool:
    """Bubbles and exclusive slices hold every CPU: the node pool falls back to every CPU, by design."""
    return CPUSet.parse(snap.status["node_shared_pool"]) == snap.online and any(
        p["mode"] == "bubble" or any(c["pool"] == "exclusive" and c["running"] for c in p["containers"])
        for p in snap.status["pods"])


def violations(snap: Snapshot, strict: bool, orphans: frozenset[str] = frozenset(), leaving_fallback: bool = False) -> list[str]:
    """Every broken rule, as text. ``strict``: a node-shared container must already
    run on exactly the node shared pool (false while a pool growth waits for a reply).
    ``orphans``: deleted pods the runtime never reported removed (see ``Chaos.orphans``),
    which may stay booked until the next Synchronize. ``leaving_fallback``: the node
    was in the everything-taken fallback and a delete ended it; node-shared containers
    leave the exclusive CPUs with the next reply (NRI 0.6.1 has no other way to tell them)."""
    out: list[str] = []
    pods = snap.pods()
    if not snap.status["synchronized"]:
        out.append("plugin not synchronized")
    exclusive = {c.id: c.cpus for c in snap.containers.values() if c.pool == "exclusive"}
    ids = sorted(exclusive)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            if exclusive[a] & exclusive[b]:
                out.append(f"CPU(s) {exclusive[a] & exclusive[b]} in two exclusive slices: {a[:12]} and {b[:12]}")
    bubbles = {pid: CPUSet.parse(p["cpus"]) for pid, p in pods.items() if p["mode"] == "bubble"}
    bids = sorted(bubbles)
    for i, a in enumerate(bids):
        for b in bids[i + 1 :]:
            if bubbles[a] & bubbles[b]:
                out.append(f"bubbles of pods {a[:12]} and {b[:12]} overlap on {bubbles[a] & bubbles[b]}")
    taken = CPUSet()
    for cpus in [*bubbles.values(), *(exclusive[c] for c in ids if snap.containers[c].pod_id not in bubbles)]:
        taken |= cpus
    node_pool = CPUSet.parse(snap.status["node_shared_pool"])
    fallback = not (snap.online - taken)  # nothing left: the node pool falls back to every CPU, by design
    all_exclusive = CPUSet()
    for cpus in exclusive.values():
        all_exclusive |= cpus
    for c in snap.containers.values():
        name = c.id[:12]
        if not c.pool:
            out.append(f"container {name} runs but the plugin does not know it")
            continue
        if c.pool != "node-shared" and c.booked_cpus != c.cpus:
            out.append(f"container {name} ({c.pool}) runs on {c.cpus}, the plugin booked {c.booked_cpus}")
        if c.pod_id in bubbles and not c.cpus <= bubbles[c.pod_id]:
            out.append(f"container {name} of a pod-level pod runs on {c.cpus}, outside its bubble {bubbles[c.pod_id]}")
        if c.pool == "pod-shared" and c.cpus & all_exclusive:
            out.append(f"pod-shared container {name} runs on exclusive CPU(s) {c.cpus & all_exclusive}")
        if c.pool == "node-shared" and not fallback:
            if leaving_fallback and not strict and c.cpus == snap.online:
                continue
            if c.cpus & taken:
                out.append(f"node-shared container {name} runs on {c.cpus}, which holds exclusive/bubble CPU(s) {c.cpus & taken}")
            if strict and c.cpus != node_pool:
                out.append(f"node-shared container {name} runs on {c.cpus}, the node shared pool is {node_pool}")
    if not fallback and node_pool & taken:
        out.append(f"node shared pool {node_pool} holds exclusive/bubble CPU(s) {node_pool & taken}")
    for pid in sorted(set(pods) - snap.runtime_pods - orphans):
        out.append(f"pod {pods[pid]['namespace']}/{pods[pid]['name']} is gone from the runtime but still booked (leak)")
    for pid in sorted(snap.runtime_pods - set(pods)):
        out.append(f"pod {pid[:12]} runs but the plugin does not know it")
    live = set(snap.containers)
    for pod in pods.values():
        for c in pod["containers"]:
            if c["running"] and c["id"] not in live and c["pool"] == "exclusive":
                out.append(f"exclusive container {c['id'][:12]} of {pod['name']} is booked but not running (leak)")
    return out


# --- the chaos run ---------------------------------------------------------------


@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        keys = ("steps", "pods created", "pods refused", "containers refused", "pods deleted",
                "plugin restarts", "containerd restarts", "containers created while the plugin was down",
                "pods removed without RemovePodSandbox (runtime restarted)",
                "node-shared containers following a changed node pool",
                "checks with every CPU taken (node pool fallback)", "invariant checks", "violations", "containers moved by a restart")
        return ", ".join(f"{k}: {self.counts[k]}" for k in keys)


class Chaos:
    def __init__(self, rng: random.Random, cri: Cri, containerd: Containerd, daemon: Daemon, admin: Path) -> None:
        self.rng = rng
        self.cri = cri
        self.containerd = containerd
        self.daemon = daemon
        self.admin = admin
        self.pods: list[Pod] = []
        self.tally = Tally()
        self.serial = 0
        self.plugin_down = False
        # containerd 1.7 keeps which pods it told plugins about in memory only: after
        # it restarts, removing a pod it ran before sends plugins no RemovePodSandbox.
        # Such a pod stays booked until the next Synchronize; that must clear it.
        self.crossed_restart: set[str] = set()
        self.orphans: set[str] = set()
        self.fallback_pending = False  # node-shared containers may still sit on the fallback pool

    # -- the plugin --

    def kill_plugin(self) -> None:
        self.daemon.kill(signal.SIGKILL)
        self.plugin_down = True

    def start_plugin(self) -> None:
        self.daemon.start()
        self.plugin_down = False
        self.orphans.clear()
        self.tally.counts["plugin restarts"] += 1

    def syncs(self) -> int:
        return sum(e.get("event") == "plugin_synchronized" for e in self.daemon.events())

    # -- pods --

    def _maybe_kill_midway(self) -> None:
        """A SIGKILL between two CRI calls of one pod, restarted before the next call."""
        if self.rng.random() < 0.08:
            self.check_restart(self._restart_plugin_now, "plugin killed mid-pod")

    def _restart_plugin_now(self) -> None:
        self.kill_plugin()
        self.start_plugin()

    def create_pod(self, kind: str) -> None:
        self.serial += 1
        name = f"chaos-{self.serial}-{kind}"
        cri = self.cri
        try:
            if kind == "pod-level":
                pod = cri.run_pod(name, cpu_millis=2000, memory_limit_bytes=128 * MiB)
            elif kind == "pod-level-one":
                pod = cri.run_pod(name, cpu_millis=1000, memory_limit_bytes=64 * MiB)
            elif kind == "classic":
                pod = cri.run_pod(name)
            elif kind == "burstable":
                pod = cri.run_pod(name, cpu_millis=500, cpu_limit_millis=0)
            else:
                pod = cri.run_pod(name)
        except grpc.RpcError as exc:
            assert "TopologyAffinityError" in (exc.details() or ""), f"pod {name}: {exc.details()}"
            self.tally.counts["pods refused"] += 1
            return
        self.pods.append(pod)
        self.tally.counts["pods created"] += 1
        self._maybe_kill_midway()
        plan: list[tuple[str, dict[str, int]]]
        if kind == "pod-level":  # the kubelet's order: sidecar first, then the app
            plan = [("sidecar", {}), ("app", {"cpu_request_millis": 1000, "cpu_limit_millis": 1000, "memory_limit_bytes": 64 * MiB})]
        elif kind == "pod-level-one":
            plan = [self.rng.choice([("sidecar", {}), ("app", {"cpu_request_millis": 1000, "cpu_limit_millis": 1000, "memory_limit_bytes": 32 * MiB})])]
        elif kind == "classic":
            plan = [("app", {"cpu_request_millis": 1000, "cpu_limit_millis": 1000, "memory_limit_bytes": 32 * MiB})]
        elif kind == "burstable":
            plan = [("web", {"cpu_request_millis": 200})]
        else:
            plan = [("job", {})]
        for cname, res in plan:
            try:
                ctr = cri.create_container(pod, cname, **res)
            except grpc.RpcError as exc:
                detail = exc.details() or ""
                assert any(r in detail for r in ("TopologyAffinityError", "EmptyPodSharedPoolError", "UnexpectedAdmissionError")), detail
                self.tally.counts["containers refused"] += 1
                return
            self.fallback_pending = False  # the CreateContainer reply carried every pending change
            cri.start(ctr)
            self._maybe_kill_midway()

    def delete_pod(self) -> None:
        pod = self.pods.pop(self.rng.randrange(len(self.pods)))
        self.cri.remove_pod(pod)
        if pod.id in self.crossed_restart:
            self.orphans.add(pod.id)
            self.tally.counts["pods removed without RemovePodSandbox (runtime restarted)"] += 1
        self.tally.counts["pods deleted"] += 1

    def create_while_down(self) -> None:
        """Plugin SIGKILLed; an ordinary pod is created meanwhile; the plugin must place it on return."""
        before = snapshot(self.cri, self.admin)
        self.kill_plugin()
        self.serial += 1
        pod = self.cri.run_pod(f"chaos-{self.serial}-while-down", cpu_millis=300, cpu_limit_millis=0)
        self.pods.append(pod)
        self.cri.run_container(pod, "late", cpu_request_millis=100)
        self.tally.counts["pods created"] += 1
        self.tally.counts["containers created while the plugin was down"] += 1
        self.start_plugin()
        self.compare_across_restart(before, "plugin restarted after a pod was created while it was down")

    # -- restarts, and what must survive them --

    def check_restart(self, restart: Any, what: str) -> None:
        before = snapshot(self.cri, self.admin)
        restart()
        self.compare_across_restart(before, what)

    def restart_containerd(self) -> None:
        count = self.syncs()
        self.crossed_restart |= {p.id for p in self.pods}
        self.containerd.restart()
        deadline = time.monotonic() + 40
        while self.syncs() <= count:
            assert self.daemon.alive, f"plugin died across a containerd restart:\n{self.daemon.output()[-2000:]}"
            assert time.monotonic() < deadline, f"no Synchronize after a containerd restart:\n{self.daemon.output()[-2000:]}"
            time.sleep(0.1)
        self.orphans.clear()
        self.tally.counts["containerd restarts"] += 1

    def compare_across_restart(self, before: Snapshot, what: str) -> None:
        """Exclusive and pod-shared containers must keep their sets. Node-shared ones too, unless the
        node pool itself changed: a Synchronize drops pods the runtime removed silently (the pool
        grows), and ends the everything-taken fallback (they leave the exclusive CPUs, as they must)."""
        after = snapshot(self.cri, self.admin)
        pool_before = CPUSet.parse(before.status["node_shared_pool"])
        pool_kept = pool_before == CPUSet.parse(after.status["node_shared_pool"])
        for cid, old in before.containers.items():
            new = after.containers.get(cid)
            if new is None or not old.pool or (new.cpus, new.mems) == (old.cpus, old.mems):
                continue
            if old.pool == "node-shared" and not (pool_kept and old.cpus == pool_before):
                self.tally.counts["node-shared containers following a changed node pool"] += 1
                continue
            self.tally.counts["containers moved by a restart"] += 1
            self.fail(f"{what}: container {cid[:12]} ({old.pool}) moved from {old.cpus}/{old.mems} to {new.cpus}/{new.mems}")
        self.check(strict=True, snap=after, when=what)

    # -- invariants --

    def check(self, strict: bool, when: str, snap: Snapshot | None = None) -> None:
        snap = snap or snapshot(self.cri, self.admin)
        self.tally.counts["invariant checks"] += 1
        if strict:
            self.fallback_pending = False  # a Synchronize re-placed everyone
        for v in violations(snap, strict, frozenset(self.orphans), self.fallback_pending):
            self.tally.counts["violations"] += 1
            self.fail(f"{when}: {v}")
        if in_fallback(snap):
            self.tally.counts["checks with every CPU taken (node pool fallback)"] += 1
            self.fallback_pending = True

    def fail(self, text: str) -> None:
        self.tally.failures.append(f"[step {self.tally.counts['steps']}] {text}")

    def flush_pending(self) -> None:
        """Pool growth after a delete rides on the next reply (NRI 0.6.1): give it one."""
        self.serial += 1
        probe = self.cri.run_pod(f"chaos-{self.serial}-probe", cpu_millis=100, cpu_limit_millis=0)
        self.cri.run_container(probe, "probe", cpu_request_millis=100)
        self.cri.remove_pod(probe)

    # -- the run --

    def step(self) -> str:
        r = self.rng.random()
        if r < 0.45 or not self.pods:
            kind = self.rng.choice(POD_KINDS)
            self.create_pod(kind)
            return f"create {kind}"
        if r < 0.70:
            self.delete_pod()
            return "delete"
        if r < 0.82:
            self.check_restart(self._restart_plugin_now, "plugin SIGKILLed and restarted")
            return "plugin restart"
        if r < 0.92:
            self.check_restart(self.restart_containerd, "containerd restarted")
            return "containerd restart"
        self.create_while_down()
        return "create while plugin down"

    def run(self, steps: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        must = ["plugin restart", "containerd restart"]  # at least one of each, even in a short run
        while self.tally.counts["steps"] < steps and time.monotonic() < deadline:
            self.tally.counts["steps"] += 1
            if must and self.tally.counts["steps"] % 6 == 0:
                what = must.pop(0)
                if what == "plugin restart":
                    self.check_restart(self._restart_plugin_now, "plugin SIGKILLed and restarted")
                else:
                    self.check_restart(self.restart_containerd, "containerd restarted")
            else:
                what = self.step()
            self.check(strict=False, when=f"after {what}")
        while self.pods:
            self.delete_pod()
        if self.orphans:  # only a Synchronize can clear what the runtime never reported
            self.check_restart(self._restart_plugin_now, "plugin restarted to clear pods the runtime removed silently")
        self.flush_pending()
        final = snapshot(self.cri, self.admin)
        self.tally.counts["invariant checks"] += 1
        for v in violations(final, strict=True):
            self.tally.counts["violations"] += 1
            self.fail(f"after deleting every pod: {v}")
        leaked = [p for p in final.status["pods"] if p["name"].startswith("chaos-")]
        if leaked:
            self.tally.counts["violations"] += 1
            self.fail(f"allocations leaked after every pod was deleted: {[p['name'] for p in leaked]}")


def test_chaos_pods_restarts_and_invariants(containerd: Containerd, cri: Cri, plugin, tmp_path: Path) -> None:
    """Random pods of every kind, plugin SIGKILLs and containerd restarts: every invariant holds after every step."""
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    admin = tmp_path / "admin.sock"
    daemon: Daemon = plugin(config, args=["--admin-socket", str(admin), "--no-metrics"])
    chaos = Chaos(random.Random(SEED), cri, containerd, daemon, admin)
    print(f"\nchaos seed {SEED} (replay: NRI_PODRES_CHAOS_SEED={SEED}), {STEPS} steps within {SECONDS:g} s")
    try:
        chaos.run(STEPS, SECONDS)
    except BaseException:
        print(f"chaos seed {SEED}: aborted after {chaos.tally.line()}")
        raise
    print(f"chaos seed {SEED}: {chaos.tally.line()}")
    assert not chaos.tally.failures, f"seed {SEED}:\n" + "\n".join(chaos.tally.failures[:30])
    assert chaos.tally.counts["plugin restarts"] >= 1 and chaos.tally.counts["containerd restarts"] >= 1
    assert chaos.tally.counts["invariant checks"] >= chaos.tally.counts["steps"]
    assert daemon.alive
