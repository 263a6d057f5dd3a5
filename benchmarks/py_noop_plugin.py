"""A no-op NRI plugin on nri-podres' own stack: the floor under any plugin written on it.

The same transport, codecs, stub and JSON logging as ``nri-podres run``, with a plugin
that decides nothing (it logs one line per event, as the Go no-op plugin does). Behind
the wire probe, nri-podres minus this is the cost of our decisions; this minus the Go
no-op plugin is the cost of the Python stack.

    python benchmarks/py_noop_plugin.py --socket /var/run/nri/nri.sock
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog  # noqa: E402

from nri_podres import log  # noqa: E402
from nri_podres._proto import api_pb2 as pb  # noqa: E402
from nri_podres.nri.stub import Stub  # noqa: E402
from nri_podres.nri.transport import path_connector, run_forever  # noqa: E402

events = structlog.get_logger("py_noop")


class NoopPlugin:
    """Subscribes to the events nri-podres subscribes to; adjusts nothing (or, given
    ``cpus``, answers every CreateContainer with that fixed cpuset: what applying one
    costs the runtime, apart from any deciding)."""

    def __init__(self, cpus: str = "", mems: str = "") -> None:
        self.cpus, self.mems = cpus, mems

    def synchronize(self, pods: list[pb.PodSandbox], containers: list[pb.Container]) -> list[pb.ContainerUpdate]:
        events.info("plugin_synchronized", pods=len(pods), containers=len(containers))
        return []

    def run_pod_sandbox(self, pod: pb.PodSandbox) -> None:
        events.info("pod_admitted", pod_namespace=pod.namespace, pod_name=pod.name)

    def create_container(self, pod: pb.PodSandbox, container: pb.Container) -> tuple[pb.ContainerAdjustment | None, list[pb.ContainerUpdate]]:
        events.info("container_allocated", pod_name=pod.name, container_name=container.name)
        if not self.cpus:
            return None, []
        adjust = pb.ContainerAdjustment()
        adjust.linux.resources.cpu.cpus = self.cpus
        adjust.linux.resources.cpu.mems = self.mems
        return adjust, []

    def stop_container(self, pod: pb.PodSandbox, container: pb.Container) -> list[pb.ContainerUpdate]:
        return []

    def remove_container(self, pod: pb.PodSandbox, container: pb.Container) -> None:
        pass

    def remove_pod_sandbox(self, pod: pb.PodSandbox) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--name", default="py-noop")
    parser.add_argument("--idx", default="60")
    parser.add_argument("--cpus", default="", help="answer every CreateContainer with this cpuset (default: nothing)")
    parser.add_argument("--mems", default="0", help="with --cpus: the memory nodes")
    args = parser.parse_args()
    log.configure_logging("json", "info")
    stub = Stub(NoopPlugin(args.cpus, args.mems), args.name, args.idx)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(stub, args.socket))
    return 0


async def _serve(stub: Stub, socket_path: str) -> None:
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run_forever(stub, path_connector(socket_path))


if __name__ == "__main__":
    sys.exit(main())
