"""The human form of a simulation result: one block per pod, a row per container."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line.rstrip(), "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return out


def _quota(value: int | None) -> str:
    if value is None:
        return "-"
    return "lifted" if value == -1 else str(value)


def render_pod(pod: dict[str, Any]) -> list[str]:
    numa = ",".join(map(str, pod["numa_nodes"])) or "-"
    status = "admitted" if pod["admitted"] else "REFUSED"
    head = f"pod {pod['namespace']}/{pod['name']}: {status}; NUMA node(s) {numa}; bubble CPUs {pod['cpus'] or '-'}"
    lines = [head]
    if pod["error"]:
        lines.append(f"  {pod['error']['reason']}: {pod['error']['message']}")
    rows = [[c["name"], c["kind"], c["pool"], c["cpus"] or "-", c["mems"] or "-", _quota(c["cpu_quota"]), c["state"]] for c in pod["containers"]]
    if rows:
        lines += ["  " + r for r in table(["CONTAINER", "KIND", "POOL", "CPUS", "MEMS", "CPU QUOTA", "STATE"], rows)]
    return lines


def render(result: dict[str, Any]) -> str:
    lines: list[str] = []
    for pod in result["pods"]:
        lines += render_pod(pod)
        lines.append("")
    node = result["node"]
    lines.append(f"node shared pool: {node['shared_pool'] or '-'}   reserved CPUs: {node['reserved_cpus'] or '-'}")
    return "\n".join(lines) + "\n"
