//! Model test: random operation sequences run against DiskStore and MemoryStore side by side, checked against a
//! simple model (which blocks were stored, which are pinned or temporarily pinned) and against each other (same LRU
//! decisions, same temporary pin ids).

mod common;

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use cid::Cid;
use common::*;
use ipfs_mount_store::{BlockStore, DiskStore, MemoryStore, StoreError, TempPinId};
use proptest::prelude::*;

const UNIVERSE: usize = 16;
const CAPACITY: u64 = 1000;
/// Owners of temporary pins.
const OWNERS: usize = 2;
/// Temporary pins are named by their creation order; an index past the last one created (or of a released one)
/// exercises unknown ids.
const TEMPS: usize = 6;

#[derive(Debug, Clone)]
enum Op {
    Put(usize),
    PutMany(Vec<usize>),
    Get(usize),
    Pin(usize, Vec<usize>),
    Unpin(usize),
    TempPin(usize),
    PutTemp(usize, Vec<usize>),
    TempAdd(usize, Vec<usize>),
    ReleaseTemp(usize),
    ReleaseOwner(usize),
    PinWithTemps(usize, Vec<usize>, Vec<usize>),
    Evict,
    Flush,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let i = 0..UNIVERSE;
    prop_oneof![
        4 => i.clone().prop_map(Op::Put),
        2 => prop::collection::vec(0..UNIVERSE, 0..6).prop_map(Op::PutMany),
        4 => i.clone().prop_map(Op::Get),
        2 => (i.clone(), prop::collection::vec(0..UNIVERSE, 0..4)).prop_map(|(r, b)| Op::Pin(r, b)),
        1 => i.clone().prop_map(Op::Unpin),
        2 => (0..OWNERS).prop_map(Op::TempPin),
        4 => (0..TEMPS, prop::collection::vec(0..UNIVERSE, 0..5)).prop_map(|(t, b)| Op::PutTemp(t, b)),
        1 => (0..TEMPS, prop::collection::vec(0..UNIVERSE, 0..4)).prop_map(|(t, b)| Op::TempAdd(t, b)),
        1 => (0..TEMPS).prop_map(Op::ReleaseTemp),
        1 => (0..OWNERS).prop_map(Op::ReleaseOwner),
        2 => (i, prop::collection::vec(0..UNIVERSE, 0..3), prop::collection::vec(0..TEMPS, 0..3))
            .prop_map(|(r, b, t)| Op::PinWithTemps(r, b, t)),
        1 => Just(Op::Evict),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
    ]
}

struct Universe {
    data: Vec<Vec<u8>>,
    cids: Vec<Cid>,
}

impl Universe {
    fn new() -> Self {
        // sizes 40..=300: several blocks fit in the capacity, a few force eviction
        let data: Vec<Vec<u8>> = (0..UNIVERSE)
            .map(|i| block(9000 + i as u64, 40 + (i * 67) % 261))
            .collect();
        let cids = data.iter().map(|d| cid_of(d)).collect();
        Universe { data, cids }
    }
}

#[derive(Default)]
struct Model {
    present: HashSet<usize>,
    pins: HashMap<usize, HashSet<usize>>,
    /// Ids of the temporary pins created, in creation order (released ones included), in the
    /// disk store and in the memory store (ids are opaque: each store hands out its own).
    temp_ids: Vec<[TempPinId; 2]>,
    /// Temporary pins that were ever given blocks (even none: any put_temp or add): only those
    /// are written to the index, so only those survive a restart.
    born: HashSet<usize>,
    /// Temporary pins held: creation index -> (owner, blocks).
    temps: HashMap<usize, (usize, HashSet<usize>)>,
}

impl Model {
    fn temp_pinned(&self, i: usize) -> bool {
        self.temps.values().any(|(_, s)| s.contains(&i))
    }

    fn pinned(&self, i: usize) -> bool {
        self.pins.values().any(|s| s.contains(&i)) || self.temp_pinned(i)
    }

    /// Store `which`'s id of temporary pin `t` (creation index), or an id never handed out.
    fn temp_id(&self, t: usize, which: usize) -> TempPinId {
        self.temp_ids
            .get(t)
            .map(|ids| ids[which])
            .unwrap_or(1_000_000_000 + t as TempPinId)
    }
}

fn owner(o: usize) -> String {
    format!("owner{o}")
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let u = Universe::new();
    let tmp = tempfile::tempdir().unwrap();
    let mut disk = Some(open(tmp.path(), CAPACITY));
    let mem = MemoryStore::new(CAPACITY);
    let mut model = Model::default();
    for op in ops {
        let d = disk.as_ref().unwrap();
        let stores: [&dyn BlockStore; 2] = [d, &mem];
        match &op {
            Op::Put(i) => {
                for s in stores {
                    s.put(&u.cids[*i], &u.data[*i]).unwrap();
                }
                model.present.insert(*i);
            }
            Op::PutMany(is) => {
                let batch: Vec<(Cid, Bytes)> = is
                    .iter()
                    .map(|&i| (u.cids[i], Bytes::from(u.data[i].clone())))
                    .collect();
                for s in stores {
                    s.put_many(&batch).unwrap();
                }
                model.present.extend(is.iter().copied());
            }
            Op::Get(i) => {
                for s in stores {
                    match s.get(&u.cids[*i]).unwrap() {
                        Some(got) => prop_assert_eq!(
                            &got[..],
                            &u.data[*i][..],
                            "wrong bytes for block {}",
                            i
                        ),
                        None => {
                            prop_assert!(
                                !(model.present.contains(i) && model.pinned(*i)),
                                "pinned block {} missing",
                                i
                            )
                        }
                    }
                }
            }
            Op::Pin(r, bs) => {
                for s in stores {
                    s.pin(&u.cids[*r], "model", &mut bs.iter().map(|&b| u.cids[b]))
                        .unwrap();
                }
                let mut set: HashSet<usize> = bs.iter().copied().collect();
                set.insert(*r);
                model.pins.insert(*r, set);
            }
            Op::Unpin(r) => {
                let expect = model.pins.remove(r).is_some();
                for s in stores {
                    prop_assert_eq!(s.unpin(&u.cids[*r]).unwrap(), expect);
                }
            }
            Op::TempPin(o) => {
                let ids = [
                    stores[0].temp_pin(&owner(*o)).unwrap(),
                    stores[1].temp_pin(&owner(*o)).unwrap(),
                ];
                for which in 0..2 {
                    prop_assert!(
                        !model.temp_ids.iter().any(|x| x[which] == ids[which]),
                        "temporary pin id {} reused (store {})",
                        ids[which],
                        which
                    );
                }
                model
                    .temps
                    .insert(model.temp_ids.len(), (*o, HashSet::new()));
                model.temp_ids.push(ids);
            }
            Op::PutTemp(t, is) => {
                let batch: Vec<(Cid, Bytes)> = is
                    .iter()
                    .map(|&i| (u.cids[i], Bytes::from(u.data[i].clone())))
                    .collect();
                for (which, s) in stores.iter().enumerate() {
                    let r = s.put_temp(model.temp_id(*t, which), &batch);
                    match model.temps.get(t) {
                        Some(_) => prop_assert!(r.is_ok(), "put_temp failed: {:?}", r),
                        None => {
                            prop_assert!(matches!(r, Err(StoreError::UnknownTempPin(_))), "{:?}", r)
                        }
                    }
                }
                if let Some((_, set)) = model.temps.get_mut(t) {
                    set.extend(is.iter().copied());
                    model.present.extend(is.iter().copied());
                    model.born.insert(*t);
                }
            }
            Op::TempAdd(t, is) => {
                for (which, s) in stores.iter().enumerate() {
                    let r = s
                        .temp_pin_add(model.temp_id(*t, which), &mut is.iter().map(|&i| u.cids[i]));
                    prop_assert_eq!(r.is_ok(), model.temps.contains_key(t), "{:?}", r);
                }
                if let Some((_, set)) = model.temps.get_mut(t) {
                    set.extend(is.iter().copied());
                    model.born.insert(*t);
                }
            }
            Op::ReleaseTemp(t) => {
                let expect = model.temps.remove(t).is_some();
                for (which, s) in stores.iter().enumerate() {
                    prop_assert_eq!(s.release_temp(model.temp_id(*t, which)).unwrap(), expect);
                }
            }
            Op::ReleaseOwner(o) => {
                let mine: Vec<usize> = model
                    .temps
                    .iter()
                    .filter(|(_, (ow, _))| ow == o)
                    .map(|(t, _)| *t)
                    .collect();
                for (which, s) in stores.iter().enumerate() {
                    let mut ids: Vec<TempPinId> =
                        mine.iter().map(|t| model.temp_id(*t, which)).collect();
                    ids.sort_unstable();
                    prop_assert_eq!(s.temp_pins(&owner(*o)).unwrap(), ids);
                    prop_assert_eq!(s.release_temp_owner(&owner(*o)).unwrap(), mine.len() as u64);
                    prop_assert!(s.temp_pins(&owner(*o)).unwrap().is_empty());
                }
                for t in mine {
                    model.temps.remove(&t);
                }
            }
            Op::PinWithTemps(r, bs, ts) => {
                let ok = ts.iter().all(|t| model.temps.contains_key(t));
                for (which, s) in stores.iter().enumerate() {
                    let ids: Vec<TempPinId> = ts.iter().map(|t| model.temp_id(*t, which)).collect();
                    let res = s.pin_with_temps(
                        &u.cids[*r],
                        "model",
                        &mut bs.iter().map(|&b| u.cids[b]),
                        &ids,
                    );
                    prop_assert_eq!(res.is_ok(), ok, "{:?}", res);
                }
                if ok {
                    let mut set: HashSet<usize> = bs.iter().copied().collect();
                    set.insert(*r);
                    for t in ts {
                        if let Some((_, blocks)) = model.temps.remove(t) {
                            set.extend(blocks);
                        }
                    }
                    model.pins.insert(*r, set);
                }
            }
            Op::Evict => {
                for s in stores {
                    s.evict().unwrap();
                    let st = s.stats().unwrap();
                    prop_assert!(st.unpinned_bytes() <= CAPACITY, "after evict: {:?}", st);
                }
            }
            Op::Flush => d.flush().unwrap(),
            Op::Reopen => {
                drop(disk.take());
                disk = Some(DiskStore::open(config(tmp.path(), CAPACITY)).unwrap());
                // A temporary pin that never held anything does not outlive its process (it
                // protected nothing); the memory twin, which is not reopened, lets it go too.
                let unborn: Vec<usize> = model
                    .temps
                    .keys()
                    .copied()
                    .filter(|t| !model.born.contains(t))
                    .collect();
                for t in unborn {
                    model.temps.remove(&t);
                    prop_assert!(mem.release_temp(model.temp_id(t, 1)).unwrap());
                }
            }
        }
        let d = disk.as_ref().unwrap();
        // Invariants, and the two stores agree block by block.
        let mut expect_bytes = 0;
        let mut expect_pinned_bytes = 0;
        let mut expect_temp_bytes = 0;
        let mut now_present = HashSet::new();
        for i in 0..UNIVERSE {
            let c = &u.cids[i];
            let h = d.has(c).unwrap();
            prop_assert_eq!(
                h,
                mem.has(c).unwrap(),
                "disk and memory disagree on block {} after {:?}",
                i,
                op
            );
            prop_assert!(
                !h || model.present.contains(&i),
                "block {} appeared from nowhere",
                i
            );
            let pinned = model.pinned(i);
            prop_assert_eq!(d.is_pinned(c).unwrap(), pinned);
            prop_assert_eq!(mem.is_pinned(c).unwrap(), pinned);
            if model.present.contains(&i) && pinned {
                prop_assert!(h, "pinned block {} was evicted after {:?}", i, op);
            }
            if h {
                now_present.insert(i);
                expect_bytes += u.data[i].len() as u64;
                if pinned {
                    expect_pinned_bytes += u.data[i].len() as u64;
                }
                if model.temp_pinned(i) {
                    expect_temp_bytes += u.data[i].len() as u64;
                }
            }
        }
        model.present = now_present;
        let ds = d.stats().unwrap();
        prop_assert_eq!(ds, mem.stats().unwrap());
        prop_assert_eq!(
            (ds.blocks, ds.bytes, ds.pinned_bytes, ds.temp_pinned_bytes),
            (
                model.present.len() as u64,
                expect_bytes,
                expect_pinned_bytes,
                expect_temp_bytes
            )
        );
        prop_assert!(
            ds.unpinned_bytes() <= CAPACITY,
            "capacity exceeded: {:?}",
            ds
        );
        let dp = d.pins().unwrap();
        prop_assert_eq!(dp.len(), model.pins.len());
        let mut mp = mem.pins().unwrap();
        let mut dp = dp;
        dp.sort_by_key(|p| p.root.to_bytes());
        mp.sort_by_key(|p| p.root.to_bytes());
        prop_assert_eq!(dp, mp);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn disk_and_memory_follow_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
