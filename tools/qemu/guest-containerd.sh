#!/bin/bash
# guest-containerd.sh start|restart|stop -- runs INSIDE the test guest: the
# private containerd that tools/ctrd/setup.sh prepared on the host, with all
# its state in the guest's RAM.
#
# The host's work dir (binaries, images, CRI stubs) is read through the 9p
# root; the guest's own work dir ($NRI_PODRES_E2E_DIR, default /run/nrp-e2e,
# tmpfs: containerd's overlayfs snapshotter cannot sit on the overlay root)
# links to those and holds config, sockets, root, state and logs.
# NRI's per-request timeout is $NRP_GUEST_NRI_TIMEOUT (default 10s): the guest
# is emulated, ~20x slower than the host; this tier checks placement, not latency.
set -euo pipefail
host_dir=${NRP_HOST_E2E_DIR:-/var/tmp/nri-podres-e2e}
export NRI_PODRES_E2E_DIR=${NRI_PODRES_E2E_DIR:-/run/nrp-e2e}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../ctrd/lib.sh"

prepare() {
    mkdir -p "$CTRD_DIR"
    local part
    for part in pkg images cri-stubs; do
        [ -e "$host_dir/$part" ] || die "$host_dir/$part missing: run tools/ctrd/setup.sh on the host"
        [ -e "$CTRD_DIR/$part" ] || ln -s "$host_dir/$part" "$CTRD_DIR/$part"
    done
}

launch() {
    write_config
    sed -i "s/^\(  plugin_request_timeout = \).*/\1\"${NRP_GUEST_NRI_TIMEOUT:-10s}\"/" "$CTRD_DIR/config.toml"
    rm -f "$CTRD_SOCK" "$CTRD_NRI_SOCK"
    PATH="$CTRD_PKG/usr/bin:$PATH" setsid "$CTRD_PKG/usr/bin/containerd" \
        --config "$CTRD_DIR/config.toml" >>"$CTRD_LOG" 2>&1 </dev/null &
    echo $! > "$CTRD_PIDFILE"
    wait_for_socket "$CTRD_SOCK" 120
    wait_for_socket "$CTRD_NRI_SOCK" 60
}

terminate() {
    running || return 0
    local pid
    pid=$(cat "$CTRD_PIDFILE")
    kill -TERM "$pid"
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    rm -f "$CTRD_PIDFILE"
}

case ${1:-} in
start)
    running && { say "already running (pid $(cat "$CTRD_PIDFILE"))"; exit 0; }
    prepare
    launch
    for image in pause probe; do
        "$CTRD_PKG/usr/bin/ctr" -a "$CTRD_SOCK" -n k8s.io images import "$CTRD_DIR/images/$image.tar" >/dev/null
    done
    say "containerd running in the guest (pid $(cat "$CTRD_PIDFILE")): CRI $CTRD_SOCK, NRI $CTRD_NRI_SOCK"
    ;;
restart)
    terminate
    launch
    say "containerd restarted (pid $(cat "$CTRD_PIDFILE"))"
    ;;
stop)
    terminate
    say "containerd stopped"
    ;;
*)
    echo "usage: $0 start|restart|stop" >&2; exit 2 ;;
esac
