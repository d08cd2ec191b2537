#!/usr/bin/env bash
# The project's test command (see README): build everything in release mode, run every
# test of the workspace against the release binary, then a short fuzz smoke run.
#
# env: CARGO_TARGET_DIR            where to build (default: cargo's, i.e. ./target)
#      IPFS_MOUNT_SHARED           ../shared (reference peers and fixtures); tests look there by default
#      IPFS_MOUNT_REQUIRE_PEERS=1  fail (not skip) the interop tests when the peers are missing
#      IPFS_MOUNT_NO_INSTALL=1     only report missing packages and python modules, install nothing
#      IPFS_MOUNT_TEST_NETNS=1     as root: run `cargo test` in a new network namespace with only
#                                  loopback (FUSE still works: the mount namespace is shared)
#      TEST_TIMEOUT                upper bound for the `cargo test` step (default 40m)
#      extra args are passed to `cargo test` (e.g. `scripts/test.sh --test interop -- kubo`)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# What the tests run besides cargo (as .ci/run installs it). As root on Debian/Ubuntu the
# missing packages are installed (IPFS_MOUNT_NO_INSTALL=1: only report them); otherwise the
# step says what is missing and how to install it. FUSE is required; the rest only turns
# some tests into printed skips. Nothing beside the clone is needed: tests that need the
# reference peers or conformance fixtures of ../shared skip with one line (fail under
# IPFS_MOUNT_REQUIRE_PEERS=1).
echo "==> prerequisites"
command -v cargo >/dev/null || { echo "scripts/test.sh: cargo not found (install Rust: https://rustup.rs)" >&2; exit 1; }
# command -> Debian package
declare -A NEED=([fusermount3]=fuse3 [getfattr]=attr [curl]=curl [python3]=python3 [openssl]=openssl
                 [diff]=diffutils [runuser]=util-linux [strace]=strace [java]=openjdk-17-jre-headless
                 [ip]=iproute2 [unshare]=util-linux)
MISSING_PKGS=()
for c in "${!NEED[@]}"; do
  command -v "$c" >/dev/null || MISSING_PKGS+=("${NEED[$c]}")
done
if [ ${#MISSING_PKGS[@]} -gt 0 ]; then
  mapfile -t MISSING_PKGS < <(printf '%s\n' "${MISSING_PKGS[@]}" | sort -u)
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ "${IPFS_MOUNT_NO_INSTALL:-0}" != 1 ]; then
    echo "installing: ${MISSING_PKGS[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${MISSING_PKGS[@]}"
  else
    echo "missing (tests that need them skip): ${MISSING_PKGS[*]}  ->  apt-get install ${MISSING_PKGS[*]}"
  fi
fi
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
if [ ! -e /dev/fuse ] || ! command -v fusermount3 >/dev/null; then
  echo "scripts/test.sh: FUSE is not usable (/dev/fuse and fusermount3 from the fuse3 package are needed)" >&2
  exit 1
fi
# Python modules some tests read the mount with (pip; they skip with a line when missing).
PY_MODULES=(duckdb pandas pyarrow prometheus_client)
PY_MISSING=()
if command -v python3 >/dev/null; then
  for m in "${PY_MODULES[@]}"; do python3 -c "import $m" 2>/dev/null || PY_MISSING+=("$m"); done
fi
if [ ${#PY_MISSING[@]} -gt 0 ]; then
  if [ "${IPFS_MOUNT_NO_INSTALL:-0}" != 1 ] && python3 -m pip --version >/dev/null 2>&1; then
    echo "pip installing: ${PY_MISSING[*]}"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${PY_MISSING[@]}" \
      || echo "pip install failed: the tests that need ${PY_MISSING[*]} will skip"
  else
    echo "python modules missing (tests that need them skip): ${PY_MISSING[*]}  ->  pip install ${PY_MISSING[*]}"
  fi
fi
SHARED_DIR="${IPFS_MOUNT_SHARED:-$(dirname "$PWD")/shared}"
if [ ! -d "$SHARED_DIR/peers" ]; then
  echo "no reference peers at $SHARED_DIR/peers: the interop tests print SKIPPED (set IPFS_MOUNT_SHARED to use them)"
fi

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
