//! The shared gateway-conformance fixtures (`$IPFS_MOUNT_SHARED/fixtures/gateway-conformance`,
//! else `../shared` beside the repository), and what a test does without them: it skips with a
//! printed reason, or fails under `IPFS_MOUNT_REQUIRE_PEERS=1` (set by `.ci/run`), as the root
//! crate's `tests/common/env.rs` decides.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `$IPFS_MOUNT_SHARED`, else `shared/` beside the repository.
pub fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IPFS_MOUNT_SHARED") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// The gateway-conformance fixtures directory (present or not).
pub fn fixtures_dir() -> PathBuf {
    shared_dir().join("fixtures").join("gateway-conformance")
}

/// True when missing prerequisites must fail the test instead of skipping it (CI).
pub fn strict() -> bool {
    matches!(
        std::env::var("IPFS_MOUNT_REQUIRE_PEERS").as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// Prints why the running test is skipped, or panics in strict mode.
pub fn skip_or_fail(why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("test");
    if strict() {
        panic!("{test}: {why} (IPFS_MOUNT_REQUIRE_PEERS=1, so this is a failure, not a skip)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// The fixtures directory when it is there (its INDEX.md exists); else skip or fail.
pub fn require_fixtures() -> Option<PathBuf> {
    let dir = fixtures_dir();
    if dir.join("INDEX.md").exists() {
        Some(dir)
    } else {
        skip_or_fail(&format!(
            "conformance fixtures not found at {} (set IPFS_MOUNT_SHARED)",
            dir.display()
        ));
        None
    }
}

/// The bytes of one fixture file (`rel` below the fixtures directory), or None (skip or fail)
/// when the fixtures are missing. A file missing from fixtures that are there is a failure.
pub fn fixture(rel: &str) -> Option<Vec<u8>> {
    let dir = require_fixtures()?;
    let path = dir.join(rel);
    Some(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}
