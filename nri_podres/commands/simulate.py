"""``nri-podres simulate``: place Pod manifests offline through the daemon's own handlers."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from nri_podres.errors import PodresError


def configure(parser: argparse.ArgumentParser) -> None:
    node = parser.add_mutually_exclusive_group()
    node.add_argument("--sysfs", help="sysfs directory or tarball describing the node (default: this machine's /sys)")
    node.add_argument("--machine", help="machine description file (YAML/JSON)")
    parser.add_argument("--config", help="TOML configuration (default: built-in defaults)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("manifests", nargs="+", metavar="MANIFEST", help="YAML files of Pods or {delete: NAME} documents, applied in order")


def execute(args: argparse.Namespace) -> int:
    from nri_podres.log import configure_logging

    # The handlers log every decision; here the result is the output, so only problems go to stderr.
    configure_logging("console", "warning", stream=sys.stderr)
    try:
        result = run(args)
    except PodresError as exc:
        print(f"nri-podres simulate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        from nri_podres.simulate_view import render

        sys.stdout.write(render(result))
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from nri_podres import config as config_mod
    from nri_podres.podspec import ManifestError, pod_from_manifest
    from nri_podres.simulate import Simulator

    topology = _topology(args)
    cfg = config_mod.load_config(_read(args.config), args.config) if args.config else config_mod.default_config()
    sim = Simulator(topology, cfg)
    for path in args.manifests:
        try:
            docs = list(yaml.safe_load_all(_read(path)))
        except yaml.YAMLError as exc:
            raise ManifestError(f"{path}: not valid YAML: {exc}") from None
        for i, doc in enumerate(d for d in docs if d is not None):
            where = f"{path} document {i + 1}"
            if not isinstance(doc, dict):
                raise ManifestError(f"{where}: expected a mapping, got {type(doc).__name__}")
            if "delete" in doc:
                namespace, _, name = str(doc["delete"]).rpartition("/")
                if not sim.delete(name, namespace or "default"):
                    raise ManifestError(f"{where}: delete of unknown pod {doc['delete']!r}")
                continue
            sim.apply(pod_from_manifest(doc, where))
    return sim.result()


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PodresError(f"cannot read {path}: {exc.strerror}") from None


def _topology(args: argparse.Namespace) -> Any:
    if args.machine:
        from nri_podres.machine import load_machine

        return load_machine(Path(args.machine))
    from nri_podres.sysfs import read_topology

    return read_topology(Path(args.sysfs or "/sys"))
