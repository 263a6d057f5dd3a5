"""The NRI mux codec: byte vectors, any chunking, and the Go writer's cut."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nri_podres import mux
from nri_podres.errors import RemoteProtocolError

# RegisterPlugin{"cpuset", "10"} as the first message on conn 2 (78 bytes on the trunk).
REGISTER_TRUNK = bytes.fromhex(
    "00000002000000460000003c0000000101000a1c6e72692e706b672e6170692e7631616c70686131"
    "2e52756e74696d65120e5265676973746572506c7567696e1a0c0a0663707573657412023130"
)
RUNTIME_OK_REPLY = bytes.fromhex("000000020000000a" "00000000000000010200")


def decode_all(chunks: list[bytes]) -> list[mux.Frame]:
    decoder = mux.MuxDecoder()
    out: list[mux.Frame] = []
    for chunk in chunks:
        decoder.feed(chunk)
        out.extend(decoder.frames())
    return out


def test_register_vector_decodes_to_one_conn2_frame() -> None:
    """The worked example from the protocol notes decodes to one 70-byte frame on conn 2."""
    (frame,) = decode_all([REGISTER_TRUNK])
    assert frame.conn_id == mux.RUNTIME_CONN
    assert len(frame.payload) == 70
    assert frame.payload[:10] == bytes.fromhex("0000003c000000010100")


def test_runtime_ok_reply_vector() -> None:
    """The runtime's empty OK reply is a 10-byte ttrpc header in a conn 2 frame."""
    assert decode_all([RUNTIME_OK_REPLY]) == [mux.Frame(2, bytes.fromhex("00000000000000010200"))]


@pytest.mark.parametrize("split", range(1, len(REGISTER_TRUNK)))
def test_every_two_way_split_decodes_the_same(split: int) -> None:
    """Cutting the trunk bytes at any point yields the same frame."""
    whole = decode_all([REGISTER_TRUNK])
    assert decode_all([REGISTER_TRUNK[:split], REGISTER_TRUNK[split:]]) == whole


def test_byte_at_a_time_and_trailing_bytes() -> None:
    """Byte-by-byte feeding works, and a partial trailing frame is kept, not emitted."""
    stream = REGISTER_TRUNK + RUNTIME_OK_REPLY + REGISTER_TRUNK[:5]
    decoder = mux.MuxDecoder()
    frames = []
    for b in stream:
        decoder.feed(bytes([b]))
        frames.extend(decoder.frames())
    assert [f.conn_id for f in frames] == [2, 2]
    assert decoder.buffered_bytes == 5


@given(
    payloads=st.lists(st.tuples(st.integers(1, 2), st.binary(min_size=1, max_size=300)), max_size=8),
    cuts=st.lists(st.integers(0, 4000), max_size=20),
)
def test_any_chunking_decodes_to_the_same_frames(payloads: list[tuple[int, bytes]], cuts: list[int]) -> None:
    """Property: however the stream is chunked, the frames come out the same."""
    stream = b"".join(mux.HEADER.pack(c, len(p)) + p for c, p in payloads)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in zip(points, points[1:], strict=False)]
    assert decode_all(chunks) == [mux.Frame(c, p) for c, p in payloads]


def test_zero_length_frames_are_ignored() -> None:
    """Go peers never send empty frames; if one arrives it carries nothing."""
    assert decode_all([mux.HEADER.pack(1, 0) + mux.HEADER.pack(1, 1) + b"x"]) == [mux.Frame(1, b"x")]


def test_oversized_frame_header_is_a_protocol_error() -> None:
    """A frame length past the bound poisons the connection instead of buffering it."""
    decoder = mux.MuxDecoder(max_frame_bytes=1024)
    decoder.feed(mux.HEADER.pack(1, 1025))
    with pytest.raises(RemoteProtocolError, match="1025 bytes on conn 1 exceeds 1024"):
        list(decoder.frames())


@pytest.mark.parametrize(
    ("size", "expected_frames"),
    [(10, [10]), (4096, [4096]), (4097, [4096, 1]), (6531, [4096, 2435]), (3_000_000, [4096, 2_995_904])],
)
def test_messages_are_cut_like_the_go_writer(size: int, expected_frames: list[int]) -> None:
    """First frame holds at most 4096 bytes, the second all the rest, never more frames."""
    message = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frames = mux.encode_message(2, message)
    lengths = [mux.HEADER.unpack_from(f)[1] for f in frames]
    assert lengths == expected_frames
    assert b"".join(f[8:] for f in frames) == message
    assert all(mux.HEADER.unpack_from(f)[0] == 2 for f in frames)
