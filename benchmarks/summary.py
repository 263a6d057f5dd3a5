"""One table of the benchmarks' headline numbers, with the targets beside them.

    python benchmarks/summary.py RAW_DIR

RAW_DIR holds what benchmarks/run.sh collected: ``<bench>.json`` (numbers written by
``--json``) and ``<bench>.txt`` (each benchmark's own output, appended below the
table). Nothing here is asserted: the "meets" column is information, the machines
that run this are noisy.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

CREATE_OPS = ("create_container (6 exclusive)", "create_container (sidecar)", "create_container (ordinary pod)")
ORDER = ("decisions", "protocol", "e2e", "memory", "allocator", "topology")


def load(raw: Path, name: str) -> dict[str, Any]:
    path = raw / f"{name}.json"
    return json.loads(path.read_text())["values"] if path.exists() else {}


def worst_create(dec: dict[str, Any], label: str, pods: tuple[int, ...]) -> dict[str, Any] | None:
    """The create_container row with the highest p99 among the pod counts (wall clock)."""
    rows = [dec[k] for p in pods for op in CREATE_OPS if (k := f"{label}|{p}|{op}") in dec]
    return max(rows, key=lambda r: r["p99_ms"]) if rows else None


def row(what: str, measured: str, target: str, meets: bool | None | str) -> tuple[str, str, str, str]:
    if isinstance(meets, str):
        return what, measured, target, meets
    return what, measured, target, "-" if meets is None else ("yes" if meets else "NO")


def both(wall: bool, cpu: bool) -> str:
    """Wall clock and CPU time judged apart: a busy machine fails the first, not the second."""
    return f"{'yes' if wall else 'NO'} wall, {'yes' if cpu else 'NO'} cpu"


def headline(raw: Path) -> list[tuple[str, str, str, str]]:
    dec, proto, e2e, mem = (load(raw, n) for n in ("decisions", "protocol", "e2e", "memory"))
    rows = []
    for label, pods, limit in (("768/24N", (250,), 1.0), ("4096/16N", (250, 500), 5.0)):
        worst = worst_create(dec, label, pods)
        if worst:
            text = f"p99 {worst['p99_ms']:.3f} ms (cpu p99 {worst['cpu_p99_ms']:.3f}; median {worst['median_ms']:.3f})"
            what = f"CreateContainer decision, {label.replace('/', ' CPUs / ').replace('N', ' NUMA')}, {'/'.join(map(str, pods))} pods"
            rows.append(row(what, text, f"p99 < {limit:g} ms", both(worst["p99_ms"] < limit, worst["cpu_p99_ms"] < limit)))
    for label in ("768/24N", "4096/16N"):
        sync = dec.get(f"{label}|sync500|restart (checkpoint)")
        fresh = dec.get(f"{label}|sync500|no checkpoint")
        if sync and fresh:
            text = (f"median {sync['median_ms']:.0f} ms, cpu {sync['cpu_median_ms']:.0f} (no checkpoint: "
                    f"{fresh['median_ms']:.0f}, cpu {fresh['cpu_median_ms']:.0f})")
            rows.append(row(f"Synchronize of 500 containers (plugin handler), {label}", text, "< 100 ms",
                            both(max(sync["median_ms"], fresh["median_ms"]) < 100,
                                 max(sync["cpu_median_ms"], fresh["cpu_median_ms"]) < 100)))
    if mem:
        rows.append(row("Synchronize of 500 containers, daemon over its socket",
                        f"{mem['sync_socket_ms']:.0f} ms, daemon cpu {mem['sync_socket_cpu_ms']:.0f} ms",
                        "< 100 ms", both(mem["sync_socket_ms"] < 100, mem["sync_socket_cpu_ms"] < 100)))
    if e2e:
        for key, call in (("create", "CreateContainer"), ("run_pod", "RunPodSandbox")):
            ratio = e2e[f"{key}|ratio"]
            ours_ci, go_ci = e2e.get(f"{key}|overhead_podres_ci_ms"), e2e.get(f"{key}|overhead_go_ci_ms")
            text = (f"ratio {ratio:.2f}: nri-podres {e2e[f'{key}|overhead_podres_ms']:+.2f} ms, "
                    f"Go no-op {e2e[f'{key}|overhead_go_ms']:+.2f} ms")
            meets: bool | str | None = None if ratio != ratio else ratio <= 1.3  # NaN: Go overhead <= 0
            if ours_ci and go_ci:
                text += f" (95% CI {ours_ci[0]:+.1f}..{ours_ci[1]:+.1f} / {go_ci[0]:+.1f}..{go_ci[1]:+.1f})"
                if go_ci[0] <= 0 <= go_ci[1]:
                    meets = "n/a: Go overhead within noise"
            rows.append(row(f"End-to-end {call} overhead vs Go no-op plugin", text, "ratio <= 1.3", meets))
        for call in ("CreateContainer", "RunPodSandbox"):
            ratio = e2e.get(f"wire|{call}|ratio")
            if ratio is not None:
                text = (f"ratio {ratio:.2f}: nri-podres median {e2e[f'wire|{call}|podres_median_ms']:.3f} ms "
                        f"(p90 {e2e[f'wire|{call}|podres_p90_ms']:.3f}), Go no-op "
                        f"{e2e[f'wire|{call}|go_median_ms']:.3f} ms (p90 {e2e[f'wire|{call}|go_p90_ms']:.3f})")
                rows.append(row(f"{call}: the plugin's own time per call, on the wire", text, "ratio <= 1.3",
                                ratio <= 1.3))
            floor = e2e.get(f"wire|{call}|pynoop_ratio")
            if floor is not None:
                rows.append(row(f"  ({call}: a no-op plugin on our Python stack, on the wire)",
                                f"ratio {floor:.2f}: median {e2e[f'wire|{call}|pynoop_median_ms']:.3f} ms", "", None))
        cpuset, cpuset_ci = e2e.get("cpuset|create_diff_ms"), e2e.get("cpuset|create_diff_ci_ms")
        if cpuset is not None and cpuset_ci:
            rows.append(row("  (CreateContainer: what applying a cpuset costs the runtime)",
                            f"{cpuset:+.2f} ms (95% CI {cpuset_ci[0]:+.1f}..{cpuset_ci[1]:+.1f})", "", None))
        base = e2e.get("no plugin|create_median_ms")
        if base:
            rows.append(row("  (CreateContainer with no plugin, median)", f"{base:.1f} ms", "", None))
    if mem:
        rows.append(row("Daemon RSS, 500 containers (CreateContainer / one Synchronize)",
                        f"{mem['loaded_rss_mib']:.1f} / {mem['sync_loaded_rss_mib']:.1f} MiB", "< 60 MiB",
                        max(mem["loaded_rss_mib"], mem["sync_loaded_rss_mib"]) < 60))
        if "late_create_median_ms" in mem:
            rows.append(row("CreateContainer round trip to the real daemon, 400-500 containers",
                            f"median {mem['late_create_median_ms']:.1f} ms, p99 {mem['late_create_p99_ms']:.1f}",
                            "(decision < 1 ms)", None))
        rows.append(row("  (daemon RSS idle; interpreter + modules alone)",
                        f"{mem['idle_rss_mib']:.1f}; {mem['baseline_rss_mib']:.1f} MiB", "", None))
    if proto:
        for name in ("nri-podres, 6 exclusive CPUs", "no-op plugin", "codec only, cpuset reply"):
            if name in proto:
                st = proto[name]
                rows.append(row(f"In-process CreateContainer round trip: {name}",
                                f"median {st['median_ms']:.3f} ms, p99 {st['p99_ms']:.3f}", "", None))
    return rows


def main(argv: list[str]) -> int:
    raw = Path(argv[1])
    load1, load5, _ = os.getloadavg()
    print(f"nri-podres benchmarks, {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"machine: {os.cpu_count()} CPUs, {platform.python_implementation()} {platform.python_version()}, "
          f"load average {load1:.1f} / {load5:.1f} (1 / 5 min) at the end\n")
    rows = headline(raw)
    widths = [max(len(r[i]) for r in [("what", "measured", "target", "meets"), *rows]) for i in range(4)]
    header = ("what", "measured", "target", "meets")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("\nWall-clock p99s on a shared 2-CPU machine include time other processes held the CPUs;")
    print("the CPU-time p99 is the plugin's own cost. Full outputs follow.\n")
    for name in ORDER:
        text = raw / f"{name}.txt"
        if text.exists():
            print(f"===== {name} =====")
            print(text.read_text().rstrip())
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
