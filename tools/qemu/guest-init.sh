#!/bin/bash
# PID 1 of the test guest after switch_root (this machine's userland, read-only
# 9p + tmpfs overlay). Mounts the basics and a cgroup hierarchy, then runs the
# command agent (guest_agent.py) on the virtio-serial port "nrp.agent" and
# powers the guest off when the agent ends.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cgroup=v2
for arg in $(cat /proc/cmdline); do
    case $arg in nrp.cgroup=*) cgroup=${arg#nrp.cgroup=} ;; esac
done
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
# /tmp stays the host's (read through the overlay, writes land in its RAM upper
# layer): the checkout under test may live there, and the guest runs it in place.
mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
if [ "$cgroup" = v1 ]; then
    for c in cpuset cpu cpuacct memory devices freezer blkio pids hugetlb; do
        mkdir -p /sys/fs/cgroup/$c && mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c
    done
else
    umount /sys/fs/cgroup
    mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
    for c in cpuset cpu io memory pids hugetlb; do
        echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control
    done
fi
hostname nrp-guest
ip link set lo up 2>/dev/null
python=$repo/.venv/bin/python
[ -x "$python" ] || python=python3
echo "nrp-guest: userland up at $(cut -d' ' -f1 /proc/uptime) s, cgroup $cgroup, agent $python"
"$python" -u "$here/guest_agent.py" --port nrp.agent </dev/null >/dev/console 2>&1 &
agent=$!
# PID 1 reaps every orphan; it leaves when the agent does
while kill -0 "$agent" 2>/dev/null; do wait -n 2>/dev/null || sleep 1; done
echo "nrp-guest: agent gone at $(cut -d' ' -f1 /proc/uptime) s, powering off"
sync
echo o > /proc/sysrq-trigger
sleep 30
