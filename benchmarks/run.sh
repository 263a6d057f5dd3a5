#!/bin/bash
# run.sh -- every benchmark, then one summary table with the targets beside the
# numbers (benchmarks/results/latest.txt). Nothing is asserted: it prints.
#
#   benchmarks/run.sh [--quick] [--no-e2e]
#
# The end-to-end benchmark brings up a private containerd of its own, apart from
# the test suite's:
#   NRI_PODRES_BENCH_DIR            default /var/tmp/nri-podres-bench
#   NRI_PODRES_BENCH_CGROUP_PARENT  default /nri-podres-bench
# On a first run the work directory is seeded from the test suite's
# ($NRI_PODRES_E2E_DIR, default /var/tmp/nri-podres-e2e: packages, images, CRI
# stubs, the Go plugin) when that one is set up, instead of downloading again.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
export NRI_PODRES_BENCH_DIR=${NRI_PODRES_BENCH_DIR:-/var/tmp/nri-podres-bench}
export NRI_PODRES_BENCH_CGROUP_PARENT=${NRI_PODRES_BENCH_CGROUP_PARENT:-/nri-podres-bench}
E2E_DIR=${NRI_PODRES_E2E_DIR:-/var/tmp/nri-podres-e2e}

quick=() e2e=yes
for arg in "$@"; do
    case $arg in
    --quick) quick=(--quick) ;;
    --no-e2e) e2e=no ;;
    *) echo "usage: $0 [--quick] [--no-e2e]" >&2; exit 2 ;;
    esac
done

seed_bench_dir() {
    [ -d "$NRI_PODRES_BENCH_DIR/pkg" ] && return 0
    [ "$E2E_DIR" != "$NRI_PODRES_BENCH_DIR" ] && [ -d "$E2E_DIR/pkg" ] || return 0
    echo "[bench] seeding $NRI_PODRES_BENCH_DIR from $E2E_DIR"
    mkdir -p "$NRI_PODRES_BENCH_DIR"
    local d
    for d in apt debs pkg images cri-stubs bin; do
        [ -e "$E2E_DIR/$d" ] && cp -a "$E2E_DIR/$d" "$NRI_PODRES_BENCH_DIR/"
    done
    return 0
}

RAW=$(mktemp -d /tmp/nri-podres-bench.XXXXXX)
trap 'rm -rf "$RAW"' EXIT

bench() {  # NAME SCRIPT ARGS...
    local name=$1 script=$2
    shift 2
    echo "[bench] $name: $script $*"
    (cd "$REPO" && "$PYTHON" "$HERE/$script" "$@") | tee "$RAW/$name.txt"
}

started=$SECONDS
bench decisions bench_decisions.py "${quick[@]}" --json "$RAW/decisions.json"
bench protocol bench_protocol.py --calls "$([ ${#quick[@]} -gt 0 ] && echo 200 || echo 1000)" --json "$RAW/protocol.json"
bench memory bench_memory.py --json "$RAW/memory.json"
if [ "$e2e" = yes ]; then
    seed_bench_dir
    if [ ${#quick[@]} -gt 0 ]; then e2e_args=(--rounds 2 --calls 5 --wire-rounds 1); else e2e_args=(--rounds 8 --calls 12 --wire-rounds 8 --cpuset-rounds 8); fi
    bench e2e bench_e2e.py "${e2e_args[@]}" --json "$RAW/e2e.json"
fi
[ -f "$HERE/bench_allocator.py" ] && bench allocator bench_allocator.py --calls "$([ ${#quick[@]} -gt 0 ] && echo 200 || echo 1000)"
[ -f "$HERE/bench_topology.py" ] && bench topology bench_topology.py

mkdir -p "$HERE/results"
"$PYTHON" "$HERE/summary.py" "$RAW" > "$HERE/results/latest.txt"
echo
echo "[bench] all done in $((SECONDS - started)) s; summary in benchmarks/results/latest.txt"
echo
sed -n '1,/^Wall-clock/p' "$HERE/results/latest.txt" | sed '$d'
