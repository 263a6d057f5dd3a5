#!/bin/bash
# The main job, end to end: a private containerd with NRI, nri-podres attached to
# it, the design's example pod scaled to this machine, and a table of what each
# container got, read from inside the running containers. Then the full-size pod
# on a dual-socket machine through `nri-podres simulate`. Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
export NRI_PODRES_E2E_DIR=${NRI_PODRES_E2E_DIR:-/var/tmp/nri-podres-e2e}
PY=${PYTHON:-.venv/bin/python}
[ "$(id -u)" = 0 ] || { echo "demo: needs root (containerd, runc and cgroups)" >&2; exit 1; }

work=$(mktemp -d /tmp/nri-podres-demo.XXXXXX)
plugin_pid=""
started_containerd=""
cleanup() {
    [ -n "$plugin_pid" ] && kill "$plugin_pid" 2>/dev/null && wait "$plugin_pid" 2>/dev/null || true
    [ -n "$started_containerd" ] && PYTHON=$PY tools/ctrd/containerd.sh stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== 1/4 private containerd 1.7 with NRI (downloaded once, cached in $NRI_PODRES_E2E_DIR)"
PYTHON=$PY tools/ctrd/setup.sh
if ! PYTHON=$PY tools/ctrd/containerd.sh status >/dev/null 2>&1; then
    PYTHON=$PY tools/ctrd/containerd.sh start
    started_containerd=yes
fi

echo "== 2/4 nri-podres run (log: $work/nri-podres.log)"
cat > "$work/config.toml" <<'TOML'
[topology]
policy = "single-numa-node"
scope = "pod"
[cpu]
reserved-cpus = ""      # a 2-CPU demo machine has nothing to spare for the system
[memory]
reserved = {}
TOML
"$PY" -m nri_podres run --socket "$NRI_PODRES_E2E_DIR/nri/nri.sock" --config "$work/config.toml" \
    --state-dir "$work/state" --admin-socket "$work/admin.sock" --no-metrics --log-format json \
    >"$work/nri-podres.log" 2>&1 &
plugin_pid=$!
for _ in $(seq 100); do grep -q '"plugin_synchronized"' "$work/nri-podres.log" && break; sleep 0.1; done
grep -q '"plugin_synchronized"' "$work/nri-podres.log" || { cat "$work/nri-podres.log"; exit 1; }

echo "== 3/4 the example pod, scaled to this machine, run over CRI like a kubelet"
"$PY" tools/demo_pod.py --admin-socket "$work/admin.sock"

echo
echo "== 4/4 the full-size pod (8 CPUs / 16Gi) on a dual-socket machine: nri-podres simulate"
"$PY" -m nri_podres simulate --machine examples/dual-socket-32cpu.yaml examples/tightly-coupled-database.yaml
