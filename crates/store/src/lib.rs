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
//! # Pins and temporary pins
//!
//! A **pin** names a root CID and lists the blocks of its DAG; a **temporary pin** has no root, only an owner (free
//! text such as `dataset:sales` or `import`) and a numeric [`TempPinId`], and lists the blocks of a DAG that is still
//! being written or imported. Both protect the blocks they list, present or not, in the same way: protected blocks
//! are never evicted and their bytes do not count against `cache_capacity` ([`StoreStats::pinned_bytes`] includes
//! temporarily pinned bytes; [`StoreStats::temp_pinned_bytes`] reports those alone). Writers store blocks with
//! [`BlockStore::put_temp`], which makes each block present and protected in one step (there is no moment at which
//! a written block is evictable), add reused blocks with [`BlockStore::temp_pin_add`], and at the end turn the
//! temporary pins into a pin with [`BlockStore::pin_with_temps`] (one index transaction) or drop them with
//! [`BlockStore::release_temp`]. Temporary pins are persistent: after a crash they still protect their blocks until
//! their owner releases them ([`BlockStore::temp_pins`], [`BlockStore::release_temp_owner`]). Ids are never reused.
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
//! Directories the store creates (`dir` and its missing parents, `blocks/`, the shards) get mode 0700: the owner's
//! alone ([`create_private_dir`]). An existing `dir` keeps its mode (a warning is logged when others may enter it).
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
//! * `temp_pins(id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT, created INTEGER)` with an index on `owner`: one
//!   row per temporary pin, written by the transaction that first gives it blocks (`put_temp`, `temp_pin_add`):
//!   most temporary pins hold one small file, so this saves a transaction per file, and a pin that never held
//!   anything protected nothing and is not kept across a restart. Ids are unique for the life of the index: SQLite
//!   remembers the highest id written (`AUTOINCREMENT`, `sqlite_sequence`) and `meta.temp_reserved` the highest
//!   id handed out (reserved 1,024 at a time); `created` is Unix seconds.
//! * `temp_pin_blocks(id INTEGER, mh BLOB, PRIMARY KEY(id, mh))`: the block set of each temporary pin. A block is
//!   protected while a pin or a temporary pin lists it.
//! * `meta(key TEXT PRIMARY KEY, value)`: `clean` = 1 after an orderly close, 0 while open; no row in a new
//!   index (a new store: `open` logs "store created", not a recovery; see [`Opened`]).
//!
//! Every table is created with `CREATE TABLE IF NOT EXISTS` at open, so a store written by an older build (without
//! the temporary pin tables) gains them on its first open by this one; the layout version stays 1 (an older build
//! opening the store afterwards ignores the new tables, and so does not protect temporarily pinned blocks).
//!
//! # Hot path
//!
//! Sizes, LRU times and pin counts (how many pins and temporary pins list each block) are mirrored in memory at open, so `get` is: one hash-map lookup under a read
//! lock, `open` + `fstat` + one `read` into an uninitialized buffer, and an in-memory access record. Access times are
//! written to the index in batches by a background thread (every 5 s, or sooner after 4096 distinct accesses), and on
//! eviction, on [`BlockStore::flush`] and on drop: `get` itself never touches SQLite.
//!
//! # Crash consistency
//!
//! A block file appears only through `rename` of a completely written temporary file, so a `.data` file always has
//! complete content after a process crash (with `sync_writes` also after power loss: the file and its directory are
//! fsynced before the index commits). The index row is committed after the rename; eviction deletes the row first,
//! then the file. `open` after an unclean shutdown (`clean` = 0) scans `blocks/`, and so does the `open` that creates the index:
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
//! Pins and temporary pins live only in the index, so each of their changes is one transaction: `put_temp` indexes
//! its new blocks and lists them in the temporary pin in the same transaction (a crash before it leaves at most
//! complete, unindexed files, adopted as unprotected cache by the next open, and the caller was not told the put
//! succeeded); `pin_with_temps` writes the pin and deletes the temporary pins in one transaction, so a crash leaves
//! either the temporary pins or the pin, and the blocks are protected throughout. Recovery does not touch pins or
//! temporary pins; deleting `index.sqlite` loses both.
//!
//! When the file system is full, `put`, `put_many` and `put_temp` fail with [`StoreError::NoSpace`] (also when
//! SQLite reports a full disk) and leave nothing half-written: temporary files are removed, renamed files whose
//! index transaction failed are removed again.
//!
//! # Concurrency
//!
//! All methods take `&self`; the stores are `Send + Sync`. The SQLite connection sits behind one mutex that is never
//! held while block data is written or read (temporary files are written before it is taken; under it happen only
//! renames, unlinks, directory fsyncs and index statements). Pinning and eviction both run under that mutex, so an
//! eviction never removes a block that a concurrent `pin` protects. `put_temp` writes its temporary files first,
//! then, under the mutex, checks that every block of the batch is either present or staged (a present block
//! evicted meanwhile is written too, outside the mutex, and checked again) and commits; the memory mirror makes the
//! new blocks present and protected in one update, before the mutex is released.

mod disk;
mod error;
mod memory;

use std::path::PathBuf;

use bytes::Bytes;
use cid::Cid;

pub use disk::{create_private_dir, DiskStore, Opened, RecoveryStats, LAYOUT_VERSION};
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

/// Identifier of a temporary pin (see [`BlockStore::temp_pin`]). Never reused by a store, also across restarts.
pub type TempPinId = u64;

/// Totals reported by [`BlockStore::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Blocks present.
    pub blocks: u64,
    /// Bytes of the blocks present.
    pub bytes: u64,
    /// Present blocks protected by at least one pin or temporary pin.
    pub pinned_blocks: u64,
    /// Bytes of the present pinned blocks (temporarily pinned ones included). Pinned bytes never count against
    /// the cache capacity.
    pub pinned_bytes: u64,
    /// Present blocks protected by at least one temporary pin (also counted in `pinned_blocks`).
    pub temp_pinned_blocks: u64,
    /// Bytes of the present blocks protected by at least one temporary pin (also counted in `pinned_bytes`; a block
    /// that a pin holds too counts in both).
    pub temp_pinned_bytes: u64,
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
    fn pin(
        &self,
        root: &Cid,
        label: &str,
        blocks: &mut dyn Iterator<Item = Cid>,
    ) -> Result<(), StoreError>;
    /// Removes the pin of `root`; `false` if there was none. The blocks stay, now subject to eviction.
    fn unpin(&self, root: &Cid) -> Result<bool, StoreError>;
    /// All pins.
    fn pins(&self) -> Result<Vec<PinInfo>, StoreError>;
    /// Whether some pin or temporary pin protects this block (present or not).
    fn is_pinned(&self, cid: &Cid) -> Result<bool, StoreError>;
    /// A new, empty temporary pin owned by `owner` (free text, e.g. `"dataset:sales"` or `"import"`). Persistent
    /// from its first blocks on: then it survives a crash or restart until released (an empty one need not). Its blocks are protected like pinned ones (never evicted, not
    /// counted against the capacity) but it has no root: it protects a DAG while it is being built or imported.
    fn temp_pin(&self, owner: &str) -> Result<TempPinId, StoreError>;
    /// Stores verified blocks and adds them to the temporary pin `pin`, atomically with respect to eviction: a block
    /// is never evictable between its put and its protection (blocks already present are protected before anything
    /// can evict them). Idempotent. [`StoreError::UnknownTempPin`] (and nothing stored) if `pin` does not exist.
    fn put_temp(&self, pin: TempPinId, blocks: &[(Cid, Bytes)]) -> Result<(), StoreError>;
    /// [`put_temp`](Self::put_temp) of several pins' blocks at once (with one index transaction where the
    /// store has one). A pin that does not exist is skipped and its id returned (its blocks may be stored as
    /// ordinary cache); any other error stores nothing.
    fn put_temp_many(
        &self,
        batches: &[(TempPinId, &[(Cid, Bytes)])],
    ) -> Result<Vec<TempPinId>, StoreError> {
        let mut unknown = Vec::new();
        for (pin, blocks) in batches {
            match self.put_temp(*pin, blocks) {
                Ok(()) => {}
                Err(StoreError::UnknownTempPin(p)) => unknown.push(p),
                Err(e) => return Err(e),
            }
        }
        Ok(unknown)
    }
    /// Adds blocks, present or not, to the temporary pin `pin` without storing data (e.g. reused leaves). Absent
    /// blocks are protected as soon as they arrive. [`StoreError::UnknownTempPin`] if `pin` does not exist.
    fn temp_pin_add(
        &self,
        pin: TempPinId,
        blocks: &mut dyn Iterator<Item = Cid>,
    ) -> Result<(), StoreError>;
    /// Releases a temporary pin: its blocks become ordinary cache (evictable) unless another pin or temporary pin
    /// holds them. `false` for an unknown (or already released) id.
    fn release_temp(&self, pin: TempPinId) -> Result<bool, StoreError>;
    /// Releases every temporary pin of `owner` (e.g. the leftovers of a crashed run); returns how many.
    fn release_temp_owner(&self, owner: &str) -> Result<u64, StoreError>;
    /// The ids of the temporary pins of `owner` still held, oldest first.
    fn temp_pins(&self, owner: &str) -> Result<Vec<TempPinId>, StoreError>;
    /// Pins `root` with `blocks` (as [`BlockStore::pin`] does) plus every block of the temporary pins `temps`, and
    /// releases those temporary pins, in one index transaction: there is no moment at which the blocks are
    /// unprotected, and a crash leaves either the temporary pins or the pin. An unknown id in `temps` is
    /// [`StoreError::UnknownTempPin`] and changes nothing.
    fn pin_with_temps(
        &self,
        root: &Cid,
        label: &str,
        blocks: &mut dyn Iterator<Item = Cid>,
        temps: &[TempPinId],
    ) -> Result<(), StoreError>;
    /// Totals.
    fn stats(&self) -> Result<StoreStats, StoreError>;
    /// Evicts least recently used unpinned blocks until unpinned bytes <= capacity. `put`, `put_many`, `put_temp`,
    /// `pin` (a replaced block set), `unpin`, `pin_with_temps` and the releases of temporary pins do this automatically when over capacity, evicting down to 90% of it in one
    /// go, so unpinned bytes never stay above the capacity.
    fn evict(&self) -> Result<EvictStats, StoreError>;
    /// Evicts least recently used unpinned blocks until unpinned bytes <= `target` (e.g. 0 when
    /// the disk is full: written data beats cached data).
    fn evict_to(&self, target: u64) -> Result<EvictStats, StoreError> {
        let _ = target;
        self.evict()
    }
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
pub(crate) fn select_victims<K>(
    mut candidates: Vec<(u64, u64, K)>,
    unpinned: u64,
    target: u64,
) -> Vec<(u64, K)> {
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
