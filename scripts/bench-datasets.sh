#!/usr/bin/env bash
# Speed of writable datasets (issue 8, "Speed"). Every figure is a ratio against a baseline
# measured in the same run (the machine is shared: absolute times are noise), reported as the
# median over BENCH_RUNS runs with the min-max spread of the per-run ratios.
#
#   1. N files of 1 KiB (random, one directory) copied into one dataset directory until the
#      commit is done, vs Kubo 0.22 `add -r` of the same tree              target <= 1.0
#      last tenth of the copy / first tenth                                  target <= 1.5
#      store bytes (du -sb STORE/blocks) / data bytes                        target <= 2.5
#      versions made by the copy; peak RSS (VmHWM) of the mount
#   2. one small file written into that N-entry directory: the commit's time minus the same
#      commit with nothing pending, sent to the mount's control socket (bench-commit-one.py;
#      no process start-up in it); the same with `ipfs-mount dataset commit` as context target < 10 ms
#   3. cp of a 1 GiB random file into a dataset, until close and until committed,
#      vs Kubo 0.22 add of the same file (time ratio Kubo/ours = speed ratio) target >= 1.0
#      context: cp to local disk, sha256sum; peak RSS of the mount
#   1 and 3 also give CPU seconds (mount + cp vs Kubo's process) as context, steadier than wall
#   time on a busy machine, and log the mount's CPU time by thread (bench-threads.py).
#   4. appending 1 MiB to that sealed file + commit vs the whole cp + commit target <= 0.05
#   5. DuckDB COPY ... TO parquet then a scan of it: dataset vs local disk    target <= 1.1
#   6. truncate -s 1T of a dataset file (local truncate as context)         target < 1 s
# Nothing is reported from a run whose command failed: every exit code is checked, the copied
# trees and files are read back from the store's blocks (each block hash-verified, with the
# independent decoder in ../shared/peers/lib/ipfsmini.py, see bench-verify.py) and compared with
# the source bytes; Kubo's results are read back from its blockstore the same way; the DuckDB
# scan result is checked against the known answer.
#
# The copy in 1 is `cp` run BATCHES times back to back with N/BATCHES file names each (same
# files, same order as `cp -r`; it lets the first and last tenth be timed).
#
# usage: scripts/bench-datasets.sh [quick]    (quick: 10,000 files, 256 MiB, 2M rows, 1 run)
# env: BIN (default: cargo build --release --bin ipfs-mount), BENCH_RUNS (5),
#      BENCH_DIR (work dir; its samples, log and sources are kept, stores and Kubo repos not),
#      BENCH_ONLY (e.g. "1 3": figure groups 1+2, 3+4, 5, 6), BENCH_FILES, BENCH_BIG_MIB,
#      BENCH_ROWS, IPFS_MOUNT_SHARED (../shared), PEERS_CACHE (/var/tmp/ipfs-mount-peers)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPTS="$ROOT/scripts"
SHARED="${IPFS_MOUNT_SHARED:-$(dirname "$ROOT")/shared}"
export IPFS_MOUNT_SHARED="$SHARED"
export PEERS_CACHE="${PEERS_CACHE:-/var/tmp/ipfs-mount-peers}"
for v in http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy IPFS_GATEWAY; do unset "$v"; done

MODE="${1:-full}"
if [ "$MODE" = quick ]; then
  FILES=10000; BIG_MIB=256; ROWS=2000000; RUNS=1; PAIRS=15; CLI_PAIRS=5
else
  FILES=100000; BIG_MIB=1024; ROWS=10000000; RUNS=5; PAIRS=21; CLI_PAIRS=7
fi
FILES="${BENCH_FILES:-$FILES}"; BIG_MIB="${BENCH_BIG_MIB:-$BIG_MIB}"; ROWS="${BENCH_ROWS:-$ROWS}"
RUNS="${BENCH_RUNS:-$RUNS}"; ONLY="${BENCH_ONLY:-1 3 5 6}"
BATCHES=10

if [ -z "${BIN:-}" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
  (cd "$ROOT" && cargo build --release --bin ipfs-mount >&2) || { echo "build failed" >&2; exit 1; }
  TARGET_DIR="$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  BIN="$TARGET_DIR/release/ipfs-mount"
fi
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }

W="${BENCH_DIR:-$(mktemp -d /var/tmp/ipfs-mount-bench-ds.XXXXXX)}"
mkdir -p "$W"; W="$(cd "$W" && pwd)"
MNT="$W/mnt"; STORE=""; KUBO=""; LOG="$W/ipfs-mount.log"
SAMPLES="$W/samples.tsv"; : > "$SAMPLES"
OUR_PID=""; KUBO_UP=""

cleanup() {
  set +e
  compgen -G "$W/store-*" > /dev/null && log "removing the stores and Kubo repos (many files: this takes a few minutes)"
  if grep -q " $MNT " /proc/self/mountinfo 2>/dev/null; then fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT"; fi
  if [ -n "$OUR_PID" ]; then
    for _ in $(seq 1 100); do kill -0 "$OUR_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$OUR_PID" 2>/dev/null && kill "$OUR_PID"
  fi
  [ -n "$KUBO_UP" ] && "$SHARED/peers/kubo-down.sh" "$KUBO" >/dev/null 2>&1
  if [ -n "${BENCH_DIR:-}" ]; then rm -rf "$W"/store-* "$W"/kubo-* "$W/ipfs-mount"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A private copy: a rebuild of the target dir during the run must not mix two binaries.
BIN_SRC="$BIN"; BIN_DATE="$(date -u -r "$BIN" +%Y-%m-%dT%H:%MZ)"
cp "$BIN" "$W/ipfs-mount" && BIN="$W/ipfs-mount" || { echo "cannot copy $BIN" >&2; exit 1; }

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
us() { local t="$EPOCHREALTIME"; echo "${t/./}"; }          # microseconds, no fork for the clock
secs() { python3 -c 'import sys; print(f"{int(sys.argv[1])/1e6:.6f}")' "$1"; }

# Samples of the current group are kept in PEND and written to $SAMPLES only once the group's
# checks have passed; a failure drops them and records why.
RUN=0; PEND=()
put() { PEND+=("$RUN	$1	$2"); }
keep() { local l; for l in "${PEND[@]}"; do echo "$l" >> "$SAMPLES"; done; PEND=(); }
drop() { note_fail "$@"; PEND=(); }
note_fail() { log "FAILED (run $RUN): $*"; echo "$RUN	FAIL	$*" >> "$SAMPLES"; }

free_ports() { python3 -c 'import socket
ss=[socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1",0))
print(" ".join(str(s.getsockname()[1]) for s in ss))'; }

# A fresh store (and Kubo repo) for every group of every run. The many-file ones are deleted only
# at the end: this ext4 (no journal) skips inodes freed in the last minutes when it allocates new
# ones, so deleting 100,000 files right before a contender creates 100,000 slows that contender.
mount_ours() {
  STORE="$W/store-$1-r$RUN"
  fusermount3 -u "$MNT" 2>/dev/null; rm -rf "$STORE"; mkdir -p "$MNT"
  local p; read -r p _ _ < <(free_ports)
  echo "---- mount (run $RUN, $1)" >> "$LOG"
  "$BIN" -f -v --store "$STORE" --offline --listen "/ip4/127.0.0.1/tcp/$p" "$MNT" 2>>"$LOG" &
  OUR_PID=$!
  for _ in $(seq 1 400); do
    if grep -q " $MNT " /proc/self/mountinfo && [ -d "$MNT/datasets" ]; then return 0; fi
    kill -0 "$OUR_PID" 2>/dev/null || break
    sleep 0.05
  done
  log "mount failed"; tail -5 "$LOG" >&2; return 1
}
umount_ours() {  # 0 if the daemon unmounted and exited by itself
  local rc=0
  fusermount3 -u "$MNT" || { log "fusermount3 -u failed; lazy unmount"; fusermount3 -u -z "$MNT"; rc=1; }
  for _ in $(seq 1 1200); do kill -0 "$OUR_PID" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$OUR_PID" 2>/dev/null; then log "daemon $OUR_PID still running 60 s after unmount: killing it"; kill "$OUR_PID"; rc=1; fi
  wait "$OUR_PID" || rc=1
  OUR_PID=""
  return $rc
}
# CPU seconds: of a process (utime+stime, in clock ticks) and of this shell's waited-for children.
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f\n", ($14+$15)/hz}' "/proc/$1/stat"; }
kids_cpu() {  # sets KIDS (no subshell: `times` must run in this shell)
  times > "$W/.times"; KIDS="$(tail -1 "$W/.times" | awk '{ t=0; for (i=1;i<=2;i++) { split($i,a,/[ms]/); t+=a[1]*60+a[2] } printf "%.3f\n", t }')"
}
fsub() { python3 -c 'import sys; print(f"{float(sys.argv[1])-float(sys.argv[2])+float(sys.argv[3])-float(sys.argv[4]):.3f}")' "$@"; }
peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$OUR_PID/status"; }
cid_of() { getfattr --only-values -n user.ipfs.cid "$1" 2>/dev/null; }
versions() { "$BIN" dataset log "$1" --store "$STORE" --json | grep -c '"version"'; }
head_root() { "$BIN" dataset log "$1" --store "$STORE" --json | head -1 | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["root"])'; }
block_count() { find "$STORE/blocks" -type f -name '*.data' | wc -l; }

kubo_up() {
  KUBO="$W/kubo-$1-r$RUN"
  rm -rf "$KUBO"; local a b; read -r a b _ < <(free_ports)
  "$SHARED/peers/kubo-up.sh" "$KUBO" --swarm-port "$a" --ctl-port "$b" >/dev/null 2>"$W/kubo-up.err" || { cat "$W/kubo-up.err" >&2; return 1; }
  KUBO_UP=1
  CTL="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ctl_url"])' "$KUBO/node.json")"
}
kubo_down() { "$SHARED/peers/kubo-down.sh" "$KUBO" >/dev/null 2>&1; KUBO_UP=""; }
# kubo_add PATH -> sets KHASH and KT (seconds); nonzero on failure
kubo_add() {
  local t0 t1 out c0 kpid
  kpid="$(cat "$KUBO/kubo.pid")"; c0="$(proc_cpu "$kpid")"
  t0=$(us); out="$(curl -sS --noproxy '*' -f -X POST "$CTL/add?path=$1")" || return 1; t1=$(us)
  KCPU="$(python3 -c "print(f'{$(proc_cpu "$kpid")-$c0:.3f}')")"
  KHASH="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["Hash"])' "$out")" || return 1
  [ -n "$KHASH" ] || return 1
  KT="$(secs $((t1 - t0)))"
}

# ---------------------------------------------------------------------------------------------
log "work dir $W; binary $BIN; mode $MODE: $FILES files, $BIG_MIB MiB, $ROWS rows, $RUNS runs; load: $(cut -d' ' -f1-3 /proc/loadavg)"
has() { case " $ONLY " in *" $1 "*) return 0;; esac; return 1; }

if has 1; then
  log "writing $FILES random 1 KiB files"
  python3 - "$W/src" "$FILES" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2]); os.makedirs(d, exist_ok=True)
w = len(str(n - 1))
with open(os.path.join(os.path.dirname(d), "src.list"), "w") as lst:
    for i in range(n):
        name = f"f{i:0{w}d}"
        with open(os.path.join(d, name), "wb") as f:
            f.write(os.urandom(1024))
        lst.write(name + "\n")
EOF
  mapfile -t NAMES < "$W/src.list"
  DATA_BYTES=$((FILES * 1024))
  BATCH=$((FILES / BATCHES))
  find "$W/src" -type f -exec cat {} + > /dev/null   # page cache warm for both contenders
fi
if has 3; then
  log "writing a $BIG_MIB MiB random file"
  head -c "$((BIG_MIB << 20))" /dev/urandom > "$W/big.bin"
  head -c 1048576 /dev/urandom > "$W/app.bin"
  BIG_SHA="$(sha256sum "$W/big.bin" | cut -d' ' -f1)"
fi

fig12_ours() {
  mount_ours fig1 || { drop "fig1: mount"; return; }
  mkdir "$MNT/datasets/d" || { drop "fig1: mkdir"; umount_ours; return; }
  local v0; v0="$(versions d)"
  local t0 tb0 tb1 b start root t_end t_c0 dc0 kc0
  dc0="$(proc_cpu "$OUR_PID")"; kids_cpu; kc0="$KIDS"
  python3 "$SCRIPTS/bench-threads.py" snap "$OUR_PID" "$W/.threads"
  t0=$(us)
  for ((b = 0; b < BATCHES; b++)); do
    start=$((b * BATCH))
    tb0=$(us)
    (cd "$W/src" && cp -t "$MNT/datasets/d/" -- "${NAMES[@]:start:BATCH}") || { drop "fig1: cp batch $((b + 1)) exited $?"; umount_ours; return; }
    tb1=$(us)
    put "batch_$((b + 1))" "$(secs $((tb1 - tb0)))"
  done
  t_c0=$(us)
  root="$(cid_of "$MNT/datasets/d")" || root=""
  t_end=$(us)
  [ -n "$root" ] || { drop "fig1: getfattr user.ipfs.cid failed"; umount_ours; return; }
  put cp_total "$(secs $((t_end - t0)))"
  kids_cpu; put cpu_tree "$(fsub "$(proc_cpu "$OUR_PID")" "$dc0" "$KIDS" "$kc0")"
  log "fig1 mount CPU by thread: $(python3 "$SCRIPTS/bench-threads.py" diff "$OUR_PID" "$W/.threads")"
  put cp_commit_wait "$(secs $((t_end - t_c0)))"
  put rss1_mib "$(( $(peak_rss_kib) / 1024 ))"
  local v1; v1="$(versions d)"
  put versions $((v1 - v0))
  [ "$(head_root d)" = "$root" ] || { drop "fig1: head of dataset log is not the root getfattr returned"; umount_ours; return; }
  put store_ratio "$(python3 -c "print($(du -sb "$STORE/blocks" | cut -f1)/$DATA_BYTES)")"
  put store_files_ratio "$(python3 -c "print($(find "$STORE/blocks" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')/$DATA_BYTES)")"
  put store_alloc_ratio "$(python3 -c "print($(du -sB1 "$STORE/blocks" | cut -f1)/$DATA_BYTES)")"
  put index_ratio "$(python3 -c "print($(cat "$STORE"/index.sqlite* | wc -c)/$DATA_BYTES)")"
  put store_blocks "$(block_count)"

  # 2. one small file into the N-entry directory (pairs: idle commit, write + commit)
  local f2 a b c d e f
  if f2="$(python3 "$SCRIPTS/bench-commit-one.py" "$BIN" "$STORE" "$MNT/datasets/d" d "$PAIRS" "$CLI_PAIRS")"; then
    read -r a b c d e f <<< "$f2"
    put commit_one_ms "$a"; put commit_idle_ms "$b"; put write_one_ms "$c"; put commit_one_cli_ms "$d"; put commit_idle_cli_ms "$e"
    put write_commit_ms "$f"
  else
    note_fail "fig2: $f2"   # figure 1's samples stay (they are checked below)
  fi
  umount_ours || { drop "fig1: unmount"; return; }
  local v
  v="$(python3 "$SCRIPTS/bench-verify.py" tree "$STORE" "$root" "$W/src")" || { drop "fig1: verify: $v"; return; }
  log "fig1 ours: $v"
  keep
}

fig1_kubo() {
  kubo_up fig1 || { drop "kubo up"; return; }
  kubo_add "$W/src" || { drop "kubo add -r failed"; kubo_down; return; }
  put kubo_tree "$KT"; put kubo_cpu_tree "$KCPU"
  put kubo_store_ratio "$(python3 -c "print($(du -sb "$KUBO/repo/blocks" | cut -f1)/$DATA_BYTES)")"
  kubo_down
  local v
  v="$(python3 "$SCRIPTS/bench-verify.py" tree "$KUBO/repo" "$KHASH" "$W/src")" || { drop "kubo tree verify: $v"; return; }
  log "fig1 kubo: $KHASH $v"
  keep
}

fig34_ours() {
  local t0 t1 t2 t3 t4 root root2 b0 b1
  t0=$(us); local s; s="$(sha256sum "$W/big.bin" | cut -d' ' -f1)"; t1=$(us)
  [ "$s" = "$BIG_SHA" ] || { drop "sha256sum"; return; }
  put sha_big "$(secs $((t1 - t0)))"
  rm -f "$W/local.bin"
  t0=$(us); cp "$W/big.bin" "$W/local.bin" || { drop "local cp"; return; }; t1=$(us)
  rm -f "$W/local.bin"
  put localcp_big "$(secs $((t1 - t0)))"

  mount_ours fig3 || { drop "fig3: mount"; return; }
  mkdir "$MNT/datasets/b" || { drop "fig3: mkdir"; umount_ours; return; }
  local dc0 kc0; dc0="$(proc_cpu "$OUR_PID")"; kids_cpu; kc0="$KIDS"
  python3 "$SCRIPTS/bench-threads.py" snap "$OUR_PID" "$W/.threads"
  t0=$(us); cp "$W/big.bin" "$MNT/datasets/b/big.bin" || { drop "fig3: cp exited $?"; umount_ours; return; }; t1=$(us)
  root="$(cid_of "$MNT/datasets/b")" || root=""; t2=$(us)
  [ -n "$root" ] || { drop "fig3: getfattr failed"; umount_ours; return; }
  put cp_big_close "$(secs $((t1 - t0)))"
  put cp_big_commit "$(secs $((t2 - t0)))"
  kids_cpu; put cpu_big "$(fsub "$(proc_cpu "$OUR_PID")" "$dc0" "$KIDS" "$kc0")"
  log "fig3 mount CPU by thread: $(python3 "$SCRIPTS/bench-threads.py" diff "$OUR_PID" "$W/.threads")"
  put rss3_mib "$(( $(peak_rss_kib) / 1024 ))"
  b0="$(block_count)"
  t3=$(us); head -c 1M "$W/app.bin" >> "$MNT/datasets/b/big.bin" || { drop "fig4: append exited $?"; umount_ours; return; }
  root2="$(cid_of "$MNT/datasets/b")" || root2=""; t4=$(us)
  [ -n "$root2" ] && [ "$root2" != "$root" ] || { drop "fig4: no new root after the append"; umount_ours; return; }
  b1="$(block_count)"
  put append_commit "$(secs $((t4 - t3)))"
  put append_blocks $((b1 - b0))
  umount_ours || { drop "fig3: unmount"; return; }
  local v
  v="$(python3 "$SCRIPTS/bench-verify.py" file "$STORE" "$root" big.bin "$W/big.bin")" || { drop "fig3: verify: $v"; return; }
  log "fig3 ours: $v"
  v="$(python3 "$SCRIPTS/bench-verify.py" file "$STORE" "$root2" big.bin "$W/big.bin" "$W/app.bin")" || { drop "fig4: verify: $v"; return; }
  log "fig4 ours: $v"
  keep
  rm -rf "$STORE"
}

fig3_kubo() {
  kubo_up fig3 || { drop "kubo up"; return; }
  kubo_add "$W/big.bin" || { drop "kubo add failed"; kubo_down; return; }
  put kubo_big "$KT"; put kubo_cpu_big "$KCPU"
  kubo_down
  local v
  v="$(python3 - "$SCRIPTS" "$KUBO/repo" "$KHASH" "$W/big.bin" <<'EOF'
import sys, importlib.util
spec = importlib.util.spec_from_file_location("bv", sys.argv[1] + "/bench-verify.py"); bv = importlib.util.module_from_spec(spec); spec.loader.exec_module(bv)
st = bv.Store(sys.argv[2]); got = bv.sha_of_cid(st, bv.m.CID.parse(sys.argv[3])); want = bv.sha_of_files(sys.argv[4])
print(("OK %d bytes, %d blocks hash-verified" % (got[1], st.reads)) if got == want else "FAIL %s != %s" % (got, want)); sys.exit(got != want)
EOF
)" || { drop "kubo file verify: $v"; return; }
  log "fig3 kubo: $KHASH $v"
  keep
  rm -rf "$KUBO"
}

DQ='import duckdb, sys, time
d, rows = sys.argv[1], int(sys.argv[2])
c = duckdb.connect(); c.execute("PRAGMA disable_progress_bar")
t = time.time()
c.execute(f"COPY (select i, i*3 as j, md5(i::varchar) as s from range({rows}) t(i)) TO \x27{d}/t.parquet\x27 (FORMAT parquet)")
w = time.time() - t; t = time.time()
r = c.execute(f"select sum(j), count(*), count(distinct s) from read_parquet(\x27{d}/t.parquet\x27)").fetchone()
s = time.time() - t
ok = r == (3 * rows * (rows - 1) // 2, rows, rows)
print(f"{w:.6f} {s:.6f} {int(ok)}")'

fig5() {
  mount_ours fig5 || { drop "fig5: mount"; return; }
  mkdir "$MNT/datasets/duck" || { drop "fig5: mkdir"; umount_ours; return; }
  rm -rf "$W/local"; mkdir -p "$W/local"
  local order=(ds local) side dir w s ok t0 t1 root
  [ $((RUN % 2)) = 0 ] && order=(local ds)
  for side in "${order[@]}"; do
    dir="$MNT/datasets/duck"; [ "$side" = local ] && dir="$W/local"
    read -r w s ok < <(python3 -c "$DQ" "$dir" "$ROWS") || true
    [ "${ok:-0}" = 1 ] || { drop "fig5 ($side): duckdb failed or gave a wrong answer"; umount_ours; return; }
    put "duck_${side}_write" "$w"; put "duck_${side}_scan" "$s"
  done
  t0=$(us); root="$(cid_of "$MNT/datasets/duck")" || root=""; t1=$(us)
  [ -n "$root" ] || { drop "fig5: getfattr failed"; umount_ours; return; }
  put duck_commit "$(secs $((t1 - t0)))"
  put duck_mib "$(( $(stat -c %s "$W/local/t.parquet") >> 20 ))"
  umount_ours || { drop "fig5: unmount"; return; }
  keep
  rm -rf "$STORE" "$W/local"
}

fig6() {
  mount_ours fig6 || { drop "fig6: mount"; return; }
  mkdir "$MNT/datasets/sparse" && echo hello > "$MNT/datasets/sparse/f" && echo hello > "$W/sparse.local" || { drop "fig6: setup"; umount_ours; return; }
  local t0 t1 t2 root
  t0=$(us); truncate -s 1T "$MNT/datasets/sparse/f" || { drop "fig6: truncate exited $?"; umount_ours; return; }; t1=$(us)
  [ "$(stat -c %s "$MNT/datasets/sparse/f")" = 1099511627776 ] || { drop "fig6: size after truncate"; umount_ours; return; }
  put trunc_ds "$(secs $((t1 - t0)))"
  t0=$(us); truncate -s 1T "$W/sparse.local" || { drop "fig6: local truncate"; umount_ours; return; }; t1=$(us)
  put trunc_local "$(secs $((t1 - t0)))"
  rm -f "$W/sparse.local"
  t0=$(us); root="$(timeout 120 getfattr --only-values -n user.ipfs.cid "$MNT/datasets/sparse" 2>/dev/null)" || root=""; t2=$(us)
  [ -n "$root" ] || { drop "fig6: commit of the 1 TiB file did not finish in 120 s"; umount_ours; return; }
  put trunc_commit "$(secs $((t2 - t0)))"
  # the tail of the committed file reads back as zeros
  local tail; tail="$(dd if="$MNT/datasets/sparse/f" bs=1 skip=$((1099511627776 - 4)) count=4 status=none | od -An -tx1 | tr -d ' \n')"
  [ "$tail" = 00000000 ] || { drop "fig6: tail of the file is not zeros ($tail)"; umount_ours; return; }
  umount_ours || { drop "fig6: unmount"; return; }
  keep
  rm -rf "$STORE"
}

for ((RUN = 1; RUN <= RUNS; RUN++)); do
  log "run $RUN/$RUNS (load $(cut -d' ' -f1-3 /proc/loadavg))"
  if has 1; then
    if [ $((RUN % 2)) = 1 ]; then fig12_ours; fig1_kubo; else fig1_kubo; fig12_ours; fi
  fi
  if has 3; then
    if [ $((RUN % 2)) = 1 ]; then fig34_ours; fig3_kubo; else fig3_kubo; fig34_ours; fi
  fi
  has 5 && fig5
  has 6 && fig6
done

echo
echo "ipfs-mount dataset benchmarks, $MODE: $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg), runs: $RUNS"
echo "binary $BIN_SRC (built $BIN_DATE; sha256 $(sha256sum "$BIN" | cut -c1-12)); $FILES files x 1 KiB; $BIG_MIB MiB file; $ROWS rows; samples in $SAMPLES"
python3 "$SCRIPTS/bench-table.py" "$SAMPLES" "$RUNS" "$FILES" "$BIG_MIB" "$ROWS"
