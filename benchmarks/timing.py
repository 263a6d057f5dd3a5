"""Small timing helpers shared by the benchmarks: samples in, median and p99 out.

Wall-clock time (``perf_counter``) is what a runtime waits for; on a busy machine
it includes time the process did not run, so CPU time (``thread_time``) is kept
beside it to tell our cost from the neighbours'.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Stats:
    n: int
    median_ms: float
    p99_ms: float
    cpu_median_ms: float
    cpu_p99_ms: float

    def cell(self) -> str:
        return f"{fmt_ms(self.median_ms)} / {fmt_ms(self.p99_ms)}"

    def cpu_cell(self) -> str:
        return f"{fmt_ms(self.cpu_median_ms)} / {fmt_ms(self.cpu_p99_ms)}"


def fmt_ms(ms: float) -> str:
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def percentile(sorted_samples: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_samples:
        return float("nan")
    rank = max(1, int(round(q * len(sorted_samples) + 0.5)))
    return sorted_samples[min(len(sorted_samples), rank) - 1]


def stats(wall_ms: list[float], cpu_ms: list[float] | None = None) -> Stats:
    wall = sorted(wall_ms)
    cpu = sorted(cpu_ms) if cpu_ms else wall
    return Stats(len(wall), statistics.median(wall), percentile(wall, 0.99), statistics.median(cpu),
                 percentile(cpu, 0.99))


def measure(fn: Callable[[], object], calls: int, setup: Callable[[], Any] | None = None) -> Stats:
    """Time ``calls`` calls of ``fn`` (or of ``fn(setup())``, setup not timed)."""
    gc.collect()
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(calls):
        arg = setup() if setup is not None else None
        c0 = time.thread_time()
        t0 = time.perf_counter()
        fn() if setup is None else fn(arg)  # type: ignore[call-arg]
        t1 = time.perf_counter()
        c1 = time.thread_time()
        wall.append((t1 - t0) * 1000)
        cpu.append((c1 - c0) * 1000)
    return stats(wall, cpu)


class Results:
    """Named numbers a benchmark reports, written as JSON for benchmarks/summary.py."""

    def __init__(self, bench: str) -> None:
        self.bench = bench
        self.values: dict[str, Any] = {}

    def put(self, key: str, value: Stats | float | int | str | dict[str, Any]) -> None:
        self.values[key] = asdict(value) if isinstance(value, Stats) else value

    def write(self, path: str | None) -> None:
        if path:
            Path(path).write_text(json.dumps({"bench": self.bench, "values": self.values}, indent=1) + "\n")
