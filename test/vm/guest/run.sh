#!/bin/sh
# Runs inside the kernel VM lane (see test/vm/kernel-lane.test.ts), in a chroot of the host root,
# which is read-only here: everything is written under /tmp. Usage: run.sh <vm cache dir>
# Prints the vitest JSON report, base64-encoded, between WEFT-VM-REPORT-BEGIN/END on the console.
set -u
CACHE=$1
export HOME=/tmp TMPDIR=/tmp PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if ! modprobe -d "$CACHE/root" wireguard; then
  echo "WEFT-VM-FATAL modprobe wireguard failed"
  exit 1
fi
# veth is only for the "not a WireGuard link" test; best effort.
modprobe -d "$CACHE/root" veth || echo "WEFT-VM-WARN modprobe veth failed"
ip link set lo up
echo "WEFT-VM-KERNEL $(uname -r) wireguard=$(cat /sys/module/wireguard/version 2>/dev/null)"
echo "WEFT-VM-VITEST-START uptime=$(cut -d' ' -f1 /proc/uptime)"
# --configLoader runner: the default loader bundles the config into node_modules/, read-only here.
WEFT_TEST_REPORT=/tmp/weft-vm-report.json node_modules/.bin/node node_modules/vitest/vitest.mjs run \
  --configLoader runner --config test/vm/guest/vitest.guest.config.ts
echo "WEFT-VM-VITEST-EXIT $? uptime=$(cut -d' ' -f1 /proc/uptime)"
if [ -f /tmp/weft-vm-report.json ]; then
  echo "WEFT-VM-REPORT-BEGIN"
  base64 -w 0 /tmp/weft-vm-report.json
  echo
  echo "WEFT-VM-REPORT-END"
fi
