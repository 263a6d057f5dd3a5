"""The asyncio driver: socket <-> mux <-> ttrpc <-> stub. Thin on purpose.

The session is the socket's asyncio ``BufferedProtocol``: bytes the runtime sends
are fed to the sans-I/O codecs straight from the event loop's read callback, and requests
on conn 1 are answered there and then (handlers are fast, pure-ish functions), so
one event loop owns all state and a request costs no task switch. Our own calls on
conn 2 (RegisterPlugin, UpdateContainers) are futures resolved by that callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, cast

import structlog

from nri_podres import mux, ttrpc
from nri_podres._proto import api_pb2 as pb
from nri_podres.errors import ProtocolError, RemoteProtocolError, RPCError
from nri_podres.nri.stub import RUNTIME_SERVICE, Stub

log = structlog.get_logger("nri_podres.nri")
CLOSE_WAIT_S = 1.0
READ_BUFFER_BYTES = 1 << 16


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


class Session(asyncio.BufferedProtocol):
    """One trunk connection to the runtime."""

    def __init__(self, stub: Stub, observer: Observer | None = None) -> None:
        self.stub = stub
        self.observer: Observer = observer or NullObserver()
        self._decoder = mux.MuxDecoder()
        self._server = ttrpc.Connection()  # conn 1
        self._client = ttrpc.Connection()  # conn 2
        self._calls: dict[int, asyncio.Future[ttrpc.ResponseReceived]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._transport: asyncio.WriteTransport | None = None
        loop = asyncio.get_running_loop()
        self._ended: asyncio.Future[None] = loop.create_future()  # fails with why the trunk ended
        self._lost: asyncio.Future[None] = loop.create_future()  # the socket is closed
        self._writable: asyncio.Future[None] | None = None  # set while the kernel buffer is full
        # The kernel reads into this one buffer: a plain Protocol would get a fresh
        # 256 KiB bytes object from the event loop for every read.
        self._read_buffer = memoryview(bytearray(READ_BUFFER_BYTES))

    # ---- asyncio.BufferedProtocol ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._ended.done():
            return  # ending: the rest is not ours to answer
        self._decoder.feed(self._read_buffer[:nbytes])
        try:
            for frame in self._decoder.frames():
                self._route(frame)
        except (ResyncRequested, RemoteProtocolError) as exc:
            self._end(exc)

    def eof_received(self) -> bool:
        self._end(ConnectionClosed("runtime closed the connection"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc or ConnectionClosed("runtime closed the connection"))
        if not self._lost.done():
            self._lost.set_result(None)
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # ---- the session ----

    def _end(self, why: BaseException) -> None:
        if self._ended.done():
            return
        self._ended.set_exception(why)
        for future in self._calls.values():  # our outstanding calls will never be answered
            if not future.done():
                future.set_exception(why)

    def _send(self, conn_id: int, message: bytes) -> None:
        # Both frames of a message go out in one write: no other message can slip between them.
        if self._transport is not None and not self._transport.is_closing():
            self._transport.writelines(mux.encode_message(conn_id, message))

    async def _drain(self) -> None:
        if self._writable is not None:
            await self._writable

    async def call(self, method: str, payload: bytes, timeout_s: float | None) -> bytes:
        if self._ended.done():
            raise ConnectionClosed("connection closed")
        timeout_nano = int(timeout_s * 1e9) if timeout_s else 0
        stream_id, data = self._client.request(RUNTIME_SERVICE, method, payload, timeout_nano)
        future: asyncio.Future[ttrpc.ResponseReceived] = asyncio.get_running_loop().create_future()
        self._calls[stream_id] = future
        self._send(mux.RUNTIME_CONN, data)
        try:
            await self._drain()
            resp = await asyncio.wait_for(future, timeout_s)
        finally:
            self._calls.pop(stream_id, None)
            self._client.forget(stream_id)
        if resp.code:
            raise RPCError(resp.code, resp.message)
        return resp.payload

    async def run(self, on_registered: Callable[[], None] | None = None) -> None:
        """Register, then serve until the trunk ends. Raises why it ended."""
        try:
            await self._register()
            if on_registered is not None:
                on_registered()
            await self._ended
        finally:
            self._end(ConnectionClosed("session ended"))
            if not self._ended.cancelled():  # cancelled with us when we are stopped
                self._ended.exception()  # retrieved: asyncio would report it as never seen
            for task in list(self._tasks):
                task.cancel()
            if self._transport is not None:
                self._transport.close()  # what is buffered (a last reply) still goes out
                # The runtime must see this trunk closed before we register again, or it
                # would hold two instances of the plugin (both claiming every cpuset).
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(self._lost), CLOSE_WAIT_S)

    async def _register(self) -> None:
        try:
            await self.call("RegisterPlugin", self.stub.register_request(), timeout_s=self.stub.runtime.registration_timeout_s)
        except RPCError as exc:
            raise RegistrationFailed(f"runtime refused registration: {exc.message}") from exc
        except TimeoutError as exc:
            raise RegistrationFailed("runtime did not answer RegisterPlugin in time") from exc
        log.info("plugin_registered", name=self.stub.name, index=self.stub.idx)

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
        except (RPCError, TimeoutError, ConnectionClosed) as exc:
            log.warning("update_containers_failed", containers=len(updates), error=str(exc))


# Connects a session (the protocol) to the runtime's socket.
Connector = Callable[[Session], Awaitable[object]]


def path_connector(path: str) -> Connector:
    async def connect(session: Session) -> object:
        return await asyncio.get_running_loop().create_unix_connection(lambda: session, path)

    return connect


def fd_connector(fd: int) -> Connector:
    """The socket a runtime passes to a plugin it launched (NRI_PLUGIN_SOCKET)."""

    async def connect(session: Session) -> object:
        sock = socket.socket(fileno=fd)
        return await asyncio.get_running_loop().create_unix_connection(lambda: session, sock=sock)

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
    session = Session(stub, observer=observer)
    try:
        await connect(session)
    except OSError as exc:
        return f"cannot connect: {os.strerror(exc.errno) if exc.errno else exc}", False

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
