"""The benchmark's timing relay pairs each call the runtime makes with the plugin's answer."""

from __future__ import annotations

import sys
from pathlib import Path

from nri_podres import mux, ttrpc
from nri_podres._proto import api_pb2 as pb
from nri_podres._proto import ttrpc_pb2 as tp

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from wire_probe import CallTimer  # noqa: E402


def call(stream_id: int, method: str, payload: bytes = b"") -> bytes:
    body = tp.Request(service="nri.pkg.api.v1alpha1.Plugin", method=method, payload=payload).SerializeToString()
    return b"".join(mux.encode_message(mux.PLUGIN_CONN, ttrpc.encode(stream_id, ttrpc.MessageType.REQUEST, body)))


def answer(stream_id: int, conn_id: int = mux.PLUGIN_CONN) -> bytes:
    return b"".join(mux.encode_message(conn_id, ttrpc.Connection.respond(stream_id, b"")))


def test_requests_and_answers_pair_by_stream_id_across_chunk_cuts() -> None:
    timer = CallTimer()
    run_pod = pb.StateChangeEvent(event=pb.RUN_POD_SANDBOX).SerializeToString()
    outgoing = call(1, "CreateContainer", b"x" * 5000) + call(3, "StateChange", run_pod)
    timer.to_plugin(outgoing[:7], now=10.0)  # a cut inside the mux header
    timer.to_plugin(outgoing[7:4100], now=10.0)
    timer.to_plugin(outgoing[4100:], now=10.5)
    back = answer(3) + answer(1)
    timer.from_plugin(back[:5], now=11.0)
    timer.from_plugin(back[5:], now=12.0)
    assert timer.samples_ms == {"StateChange/RUN_POD_SANDBOX": [1500.0], "CreateContainer": [1500.0]}


def test_the_plugins_own_calls_to_the_runtime_are_not_timed() -> None:
    """Conn 2 carries RegisterPlugin and UpdateContainers: the plugin calling, not answering."""
    timer = CallTimer()
    timer.from_plugin(b"".join(mux.encode_message(mux.RUNTIME_CONN, ttrpc.encode(
        1, ttrpc.MessageType.REQUEST, tp.Request(method="RegisterPlugin").SerializeToString()))), now=1.0)
    timer.to_plugin(answer(1, mux.RUNTIME_CONN), now=2.0)
    timer.from_plugin(answer(1), now=3.0)  # an answer to nothing the runtime asked
    assert timer.samples_ms == {}
