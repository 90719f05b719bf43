#!/usr/bin/env bash
# Installs the Debian packages weft's lab, tests and benchmarks need.
# Called by the README's set-up step and by .ci/run; safe to run again.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: must run as root (try: sudo $0)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
pkgs=(wireguard-go wireguard-tools iproute2 iputils-ping iperf3 tcpdump nftables dnsutils dnsperf unbound
      qemu-system-x86 busybox-static kmod cpio util-linux procps curl)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Name weft's route protocol (147, src/datapath/rtnetlink.ts) so `ip route` shows "proto weft".
mkdir -p /etc/iproute2/rt_protos.d
[ -f /etc/iproute2/rt_protos.d/weft.conf ] || echo "147 weft" > /etc/iproute2/rt_protos.d/weft.conf
# unbound is only a benchmark reference: never leave the packaged service running on the host.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now unbound >/dev/null 2>&1 || true; fi
echo "install-system-deps: ok"
