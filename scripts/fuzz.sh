#!/usr/bin/env bash
# Long fuzzing runs: every cargo-fuzz target of ./fuzz (or the ones named) for MINUTES each, one
# after the other, going on past a target that crashes. Prints, per target, how long it ran, how
# many inputs it executed and whether it found anything (the reproducer is in
# fuzz/artifacts/<target>/); exits 1 if any target crashed or ran nothing.
# Usage: scripts/fuzz.sh MINUTES [target...]
# env: CARGO_TARGET_DIR; FUZZ_TOOLCHAIN=nightly to use `cargo +nightly` (default: the default
#      toolchain with RUSTC_BOOTSTRAP=1, as scripts/fuzz-smoke.sh); FIXTURES (the conformance
#      fixtures that seed the CAR and IPNS corpora; default $IPFS_MOUNT_SHARED or ../shared).
set -euo pipefail

MINUTES="${1:-}"
if ! [[ "$MINUTES" =~ ^[0-9]+$ ]] || [ "$MINUTES" -eq 0 ]; then
    echo "usage: scripts/fuzz.sh MINUTES [target...]" >&2
    exit 2
fi
shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"

command -v cargo >/dev/null || { echo "fuzz.sh: cargo not found" >&2; exit 1; }
cargo fuzz --version >/dev/null 2>&1 || { echo "fuzz.sh: cargo-fuzz missing (cargo install cargo-fuzz --locked)" >&2; exit 1; }
TOOLCHAIN=()
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
    TOOLCHAIN=("+${FUZZ_TOOLCHAIN}")
else
    export RUSTC_BOOTSTRAP=1
fi

if [ "$#" -gt 0 ]; then
    TARGETS=("$@")
else
    LIST="$(cargo "${TOOLCHAIN[@]}" fuzz list)" || { echo "fuzz.sh: cargo fuzz list failed" >&2; exit 1; }
    mapfile -t TARGETS < <(printf '%s\n' "$LIST" | sed '/^$/d')
fi
[ "${#TARGETS[@]}" -gt 0 ] || { echo "fuzz.sh: no fuzz target" >&2; exit 1; }

cargo "${TOOLCHAIN[@]}" fuzz build -O

# Seeds from the conformance fixtures, when they are around (corpus/ is git-ignored):
# CARs for car_decode (the first byte picks the chunk size), IPNS records for ipns_record
# (first byte 0: the record as it is; 1: the record's bytes as signed data).
FIXTURES="${FIXTURES:-${IPFS_MOUNT_SHARED:-$ROOT/../shared}/fixtures/gateway-conformance}"
if [ -d "$FIXTURES" ]; then
    if [ ! -d corpus/car_decode ]; then
        mkdir -p corpus/car_decode
        i=0
        while IFS= read -r -d '' f; do
            [ "$(stat -c %s "$f")" -le 65536 ] || continue
            { printf '\x07'; cat "$f"; } > "corpus/car_decode/seed-$i"
            i=$((i + 1))
        done < <(find "$FIXTURES" -name '*.car' -print0)
    fi
    if [ ! -d corpus/ipns_record ]; then
        mkdir -p corpus/ipns_record
        i=0
        while IFS= read -r -d '' f; do
            { printf '\x00'; cat "$f"; } > "corpus/ipns_record/seed-$i"
            { printf '\x01'; cat "$f"; } > "corpus/ipns_record/seed-data-$i"
            i=$((i + 1))
        done < <(find "$FIXTURES" -name '*.ipns-record' -print0)
    fi
fi

LOG="$(mktemp /tmp/fuzz.XXXXXX)"
trap 'rm -f "$LOG"' EXIT
SUMMARY=()
FAILED=0
for t in "${TARGETS[@]}"; do
    echo "fuzz.sh: $t for $MINUTES min" >&2
    mkdir -p "corpus/$t"
    start=$SECONDS
    rc=0
    SEEDS=()
    [ -d "seeds/$t" ] && SEEDS=("seeds/$t")   # hand-made inputs, read only
    cargo "${TOOLCHAIN[@]}" fuzz run -O "$t" "corpus/$t" "${SEEDS[@]}" -- \
        -max_total_time="$((MINUTES * 60))" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 2>&1 | tee "$LOG" >&2 || rc=$?
    took=$((SECONDS - start))
    units="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$LOG" | tail -n 1)"
    if [ "$rc" -ne 0 ]; then
        verdict="FOUND A CRASH (exit $rc; see fuzz/artifacts/$t/)"
        FAILED=$((FAILED + 1))
    elif [ -z "$units" ] || [ "$units" -eq 0 ]; then
        verdict="RAN NOTHING"
        FAILED=$((FAILED + 1))
    else
        verdict="no finding"
    fi
    SUMMARY+=("$(printf '%-22s %6ss %12s inputs  %s' "$t" "$took" "${units:-?}" "$verdict")")
done
echo
echo "fuzz.sh: $MINUTES min per target"
printf '%s\n' "${SUMMARY[@]}"
[ "$FAILED" -eq 0 ] || { echo "fuzz.sh: $FAILED of ${#TARGETS[@]} targets failed" >&2; exit 1; }
