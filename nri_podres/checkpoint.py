"""The checkpoint: what Synchronize cannot tell us, kept across restarts.

Written atomically (temp file in the same directory, fsync, rename, fsync of
the directory) with mode 0600. A missing checkpoint is normal; a corrupt,
unreadable or foreign-version one is reported and ignored, never fatal: the
runtime's view of running containers always wins.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
FILE_NAME = "checkpoint.json"


@dataclass(frozen=True, slots=True)
class Loaded:
    data: dict[str, Any] | None
    problem: str | None = None  # why the checkpoint was ignored, for the log


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class CheckpointStore:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILE_NAME

    def save(self, state_json: dict[str, Any]) -> None:
        doc = {"version": FORMAT_VERSION, "state": state_json}
        write_atomically(self.path, json.dumps(doc, sort_keys=True, separators=(",", ":")))

    def load(self) -> Loaded:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Loaded(None)
        except OSError as exc:
            return Loaded(None, f"cannot read {self.path}: {exc.strerror}")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            return Loaded(None, f"{self.path} is corrupt: {exc}")
        if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION or not isinstance(doc.get("state"), dict):
            version = doc.get("version") if isinstance(doc, dict) else None
            return Loaded(None, f"{self.path} has unsupported format version {version!r} (want {FORMAT_VERSION})")
        return Loaded(doc["state"])
