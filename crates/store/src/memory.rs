//! [`MemoryStore`]: a `HashMap`-backed [`BlockStore`] for tests, with the same pin and eviction semantics as
//! [`crate::DiskStore`] (LRU by a logical clock, automatic eviction down to 90% of capacity).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use cid::Cid;
use parking_lot::Mutex;

use crate::{
    block_key, low_water, select_victims, BlockStore, EvictStats, PinInfo, StoreError, StoreStats,
    TempPinId,
};

type Key = Vec<u8>;

struct Pin {
    root: Cid,
    label: String,
    blocks: HashSet<Key>,
    seq: u64,
}

struct TempPin {
    owner: String,
    blocks: HashSet<Key>,
}

#[derive(Default)]
struct Inner {
    blocks: HashMap<Key, (Bytes, u64)>,
    pins: HashMap<Vec<u8>, Pin>,
    /// Number of pins and temporary pins listing each block (what protects it).
    pin_counts: HashMap<Key, u32>,
    temp_pins: HashMap<TempPinId, TempPin>,
    /// Number of temporary pins listing each block (for the temp_pinned_* totals).
    temp_counts: HashMap<Key, u32>,
    /// Last temporary pin id handed out.
    last_temp: TempPinId,
    clock: u64,
}

/// Totals of [`Inner`]: blocks, bytes, pinned blocks, pinned bytes, temp-pinned blocks, temp-pinned bytes.
#[derive(Default)]
struct Totals {
    blocks: u64,
    bytes: u64,
    pinned_blocks: u64,
    pinned_bytes: u64,
    temp_blocks: u64,
    temp_bytes: u64,
}

fn count_inc(counts: &mut HashMap<Key, u32>, key: &[u8]) {
    *counts.entry(key.to_vec()).or_insert(0) += 1;
}

fn count_dec(counts: &mut HashMap<Key, u32>, key: &[u8]) {
    if let Some(c) = counts.get_mut(key) {
        *c -= 1;
        if *c == 0 {
            counts.remove(key);
        }
    }
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn pinned(&self, key: &[u8]) -> bool {
        self.pin_counts.contains_key(key)
    }

    fn totals(&self) -> Totals {
        let mut t = Totals {
            blocks: self.blocks.len() as u64,
            ..Totals::default()
        };
        for (k, (d, _)) in &self.blocks {
            let n = d.len() as u64;
            t.bytes += n;
            if self.pinned(k) {
                t.pinned_blocks += 1;
                t.pinned_bytes += n;
            }
            if self.temp_counts.contains_key(k) {
                t.temp_blocks += 1;
                t.temp_bytes += n;
            }
        }
        t
    }

    fn evict_to(&mut self, target: u64) -> EvictStats {
        let Totals {
            bytes,
            pinned_bytes: pbytes,
            ..
        } = self.totals();
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
        self.blocks
            .entry(key)
            .and_modify(|e| e.1 = t)
            .or_insert((data, t));
    }

    fn drop_pin(&mut self, root: &[u8]) -> bool {
        let Some(p) = self.pins.remove(root) else {
            return false;
        };
        for k in &p.blocks {
            count_dec(&mut self.pin_counts, k);
        }
        true
    }

    /// Adds `key` to temporary pin `id` (which exists) unless it is there already.
    fn temp_add(&mut self, id: TempPinId, key: Key) {
        let t = self.temp_pins.get_mut(&id).expect("checked by the caller");
        if t.blocks.insert(key.clone()) {
            count_inc(&mut self.pin_counts, &key);
            count_inc(&mut self.temp_counts, &key);
        }
    }

    fn drop_temp(&mut self, id: TempPinId) -> bool {
        let Some(t) = self.temp_pins.remove(&id) else {
            return false;
        };
        for k in &t.blocks {
            count_dec(&mut self.pin_counts, k);
            count_dec(&mut self.temp_counts, k);
        }
        true
    }

    fn check_temp(&self, id: TempPinId) -> Result<(), StoreError> {
        if self.temp_pins.contains_key(&id) {
            Ok(())
        } else {
            Err(StoreError::UnknownTempPin(id))
        }
    }

    /// Pins `root` with the block set `set` (replacing an earlier pin of it).
    fn set_pin(&mut self, root: &Cid, label: &str, set: HashSet<Key>) {
        let root_bytes = root.to_bytes();
        for k in &set {
            count_inc(&mut self.pin_counts, k);
        }
        self.drop_pin(&root_bytes);
        let seq = self.tick();
        self.pins.insert(
            root_bytes,
            Pin {
                root: *root,
                label: label.to_string(),
                blocks: set,
                seq,
            },
        );
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
        MemoryStore {
            capacity: cache_capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn maybe_evict(&self, inner: &mut Inner) {
        let Totals {
            bytes,
            pinned_bytes: pbytes,
            ..
        } = inner.totals();
        if bytes - pbytes > self.capacity {
            inner.evict_to(low_water(self.capacity));
        }
    }

    /// Stores a batch: same order as DiskStore, blocks already present are touched first, then new ones stored in
    /// batch order. Returns the keys of the batch (deduplicated, identity CIDs left out).
    fn put_many_locked(inner: &mut Inner, blocks: &[(Cid, Bytes)]) -> Vec<Key> {
        let mut seen = HashSet::new();
        let mut keys = Vec::new();
        let mut new = Vec::new();
        for (cid, data) in blocks {
            let Some(key) = block_key(cid) else { continue };
            if !seen.insert(key.clone()) {
                continue;
            }
            keys.push(key.clone());
            let t = inner.tick();
            match inner.blocks.get_mut(&key) {
                Some(e) => e.1 = t,
                None => new.push((key, data.clone())),
            }
        }
        for (key, data) in new {
            inner.insert(key, data);
        }
        keys
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
        let Some(key) = block_key(cid) else {
            return Ok(None);
        };
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
        let Some(key) = block_key(cid) else {
            return Ok(());
        };
        let mut inner = self.inner.lock();
        inner.insert(key, Bytes::copy_from_slice(data));
        self.maybe_evict(&mut inner);
        Ok(())
    }

    fn put_many(&self, blocks: &[(Cid, Bytes)]) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        Self::put_many_locked(&mut inner, blocks);
        self.maybe_evict(&mut inner);
        Ok(())
    }

    fn pin(
        &self,
        root: &Cid,
        label: &str,
        blocks: &mut dyn Iterator<Item = Cid>,
    ) -> Result<(), StoreError> {
        let mut set: HashSet<Key> = blocks.filter_map(|c| block_key(&c)).collect();
        set.extend(block_key(root));
        let mut inner = self.inner.lock();
        inner.set_pin(root, label, set);
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
                bytes: p
                    .blocks
                    .iter()
                    .filter_map(|k| inner.blocks.get(k))
                    .map(|(d, _)| d.len() as u64)
                    .sum(),
            })
            .collect())
    }

    fn is_pinned(&self, cid: &Cid) -> Result<bool, StoreError> {
        Ok(block_key(cid).is_some_and(|k| self.inner.lock().pinned(&k)))
    }

    fn temp_pin(&self, owner: &str) -> Result<TempPinId, StoreError> {
        let mut inner = self.inner.lock();
        inner.last_temp += 1;
        let id = inner.last_temp;
        inner.temp_pins.insert(
            id,
            TempPin {
                owner: owner.to_string(),
                blocks: HashSet::new(),
            },
        );
        Ok(id)
    }

    fn put_temp(&self, pin: TempPinId, blocks: &[(Cid, Bytes)]) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        inner.check_temp(pin)?;
        // One lock for the put and the protection: nothing can evict in between.
        for key in Self::put_many_locked(&mut inner, blocks) {
            inner.temp_add(pin, key);
        }
        self.maybe_evict(&mut inner);
        Ok(())
    }

    fn temp_pin_add(
        &self,
        pin: TempPinId,
        blocks: &mut dyn Iterator<Item = Cid>,
    ) -> Result<(), StoreError> {
        let mut inner = self.inner.lock();
        inner.check_temp(pin)?;
        for key in blocks.filter_map(|c| block_key(&c)) {
            inner.temp_add(pin, key);
        }
        Ok(())
    }

    fn release_temp(&self, pin: TempPinId) -> Result<bool, StoreError> {
        let mut inner = self.inner.lock();
        let existed = inner.drop_temp(pin);
        self.maybe_evict(&mut inner);
        Ok(existed)
    }

    fn release_temp_owner(&self, owner: &str) -> Result<u64, StoreError> {
        let mut inner = self.inner.lock();
        let ids: Vec<TempPinId> = inner
            .temp_pins
            .iter()
            .filter(|(_, t)| t.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            inner.drop_temp(*id);
        }
        self.maybe_evict(&mut inner);
        Ok(ids.len() as u64)
    }

    fn temp_pins(&self, owner: &str) -> Result<Vec<TempPinId>, StoreError> {
        let inner = self.inner.lock();
        let mut ids: Vec<TempPinId> = inner
            .temp_pins
            .iter()
            .filter(|(_, t)| t.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn pin_with_temps(
        &self,
        root: &Cid,
        label: &str,
        blocks: &mut dyn Iterator<Item = Cid>,
        temps: &[TempPinId],
    ) -> Result<(), StoreError> {
        let mut set: HashSet<Key> = blocks.filter_map(|c| block_key(&c)).collect();
        set.extend(block_key(root));
        let mut inner = self.inner.lock();
        for id in temps {
            inner.check_temp(*id)?;
        }
        for id in temps {
            set.extend(inner.temp_pins[id].blocks.iter().cloned());
        }
        // The pin counts its blocks before the temporary pins let go of them.
        inner.set_pin(root, label, set);
        for id in temps {
            inner.drop_temp(*id);
        }
        self.maybe_evict(&mut inner);
        Ok(())
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        let t = self.inner.lock().totals();
        Ok(StoreStats {
            blocks: t.blocks,
            bytes: t.bytes,
            pinned_blocks: t.pinned_blocks,
            pinned_bytes: t.pinned_bytes,
            temp_pinned_blocks: t.temp_blocks,
            temp_pinned_bytes: t.temp_bytes,
            cache_capacity: self.capacity,
        })
    }

    fn evict(&self) -> Result<EvictStats, StoreError> {
        Ok(self.inner.lock().evict_to(self.capacity))
    }

    fn evict_to(&self, target: u64) -> Result<EvictStats, StoreError> {
        Ok(self.inner.lock().evict_to(target.min(self.capacity)))
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
