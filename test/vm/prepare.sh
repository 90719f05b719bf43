#!/bin/sh
# Prepares the kernel VM lane (test/vm/kernel-lane.test.ts): Debian's generic kernel, which ships
# wireguard.ko and the 9p modules, extracted (not installed) into a cache directory, and a busybox
# initramfs that mounts the host root read-only over virtio-9p and runs a command from the kernel
# command line in a chroot of it. Idempotent: does nothing when the cache is complete.
#
# Usage: test/vm/prepare.sh            (cache dir: $WEFT_VM_CACHE or /var/cache/weft-vm)
# Needs: apt-get, dpkg-deb, depmod and modinfo (kmod), busybox-static, cpio, gzip. Network access to
# the Debian mirror on the first run only (apt-get download of one package).
set -eu

CACHE=${WEFT_VM_CACHE:-/var/cache/weft-vm}
# Bump when the initramfs (init script, module list) changes, so prepared caches are rebuilt.
INIT_REV=3
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p"

if [ -s "$CACHE/ready" ] && [ -f "$CACHE/vmlinuz" ] && [ -f "$CACHE/initramfs.gz" ] && grep -q " init-$INIT_REV\$" "$CACHE/ready"; then
  echo "prepare: VM lane already prepared in $CACHE ($(cat "$CACHE/ready"))"
  exit 0
fi

for tool in apt-get apt-cache dpkg-deb depmod modinfo cpio gzip; do
  command -v "$tool" >/dev/null 2>&1 || { echo "prepare: missing $tool" >&2; exit 1; }
done
BUSYBOX=$(command -v busybox || true)
[ -n "$BUSYBOX" ] || { echo "prepare: missing busybox (install busybox-static)" >&2; exit 1; }
if ! file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' && ! ldd "$BUSYBOX" 2>&1 | grep -q 'not a dynamic'; then
  echo "prepare: $BUSYBOX is not statically linked (install busybox-static)" >&2
  exit 1
fi

mkdir -p "$CACHE"
cd "$CACHE"

PKG=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n1)
[ -n "$PKG" ] || { echo "prepare: cannot find the package linux-image-amd64 depends on" >&2; exit 1; }
VERSION=${PKG#linux-image-}
echo "prepare: kernel package $PKG (version $VERSION)"

if ! ls "$CACHE"/"$PKG"_*.deb >/dev/null 2>&1; then
  # apt-get download writes into the current directory; run it in a temp dir so a failed download
  # leaves no partial .deb behind.
  tmp=$(mktemp -d "$CACHE/dl.XXXXXX")
  (cd "$tmp" && apt-get download "$PKG")
  mv "$tmp"/*.deb "$CACHE"/
  rmdir "$tmp"
fi
DEB=$(ls "$CACHE"/"$PKG"_*.deb | head -n1)

ROOT="$CACHE/root"
if [ ! -f "$ROOT/boot/vmlinuz-$VERSION" ]; then
  rm -rf "$ROOT.tmp"
  dpkg-deb -x "$DEB" "$ROOT.tmp"
  rm -rf "$ROOT"
  mv "$ROOT.tmp" "$ROOT"
fi
depmod -b "$ROOT" "$VERSION"
[ -n "$(modinfo -b "$ROOT" -k "$VERSION" -n wireguard)" ] || { echo "prepare: $PKG has no wireguard module" >&2; exit 1; }

# initramfs
INIT="$CACHE/initramfs.tmp"
rm -rf "$INIT"
mkdir -p "$INIT/bin" "$INIT/modules" "$INIT/proc" "$INIT/sys" "$INIT/dev" "$INIT/host"
cp "$BUSYBOX" "$INIT/bin/busybox"
for a in sh mount umount insmod chroot mkdir cat echo sleep poweroff; do ln -s busybox "$INIT/bin/$a"; done
ORDER=""
for m in $MODULES; do
  p=$(modinfo -b "$ROOT" -k "$VERSION" -n "$m")
  case "$p" in
    /*) ;;
    *) echo "prepare: module $m not found ($p)" >&2; exit 1 ;;
  esac
  case "$p" in
    *.ko.xz) xz -dc "$p" >"$INIT/modules/$m.ko" ;;
    *.ko.zst) zstd -dc "$p" >"$INIT/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$p" >"$INIT/modules/$m.ko" ;;
    *) cp "$p" "$INIT/modules/$m.ko" ;;
  esac
  ORDER="$ORDER $m"
done

# The command to run comes from the kernel command line: weft.cmd=<base64 of a shell script>.
cat >"$INIT/init" <<INIT_EOF
#!/bin/sh
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in$ORDER; do insmod /modules/\$m.ko 2>/dev/null || echo "init: insmod \$m failed"; done
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host; then
  echo "WEFT-VM-ERROR cannot mount host root over 9p"
  echo o >/proc/sysrq-trigger
  sleep 5
fi
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mount -t tmpfs tmp /host/tmp
mount -t tmpfs run /host/run
# The checkout under test is shared on its own (tag weftrepo) and mounted at its host path, so a
# checkout under /tmp or /run, hidden by the tmpfs mounts above, is still visible in the guest.
REPO=\$(cat /proc/cmdline | tr ' ' '\n' | sed -n 's/^weft.repo=//p' | base64 -d)
if [ -n "\$REPO" ]; then
  mkdir -p "/host\$REPO" 2>/dev/null
  mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose weftrepo "/host\$REPO" || echo "WEFT-VM-ERROR cannot mount the checkout \$REPO over 9p"
fi
CMD=\$(cat /proc/cmdline | tr ' ' '\n' | sed -n 's/^weft.cmd=//p')
echo "\$CMD" >/host/run/weft-vm-cmd.b64
echo "WEFT-VM-START \$(cut -d' ' -f1 /proc/uptime)"
chroot /host /bin/sh -c 'base64 -d /run/weft-vm-cmd.b64 >/run/weft-vm-cmd.sh && exec /bin/sh /run/weft-vm-cmd.sh' </dev/console >/dev/console 2>&1
echo "WEFT-VM-EXIT \$?"
echo o >/proc/sysrq-trigger
sleep 10
INIT_EOF
chmod +x "$INIT/init"
(cd "$INIT" && find . | cpio -o -H newc --quiet | gzip -9) >"$CACHE/initramfs.gz.tmp"
mv "$CACHE/initramfs.gz.tmp" "$CACHE/initramfs.gz"
rm -rf "$INIT"
cp "$ROOT/boot/vmlinuz-$VERSION" "$CACHE/vmlinuz"
echo "$VERSION" >"$CACHE/version"
echo "$VERSION init-$INIT_REV" >"$CACHE/ready"
echo "prepare: VM lane ready in $CACHE (kernel $VERSION; modules dir $ROOT)"
