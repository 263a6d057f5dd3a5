#!/bin/bash
# setup.sh -- everything needed to boot the multi-NUMA test guest under QEMU
# (software emulation, no KVM needed), cached under $NRI_PODRES_QEMU_DIR
# (default /var/tmp/nri-podres-qemu). Idempotent: a second run checks stamps.
#
#   qemu-system-x86            installed with apt-get when missing (needs root)
#   Debian's linux-image-amd64 downloaded (not installed) and unpacked: the kernel
#                              and the few modules the guest needs
#   busybox-static             downloaded, for the initramfs
#   initrd.cpio.gz             busybox + virtio/9p/overlay/virtio-console modules +
#                              initramfs-init.sh as /init
#
# The guest has no disk image: its root is this machine's / shared read-only
# over virtio-9p under a tmpfs overlay (see initramfs-init.sh, guest-init.sh).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
QDIR=${NRI_PODRES_QEMU_DIR:-/var/tmp/nri-podres-qemu}
started=$(date +%s.%N)
say() { printf '[qemu] %s\n' "$*"; }
die() { printf '[qemu] error: %s\n' "$*" >&2; exit 1; }
apt_q() { apt-get -qq -o=Dpkg::Use-Pty=0 "$@"; }

# modules the initramfs loads (their dependencies are added from modules.dep)
INITRAMFS_MODULES="virtio_pci 9pnet_virtio 9p overlay virtio_console"

ensure_qemu() {
    command -v qemu-system-x86_64 >/dev/null && return 0
    [ "$(id -u)" -eq 0 ] || die "qemu-system-x86_64 missing (installing it needs root)"
    say "installing qemu-system-x86"
    apt-cache show qemu-system-x86 >/dev/null 2>&1 || apt_q update
    DEBIAN_FRONTEND=noninteractive apt_q install -y --no-install-recommends qemu-system-x86 >/dev/null
}

download_debs() {
    local d=$QDIR/debs
    [ -e "$d/.done" ] && return 0
    mkdir -p "$d"
    apt-cache show linux-image-amd64 >/dev/null 2>&1 || apt_q update
    local kpkg
    kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    [ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 to a versioned kernel package"
    say "downloading $kpkg, busybox-static"
    (cd "$d" && apt_q -oAPT::Sandbox::User=root download "$kpkg" busybox-static)
    touch "$d/.done"
}

unpack_kernel() {
    local k=$QDIR/kernel bb=$QDIR/busybox
    [ -e "$k/.done" ] && return 0
    rm -rf "$k" "$bb"
    mkdir -p "$k" "$bb"
    dpkg-deb -x "$(ls "$QDIR"/debs/busybox-static_*.deb)" "$bb"
    # the kernel, the module index and the module families a test guest may
    # load (the whole tree is ~400 MB)
    dpkg-deb --fsys-tarfile "$(ls "$QDIR"/debs/linux-image-[0-9]*.deb)" \
        | tar -x -C "$k" --wildcards './boot/vmlinuz-*' './lib/modules/*/modules.*' \
            './lib/modules/*/kernel/fs/*' './lib/modules/*/kernel/net/*' \
            './lib/modules/*/kernel/lib/*' './lib/modules/*/kernel/crypto/*' \
            './lib/modules/*/kernel/drivers/virtio/*' './lib/modules/*/kernel/drivers/char/*' \
            './lib/modules/*/kernel/drivers/block/*' './lib/modules/*/kernel/drivers/net/*'
    # this machine may have no kmod: busybox makes the index
    "$bb/bin/busybox" depmod -b "$k" "$(ls "$k/lib/modules")"
    touch "$k/.done"
}

build_initramfs() {
    local kver k=$QDIR/kernel out=$QDIR/initrd.cpio.gz
    kver=$(ls "$k/lib/modules")
    cp "$k/boot/vmlinuz-$kver" "$QDIR/vmlinuz"
    local stamp
    stamp="$kver $INITRAMFS_MODULES $(sha256sum "$HERE/initramfs-init.sh" | cut -c1-16)"
    [ -s "$out" ] && [ "$(cat "$QDIR/initrd.stamp" 2>/dev/null)" = "$stamp" ] && return 0
    say "building the initramfs (kernel $kver)"
    local root
    root=$(mktemp -d "$QDIR/.initramfs.XXXXXX")
    mkdir -p "$root/bin" "$root/lib/modules/$kver"
    cp "$QDIR/busybox/bin/busybox" "$root/bin/busybox"
    local m files=()
    for m in $INITRAMFS_MODULES; do
        local line
        line=$(grep -E "/$m\.ko(\.[gx]z|\.zst)?:" "$k/lib/modules/$kver/modules.dep") \
            || die "module $m not in modules.dep"
        files+=($(echo "$line" | tr -d ':'))
    done
    local f
    for f in $(printf '%s\n' "${files[@]}" | sort -u); do
        mkdir -p "$root/lib/modules/$kver/$(dirname "$f")"
        cp "$k/lib/modules/$kver/$f" "$root/lib/modules/$kver/$f"
    done
    "$QDIR/busybox/bin/busybox" depmod -b "$root" "$kver"
    install -m 755 "$HERE/initramfs-init.sh" "$root/init"
    (cd "$root" && find . | "$QDIR/busybox/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1 > "$out.tmp")
    mv "$out.tmp" "$out"
    rm -rf "$root"
    echo "$stamp" > "$QDIR/initrd.stamp"
}

mkdir -p "$QDIR"
ensure_qemu
download_debs
unpack_kernel
build_initramfs
say "ready in $QDIR: $(qemu-system-x86_64 --version | head -1 | awk '{print $1, $4}'), kernel $(ls "$QDIR/kernel/lib/modules")" \
    "($(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN{printf "%.1f", e-s}') s)"
