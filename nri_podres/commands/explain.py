"""``nri-podres explain POD``: why one pod and its containers got what they got."""

from __future__ import annotations

import argparse
import json
import sys

from nri_podres.errors import PodresError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pod", help="namespace/name, name, pod uid or sandbox id")
    parser.add_argument("--admin-socket", default=None, help="the daemon's admin socket (default: /run/nri-podres/admin.sock)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")


def execute(args: argparse.Namespace) -> int:
    from nri_podres import admin

    try:
        pod = admin.query(args.admin_socket or admin.DEFAULT_SOCKET, {"cmd": "explain", "pod": args.pod})
    except PodresError as exc:
        print(f"nri-podres explain: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(pod, indent=2))
        return 0
    numa = ",".join(map(str, pod["numa_nodes"])) or "-"
    print(f"pod {pod['namespace']}/{pod['name']} ({pod['mode']}): CPUs {pod['cpus'] or '-'} on NUMA {numa}")
    print(f"  why: {pod['why'] or '-'}")
    for c in pod["containers"]:
        quota = "lifted" if c["cpu_quota"] == -1 else ("untouched" if c["cpu_quota"] is None else str(c["cpu_quota"]))
        print(f"  {c['name']}: {c['pool']} cpus {c['cpus']} mems {c['mems']} quota {quota} ({'running' if c['running'] else 'exited'})")
        print(f"    why: {c['why'] or '-'}")
    return 0
