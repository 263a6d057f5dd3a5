#!/bin/bash
# containerd.sh start|stop|restart|status -- the private containerd prepared
# by setup.sh (same $NRI_PODRES_E2E_DIR).
#
#   start    write the config, launch containerd, wait for the CRI and NRI
#            sockets, import the pause and probe images
#   stop     remove every pod through CRI, then kill containerd, unmount
#            leftovers and remove the pod cgroups under the private parent
#   restart  stop the containerd process only and start it again; pods and
#            containers keep running (their shims outlive containerd)
#   status   exit 0 when running, print pid and sockets
set -euo pipefail
. "$(dirname "$0")/lib.sh"
CTR=("$CTRD_PKG/usr/bin/ctr" -a "$CTRD_SOCK" -n k8s.io)

launch() {
    [ -x "$CTRD_PKG/usr/bin/containerd" ] || die "not set up; run tools/ctrd/setup.sh"
    write_config
    rm -f "$CTRD_SOCK" "$CTRD_NRI_SOCK"
    # containerd finds containerd-shim-runc-v2 on PATH
    PATH="$CTRD_PKG/usr/bin:$PATH" setsid "$CTRD_PKG/usr/bin/containerd" \
        --config "$CTRD_DIR/config.toml" >>"$CTRD_LOG" 2>&1 </dev/null &
    echo $! > "$CTRD_PIDFILE"
    wait_for_socket "$CTRD_SOCK" 30
    wait_for_socket "$CTRD_NRI_SOCK" 10
}

terminate() {  # stop the containerd process only
    local pid
    pid=$(pid_of_containerd) || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    fi
    rm -f "$CTRD_PIDFILE"
}

remove_pods() {
    if "$PYTHON" "$CTRD_REPO/tests/e2e/cri.py" cleanup --socket "$CTRD_SOCK" \
        --stubs "$CTRD_DIR/cri-stubs" --cgroup-parent "$CTRD_CGROUP_PARENT"; then
        return 0
    fi
    say "CRI cleanup failed; killing tasks with ctr"
    local id
    for id in $("${CTR[@]}" tasks ls -q 2>/dev/null); do
        "${CTR[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
        "${CTR[@]}" tasks delete "$id" >/dev/null 2>&1 || true
    done
    for id in $("${CTR[@]}" containers ls -q 2>/dev/null); do
        "${CTR[@]}" containers rm "$id" >/dev/null 2>&1 || true
    done
}

remove_leftovers() {
    # mounts (rootfs, shm) that a crashed run may have left under the work dir
    awk -v d="$CTRD_DIR/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r \
        | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    local root
    for root in /sys/fs/cgroup/*"$CTRD_CGROUP_PARENT" /sys/fs/cgroup"$CTRD_CGROUP_PARENT"; do
        [ -d "$root" ] && find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}

case ${1:-} in
start)
    if running; then say "already running (pid $(pid_of_containerd))"; exit 0; fi
    t0=$(date +%s%N)
    launch
    "${CTR[@]}" images import "$CTRD_DIR/images/pause.tar" >/dev/null
    "${CTR[@]}" images import "$CTRD_DIR/images/probe.tar" >/dev/null
    say "containerd running (pid $(pid_of_containerd), $((($(date +%s%N) - t0) / 1000000)) ms):" \
        "CRI $CTRD_SOCK, NRI $CTRD_NRI_SOCK"
    ;;
stop)
    if running; then remove_pods; fi
    terminate
    remove_leftovers
    say "containerd stopped"
    ;;
restart)
    t0=$(date +%s%N)
    terminate
    launch
    say "containerd restarted (pid $(pid_of_containerd), $((($(date +%s%N) - t0) / 1000000)) ms)"
    ;;
status)
    if running; then
        say "running (pid $(pid_of_containerd)): CRI $CTRD_SOCK, NRI $CTRD_NRI_SOCK"
    else
        say "not running"; exit 1
    fi
    ;;
*)
    echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
