"""Cost of one CreateContainer through our ttrpc + mux stack, in process, over a socketpair.

The runtime side (tests/protocol/fake_runtime.py, built on our own codecs) encodes the
request and writes it to one end of a Unix socketpair; the plugin side is the daemon's
transport ``Session``: it reads, decodes, dispatches through the ``Stub`` to a plugin,
encodes the reply and writes it back; the runtime side decodes it. Timed per call:
request encode to response decode, one asyncio event loop for both sides.

Plugins: a no-op plugin (answers nothing), and a real ``PodresPlugin`` on the 768-CPU /
24-NUMA machine with 250 pods of the workload mix synchronized in, creating (a) the
container of an ordinary pod and (b) the 6-CPU exclusive container of an admitted
example pod; each created container is removed again (untimed) so the state stays put.
JSON logging goes to /dev/null, as the daemon would write it.

Also the codec alone: the same request and reply encoded and decoded through
protobuf + ttrpc + mux with no socket and no handler.

    python benchmarks/bench_protocol.py [--calls N] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from timing import Results, Stats, measure, stats  # noqa: E402
from workload import container_pb, db_pod, machine, ordinary_pod, pod_mix, pod_pb  # noqa: E402

from nri_podres import log, mux, ttrpc  # noqa: E402
from nri_podres._proto import api_pb2 as pb  # noqa: E402
from nri_podres.config import Config  # noqa: E402
from nri_podres.nri.stub import PLUGIN_SERVICE, Stub  # noqa: E402
from nri_podres.nri.transport import Session  # noqa: E402
from nri_podres.plugin import PodresPlugin  # noqa: E402
from nri_podres.state import State  # noqa: E402
from tests.protocol.fake_runtime import FakeRuntime  # noqa: E402

BACKGROUND_PODS = 250


class NoopPlugin:
    """Subscribes to what nri-podres subscribes to and changes nothing."""

    def run_pod_sandbox(self, pod: pb.PodSandbox) -> None:
        pass

    def create_container(self, pod: pb.PodSandbox, container: pb.Container) -> tuple[None, list[pb.ContainerUpdate]]:
        return None, []

    def remove_container(self, pod: pb.PodSandbox, container: pb.Container) -> None:
        pass


def create_request(pod: pb.PodSandbox, ctr: pb.Container) -> pb.CreateContainerRequest:
    return pb.CreateContainerRequest(pod=pod, container=ctr)


def remove_event(pod: pb.PodSandbox, ctr: pb.Container) -> pb.StateChangeEvent:
    return pb.StateChangeEvent(event=pb.REMOVE_CONTAINER, pod=pod, container=ctr)


def background_sync() -> pb.SynchronizeRequest:
    specs = list(pod_mix(0, BACKGROUND_PODS, prefix="bg"))
    return pb.SynchronizeRequest(
        pods=[pod_pb(s.pod) for s in specs],
        containers=[container_pb(c) for s in specs for c in s.containers],
    )


async def round_trips(plugin: object, cases: dict[str, tuple[pb.PodSandbox, pb.Container]], calls: int,
                      setup: list[tuple[str, object]]) -> dict[str, Stats]:
    """Register a Session with a fake runtime over a socketpair, then time CreateContainer calls."""
    runtime_end, plugin_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    r_reader, r_writer = await asyncio.open_unix_connection(sock=runtime_end)
    runtime = FakeRuntime(r_reader, r_writer)
    pump = asyncio.create_task(runtime.pump())
    session = Session(Stub(plugin, "podres", "90"))
    await asyncio.get_running_loop().create_unix_connection(lambda: session, sock=plugin_end)
    served = asyncio.create_task(session.run())
    try:
        await asyncio.wait_for(runtime.registered, 5)
        await runtime.call("Configure", pb.ConfigureRequest(runtime_name="containerd", runtime_version="1.7.24~ds1"))
        for method, request in setup:
            reply = await runtime.call(method, request, timeout_s=60)
            assert reply.code == 0, reply.message
        out = {}
        for name, (pod, ctr) in cases.items():
            create, remove = create_request(pod, ctr), remove_event(pod, ctr)
            for _ in range(min(20, calls)):  # warm-up
                await runtime.call("CreateContainer", create)
                await runtime.call("StateChange", remove)
            wall, cpu = [], []
            for _ in range(calls):
                c0, t0 = time.thread_time(), time.perf_counter()
                reply = await runtime.call("CreateContainer", create)
                t1, c1 = time.perf_counter(), time.thread_time()
                assert reply.code == 0, reply.message
                wall.append((t1 - t0) * 1000)
                cpu.append((c1 - c0) * 1000)
                await runtime.call("StateChange", remove)
            out[name] = stats(wall, cpu)
        return out
    finally:
        served.cancel()
        pump.cancel()
        for task in (served, pump):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        r_writer.close()


def codec_only(pod: pb.PodSandbox, ctr: pb.Container, response: pb.CreateContainerResponse, calls: int) -> Stats:
    """protobuf + ttrpc + mux, both directions, no socket and no handler."""
    client, server = ttrpc.Connection(), ttrpc.Connection()
    server_mux, client_mux = mux.MuxDecoder(), mux.MuxDecoder()
    request = create_request(pod, ctr)

    def once() -> None:
        _, data = client.request(PLUGIN_SERVICE, "CreateContainer", request.SerializeToString())
        for frame in mux.encode_message(mux.PLUGIN_CONN, data):
            server_mux.feed(frame)
        for frame in server_mux.frames():
            for event in server.receive(frame.payload):
                pb.CreateContainerRequest.FromString(event.payload)  # type: ignore[union-attr]
                reply = ttrpc.Connection.respond(event.stream_id, response.SerializeToString())
                for out in mux.encode_message(mux.PLUGIN_CONN, reply):
                    client_mux.feed(out)
        for frame in client_mux.frames():
            for event in client.receive(frame.payload):
                pb.CreateContainerResponse.FromString(event.payload)  # type: ignore[union-attr]

    for _ in range(50):
        once()
    return measure(once, calls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--json", help="also write the numbers here (for benchmarks/summary.py)")
    args = parser.parse_args()
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    log.configure_logging("json", "info", stream=devnull)
    results = Results("protocol")

    web = ordinary_pod("new-web")
    web_pod, web_ctr = pod_pb(web.pod), container_pb(web.containers[0])
    db = db_pod("new-db")
    db_pod_pb, db_ctr = pod_pb(db.pod), container_pb(db.containers[0])
    request_bytes = len(create_request(web_pod, web_ctr).SerializeToString())

    noop = asyncio.run(round_trips(NoopPlugin(), {"no-op plugin": (web_pod, web_ctr)}, args.calls, []))
    topo = machine("768/24N")
    podres = PodresPlugin(topo, Config(), checkpoint=None)
    setup: list[tuple[str, object]] = [
        ("Synchronize", background_sync()),
        ("StateChange", pb.StateChangeEvent(event=pb.RUN_POD_SANDBOX, pod=db_pod_pb)),
        ("StateChange", pb.StateChangeEvent(event=pb.RUN_POD_SANDBOX, pod=web_pod)),
    ]
    real = asyncio.run(round_trips(podres, {
        "nri-podres, ordinary pod": (web_pod, web_ctr),
        "nri-podres, 6 exclusive CPUs": (db_pod_pb, db_ctr),
    }, args.calls, setup))
    assert isinstance(podres.state, State) and len(podres.state.pods) == BACKGROUND_PODS + 2

    adjust, _ = PodresPlugin(topo, Config()).create_container(web_pod, web_ctr)
    response = pb.CreateContainerResponse(adjust=adjust)
    codec_noop = codec_only(web_pod, web_ctr, pb.CreateContainerResponse(), args.calls)
    codec_adjust = codec_only(web_pod, web_ctr, response, args.calls)

    rows = {**noop, **real, "codec only, empty reply": codec_noop, "codec only, cpuset reply": codec_adjust}
    print(f"CreateContainer round trip in process ({args.calls} calls each; request {request_bytes} bytes), ms")
    print(f"{'':<34}{'median':>9}{'p99':>9}{'cpu med':>9}{'cpu p99':>9}")
    for name, st in rows.items():
        print(f"{name:<34}{st.median_ms:>9.3f}{st.p99_ms:>9.3f}{st.cpu_median_ms:>9.3f}{st.cpu_p99_ms:>9.3f}")
        results.put(name, st)
    results.put("request_bytes", request_bytes)
    results.write(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
