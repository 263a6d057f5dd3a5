"""A fake NRI runtime built on our own codecs, playing the runtime's roles:
ttrpc client on conn 1 (calls the plugin) and ttrpc server on conn 2
(answers RegisterPlugin). Used to drive the transport over a real socket."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from nri_podres import mux, ttrpc
from nri_podres._proto import api_pb2 as pb

PLUGIN = "nri.pkg.api.v1alpha1.Plugin"


@dataclass
class FakeRuntime:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    registered: asyncio.Future[pb.RegisterPluginRequest] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    _decoder: mux.MuxDecoder = field(default_factory=mux.MuxDecoder)
    _client: ttrpc.Connection = field(default_factory=ttrpc.Connection)
    _server: ttrpc.Connection = field(default_factory=ttrpc.Connection)
    _calls: dict[int, asyncio.Future[ttrpc.ResponseReceived]] = field(default_factory=dict)
    received_runtime_calls: list[tuple[str, bytes]] = field(default_factory=list)

    async def pump(self) -> None:
        while data := await self.reader.read(65536):
            self._decoder.feed(data)
            for frame in self._decoder.frames():
                conn = self._client if frame.conn_id == mux.PLUGIN_CONN else self._server
                for event in conn.receive(frame.payload):
                    self._on_event(frame.conn_id, event)

    def _on_event(self, conn_id: int, event: ttrpc.Event) -> None:
        if isinstance(event, ttrpc.ResponseReceived) and conn_id == mux.PLUGIN_CONN:
            self._calls.pop(event.stream_id).set_result(event)
        elif isinstance(event, ttrpc.RequestReceived):
            self.received_runtime_calls.append((event.method, event.payload))
            if event.method == "RegisterPlugin" and not self.registered.done():
                self.registered.set_result(pb.RegisterPluginRequest.FromString(event.payload))
            self.send_raw(mux.encode_message(mux.RUNTIME_CONN, ttrpc.Connection.respond(event.stream_id, b"")))

    def send_raw(self, frames: list[bytes]) -> None:
        for f in frames:
            self.writer.write(f)

    async def call(self, method: str, request: object, service: str = PLUGIN, timeout_s: float = 5.0) -> ttrpc.ResponseReceived:
        stream_id, data = self._client.request(service, method, request.SerializeToString())  # type: ignore[attr-defined]
        future: asyncio.Future[ttrpc.ResponseReceived] = asyncio.get_running_loop().create_future()
        self._calls[stream_id] = future
        self.send_raw(mux.encode_message(mux.PLUGIN_CONN, data))
        await self.writer.drain()
        return await asyncio.wait_for(future, timeout_s)
