//! The block service: the one door through which every part of ipfs-mount gets blocks.
//!
//! Order of lookup: identity CIDs (the data is the CID), the memory cache, the persistent
//! store, then the fetchers in order. Fetchers hand over [`VerifiedBlock`]s, hashed once where
//! the bytes came in, and those are written to the store without hashing again: a block is
//! verified exactly once (re-hashing on every read would halve read throughput). A CID whose
//! hash cannot be verified is refused before any fetch. Identical concurrent requests share
//! one fetch.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use ipfs_mount_fetch::{DagScope, FetchError, Fetcher, SinkControl, VerifiedBlock};
use ipfs_mount_ipld::cids;
use ipfs_mount_store::{BlockStore, StoreError, StoreStats, TempPinId};
use parking_lot::Mutex;
use tokio::sync::watch;

/// Why a block could not be had. Carries the CID so every log line can name it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BlockError {
    /// Every source answered that it does not have the block.
    #[error("block {cid} not found by any source")]
    NotFound { cid: Cid },
    /// We may not fetch (`--offline`) and the block is not local.
    #[error("block {cid} is not in the store and fetching is off (--offline)")]
    Offline { cid: Cid },
    /// Sources failed (timeouts, HTTP errors, broken streams, bytes that failed the
    /// fetcher's verification).
    #[error("block {cid} could not be fetched: {cause}")]
    Unavailable { cid: Cid, cause: String },
    /// No bytes could match the CID (a truncated digest), or a source returned another block.
    #[error("block {cid} failed verification: {cause}")]
    Invalid { cid: Cid, cause: String },
    /// The CID uses a hash function we cannot verify.
    #[error("block {cid} uses an unsupported hash: {cause}")]
    Unsupported { cid: Cid, cause: String },
    /// The local store failed.
    #[error("store error for block {cid}: {cause}")]
    Store { cid: Cid, cause: String },
}

impl BlockError {
    fn store(cid: &Cid, e: StoreError) -> Self {
        BlockError::Store {
            cid: *cid,
            cause: e.to_string(),
        }
    }
}

#[derive(Clone)]
struct BytesWeighter;

impl quick_cache::Weighter<Vec<u8>, Bytes> for BytesWeighter {
    fn weight(&self, _key: &Vec<u8>, val: &Bytes) -> u64 {
        // Never zero: zero-weight items are never evicted by quick_cache.
        val.len() as u64 + 64
    }
}

/// Blocks received but not yet stored, per bulk fetch.
const INGEST_QUEUE: usize = 32;
/// A block source that has not answered within this time gets company: the next source is
/// asked too (gateways and peers are hedged, not only tried in turn).
const HEDGE_AFTER: std::time::Duration = std::time::Duration::from_millis(750);
/// Range requests a fetcher may fail in a row before it is left alone for [`RANGE_COOL_DOWN`].
const RANGE_STRIKES: u32 = 3;
/// A range request whose first block below the root has not come within this time (or four
/// times the source's recent time for one block, if longer: a far gateway) is dropped (the
/// reader goes block by block), and the fetcher gets no range request for
/// [`RANGE_COOL_DOWN`]: a gateway that prepares the whole answer before sending any of it.
const RANGE_FIRST_BLOCK: std::time::Duration = std::time::Duration::from_millis(300);
const RANGE_COOL_DOWN: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a fetcher that answered a range with blocks outside it (it ignores
/// `entity-bytes`) gets no range request.
const RANGE_IGNORED_OFF: std::time::Duration = std::time::Duration::from_secs(600);
/// Blocks stored per index transaction during a bulk fetch.
const INGEST_BATCH: usize = 16;

type Waiter = watch::Receiver<Option<Result<Bytes, BlockError>>>;

/// Counters a test or `-v` log can read.
#[derive(Debug, Default)]
pub struct BlockStats {
    pub fetched_blocks: std::sync::atomic::AtomicU64,
    pub fetched_bytes: std::sync::atomic::AtomicU64,
    pub store_hits: std::sync::atomic::AtomicU64,
    pub memory_hits: std::sync::atomic::AtomicU64,
    /// Body bytes the `--serve` gateway sent from this block service (counted by src/serve).
    pub served_http_bytes: std::sync::atomic::AtomicU64,
    /// Bytes read from files under /ipfs and /ipns (counted by src/tree, with each file's).
    pub file_read_bytes: std::sync::atomic::AtomicU64,
}

pub struct BlockService {
    memory: quick_cache::sync::Cache<Vec<u8>, Bytes, BytesWeighter>,
    store: Arc<dyn BlockStore>,
    deferred: Arc<Deferred>,
    fetchers: Vec<Arc<dyn Fetcher>>,
    /// Per fetcher: how its range requests went, and whether it gets more.
    ranges: Vec<RangeSupport>,
    inflight: Mutex<HashMap<Vec<u8>, Waiter>>,
    offline: bool,
    pub stats: BlockStats,
}

/// A CAR request for the blocks one read of a file needs (`dag-scope=entity&entity-bytes=`),
/// so that the interior nodes and leaves on the way come in one round trip instead of one per
/// level. The expectations let a source that ignores the range be noticed at once: it would
/// send the file from its start.
#[derive(Debug, Clone)]
pub struct RangeFetch {
    /// First and last byte of the range (inclusive, as `entity-bytes` has it).
    pub first_byte: u64,
    pub last_byte: u64,
    /// The root's children that overlap the range: a stream that honours it sends one of
    /// them right after the root.
    pub expected_first: HashSet<Cid>,
    /// Bytes after which the stream is closed whatever it is (the range's leaves, its interior
    /// nodes and some slack).
    pub budget: u64,
}

impl BlockService {
    /// `memory_bytes` bounds the in-memory block cache (the daemon's RSS is dominated by it).
    pub fn new(
        store: Arc<dyn BlockStore>,
        fetchers: Vec<Arc<dyn Fetcher>>,
        offline: bool,
        memory_bytes: u64,
    ) -> Self {
        let estimated_items = (memory_bytes / (256 * 1024)).max(16) as usize;
        BlockService {
            memory: quick_cache::sync::Cache::with_weighter(
                estimated_items,
                memory_bytes,
                BytesWeighter,
            ),
            store,
            deferred: Arc::default(),
            ranges: fetchers.iter().map(|_| RangeSupport::default()).collect(),
            fetchers,
            inflight: Mutex::new(HashMap::new()),
            offline,
            stats: BlockStats::default(),
        }
    }

    /// Verified bytes each source behind the fetchers gave (each gateway URL, `bitswap`).
    pub fn fetched_by_source(&self) -> Vec<(String, u64)> {
        self.fetchers.iter().flat_map(|f| f.received()).collect()
    }

    pub fn is_offline(&self) -> bool {
        self.offline || self.fetchers.is_empty()
    }

    /// A block that is already local (memory or store), without any network traffic.
    pub fn get_local(&self, cid: &Cid) -> Result<Option<Bytes>, BlockError> {
        if let Some(data) = cids::identity_data(cid) {
            return Ok(Some(Bytes::copy_from_slice(data)));
        }
        let key = cids::multihash_key(cid);
        if let Some(b) = self.deferred_get(&key) {
            return Ok(Some(b));
        }
        if let Some(b) = self.memory.get(&key) {
            self.stats
                .memory_hits
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(Some(b));
        }
        match self.store.get(cid).map_err(|e| BlockError::store(cid, e))? {
            Some(b) => {
                self.stats
                    .store_hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.memory.insert(key, b.clone());
                Ok(Some(b))
            }
            None => Ok(None),
        }
    }

    /// True when the block is local (no fetch needed).
    pub fn has_local(&self, cid: &Cid) -> bool {
        cids::identity_data(cid).is_some()
            || self.deferred_get(&cids::multihash_key(cid)).is_some()
            || self.memory.get(&cids::multihash_key(cid)).is_some()
            || self.store.has(cid).unwrap_or(false)
    }

    /// True when the persistent store has the block (the memory cache aside).
    pub fn has_stored(&self, cid: &Cid) -> bool {
        cids::identity_data(cid).is_some() || self.store.has(cid).unwrap_or(false)
    }

    /// Verified bytes of a block, fetching it if needed.
    pub async fn get(&self, cid: &Cid) -> Result<Bytes, BlockError> {
        self.get_reporting(cid).await.map(|(b, _)| b)
    }

    /// [`BlockService::get`], also saying whether this call fetched the block (false when it
    /// was local or another caller's fetch brought it): what fetch accounting charges.
    pub async fn get_reporting(&self, cid: &Cid) -> Result<(Bytes, bool), BlockError> {
        if let Some(b) = self.get_local(cid)? {
            return Ok((b, false));
        }
        if self.is_offline() {
            return Err(BlockError::Offline { cid: *cid });
        }
        VerifiedBlock::checkable(cid).map_err(|e| verify_error(cid, e))?;
        let key = cids::multihash_key(cid);
        loop {
            // Either join a fetch already under way or become the one who fetches.
            let (waiter, sender) = {
                let mut inflight = self.inflight.lock();
                match inflight.get(&key) {
                    Some(rx) => (Some(rx.clone()), None),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        inflight.insert(key.clone(), rx);
                        (None, Some(tx))
                    }
                }
            };
            if let Some(mut rx) = waiter {
                let result = rx.wait_for(|v| v.is_some()).await.map(|v| v.clone());
                match result {
                    Ok(Some(r)) => return r.map(|b| (b, false)),
                    // The fetching task went away without an answer: try again ourselves.
                    _ => continue,
                }
            }
            let tx = sender.expect("either a waiter or a sender");
            // The guard removes the in-flight entry even if this future is dropped midway.
            let _guard = InflightGuard {
                service: self,
                key: &key,
            };
            let result = self.fetch_and_store(cid).await;
            let _ = tx.send(Some(result.clone().map(|(b, _)| b)));
            return result;
        }
    }

    /// [`BlockService::get`] taking the CID by value, for futures that must own their inputs.
    pub async fn get_owned(&self, cid: Cid) -> Result<Bytes, BlockError> {
        self.get(&cid).await
    }

    /// The block and whether it was fetched (not found local after all).
    async fn fetch_and_store(&self, cid: &Cid) -> Result<(Bytes, bool), BlockError> {
        // Another task may have stored it while we waited for the in-flight lock.
        if let Some(b) = self.get_local(cid)? {
            return Ok((b, false));
        }
        let mut last_error: Option<BlockError> = None;
        let mut all_not_found = true;
        // Sources are tried in order, but hedged: when one has not answered within
        // HEDGE_AFTER the next starts too, and the first block wins.
        let mut running = futures::stream::FuturesUnordered::new();
        let mut next = 0usize;
        let start = |i: usize| {
            let fetcher = &self.fetchers[i];
            async move {
                let t = std::time::Instant::now();
                let result = fetcher.fetch_block(cid).await;
                (i, t.elapsed(), result)
            }
        };
        if let Some(first) = self.fetchers.first().map(|_| start(0)) {
            running.push(first);
            next = 1;
        }
        while !running.is_empty() {
            let hedge = tokio::time::sleep(HEDGE_AFTER);
            let outcome = tokio::select! {
                r = futures::StreamExt::next(&mut running) => r,
                _ = hedge, if next < self.fetchers.len() => {
                    running.push(start(next));
                    next += 1;
                    continue;
                }
            };
            let Some((i, took, result)) = outcome else {
                break;
            };
            let fetcher = &self.fetchers[i];
            match result {
                Ok(block) if block.is_for(cid) => {
                    self.ranges[i].observe_block(took);
                    return self.store_fetched(block).map(|b| (b, true));
                }
                Ok(block) => {
                    // Verified, but not the block asked for: a fetcher bug, never stored.
                    let cause = format!("{} returned block {}", fetcher.name(), block.cid());
                    tracing::warn!(%cid, "discarding block: {cause}");
                    all_not_found = false;
                    last_error = Some(BlockError::Invalid { cid: *cid, cause });
                }
                Err(FetchError::NotFound) => {}
                Err(e) => {
                    all_not_found = false;
                    tracing::warn!(%cid, source = fetcher.name(), "fetch failed: {e}");
                    last_error = Some(BlockError::Unavailable {
                        cid: *cid,
                        cause: e.to_string(),
                    });
                }
            }
            // A source gave up: the next one starts at once.
            if running.is_empty() && next < self.fetchers.len() {
                running.push(start(next));
                next += 1;
            }
        }
        if all_not_found {
            return Err(BlockError::NotFound { cid: *cid });
        }
        Err(last_error.unwrap_or(BlockError::NotFound { cid: *cid }))
    }

    /// Stores a block fetched (and so verified) by a fetcher; returns its bytes.
    fn store_fetched(&self, block: VerifiedBlock) -> Result<Bytes, BlockError> {
        let (cid, data) = block.into_parts();
        self.stats
            .fetched_blocks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.stats
            .fetched_bytes
            .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.put_verified(&cid, data.clone())?;
        Ok(data)
    }

    /// Store a block whose bytes the caller computed or checked against `cid` itself (fetched
    /// blocks take the [`VerifiedBlock`] path).
    pub fn put_verified(&self, cid: &Cid, data: Bytes) -> Result<(), BlockError> {
        if cids::identity_data(cid).is_some() {
            return Ok(());
        }
        self.store
            .put(cid, &data)
            .map_err(|e| BlockError::store(cid, e))?;
        self.memory.insert(cids::multihash_key(cid), data);
        Ok(())
    }

    /// A new temporary pin owned by `owner` (e.g. `"dataset:sales"`, `"import"`): blocks put
    /// through it with [`BlockService::put_temp`] are protected from eviction from their first byte
    /// until it is released or turned into a pin ([`BlockService::pin_with_temps`]). It survives a
    /// crash; [`BlockService::release_temp_owner`] frees what a crashed run left.
    pub fn temp_pin(&self, owner: &str) -> Result<TempPinId, StoreError> {
        self.store.temp_pin(owner)
    }

    /// Stores blocks whose bytes the caller has already verified (or computed) against their CIDs
    /// and adds them to the temporary pin `pin`, with no moment at which they are evictable. Also
    /// makes them readable from the memory cache, like [`BlockService::put_verified`].
    pub fn put_temp(&self, pin: TempPinId, blocks: &[(Cid, Bytes)]) -> Result<(), StoreError> {
        put_temp_evicting(&*self.store, pin, blocks)?;
        for (cid, data) in blocks {
            if cids::identity_data(cid).is_none() {
                self.memory.insert(cids::multihash_key(cid), data.clone());
            }
        }
        Ok(())
    }

    /// Like [`put_temp`](Self::put_temp), but the store write happens later, on a background
    /// thread (in the order given): the blocks are readable through this service at once. For
    /// a writer whose bytes are already durable elsewhere (a dataset's journal holds them), so
    /// that closing a small file costs no index transaction or block file. Returns `false`,
    /// doing nothing, when too many bytes are waiting already: the caller stores them itself.
    pub fn put_temp_later(&self, pin: TempPinId, blocks: Vec<(Cid, Bytes)>) -> bool {
        let d = &self.deferred;
        let mut st = d.state.lock();
        if st.bytes >= DEFERRED_LIMIT {
            return false;
        }
        if !st.writer_started {
            let (deferred, store) = (self.deferred.clone(), self.store.clone());
            let spawned = std::thread::Builder::new()
                .name("block-writer".into())
                .spawn(move || deferred.write_in_background(&*store));
            match spawned {
                Ok(handle) => st.writer = Some(handle),
                Err(e) => {
                    tracing::warn!("cannot start the block writer thread: {e}");
                    return false;
                }
            }
            st.writer_started = true;
        }
        for (cid, data) in &blocks {
            st.bytes += data.len();
            let entry = st
                .blocks
                .entry(cids::multihash_key(cid))
                .or_insert_with(|| (data.clone(), 0));
            entry.1 += 1;
        }
        st.queue.push_back((pin, blocks));
        d.wake.notify_one();
        true
    }

    /// Stores everything [`put_temp_later`](Self::put_temp_later) queued so far (on this
    /// thread, together with the background writer) and returns once it is all in the store.
    pub fn flush_deferred(&self) -> Result<(), StoreError> {
        self.deferred.flush(&*self.store)
    }

    /// Forgets the blocks not yet stored, as a crash would (tests of journal replay).
    #[cfg(test)]
    pub fn lose_deferred(&self) {
        let mut st = self.deferred.state.lock();
        st.queue.clear();
        st.blocks.clear();
        st.bytes = 0;
    }

    fn deferred_get(&self, key: &[u8]) -> Option<Bytes> {
        let st = self.deferred.state.lock();
        if st.blocks.is_empty() {
            return None;
        }
        st.blocks.get(key).map(|(b, _)| b.clone())
    }

    /// Adds blocks (present or not, e.g. reused leaves) to the temporary pin `pin`.
    pub fn temp_pin_add(
        &self,
        pin: TempPinId,
        blocks: &mut dyn Iterator<Item = Cid>,
    ) -> Result<(), StoreError> {
        self.store.temp_pin_add(pin, blocks)
    }

    /// Releases a temporary pin (its blocks become ordinary cache); `false` if it was unknown.
    pub fn release_temp(&self, pin: TempPinId) -> Result<bool, StoreError> {
        self.store.release_temp(pin)
    }

    /// Releases every temporary pin of `owner`; returns how many.
    pub fn release_temp_owner(&self, owner: &str) -> Result<u64, StoreError> {
        self.store.release_temp_owner(owner)
    }

    /// The temporary pins of `owner` still held.
    pub fn temp_pins(&self, owner: &str) -> Result<Vec<TempPinId>, StoreError> {
        self.store.temp_pins(owner)
    }

    /// Pins `root` with `blocks` plus the blocks of the temporary pins `temps`, and releases
    /// them, in one store transaction.
    pub fn pin_with_temps(
        &self,
        root: &Cid,
        label: &str,
        blocks: &mut dyn Iterator<Item = Cid>,
        temps: &[TempPinId],
    ) -> Result<(), StoreError> {
        self.store.pin_with_temps(root, label, blocks, temps)
    }

    /// Pins `root` and `blocks` (its DAG, computed by the caller).
    pub fn pin(
        &self,
        root: &Cid,
        label: &str,
        blocks: &mut dyn Iterator<Item = Cid>,
    ) -> Result<(), StoreError> {
        self.store.pin(root, label, blocks)
    }

    /// Removes the pin of `root`; `false` if there was none.
    pub fn unpin(&self, root: &Cid) -> Result<bool, StoreError> {
        self.store.unpin(root)
    }

    /// The store's totals.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        self.store.stats()
    }

    /// Evicts unpinned blocks down to `target` bytes (0 on a full disk).
    pub fn evict_to(&self, target: u64) -> Result<ipfs_mount_store::EvictStats, StoreError> {
        self.store.evict_to(target)
    }

    /// Protects `cid` under the temporary pin `temp` (present or not: an absent block is
    /// protected as soon as it arrives) and returns its bytes when the store has it. For a
    /// walk that must leave every block of a DAG in the store, not only in memory (`pin add`).
    pub fn hold(&self, temp: TempPinId, cid: &Cid) -> Result<Option<Bytes>, BlockError> {
        if cids::identity_data(cid).is_some() {
            return self.get_local(cid);
        }
        self.store
            .temp_pin_add(temp, &mut std::iter::once(*cid))
            .map_err(|e| BlockError::store(cid, e))?;
        match self.store.get(cid).map_err(|e| BlockError::store(cid, e))? {
            Some(b) => {
                self.stats
                    .store_hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(Some(b))
            }
            None => Ok(None),
        }
    }

    /// Garbage collection: deletes every stored block that no pin and no temporary pin holds
    /// (under the store's index lock, so nothing pinned meanwhile is touched) and empties the
    /// memory cache of what it may still hold of them. With `dry_run`, only counts them.
    pub fn collect_garbage(
        &self,
        dry_run: bool,
    ) -> Result<ipfs_mount_store::EvictStats, StoreError> {
        if dry_run {
            let st = self.store.stats()?;
            return Ok(ipfs_mount_store::EvictStats {
                blocks: st.blocks - st.pinned_blocks,
                bytes: st.unpinned_bytes(),
            });
        }
        let freed = self.store.evict_to(0)?;
        self.memory.clear();
        Ok(freed)
    }

    /// Every pin of the store.
    pub fn pins(&self) -> Result<Vec<ipfs_mount_store::PinInfo>, StoreError> {
        self.store.pins()
    }

    /// Fetch many blocks of a DAG in one request (a CAR stream), storing each as it arrives
    /// (the fetcher verified it). Returns how many new blocks were stored. A broken stream is an error, but what
    /// arrived before the break is kept.
    pub async fn fetch_dag(
        self: &Arc<Self>,
        root: &Cid,
        scope: DagScope,
    ) -> Result<u64, BlockError> {
        self.fetch_dag_notify(root, scope, None).await
    }

    /// [`BlockService::fetch_dag`], waking `progress` each time a block becomes readable.
    ///
    /// Two stages, so that receiving and storing overlap: this task drives the fetcher (which
    /// parses and verifies), a blocking worker caches and stores; a bounded channel between
    /// them keeps memory flat when the disk is slower than the network.
    pub async fn fetch_dag_notify(
        self: &Arc<Self>,
        root: &Cid,
        scope: DagScope,
        progress: Option<Arc<tokio::sync::Notify>>,
    ) -> Result<u64, BlockError> {
        self.fetch_dag_into(root, scope, progress, None, None, None)
            .await
    }

    /// [`BlockService::fetch_dag_notify`], also adding the bytes of each block it stores to
    /// `charged` (the fetch accounting of the file read).
    pub async fn fetch_dag_charged(
        self: &Arc<Self>,
        root: &Cid,
        scope: DagScope,
        progress: Option<Arc<tokio::sync::Notify>>,
        charged: Option<Arc<std::sync::atomic::AtomicU64>>,
    ) -> Result<u64, BlockError> {
        self.fetch_dag_into(root, scope, progress, None, charged, None)
            .await
    }

    /// Whether fetcher `i` is asked for ranges.
    fn takes_ranges(&self, i: usize) -> bool {
        self.ranges[i].usable()
    }

    /// The blocks below the file `root` that a read of `range` needs, in one CAR request,
    /// charged to `charged`. Best effort: what arrives is stored, and the reader fetches
    /// whatever is still missing block by block. Sources that ignored an earlier range
    /// request are not asked; none left is `Ok(0)`.
    pub async fn fetch_range(
        self: &Arc<Self>,
        root: &Cid,
        range: &RangeFetch,
        charged: Option<Arc<AtomicU64>>,
    ) -> Result<u64, BlockError> {
        let scope = DagScope::Entity {
            bytes: Some((range.first_byte, Some(range.last_byte))),
        };
        if !(0..self.fetchers.len()).any(|i| self.takes_ranges(i)) {
            return Ok(0);
        }
        self.fetch_dag_into(root, scope, None, None, charged, Some(range))
            .await
    }

    /// [`BlockService::fetch_dag`] of the whole DAG with every block stored under the temporary
    /// pin `temp` (protected from its arrival on: `pin add` of a DAG larger than the cache).
    pub async fn fetch_dag_held(
        self: &Arc<Self>,
        root: &Cid,
        temp: TempPinId,
    ) -> Result<u64, BlockError> {
        self.fetch_dag_into(root, DagScope::All, None, Some(temp), None, None)
            .await
    }

    async fn fetch_dag_into(
        self: &Arc<Self>,
        root: &Cid,
        scope: DagScope,
        progress: Option<Arc<tokio::sync::Notify>>,
        hold: Option<TempPinId>,
        charged: Option<Arc<AtomicU64>>,
        range: Option<&RangeFetch>,
    ) -> Result<u64, BlockError> {
        if self.is_offline() {
            return Err(BlockError::Offline { cid: *root });
        }
        VerifiedBlock::checkable(root).map_err(|e| verify_error(root, e))?;
        let mut last_error = None;
        for (i, fetcher) in self.fetchers.iter().enumerate() {
            if range.is_some() && !self.takes_ranges(i) {
                continue;
            }
            let (tx, rx) = std::sync::mpsc::sync_channel::<VerifiedBlock>(INGEST_QUEUE);
            let worker = {
                let service = self.clone();
                let root = *root;
                let progress = progress.clone();
                let charged = charged.clone();
                tokio::task::spawn_blocking(move || {
                    service.ingest(&root, rx, progress.as_deref(), hold, charged.as_deref())
                })
            };
            let mut check = range.map(|r| RangeCheck::new(root, r));
            let below_root = AtomicBool::new(false);
            let result = {
                let mut sink = |block: VerifiedBlock| -> SinkControl {
                    if let Some(check) = check.as_mut() {
                        match check.admit(&block) {
                            Admit::Take => {
                                if check.seen_child {
                                    below_root.store(true, Ordering::Relaxed);
                                }
                            }
                            Admit::Enough => return SinkControl::Stop,
                            Admit::OutOfRange => {
                                tracing::info!(
                                    %root,
                                    source = fetcher.name(),
                                    "the source ignores entity-bytes: no range request to it for {RANGE_IGNORED_OFF:?}"
                                );
                                self.ranges[i].off_for(RANGE_IGNORED_OFF);
                                return SinkControl::Stop;
                            }
                        }
                    }
                    // Gateways that ignore entity-bytes resend what we have: skip it.
                    if self.has_local(block.cid()) {
                        return SinkControl::Continue;
                    }
                    match tx.send(block) {
                        Ok(()) => SinkControl::Continue,
                        Err(_) => SinkControl::Stop, // the worker stopped: the store failed
                    }
                };
                let fetch = fetcher.fetch_car(root, scope, &mut sink);
                if range.is_some() {
                    let deadline = self.ranges[i].first_block_deadline();
                    tokio::pin!(fetch);
                    tokio::select! {
                        r = &mut fetch => r,
                        _ = tokio::time::sleep(deadline) => {
                            if below_root.load(Ordering::Relaxed) {
                                fetch.await
                            } else {
                                tracing::info!(
                                    %root,
                                    source = fetcher.name(),
                                    "a range request brought nothing below the root in {deadline:?}: \
                                     none to this source for {RANGE_COOL_DOWN:?}"
                                );
                                self.ranges[i].off_for(RANGE_COOL_DOWN);
                                Err(FetchError::Timeout)
                            }
                        }
                    }
                } else {
                    fetch.await
                }
            };
            drop(tx);
            let stored = match worker.await {
                Ok(r) => r?,
                Err(e) => {
                    return Err(BlockError::Store {
                        cid: *root,
                        cause: format!("ingest worker failed: {e}"),
                    })
                }
            };
            if range.is_some() {
                // A source that cannot answer ranges (no CAR support, say) costs the reader a
                // round trip each time: after a few failures in a row it is left alone a while.
                match &result {
                    Ok(_) => self.ranges[i].succeeded(),
                    Err(_) => self.ranges[i].failed(),
                }
                // One source per range request: the reader's block-wise fetch, which hedges
                // across sources, does better than another source's range after a failure.
                return match result {
                    Ok(_) => Ok(stored),
                    Err(e) => Err(BlockError::Unavailable {
                        cid: *root,
                        cause: e.to_string(),
                    }),
                };
            }
            match result {
                // A range request the source did not honour is over: the reader fetches
                // the rest block by block (another source would cost one more round trip).
                Ok(_) => return Ok(stored),
                Err(e) => {
                    tracing::debug!(%root, source = fetcher.name(), "CAR fetch failed: {e}");
                    last_error = Some(BlockError::Unavailable {
                        cid: *root,
                        cause: e.to_string(),
                    });
                }
            }
        }
        Err(last_error.unwrap_or(BlockError::NotFound { cid: *root }))
    }

    /// The second stage of a bulk fetch: make readable, store in small batches.
    fn ingest(
        &self,
        root: &Cid,
        rx: std::sync::mpsc::Receiver<VerifiedBlock>,
        progress: Option<&tokio::sync::Notify>,
        hold: Option<TempPinId>,
        charged: Option<&std::sync::atomic::AtomicU64>,
    ) -> Result<u64, BlockError> {
        let store = |batch: &[(Cid, Bytes)]| match hold {
            Some(temp) => put_temp_evicting(&*self.store, temp, batch),
            None => self.store.put_many(batch),
        };
        let mut batch: Vec<(Cid, Bytes)> = Vec::with_capacity(INGEST_BATCH);
        let mut stored = 0u64;
        for block in rx {
            let (cid, data) = block.into_parts();
            self.stats
                .fetched_blocks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.stats
                .fetched_bytes
                .fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if let Some(c) = charged {
                c.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            // Readable at once from memory; stored in small batches.
            self.memory.insert(cids::multihash_key(&cid), data.clone());
            if let Some(p) = progress {
                p.notify_waiters();
            }
            batch.push((cid, data));
            if batch.len() >= INGEST_BATCH {
                store(&batch).map_err(|e| BlockError::store(root, e))?;
                stored += batch.len() as u64;
                batch.clear();
            }
        }
        if !batch.is_empty() {
            store(&batch).map_err(|e| BlockError::store(root, e))?;
            stored += batch.len() as u64;
        }
        Ok(stored)
    }
}

/// What one fetcher has shown of its range requests.
#[derive(Default)]
struct RangeSupport {
    /// Failed range requests in a row.
    strikes: AtomicU32,
    /// No range request before this instant.
    off_until: Mutex<Option<std::time::Instant>>,
    /// Recent time for one block from this source (µs, moving average; 0: none yet).
    block_micros: AtomicU64,
}

impl RangeSupport {
    fn usable(&self) -> bool {
        self.off_until
            .lock()
            .is_none_or(|t| std::time::Instant::now() >= t)
    }

    fn off_for(&self, d: std::time::Duration) {
        *self.off_until.lock() = Some(std::time::Instant::now() + d);
        self.strikes.store(0, Ordering::Relaxed);
    }

    fn failed(&self) {
        if self.strikes.fetch_add(1, Ordering::Relaxed) + 1 >= RANGE_STRIKES {
            self.off_for(RANGE_COOL_DOWN);
        }
    }

    fn succeeded(&self) {
        self.strikes.store(0, Ordering::Relaxed);
    }

    fn observe_block(&self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self
            .block_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 { us } else { (old * 7 + us) / 8 })
            });
    }

    /// How long a range request may take to bring its first block below the root.
    fn first_block_deadline(&self) -> std::time::Duration {
        let one_block = std::time::Duration::from_micros(self.block_micros.load(Ordering::Relaxed));
        RANGE_FIRST_BLOCK.max(one_block.saturating_mul(4))
    }
}

/// What a range stream is allowed to send: the root, then (first) one of the root's children
/// that overlap the range, and no more than the budget.
struct RangeCheck<'a> {
    root: Cid,
    range: &'a RangeFetch,
    seen_child: bool,
    bytes: u64,
}

enum Admit {
    Take,
    /// The budget is spent: close the stream.
    Enough,
    /// The first block after the root is outside the range: the source ignores it.
    OutOfRange,
}

impl<'a> RangeCheck<'a> {
    fn new(root: &Cid, range: &'a RangeFetch) -> Self {
        RangeCheck {
            root: *root,
            range,
            seen_child: false,
            bytes: 0,
        }
    }

    fn admit(&mut self, block: &VerifiedBlock) -> Admit {
        if self.bytes >= self.range.budget {
            return Admit::Enough;
        }
        self.bytes += block.data().len() as u64;
        if !self.seen_child && *block.cid() != self.root {
            self.seen_child = true;
            if !self.range.expected_first.contains(block.cid()) {
                return Admit::OutOfRange;
            }
        }
        Admit::Take
    }
}

/// A CID no bytes could be verified against.
/// How long the background writer waits for more closes before storing what it has, and how
/// many files' blocks make it store at once.
const WRITER_GATHER: std::time::Duration = std::time::Duration::from_millis(5);
const WRITER_BATCH: usize = 256;

/// Bytes [`BlockService::put_temp_later`] may hold before writers store their blocks
/// themselves (the back-pressure that bounds its memory).
const DEFERRED_LIMIT: usize = 64 << 20;

/// Stores blocks under a temporary pin; on a full disk, drops the unpinned cache and tries once
/// more (blocks someone wrote beat cached ones), and if that is not enough the writer gets
/// ENOSPC.
fn put_temp_evicting(
    store: &dyn BlockStore,
    pin: TempPinId,
    blocks: &[(Cid, Bytes)],
) -> Result<(), StoreError> {
    match put_temp_many_evicting(store, &[(pin, blocks)])?.first() {
        Some(&unknown) => Err(StoreError::UnknownTempPin(unknown)),
        None => Ok(()),
    }
}

/// [`put_temp_evicting`] for several pins at once; the ids of pins that no longer exist.
fn put_temp_many_evicting(
    store: &dyn BlockStore,
    batches: &[(TempPinId, &[(Cid, Bytes)])],
) -> Result<Vec<TempPinId>, StoreError> {
    let e = match store.put_temp_many(batches) {
        Ok(unknown) => return Ok(unknown),
        Err(e) => e,
    };
    if !e.is_no_space() {
        return Err(e);
    }
    let freed = store.evict_to(0).unwrap_or_default();
    if freed.bytes == 0 {
        return Err(e);
    }
    tracing::warn!(
        freed = freed.bytes,
        "the store's disk is full: evicted the unpinned cache"
    );
    store.put_temp_many(batches)
}

/// Blocks acknowledged to writers and not yet in the store (see
/// [`BlockService::put_temp_later`]).
#[derive(Default)]
struct Deferred {
    state: Mutex<DeferredState>,
    /// Signalled when work is queued.
    wake: parking_lot::Condvar,
    /// Signalled when a batch is done.
    done: parking_lot::Condvar,
}

#[derive(Default)]
struct DeferredState {
    /// By multihash key, with how many queued batches hold it: readable while they wait.
    blocks: HashMap<Vec<u8>, (Bytes, usize)>,
    queue: VecDeque<(TempPinId, Vec<(Cid, Bytes)>)>,
    bytes: usize,
    /// Batches taken out of the queue and being stored.
    writing: usize,
    writer_started: bool,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Set when the service goes away: the writer stores what is left and ends.
    closing: bool,
}

impl Deferred {
    /// Takes every queued batch (marking them as being written).
    fn take(st: &mut DeferredState) -> Vec<(TempPinId, Vec<(Cid, Bytes)>)> {
        st.writing += 1;
        st.queue.drain(..).collect()
    }

    /// Stores taken batches; those that failed go back to the front of the queue.
    fn store(
        &self,
        store: &dyn BlockStore,
        batches: Vec<(TempPinId, Vec<(Cid, Bytes)>)>,
    ) -> Result<(), StoreError> {
        /// Ends the "being written" mark however this returns (a panic included), so that
        /// `flush` never waits for a batch nobody is writing.
        struct Writing<'a>(&'a Deferred);
        impl Drop for Writing<'_> {
            fn drop(&mut self) {
                self.0.state.lock().writing -= 1;
                self.0.done.notify_all();
            }
        }
        let _writing = Writing(self);
        // All of them in one index transaction. A pin released before its blocks were written
        // is skipped: nobody needs them any more.
        let refs: Vec<(TempPinId, &[(Cid, Bytes)])> =
            batches.iter().map(|(p, b)| (*p, &b[..])).collect();
        let result = put_temp_many_evicting(store, &refs);
        drop(refs);
        let (stored, left, failed) = match result {
            Ok(_) => (batches, Vec::new(), None),
            Err(e) => (Vec::new(), batches, Some(e)),
        };
        let mut st = self.state.lock();
        for (_, blocks) in stored {
            for (cid, data) in blocks {
                st.bytes = st.bytes.saturating_sub(data.len());
                let key = cids::multihash_key(&cid);
                if let Some(entry) = st.blocks.get_mut(&key) {
                    entry.1 -= 1;
                    if entry.1 == 0 {
                        st.blocks.remove(&key);
                    }
                }
            }
        }
        for batch in left.into_iter().rev() {
            st.queue.push_front(batch);
        }
        failed.map_or(Ok(()), Err)
    }

    fn flush(&self, store: &dyn BlockStore) -> Result<(), StoreError> {
        loop {
            let batches = {
                let mut st = self.state.lock();
                if st.queue.is_empty() {
                    if st.writing == 0 {
                        return Ok(());
                    }
                    self.done.wait(&mut st);
                    continue;
                }
                Self::take(&mut st)
            };
            self.store(store, batches)?;
        }
    }

    /// The background writer: stores queued batches as they come, retrying after a failure
    /// (a full disk) every second; the blocks stay readable meanwhile.
    fn write_in_background(&self, store: &dyn BlockStore) {
        loop {
            let batches = {
                let mut st = self.state.lock();
                while st.queue.is_empty() && !st.closing {
                    self.wake.wait(&mut st);
                }
                if st.queue.is_empty() {
                    return;
                }
                // Let a burst of closes (`cp -r` of small files) gather: one index transaction
                // for many files costs far less than one each.
                let until = std::time::Instant::now() + WRITER_GATHER;
                while st.queue.len() < WRITER_BATCH && !st.closing {
                    if self.wake.wait_until(&mut st, until).timed_out() {
                        break;
                    }
                }
                Self::take(&mut st)
            };
            if let Err(e) = self.store(store, batches) {
                tracing::warn!("storing written blocks failed (retried; they stay readable): {e}");
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
    }
}

impl Drop for BlockService {
    fn drop(&mut self) {
        if let Err(e) = self.deferred.flush(&*self.store) {
            tracing::error!(
                "written blocks not stored at shutdown (a dataset journal keeps them): {e}"
            );
        }
        let writer = {
            let mut st = self.deferred.state.lock();
            st.closing = true;
            st.writer.take()
        };
        self.deferred.wake.notify_all();
        // The writer holds the store: it is released when this returns.
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

fn verify_error(cid: &Cid, e: cids::VerifyError) -> BlockError {
    match e {
        cids::VerifyError::UnsupportedHash(_) => BlockError::Unsupported {
            cid: *cid,
            cause: e.to_string(),
        },
        other => BlockError::Invalid {
            cid: *cid,
            cause: other.to_string(),
        },
    }
}

struct InflightGuard<'a> {
    service: &'a BlockService,
    key: &'a Vec<u8>,
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.service.inflight.lock().remove(self.key);
    }
}

/// The block service as the block source of the UnixFS planners
/// ([`ipfs_mount_ipld::reader`]): local reads without network, fetches through the fetchers.
impl ipfs_mount_ipld::reader::BlockGetter for BlockService {
    type Error = BlockError;

    fn get_local(&self, cid: &Cid) -> Result<Option<Bytes>, BlockError> {
        BlockService::get_local(self, cid)
    }

    fn get(&self, cid: Cid) -> impl std::future::Future<Output = Result<Bytes, BlockError>> + Send {
        self.get_owned(cid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipfs_mount_fetch::MockFetcher;
    use ipfs_mount_store::MemoryStore;

    fn raw(i: u8, len: usize) -> (Cid, Bytes) {
        let data = Bytes::from(vec![i; len]);
        let mh = cid::multihash::Multihash::wrap(0x12, &sha2_256(&data)).unwrap();
        (Cid::new_v1(0x55, mh), data)
    }

    fn sha2_256(data: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(data).into()
    }

    fn mock_service(blocks: &[(Cid, Bytes)]) -> (BlockService, Arc<MemoryStore>, Arc<MockFetcher>) {
        let store = Arc::new(MemoryStore::new(1 << 20));
        let mock = Arc::new(MockFetcher::with_blocks(blocks.iter().cloned()));
        let fetchers: Vec<Arc<dyn Fetcher>> = vec![mock.clone()];
        let service = BlockService::new(store.clone(), fetchers, false, 1 << 20);
        (service, store, mock)
    }

    /// A range request to a source that ignores `entity-bytes` (the mock sends the file from
    /// its start) ends at the first block outside the range, stores nothing of it, and that
    /// source gets no range request after; an answer that starts where the range does is
    /// taken until the budget is spent.
    #[tokio::test]
    async fn range_requests_notice_a_source_that_ignores_them() {
        use ipfs_mount_ipld::builder::{build_file, ImportProfile};
        use ipfs_mount_ipld::dagpb;
        let mut profile = ImportProfile::unixfs_v1_2025();
        profile.chunk_size = 1024;
        profile.max_links = 4;
        let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 % 251) as u8).collect();
        let f = build_file(&data, &profile);
        let block = |c: &Cid| f.blocks.iter().find(|(b, _)| b == c).unwrap().1.clone();
        let children: Vec<Cid> = dagpb::decode(&block(&f.root))
            .unwrap()
            .links
            .iter()
            .map(|l| l.cid)
            .collect();
        assert_eq!(children.len(), 4, "three levels below the root");
        let setup = || {
            let (service, store, mock) = mock_service(&f.blocks);
            mock.set_links(|cid, data| {
                if cid.codec() == 0x70 {
                    dagpb::decode(data)
                        .map(|n| n.links.iter().map(|l| l.cid).collect())
                        .unwrap_or_default()
                } else {
                    vec![]
                }
            });
            (Arc::new(service), store, mock)
        };

        // The last quarter of the file: a stream from the start is out of range at once.
        let (service, store, mock) = setup();
        let last = RangeFetch {
            first_byte: 60_000,
            last_byte: 60_100,
            expected_first: [children[3]].into(),
            budget: 1 << 20,
        };
        service.fetch_range(&f.root, &last, None).await.unwrap();
        assert!(
            !store.has(&children[0]).unwrap(),
            "an out-of-range block was stored"
        );
        assert!(!service.takes_ranges(0));
        assert_eq!(service.fetch_range(&f.root, &last, None).await.unwrap(), 0);
        assert_eq!(
            mock.car_calls(),
            1,
            "asked again for a range after it was ignored"
        );

        // The first bytes: the same stream is in range, and ends with the budget.
        let (service, store, mock) = setup();
        let first = RangeFetch {
            first_byte: 0,
            last_byte: 99,
            expected_first: [children[0]].into(),
            budget: 4096,
        };
        let stored = service.fetch_range(&f.root, &first, None).await.unwrap();
        assert!(store.has(&children[0]).unwrap());
        let bytes = store.stats().unwrap().unpinned_bytes();
        assert!(
            stored >= 3 && bytes <= 4096 + 1024,
            "{stored} blocks, {bytes} B for a budget of 4096 B"
        );
        assert!(service.takes_ranges(0));
        // A source that fails range requests is left alone after a few in a row.
        for _ in 0..RANGE_STRIKES {
            mock.fail_next(1, None);
            assert!(service.fetch_range(&f.root, &first, None).await.is_err());
        }
        assert!(!service.takes_ranges(0));
        assert_eq!(mock.car_calls(), 1 + RANGE_STRIKES as u64);

        // One that sends nothing below the root in time (it prepares the whole answer
        // first) is dropped at the deadline and left alone.
        let (service, _store, mock) = setup();
        mock.set_latency(Some(RANGE_FIRST_BLOCK * 10));
        let t = std::time::Instant::now();
        assert!(service.fetch_range(&f.root, &first, None).await.is_err());
        assert!(t.elapsed() < RANGE_FIRST_BLOCK * 5, "{:?}", t.elapsed());
        assert!(!service.takes_ranges(0));
    }

    /// The first-block deadline of a range request stretches with the source's recent block
    /// times (a far gateway), never below [`RANGE_FIRST_BLOCK`].
    #[test]
    fn range_deadline_follows_the_source() {
        use std::time::Duration;
        let r = RangeSupport::default();
        assert_eq!(r.first_block_deadline(), RANGE_FIRST_BLOCK);
        r.observe_block(Duration::from_millis(5));
        assert_eq!(r.first_block_deadline(), RANGE_FIRST_BLOCK);
        let far = RangeSupport::default();
        far.observe_block(Duration::from_millis(200));
        assert_eq!(far.first_block_deadline(), Duration::from_millis(800));
        for _ in 0..64 {
            far.observe_block(Duration::from_millis(20));
        }
        assert!(far.first_block_deadline() < Duration::from_millis(400));
    }

    /// A source serving wrong bytes: they are never returned nor stored, on either path, and
    /// the error names the CID; the right bytes later are accepted.
    #[tokio::test]
    async fn wrong_bytes_are_never_stored_or_returned() {
        let blocks: Vec<(Cid, Bytes)> = (0..4).map(|i| raw(i, 300)).collect();
        let (service, store, mock) = mock_service(&blocks);
        let bad = blocks[2].0;
        mock.set_wrong_bytes(bad, true);
        match service.get(&bad).await {
            Err(BlockError::Unavailable { cid, cause }) => {
                assert_eq!(cid, bad);
                assert!(cause.contains(&bad.to_string()), "{cause}");
            }
            other => panic!("unexpected {other:?}"),
        }
        // A CAR listing all four: the blocks before the bad one arrive, the bad one does not.
        mock.set_car(blocks[0].0, blocks.iter().map(|b| b.0).collect());
        let service = Arc::new(service);
        assert!(service
            .fetch_dag(&blocks[0].0, DagScope::All)
            .await
            .is_err());
        for (i, (c, d)) in blocks.iter().enumerate() {
            let stored = store.get(c).unwrap();
            if i < 2 {
                assert_eq!(stored.as_ref(), Some(d));
            } else {
                assert_eq!(stored, None, "block {i}");
                assert!(!service.has_local(c));
            }
        }
        mock.set_wrong_bytes(bad, false);
        assert_eq!(service.get(&bad).await.unwrap(), blocks[2].1);
        assert_eq!(store.get(&bad).unwrap().as_ref(), Some(&blocks[2].1));
    }

    /// A fetcher that answers with a verified block, but not the one asked for.
    struct OtherBlock(VerifiedBlock);

    #[async_trait::async_trait]
    impl Fetcher for OtherBlock {
        fn name(&self) -> &str {
            "other"
        }
        async fn fetch_block(&self, _cid: &Cid) -> Result<VerifiedBlock, FetchError> {
            Ok(self.0.clone())
        }
        async fn fetch_car(
            &self,
            _root: &Cid,
            _scope: DagScope,
            _sink: &mut (dyn FnMut(VerifiedBlock) -> SinkControl + Send),
        ) -> Result<u64, FetchError> {
            Err(FetchError::NotFound)
        }
    }

    #[tokio::test]
    async fn a_verified_block_for_another_cid_is_refused() {
        let (asked, other) = (raw(1, 10), raw(2, 10));
        let block = VerifiedBlock::check(other.0, other.1).unwrap();
        let store = Arc::new(MemoryStore::new(1 << 20));
        let fetchers: Vec<Arc<dyn Fetcher>> = vec![Arc::new(OtherBlock(block))];
        let service = BlockService::new(store.clone(), fetchers, false, 1 << 20);
        assert!(matches!(
            service.get(&asked.0).await,
            Err(BlockError::Invalid { cid, .. }) if cid == asked.0
        ));
        assert!(!service.has_local(&asked.0) && !service.has_local(&other.0));
    }

    /// CIDs no bytes could match are refused before any source is asked.
    #[tokio::test]
    async fn unverifiable_cids_are_refused_without_fetching() {
        let (cid, data) = raw(9, 100);
        let short = Cid::new_v1(
            0x55,
            cid::multihash::Multihash::wrap(0x12, &cid.hash().digest()[..20]).unwrap(),
        );
        let sha3 = Cid::new_v1(
            0x55,
            cid::multihash::Multihash::wrap(0x14, &[3; 64]).unwrap(),
        );
        let (service, _, mock) = mock_service(&[(short, data.clone()), (sha3, data)]);
        assert!(matches!(
            service.get(&short).await,
            Err(BlockError::Invalid { cid, .. }) if cid == short
        ));
        assert!(matches!(
            service.get(&sha3).await,
            Err(BlockError::Unsupported { cid, .. }) if cid == sha3
        ));
        let service = Arc::new(service);
        assert!(matches!(
            service.fetch_dag(&short, DagScope::All).await,
            Err(BlockError::Invalid { .. })
        ));
        assert_eq!((mock.block_calls(), mock.car_calls()), (0, 0));
    }

    /// The thin temporary-pin methods reach the store and keep the memory cache in step.
    #[test]
    fn temp_pins_through_the_service() {
        let store: Arc<dyn BlockStore> = Arc::new(MemoryStore::new(1000));
        let service = BlockService::new(store.clone(), Vec::new(), true, 1 << 20);
        let blocks: Vec<(Cid, Bytes)> = (0..8).map(|i| raw(i, 400)).collect();
        let t = service.temp_pin("dataset:t").unwrap();
        service.put_temp(t, &blocks[..4]).unwrap();
        service
            .temp_pin_add(t, &mut blocks[4..6].iter().map(|b| b.0))
            .unwrap();
        assert_eq!(service.temp_pins("dataset:t").unwrap(), vec![t]);
        // readable from memory at once, protected in the store
        for (c, d) in &blocks[..4] {
            assert_eq!(service.get_local(c).unwrap().as_ref(), Some(d));
            assert!(store.is_pinned(c).unwrap());
        }
        let st = service.stats().unwrap();
        assert_eq!((st.temp_pinned_bytes, st.pinned_bytes), (1600, 1600));
        let root = blocks[7].0;
        service
            .pin_with_temps(&root, "v1", &mut std::iter::once(blocks[6].0), &[t])
            .unwrap();
        assert!(service.temp_pins("dataset:t").unwrap().is_empty());
        assert_eq!(store.pins().unwrap()[0].blocks, 8);
        assert!(service.unpin(&root).unwrap());
        service
            .pin(&root, "v2", &mut std::iter::once(blocks[0].0))
            .unwrap();
        assert!(store.is_pinned(&blocks[0].0).unwrap());
        let t2 = service.temp_pin("dataset:t").unwrap();
        assert!(service.release_temp(t2).unwrap());
        assert!(!service.release_temp(t2).unwrap());
        service.temp_pin("dataset:t").unwrap();
        assert_eq!(service.release_temp_owner("dataset:t").unwrap(), 1);
    }
}
