#!/usr/bin/env python3
"""Write a one-layer OCI image archive from local files, for ``ctr images import``.

    oci_image.py --name localhost/probe:e2e --entrypoint /probe --output probe.tar \\
        --file probe=./probe --file bin/busybox=/bin/busybox --link bin/sh=busybox

No registry, daemon or image tool is involved. The archive is reproducible:
every timestamp is zero and every entry is owned by root, so rebuilding from
the same inputs yields the same digests.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
PLATFORM = {"architecture": "amd64", "os": "linux"}


@dataclass(frozen=True)
class Entry:
    """One path of the layer: a copied file (``source``) or a symlink (``target``)."""

    path: PurePosixPath
    source: Path | None = None
    target: str | None = None


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int

    def as_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def _tarinfo(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def layer_bytes(entries: list[Entry]) -> bytes:
    """The uncompressed layer tar: parent directories first, then the entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        made: set[PurePosixPath] = set()
        for entry in sorted(entries, key=lambda e: e.path):
            for parent in reversed(entry.path.parents[:-1]):
                if parent not in made:
                    made.add(parent)
                    tar.addfile(_tarinfo(str(parent), tarfile.DIRTYPE, 0o755))
            if entry.target is not None:
                link = _tarinfo(str(entry.path), tarfile.SYMTYPE, 0o777)
                link.linkname = entry.target
                tar.addfile(link)
            else:
                assert entry.source is not None
                data = entry.source.read_bytes()
                info = _tarinfo(str(entry.path), tarfile.REGTYPE, entry.source.stat().st_mode & 0o7777)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Archive:
    """An OCI image layout written into a tar file."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self._tar = tar

    def put(self, name: str, data: bytes) -> None:
        info = _tarinfo(name, tarfile.REGTYPE, 0o644)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))

    def blob(self, media_type: str, data: bytes) -> Descriptor:
        digest = hashlib.sha256(data).hexdigest()
        self.put(f"blobs/sha256/{digest}", data)
        return Descriptor(media_type, f"sha256:{digest}", len(data))


def _canonical(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def write_image(output: Path, name: str, entrypoint: list[str], entries: list[Entry]) -> str:
    """Write the archive; return the manifest digest."""
    layer = layer_bytes(entries)
    config = {
        **PLATFORM,
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]},
    }
    tmp = output.with_name(output.name + ".tmp")
    with tarfile.open(tmp, "w") as tar:
        archive = Archive(tar)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": archive.blob(CONFIG_TYPE, _canonical(config)).as_json(),
            "layers": [archive.blob(LAYER_TYPE, layer).as_json()],
        }
        manifest_desc = archive.blob(MANIFEST_TYPE, _canonical(manifest))
        tag = name.rpartition(":")[2]
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    **manifest_desc.as_json(),
                    "platform": PLATFORM,
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": tag,
                    },
                }
            ],
        }
        archive.put("oci-layout", _canonical({"imageLayoutVersion": "1.0.0"}))
        archive.put("index.json", _canonical(index))
    tmp.replace(output)
    return manifest_desc.digest


def _pair(text: str) -> tuple[str, str]:
    dest, sep, src = text.partition("=")
    if not sep or not dest or not src:
        msg = f"expected DEST=VALUE, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return dest.strip("/"), src


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--name", required=True, help="image reference, e.g. localhost/pause:e2e")
    parser.add_argument("--entrypoint", action="append", required=True, help="argv element; repeatable")
    parser.add_argument("--file", type=_pair, action="append", default=[], help="DEST=SOURCE")
    parser.add_argument("--link", type=_pair, action="append", default=[], help="DEST=SYMLINK_TARGET")
    args = parser.parse_args()
    entries = [Entry(PurePosixPath(d), source=Path(s)) for d, s in args.file]
    entries += [Entry(PurePosixPath(d), target=t) for d, t in args.link]
    digest = write_image(args.output, args.name, args.entrypoint, entries)
    print(f"{args.output.name}: {args.name} {digest[:19]}")


if __name__ == "__main__":
    main()
