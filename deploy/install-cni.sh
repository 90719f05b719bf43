#!/bin/sh
# weft CNI install step: the DaemonSet's init container runs this on every node before the agent
# starts. It copies the plugin into the host's CNI bin dir and writes the network config, every file
# atomically (write a temp file in the same directory, then rename), so the container runtime never
# sees a half-written plugin or conflist, and a re-run (agent update, restart) is safe.
#
# Layout installed (see deploy/README.md):
#   $CNI_BIN_DIR/weft-cni                      launcher (/bin/sh) built by deploy/build.ts
#   $CNI_BIN_DIR/weft-runtime/node             the Node.js runtime the launcher executes
#   $CNI_BIN_DIR/weft-runtime/weft-cni.mjs     the bundled plugin
#   $CNI_NET_DIR/10-weft.conflist              the CNI network config
#
# Environment (defaults are the DaemonSet's host mounts):
#   WEFT_DIST     directory holding weft-cni and weft-cni.mjs  (/opt/weft/dist)
#   WEFT_NODE     the node binary to install                   (the one running in this image)
#   CNI_BIN_DIR   host CNI binary dir, mounted                 (/host/opt/cni/bin)
#   CNI_NET_DIR   host CNI config dir, mounted                 (/host/etc/cni/net.d)
#   WEFT_SOCKET   agent socket path written into the conflist  (/run/weft/weft.sock)
set -eu

WEFT_DIST=${WEFT_DIST:-/opt/weft/dist}
WEFT_NODE=${WEFT_NODE:-$(command -v node || true)}
CNI_BIN_DIR=${CNI_BIN_DIR:-/host/opt/cni/bin}
CNI_NET_DIR=${CNI_NET_DIR:-/host/etc/cni/net.d}
WEFT_SOCKET=${WEFT_SOCKET:-/run/weft/weft.sock}

log() { echo "install-cni: $*" >&2; }
die() { log "error: $*"; exit 1; }

# The socket path goes into JSON: refuse anything that would need escaping.
case "$WEFT_SOCKET" in
  /*) ;;
  *) die "WEFT_SOCKET must be an absolute path, got '$WEFT_SOCKET'" ;;
esac
case "$WEFT_SOCKET" in
  *[!A-Za-z0-9/._-]*) die "WEFT_SOCKET may only contain [A-Za-z0-9/._-], got '$WEFT_SOCKET'" ;;
esac

[ -n "$WEFT_NODE" ] && [ -x "$WEFT_NODE" ] || die "no node binary to install (WEFT_NODE='$WEFT_NODE')"
[ -f "$WEFT_DIST/weft-cni" ] || die "missing $WEFT_DIST/weft-cni (run npm run build)"
[ -f "$WEFT_DIST/weft-cni.mjs" ] || die "missing $WEFT_DIST/weft-cni.mjs (run npm run build)"

# install_file SRC DST MODE: copy to a temp file next to DST, then rename over DST.
install_file() {
  tmp="$2.weft-tmp.$$"
  cp "$1" "$tmp" || { rm -f "$tmp"; die "copy $1 -> $tmp failed"; }
  chmod "$3" "$tmp"
  mv -f "$tmp" "$2" || { rm -f "$tmp"; die "rename $tmp -> $2 failed"; }
}

mkdir -p "$CNI_BIN_DIR/weft-runtime" "$CNI_NET_DIR"
# Runtime first, launcher last: a launcher is never installed before the files it runs.
install_file "$WEFT_NODE" "$CNI_BIN_DIR/weft-runtime/node" 0755
install_file "$WEFT_DIST/weft-cni.mjs" "$CNI_BIN_DIR/weft-runtime/weft-cni.mjs" 0644
install_file "$WEFT_DIST/weft-cni" "$CNI_BIN_DIR/weft-cni" 0755

conf_tmp="$CNI_NET_DIR/.10-weft.conflist.weft-tmp.$$"
cat > "$conf_tmp" <<CONF
{
  "cniVersion": "1.1.0",
  "name": "weft",
  "plugins": [
    { "type": "weft-cni", "socket": "$WEFT_SOCKET" }
  ]
}
CONF
chmod 0644 "$conf_tmp"
mv -f "$conf_tmp" "$CNI_NET_DIR/10-weft.conflist"

log "installed $CNI_BIN_DIR/weft-cni and $CNI_NET_DIR/10-weft.conflist (socket $WEFT_SOCKET)"
