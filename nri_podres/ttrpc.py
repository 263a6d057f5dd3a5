"""ttrpc codec and connection state machine (sans-I/O).

Message: ``[u32 length][u32 stream_id][u8 type][u8 flags][length bytes]``.
``Connection`` turns a byte stream into events (requests received, responses
received) and turns calls into bytes; it never touches a socket.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from nri_podres._proto import ttrpc_pb2 as tp
from nri_podres.errors import LocalProtocolError

HEADER = struct.Struct(">IIBB")
MAX_MESSAGE_BYTES = 4 << 20  # what a Go peer accepts; we never send more
# A 0.6.1 runtime (ttrpc 1.2.4) does not check its own sends, so a huge
# Synchronize can exceed 4 MiB; accept up to this much before refusing.
MAX_RECEIVE_BYTES = 16 << 20


class MessageType(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3


class Code(enum.IntEnum):
    """gRPC status codes used on the wire."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14


@dataclass(frozen=True, slots=True)
class Message:
    stream_id: int
    type: int
    flags: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Oversized:
    """A message longer than the receive limit; its bytes were discarded."""

    stream_id: int
    type: int
    length: int


def encode(stream_id: int, mtype: MessageType, data: bytes, flags: int = 0) -> bytes:
    if len(data) > MAX_MESSAGE_BYTES:
        msg = f"ttrpc message of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit"
        raise LocalProtocolError(msg)
    return HEADER.pack(len(data), stream_id, mtype, flags) + data


class MessageDecoder:
    """Reassembles ttrpc messages from one logical connection's byte stream."""

    def __init__(self, max_receive_bytes: int = MAX_RECEIVE_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_receive_bytes
        self._discard = 0  # bytes of an oversized message still to skip

    def feed(self, data: bytes) -> None:
        if self._discard:
            skip = min(self._discard, len(data))
            self._discard -= skip
            data = data[skip:]
        self._buf += data

    def messages(self) -> Iterator[Message | Oversized]:
        buf = self._buf
        pos = 0
        try:
            while len(buf) - pos >= HEADER.size and not self._discard:
                length, stream_id, mtype, flags = HEADER.unpack_from(buf, pos)
                if length > self._max:
                    pos += HEADER.size
                    skip = min(length, len(buf) - pos)
                    pos += skip
                    self._discard = length - skip
                    yield Oversized(stream_id, mtype, length)
                    continue
                end = pos + HEADER.size + length
                if len(buf) < end:
                    break
                data = bytes(buf[pos + HEADER.size : end])
                pos = end
                yield Message(stream_id, mtype, flags, data)
        finally:
            del buf[:pos]


# ---- events produced by Connection ----------------------------------------


@dataclass(frozen=True, slots=True)
class RequestReceived:
    stream_id: int
    service: str
    method: str
    payload: bytes
    timeout_nano: int


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    stream_id: int
    code: int
    message: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """An inbound message we answered with an error ourselves (bytes to send)."""

    stream_id: int
    reason: str
    reply: bytes


@dataclass(frozen=True, slots=True)
class Ignored:
    """An inbound message that needs no answer and changes nothing."""

    stream_id: int
    reason: str


Event = RequestReceived | ResponseReceived | Rejected | Ignored


class Connection:
    """One ttrpc session on one logical connection, as server and/or client.

    The server side checks stream ids the way the Go server does (odd, strictly
    increasing); the client side allocates odd, increasing ids and matches
    responses to outstanding calls.
    """

    def __init__(self) -> None:
        self._decoder = MessageDecoder()
        self._last_inbound_id = 0
        self._next_outbound_id = 1
        self._pending: set[int] = set()

    # -- inbound --
    def receive(self, data: bytes) -> list[Event]:
        self._decoder.feed(data)
        return [self._handle(m) for m in self._decoder.messages()]

    def _handle(self, m: Message | Oversized) -> Event:
        if isinstance(m, Oversized):
            return self._oversized(m)
        if m.type == MessageType.REQUEST:
            return self._request(m)
        if m.type == MessageType.RESPONSE:
            return self._response(m)
        return Ignored(m.stream_id, f"unsupported ttrpc message type {m.type}")

    def _oversized(self, m: Oversized) -> Event:
        text = f"message length {m.length} exceed maximum message size of {MAX_RECEIVE_BYTES}"
        if m.type == MessageType.REQUEST:
            return Rejected(m.stream_id, text, self.respond_error(m.stream_id, Code.RESOURCE_EXHAUSTED, text))
        if m.stream_id in self._pending:
            self._pending.discard(m.stream_id)
            return ResponseReceived(m.stream_id, Code.RESOURCE_EXHAUSTED, text, b"")
        return Ignored(m.stream_id, text)

    def _request(self, m: Message) -> Event:
        if m.stream_id % 2 == 0:
            text = "StreamID must be odd for client initiated streams"
            return Rejected(m.stream_id, text, self.respond_error(m.stream_id, Code.INVALID_ARGUMENT, text))
        if m.stream_id <= self._last_inbound_id:
            text = "StreamID cannot be re-used and must increment"
            return Rejected(m.stream_id, text, self.respond_error(m.stream_id, Code.INVALID_ARGUMENT, text))
        self._last_inbound_id = m.stream_id
        req = tp.Request()
        try:
            req.ParseFromString(m.data)
        except DecodeError as exc:
            text = f"unmarshal request error: {exc}"
            return Rejected(m.stream_id, text, self.respond_error(m.stream_id, Code.INVALID_ARGUMENT, text))
        return RequestReceived(m.stream_id, req.service, req.method, req.payload, req.timeout_nano)

    def _response(self, m: Message) -> Event:
        if m.stream_id not in self._pending:
            return Ignored(m.stream_id, "response for an unknown or finished stream")
        self._pending.discard(m.stream_id)
        resp = tp.Response()
        try:
            resp.ParseFromString(m.data)
        except DecodeError as exc:
            return ResponseReceived(m.stream_id, Code.INTERNAL, f"undecodable response: {exc}", b"")
        return ResponseReceived(m.stream_id, resp.status.code, resp.status.message, resp.payload)

    # -- outbound --
    def request(self, service: str, method: str, payload: bytes, timeout_nano: int = 0) -> tuple[int, bytes]:
        stream_id = self._next_outbound_id
        body = tp.Request(service=service, method=method, payload=payload, timeout_nano=timeout_nano)
        data = encode(stream_id, MessageType.REQUEST, body.SerializeToString())
        self._next_outbound_id += 2
        self._pending.add(stream_id)
        return stream_id, data

    def forget(self, stream_id: int) -> None:
        """Stop waiting for a call (its late response will be ignored)."""
        self._pending.discard(stream_id)

    @staticmethod
    def respond(stream_id: int, payload: bytes) -> bytes:
        body = tp.Response(payload=payload).SerializeToString() if payload else b""
        return encode(stream_id, MessageType.RESPONSE, body)

    @staticmethod
    def respond_error(stream_id: int, code: int, message: str) -> bytes:
        body = tp.Response(status=tp.Status(code=code, message=message))
        return encode(stream_id, MessageType.RESPONSE, body.SerializeToString())
