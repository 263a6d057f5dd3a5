"""The admin socket: a real Unix stream server and the synchronous client against it."""

from __future__ import annotations

import asyncio
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nri_podres.admin import AdminError, AdminServer, query
from nri_podres.errors import PodresError

PODS = {"default/db-0": {"uid": "u-1", "cpus": "2-9", "numa": [0]}}


def explain(request: dict[str, Any]) -> dict[str, Any]:
    pod = request.get("pod", "")
    if pod not in PODS:
        raise PodresError(f"no pod matches {pod!r}")
    return {"pod": pod, **PODS[pod]}


def boom(_request: dict[str, Any]) -> dict[str, Any]:
    raise ZeroDivisionError("bug")


HANDLERS = {"status": lambda _r: {"pods": len(PODS), "free_cpus": 22}, "explain": explain, "boom": boom}


def run_with_server(path: Path, client: Callable[[], Any]) -> Any:
    """Serve HANDLERS at ``path`` while ``client`` runs in a thread; return its result."""

    async def main() -> Any:
        async with AdminServer(path, HANDLERS):
            return await asyncio.to_thread(client)

    return asyncio.run(main())


def test_status_round_trip(tmp_path: Path) -> None:
    """One request line in, the handler's dict back."""
    path = tmp_path / "admin.sock"
    assert run_with_server(path, lambda: query(path, {"cmd": "status"})) == {"pods": 1, "free_cpus": 22}


def test_explain_gets_the_whole_request(tmp_path: Path) -> None:
    """The handler sees the request's other fields (here the pod)."""
    path = tmp_path / "admin.sock"
    reply = run_with_server(path, lambda: query(path, {"cmd": "explain", "pod": "default/db-0"}))
    assert reply == {"pod": "default/db-0", "uid": "u-1", "cpus": "2-9", "numa": [0]}


def test_socket_is_root_only_and_parent_is_created_0700(tmp_path: Path) -> None:
    """The socket is mode 0600; a missing parent directory is created with mode 0700."""
    path = tmp_path / "run" / "nri-podres" / "admin.sock"

    def modes() -> tuple[int, int, bool]:
        st = path.lstat()
        return stat.S_IMODE(st.st_mode), stat.S_IMODE(path.parent.stat().st_mode), stat.S_ISSOCK(st.st_mode)

    assert run_with_server(path, modes) == (0o600, 0o700, True)
    assert not path.exists(), "closing removes the socket"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"cmd": "reboot"}, "unknown cmd 'reboot'; known: boom, explain, status"),
        ({"command": "status"}, 'request needs a "cmd" string'),
        ({"cmd": "explain", "pod": "nope"}, "no pod matches 'nope'"),
        ({"cmd": "boom"}, "internal error in 'boom': ZeroDivisionError: bug"),
    ],
)
def test_errors_are_replies_and_the_client_raises_them(tmp_path: Path, request_, message) -> None:
    """Bad requests and failing handlers are answered with an error the client raises."""
    path = tmp_path / "admin.sock"

    def client() -> str:
        with pytest.raises(AdminError) as caught:
            query(path, request_)
        # The server survives the failure and answers the next request.
        assert query(path, {"cmd": "status"})["pods"] == 1
        return str(caught.value)

    assert message in run_with_server(path, client)


def raw_exchange(path: Path, payload: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return sock.makefile("rb").read()


@pytest.mark.parametrize(
    ("payload", "reply"),
    [
        (b"not json\n", b'{"error":"request is not a JSON object on one line"}\n'),
        (b'["status"]\n', b'{"error":"request needs a \\"cmd\\" string, e.g. {\\"cmd\\": \\"status\\"}"}\n'),
        (b'{"cmd":"status"}', b'{"pods":1,"free_cpus":22}\n'),
        (b"x" * 70_000 + b"\n", b'{"error":"request longer than 65536 bytes"}\n'),
    ],
    ids=["garbage", "not-an-object", "no-trailing-newline", "too-long"],
)
def test_wire_format(tmp_path: Path, payload: bytes, reply: bytes) -> None:
    """Exactly one JSON line answers each request, whatever was sent."""
    path = tmp_path / "admin.sock"
    assert run_with_server(path, lambda: raw_exchange(path, payload)) == reply


def test_no_socket_means_daemon_not_running(tmp_path: Path) -> None:
    """Without a socket the client says the daemon is not running, and where it looked."""
    path = tmp_path / "admin.sock"
    with pytest.raises(AdminError, match=f"daemon not running: no socket at {path}"):
        query(path, {"cmd": "status"})


def test_stale_socket_means_daemon_not_running_and_is_replaced(tmp_path: Path) -> None:
    """A socket file nobody listens on is reported, and a new server takes it over."""
    path = tmp_path / "admin.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    with pytest.raises(AdminError, match="daemon not running: nothing listens on"):
        query(path, {"cmd": "status"})
    assert run_with_server(path, lambda: query(path, {"cmd": "status"}))["pods"] == 1


def test_second_server_refuses_a_live_socket(tmp_path: Path) -> None:
    """Starting where a daemon already serves fails instead of stealing its socket."""
    path = tmp_path / "admin.sock"

    async def main() -> str:
        async with AdminServer(path, HANDLERS):
            with pytest.raises(AdminError) as caught:
                await AdminServer(path, HANDLERS).start()
            assert await asyncio.to_thread(query, path, {"cmd": "status"})
            return str(caught.value)

    assert "another daemon is serving" in asyncio.run(main())


def test_refuses_to_replace_a_regular_file(tmp_path: Path) -> None:
    """A non-socket at the path is left alone."""
    path = tmp_path / "admin.sock"
    path.write_text("keep me")
    with pytest.raises(AdminError, match="is not a socket"):
        asyncio.run(AdminServer(path, HANDLERS).start())
    assert path.read_text() == "keep me"


def test_silent_daemon_times_out(tmp_path: Path) -> None:
    """A listener that never answers makes the client fail after its timeout."""
    path = tmp_path / "admin.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        with pytest.raises(AdminError, match="no answer from the daemon .* within 0.2 s"):
            query(path, {"cmd": "status"}, timeout_s=0.2)
