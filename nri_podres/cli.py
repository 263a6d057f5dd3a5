"""Command line: one sub-command per module under ``nri_podres.commands``.

Each command module defines ``HELP`` (one line), ``configure(parser)`` and
``execute(args) -> int``. Modules are imported only when their command runs,
so ``nri-podres topology`` never pays for the NRI stack's imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from nri_podres import __version__

COMMANDS: dict[str, str] = {
    "run": "nri_podres.commands.run",
    "topology": "nri_podres.commands.topology",
    "simulate": "nri_podres.commands.simulate",
    "status": "nri_podres.commands.status",
    "explain": "nri_podres.commands.explain",
}

HELP: dict[str, str] = {
    "run": "run the NRI plugin daemon",
    "topology": "show the CPU/NUMA topology this machine (or a file) describes",
    "simulate": "place Kubernetes pod manifests offline, through the daemon's own code",
    "status": "show the live allocation of a running daemon",
    "explain": "show why one pod got what it got, from a running daemon",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nri-podres",
        description="Pod-level CPU and memory management for containerd and CRI-O (NRI plugin).",
    )
    parser.add_argument("--version", action="version", version=f"nri-podres {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        sub.add_parser(name, help=HELP[name], description=HELP[name])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # Parse the command name first, then let the command's own module add its options.
    known, _ = parser.parse_known_args(args_list[:1] if args_list and not args_list[0].startswith("-") else args_list)
    module = importlib.import_module(COMMANDS[known.command])
    sub = argparse.ArgumentParser(prog=f"nri-podres {known.command}", description=HELP[known.command])
    module.configure(sub)
    args = sub.parse_args(args_list[1:])
    return int(module.execute(args))
