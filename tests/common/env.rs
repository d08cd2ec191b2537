//! Environment: where `../shared` is ([`shared_dir`]), and whether FUSE, the reference peers and the conformance
//! fixtures are usable ([`require_fuse`], [`require_peers`], [`require_fixtures`]). A test skips with a printed
//! reason when something is missing, unless `IPFS_MOUNT_REQUIRE_PEERS=1` (set by `.ci/run`), where it fails instead.

use super::*;

use std::path::{Path, PathBuf};

/// `../shared` beside the repository (override with `IPFS_MOUNT_SHARED`).
pub fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IPFS_MOUNT_SHARED") {
        return PathBuf::from(d);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).join("shared")
}

/// True when missing prerequisites must fail the test instead of skipping it (CI).
pub fn strict() -> bool {
    matches!(
        std::env::var("IPFS_MOUNT_REQUIRE_PEERS").as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

pub fn skip_or_fail(test: &str, why: &str) {
    if strict() {
        panic!("{test}: {why} (IPFS_MOUNT_REQUIRE_PEERS=1, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// FUSE is usable: `/dev/fuse` and `fusermount3` exist.
pub fn fuse_available() -> Result<(), String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse does not exist".into());
    }
    if which("fusermount3").is_none() {
        return Err("fusermount3 not found (apt-get install fuse3)".into());
    }
    Ok(())
}

/// Returns false (after printing why) when the test must be skipped because FUSE is unavailable.
pub fn require_fuse(test: &str) -> bool {
    match fuse_available() {
        Ok(()) => true,
        Err(e) => {
            skip_or_fail(test, &e);
            false
        }
    }
}

/// `../shared/peers` when it holds the reference peer scripts, and FUSE works; otherwise prints why the test is
/// skipped and returns None (or panics under `IPFS_MOUNT_REQUIRE_PEERS=1`).
pub fn require_peers(test: &str) -> Option<PathBuf> {
    let dir = shared_dir().join("peers");
    if !dir.join("kubo-up.sh").exists() || !dir.join("helia-up.sh").exists() {
        skip_or_fail(
            test,
            &format!(
                "reference peers not found at {} (set IPFS_MOUNT_SHARED)",
                dir.display()
            ),
        );
        return None;
    }
    if !require_fuse(test) {
        return None;
    }
    Some(dir)
}

/// `../shared/fixtures/gateway-conformance` if present (and FUSE works); else skip as [`require_peers`] does.
pub fn require_fixtures(test: &str) -> Option<PathBuf> {
    let dir = fixtures_dir(test)?;
    if !require_fuse(test) {
        return None;
    }
    Some(dir)
}

/// `../shared/fixtures/gateway-conformance` if present, for tests that need no mount; else skip as
/// [`require_peers`] does (a failure under `IPFS_MOUNT_REQUIRE_PEERS=1`).
pub fn fixtures_dir(test: &str) -> Option<PathBuf> {
    let dir = shared_dir().join("fixtures").join("gateway-conformance");
    if !dir.join("INDEX.md").exists() {
        skip_or_fail(
            test,
            &format!("conformance fixtures not found at {}", dir.display()),
        );
        return None;
    }
    Some(dir)
}
