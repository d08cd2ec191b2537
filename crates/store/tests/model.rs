//! Model test: random operation sequences run against DiskStore and MemoryStore side by side, checked against a
//! simple model (which blocks were stored, which are pinned) and against each other (same LRU decisions).

mod common;

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use cid::Cid;
use common::*;
use ipfs_mount_store::{BlockStore, DiskStore, MemoryStore};
use proptest::prelude::*;

const UNIVERSE: usize = 16;
const CAPACITY: u64 = 1000;

#[derive(Debug, Clone)]
enum Op {
    Put(usize),
    PutMany(Vec<usize>),
    Get(usize),
    Pin(usize, Vec<usize>),
    Unpin(usize),
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
        1 => i.prop_map(Op::Unpin),
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
        let data: Vec<Vec<u8>> = (0..UNIVERSE).map(|i| block(9000 + i as u64, 40 + (i * 67) % 261)).collect();
        let cids = data.iter().map(|d| cid_of(d)).collect();
        Universe { data, cids }
    }
}

#[derive(Default)]
struct Model {
    present: HashSet<usize>,
    pins: HashMap<usize, HashSet<usize>>,
}

impl Model {
    fn pinned(&self, i: usize) -> bool {
        self.pins.values().any(|s| s.contains(&i))
    }
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
                let batch: Vec<(Cid, Bytes)> = is.iter().map(|&i| (u.cids[i], Bytes::from(u.data[i].clone()))).collect();
                for s in stores {
                    s.put_many(&batch).unwrap();
                }
                model.present.extend(is.iter().copied());
            }
            Op::Get(i) => {
                for s in stores {
                    match s.get(&u.cids[*i]).unwrap() {
                        Some(got) => prop_assert_eq!(&got[..], &u.data[*i][..], "wrong bytes for block {}", i),
                        None => prop_assert!(
                            !(model.present.contains(i) && model.pinned(*i)),
                            "pinned block {} missing",
                            i
                        ),
                    }
                }
            }
            Op::Pin(r, bs) => {
                for s in stores {
                    s.pin(&u.cids[*r], "model", &mut bs.iter().map(|&b| u.cids[b])).unwrap();
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
            }
        }
        let d = disk.as_ref().unwrap();
        // Invariants, and the two stores agree block by block.
        let mut expect_bytes = 0;
        let mut expect_pinned_bytes = 0;
        let mut now_present = HashSet::new();
        for i in 0..UNIVERSE {
            let c = &u.cids[i];
            let h = d.has(c).unwrap();
            prop_assert_eq!(h, mem.has(c).unwrap(), "disk and memory disagree on block {} after {:?}", i, op);
            prop_assert!(!h || model.present.contains(&i), "block {} appeared from nowhere", i);
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
            }
        }
        model.present = now_present;
        let ds = d.stats().unwrap();
        prop_assert_eq!(ds, mem.stats().unwrap());
        prop_assert_eq!((ds.blocks, ds.bytes, ds.pinned_bytes), (model.present.len() as u64, expect_bytes, expect_pinned_bytes));
        prop_assert!(ds.unpinned_bytes() <= CAPACITY, "capacity exceeded: {:?}", ds);
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
