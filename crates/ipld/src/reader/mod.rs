//! I/O-free UnixFS readers: planners that say which blocks they need and what they found,
//! while the caller does the I/O.
//!
//! Every walk over UnixFS in ipfs-mount goes through one of these state machines, so the
//! safety rules live in one (fuzzed) place:
//!
//! - every distinct block is asked for once per walk, and a HAMT shard reached twice is
//!   listed once: a DAG whose levels all point at one child costs what its distinct blocks
//!   cost, not the product of the fan-outs;
//! - depth is bounded ([`Limits::max_depth`]);
//! - a file node's size is checked against what its parent declared (`blocksizes`) and
//!   against the root's `filesize`;
//! - directory entries whose names cannot be file names ([`crate::unixfs::is_safe_name`])
//!   are reported as hidden, never as entries;
//! - entry and block counts are bounded ([`Limits::max_entries`], [`Limits::max_blocks`]).
//!
//! # Protocol
//!
//! A planner is driven by [`Planner::next`], which returns a [`Step`]:
//! [`Step::Need`] (fetch this block and hand it over with [`Planner::provide`]),
//! [`Step::Item`] (a result, in the walk's order), [`Step::Wait`] (every block the planner
//! can use now has been asked for: provide one of them) or [`Step::Done`]. Errors are
//! [`ReadError`]s naming the CID and the rule broken. A planner may ask for several blocks
//! before any is provided (up to [`Limits::window_blocks`]), so async callers can fetch in
//! parallel; blocks may be provided in any order. A caller that provides each block right
//! after it is asked for never sees [`Step::Wait`].
//!
//! [`drive`] holds the [`BlockGetter`] trait and the sync/async drivers.
//!
//! # Planners
//!
//! - [`file::FileRange`]: which pieces (inline bytes, ranges of raw leaves) make up
//!   `[from, to)` of a file.
//! - [`leaves::Leaves`]: a file's leaves (raw blocks and dag-pb nodes without children) in
//!   order, run-length encoded, each distinct subtree expanded once.
//! - [`listing::Listing`]: the entries of a plain or HAMT-sharded directory, in order.
//! - [`path::PathWalk`]: resolve names one by one from a root, through HAMT shards; symlinks
//!   are reported, not followed.
//! - [`dag::DagWalk`]: every distinct block of a DAG (or of a UnixFS entity, or of a byte
//!   range of a file) once, in depth-first pre-order.

use bytes::Bytes;
use cid::Cid;

use crate::unixfs::UnixFsError;

pub mod dag;
pub mod drive;
pub mod file;
#[doc(hidden)]
pub mod fuzzing;
pub mod leaves;
pub mod listing;
pub mod path;
#[cfg(test)]
mod tests;

pub use drive::{collect, collect_local, BlockGetter, DriveError, Pull};

/// What a planner wants next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<T> {
    /// Fetch this block and [`Planner::provide`] it. Each CID is asked for at most once.
    Need(Cid),
    /// A result, in the walk's order.
    Item(T),
    /// Every block the planner can use now is asked for: provide one of them.
    Wait,
    /// The walk is complete.
    Done,
}

/// An I/O-free walk: see the [module docs](self).
pub trait Planner {
    type Item;
    /// The next step. After `Done` or an error, keeps returning `Done`/the error's kin; do not
    /// rely on it.
    fn next(&mut self) -> Result<Step<Self::Item>, ReadError>;
    /// Hands over a block asked for with [`Step::Need`]. The bytes are not verified against the
    /// CID here (the block layer does that). A block never asked for is ignored.
    fn provide(&mut self, cid: &Cid, block: Bytes) -> Result<(), ReadError>;
}

/// Bounds of one walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest node below the root (the root is depth 0).
    pub max_depth: u32,
    /// Most entries a listing yields (hidden ones included).
    pub max_entries: u64,
    /// Most distinct blocks a walk asks for.
    pub max_blocks: u64,
    /// Most blocks asked for and not yet provided or consumed.
    pub window_blocks: usize,
    /// Estimated bytes asked for and not yet consumed (the first is always allowed).
    pub window_bytes: u64,
}

/// 64 levels: a UnixFS file that deep would be astronomically large, and a HAMT cannot be
/// deeper than its 64-bit hash.
pub const DEFAULT_MAX_DEPTH: u32 = 64;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: DEFAULT_MAX_DEPTH,
            max_entries: 1 << 32,
            max_blocks: u64::MAX,
            window_blocks: 32,
            window_bytes: 32 << 20,
        }
    }
}

impl Limits {
    /// Limits that ask for one block at a time.
    pub fn sequential() -> Self {
        Limits {
            window_blocks: 1,
            ..Limits::default()
        }
    }

    /// Same limits with another depth bound.
    pub fn with_max_depth(self, max_depth: u32) -> Self {
        Limits { max_depth, ..self }
    }

    /// Same limits with another window.
    pub fn with_window(self, blocks: usize, bytes: u64) -> Self {
        Limits {
            window_blocks: blocks.max(1),
            window_bytes: bytes,
            ..self
        }
    }
}

/// Why a walk stopped: the CID concerned and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("block {cid} is malformed: {source}")]
    Decode {
        cid: Cid,
        #[source]
        source: Box<UnixFsError>,
    },
    #[error("block {cid} is {depth} levels below the root (limit {limit})")]
    TooDeep { cid: Cid, depth: u32, limit: u32 },
    #[error("block {cid} holds {actual} file bytes but its parent declared {declared}")]
    SizeMismatch {
        cid: Cid,
        declared: u64,
        actual: u64,
    },
    #[error("block {cid} is not a file")]
    NotFile { cid: Cid },
    #[error("block {cid} is not a directory")]
    NotDirectory { cid: Cid },
    #[error("HAMT link to {cid} points to a block that is not a shard")]
    NotShard { cid: Cid },
    #[error("directory {cid} has more than {limit} entries")]
    TooManyEntries { cid: Cid, limit: u64 },
    #[error("walk from {cid} needs more than {limit} blocks")]
    TooManyBlocks { cid: Cid, limit: u64 },
}

impl ReadError {
    /// The CID the error is about.
    pub fn cid(&self) -> &Cid {
        match self {
            ReadError::Decode { cid, .. }
            | ReadError::TooDeep { cid, .. }
            | ReadError::SizeMismatch { cid, .. }
            | ReadError::NotFile { cid }
            | ReadError::NotDirectory { cid }
            | ReadError::NotShard { cid }
            | ReadError::TooManyEntries { cid, .. }
            | ReadError::TooManyBlocks { cid, .. } => cid,
        }
    }

    pub(crate) fn decode(cid: &Cid, source: UnixFsError) -> Self {
        ReadError::Decode {
            cid: *cid,
            source: Box::new(source),
        }
    }
}

/// Checks a raw leaf named by a [`file::Piece::Leaf`]: its length must be the size its parent
/// declared.
pub fn check_leaf(cid: &Cid, block: &[u8], declared: u64) -> Result<(), ReadError> {
    if block.len() as u64 != declared {
        return Err(ReadError::SizeMismatch {
            cid: *cid,
            declared,
            actual: block.len() as u64,
        });
    }
    Ok(())
}
