#!/bin/busybox sh
# /init of the test guest's initramfs. Mounts the host's / (9p tag "hostroot",
# read-only) as the lower layer of an overlay whose upper layer is a tmpfs,
# then switch_root's into it and runs the script named by nrp.init= as PID 1.
/bin/busybox --install -s /bin
export PATH=/bin
halt() { echo "nrp-initramfs: $*"; echo o > /proc/sysrq-trigger; sleep 30; }
mkdir -p /proc /sys /dev /lower /rw /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "nrp-initramfs: up at $(cut -d' ' -f1 /proc/uptime) s"
modprobe -a virtio_pci 9pnet_virtio 9p overlay virtio_console || halt "modprobe failed"
init=/bin/sh
for arg in $(cat /proc/cmdline); do
    case $arg in nrp.init=*) init=${arg#nrp.init=} ;; esac
done
# cache=loose: the host tree is treated as unchanging while the guest runs;
# a large msize means fewer 9p round trips
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /lower \
    || halt "9p mount failed"
mount -t tmpfs -o size=60%,mode=755 tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || halt "overlay mount failed"
for m in proc sys dev; do mount --move /$m /newroot/$m; done
echo "nrp-initramfs: switch_root at $(cut -d' ' -f1 /newroot/proc/uptime) s -> $init"
exec switch_root /newroot "$init"
