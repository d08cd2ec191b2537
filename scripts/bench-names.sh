#!/usr/bin/env bash
# Names (issue 5), each figure against a baseline measured in the same run:
#   7a. commit -> new IPNS record served by --serve                               target < 50 ms
#   7b. cold /ipns/<name> lookup through a second mount vs curl of the record     target <= 1.1x
#   7c. cached /ipns/<name>/file lookups through the mount                         target < 1 ms
# Usage: scripts/bench-names.sh [quick]; env: CARGO_TARGET_DIR, BENCH_RUNS.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
for v in http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy IPFS_GATEWAY; do unset "$v"; done
cargo build --release --bin ipfs-mount >&2
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
BIN="$TARGET_DIR/release/ipfs-mount"
W="$(mktemp -d /tmp/ipfs-mount-bench-names.XXXXXX)"
mkdir -p "$W/a" "$W/b"
cleanup() {
  "$BIN" unmount "$W/a" >/dev/null 2>&1 || true
  "$BIN" unmount "$W/b" >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(port)
"$BIN" "$W/a" --store "$W/sa" --no-gateway --listen /ip4/127.0.0.1/tcp/0 --dht off --serve "127.0.0.1:$P" >/dev/null
mkdir "$W/a/datasets/bench"
echo first > "$W/a/datasets/bench/f.txt"
NAME=$(getfattr --only-values -n user.ipfs.name "$W/a/datasets/bench" 2>/dev/null)
sleep 1.5
"$BIN" "$W/b" --store "$W/sb" --gateway "http://127.0.0.1:$P" --listen /ip4/127.0.0.1/tcp/0 --dht off >/dev/null

python3 - "$W" "$NAME" "$P" "${BENCH_RUNS:-5}" <<'PY'
import os, sys, time, urllib.request, statistics
w, name, port, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
url = f"http://127.0.0.1:{port}/ipns/{name}?format=ipns-record"
def record():
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()
# 7a: append (close = commit), then poll the gateway until the record changes.
lat = []
for i in range(runs):
    before = record()
    t0 = time.perf_counter()
    with open(f"{w}/a/datasets/bench/f.txt", "a") as f:
        f.write(f"line {i}\n")
    while record() == before:
        if time.perf_counter() - t0 > 5: break
        time.sleep(0.002)
    lat.append((time.perf_counter() - t0) * 1000)
commit_ms = statistics.median(lat)
# 7b: cold lookup through mount B (first stat of the name) vs one curl-like fetch of the record.
t0 = time.perf_counter(); os.stat(f"{w}/b/ipns/{name}"); cold_ms = (time.perf_counter() - t0) * 1000
gw = []
for _ in range(runs):
    t0 = time.perf_counter(); record(); gw.append((time.perf_counter() - t0) * 1000)
gw_ms = statistics.median(gw)
# 7c: cached lookups of a file under the name (path walk through the mount).
n = 2000
t0 = time.perf_counter()
for _ in range(n):
    os.stat(f"{w}/b/ipns/{name}/f.txt")
cached_us = (time.perf_counter() - t0) / n * 1e6
def row(m, v, u, base, ratio, target, ok):
    print(f"{m:<48} {v:>10} {u:<5} {base:<30} {ratio:>7} {target:<10} {'PASS' if ok else 'MISS'}")
print("\n==> names (issue 5)")
row("7a. commit -> new record served (median)", f"{commit_ms:.1f}", "ms", "", "", "< 50 ms", commit_ms < 50)
row("7b. cold /ipns lookup through the mount", f"{cold_ms:.1f}", "ms", f"record GET {gw_ms:.1f} ms", f"{cold_ms/gw_ms:.2f}", "<= 1.1x", cold_ms <= 1.1 * gw_ms)
row("7c. cached lookup of /ipns/<name>/file", f"{cached_us:.0f}", "us", "", "", "< 1 ms", cached_us < 1000)
PY
