#!/usr/bin/env bash
# Start or stop both loopback-only reference peers (Kubo 0.22 and Helia 7 from ../shared/peers) for manual
# testing and benchmarks, on non-default ports so they do not clash with anyone else's.
#
# usage: scripts/peers.sh up [DIR]      start both (DIR default /tmp/ipfs-mount-peers-$USER); prints their URLs
#        scripts/peers.sh down [DIR]    stop both (by the PIDs the up-scripts recorded)
#        scripts/peers.sh status [DIR]
# env:   KUBO_SWARM_PORT (4311) KUBO_CTL_PORT (5391) HELIA_PORT (4411) HELIA_HTTP_PORT (8491)
#        PEERS_CACHE (default /var/tmp/ipfs-mount-peers), IPFS_MOUNT_SHARED (default ../shared)
# Then e.g.:  curl -s -XPOST "$KUBO/add?path=$PWD/some/dir"     ipfs-mount --gateway "$KUBO" --gateway "$HELIA" /mnt/x
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHARED="${IPFS_MOUNT_SHARED:-$(dirname "$ROOT")/shared}"
export PEERS_CACHE="${PEERS_CACHE:-/var/tmp/ipfs-mount-peers}"
CMD="${1:-status}"
DIR="${2:-/tmp/ipfs-mount-peers-${USER:-$(id -un)}}"
url() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2" 2>/dev/null || echo "?"; }
case "$CMD" in
  up)
    mkdir -p "$DIR"
    "$SHARED/peers/kubo-up.sh" "$DIR/kubo" --swarm-port "${KUBO_SWARM_PORT:-4311}" --ctl-port "${KUBO_CTL_PORT:-5391}" >/dev/null
    "$SHARED/peers/helia-up.sh" "$DIR/helia" --port "${HELIA_PORT:-4411}" --http-port "${HELIA_HTTP_PORT:-8491}" >/dev/null
    echo "KUBO=$(url "$DIR/kubo/node.json" gateway_url)   # gateway + control API (POST /add?path=...)"
    echo "HELIA=$(url "$DIR/helia/node.json" gateway_url)  # gateway + control API (POST /add?path=...&profile=...)"
    ;;
  down)
    "$SHARED/peers/kubo-down.sh" "$DIR/kubo" || true
    "$SHARED/peers/helia-down.sh" "$DIR/helia" || true
    ;;
  status)
    for p in kubo helia; do
      pid="$(cat "$DIR/$p/$p.pid" 2>/dev/null || true)"
      if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        echo "$p: running (pid $pid) $(url "$DIR/$p/node.json" gateway_url)"
      else
        echo "$p: stopped"
      fi
    done
    ;;
  *) sed -n '2,12p' "$0"; exit 2;;
esac
