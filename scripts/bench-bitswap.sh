#!/usr/bin/env bash
# Speed of ipfs-mount as a bitswap peer (issue 4, "Speed"), as ratios against baselines measured in the same run:
#   1. cold read of a 256 MiB file through the mount over bitswap from the Kubo peer (--no-gateway --peer kubo)
#      a. vs Helia fetching the same content from the same Kubo (POST /fetch)                    target >= 1.5
#      b. vs the mount's gateway path reading it from Kubo's gateway shim (--gateway, no peer)     target >= 0.8
#   2. serving: Kubo downloading 256 MiB from our mount vs Kubo downloading it from Helia        target >= 1.0
#   3. the daemon's peak RSS (VmHWM) during 1 and 2                                                target < 256 MiB
# Every side starts cold: a fresh store for each mount, a fresh Helia for each /fetch, a fresh Kubo for each
# download. Each figure is the median of BENCH_RUNS runs (ours and baseline interleaved); only ratios mean anything.
#
# usage: scripts/bench-bitswap.sh [quick]      (quick: 64 MiB, one run)
# env: CARGO_TARGET_DIR, PEERS_CACHE (default /var/tmp/ipfs-mount-peers), IPFS_MOUNT_SHARED (default ../shared),
#      BENCH_DIR (work dir; default a new dir under /var/tmp), BENCH_RUNS (3), BENCH_SIZE (256MiB),
#      BENCH_SKIP="1 2" (skip parts), BENCH_STRICT=1 (exit 1 when a target is missed)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
SHARED="${IPFS_MOUNT_SHARED:-$(dirname "$ROOT")/shared}"
PEERS="$SHARED/peers"
export PEERS_CACHE="${PEERS_CACHE:-/var/tmp/ipfs-mount-peers}"
RUNS="${BENCH_RUNS:-3}"
SIZE_H="${BENCH_SIZE:-256MiB}"
if [ "${1:-}" = quick ]; then SIZE_H=64MiB; RUNS=1; fi
SKIP=" ${BENCH_SKIP:-} "
for v in http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy IPFS_GATEWAY; do unset "$v"; done
[ -x "$PEERS/kubo-up.sh" ] || { echo "reference peers not found at $PEERS (set IPFS_MOUNT_SHARED)" >&2; exit 1; }

echo "==> building (release)"
cargo build --release --bin ipfs-mount >&2
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/release/ipfs-mount"

W="${BENCH_DIR:-$(mktemp -d /var/tmp/ipfs-mount-bench-bitswap.XXXXXX)}"
mkdir -p "$W"
PIDS=(); MNTS=(); KUBO_DIRS=(); HELIA_DIRS=()
cleanup() {
  set +e
  for m in "${MNTS[@]}"; do grep -q " $m " /proc/self/mountinfo && fusermount3 -u -z "$m"; done
  for p in "${PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then kill "$p"; sleep 1; kill -0 "$p" 2>/dev/null && kill -9 "$p"; fi
  done
  for d in "${KUBO_DIRS[@]}"; do "$PEERS/kubo-down.sh" "$d" >/dev/null 2>&1; done
  for d in "${HELIA_DIRS[@]}"; do "$PEERS/helia-down.sh" "$d" >/dev/null 2>&1; done
  [ -n "${BENCH_DIR:-}" ] || rm -rf "$W"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.4f}')" "$1" "$(now)"; }
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.4f}")' "$@"; }
maxof() { python3 -c 'import sys; print(max(int(x) for x in sys.argv[1:]))' "$@"; }
ratio() { python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f"{a/b:.2f}" if b>0 else "inf")' "$1" "$2"; }
# spread NUM... -- DEN... -> "min-max" of the per-run ratios NUM[i]/DEN[i] (runs are interleaved)
spread() { python3 -c 'import sys
a=sys.argv[1:]; i=a.index("--"); n=[float(x) for x in a[:i]]; d=[float(x) for x in a[i+1:]]
r=[x/y for x,y in zip(n,d) if y>0]
print(f"{min(r):.2f}-{max(r):.2f}" if r else "-")' "$@"; }
mibs() { python3 -c 'import sys; print(f"{float(sys.argv[1])/float(sys.argv[2])/2**20:.0f}")' "$1" "$2"; }
bytes_of() { python3 -c 'import sys
s=sys.argv[1]
for k,v in (("GiB",1<<30),("MiB",1<<20),("KiB",1<<10)):
    if s.endswith(k): print(int(float(s[:-3])*v)); break
else: print(int(s))' "$1"; }
json() { python3 -c 'import json,sys; v=json.load(open(sys.argv[1]) if sys.argv[1]!="-" else sys.stdin)
for k in sys.argv[2:]: v=v[int(k)] if isinstance(v,list) else v[k]
print(v)' "$@"; }
mounted() { grep -q " $1 " /proc/self/mountinfo; }
post() { curl -sS --noproxy '*' -f -X POST --max-time 900 "$1"; }

RESULTS=()
MISSED=0
report() { # name value unit baseline-desc ratio target verdict
  RESULTS+=("$(printf '%-44s %12s %-6s %-50s %8s %-10s %s' "$@")")
  if [ "${7:-}" = MISS ]; then MISSED=$((MISSED + 1)); fi
}
check() { # ratio op target -> PASS/MISS
  if python3 -c 'import sys; r,op,t=float(sys.argv[1]),sys.argv[2],float(sys.argv[3]); sys.exit(0 if (r>=t if op==">=" else r<=t if op=="<=" else r<t) else 1)' "$1" "$2" "$3"; then
    echo PASS
  else
    echo MISS
  fi
}

# mount_ours MNT STORE ARGS... : ipfs-mount -f in the background, listening on a free loopback port; sets OUR_PID
mount_ours() {
  local mnt="$1" store="$2"; shift 2
  mkdir -p "$mnt" "$store"
  "$BIN" -f --store "$store" --listen /ip4/127.0.0.1/tcp/0 "$@" "$mnt" 2>>"$W/ipfs-mount.log" &
  OUR_PID=$!; PIDS+=("$OUR_PID"); MNTS+=("$mnt")
  for _ in $(seq 1 300); do mounted "$mnt" && [ -d "$mnt/ipfs" ] && return 0; kill -0 "$OUR_PID" 2>/dev/null || break; sleep 0.05; done
  echo "ipfs-mount did not mount $mnt; log:" >&2; tail -30 "$W/ipfs-mount.log" >&2; exit 1
}
umount_ours() {
  local mnt="$1"
  fusermount3 -u -z "$mnt" 2>/dev/null || true
  if kill -0 "$OUR_PID" 2>/dev/null; then kill "$OUR_PID" 2>/dev/null || true; fi
  for _ in $(seq 1 100); do kill -0 "$OUR_PID" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$OUR_PID" 2>/dev/null && kill -9 "$OUR_PID" 2>/dev/null
  wait "$OUR_PID" 2>/dev/null || true
}
hwm_mib() { awk '/VmHWM/ {print int($2/1024)}' "/proc/$1/status"; }
# our_maddr STORE : the running mount's /ip4/127.0.0.1/tcp/N/p2p/ID
our_maddr() {
  local a=""
  for _ in $(seq 1 100); do
    a="$("$BIN" id --store "$1" --json 2>/dev/null | python3 -c 'import json,sys
v=json.load(sys.stdin)
print(next((a for a in v.get("Addresses",[]) if a.startswith("/ip4/127.0.0.1/tcp/") and "/tcp/0/" not in a and "/p2p/" in a), ""))' 2>/dev/null || true)"
    [ -n "$a" ] && { echo "$a"; return 0; }
    sleep 0.1
  done
  echo "no listen address from '$BIN id --store $1 --json'" >&2; exit 1
}
seq_read() { # FILE -> seconds (exits with the daemon's log on a failed read)
  local t; t="$(now)"
  if ! dd if="$1" of=/dev/null bs=1M status=none; then
    echo "reading $1 failed; ipfs-mount log:" >&2; tail -40 "$W/ipfs-mount.log" >&2; exit 1
  fi
  elapsed "$t"
}
same_as_source() { # FILE (read again, untimed: the content must equal the source)
  cmp -s "$1" "$W/data.bin" || { echo "$1 differs from the source" >&2; tail -40 "$W/ipfs-mount.log" >&2; exit 1; }
}

N_KUBO=0
# kubo_up [--shard-threshold X]: a fresh Kubo; sets KUBO (dir), KUBO_MADDR, KUBO_CTL
kubo_up() {
  N_KUBO=$((N_KUBO + 1)); KUBO="$W/kubo-$N_KUBO"; KUBO_DIRS+=("$KUBO")
  "$PEERS/kubo-up.sh" "$KUBO" --swarm-port "$(free_port)" --ctl-port "$(free_port)" "$@" >/dev/null
  KUBO_MADDR="$(json "$KUBO/node.json" multiaddrs 0)"; KUBO_CTL="$(json "$KUBO/node.json" ctl_url)"
}
kubo_down() { "$PEERS/kubo-down.sh" "$1" >/dev/null 2>&1 || true; rm -rf "$1"; }
N_HELIA=0
# helia_up: a fresh Helia; sets HELIA (dir), HELIA_MADDR, HELIA_HTTP
helia_up() {
  N_HELIA=$((N_HELIA + 1)); HELIA="$W/helia-$N_HELIA"; HELIA_DIRS+=("$HELIA")
  "$PEERS/helia-up.sh" "$HELIA" --port "$(free_port)" --http-port "$(free_port)" >/dev/null
  HELIA_MADDR="$(json "$HELIA/node.json" multiaddrs 0)"; HELIA_HTTP="$(json "$HELIA/node.json" http_url)"
}
helia_down() { "$PEERS/helia-down.sh" "$1" >/dev/null 2>&1 || true; rm -rf "$1"; }

SIZE="$(bytes_of "$SIZE_H")"
python3 -c 'import os,sys; f=open(sys.argv[1],"wb"); n=int(sys.argv[2]); c=os.urandom(1<<20)
for i in range(0,n,1<<20): f.write((i.to_bytes(8,"little")+c[8:])[:min(1<<20,n-i)])' "$W/data.bin" "$SIZE"
HWMS=()

# ---------------------------------------------------------------------------------------------------------
if [[ "$SKIP" != *" 1 "* ]]; then
  echo "==> 1. cold read of $SIZE_H from Kubo: mount over bitswap vs Helia /fetch vs the mount's gateway path"
  kubo_up; SRC_KUBO="$KUBO"; SRC_MADDR="$KUBO_MADDR"; SRC_GW="$KUBO_CTL"
  CID="$(post "$SRC_GW/add?path=$W/data.bin" | json - Hash)"
  OURS=(); HEL=(); GWP=()
  for i in $(seq 1 "$RUNS"); do
    mount_ours "$W/m1" "$W/s1-$i" --no-gateway --peer "$SRC_MADDR"
    T="$(seq_read "$W/m1/ipfs/$CID")"; OURS+=("$T"); HWMS+=("$(hwm_mib "$OUR_PID")")
    same_as_source "$W/m1/ipfs/$CID"
    umount_ours "$W/m1"; rm -rf "$W/s1-$i"

    helia_up
    post "$HELIA_HTTP/connect?addr=$SRC_MADDR" >/dev/null
    t="$(now)"; post "$HELIA_HTTP/fetch?cid=$CID&timeout-ms=600000" >/dev/null; T="$(elapsed "$t")"; HEL+=("$T")
    helia_down "$HELIA"

    mount_ours "$W/m1" "$W/s1g-$i" --gateway "$SRC_GW" --dht off
    T="$(seq_read "$W/m1/ipfs/$CID")"; GWP+=("$T")
    same_as_source "$W/m1/ipfs/$CID"
    umount_ours "$W/m1"; rm -rf "$W/s1g-$i"
  done
  O="$(median "${OURS[@]}")"; H="$(median "${HEL[@]}")"; G="$(median "${GWP[@]}")"
  R="$(ratio "$H" "$O")"
  report "1a. cold read over bitswap from Kubo" "$(mibs "$SIZE" "$O")" "MiB/s" "Helia /fetch $(mibs "$SIZE" "$H") MiB/s; runs $(spread "${HEL[@]}" -- "${OURS[@]}")" "$R" ">= 1.5" "$(check "$R" ">=" 1.5)"
  R="$(ratio "$G" "$O")"
  report "1b. same, vs our gateway path" "$(mibs "$SIZE" "$O")" "MiB/s" "--gateway shim $(mibs "$SIZE" "$G") MiB/s; runs $(spread "${GWP[@]}" -- "${OURS[@]}")" "$R" ">= 0.8" "$(check "$R" ">=" 0.8)"
  kubo_down "$SRC_KUBO"
fi

# ---------------------------------------------------------------------------------------------------------
if [[ "$SKIP" != *" 2 "* ]]; then
  echo "==> 2. serving: Kubo downloads $SIZE_H from our mount vs from Helia"
  helia_up; SRV_HELIA="$HELIA"; SRV_HELIA_MADDR="$HELIA_MADDR"
  CID="$(post "$HELIA_HTTP/add?path=$W/data.bin&profile=unixfs-v1-2025" | json - Hash)"
  # The same DAG in our store: Helia's CAR, imported.
  curl -sS --noproxy '*' -f -o "$W/data.car" "$HELIA_HTTP/ipfs/$CID?format=car"
  S2="$W/s2"; mkdir -p "$S2"; "$BIN" import --store "$S2" "$W/data.car" >/dev/null; rm -f "$W/data.car"
  mount_ours "$W/m2" "$S2" --no-gateway --offline
  OUR_MADDR="$(our_maddr "$S2")"
  OURS=(); HEL=()
  for i in $(seq 1 "$RUNS"); do
    kubo_up
    post "$KUBO_CTL/connect?addr=$OUR_MADDR" >/dev/null
    t="$(now)"; post "$KUBO_CTL/download?cid=$CID&dest=$W/dl-ours" >/dev/null; T="$(elapsed "$t")"; OURS+=("$T")
    cmp -s "$W/dl-ours" "$W/data.bin" || { echo "Kubo's download from our mount differs from the source" >&2; exit 1; }
    rm -f "$W/dl-ours"; kubo_down "$KUBO"

    kubo_up
    post "$KUBO_CTL/connect?addr=$SRV_HELIA_MADDR" >/dev/null
    t="$(now)"; post "$KUBO_CTL/download?cid=$CID&dest=$W/dl-helia" >/dev/null; T="$(elapsed "$t")"; HEL+=("$T")
    cmp -s "$W/dl-helia" "$W/data.bin" || { echo "Kubo's download from Helia differs from the source" >&2; exit 1; }
    rm -f "$W/dl-helia"; kubo_down "$KUBO"
  done
  HWMS+=("$(hwm_mib "$OUR_PID")")
  umount_ours "$W/m2"
  O="$(median "${OURS[@]}")"; H="$(median "${HEL[@]}")"; R="$(ratio "$H" "$O")"
  report "2. Kubo downloads from our mount" "$(mibs "$SIZE" "$O")" "MiB/s" "from Helia $(mibs "$SIZE" "$H") MiB/s; runs $(spread "${HEL[@]}" -- "${OURS[@]}")" "$R" ">= 1.0" "$(check "$R" ">=" 1.0)"
  helia_down "$SRV_HELIA"
fi

if [ ${#HWMS[@]} -gt 0 ]; then
  M="$(maxof "${HWMS[@]}")"
  report "3. daemon peak RSS (VmHWM) in 1 and 2" "$M" "MiB" "(each: ${HWMS[*]})" "" "< 256 MiB" "$(check "$M" "<" 256)"
fi

echo
echo "ipfs-mount bitswap benchmarks ($(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ), $SIZE_H, median of $RUNS)"
printf '%-44s %12s %-6s %-50s %8s %-10s %s\n' "measure" "value" "unit" "baseline (same run)" "ratio" "target" ""
for r in "${RESULTS[@]}"; do echo "$r"; done
if [ "${BENCH_STRICT:-0}" = 1 ] && [ "$MISSED" -gt 0 ]; then exit 1; fi
