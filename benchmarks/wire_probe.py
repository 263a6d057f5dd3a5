"""A timing relay between a runtime's NRI socket and one plugin: how long the plugin holds each call.

The plugin dials the probe's socket instead of the runtime's; the probe dials the
runtime's and relays every byte both ways unchanged. On the mux connection where the
runtime calls the plugin, it notes when a request was handed to the plugin and when
the plugin's answer came back. That interval is the plugin's whole share of the call
-- waking up, reading, decoding, deciding, encoding, answering -- measured the same
way for any plugin, in any language, with the runtime's own noise left out.

    python benchmarks/wire_probe.py --listen PROBE.sock --upstream RUNTIME.sock --out FILE.json

Runs until SIGTERM/SIGINT, then writes ``{"CreateContainer": [ms, ...], ...}`` to
FILE.json. StateChange calls are keyed by their event (``StateChange/RUN_POD_SANDBOX``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from nri_podres import mux, ttrpc  # noqa: E402
from nri_podres._proto import api_pb2 as pb  # noqa: E402
from nri_podres._proto import ttrpc_pb2 as tp  # noqa: E402

CHUNK_BYTES = 1 << 16


class CallTimer:
    """Sans-I/O: fed the bytes of both directions, pairs requests with answers by stream id."""

    def __init__(self) -> None:
        self.samples_ms: dict[str, list[float]] = {}
        self._mux = {"to_plugin": mux.MuxDecoder(), "from_plugin": mux.MuxDecoder()}
        self._ttrpc = {"to_plugin": ttrpc.MessageDecoder(), "from_plugin": ttrpc.MessageDecoder()}
        self._open: dict[int, tuple[str, float]] = {}  # stream id -> (call, when handed over)

    def _messages(self, direction: str, data: bytes) -> list[ttrpc.Message]:
        self._mux[direction].feed(data)
        decoder = self._ttrpc[direction]
        for frame in self._mux[direction].frames():
            if frame.conn_id == mux.PLUGIN_CONN:  # the runtime calling the plugin
                decoder.feed(frame.payload)
        return [m for m in decoder.messages() if isinstance(m, ttrpc.Message)]

    def to_plugin(self, data: bytes, now: float) -> None:
        for m in self._messages("to_plugin", data):
            if m.type == ttrpc.MessageType.REQUEST:
                self._open[m.stream_id] = (_call_name(m.data), now)

    def from_plugin(self, data: bytes, now: float) -> None:
        for m in self._messages("from_plugin", data):
            opened = self._open.pop(m.stream_id, None)
            if m.type == ttrpc.MessageType.RESPONSE and opened is not None:
                call, since = opened
                self.samples_ms.setdefault(call, []).append((now - since) * 1000)


def _call_name(data: bytes) -> str:
    request = tp.Request.FromString(data)
    if request.method != "StateChange":
        return request.method
    return f"StateChange/{pb.Event.Name(pb.StateChangeEvent.FromString(request.payload).event)}"


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, note: object, before: bool) -> None:
    """Copy one direction; ``note(data, now)`` sees each chunk, timed before (answers) or
    after (requests) it is passed on, so the interval covers only the plugin's side."""
    try:
        while data := await reader.read(CHUNK_BYTES):
            if before:
                note(data, time.perf_counter())  # type: ignore[operator]
            writer.write(data)
            if not before:
                note(data, time.perf_counter())  # type: ignore[operator]
            await writer.drain()
    finally:
        writer.close()


async def serve(listen: Path, upstream: Path, timer: CallTimer, stop: asyncio.Event) -> None:
    tasks: set[asyncio.Task[None]] = set()

    async def accept(p_reader: asyncio.StreamReader, p_writer: asyncio.StreamWriter) -> None:
        r_reader, r_writer = await asyncio.open_unix_connection(str(upstream))
        both = [asyncio.ensure_future(_relay(r_reader, p_writer, timer.to_plugin, False)),
                asyncio.ensure_future(_relay(p_reader, r_writer, timer.from_plugin, True))]
        tasks.update(both)
        await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        for task in both:
            task.cancel()

    with contextlib.suppress(FileNotFoundError):
        listen.unlink()
    server = await asyncio.start_unix_server(accept, str(listen))
    await stop.wait()
    server.close()
    for task in tasks:
        task.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=Path, required=True)
    parser.add_argument("--upstream", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    timer = CallTimer()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args.listen, args.upstream, timer, stop)

    asyncio.run(run())
    args.out.write_text(json.dumps(timer.samples_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
