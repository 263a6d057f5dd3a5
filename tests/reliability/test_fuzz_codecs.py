"""Fuzzing the wire: mux and ttrpc decoders, the stub's dispatch, the NRI handlers, the live session.

Whatever the runtime sends, the outcome is a clean error (an error reply, an
ignored message, or the connection dropped and dialled again): no exception
escapes the codecs, no handler crashes into INTERNAL, nothing hangs, and the
decoders never hold more than one bounded message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from nri_podres import mux, ttrpc
from nri_podres._proto import api_pb2 as pb
from nri_podres._proto import ttrpc_pb2 as tp
from nri_podres.config import default_config
from nri_podres.cpuset import CPUSet
from nri_podres.errors import RemoteProtocolError, RPCError
from nri_podres.nri.stub import PLUGIN_SERVICE, Stub
from nri_podres.nri.transport import Backoff, path_connector, run_forever
from nri_podres.plugin import PodresPlugin
from nri_podres.resources import Pool
from nri_podres.ttrpc import Code
from tests import topologies as t
from tests.protocol.fake_runtime import FakeRuntime

SMALL_FRAME_BYTES = 512  # small limits so that hypothesis reaches them
SMALL_MESSAGE_BYTES = 256
# NRI_PODRES_FUZZ_EXAMPLES scales every fuzz test up (e.g. 20000 for a long run).
EXAMPLES = int(os.environ.get("NRI_PODRES_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
chunks = st.lists(st.binary(max_size=300), max_size=12)


def header(conn_id: int, length: int) -> bytes:
    return mux.HEADER.pack(conn_id, length)


# --- the mux decoder -----------------------------------------------------------------


@FUZZ
@given(chunks)
def test_mux_decoder_on_arbitrary_bytes_yields_frames_or_one_protocol_error(data: list[bytes]) -> None:
    """Any byte stream gives well-formed frames, or RemoteProtocolError; the buffer stays bounded."""
    decoder = mux.MuxDecoder(max_frame_bytes=SMALL_FRAME_BYTES)
    for chunk in data:
        decoder.feed(chunk)
        try:
            frames = list(decoder.frames())
        except RemoteProtocolError as exc:
            assert "exceeds" in str(exc)
            return  # the session ends here and the plugin dials again
        assert all(isinstance(f, mux.Frame) and 0 < len(f.payload) <= SMALL_FRAME_BYTES for f in frames)
        assert decoder.buffered_bytes < mux.HEADER.size + SMALL_FRAME_BYTES


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([1, 2, 7]), st.binary(min_size=1, max_size=9000)), max_size=5), st.data())
def test_mux_round_trip_survives_any_cutting(messages: list[tuple[int, bytes]], data: st.DataObject) -> None:
    """Frames cut like Go's writer, re-cut arbitrarily by the socket, give back each connection's bytes."""
    stream = b"".join(f for conn, m in messages for f in mux.encode_message(conn, m))
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=10))))
    decoder = mux.MuxDecoder()
    got: dict[int, bytes] = {}
    prev = 0
    for cut in [*cuts, len(stream)]:
        decoder.feed(stream[prev:cut])
        prev = cut
        for frame in decoder.frames():
            got[frame.conn_id] = got.get(frame.conn_id, b"") + frame.payload
    want: dict[int, bytes] = {}
    for conn, m in messages:
        want[conn] = want.get(conn, b"") + m
    assert got == want
    assert decoder.buffered_bytes == 0


@pytest.mark.parametrize("length", [mux.MAX_FRAME_BYTES + 1, 0xFFFFFFFF])
def test_oversized_mux_header_is_refused_before_any_payload_arrives(length: int) -> None:
    """A header announcing more than the limit fails at once: nothing waits for gigabytes."""
    decoder = mux.MuxDecoder()
    decoder.feed(header(1, length))
    with pytest.raises(RemoteProtocolError, match=f"mux frame of {length} bytes on conn 1 exceeds"):
        list(decoder.frames())


# --- the ttrpc decoder and connection --------------------------------------------------


@FUZZ
@given(chunks)
def test_ttrpc_decoder_on_arbitrary_bytes_never_raises_and_stays_bounded(data: list[bytes]) -> None:
    """Messages or Oversized markers come out; an oversized body is skipped, never buffered."""
    decoder = ttrpc.MessageDecoder(max_receive_bytes=SMALL_MESSAGE_BYTES)
    for chunk in data:
        decoder.feed(chunk)
        for m in decoder.messages():
            assert isinstance(m, ttrpc.Message | ttrpc.Oversized)
            if isinstance(m, ttrpc.Message):
                assert len(m.data) <= SMALL_MESSAGE_BYTES
            else:
                assert m.length > SMALL_MESSAGE_BYTES
        assert len(decoder._buf) < ttrpc.HEADER.size + SMALL_MESSAGE_BYTES  # noqa: SLF001 - the bound under test


@FUZZ
@given(chunks)
def test_ttrpc_connection_turns_any_bytes_into_events(data: list[bytes]) -> None:
    """Requests, responses, rejections (with a reply to send) or ignored messages: nothing else, no exception."""
    conn = ttrpc.Connection()
    conn.request("svc", "M", b"")  # one call outstanding, so that responses can match
    for chunk in data:
        for received in conn.receive(chunk):
            assert isinstance(received, ttrpc.RequestReceived | ttrpc.ResponseReceived | ttrpc.Rejected | ttrpc.Ignored)
            if isinstance(received, ttrpc.Rejected):
                assert ttrpc.HEADER.unpack_from(received.reply)[2] == ttrpc.MessageType.RESPONSE


def request(stream_id: int, method: str = "Configure", service: str = PLUGIN_SERVICE, payload: bytes = b"") -> bytes:
    body = tp.Request(service=service, method=method, payload=payload).SerializeToString()
    return ttrpc.encode(stream_id, ttrpc.MessageType.REQUEST, body)


@pytest.mark.parametrize(
    ("ids", "reasons"),
    [
        ([2], ["StreamID must be odd for client initiated streams"]),
        ([3, 3], [None, "StreamID cannot be re-used and must increment"]),
        ([5, 1], [None, "StreamID cannot be re-used and must increment"]),
        ([1, 3, 7], [None, None, None]),
    ],
)
def test_wrong_stream_ids_are_answered_with_invalid_argument(ids: list[int], reasons: list[str | None]) -> None:
    """Even or non-increasing ids get INVALID_ARGUMENT on that stream, as the Go server answers."""
    conn = ttrpc.Connection()
    for stream_id, reason in zip(ids, reasons, strict=True):
        (event,) = conn.receive(request(stream_id))
        if reason is None:
            assert isinstance(event, ttrpc.RequestReceived)
        else:
            assert isinstance(event, ttrpc.Rejected) and event.reason == reason
            status = tp.Response.FromString(event.reply[ttrpc.HEADER.size :]).status
            assert (status.code, status.message) == (Code.INVALID_ARGUMENT, reason)


def test_duplicate_and_unsolicited_responses_are_ignored() -> None:
    """A response is matched once; a second copy, or one for a stream never opened, changes nothing."""
    conn = ttrpc.Connection()
    stream_id, _ = conn.request("svc", "M", b"")
    reply = ttrpc.Connection.respond(stream_id, b"answer")
    assert conn.receive(reply) == [ttrpc.ResponseReceived(stream_id, 0, "", b"answer")]
    assert conn.receive(reply) == [ttrpc.Ignored(stream_id, "response for an unknown or finished stream")]
    assert conn.receive(ttrpc.Connection.respond(99, b"")) == [ttrpc.Ignored(99, "response for an unknown or finished stream")]


def test_oversized_request_is_answered_and_skipped_then_the_next_one_is_served() -> None:
    """A request over the receive limit gets RESOURCE_EXHAUSTED; its bytes are skipped, the stream continues."""
    conn = ttrpc.Connection()
    huge = ttrpc.HEADER.pack(ttrpc.MAX_RECEIVE_BYTES + 1, 1, ttrpc.MessageType.REQUEST, 0)
    events = conn.receive(huge + b"x" * 1000)
    assert len(events) == 1 and isinstance(events[0], ttrpc.Rejected)
    assert "exceed maximum message size" in events[0].reason
    remaining = ttrpc.MAX_RECEIVE_BYTES + 1 - 1000
    for offset in range(0, remaining, 1 << 20):
        assert conn.receive(b"y" * min(1 << 20, remaining - offset)) == []
    (event,) = conn.receive(request(3))
    assert isinstance(event, ttrpc.RequestReceived) and event.method == "Configure"


# --- the stub and the NRI handlers ------------------------------------------------------


def make_stub() -> tuple[Stub, PodresPlugin]:
    plugin = PodresPlugin(t.synthetic(2, 1, 2, 2, memory_bytes=8 * t.GIB), default_config())
    stub = Stub(plugin, "podres", "90")
    stub.handle(PLUGIN_SERVICE, "Configure", pb.ConfigureRequest(runtime_name="containerd", runtime_version="1.7.24").SerializeToString())
    stub.handle(PLUGIN_SERVICE, "Synchronize", pb.SynchronizeRequest().SerializeToString())
    return stub, plugin


METHODS = ["Configure", "Synchronize", "Shutdown", "CreateContainer", "UpdateContainer", "StopContainer",
           "UpdatePodSandbox", "StateChange", "RunPodSandbox", "RemovePodSandbox", "NoSuchMethod", ""]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(METHODS), st.binary(max_size=200)), max_size=8))
def test_stub_answers_arbitrary_payloads_with_bytes_or_a_clean_rpc_error(calls: list[tuple[str, bytes]]) -> None:
    """Undecodable or nonsensical requests become UNIMPLEMENTED/INTERNAL(unmarshal)/refusals, never a crash."""
    stub, _ = make_stub()
    for method, payload in calls:
        try:
            out = stub.handle(PLUGIN_SERVICE, method, payload)
        except RPCError as exc:
            assert exc.code in (Code.UNIMPLEMENTED, Code.INTERNAL, Code.RESOURCE_EXHAUSTED, Code.FAILED_PRECONDITION)
            assert "internal error" not in exc.message, exc.message  # a handler crash is a bug
        else:
            assert isinstance(out, bytes)


@pytest.mark.parametrize(("service", "method", "error"), [
    ("nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin", "service nri.pkg.api.v1alpha1.Runtime"),
    ("", "Configure", "service "),
    (PLUGIN_SERVICE, "RegisterPlugin", "method RegisterPlugin"),
    (PLUGIN_SERVICE, "configure", "method configure"),
])
def test_unknown_services_and_methods_are_unimplemented(service: str, method: str, error: str) -> None:
    stub, _ = make_stub()
    with pytest.raises(RPCError) as err:
        stub.handle(service, method, b"")
    assert (err.value.code, err.value.message) == (Code.UNIMPLEMENTED, error)


ids = st.sampled_from(["a", "b", "c", ""])
annotations = st.dictionaries(
    st.sampled_from(["podres.nri.io/opt-out", "podres.nri.io/numa-node", "other"]),
    st.sampled_from(["true", "false", "0", "1", "0-1", "7", "-1", "x", "", "0,,1", "99999999999999999999"]),
    max_size=2,
)
opt_int = st.one_of(st.none(), st.integers(-2, 1 << 40), st.sampled_from([1024, 2048, 4096, 100000, 200000, 150000]))


@st.composite
def linux_resources(draw: st.DrawFn) -> pb.LinuxResources:
    res = pb.LinuxResources()
    for field_name, value in (("shares", draw(opt_int)), ("quota", draw(opt_int)), ("period", draw(opt_int))):
        if value is not None:  # shares and period are unsigned on the wire
            getattr(res.cpu, field_name).value = value if field_name == "quota" else abs(value)
    limit = draw(opt_int)
    if limit is not None:
        res.memory.limit.value = limit
    res.cpu.cpus = draw(st.sampled_from(["", "0", "0-7", "1,3", "x", "99", "3-1"]))
    res.cpu.mems = draw(st.sampled_from(["", "0", "1", "0-1", "9"]))
    return res


@st.composite
def guaranteed(draw: st.DrawFn) -> pb.LinuxResources:
    """Well-formed Guaranteed values (whole or fractional), so that bubbles and exclusive slices happen."""
    millis = draw(st.sampled_from([500, 1000, 1000, 2000, 3000, 4000, 9000]))
    res = pb.LinuxResources()
    res.cpu.shares.value = millis * 1024 // 1000
    res.cpu.quota.value = millis * 100
    res.cpu.period.value = 100000
    res.memory.limit.value = draw(st.sampled_from([64 << 20, 1 << 30, 5 << 30, 20 << 30]))
    return res


any_resources = st.one_of(linux_resources(), guaranteed(), guaranteed())


@st.composite
def pods(draw: st.DrawFn) -> pb.PodSandbox:
    pod = pb.PodSandbox(id=draw(ids), name=draw(st.sampled_from(["p", "q", ""])), namespace="ns", uid=draw(ids))
    pod.annotations.update(draw(annotations))
    if draw(st.booleans()):
        pod.linux.pod_resources.CopyFrom(draw(any_resources))
    return pod


@st.composite
def containers(draw: st.DrawFn) -> pb.Container:
    ctr = pb.Container(id=draw(st.sampled_from(["c1", "c2", "c3", ""])), pod_sandbox_id=draw(ids), name="x",
                       state=draw(st.sampled_from([0, 1, 2, 3, 4, 9])))
    ctr.annotations.update(draw(annotations))
    if draw(st.booleans()):
        ctr.linux.resources.CopyFrom(draw(any_resources))
    return ctr


@st.composite
def nri_calls(draw: st.DrawFn) -> tuple[str, bytes]:
    pod, ctr = draw(pods()), draw(containers())
    if draw(st.integers(0, 3)):  # mostly consistent, as a runtime sends them
        ctr.pod_sandbox_id = pod.id
    kind = draw(st.sampled_from(["run", "run", "create", "create", "create", "update", "stop", "remove", "remove-pod", "resize-pod", "sync"]))
    if kind == "run":
        return "StateChange", pb.StateChangeEvent(event=pb.RUN_POD_SANDBOX, pod=pod).SerializeToString()
    if kind == "create":
        return "CreateContainer", pb.CreateContainerRequest(pod=pod, container=ctr).SerializeToString()
    if kind == "update":
        return "UpdateContainer", pb.UpdateContainerRequest(pod=pod, container=ctr, linux_resources=draw(linux_resources())).SerializeToString()
    if kind == "stop":
        return "StopContainer", pb.StopContainerRequest(pod=pod, container=ctr).SerializeToString()
    if kind == "remove":
        return "StateChange", pb.StateChangeEvent(event=pb.REMOVE_CONTAINER, pod=pod, container=ctr).SerializeToString()
    if kind == "remove-pod":
        return "StateChange", pb.StateChangeEvent(event=pb.REMOVE_POD_SANDBOX, pod=pod).SerializeToString()
    if kind == "resize-pod":
        return "UpdatePodSandbox", pb.UpdatePodSandboxRequest(pod=pod, linux_resources=draw(linux_resources())).SerializeToString()
    return "Synchronize", pb.SynchronizeRequest(pods=[pod], containers=[ctr]).SerializeToString()


def assert_sound(plugin: PodresPlugin) -> None:
    state = plugin.state
    slices = [r.assignment.cpus for r in state.containers.values() if r.running and r.assignment.pool is Pool.EXCLUSIVE]
    seen = CPUSet()
    for cpus in slices:
        assert not (seen & cpus), f"CPU(s) {seen & cpus} in two exclusive slices"
        seen |= cpus
    bubbles = [p.reservation.cpus for p in state.pods.values() if p.mode == "bubble" and p.reservation]
    for i, a in enumerate(bubbles):
        for b in bubbles[i + 1 :]:
            assert not (a & b), f"bubbles overlap on {a & b}"
    for r in state.containers.values():
        pod = state.pods.get(r.pod_id)
        if r.running and pod is not None and pod.mode == "bubble" and pod.reservation:
            assert r.assignment.cpus <= pod.reservation.cpus, f"{r.id} outside its bubble"
            if r.assignment.pool is Pool.POD_SHARED:
                assert r.assignment.cpus and not (r.assignment.cpus & seen)


@settings(max_examples=EXAMPLES * 2 // 3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(nri_calls(), max_size=14))
def test_arbitrary_nri_events_never_crash_a_handler_nor_break_an_invariant(calls: list[tuple[str, bytes]]) -> None:
    """Structurally valid but arbitrary NRI requests (unknown ids, absurd numbers, bad annotations and sets,
    events out of order): each is answered or refused with a typed error, and the state stays sound."""
    stub, plugin = make_stub()
    for method, payload in calls:
        try:
            stub.handle(PLUGIN_SERVICE, method, payload)
        except RPCError as exc:
            assert exc.code in (Code.RESOURCE_EXHAUSTED, Code.FAILED_PRECONDITION), f"{method}: {exc.code} {exc.message}"
        assert_sound(plugin)
    if any(p.mode == "bubble" for p in plugin.state.pods.values()):
        event("a bubble was placed")
    if any(r.assignment.pool is Pool.EXCLUSIVE for r in plugin.state.containers.values()):
        event("an exclusive slice was carved")


# --- the live session over a socket -----------------------------------------------------


class Plugin:
    def run_pod_sandbox(self, pod: pb.PodSandbox) -> None:
        pass


@contextlib.asynccontextmanager
async def session(tmp_path: Path) -> AsyncIterator[asyncio.Queue[FakeRuntime]]:
    runtimes: asyncio.Queue[FakeRuntime] = asyncio.Queue()
    pumps = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rt = FakeRuntime(reader, writer)
        pumps.append(asyncio.create_task(rt.pump()))
        await runtimes.put(rt)

    path = str(tmp_path / "nri.sock")
    server = await asyncio.start_unix_server(accept, path)
    task = asyncio.create_task(run_forever(Stub(Plugin(), "podres", "90"), path_connector(path), backoff=Backoff(0.02, 0.05)))
    try:
        yield runtimes
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for p in pumps:
            p.cancel()
        server.close()
        assert task.cancelled(), "run_forever ended by itself"


async def registered(runtimes: asyncio.Queue[FakeRuntime]) -> FakeRuntime:
    rt = await asyncio.wait_for(runtimes.get(), 5)
    await asyncio.wait_for(rt.registered, 5)
    return rt


async def alive(rt: FakeRuntime) -> bool:
    try:
        resp = await rt.call("Configure", pb.ConfigureRequest(runtime_name="containerd", runtime_version="1.7.24"), timeout_s=1)
    except (TimeoutError, KeyError, ConnectionError):
        return False
    return resp.code == 0


def garbage(rng: random.Random) -> bytes:
    """Junk a broken peer could send: random bytes, lying headers, frames for strange connections."""
    shape = rng.randrange(6)
    if shape == 0:
        return rng.randbytes(rng.randrange(1, 4000))
    if shape == 1:  # a mux frame for a connection nobody opened
        body = rng.randbytes(rng.randrange(1, 100))
        return header(rng.choice([0, 3, 255, 0xFFFFFFFF]), len(body)) + body
    if shape == 2:  # a ttrpc message of an unknown type on the plugin connection
        msg = ttrpc.HEADER.pack(3, 1001, rng.choice([0, 3, 9, 255]), 0) + b"abc"
        return header(mux.PLUGIN_CONN, len(msg)) + msg
    if shape == 3:  # duplicate / unsolicited responses on the runtime connection
        msg = ttrpc.Connection.respond(rng.choice([1, 3, 99]), b"") * 2
        return header(mux.RUNTIME_CONN, len(msg)) + msg
    if shape == 4:  # the runtime calling us on its own connection
        msg = request(rng.randrange(1, 50) * 2 + 1, "Anything", "some.Service")
        return header(mux.RUNTIME_CONN, len(msg)) + msg
    msg = rng.randbytes(rng.randrange(10, 300))  # garbage inside a well-framed plugin connection
    return header(mux.PLUGIN_CONN, len(msg)) + msg


@pytest.mark.parametrize("seed", range(12))
def test_live_session_survives_garbage_by_serving_or_reconnecting(tmp_path: Path, seed: int) -> None:
    """After any junk the plugin either still answers on the same connection or has dialled again
    and registered anew; run_forever never ends on its own, and nothing waits forever."""
    rng = random.Random(seed)

    async def scenario() -> None:
        async with session(tmp_path) as runtimes:
            rt = await registered(runtimes)
            for _ in range(6):
                rt.writer.write(garbage(rng))
                await rt.writer.drain()
                await asyncio.sleep(0.01)
                if not await alive(rt):
                    rt.writer.close()
                    rt = await registered(runtimes)
                    assert await alive(rt)

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_runtime_calling_on_its_own_connection_is_answered_unimplemented(tmp_path: Path) -> None:
    """A request on conn 2 gets UNIMPLEMENTED on conn 2 (so the runtime does not wait) and the session goes on."""

    async def scenario() -> None:
        async with session(tmp_path) as runtimes:
            rt = await registered(runtimes)
            answers: list[ttrpc.Event] = []
            client = ttrpc.Connection()
            original = rt._on_event  # noqa: SLF001 - watch what arrives on conn 2

            def watch(conn_id: int, event: ttrpc.Event) -> None:
                if conn_id == mux.RUNTIME_CONN and isinstance(event, ttrpc.Ignored):
                    answers.append(event)
                original(conn_id, event)

            rt._on_event = watch  # type: ignore[method-assign]  # noqa: SLF001
            _, data = client.request("some.Service", "Anything", b"")
            rt.send_raw(mux.encode_message(mux.RUNTIME_CONN, data))
            await rt.writer.drain()
            assert await alive(rt)
            assert answers, "no answer on the runtime connection"

    asyncio.run(asyncio.wait_for(scenario(), 30))
