#!/bin/bash
# build.sh -- build the Go no-op NRI plugin (main.go) into
# $NRI_PODRES_E2E_DIR/bin/go-noop-plugin, from Debian trixie packages only:
# Go 1.24 and the -dev source packages of github.com/containerd/nri 0.6.1 and
# its dependencies, compiled in GOPATH mode (no module proxy, no network
# besides the Debian mirror). Cached: rebuilds only when main.go changes.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../../tools/ctrd/lib.sh"

OUT=$CTRD_DIR/bin/go-noop-plugin
if [ -x "$OUT" ] && [ "$OUT" -nt "$HERE/main.go" ]; then
    say "go-noop-plugin up to date: $OUT"
    exit 0
fi

GO_SOURCES=(golang-1.24-go golang-1.24-src
    golang-github-containerd-nri-dev golang-github-containerd-ttrpc-dev
    golang-github-sirupsen-logrus-dev golang-golang-x-sys-dev golang-google-protobuf-dev
    golang-github-opencontainers-specs-dev golang-google-grpc-dev golang-google-genproto-dev
    golang-github-kubernetes-cri-api-dev golang-github-gogo-protobuf-dev golang-golang-x-net-dev
    golang-github-golang-protobuf-1-5-dev golang-golang-x-text-dev)
fetch_debs "${GO_SOURCES[@]/%//trixie}"

export GOROOT=$CTRD_PKG/usr/lib/go-1.24 GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local \
    CGO_ENABLED=0 GOCACHE=$CTRD_DIR/go/cache
export GOPATH=$CTRD_DIR/go/path:$CTRD_PKG/usr/share/gocode
src=$CTRD_DIR/go/path/src/go-noop-plugin
mkdir -p "$src" "$(dirname "$OUT")"
cp "$HERE/main.go" "$src/main.go"
say "building go-noop-plugin"
(cd "$src" && "$GOROOT/bin/go" build -trimpath -o "$OUT.new" . && mv "$OUT.new" "$OUT")
say "built $OUT"
