"""NRI connection multiplexer codec (sans-I/O).

Wire format: ``[u32 conn_id][u32 length][length bytes]``, big-endian. Each
logical connection is a byte stream: frame boundaries say nothing about the
messages inside, so the decoder only yields ``(conn_id, chunk)`` pairs and the
ttrpc layer reassembles messages per connection.

Sending is the subtle part. The Go reader hands exactly one frame to a read
call and fails with ENOMEM when the frame does not fit its buffer, and ttrpc
reads through a 4096-byte bufio buffer. So each message is cut exactly as the
Go writer cuts it: a first frame of at most 4096 bytes, then one frame with
the rest of that message, and never two messages in one frame.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

from nri_podres.errors import RemoteProtocolError

HEADER = struct.Struct(">II")
PLUGIN_CONN = 1  # runtime is the ttrpc client, we serve nri.pkg.api.v1alpha1.Plugin
RUNTIME_CONN = 2  # we are the client of nri.pkg.api.v1alpha1.Runtime
GO_READ_BUFFER_BYTES = 4096
# Go readers accept any length; we bound a frame so a corrupt header cannot
# make us buffer gigabytes. A 0.6.1 runtime's largest frame is 16 MiB.
MAX_FRAME_BYTES = 64 << 20


class Frame(NamedTuple):
    conn_id: int
    payload: bytes


class MuxDecoder:
    """Bytes in, frames out. Zero-length frames are dropped (Go never sends them)."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_frame_bytes

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def frames(self) -> Iterator[Frame]:
        buf = self._buf
        pos = 0
        try:
            while len(buf) - pos >= HEADER.size:
                conn_id, length = HEADER.unpack_from(buf, pos)
                if length > self._max:
                    msg = f"mux frame of {length} bytes on conn {conn_id} exceeds {self._max}"
                    raise RemoteProtocolError(msg)
                end = pos + HEADER.size + length
                if len(buf) < end:
                    break
                payload = bytes(buf[pos + HEADER.size : end])
                pos = end
                if payload:
                    yield Frame(conn_id, payload)
        finally:
            del buf[:pos]


def encode_message(conn_id: int, message: bytes) -> list[bytes]:
    """Frames for one whole ttrpc message, cut the way the Go writer cuts it."""
    if not message:
        return []
    head = message[:GO_READ_BUFFER_BYTES]
    frames = [HEADER.pack(conn_id, len(head)) + head]
    rest = message[GO_READ_BUFFER_BYTES:]
    if rest:
        frames.append(HEADER.pack(conn_id, len(rest)) + rest)
    return frames
