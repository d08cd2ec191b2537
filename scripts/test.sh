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
if [ "${IPFS_MOUNT_TEST_NETNS:-0}" = 1 ]; then
  if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null && command -v ip >/dev/null; then
    # Everything was built above; inside the namespace cargo must not touch the network.
    echo "==> ${TEST[*]} $* (in a loopback-only network namespace)"
    CMD="ip link set lo up && CARGO_NET_OFFLINE=true exec $(printf '%q ' "${TEST[@]}" "$@")"
    timeout --kill-after=60 "${TEST_TIMEOUT:-40m}" unshare -n bash -c "$CMD" || RC=$?
  else
    echo "warning: cannot create a network namespace here; running tests in the host namespace" >&2
    timeout --kill-after=60 "${TEST_TIMEOUT:-40m}" "${TEST[@]}" "$@" || RC=$?
  fi
else
  echo "==> ${TEST[*]} $*"
  timeout --kill-after=60 "${TEST_TIMEOUT:-40m}" "${TEST[@]}" "$@" || RC=$?
fi
[ "$RC" = 0 ] || echo "==> cargo test failed (exit $RC); running the fuzz smoke test anyway" >&2

if [ -f scripts/fuzz-smoke.sh ]; then
  echo "==> scripts/fuzz-smoke.sh 10"
  bash scripts/fuzz-smoke.sh 10 || RC=$?
else
  echo "(scripts/fuzz-smoke.sh not present: skipping the fuzz smoke run)"
fi
if [ "$RC" != 0 ]; then echo "==> FAILED (exit $RC)" >&2; exit "$RC"; fi
echo "==> all tests passed"
