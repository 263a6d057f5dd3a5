"""``nri-podres status``: the live allocation of the running daemon."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nri_podres.errors import PodresError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin-socket", default=None, help="the daemon's admin socket (default: /run/nri-podres/admin.sock)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")


def execute(args: argparse.Namespace) -> int:
    from nri_podres import admin

    try:
        reply = admin.query(args.admin_socket or admin.DEFAULT_SOCKET, {"cmd": "status"})
    except PodresError as exc:
        print(f"nri-podres status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        sys.stdout.write(render(reply))
    # A daemon that has not synchronized with its runtime yet is not ready (probes rely on this).
    return 0 if reply.get("synchronized") else 3


def render(reply: dict[str, Any]) -> str:
    from nri_podres.simulate_view import table
    from nri_podres.quantity import format_bytes

    lines = [
        f"synchronized with the runtime: {'yes' if reply['synchronized'] else 'NO'}",
        f"online CPUs {reply['online_cpus']}; reserved {reply['reserved_cpus'] or '-'}; node shared pool {reply['node_shared_pool'] or '-'}",
        "",
    ]
    rows = [
        [str(n["node"]), n["exclusive_cpus"] or "-", n["pod_pool_cpus"] or "-", n["free_cpus"] or "-",
         format_bytes(n["memory_charged_bytes"]),
         format_bytes(n["memory_total_bytes"]) if n["memory_total_bytes"] is not None else "?"]
        for n in reply["numa"]
    ]
    lines += table(["NUMA", "EXCLUSIVE", "POD POOLS", "FREE", "MEMORY CHARGED", "MEMORY TOTAL"], rows)
    lines.append("")
    ctr_rows = []
    for pod in reply["pods"]:
        pod_name = f"{pod['namespace']}/{pod['name']}"
        if not pod["containers"]:
            ctr_rows.append([pod_name, "-", pod["mode"], pod["cpus"] or "-", ",".join(map(str, pod["numa_nodes"])) or "-", "-"])
        for c in pod["containers"]:
            ctr_rows.append([pod_name, c["name"], c["pool"], c["cpus"], c["mems"], "running" if c["running"] else "exited"])
    lines += table(["POD", "CONTAINER", "POOL", "CPUS", "MEMS", "STATE"], ctr_rows)
    return "\n".join(lines) + "\n"
