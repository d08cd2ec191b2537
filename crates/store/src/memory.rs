//! [`MemoryStore`]: a `HashMap`-backed [`BlockStore`] for tests, with the same pin and eviction semantics as
//! [`crate::DiskStore`] (LRU by a logical clock, automatic eviction down to 90% of capacity).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use cid::Cid;
use parking_lot::Mutex;

use crate::{block_key, low_water, select_victims, BlockStore, EvictStats, PinInfo, StoreError, StoreStats};

type Key = Vec<u8>;

struct Pin {
    root: Cid,
    label: String,
    blocks: HashSet<Key>,
    seq: u64,
}

#[derive(Default)]
struct Inner {
    blocks: HashMap<Key, (Bytes, u64)>,
    pins: HashMap<Vec<u8>, Pin>,
    pin_counts: HashMap<Key, u32>,
    clock: u64,
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn pinned(&self, key: &[u8]) -> bool {
        self.pin_counts.contains_key(key)
    }

    fn totals(&self) -> (u64, u64, u64, u64) {
        let (mut bytes, mut pblocks, mut pbytes) = (0, 0, 0);
        for (k, (d, _)) in &self.blocks {
            bytes += d.len() as u64;
            if self.pinned(k) {
                pblocks += 1;
                pbytes += d.len() as u64;
            }
        }
        (self.blocks.len() as u64, bytes, pblocks, pbytes)
    }

    fn evict_to(&mut self, target: u64) -> EvictStats {
        let (_, bytes, _, pbytes) = self.totals();
        let candidates = self
            .blocks
            .iter()
            .filter(|(k, _)| !self.pinned(k))
            .map(|(k, (d, t))| (*t, d.len() as u64, k.clone()))
            .collect();
        let victims = select_victims(candidates, bytes - pbytes, target);
        let mut stats = EvictStats::default();
        for (size, k) in victims {
            self.blocks.remove(&k);
            stats.blocks += 1;
            stats.bytes += size;
        }
        stats
    }

    fn insert(&mut self, key: Key, data: Bytes) {
        let t = self.tick();
        self.blocks.entry(key).and_modify(|e| e.1 = t).or_insert((data, t));
    }

    fn drop_pin(&mut self, root: &[u8]) -> bool {
        let Some(p) = self.pins.remove(root) else { return false };
        for k in &p.blocks {
            if let Some(c) = self.pin_counts.get_mut(k) {
                *c -= 1;
                if *c == 0 {
                    self.pin_counts.remove(k);
                }
            }
        }
        true
    }
}

/// A simple in-memory [`BlockStore`] for tests.
pub struct MemoryStore {
    capacity: u64,
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store keeping up to `cache_capacity` bytes of unpinned blocks.
    pub fn new(cache_capacity: u64) -> Self {
        MemoryStore { capacity: cache_capacity, inner: Mutex::new(Inner::default()) }
    }

    fn maybe_evict(&self, inner: &mut Inner) {
        let (_, bytes, _, pbytes) = inner.totals();
        if bytes - pbytes > self.capacity {
            inner.evict_to(low_water(self.capacity));
        }
    }
}

impl Default for MemoryStore {
    /// Unbounded capacity.
    fn default() -> Self {
        Self::new(u64::MAX)
    }
}

impl BlockStore for MemoryStore {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, StoreError> {
        let Some(key) = block_key(cid) else { return Ok(None) };
        let mut inner = self.inner.lock();
        let t = inner.tick();
        Ok(inner.blocks.get_mut(&key).map(|e| {
            e.1 = t;
            e.0.clone()
        }))
    }

    fn has(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(block_key(cid).is_some_and(|k| self.inner.lock().blocks.contains_key(&k)))
    }

    fn put(&self, cid: &Cid, data: &[u8]) -> Result<(), StoreError> {
        let Some(key) = block_key(cid) else { return Ok(()) };
        let mut inner = self.inner.lock();
        inner.insert(key, Bytes::copy_from_slice(data));
        self.maybe_evict(&mut inner);
        Ok(())
    }

    fn put_many(&self, blocks: &[(Cid, Bytes)]) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        // Same order as DiskStore: blocks already present are touched first, then new ones stored in batch order.
        let mut seen = HashSet::new();
        let mut new = Vec::new();
        for (cid, data) in blocks {
            let Some(key) = block_key(cid) else { continue };
            if !seen.insert(key.clone()) {
                continue;
            }
            let t = inner.tick();
            match inner.blocks.get_mut(&key) {
                Some(e) => e.1 = t,
                None => new.push((key, data.clone())),
            }
        }
        for (key, data) in new {
            inner.insert(key, data);
        }
        self.maybe_evict(&mut inner);
        Ok(())
    }

    fn pin(&self, root: &Cid, label: &str, blocks: &mut dyn Iterator<Item = Cid>) -> Result<(), StoreError> {
        let mut set: HashSet<Key> = blocks.filter_map(|c| block_key(&c)).collect();
        set.extend(block_key(root));
        let root_bytes = root.to_bytes();
        let mut inner = self.inner.lock();
        for k in &set {
            *inner.pin_counts.entry(k.clone()).or_insert(0) += 1;
        }
        inner.drop_pin(&root_bytes);
        let seq = inner.tick();
        inner.pins.insert(root_bytes, Pin { root: *root, label: label.to_string(), blocks: set, seq });
        self.maybe_evict(&mut inner);
        Ok(())
    }

    fn unpin(&self, root: &Cid) -> Result<bool, StoreError> {
        let mut inner = self.inner.lock();
        let existed = inner.drop_pin(&root.to_bytes());
        self.maybe_evict(&mut inner);
        Ok(existed)
    }

    fn pins(&self) -> Result<Vec<PinInfo>, StoreError> {
        let inner = self.inner.lock();
        let mut pins: Vec<&Pin> = inner.pins.values().collect();
        pins.sort_by_key(|p| p.seq);
        Ok(pins
            .into_iter()
            .map(|p| PinInfo {
                root: p.root,
                label: p.label.clone(),
                blocks: p.blocks.len() as u64,
                bytes: p.blocks.iter().filter_map(|k| inner.blocks.get(k)).map(|(d, _)| d.len() as u64).sum(),
            })
            .collect())
    }

    fn is_pinned(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(block_key(cid).is_some_and(|k| self.inner.lock().pinned(&k)))
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let (blocks, bytes, pinned_blocks, pinned_bytes) = self.inner.lock().totals();
        Ok(StoreStats { blocks, bytes, pinned_blocks, pinned_bytes, cache_capacity: self.capacity })
    }

    fn evict(&self) -> Result<EvictStats, StoreError> {
        Ok(self.inner.lock().evict_to(self.capacity))
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
