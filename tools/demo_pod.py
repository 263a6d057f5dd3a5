"""Run the design's example pod, scaled to this machine, through CRI; print what each
container got, read from inside it (/proc/self/status), then remove it."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from cri import Cri  # noqa: E402 - the project's CRI client, shared with the end-to-end tests

from nri_podres.simulate_view import table  # noqa: E402
from nri_podres.sysfs import read_topology  # noqa: E402

MiB = 1 << 20
WORK = Path(os.environ.get("NRI_PODRES_E2E_DIR", "/var/tmp/nri-podres-e2e"))


def inside(cri: Cri, ctr: object, key: str) -> str:
    out = cri.exec(ctr, ["/bin/busybox", "cat", "/proc/self/status"]).stdout  # type: ignore[arg-type]
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith(key + ":"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--admin-socket", required=True)
    args = parser.parse_args()
    topo = read_topology(Path("/sys"))
    node_cpus = max(len(n.cpus) for n in topo.numa_nodes)
    budget = min(8, node_cpus)
    database = max(1, budget * 3 // 4)
    cri = Cri(WORK / "containerd.sock", WORK / "cri-stubs", log_root=WORK / "pod-logs", cgroup_parent="/nri-podres-demo")
    print(f"pod budget {budget} CPUs / 512Mi; database {database} CPU(s) / 256Mi; two sidecars without resources")
    pod = cri.run_pod("tightly-coupled-database", cpu_millis=budget * 1000, memory_limit_bytes=512 * MiB)
    try:
        containers = [
            ("metrics-exporter", "sidecar", cri.run_container(pod, "metrics-exporter")),
            ("backup-agent", "sidecar", cri.run_container(pod, "backup-agent")),
            ("database", "app", cri.run_container(pod, "database", cpu_request_millis=database * 1000,
                                                  cpu_limit_millis=database * 1000, memory_limit_bytes=256 * MiB)),
        ]
        time.sleep(0.2)
        rows = []
        for name, kind, ctr in containers:
            status = cri.container_status(ctr)
            rows.append([name, kind, inside(cri, ctr, "Cpus_allowed_list"), inside(cri, ctr, "Mems_allowed_list"),
                         str(status.cgroup_cfs_quota_us())])
        print()
        print("read from inside each running container (/proc/self/status) and its cgroup:")
        print("\n".join(table(["CONTAINER", "KIND", "Cpus_allowed_list", "Mems_allowed_list", "cfs_quota_us"], rows)))
        print()
        print("the plugin's own account (nri-podres explain):")
        subprocess.run([sys.executable, "-m", "nri_podres", "explain", "default/tightly-coupled-database",
                        "--admin-socket", args.admin_socket], check=True)
    finally:
        cri.remove_pod(pod)
        cri.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
