"""A local admin socket: one JSON request line in, one JSON reply line out.

The daemon serves ``status`` and ``explain`` (and whatever else it registers) on a
Unix stream socket that only root can use: the socket is mode 0600 and a parent
directory we create is 0700. The answers come from plain callables the daemon
passes in, so this module knows nothing about allocation state::

    {"cmd": "status"}                          -> handlers["status"]({"cmd": "status"})
    {"cmd": "explain", "pod": "default/db-0"}  -> handlers["explain"]({...})

A handler returns a JSON-serializable dict. A failure is answered with
``{"error": "<message>"}`` and the server keeps serving; :func:`query`, the
synchronous client the ``status``/``explain`` commands use, raises
:class:`AdminError` with that message.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nri_podres.errors import PodresError

__all__ = ["DEFAULT_SOCKET", "AdminError", "AdminServer", "Handler", "query"]

DEFAULT_SOCKET = "/run/nri-podres/admin.sock"
MAX_REQUEST_BYTES = 64 * 1024
MAX_REPLY_BYTES = 64 * 1024 * 1024

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class AdminError(PodresError):
    """The admin socket could not be used, or the daemon answered with an error."""


def _encode(reply: Mapping[str, Any]) -> bytes:
    return json.dumps(reply, default=str, separators=(",", ":")).encode() + b"\n"


def _is_live(path: Path) -> bool:
    """Whether something accepts connections on the socket at ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class AdminServer:
    """Serves the admin socket on the running event loop."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        handlers: Mapping[str, Handler],
        *,
        request_timeout_s: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self._handlers = dict(handlers)
        self._timeout_s = request_timeout_s
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Create the parent (0700) if needed, replace a stale socket, listen (0600)."""
        parent = self.path.parent
        if not parent.exists():
            parent.mkdir(mode=0o700, parents=True)
            parent.chmod(0o700)  # mkdir's mode is filtered by the umask
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise AdminError(f"admin socket: {self.path} exists and is not a socket")
            if _is_live(self.path):
                raise AdminError(f"admin socket: another daemon is serving {self.path}")
            self.path.unlink()
        self._server = await asyncio.start_unix_server(
            self._serve_one, path=str(self.path), limit=MAX_REQUEST_BYTES
        )
        # Under the usual umask the socket is not connectable by others even before this.
        self.path.chmod(0o600)

    async def close(self) -> None:
        """Stop listening and remove the socket file."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def __aenter__(self) -> AdminServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), self._timeout_s)
            except ValueError:  # the line exceeded the stream's limit
                reply = {"error": f"request longer than {MAX_REQUEST_BYTES} bytes"}
            else:
                reply = self.answer(line)
            writer.write(_encode(reply))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a client that is too slow or already gone gets nothing
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def answer(self, line: bytes) -> dict[str, Any]:
        """The reply to one request line (pure apart from the handler it calls)."""
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"error": "request is not a JSON object on one line"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"error": 'request needs a "cmd" string, e.g. {"cmd": "status"}'}
        handler = self._handlers.get(request["cmd"])
        if handler is None:
            known = ", ".join(sorted(self._handlers))
            return {"error": f"unknown cmd {request['cmd']!r}; known: {known}"}
        try:
            return handler(request)
        except PodresError as exc:
            return {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - the admin boundary: report, keep serving
            return {"error": f"internal error in {request['cmd']!r}: {type(exc).__name__}: {exc}"}


def _connect_error(path: Path, exc: OSError) -> AdminError:
    if exc.errno == errno.ENOENT:
        return AdminError(f"daemon not running: no socket at {path}")
    if exc.errno == errno.ECONNREFUSED:
        return AdminError(f"daemon not running: nothing listens on {path}")
    if exc.errno == errno.EACCES:
        return AdminError(f"permission denied on {path}: run as root")
    return AdminError(f"cannot connect to {path}: {exc.strerror}")


def _read_reply(sock: socket.socket, path: Path) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while not chunks or not chunks[-1].endswith(b"\n"):
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            raise AdminError(f"reply from {path} is larger than {MAX_REPLY_BYTES} bytes")
    return b"".join(chunks)


def query(
    path: str | os.PathLike[str], request: Mapping[str, Any], timeout_s: float = 5.0
) -> dict[str, Any]:
    """Send one request to the daemon's admin socket and return its reply.

    Raises AdminError with a message fit for the user: the daemon is not running,
    permission is denied, it did not answer in time, or it answered ``{"error": ...}``.
    """
    where = Path(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(where))
        except OSError as exc:
            raise _connect_error(where, exc) from exc
        try:
            sock.sendall(_encode(request))
            raw = _read_reply(sock, where)
        except TimeoutError as exc:
            raise AdminError(f"no answer from the daemon at {where} within {timeout_s:g} s") from exc
        except OSError as exc:
            raise AdminError(f"connection to {where} failed: {exc.strerror}") from exc
    try:
        reply = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdminError(f"the daemon at {where} sent no valid reply") from exc
    if not isinstance(reply, dict):
        raise AdminError(f"the daemon at {where} sent no valid reply")
    if "error" in reply:
        raise AdminError(str(reply["error"]))
    return reply
