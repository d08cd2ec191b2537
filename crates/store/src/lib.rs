//! Persistent, content-addressed cache of verified IPFS blocks.
//!
//! Two implementations of [`BlockStore`]:
//!
//! * [`DiskStore`]: block data in one file per block (flatfs style), an SQLite index for sizes, LRU times and pins.
//! * [`MemoryStore`]: a `HashMap` for tests, with the same pin and eviction semantics.
//!
//! # Keys
//!
//! Blocks are keyed by their **multihash bytes** (`cid.hash().to_bytes()`), so the CIDv0 and CIDv1 forms (and any
//! codec) of the same content share one entry. Callers verify a block against its CID *before* `put`; the store never
//! re-hashes on read. Identity-multihash CIDs (code `0x00`) carry their data inline and are never stored: `put` is a
//! no-op, `get` returns `None`, `has` and `is_pinned` return `false`.
//!
//! # On-disk layout (version 1)
//!
//! ```text
//! dir/
//!   VERSION                      layout version, the text "1\n"; open() refuses any other value
//!   LOCK                         flock(LOCK_EX) held while open; contains the holder's pid
//!   index.sqlite (+ -wal, -shm)  SQLite in WAL mode, synchronous=NORMAL (FULL when sync_writes)
//!   blocks/<SS>/<KEY>.data       one file per block, its exact bytes
//!   blocks/<SS>/<KEY>.data.<pid>.<n>.tmp   in-flight writes, renamed onto the .data name when complete
//! ```
//!
//! `KEY` is the multihash bytes in RFC 4648 base32, uppercase, without padding (the same key Kubo's flatfs uses,
//! e.g. `CIQ…` for sha2-256). `SS` is the *next-to-last/2* shard of Kubo's flatfs: the two characters before the
//! last character of `KEY`. Shard directories are created on demand.
//!
//! Index tables:
//!
//! * `blocks(mh BLOB PRIMARY KEY, size INTEGER, last_access INTEGER)`: every block file that is present.
//!   `last_access` is a logical clock (monotonic counter, persisted), not wall time.
//! * `pins(root BLOB PRIMARY KEY, label TEXT, created INTEGER)`: `root` is the root's full CID bytes, `created` is
//!   Unix seconds.
//! * `pin_blocks(root BLOB, mh BLOB, PRIMARY KEY(root, mh))` with an index on `mh`: the block set of each pin (the
//!   root's own multihash included). A block is pinned while at least one pin lists it; pinned blocks may be absent
//!   (pinned before they were fetched) and are protected as soon as they arrive.
//! * `meta(key TEXT PRIMARY KEY, value)`: `clean` = 1 after an orderly close.
//!
//! # Hot path
//!
//! Sizes, LRU times and pin counts are mirrored in memory at open, so `get` is: one hash-map lookup under a read
//! lock, `open` + `fstat` + one `read` into an uninitialized buffer, and an in-memory access record. Access times are
//! written to the index in batches by a background thread (every 5 s, or sooner after 4096 distinct accesses), and on
//! eviction, on [`BlockStore::flush`] and on drop: `get` itself never touches SQLite.
//!
//! # Crash consistency
//!
//! A block file appears only through `rename` of a completely written temporary file, so a `.data` file always has
//! complete content after a process crash (with `sync_writes` also after power loss: the file and its directory are
//! fsynced before the index commits). The index row is committed after the rename; eviction deletes the row first,
//! then the file. `open` after an unclean shutdown (no `clean` flag) scans `blocks/`:
//!
//! * leftover `*.tmp` files are deleted;
//! * index rows whose block file is missing are dropped;
//! * block files without an index row are **adopted** (size from the file, oldest LRU time, so they are the first
//!   to go). Such a file can only come from a crash between rename and index commit (or between an eviction's row
//!   delete and unlink); either way the rename guarantees it is a complete, verified block, so keeping it saves a
//!   refetch and costs nothing.
//!
//! A file whose length differs from its index row is treated as corrupt by `get`: removed, logged, reported absent.
//!
//! # Concurrency
//!
//! All methods take `&self`; the stores are `Send + Sync`. The SQLite connection sits behind one mutex that is never
//! held while block data is written or read (temporary files are written before it is taken; under it happen only
//! renames, unlinks, directory fsyncs and index statements). Pinning and eviction both run under that mutex, so an
//! eviction never removes a block that a concurrent `pin` protects.

mod disk;
mod error;
mod memory;

use std::path::PathBuf;

use bytes::Bytes;
use cid::Cid;

pub use disk::{DiskStore, RecoveryStats, LAYOUT_VERSION};
pub use error::StoreError;
pub use memory::MemoryStore;

/// Multicodec code of the identity multihash: such CIDs hold their data inline and are never stored.
pub const IDENTITY_CODE: u64 = 0x00;

/// Configuration of a [`DiskStore`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the store; created if missing.
    pub dir: PathBuf,
    /// Bytes of UNPINNED blocks kept; least recently used unpinned blocks are evicted beyond it.
    pub cache_capacity: u64,
    /// fsync block files and their directories before the index commits (durable against power loss).
    pub sync_writes: bool,
}

/// One pin as reported by [`BlockStore::pins`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinInfo {
    /// The pinned root, as given to [`BlockStore::pin`].
    pub root: Cid,
    /// Free text given at pin time.
    pub label: String,
    /// Number of distinct blocks in the pin's block set (the root included), present or not.
    pub blocks: u64,
    /// Bytes of the blocks of the set that are present in the store.
    pub bytes: u64,
}

/// Totals reported by [`BlockStore::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Blocks present.
    pub blocks: u64,
    /// Bytes of the blocks present.
    pub bytes: u64,
    /// Present blocks protected by at least one pin.
    pub pinned_blocks: u64,
    /// Bytes of the present pinned blocks.
    pub pinned_bytes: u64,
    /// The configured capacity for unpinned bytes.
    pub cache_capacity: u64,
}

impl StoreStats {
    /// Bytes of present blocks that no pin protects (the ones subject to eviction).
    pub fn unpinned_bytes(&self) -> u64 {
        self.bytes - self.pinned_bytes
    }
}

/// What one eviction removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EvictStats {
    /// Blocks removed.
    pub blocks: u64,
    /// Bytes removed.
    pub bytes: u64,
}

/// A persistent cache of verified blocks with pins and LRU eviction. See the crate docs for the semantics.
pub trait BlockStore: Send + Sync {
    /// Block bytes if present. Records the access for LRU (in memory, persisted in batches).
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError>;
    /// Whether the block is present (no file access).
    fn has(&self, cid: &Cid) -> Result<bool, StoreError>;
    /// Stores one block the caller has verified against `cid`. Atomic and idempotent.
    fn put(&self, cid: &Cid, data: &[u8]) -> Result<(), StoreError>;
    /// Stores many verified blocks with one index transaction.
    fn put_many(&self, blocks: &[(Cid, Bytes)]) -> Result<(), StoreError>;
    /// Pins `root` and `blocks` (all blocks of its DAG, computed by the caller; the root is always included).
    /// Pinned blocks are never evicted. Re-pinning the same root replaces its block set and label.
    fn pin(&self, root: &Cid, label: &str, blocks: &mut dyn Iterator<Item = Cid>) -> Result<(), StoreError>;
    /// Removes the pin of `root`; `false` if there was none. The blocks stay, now subject to eviction.
    fn unpin(&self, root: &Cid) -> Result<bool, StoreError>;
    /// All pins.
    fn pins(&self) -> Result<Vec<PinInfo>, StoreError>;
    /// Whether some pin protects this block (present or not).
    fn is_pinned(&self, cid: &Cid) -> Result<bool, StoreError>;
    /// Totals.
    fn stats(&self) -> Result<StoreStats, StoreError>;
    /// Evicts least recently used unpinned blocks until unpinned bytes <= capacity. `put`, `put_many`, `pin` (a
    /// replaced block set) and `unpin` do this automatically when over capacity, evicting down to 90% of it in one
    /// go, so unpinned bytes never stay above the capacity.
    fn evict(&self) -> Result<EvictStats, StoreError>;
    /// Persists pending LRU access times and checkpoints the index.
    fn flush(&self) -> Result<(), StoreError>;
}

/// The store key of a CID: its multihash bytes, or `None` for identity CIDs (never stored).
pub fn block_key(cid: &Cid) -> Option<Vec<u8>> {
    if cid.hash().code() == IDENTITY_CODE {
        None
    } else {
        Some(cid.hash().to_bytes())
    }
}

/// Low-water mark that automatic eviction brings unpinned bytes down to: 90% of capacity.
pub(crate) fn low_water(capacity: u64) -> u64 {
    capacity - capacity / 10
}

/// Picks LRU victims among unpinned blocks `(last_access, size, key)` so that `unpinned` drops to `target` or below.
pub(crate) fn select_victims<K>(mut candidates: Vec<(u64, u64, K)>, unpinned: u64, target: u64) -> Vec<(u64, K)> {
    if unpinned <= target {
        return Vec::new();
    }
    candidates.sort_unstable_by_key(|c| c.0);
    let mut excess = unpinned - target;
    let mut out = Vec::new();
    for (_, size, key) in candidates {
        if excess == 0 {
            break;
        }
        excess = excess.saturating_sub(size);
        out.push((size, key));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn victims_in_lru_order_until_target() {
        let c = vec![(5, 10, "e"), (1, 10, "a"), (3, 10, "c"), (2, 10, "b")];
        let v = select_victims(c, 40, 15);
        assert_eq!(v, vec![(10, "a"), (10, "b"), (10, "c")]);
        assert!(select_victims(vec![(1, 10, "a")], 10, 10).is_empty());
        assert_eq!(low_water(1000), 900);
        assert_eq!(low_water(0), 0);
    }
}
