"""The NRI handlers: protobuf in, core decision, protobuf out.

``PodresPlugin`` owns the one mutable reference to the allocation ``State``.
Each handler converts its request, asks ``policy`` for a ``Decision``, swaps
the state only when the decision succeeded (the commit point: a refused
request changes nothing) and answers. Changes to *other* containers are kept
in ``_pending`` until a reply can carry them (or, on runtimes where it is
safe, the stub sends them with UpdateContainers).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import structlog

from nri_podres import convert, policy
from nri_podres._proto import api_pb2 as pb
from nri_podres.config import Config
from nri_podres.errors import AdmissionError
from nri_podres.resources import Assignment, ContainerInfo, Decision, PodInfo
from nri_podres.state import State
from nri_podres.topology import Topology

log = structlog.get_logger("nri_podres.plugin")

# A line's fields, or what puts them together when the line is written.
Fields = dict[str, Any] | Callable[[], dict[str, Any]]


class EventLog:
    """The plugin's log lines: written at once, or -- in the daemon -- held until the
    reply is on the wire, since rendering a line costs about as much as the decision.
    The transport calls :meth:`flush` after every reply it sends."""

    def __init__(self, deferred: bool = False) -> None:
        self.deferred = deferred
        self._held: list[tuple[str, str, Fields]] = []

    def info(self, event: str, **fields: Any) -> None:
        self._put("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._put("warning", event, fields)

    def info_later(self, event: str, fields: Callable[[], dict[str, Any]]) -> None:
        """A line whose fields are put together only when it is written (off the reply path)."""
        self._put("info", event, fields)

    def _put(self, level: str, event: str, fields: Fields) -> None:
        if self.deferred:
            self._held.append((level, event, fields))
        else:
            _write(level, event, fields)

    def flush(self) -> None:
        held, self._held = self._held, []
        for level, event, fields in held:
            _write(level, event, fields)


def _write(level: str, event: str, fields: Fields) -> None:
    getattr(log, level)(event, **(fields() if callable(fields) else fields))


# Refusals that mean "no room"; with possibly-gone pods holding CPUs they trigger a resync.
CAPACITY_REASONS = frozenset({"TopologyAffinityError", "InsufficientCPUs", "InsufficientMemory", "SMTAlignmentError"})
RESYNC_INTERVAL_S = 30.0


class PodresPlugin:
    def __init__(
        self,
        topology: Topology,
        config: Config,
        *,
        checkpoint: dict[str, Any] | None = None,
        save: Callable[[State], None] | None = None,
        on_synchronized: Callable[[PodresPlugin], None] | None = None,
        on_decision: Callable[[str, Decision | AdmissionError], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sandbox_alive: Callable[[int, str], bool] | None = None,
        defer_logs: bool = False,
    ) -> None:
        self.topology = topology
        self.config = config
        self.state = State.empty()
        self.synchronized = False
        self._checkpoint = checkpoint
        self._save = save
        self._on_synchronized = on_synchronized
        self._on_decision = on_decision
        self._pending: dict[str, Assignment] = {}
        self.reasons: dict[str, str] = {}  # pod or container id -> why it got what it has
        # Pods learned from a Synchronize that followed a lost connection (the runtime
        # may have restarted): containerd 1.7 sends no Stop/RemovePodSandbox for pods it
        # ran before its own restart, so they may be gone while still holding CPUs.
        self._uncertain_pods: dict[str, int] = {}  # pod id -> its sandbox (pause) pid, 0 if unknown
        self._lost_connection = False
        self._resync_wanted = False
        self._last_resync_s = -RESYNC_INTERVAL_S
        self._clock = clock
        self._sandbox_alive = sandbox_alive or sandbox_process_alive
        self.log = EventLog(deferred=defer_logs)

    # ---- bookkeeping ----

    def _commit(self, event: str, decision: Decision, subject_id: str) -> None:
        self.state = decision.state
        self._pending.update(decision.changed)
        self.reasons[subject_id] = decision.reason
        for cid, a in decision.changed.items():
            self.reasons[cid] = f"moved to {a.pool.value} CPUs {a.cpus} at {event}: {decision.reason}"
        if self._save is not None:
            self._save(self.state)  # immutable: serialized later, off the reply path
        if self._on_decision is not None:
            self._on_decision(event, decision)

    def _refused(self, event: str, exc: AdmissionError, **fields: object) -> None:
        self.log.warning("request_refused", nri_event=event, reason=exc.reason, error=exc.message, **fields)
        if self._on_decision is not None:
            self._on_decision(event, exc)
        self._maybe_resync(exc)

    def _maybe_resync(self, exc: AdmissionError) -> None:
        """A refusal for lack of room while possibly-gone pods hold CPUs: ask the runtime
        again. The transport reconnects, the fresh Synchronize drops pods that no longer
        exist, and the kubelet's retry of the refused pod then finds the room."""
        # Pods seen alive through /proc are certain enough; only those we cannot check may be stale.
        stale = {pod_id for pod_id, pid in self._uncertain_pods.items() if not pid} & self.state.pods.keys()
        now = self._clock()
        if exc.reason not in CAPACITY_REASONS or not stale or now - self._last_resync_s < RESYNC_INTERVAL_S:
            return
        self._resync_wanted = True
        self._last_resync_s = now
        self.log.warning("resync_requested", uncertain_pods=len(stale),
                    why="pods adopted after a runtime restart may be gone without a removal event")

    def _purge_gone_pods(self) -> bool:
        """Release pods adopted after a runtime restart whose sandbox process is gone.

        Cheaper and safer than a resync when this host's /proc shows the sandboxes;
        a pod whose pid is unknown or alive is left to the resync."""
        gone = [pod_id for pod_id, pid in sorted(self._uncertain_pods.items())
                if pid and pod_id in self.state.pods and not self._sandbox_alive(pid, pod_id)]
        for pod_id in gone:
            pod = self.state.pods[pod_id]
            decision = policy.remove_pod(self.topology, self.config, self.state, pod_id)
            self._commit("RemovePodSandbox", decision, pod_id)
            self._uncertain_pods.pop(pod_id, None)
            self.log.info("pod_gone", pod_namespace=pod.namespace, pod_name=pod.name,
                     why="its sandbox process ended; the runtime sent no removal (it restarted since)")
        return bool(gone)

    def _decide(self, decide: Callable[[], Decision]) -> Decision:
        """A decision; refused for lack of room, retried once after releasing pods that are gone."""
        try:
            return decide()
        except AdmissionError as exc:
            if exc.reason not in CAPACITY_REASONS or not self._purge_gone_pods():
                raise
        return decide()

    def take_resync_request(self) -> bool:
        wanted, self._resync_wanted = self._resync_wanted, False
        return wanted

    def _take_updates(self, exclude: str = "") -> list[pb.ContainerUpdate]:
        containers = self.state.containers  # look up the pending ones, not every container
        updates = [
            convert.update_from_assignment(cid, a)
            for cid, a in sorted(self._pending.items())
            if cid != exclude and cid in containers and containers[cid].running
        ]
        keep = self._pending.get(exclude) if exclude else None
        self._pending.clear()
        if keep is not None:
            self._pending[exclude] = keep
        return updates

    def take_unsolicited_updates(self) -> list[pb.ContainerUpdate]:
        return self._take_updates()

    def after_reply(self) -> None:
        """The reply is on the wire: write the lines of its event."""
        self.log.flush()

    def connection_lost(self) -> None:
        self.log.flush()
        self._lost_connection = True
        self.synchronized = False
        self._pending.clear()  # Synchronize after the reconnect re-derives everything

    # ---- handlers ----

    def configure(self, config_text: str, runtime: object) -> None:
        self.log.info("plugin_configured", runtime=str(getattr(runtime, "name", "")),
                 runtime_version=str(getattr(runtime, "version", "")),
                 nri_version=".".join(map(str, getattr(runtime, "nri_version", ()))))

    def synchronize(self, pods: Iterable[pb.PodSandbox], containers: Iterable[pb.Container]) -> list[pb.ContainerUpdate]:
        started = time.perf_counter()
        pod_list = list(pods)
        pod_infos = [convert.pod_from_pb(p) for p in pod_list]
        ctr_infos = [convert.container_from_pb(c) for c in containers]
        checkpoint = self._checkpoint_state()
        decision = policy.reconcile(self.topology, self.config, pod_infos, ctr_infos, checkpoint)
        self._pending.clear()
        self._commit("Synchronize", decision, "")
        self.synchronized = True
        # A pid counts only if this /proc shows that very sandbox now (a plugin in its own
        # PID namespace sees other processes, or none, under those numbers): 0 = cannot tell.
        self._uncertain_pods = (
            {p.id: p.pid if p.pid and self._sandbox_alive(p.pid, p.id) else 0 for p in pod_list}
            if self._lost_connection else {}
        )
        updates = self._take_updates()
        self.log.info(
            "plugin_synchronized",
            pods=len(pod_infos),
            containers=len(ctr_infos),
            moved=len(updates),
            reason=decision.reason,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        if self._on_synchronized is not None:
            self._on_synchronized(self)
        return updates

    def _checkpoint_state(self) -> State | None:
        """What the runtime cannot tell: the state in memory after a reconnect, else the
        checkpoint read at start-up (used once)."""
        if self.state.pods or self.state.containers:
            return self.state
        saved, self._checkpoint = self._checkpoint, None
        if saved is None:
            return None
        try:
            return State.from_json(saved)
        except (KeyError, TypeError, ValueError) as exc:
            self.log.warning("checkpoint_ignored", problem=f"checkpoint content is invalid: {exc}")
            return None

    def run_pod_sandbox(self, pod: pb.PodSandbox) -> None:
        info = convert.pod_from_pb(pod)
        try:
            decision = self._decide(lambda: policy.run_pod(self.topology, self.config, self.state, info))
        except AdmissionError as exc:
            self._refused("RunPodSandbox", exc, **_pod_fields(info))
            raise
        self._commit("RunPodSandbox", decision, info.id)
        pod_rec = decision.state.pods.get(info.id)
        bubble = pod_rec.bubble if pod_rec is not None else None
        self.log.info("pod_admitted", nri_event="RunPodSandbox", **_pod_fields(info),
                 cpus=str(bubble) if bubble is not None else "", reason=decision.reason,
                 others_changed=len(decision.changed))

    def create_container(self, pod: pb.PodSandbox, container: pb.Container) -> tuple[pb.ContainerAdjustment | None, list[pb.ContainerUpdate]]:
        # A pod admitted at RunPodSandbox is decided by its record; only one never seen is read here.
        admitted = self.state.pods.get(pod.id)
        pod_info = admitted.info if admitted is not None else convert.pod_from_pb(pod)
        ctr = convert.container_from_pb(container)
        try:
            decision = self._decide(lambda: policy.create_container(self.topology, self.config, self.state, pod_info, ctr))
        except AdmissionError as exc:
            self._refused("CreateContainer", exc, **_pod_fields(pod_info), container_name=ctr.name)
            raise
        self._commit("CreateContainer", decision, ctr.id)
        self._pending.pop(ctr.id, None)
        updates = self._take_updates(exclude=ctr.id)
        adjust = None if decision.assignment is None else convert.adjustment_from_assignment(decision.assignment)
        _log_assignment(self.log, "container_allocated", "CreateContainer", pod_info, ctr, decision.assignment, decision.reason, len(updates))
        return adjust, updates

    def update_container(self, pod: pb.PodSandbox, container: pb.Container, resources: pb.LinuxResources) -> list[pb.ContainerUpdate]:
        ctr = convert.container_from_pb(container)
        values = convert.resize_values(resources)
        try:
            decision = policy.update_container(self.topology, self.config, self.state, ctr.id, **values)
        except AdmissionError as exc:
            self._refused("UpdateContainer", exc, **_pod_fields(pod), container_name=ctr.name)
            raise
        self._commit("UpdateContainer", decision, ctr.id)
        self._pending.pop(ctr.id, None)
        updates = self._take_updates(exclude=ctr.id)
        if decision.assignment is not None:
            # Re-assert our sets on the target itself: its id must be set or the runtime drops it.
            updates.append(convert.update_from_assignment(ctr.id, decision.assignment))
        _log_assignment(self.log, "container_updated", "UpdateContainer", pod, ctr, decision.assignment, decision.reason, len(updates))
        return updates

    # Releases need only identities: nothing of the request is converted.

    def stop_container(self, pod: pb.PodSandbox, container: pb.Container) -> list[pb.ContainerUpdate]:
        decision = policy.stop_container(self.topology, self.config, self.state, container.id)
        self._commit("StopContainer", decision, container.id)
        updates = self._take_updates(exclude=container.id)
        self.log.info("container_released", nri_event="StopContainer", **_pod_fields(pod),
                 container_name=container.name, reason=decision.reason, others_changed=len(updates))
        return updates

    def remove_container(self, pod: pb.PodSandbox, container: pb.Container) -> None:
        decision = policy.remove_container(self.topology, self.config, self.state, container.id)
        self._commit("RemoveContainer", decision, container.id)
        self.reasons.pop(container.id, None)
        self.log.info("container_removed", nri_event="RemoveContainer", **_pod_fields(pod),
                 container_name=container.name, others_pending=len(decision.changed))

    def remove_pod_sandbox(self, pod: pb.PodSandbox) -> None:
        decision = policy.remove_pod(self.topology, self.config, self.state, pod.id)
        self._commit("RemovePodSandbox", decision, pod.id)
        self._uncertain_pods.pop(pod.id, None)
        self.reasons.pop(pod.id, None)
        self.log.info("pod_released", nri_event="RemovePodSandbox", **_pod_fields(pod),
                 reason=decision.reason, others_pending=len(decision.changed))

    def update_pod_sandbox(self, pod: pb.PodSandbox, overhead: pb.LinuxResources, resources: pb.LinuxResources) -> None:
        info = convert.pod_from_pb(pod)
        values = convert.resize_values(resources)
        resized = PodInfo(info.id, info.name, info.namespace, info.uid, info.annotations, **values)  # type: ignore[arg-type]
        try:
            decision = policy.update_pod(self.topology, self.config, self.state, resized)
        except AdmissionError as exc:
            self._refused("UpdatePodSandbox", exc, **_pod_fields(info))
            raise
        self._commit("UpdatePodSandbox", decision, info.id)
        self.log.info("pod_resized", nri_event="UpdatePodSandbox", **_pod_fields(info), reason=decision.reason)


def sandbox_process_alive(pid: int, sandbox_id: str) -> bool:
    """Whether process ``pid`` is this sandbox's: its cgroup path names the sandbox id."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8") as f:
            return sandbox_id in f.read()
    except OSError:
        return False


def _pod_fields(pod: PodInfo | pb.PodSandbox) -> dict[str, str]:
    return {"pod_namespace": pod.namespace, "pod_name": pod.name, "pod_uid": pod.uid}


def _log_assignment(
    events: EventLog,
    event_name: str, nri_event: str, pod: PodInfo | pb.PodSandbox, ctr: ContainerInfo, a: Assignment | None, reason: str, updates: int
) -> None:
    def fields() -> dict[str, Any]:
        return {
            "nri_event": nri_event,
            **_pod_fields(pod),
            "container_name": ctr.name,
            "container_id": ctr.id[:12],
            "cpus": str(a.cpus) if a else "",
            "mems": str(a.mems) if a else "",
            "pool": a.pool.value if a else "untouched",
            "cpu_quota": a.cpu_quota if a else None,
            "decision": reason,
            "others_updated": updates,
        }

    events.info_later(event_name, fields)
