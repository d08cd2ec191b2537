#!/usr/bin/env bash
# The project's test command (see README): build everything in release mode, run every
# test of the workspace against the release binary, then a short fuzz smoke run.
#
# env: CARGO_TARGET_DIR            where to build (default: cargo's, i.e. ./target)
#      IPFS_MOUNT_SHARED           ../shared (reference peers and fixtures); tests look there by default
#      IPFS_MOUNT_REQUIRE_PEERS=1  fail (not skip) the interop tests when the peers are missing
#      IPFS_MOUNT_TEST_NETNS=1     as root: run `cargo test` in a new network namespace with only
#                                  loopback (FUSE still works: the mount namespace is shared)
#      TEST_TIMEOUT                upper bound for the `cargo test` step (default 40m)
#      extra args are passed to `cargo test` (e.g. `scripts/test.sh --test interop -- kubo`)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

echo "==> cargo build --release --workspace"
cargo build --release --workspace

TEST=(cargo test --release --workspace --no-fail-fast)
RC=0
# Everything cargo test prints is also kept, so that the failures can be repeated at the very
# end (CI shows only the tail of the output).
TEST_LOG="$(mktemp /tmp/ipfs-mount-test-log.XXXXXX)"
trap 'rm -f "$TEST_LOG"' EXIT
logged() { "$@" 2>&1 | tee -a "$TEST_LOG"; return "${PIPESTATUS[0]}"; }
if [ "${IPFS_MOUNT_TEST_NETNS:-0}" = 1 ]; then
  if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null && command -v ip >/dev/null; then
    # Everything was built above; inside the namespace cargo must not touch the network.
    echo "==> ${TEST[*]} $* (in a loopback-only network namespace)"
    CMD="ip link set lo up && CARGO_NET_OFFLINE=true exec $(printf '%q ' "${TEST[@]}" "$@")"
    logged timeout --kill-after=60 "${TEST_TIMEOUT:-40m}" unshare -n bash -c "$CMD" || RC=$?
  else
    echo "warning: cannot create a network namespace here; running tests in the host namespace" >&2
    logged timeout --kill-after=60 "${TEST_TIMEOUT:-40m}" "${TEST[@]}" "$@" || RC=$?
  fi
else
  echo "==> ${TEST[*]} $*"
  logged timeout --kill-after=60 "${TEST_TIMEOUT:-40m}" "${TEST[@]}" "$@" || RC=$?
fi
[ "$RC" = 0 ] || echo "==> cargo test failed (exit $RC); running the fuzz smoke test anyway" >&2

if [ -f scripts/fuzz-smoke.sh ]; then
  echo "==> scripts/fuzz-smoke.sh 10"
  bash scripts/fuzz-smoke.sh 10 || RC=$?
else
  echo "(scripts/fuzz-smoke.sh not present: skipping the fuzz smoke run)"
fi
if [ "$RC" != 0 ]; then
  echo "==> summary of test failures (from the cargo test output above)" >&2
  grep -E "^test .* FAILED$|panicked at|^---- .* stdout ----$|^error: test failed|Running .*\(" "$TEST_LOG" \
    | grep -B1 -E "FAILED|panicked|^----|error: test failed" | tail -n 60 >&2 || true
  echo "==> FAILED (exit $RC)" >&2
  exit "$RC"
fi
echo "==> all tests passed"
