#!/usr/bin/env bash
# Speed of writable datasets (issue 3, "Speed") as ratios against baselines measured in the same run:
#   6. cp of a 1 GiB file into a dataset vs sha256sum of the same file        target >= 0.4
#      and vs Kubo 0.22 adding the same file (../shared/peers)                target >= 2
#   7. appending 1 MiB to that sealed 1 GiB file vs importing the whole file  target <= 0.05; new blocks counted
#   8. DuckDB writing then scanning a Parquet dataset: dataset vs local disk   target <= 1.3
# Each figure is the median of BENCH_RUNS runs. Only the ratios mean anything on these machines.
#
# usage: scripts/bench-datasets.sh [quick]     (quick: 256 MiB and a smaller table, one run)
# env: CARGO_TARGET_DIR, PEERS_CACHE (default /var/tmp/ipfs-mount-peers), IPFS_MOUNT_SHARED, BENCH_DIR, BENCH_RUNS (3)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
SHARED="${IPFS_MOUNT_SHARED:-$(dirname "$ROOT")/shared}"
export PEERS_CACHE="${PEERS_CACHE:-/var/tmp/ipfs-mount-peers}"
RUNS="${BENCH_RUNS:-3}"
SIZE_MIB=1024; ROWS=27000000
if [ "${1:-}" = quick ]; then SIZE_MIB=256; ROWS=15000000; RUNS=1; fi
for v in http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy IPFS_GATEWAY; do unset "$v"; done

cargo build --release --bin ipfs-mount >&2
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/release/ipfs-mount"
W="${BENCH_DIR:-$(mktemp -d /var/tmp/ipfs-mount-bench-ds.XXXXXX)}"
mkdir -p "$W"
MNT="$W/mnt"; STORE="$W/store"; KUBO="$W/kubo"; OUR_PID=""
cleanup() {
  set +e
  grep -q " $MNT " /proc/self/mountinfo && fusermount3 -u -z "$MNT"
  [ -n "$OUR_PID" ] && kill "$OUR_PID" 2>/dev/null
  [ -d "$KUBO" ] && "$SHARED/peers/kubo-down.sh" "$KUBO" >/dev/null 2>&1
  [ -n "${BENCH_DIR:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.4f}')" "$1" "$(now)"; }
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.4f}")' "$@"; }
ratio() { python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f"{a/b:.3f}" if b>0 else "inf")' "$1" "$2"; }
check() { python3 -c 'import sys; r,op,t=float(sys.argv[1]),sys.argv[2],float(sys.argv[3]); print("PASS" if (r>=t if op==">=" else r<=t) else "MISS")' "$1" "$2" "$3"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RESULTS=()
report() { RESULTS+=("$(printf '%-46s %10s %-6s %-36s %8s %-8s %s' "$@")"); }

mount_ours() {
  mkdir -p "$MNT"
  "$BIN" -f --store "$STORE" --offline "$MNT" 2>>"$W/ipfs-mount.log" &
  OUR_PID=$!
  for _ in $(seq 1 200); do grep -q " $MNT " /proc/self/mountinfo && [ -d "$MNT/datasets" ] && return 0; sleep 0.05; done
  echo "mount failed" >&2; tail "$W/ipfs-mount.log" >&2; exit 1
}
umount_ours() {
  fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT"
  for _ in $(seq 1 100); do kill -0 "$OUR_PID" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$OUR_PID" 2>/dev/null && kill "$OUR_PID"; wait "$OUR_PID" 2>/dev/null || true; OUR_PID=""
}
blocks_in_store() { find "$STORE/blocks" -name '*.data' | wc -l; }

echo "==> writing a ${SIZE_MIB} MiB test file" >&2
python3 -c 'import os,sys; f=open(sys.argv[1],"wb"); c=os.urandom(1<<20)
for i in range(int(sys.argv[2])): f.write(i.to_bytes(8,"little")+c[8:])' "$W/big.bin" "$SIZE_MIB"
cat "$W/big.bin" > /dev/null   # page cache warm for every contender alike

mount_ours
CP=(); SHA=(); APP=()
for i in $(seq 1 "$RUNS"); do
  t="$(now)"; sha256sum "$W/big.bin" >/dev/null; SHA+=("$(elapsed "$t")")
  mkdir "$MNT/datasets/b$i"
  t="$(now)"; cp "$W/big.bin" "$MNT/datasets/b$i/big.bin"; CP+=("$(elapsed "$t")")
  before="$(blocks_in_store)"
  t="$(now)"; head -c 1048576 /dev/urandom >> "$MNT/datasets/b$i/big.bin"; APP+=("$(elapsed "$t")")
  NEW_BLOCKS=$(( $(blocks_in_store) - before ))
done
umount_ours
C="$(median "${CP[@]}")"; S="$(median "${SHA[@]}")"; A="$(median "${APP[@]}")"
MIBS="$(python3 -c "print(f'{$SIZE_MIB/$C:.0f}')")"
R="$(ratio "$S" "$C")"
report "6. cp ${SIZE_MIB} MiB into a dataset" "$MIBS" "MiB/s" "sha256sum $(python3 -c "print(f'{$SIZE_MIB/$S:.0f}')") MiB/s" "$R" ">= 0.4" "$(check "$R" ">=" 0.4)"

if [ -x "$SHARED/peers/kubo-up.sh" ]; then
  KT=()
  for i in $(seq 1 "$RUNS"); do
    rm -rf "$KUBO"
    "$SHARED/peers/kubo-up.sh" "$KUBO" --swarm-port "$(free_port)" --ctl-port "$(free_port)" >/dev/null
    CTL="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ctl_url"])' "$KUBO/node.json")"
    t="$(now)"; curl -sS --noproxy '*' -f -X POST "$CTL/add?path=$W/big.bin" >/dev/null; KT+=("$(elapsed "$t")")
    "$SHARED/peers/kubo-down.sh" "$KUBO" >/dev/null
  done
  K="$(median "${KT[@]}")"; R="$(ratio "$K" "$C")"
  report "   same, vs Kubo 0.22 add" "$MIBS" "MiB/s" "kubo add $(python3 -c "print(f'{$SIZE_MIB/$K:.0f}')") MiB/s" "$R" ">= 2" "$(check "$R" ">=" 2)"
fi
R="$(ratio "$A" "$C")"
report "7. append 1 MiB to the sealed file" "$A" "s" "whole import $C s; $NEW_BLOCKS new blocks" "$R" "<= 0.05" "$(check "$R" "<=" 0.05)"

if python3 -c 'import duckdb' 2>/dev/null; then
  DQ='import duckdb,sys,time
d=sys.argv[1]; rows=int(sys.argv[2]); c=duckdb.connect(); c.execute("PRAGMA disable_progress_bar")
t=time.time()
c.execute(f"COPY (select i, i*3 as j, md5(i::varchar) as s from range({rows}) t(i)) TO \x27{d}/t.parquet\x27 (FORMAT parquet)")
w=time.time()-t; t=time.time()
c.execute(f"select sum(j), count(distinct s) from read_parquet(\x27{d}/*.parquet\x27)").fetchall()
print(f"{w:.4f} {time.time()-t:.4f}")'
  mkdir -p "$W/local"
  mount_ours
  DSW=(); LCW=()
  for i in $(seq 1 "$RUNS"); do
    mkdir "$MNT/datasets/duck$i"; rm -rf "$W/local/$i"; mkdir -p "$W/local/$i"
    read -r w r < <(python3 -c "$DQ" "$MNT/datasets/duck$i" "$ROWS"); DSW+=("$(python3 -c "print($w+$r)")")
    read -r w r < <(python3 -c "$DQ" "$W/local/$i" "$ROWS"); LCW+=("$(python3 -c "print($w+$r)")")
  done
  umount_ours
  D="$(median "${DSW[@]}")"; L="$(median "${LCW[@]}")"; R="$(ratio "$D" "$L")"
  SZ="$(du -m "$W/local/1/t.parquet" | cut -f1)"
  report "8. DuckDB write+scan ${SZ} MiB Parquet" "$D" "s" "local disk $L s" "$R" "<= 1.3" "$(check "$R" "<=" 1.3)"
fi

echo
echo "ipfs-mount dataset benchmarks ($(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ), median of $RUNS)"
printf '%-46s %10s %-6s %-36s %8s %-8s %s\n' measure value unit "baseline (same run)" ratio target ""
for r in "${RESULTS[@]}"; do echo "$r"; done
