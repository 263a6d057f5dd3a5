#!/bin/bash
# setup.sh -- prepare a private containerd 1.7 (with NRI) for the end-to-end
# tests, under $NRI_PODRES_E2E_DIR (default /var/tmp/nri-podres-e2e).
#
# Idempotent and cached: a second run only checks stamps. Nothing is installed
# system-wide except gcc/libc6-dev when they are missing: the runtime packages
# are downloaded with private apt lists and unpacked into $DIR/pkg.
#   containerd (trixie: 1.7 with NRI), runc (bookworm), busybox-static (bookworm),
#   CRI api.proto (trixie golang-github-kubernetes-cri-api-dev)
# Then builds the static pause/probe programs into OCI archives and compiles
# the CRI API into Python stubs with grpc_tools (from $PYTHON, default the
# repo's .venv).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
started=$(date +%s.%N)

ensure_compiler() {
    local missing=()
    command -v gcc >/dev/null || missing+=(gcc)
    [ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -n "$(ls /usr/lib/*/libc.a 2>/dev/null)" ] || missing+=(libc6-dev)
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]} (needs root to install)"
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build_images() {
    local out=$CTRD_DIR/images busybox=$CTRD_PKG/bin/busybox
    mkdir -p "$out"
    local inputs=("$CTRD_TOOLS/pause.c" "$CTRD_TOOLS/probe.c" "$CTRD_TOOLS/oci_image.py" "$busybox")
    local newest
    newest=$(ls -t "${inputs[@]}" | head -1)
    if [ -s "$out/pause.tar" ] && [ -s "$out/probe.tar" ] \
        && [ "$out/pause.tar" -nt "$newest" ] && [ "$out/probe.tar" -nt "$newest" ]; then
        return 0
    fi
    ensure_compiler
    say "building images localhost/pause:e2e, localhost/probe:e2e"
    gcc -static -O2 -Wall -o "$out/pause" "$CTRD_TOOLS/pause.c"
    gcc -static -O2 -Wall -o "$out/probe" "$CTRD_TOOLS/probe.c"
    local py=python3
    command -v "$py" >/dev/null || py=$PYTHON
    "$py" "$CTRD_TOOLS/oci_image.py" --output "$out/pause.tar" --name localhost/pause:e2e \
        --entrypoint /pause --file pause="$out/pause"
    local links=()
    for tool in sh cat grep sleep ls taskset nproc; do links+=(--link "bin/$tool=busybox"); done
    "$py" "$CTRD_TOOLS/oci_image.py" --output "$out/probe.tar" --name localhost/probe:e2e \
        --entrypoint /probe --file probe="$out/probe" --file bin/busybox="$busybox" "${links[@]}"
}

compile_cri_stubs() {
    local proto=$CTRD_PKG/usr/share/gocode/src/k8s.io/cri-api/pkg/apis/runtime/v1/api.proto
    local out=$CTRD_DIR/cri-stubs
    "$PYTHON" -c 'import grpc_tools' 2>/dev/null \
        || die "$PYTHON has no grpc_tools; run 'make venv' or set PYTHON"
    # stubs must match the protobuf/grpc runtime of the Python that imports them
    local stamp
    stamp="cri_api $(sha256sum "$proto" | cut -c1-16) $("$PYTHON" -c \
        'import grpc_tools, google.protobuf as p; from importlib.metadata import version as v; print(v("grpcio-tools"), p.__version__)')"
    [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ] && return 0
    say "compiling CRI runtime.v1 API for $PYTHON"
    rm -rf "$out" && mkdir -p "$out"
    # gogoproto options only matter to Go; without them no gogo.proto is needed.
    # A distinct file name: NRI's API is also "api.proto", and both land in
    # protobuf's default descriptor pool of one process.
    grep -v gogoproto "$proto" > "$out/cri_api.proto"
    "$PYTHON" -m grpc_tools.protoc -I"$out" --python_out="$out" --grpc_python_out="$out" "$out/cri_api.proto"
    echo "$stamp" > "$out/.stamp"
}

mkdir -p "$CTRD_DIR"
fetch_debs containerd/trixie runc/bookworm busybox-static/bookworm \
    golang-github-kubernetes-cri-api-dev/trixie
build_images
compile_cri_stubs
write_config
say "ready in $CTRD_DIR: $("$CTRD_PKG/usr/bin/containerd" --version | awk '{print $1, $3}'),"\
    "runc $("$CTRD_PKG/usr/sbin/runc" --version | awk 'NR==1{print $3}')"\
    "($(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}') s)"
