"""The stub and transport against a fake runtime over a real Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nri_podres import mux
from nri_podres._proto import api_pb2 as pb
from nri_podres.nri.stub import Stub
from nri_podres.nri.transport import Backoff, path_connector, run_forever
from nri_podres.ttrpc import Code

from .fake_runtime import FakeRuntime


class RecordingPlugin:
    """Pins every container to CPU 1 and records what it saw."""

    def __init__(self) -> None:
        self.synced: list[tuple[int, int]] = []
        self.events: list[str] = []
        self.replied_after: list[int] = []

    def synchronize(self, pods: list[pb.PodSandbox], containers: list[pb.Container]) -> list[pb.ContainerUpdate]:
        self.synced.append((len(pods), len(containers)))
        return [pb.ContainerUpdate(container_id=c.id) for c in containers]

    def create_container(self, pod: pb.PodSandbox, container: pb.Container) -> tuple[pb.ContainerAdjustment, list[pb.ContainerUpdate]]:
        self.events.append(f"create {pod.name}/{container.name}")
        adjust = pb.ContainerAdjustment()
        adjust.linux.resources.cpu.cpus = "1"
        # deliberately messy: two updates for one container and one for the target itself
        u1 = pb.ContainerUpdate(container_id="other")
        u1.linux.resources.cpu.cpus = "0"
        u2 = pb.ContainerUpdate(container_id="other")
        u2.linux.resources.cpu.mems = "0"
        return adjust, [u1, u2, pb.ContainerUpdate(container_id=container.id)]

    def run_pod_sandbox(self, pod: pb.PodSandbox) -> None:
        self.events.append(f"run {pod.name}")

    def remove_container(self, pod: pb.PodSandbox, container: pb.Container) -> None:
        self.events.append(f"remove {container.name}")

    def after_reply(self) -> None:
        self.replied_after.append(len(self.events))  # events handled when each reply had gone out


class Server:
    """Accepts plugin connections on a Unix socket, one FakeRuntime each."""

    def __init__(self) -> None:
        self.runtimes: asyncio.Queue[FakeRuntime] = asyncio.Queue()
        self._pumps: list[asyncio.Task[None]] = []

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rt = FakeRuntime(reader, writer)
        self._pumps.append(asyncio.create_task(rt.pump()))
        await self.runtimes.put(rt)

    async def next_registered(self) -> FakeRuntime:
        rt = await asyncio.wait_for(self.runtimes.get(), 5)
        await asyncio.wait_for(rt.registered, 5)
        return rt


@contextlib.asynccontextmanager
async def plugin_and_runtime(tmp_path: Path, plugin: object) -> AsyncIterator[tuple[Server, asyncio.Task[None]]]:
    path = str(tmp_path / "nri.sock")
    server = Server()
    srv = await asyncio.start_unix_server(server.accept, path)
    stub = Stub(plugin, "podres", "90")
    task = asyncio.create_task(run_forever(stub, path_connector(path), backoff=Backoff(initial_s=0.05, cap_s=0.2)))
    try:
        yield server, task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        srv.close()


async def configure(rt: FakeRuntime, version: str = "1.7.24~ds1") -> pb.ConfigureResponse:
    resp = await rt.call("Configure", pb.ConfigureRequest(runtime_name="containerd", runtime_version=version))
    assert resp.code == 0
    return pb.ConfigureResponse.FromString(resp.payload)


def test_register_configure_sync_create(tmp_path: Path) -> None:
    """Registers with name and index, answers Configure with the derived mask, merges split Synchronize, adjusts."""

    async def scenario() -> None:
        plugin = RecordingPlugin()
        async with plugin_and_runtime(tmp_path, plugin) as (server, _):
            rt = await server.next_registered()
            assert (await asyncio.wait_for(rt.registered, 1)).plugin_idx == "90"
            # RunPodSandbox(0x1) | CreateContainer(0x8) | RemoveContainer(0x400); within 0.6.1's 0x7FF
            assert (await configure(rt)).events == 0x409
            first = await rt.call("Synchronize", pb.SynchronizeRequest(pods=[pb.PodSandbox(id="p")], more=True))
            assert pb.SynchronizeResponse.FromString(first.payload) == pb.SynchronizeResponse(more=True)
            last = await rt.call("Synchronize", pb.SynchronizeRequest(containers=[pb.Container(id="c1"), pb.Container(id="c2")]))
            assert len(pb.SynchronizeResponse.FromString(last.payload).update) == 2
            assert plugin.synced == [(1, 2)]
            req = pb.CreateContainerRequest(pod=pb.PodSandbox(name="db"), container=pb.Container(id="new", name="app"))
            resp = pb.CreateContainerResponse.FromString((await rt.call("CreateContainer", req)).payload)
            assert resp.adjust.linux.resources.cpu.cpus == "1"
            assert [u.container_id for u in resp.update] == ["other"]  # merged, and never the target itself
            assert (resp.update[0].linux.resources.cpu.cpus, resp.update[0].linux.resources.cpu.mems) == ("0", "0")

    asyncio.run(scenario())


def test_state_change_and_dedicated_methods(tmp_path: Path) -> None:
    """0.6.1 StateChange events reach handlers; v0.12 dedicated calls do too, or get UNIMPLEMENTED."""

    async def scenario() -> None:
        plugin = RecordingPlugin()
        async with plugin_and_runtime(tmp_path, plugin) as (server, _):
            rt = await server.next_registered()
            await configure(rt)
            pod = pb.PodSandbox(name="web")
            await rt.call("StateChange", pb.StateChangeEvent(event=pb.RUN_POD_SANDBOX, pod=pod))
            await rt.call("RunPodSandbox", pb.RunPodSandboxRequest(pod=pod))
            await rt.call("StateChange", pb.StateChangeEvent(event=pb.REMOVE_CONTAINER, pod=pod, container=pb.Container(name="c")))
            unimplemented = await rt.call("StartContainer", pb.StartContainerRequest(pod=pod))
            assert plugin.events == ["run web", "run web", "remove c"]
            assert (unimplemented.code, unimplemented.message) == (Code.UNIMPLEMENTED, "method StartContainer")
            wrong_service = await rt.call("Anything", pb.Empty(), service="some.Other")
            assert (wrong_service.code, wrong_service.message) == (Code.UNIMPLEMENTED, "service some.Other")

    asyncio.run(scenario())


def test_newer_runtime_gets_update_pod_sandbox_bit_only_when_it_knows_it() -> None:
    """The mask never holds bits the runtime's NRI version would reject."""

    class Resizer(RecordingPlugin):
        def update_pod_sandbox(self, pod: object, overhead: object, resources: object) -> None:
            pass

    stub = Stub(Resizer(), "podres", "90")
    old = pb.ConfigureResponse.FromString(stub.handle("nri.pkg.api.v1alpha1.Plugin", "Configure", pb.ConfigureRequest(runtime_name="containerd", runtime_version="1.7.24~ds1").SerializeToString()))
    new = pb.ConfigureResponse.FromString(stub.handle("nri.pkg.api.v1alpha1.Plugin", "Configure", pb.ConfigureRequest(runtime_name="containerd", runtime_version="v2.2.0", NRI_version="v0.12.2").SerializeToString()))
    assert old.events & 0x800 == 0
    assert new.events & 0x800 == 0x800


@pytest.mark.parametrize(
    ("garbage", "why"),
    [
        (mux.HEADER.pack(1, 80 << 20), "mux frame"),  # absurd frame length
        (b"\x00\x00\x00\x01\x00\x00\x00\x05hello", "half a ttrpc header then EOF"),
    ],
)
def test_malformed_input_or_hangup_leads_to_reconnect(tmp_path: Path, garbage: bytes, why: str) -> None:
    """A bad frame or a hang-up mid-message ends that connection; the plugin dials again and re-registers."""

    async def scenario() -> None:
        async with plugin_and_runtime(tmp_path, RecordingPlugin()) as (server, task):
            rt = await server.next_registered()
            await configure(rt)
            rt.writer.write(garbage)
            await rt.writer.drain()
            rt.writer.close()
            again = await server.next_registered()
            assert (await configure(again)).events
            assert not task.done()

    asyncio.run(scenario())


def test_undecodable_payload_is_an_error_reply_not_a_crash(tmp_path: Path) -> None:
    """A request whose NRI payload does not parse gets INTERNAL; the next request still works."""

    async def scenario() -> None:
        async with plugin_and_runtime(tmp_path, RecordingPlugin()) as (server, _):
            rt = await server.next_registered()
            await configure(rt)

            class Raw:
                def SerializeToString(self) -> bytes:  # noqa: N802 - protobuf's name
                    return b"\x0a\xff"

            bad = await rt.call("CreateContainer", Raw())
            assert bad.code == Code.INTERNAL
            assert "error unmarshalling payload" in bad.message
            assert (await configure(rt)).events

    asyncio.run(scenario())


def test_plugin_without_handlers_is_refused() -> None:
    """A plugin that implements nothing cannot subscribe to anything: say so at construction."""
    from nri_podres.errors import ConfigError

    with pytest.raises(ConfigError, match="implements no NRI event handlers"):
        Stub(object(), "podres", "90")


@pytest.mark.parametrize(("name", "idx", "error"), [("pod res", "90", "plugin name"), ("podres", "9", "plugin index"), ("podres", "x1", "plugin index")])
def test_bad_identity_is_refused(name: str, idx: str, error: str) -> None:
    """Name and index are checked as the runtime checks them, with the bad value in the message."""
    from nri_podres.errors import ConfigError

    with pytest.raises(ConfigError, match=error):
        Stub(RecordingPlugin(), name, idx)


def test_after_reply_follows_every_answered_request(tmp_path: Path) -> None:
    """The stub's after_reply hook (where the daemon writes its log lines) runs once per reply, after the handler."""

    async def scenario() -> None:
        plugin = RecordingPlugin()
        async with plugin_and_runtime(tmp_path, plugin) as (server, _):
            rt = await server.next_registered()
            await configure(rt)
            await rt.call("Synchronize", pb.SynchronizeRequest())
            req = pb.CreateContainerRequest(pod=pb.PodSandbox(name="db"), container=pb.Container(id="c", name="app"))
            assert (await rt.call("CreateContainer", req)).code == 0
            assert (await rt.call("NoSuchMethod", pb.Empty())).code == Code.UNIMPLEMENTED
            assert plugin.events == ["create db/app"]
            assert plugin.replied_after == [0, 0, 1, 1]  # Configure, Synchronize, CreateContainer, the unknown method

    asyncio.run(scenario())
