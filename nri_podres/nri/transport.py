"""The asyncio driver: socket <-> mux <-> ttrpc <-> stub. Thin on purpose.

One task reads the trunk and feeds the sans-I/O codecs; requests on conn 1
are answered synchronously (handlers are fast, pure-ish functions), so one
event loop owns all state. Our own calls on conn 2 (RegisterPlugin,
UpdateContainers) are futures resolved by the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from nri_podres import mux, ttrpc
from nri_podres._proto import api_pb2 as pb
from nri_podres.errors import ProtocolError, RemoteProtocolError, RPCError
from nri_podres.nri.stub import RUNTIME_SERVICE, Stub

log = structlog.get_logger("nri_podres.nri")
READ_CHUNK_BYTES = 1 << 16


class Observer(Protocol):
    def request_served(self, method: str, seconds: float, code: int) -> None: ...
    def connected(self) -> None: ...
    def disconnected(self, reason: str) -> None: ...


class NullObserver:
    def request_served(self, method: str, seconds: float, code: int) -> None:
        pass

    def connected(self) -> None:
        pass

    def disconnected(self, reason: str) -> None:
        pass


class ConnectionClosed(Exception):
    """The runtime closed the trunk."""


class ResyncRequested(Exception):
    """The plugin asked to see the runtime's state again: reconnect at once."""


class RegistrationFailed(Exception):
    """The runtime refused or did not answer RegisterPlugin."""


@dataclass
class Session:
    """One trunk connection to the runtime."""

    stub: Stub
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    observer: Observer = field(default_factory=NullObserver)
    _decoder: mux.MuxDecoder = field(default_factory=mux.MuxDecoder)
    _server: ttrpc.Connection = field(default_factory=ttrpc.Connection)  # conn 1
    _client: ttrpc.Connection = field(default_factory=ttrpc.Connection)  # conn 2
    _calls: dict[int, asyncio.Future[ttrpc.ResponseReceived]] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def _send(self, conn_id: int, message: bytes) -> None:
        # Both frames of a message are written back to back without yielding,
        # so no other message can slip between them.
        for frame in mux.encode_message(conn_id, message):
            self.writer.write(frame)

    async def call(self, method: str, payload: bytes, timeout_s: float | None) -> bytes:
        timeout_nano = int(timeout_s * 1e9) if timeout_s else 0
        stream_id, data = self._client.request(RUNTIME_SERVICE, method, payload, timeout_nano)
        future: asyncio.Future[ttrpc.ResponseReceived] = asyncio.get_running_loop().create_future()
        self._calls[stream_id] = future
        self._send(mux.RUNTIME_CONN, data)
        await self.writer.drain()
        try:
            resp = await asyncio.wait_for(future, timeout_s)
        finally:
            self._calls.pop(stream_id, None)
            self._client.forget(stream_id)
        if resp.code:
            raise RPCError(resp.code, resp.message)
        return resp.payload

    async def run(self, on_registered: Callable[[], None] | None = None) -> None:
        """Register, then serve until the trunk closes. Raises why it ended."""
        reader = asyncio.create_task(self._read_loop())
        reader.add_done_callback(self._fail_calls)
        try:
            await self._register()
            if on_registered is not None:
                on_registered()
            await reader
        finally:
            reader.cancel()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.writer.close()
            # The runtime must see this trunk closed before we register again, or it
            # would hold two instances of the plugin (both claiming every cpuset).
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await asyncio.wait_for(self.writer.wait_closed(), 1.0)

    def _fail_calls(self, reader: asyncio.Task[None]) -> None:
        """The trunk is gone: our outstanding calls will never be answered."""
        error = None if reader.cancelled() else reader.exception()
        for future in self._calls.values():
            if not future.done():
                future.set_exception(error or ConnectionClosed("connection closed"))

    async def _register(self) -> None:
        try:
            await self.call("RegisterPlugin", self.stub.register_request(), timeout_s=self.stub.runtime.registration_timeout_s)
        except RPCError as exc:
            raise RegistrationFailed(f"runtime refused registration: {exc.message}") from exc
        except TimeoutError as exc:
            raise RegistrationFailed("runtime did not answer RegisterPlugin in time") from exc
        log.info("plugin_registered", name=self.stub.name, index=self.stub.idx)

    async def _read_loop(self) -> None:
        while True:
            data = await self.reader.read(READ_CHUNK_BYTES)
            if not data:
                raise ConnectionClosed("runtime closed the connection")
            self._decoder.feed(data)
            try:
                for frame in self._decoder.frames():
                    self._route(frame)
            finally:
                await self.writer.drain()  # the reply that triggered a resync goes out first

    def _route(self, frame: mux.Frame) -> None:
        if frame.conn_id == mux.PLUGIN_CONN:
            for event in self._server.receive(frame.payload):
                self._on_server_event(event)
        elif frame.conn_id == mux.RUNTIME_CONN:
            for event in self._client.receive(frame.payload):
                self._on_client_event(event)
        else:
            log.warning("mux_frame_dropped", conn_id=frame.conn_id, bytes=len(frame.payload))

    def _on_server_event(self, event: ttrpc.Event) -> None:
        if isinstance(event, ttrpc.RequestReceived):
            self._serve(event)
        elif isinstance(event, ttrpc.Rejected):
            log.warning("ttrpc_request_rejected", stream_id=event.stream_id, reason=event.reason)
            self._send(mux.PLUGIN_CONN, event.reply)
        elif isinstance(event, ttrpc.Ignored):
            log.warning("ttrpc_message_ignored", conn="plugin", stream_id=event.stream_id, reason=event.reason)
        else:
            log.warning("ttrpc_unexpected_response", conn="plugin", stream_id=event.stream_id)

    def _on_client_event(self, event: ttrpc.Event) -> None:
        if isinstance(event, ttrpc.ResponseReceived):
            future = self._calls.get(event.stream_id)
            if future is not None and not future.done():
                future.set_result(event)
        elif isinstance(event, ttrpc.RequestReceived | ttrpc.Rejected):
            # The runtime never calls us on conn 2; answer so it does not wait.
            reply = ttrpc.Connection.respond_error(event.stream_id, ttrpc.Code.UNIMPLEMENTED, "service on runtime connection")
            self._send(mux.RUNTIME_CONN, reply)
        else:
            log.warning("ttrpc_message_ignored", conn="runtime", stream_id=event.stream_id, reason=event.reason)

    def _serve(self, req: ttrpc.RequestReceived) -> None:
        started = time.perf_counter()
        code = 0
        try:
            reply = ttrpc.Connection.respond(req.stream_id, self.stub.handle(req.service, req.method, req.payload))
        except RPCError as exc:
            code = exc.code
            reply = ttrpc.Connection.respond_error(req.stream_id, exc.code, exc.message)
        except ProtocolError as exc:  # e.g. a reply over 4 MiB: fail this request only
            code = ttrpc.Code.RESOURCE_EXHAUSTED
            reply = ttrpc.Connection.respond_error(req.stream_id, code, str(exc))
        self._send(mux.PLUGIN_CONN, reply)
        self.observer.request_served(req.method, time.perf_counter() - started, code)
        self.stub.after_reply()
        self._flush_unsolicited()
        if self.stub.take_resync_request():
            raise ResyncRequested("resynchronizing: pods held after a runtime restart may be gone")

    def _flush_unsolicited(self) -> None:
        updates = self.stub.take_unsolicited_updates()
        if updates:
            task = asyncio.create_task(self._update_containers(updates))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _update_containers(self, updates: list[pb.ContainerUpdate]) -> None:
        payload = pb.UpdateContainersRequest(update=updates).SerializeToString()
        try:
            await self.call("UpdateContainers", payload, timeout_s=self.stub.runtime.request_timeout_s)
        except (RPCError, TimeoutError) as exc:
            log.warning("update_containers_failed", containers=len(updates), error=str(exc))


Connector = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def path_connector(path: str) -> Connector:
    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(path, limit=READ_CHUNK_BYTES)

    return connect


def fd_connector(fd: int) -> Connector:
    """The socket a runtime passes to a plugin it launched (NRI_PLUGIN_SOCKET)."""

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket.socket(fileno=fd)
        return await asyncio.open_unix_connection(sock=sock, limit=READ_CHUNK_BYTES)

    return connect


@dataclass
class Backoff:
    initial_s: float = 0.2
    cap_s: float = 10.0
    _next_s: float = 0.0

    def next_delay(self) -> float:
        self._next_s = self.initial_s if not self._next_s else min(self._next_s * 2, self.cap_s)
        return self._next_s

    def reset(self) -> None:
        self._next_s = 0.0


async def run_forever(
    stub: Stub,
    connect: Connector,
    *,
    reconnect: bool = True,
    observer: Observer | None = None,
    backoff: Backoff | None = None,
) -> None:
    """Connect, register, serve; on any loss reconnect with capped backoff. Cancel to stop."""
    observer = observer or NullObserver()
    backoff = backoff or Backoff()
    while True:
        reason, resync = await _one_session(stub, connect, observer, backoff)
        stub.connection_lost()
        observer.disconnected(reason)
        if not reconnect:
            log.info("nri_connection_ended", reason=reason)
            return
        if resync:
            log.info("nri_resync", reason=reason)
            continue
        delay = backoff.next_delay()
        log.warning("nri_disconnected", reason=reason, retry_in_s=round(delay, 2))
        await asyncio.sleep(delay)


async def _one_session(stub: Stub, connect: Connector, observer: Observer, backoff: Backoff) -> tuple[str, bool]:
    """Why the session ended, and whether the plugin asked for the immediate resync."""
    try:
        reader, writer = await connect()
    except OSError as exc:
        return f"cannot connect: {os.strerror(exc.errno) if exc.errno else exc}", False
    session = Session(stub, reader, writer, observer=observer)

    def registered() -> None:
        backoff.reset()
        observer.connected()

    try:
        await session.run(on_registered=registered)
    except ResyncRequested as exc:
        return str(exc), True
    except (ConnectionClosed, RegistrationFailed, RemoteProtocolError) as exc:
        return str(exc), False
    except OSError as exc:
        return f"connection error: {exc}", False
    return "session ended", False
