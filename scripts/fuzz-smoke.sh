#!/usr/bin/env bash
# Build and run every cargo-fuzz target of ./fuzz for a short time (default 15 s each).
# Usage: scripts/fuzz-smoke.sh [seconds-per-target] [target...]
# Targets: every [[bin]] of fuzz/Cargo.toml (`cargo fuzz list`), reader_walks included.
# Installs cargo-fuzz if missing. cargo-fuzz needs -Z flags: by default this uses the
# default (stable) toolchain with RUSTC_BOOTSTRAP=1; set FUZZ_TOOLCHAIN=nightly to use
# `cargo +nightly` instead. Honours CARGO_TARGET_DIR.
set -euo pipefail

SECS="${1:-15}"
shift || true
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

TOOLCHAIN=()
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
    TOOLCHAIN=("+${FUZZ_TOOLCHAIN}")
else
    export RUSTC_BOOTSTRAP=1
fi

if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    LIST="$(cargo "${TOOLCHAIN[@]}" fuzz list)" || { echo "fuzz-smoke: cargo fuzz list failed" >&2; exit 1; }
    mapfile -t TARGETS < <(printf '%s\n' "$LIST" | sed '/^$/d')
fi
# A smoke run that fuzzed nothing must not pass.
if [ "${#TARGETS[@]}" -eq 0 ]; then
    echo "fuzz-smoke: no fuzz target to run (fuzz/Cargo.toml lists none?)" >&2
    exit 1
fi

cargo "${TOOLCHAIN[@]}" fuzz build -O

# Seed the CAR and IPNS corpora from the conformance fixtures when they are around (the corpus
# directory is git-ignored). car_decode: the first input byte picks the chunk size;
# ipns_record: 0 = the record as it is, 1 = its bytes as the signed data.
FIXTURES="${FIXTURES:-${IPFS_MOUNT_SHARED:-$ROOT/../shared}/fixtures/gateway-conformance}"
if [ -d "$FIXTURES" ] && [ ! -d corpus/car_decode ]; then
    mkdir -p corpus/car_decode
    i=0
    while IFS= read -r -d '' f; do
        [ "$(stat -c %s "$f")" -le 65536 ] || continue
        { printf '\x07'; cat "$f"; } > "corpus/car_decode/seed-$i"
        i=$((i + 1))
    done < <(find "$FIXTURES" -name '*.car' -print0)
fi
if [ -d "$FIXTURES" ] && [ ! -d corpus/ipns_record ]; then
    mkdir -p corpus/ipns_record
    i=0
    while IFS= read -r -d '' f; do
        { printf '\x00'; cat "$f"; } > "corpus/ipns_record/seed-$i"
        { printf '\x01'; cat "$f"; } > "corpus/ipns_record/seed-data-$i"
        i=$((i + 1))
    done < <(find "$FIXTURES" -name '*.ipns-record' -print0)
fi
RAN=0
LOG="$(mktemp /tmp/fuzz-smoke.XXXXXX)"
trap 'rm -f "$LOG"' EXIT
for t in "${TARGETS[@]}"; do
    echo "fuzz-smoke: $t for ${SECS}s" >&2
    mkdir -p "corpus/$t"
    SEEDS=()
    [ -d "seeds/$t" ] && SEEDS=("seeds/$t")   # hand-made inputs (fuzz/seeds/), read only
    cargo "${TOOLCHAIN[@]}" fuzz run -O "$t" "corpus/$t" "${SEEDS[@]}" -- \
        -max_total_time="$SECS" -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        2>&1 | tee "$LOG" >&2
    # libFuzzer's final stats: a target that executed no input did not run.
    UNITS="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$LOG" | tail -n 1)"
    if [ -z "$UNITS" ] || [ "$UNITS" -eq 0 ]; then
        echo "fuzz-smoke: $t executed no input" >&2
        exit 1
    fi
    echo "fuzz-smoke: $t ran $UNITS inputs" >&2
    RAN=$((RAN + 1))
done
if [ "$RAN" -ne "${#TARGETS[@]}" ] || [ "$RAN" -eq 0 ]; then
    echo "fuzz-smoke: $RAN of ${#TARGETS[@]} targets ran" >&2
    exit 1
fi
echo "fuzz-smoke: all $RAN targets ran ${SECS}s without a crash" >&2
