"""``nri-podres topology``: show the machine as discovery (or a machine file) sees it."""

from __future__ import annotations

import argparse
import json
import sys

from nri_podres.cpuset import CPUSet
from nri_podres.errors import TopologyError

HELP = "show the CPU/NUMA topology this machine (or a file) describes"


def configure(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--sysfs",
        metavar="PATH",
        default="/sys",
        help="sysfs root to discover: a directory or a tarball of one (default: /sys)",
    )
    source.add_argument("--machine", metavar="FILE", help="a machine description file (YAML or JSON)")
    parser.add_argument("--json", action="store_true", help="print the stable JSON form")
    parser.add_argument(
        "--reserved-cpus",
        metavar="LIST",
        default="",
        help="CPUs to show as reserved, in list form (e.g. 0-1)",
    )


def execute(args: argparse.Namespace) -> int:
    from nri_podres.machine import load_machine  # noqa: PLC0415 - only what the command needs
    from nri_podres.sysfs import read_topology  # noqa: PLC0415
    from nri_podres.topology_view import render_table, topology_to_json  # noqa: PLC0415

    try:
        reserved = CPUSet.parse(args.reserved_cpus)
    except ValueError as exc:
        print(f"nri-podres topology: --reserved-cpus: {exc}", file=sys.stderr)
        return 2
    try:
        topo = load_machine(args.machine) if args.machine else read_topology(args.sysfs)
    except TopologyError as exc:
        print(f"nri-podres topology: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(topology_to_json(topo), indent=2))
    else:
        sys.stdout.write(render_table(topo, reserved))
    return 0
