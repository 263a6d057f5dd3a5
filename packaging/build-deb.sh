#!/usr/bin/env bash
# Build the nri-podres Debian package with dpkg-deb (no debhelper needed).
#
#   packaging/build-deb.sh [OUTDIR]          # default OUTDIR: dist/
#
# Layout of the package:
#   /usr/bin/nri-podres                   launcher (#!/usr/bin/python3 -I), finds its code in
#                                         ../lib/nri-podres relative to itself
#   /usr/lib/nri-podres/                  nri_podres + its Python dependencies (protobuf,
#                                         structlog, PyYAML, prometheus-client) as PyPI wheels,
#                                         byte-compiled at install time, not shipped compiled
#   /lib/systemd/system/nri-podres.service
#   /etc/nri-podres/config.toml           conffile
#   /usr/share/doc/nri-podres/            README.Debian, copyright, changelog, examples/
#
# The wheels carry compiled code for one Python minor version, so the package depends on
# exactly that minor version of python3 (Debian 12: 3.11) and on this machine's architecture.
#
# Environment: PYTHON runs pip (default: python3); TARGET_PYTHON is the interpreter the
# package will run on, whose version selects the wheels (default: /usr/bin/python3);
# SOURCE_DATE_EPOCH fixes file times (default: the last commit's time, else now).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
out=$(mkdir -p "${1:-$repo/dist}" && cd "${1:-$repo/dist}" && pwd)
python=${PYTHON:-python3}
target_python=${TARGET_PYTHON:-/usr/bin/python3}

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/nri_podres/__init__.py")
[ -n "$version" ] || { echo "build-deb: no __version__ in nri_podres/__init__.py" >&2; exit 1; }
pyver=$("$target_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pynext=$("$target_python" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')
arch=$(dpkg --print-architecture)
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

# The runtime dependencies, exactly as pyproject.toml declares them.
mapfile -t deps < <("$python" - "$repo/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY
)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
lib=$root/usr/lib/nri-podres
doc=$root/usr/share/doc/nri-podres
install -d "$lib" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/nri-podres" \
    "$doc/examples" "$root/DEBIAN"

echo "build-deb: bundling ${deps[*]} for python $pyver" >&2
"$python" -m pip install --quiet --disable-pip-version-check --no-compile \
    --target "$lib" --only-binary=:all: --python-version "$pyver" --implementation cp \
    "${deps[@]}"
rm -rf "$lib/bin"
tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' -cf - nri_podres | tar -C "$lib" -xf -

cat > "$root/usr/bin/nri-podres" <<'PY'
#!/usr/bin/python3 -I
"""nri-podres launcher: runs the package from the private directory beside this file."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lib" / "nri-podres"))
from nri_podres.cli import main  # noqa: E402

sys.exit(main())
PY
chmod 0755 "$root/usr/bin/nri-podres"

install -m 0644 "$here/nri-podres.service" "$root/lib/systemd/system/nri-podres.service"
install -m 0644 "$here/config.toml" "$root/etc/nri-podres/config.toml"
for example in containerd-1.7-nri.toml containerd-2.x-nri.toml crio-nri.conf daemonset.yaml; do
    install -m 0644 "$here/$example" "$doc/examples/$example"
done

cat > "$doc/README.Debian" <<'EOF'
nri-podres for Debian
=====================

nri-podres connects to the container runtime's NRI socket (/var/run/nri/nri.sock). The
package never edits the runtime's configuration; enable NRI yourself:

- containerd 1.7: NRI is off by default. Merge examples/containerd-1.7-nri.toml into
  /etc/containerd/config.toml (or import it as a drop-in) and restart containerd.
  Debian 12's own containerd (1.6) has no NRI; use containerd 1.7 or newer.
- containerd 2.x: NRI is on by default (examples/containerd-2.x-nri.toml spells it out).
- CRI-O >= 1.30: NRI is on by default; examples/crio-nri.conf for older releases.

Turn the kubelet's CPU, memory and topology managers off ("none") on managed nodes.

The service is enabled at installation and started at once only when the NRI socket
already exists; otherwise start it after enabling NRI:

    systemctl start nri-podres
    nri-podres status
    journalctl -u nri-podres

Configuration: /etc/nri-podres/config.toml (every key documented). State (the allocation
checkpoint): /var/lib/nri-podres, removed on purge. To run nri-podres in a cluster
instead, see examples/daemonset.yaml.
EOF

cat > "$doc/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: nri-podres
Comment: /usr/lib/nri-podres also holds the Python packages protobuf (BSD-3-clause),
 structlog (Apache-2.0 or MIT), PyYAML (MIT) and prometheus-client (Apache-2.0);
 their licence texts are in their *.dist-info directories.

Files: *
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF

changelog_date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
cat > "$stage/changelog" <<EOF
nri-podres ($version) unstable; urgency=medium

  * Release $version.

 -- nri-podres maintainers <maintainers@nri-podres.invalid>  $changelog_date
EOF
gzip -9n -c "$stage/changelog" > "$doc/changelog.Debian.gz"

echo /etc/nri-podres/config.toml > "$root/DEBIAN/conffiles"

cat > "$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
# Byte-compile the private modules (the unit's read-only /usr cannot take __pycache__
# later) and register the unit the way dh_installsystemd does.
set -e
if [ "$1" = "configure" ]; then
    python3 -m compileall -q /usr/lib/nri-podres >/dev/null 2>&1 || true
    if command -v deb-systemd-helper >/dev/null 2>&1; then
        deb-systemd-helper unmask nri-podres.service >/dev/null || true
        if deb-systemd-helper --quiet was-enabled nri-podres.service; then
            deb-systemd-helper enable nri-podres.service >/dev/null || true
        else
            deb-systemd-helper update-state nri-podres.service >/dev/null || true
        fi
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
        # Starting blocks until READY=1, which needs the runtime's NRI socket.
        if [ -S /var/run/nri/nri.sock ]; then
            if [ -n "$2" ]; then action=restart; else action=start; fi
            deb-systemd-invoke "$action" nri-podres.service >/dev/null || true
        fi
    fi
fi
exit 0
EOF

cat > "$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = "remove" ]; then
    deb-systemd-invoke stop nri-podres.service >/dev/null || true
fi
find /usr/lib/nri-podres -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
exit 0
EOF

cat > "$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = "remove" ] && command -v deb-systemd-helper >/dev/null 2>&1; then
    deb-systemd-helper mask nri-podres.service >/dev/null || true
fi
if [ "$1" = "purge" ]; then
    if command -v deb-systemd-helper >/dev/null 2>&1; then
        deb-systemd-helper purge nri-podres.service >/dev/null || true
        deb-systemd-helper unmask nri-podres.service >/dev/null || true
    fi
    rm -rf /var/lib/nri-podres
fi
exit 0
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

installed_kib=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<EOF
Package: nri-podres
Version: $version
Architecture: $arch
Maintainer: nri-podres maintainers <maintainers@nri-podres.invalid>
Installed-Size: $installed_kib
Depends: python3 (>= $pyver), python3 (<< $pynext)
Section: admin
Priority: optional
Description: pod-level CPU and memory management for containerd and CRI-O
 nri-podres is an NRI plugin: it gives a Kubernetes pod's Guaranteed whole-CPU
 budget a NUMA-aligned set of CPUs, carves exclusive CPUs out of it for the
 containers that ask for whole CPUs and lets the pod's other containers share
 the rest, by answering the runtime with cpuset adjustments.
 .
 Needs a runtime with NRI enabled: containerd 1.7 or newer, or CRI-O 1.26 or
 newer. Its Python dependencies are bundled in /usr/lib/nri-podres.
EOF

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
deb="$out/nri-podres_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
