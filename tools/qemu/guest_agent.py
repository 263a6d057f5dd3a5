"""Command agent of the test guest: JSON lines over a virtio-serial port.

Runs inside the guest (started by guest-init.sh). Every request is one line
``{"id": N, "op": NAME, ...}`` and gets exactly one reply line
``{"id": N, "ok": true, "result": ...}`` or ``{"id": N, "ok": false, "error": TEXT}``.
Requests are served concurrently (one thread each), so a long command does not
hold up the others. Only the standard library is used.

Operations:
  ping                                   -> {"uptime_s": float}
  exec   argv|sh, env, cwd, timeout_s, input
                                         -> {"rc", "stdout", "stderr", "seconds", "timed_out"}
  spawn  argv, env, cwd, log             -> {"pid"}   (new session, output to log)
  signal pid, signum                     -> {"sent": bool}
  wait   pid, timeout_s                  -> {"rc": int | None}   (None: still running)
  write_file path, text, mode            -> {}
  read_file  path                        -> {"text"}
  call   path, function, kwargs          -> {"value"}  (a function of a Python file,
                                            imported once and kept)
  shutdown                               -> {} then the guest powers off
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

MAX_OUTPUT_CHARS = 4 << 20


def find_port(name: str) -> str:
    for name_file in glob.glob("/sys/class/virtio-ports/*/name"):
        with open(name_file) as f:
            if f.read().strip() == name:
                return "/dev/" + os.path.basename(os.path.dirname(name_file))
    raise SystemExit(f"guest_agent: no virtio-serial port named {name!r}")


def uptime_s() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


class Agent:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._write_lock = threading.Lock()
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._exit_codes: dict[int, int] = {}
        self._modules: dict[str, Any] = {}
        self._modules_lock = threading.Lock()

    # --- transport -------------------------------------------------------
    def serve(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except InterruptedError:
                continue
            if not chunk:  # host side not connected yet, or gone for now
                time.sleep(0.05)
                continue
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    threading.Thread(target=self._handle, args=(line,), daemon=True).start()

    def _reply(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode() + b"\n"
        with self._write_lock:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]

    def _handle(self, line: bytes) -> None:
        request_id = None
        try:
            request = json.loads(line)
            request_id = request.get("id")
            handler = getattr(self, "op_" + request["op"])
            result = handler(**{k: v for k, v in request.items() if k not in ("id", "op")})
            self._reply({"id": request_id, "ok": True, "result": result})
        except Exception as exc:  # every failure goes back to the host as text
            text = "".join(traceback.format_exception(exc))
            self._reply({"id": request_id, "ok": False, "error": text})
        if request_id is not None and request.get("op") == "shutdown":
            time.sleep(0.2)
            os.sync()
            with open("/proc/sysrq-trigger", "w") as f:
                f.write("o")

    # --- operations ------------------------------------------------------
    def op_ping(self) -> dict[str, Any]:
        return {"uptime_s": uptime_s(), "pid": os.getpid()}

    @staticmethod
    def _env(env: dict[str, str] | None) -> dict[str, str]:
        merged = dict(os.environ)
        merged.update(env or {})
        return merged

    def op_exec(self, argv: list[str] | None = None, sh: str | None = None,
                env: dict[str, str] | None = None, cwd: str | None = None,
                timeout_s: float = 60.0, input: str | None = None) -> dict[str, Any]:
        command = argv if argv is not None else ["/bin/bash", "-c", sh or ""]
        started = time.monotonic()
        proc = subprocess.Popen(command, env=self._env(env), cwd=cwd, start_new_session=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        timed_out = False
        try:
            out, err = proc.communicate(input.encode() if input is not None else None, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        return {
            "rc": None if timed_out else proc.returncode,
            "stdout": out.decode(errors="replace")[-MAX_OUTPUT_CHARS:],
            "stderr": err.decode(errors="replace")[-MAX_OUTPUT_CHARS:],
            "seconds": round(time.monotonic() - started, 3),
            "timed_out": timed_out,
        }

    def op_spawn(self, argv: list[str], log: str, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> dict[str, Any]:
        os.makedirs(os.path.dirname(log) or ".", exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, env=self._env(env), cwd=cwd, start_new_session=True,
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        self._children[proc.pid] = proc
        return {"pid": proc.pid}

    def op_signal(self, pid: int, signum: int) -> dict[str, Any]:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return {"sent": False}
        return {"sent": True}

    def op_wait(self, pid: int, timeout_s: float = 0.0) -> dict[str, Any]:
        if pid in self._exit_codes:
            return {"rc": self._exit_codes[pid]}
        proc = self._children.get(pid)
        if proc is None:
            raise ValueError(f"pid {pid} was not spawned by this agent")
        try:
            rc = proc.wait(timeout=timeout_s) if timeout_s > 0 else proc.poll()
        except subprocess.TimeoutExpired:
            rc = None
        if rc is not None:
            self._exit_codes[pid] = rc
            self._children.pop(pid, None)
        return {"rc": rc}

    def op_write_file(self, path: str, text: str, mode: int = 0o644) -> dict[str, Any]:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        temporary = f"{path}.tmp{threading.get_ident()}"
        with open(temporary, "w") as f:
            f.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
        return {}

    def op_read_file(self, path: str) -> dict[str, Any]:
        with open(path, errors="replace") as f:
            return {"text": f.read()[-MAX_OUTPUT_CHARS:]}

    def op_call(self, path: str, function: str, kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._modules_lock:
            module = self._modules.get(path)
            if module is None:
                name = "guest_call_" + os.path.splitext(os.path.basename(path))[0]
                spec = importlib.util.spec_from_file_location(name, path)
                if spec is None or spec.loader is None:
                    raise ImportError(f"cannot import {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
                self._modules[path] = module
        return {"value": getattr(module, function)(**(kwargs or {}))}

    def op_shutdown(self) -> dict[str, Any]:
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", default="nrp.agent", help="virtio-serial port name")
    args = parser.parse_args()
    fd = os.open(find_port(args.port), os.O_RDWR)
    print(f"guest_agent: serving on {args.port} at {uptime_s():.1f} s uptime", flush=True)
    Agent(fd).serve()


if __name__ == "__main__":
    main()
