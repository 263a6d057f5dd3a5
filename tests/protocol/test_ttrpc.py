"""The ttrpc codec and connection state machine."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nri_podres import ttrpc
from nri_podres._proto import ttrpc_pb2 as tp
from nri_podres.errors import LocalProtocolError

REQUEST_HEADER = bytes.fromhex("0000003c000000010100")
UNIMPLEMENTED_BODY = bytes.fromhex("0a18080c1214") + b"method RunPodSandbox"


def request_bytes(stream_id: int, service: str = "svc", method: str = "M", payload: bytes = b"") -> bytes:
    body = tp.Request(service=service, method=method, payload=payload).SerializeToString()
    return ttrpc.encode(stream_id, ttrpc.MessageType.REQUEST, body)


def test_header_layout_vector() -> None:
    """length, stream id, type, flags: big-endian, 10 bytes."""
    assert ttrpc.HEADER.pack(0x3C, 1, 1, 0) == REQUEST_HEADER


def test_unimplemented_reply_vector() -> None:
    """An UNIMPLEMENTED answer carries status{12, "method X"} and no payload."""
    reply = ttrpc.Connection.respond_error(3, ttrpc.Code.UNIMPLEMENTED, "method RunPodSandbox")
    assert reply == ttrpc.HEADER.pack(len(UNIMPLEMENTED_BODY), 3, 2, 0) + UNIMPLEMENTED_BODY


def test_ok_empty_reply_is_a_bare_header() -> None:
    """Success with an empty payload is a zero-length Response, as the Go server sends."""
    assert ttrpc.Connection.respond(5, b"") == bytes.fromhex("00000000000000050200")


@given(st.lists(st.binary(max_size=200), min_size=1, max_size=6), st.data())
def test_any_chunking_yields_the_same_messages(bodies: list[bytes], data: st.DataObject) -> None:
    """Property: message reassembly does not depend on how the stream was cut."""
    stream = b"".join(ttrpc.encode(2 * i + 1, ttrpc.MessageType.RESPONSE, b) for i, b in enumerate(bodies))
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=15))))
    decoder = ttrpc.MessageDecoder()
    got = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        decoder.feed(stream[prev:cut])
        prev = cut
        got.extend(decoder.messages())
    assert [(m.stream_id, m.data) for m in got] == [(2 * i + 1, b) for i, b in enumerate(bodies)]


def test_server_decodes_a_request() -> None:
    """A well-formed request becomes RequestReceived with service, method and payload."""
    conn = ttrpc.Connection()
    (event,) = conn.receive(request_bytes(1, "nri.pkg.api.v1alpha1.Plugin", "Configure", b"\x12\x01x"))
    assert event == ttrpc.RequestReceived(1, "nri.pkg.api.v1alpha1.Plugin", "Configure", b"\x12\x01x", 0)


@pytest.mark.parametrize(
    ("ids", "error"),
    [([2], "must be odd"), ([3, 1], "cannot be re-used"), ([5, 5], "cannot be re-used")],
)
def test_server_rejects_bad_stream_ids_like_go(ids: list[int], error: str) -> None:
    """Even or non-increasing client stream ids get INVALID_ARGUMENT on that stream."""
    conn = ttrpc.Connection()
    events = conn.receive(b"".join(request_bytes(i) for i in ids))
    rejected = events[-1]
    assert isinstance(rejected, ttrpc.Rejected)
    assert error in rejected.reason
    resp = tp.Response.FromString(rejected.reply[10:])
    assert resp.status.code == ttrpc.Code.INVALID_ARGUMENT


def test_undecodable_envelope_is_rejected_not_raised() -> None:
    """Garbage inside a request frame gets INVALID_ARGUMENT and the connection goes on."""
    conn = ttrpc.Connection()
    garbage = ttrpc.encode(1, ttrpc.MessageType.REQUEST, b"\xff\xff\xff")
    (event,) = conn.receive(garbage)
    assert isinstance(event, ttrpc.Rejected)
    assert "unmarshal request error" in event.reason
    (ok,) = conn.receive(request_bytes(3))
    assert isinstance(ok, ttrpc.RequestReceived)


def test_oversized_request_fails_only_its_stream() -> None:
    """A request past the receive limit is skipped and answered RESOURCE_EXHAUSTED; the next one works."""
    conn = ttrpc.Connection()
    conn._decoder = ttrpc.MessageDecoder(max_receive_bytes=100)  # small limit for the test
    big = ttrpc.HEADER.pack(150, 1, 1, 0) + b"\0" * 150
    events = conn.receive(big[:60]) + conn.receive(big[60:] + request_bytes(3))
    assert isinstance(events[0], ttrpc.Rejected)
    assert "message length 150 exceed maximum" in events[0].reason
    assert tp.Response.FromString(events[0].reply[10:]).status.code == ttrpc.Code.RESOURCE_EXHAUSTED
    assert isinstance(events[1], ttrpc.RequestReceived)
    assert events[1].stream_id == 3


def test_client_ids_are_odd_and_increasing_and_responses_match() -> None:
    """Our calls use 1, 3, 5...; responses resolve by id; unknown and duplicate ones are ignored."""
    conn = ttrpc.Connection()
    ids = [conn.request("s", "m", b"")[0] for _ in range(3)]
    assert ids == [1, 3, 5]
    events = conn.receive(ttrpc.Connection.respond(3, b"ok") + ttrpc.Connection.respond(3, b"again") + ttrpc.Connection.respond(9, b""))
    assert events[0] == ttrpc.ResponseReceived(3, 0, "", b"ok")
    assert isinstance(events[1], ttrpc.Ignored)
    assert isinstance(events[2], ttrpc.Ignored)


def test_error_response_carries_code_and_message() -> None:
    """A status in the response becomes code and message on the event."""
    conn = ttrpc.Connection()
    sid, _ = conn.request("s", "m", b"")
    (event,) = conn.receive(ttrpc.Connection.respond_error(sid, 2, "boom"))
    assert (event.code, event.message) == (2, "boom")


def test_sending_more_than_4mib_is_refused_locally() -> None:
    """We never put a message on the wire that a Go peer would reject."""
    with pytest.raises(LocalProtocolError, match="exceeds the 4194304-byte limit"):
        ttrpc.encode(1, ttrpc.MessageType.RESPONSE, b"\0" * (ttrpc.MAX_MESSAGE_BYTES + 1))


def test_data_messages_are_ignored() -> None:
    """NRI defines no streams; a DATA message changes nothing."""
    conn = ttrpc.Connection()
    (event,) = conn.receive(ttrpc.encode(1, ttrpc.MessageType.DATA, b"x"))
    assert isinstance(event, ttrpc.Ignored)
