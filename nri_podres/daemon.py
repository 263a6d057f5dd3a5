"""The daemon's composition: config + topology + plugin + stub + transport + ops hooks."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from nri_podres import report
from nri_podres.admin import AdminServer
from nri_podres.checkpoint import CheckpointStore
from nri_podres.config import Config
from nri_podres.errors import AdmissionError
from nri_podres.metrics import Metrics
from nri_podres.nri.observer import MetricsObserver
from nri_podres.placement import Context
from nri_podres.resources import Decision
from nri_podres.state import State
from nri_podres.nri.stub import Stub
from nri_podres.nri.transport import Connector, fd_connector, path_connector, run_forever
from nri_podres.plugin import PodresPlugin
from nri_podres.sdnotify import Notifier, NullNotifier, watchdog_interval_s
from nri_podres.topology import Topology

log = structlog.get_logger("nri_podres.daemon")


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    socket_path: str
    state_dir: Path
    name: str
    index: str
    admin_socket: str
    metrics_address: str | None  # None: no exporter


class BackgroundSaver:
    """Writes checkpoints off the reply path.

    States are immutable, so the newest one is simply kept; a write starts
    ``delay_s`` after the first change (coalescing a burst of events into one
    write) and serializes and writes in a worker thread.
    """

    def __init__(self, store: CheckpointStore, delay_s: float = 0.05) -> None:
        self._store = store
        self._delay_s = delay_s
        self._latest: State | None = None
        self._task: asyncio.Task[None] | None = None

    def submit(self, state: State) -> None:
        self._latest = state
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        await asyncio.sleep(self._delay_s)
        while self._latest is not None:
            state, self._latest = self._latest, None
            try:
                await asyncio.to_thread(self._write, state)
            except OSError as exc:
                log.error("checkpoint_write_failed", path=str(self._store.path), error=exc.strerror)

    def _write(self, state: State) -> None:
        self._store.save(state.to_json())

    async def close(self) -> None:
        """Let a write in flight finish (so it cannot land after ours), then write what is pending."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        if self._latest is not None:
            with contextlib.suppress(OSError):
                self._write(self._latest)
            self._latest = None


def connector_from(environ: Mapping[str, str], socket_path: str) -> tuple[Connector, bool]:
    """(connector, reconnect): a runtime-launched plugin uses fd NRI_PLUGIN_SOCKET and never redials."""
    fd_text = environ.get("NRI_PLUGIN_SOCKET", "")
    if fd_text:
        return fd_connector(int(fd_text)), False
    return path_connector(socket_path), True


def summary(plugin: PodresPlugin) -> str:
    snap = plugin.state
    pods = len(getattr(snap, "pods", {}))
    ctrs = len(snap.assignments())
    return f"{pods} pods, {ctrs} containers placed on {len(plugin.topology.online)} CPUs"


async def _watchdog(notifier: Notifier | NullNotifier, interval_s: float) -> None:
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval_s)


def _decision_hook(metrics: Metrics) -> Callable[[str, Decision | AdmissionError], None]:
    def on_decision(event: str, outcome: Decision | AdmissionError) -> None:
        if isinstance(outcome, AdmissionError):
            metrics.count_rejection(outcome.reason)
        elif event == "CreateContainer" and outcome.assignment is not None:
            metrics.count_allocation()

    return on_decision


def _admin_handlers(plugin: PodresPlugin, ctx: Context) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
    def status(_req: dict[str, Any]) -> dict[str, Any]:
        return report.status(plugin.topology, ctx, plugin.state, plugin.reasons, plugin.synchronized)

    def explain(req: dict[str, Any]) -> dict[str, Any]:
        return report.explain(plugin.state, plugin.reasons, str(req.get("pod", "")))

    return {"status": status, "explain": explain}


async def serve(topology: Topology, config: Config, options: DaemonOptions, environ: Mapping[str, str]) -> int:
    store = CheckpointStore(options.state_dir)
    loaded = store.load()
    if loaded.problem:
        log.warning("checkpoint_ignored", problem=loaded.problem)
    saver = BackgroundSaver(store)
    notifier = Notifier.from_environ(environ)
    ctx = Context(topology, config)
    metrics = Metrics() if options.metrics_address else None
    server = metrics.serve(options.metrics_address) if metrics and options.metrics_address else None

    def synchronized(p: PodresPlugin) -> None:
        notifier.ready(summary(p))

    plugin = PodresPlugin(topology, config, checkpoint=loaded.data, save=saver.submit,
                          on_synchronized=synchronized,
                          on_decision=_decision_hook(metrics) if metrics is not None else None,
                          defer_logs=True)  # each event's lines follow its reply (Session calls after_reply)
    if metrics is not None:
        # Built at scrape time from one read of the immutable state: decisions pay nothing for it.
        metrics.snapshot_from(lambda: report.metrics_snapshot(topology, ctx, plugin.state))
    stub = Stub(plugin, options.name, options.index)
    connect, reconnect = connector_from(environ, options.socket_path)
    log.info("plugin_starting", socket=options.socket_path, name=options.name, index=options.index,
             cpus=str(topology.online), numa_nodes=len(topology.numa_nodes), state_dir=str(options.state_dir),
             admin_socket=options.admin_socket, metrics=f"http://{server.host}:{server.port}/metrics" if server else "off",
             notes=list(topology.notes))
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main.cancel)
    background = []
    interval = watchdog_interval_s(environ, os.getpid())
    if interval:
        background.append(asyncio.create_task(_watchdog(notifier, interval)))
    # What start-up built (modules, protobuf descriptors, the topology) lives as long as the
    # process: keep it out of the collector's full passes, which would rescan it mid-request.
    gc.freeze()
    try:
        async with AdminServer(options.admin_socket, _admin_handlers(plugin, ctx)):
            await run_forever(stub, connect, reconnect=reconnect, observer=MetricsObserver(metrics, notifier))
    except asyncio.CancelledError:
        log.info("plugin_stopping", reason="signal")
    finally:
        notifier.stopping()
        for task in background:
            task.cancel()
        await saver.close()
        if server is not None:
            server.close()
    return 0
