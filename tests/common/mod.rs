//! Shared harness for the integration tests: every `tests/*.rs` declares `mod common;` and uses `common::*`.
//!
//! # Layout
//! - [`env`]: where `../shared` is, and whether FUSE, the reference peers and the fixtures are usable (a test skips
//!   with a printed reason when something is missing, or fails under `IPFS_MOUNT_REQUIRE_PEERS=1`, as in CI).
//! - [`tools`]: commands with a scrubbed environment, timeouts, temporary directories, free ports.
//! - [`http`]: HTTP to loopback through curl.
//! - [`peers`]: the [`Kubo`] and [`Helia`] reference peers; [`dagpb`]: reading the blocks they make.
//! - [`mount`]: the [`Mount`] guard around `ipfs-mount -f`, and the mount table.
//! - [`data`]: deterministic data and test trees; [`car`]: an independent UnixFS + CARv1 writer.
//! - [`checks`]: a mounted tree against its source; [`files`]: errno, xattrs, `pread`, `O_DIRECT`.
//! - [`disk`]: a size-limited tmpfs for full-disk tests.
//! - [`datasets`]: helpers of the dataset tests (`use common::datasets::*;` in `tests/datasets*.rs`).
//! - [`loopback`]: every socket of the processes under test on loopback (the project's own check, from `/proc`).
//! - [`p2p`]: ipfs-mount as a libp2p peer, and a scripted bitswap peer (`tests/bitswap.rs`, `tests/names.rs`).
//!
//! Each test binary compiles this module on its own and uses only part of it, hence `dead_code` is allowed.
#![allow(dead_code)]

pub mod car;
pub mod checks;
pub mod dagpb;
pub mod data;
pub mod datasets;
pub mod disk;
pub mod env;
pub mod files;
pub mod http;
pub mod loopback;
pub mod mount;
pub mod p2p;
pub mod peers;
pub mod tools;

// Each test binary uses only some of these.
#[allow(unused_imports)]
pub use self::{
    checks::*, dagpb::*, data::*, disk::*, env::*, files::*, http::*, loopback::*, mount::*,
    peers::*, tools::*,
};

pub use tempfile::TempDir;

/// The release (or debug) binary cargo built for this test run.
pub const BIN: &str = env!("CARGO_BIN_EXE_ipfs-mount");
