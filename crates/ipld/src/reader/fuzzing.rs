//! Support for fuzzing and property-testing the planners: an interpreter that turns arbitrary
//! bytes into a block map whose links only go to blocks made before (any DAG shape, any
//! sharing, garbage and truncated blocks, missing blocks), a driver that provides blocks in a
//! seeded order and checks the protocol, and [`exercise`], which runs every planner over a
//! map. Used by `fuzz/fuzz_targets/reader_walks.rs` and the unit tests; not a stable API.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cid::{Cid, Version};

use super::dag::{DagWalk, Scope};
use super::file::{FileRange, NodeCache};
use super::leaves::Leaves;
use super::listing::{Listed, Listing};
use super::path::PathWalk;
use super::{Limits, Planner, ReadError, Step};
use crate::dagpb::{self, PbLink, PbNode};
use crate::unixfs::{self, encode_data, DataType, FileNode, UnixFsData};
use crate::{cids, codec, hamt, mh};

/// Blocks by CID.
pub type BlockMap = HashMap<Cid, Bytes>;

/// Steps a planner may take before [`drive`] calls it stuck (a bug: planners always end).
pub const MAX_STEPS: u64 = 10_000_000;

/// Drives a planner, providing blocks in an order picked by `seed` (0 = each right after it
/// is asked for). Panics when the planner breaks the protocol: a CID asked for twice, a wait
/// with nothing outstanding, no end within [`MAX_STEPS`]. `Err(None)` = a block is missing.
pub fn drive<P: Planner>(
    mut p: P,
    map: &BlockMap,
    seed: u64,
) -> Result<Vec<P::Item>, Option<ReadError>> {
    let mut asked = BTreeSet::new();
    let mut waiting: Vec<Cid> = Vec::new();
    let mut items = Vec::new();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..MAX_STEPS {
        match p.next().map_err(Some)? {
            Step::Need(c) => {
                assert!(asked.insert(c), "{c} asked for twice");
                if seed == 0 {
                    let b = map.get(&c).ok_or(None)?;
                    p.provide(&c, b.clone()).map_err(Some)?;
                } else {
                    waiting.push(c);
                }
            }
            Step::Item(i) => items.push(i),
            Step::Wait => {
                assert!(!waiting.is_empty(), "planner waits for nothing");
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let c = waiting.swap_remove((x % waiting.len() as u64) as usize);
                let b = map.get(&c).ok_or(None)?;
                p.provide(&c, b.clone()).map_err(Some)?;
            }
            Step::Done => return Ok(items),
        }
    }
    panic!("planner did not finish in {MAX_STEPS} steps");
}

fn same<T: PartialEq + std::fmt::Debug>(
    a: &Result<Vec<T>, Option<ReadError>>,
    b: &Result<Vec<T>, Option<ReadError>>,
) {
    // Errors may differ with the fetch order (which bad block is seen first); results may not.
    if let (Ok(a), Ok(b)) = (a, b) {
        assert_eq!(a, b, "result depends on the fetch order");
    }
}

/// Runs every planner from `root` over `map` with two fetch orders (`seed` and
/// sequential): never a panic, never a CID asked twice, the same results both times, listed
/// names safe and distinct, DAG-walk blocks distinct.
pub fn exercise(map: &BlockMap, root: Cid, names: &[Vec<u8>], seed: u64) {
    let limits = Limits {
        max_blocks: 10_000,
        max_entries: 100_000,
        window_blocks: 1 + (seed % 5) as usize,
        ..Limits::default()
    };
    let (a, b) = (0, seed | 1);
    let l1 = drive(Listing::new(root, limits), map, a);
    let l2 = drive(Listing::new(root, limits), map, b);
    same(&l1, &l2);
    if let Ok(items) = &l1 {
        let mut seen = BTreeSet::new();
        for i in items {
            if let Listed::Entry(e) = i {
                assert!(unixfs::is_safe_name(&e.name), "unsafe name listed");
                assert!(seen.insert(e.name.clone()), "name listed twice");
            }
        }
    }
    for scope in [
        Scope::All,
        Scope::Entity { range: None },
        Scope::Entity {
            range: Some((3, 40)),
        },
    ] {
        let w1 = drive(DagWalk::new(root, scope, limits), map, a);
        let w2 = drive(DagWalk::new(root, scope, limits), map, b);
        same(&w1, &w2);
        if let Ok(v) = &w1 {
            let distinct: BTreeSet<_> = v.iter().map(|v| v.cid).collect();
            assert_eq!(distinct.len(), v.len(), "a block yielded twice");
        }
        let l1 = drive(DagWalk::new(root, scope, limits).lenient(), map, a);
        let l2 = drive(DagWalk::new(root, scope, limits).lenient(), map, b);
        same(&l1, &l2);
        // with repeats: the same blocks, each at least as often
        let r1 = drive(DagWalk::new(root, scope, limits).with_repeats(), map, a);
        let r2 = drive(DagWalk::new(root, scope, limits).with_repeats(), map, b);
        same(&r1, &r2);
        if let (Ok(once), Ok(repeated)) = (&w1, &r1) {
            let distinct: BTreeSet<_> = repeated.iter().map(|v| v.cid).collect();
            let once: BTreeSet<_> = once.iter().map(|v| v.cid).collect();
            assert_eq!(distinct, once, "repeats changed the blocks walked");
        }
    }
    for (from, to) in [(0, u64::MAX), (5, 30)] {
        let size = 64;
        let f1 = drive(FileRange::new(root, size, from, to, limits), map, a);
        let f2 = drive(FileRange::new(root, size, from, to, limits), map, b);
        same(&f1, &f2);
        if let Ok(pieces) = &f1 {
            let total: u64 = pieces.iter().map(|p| p.len()).sum();
            assert_eq!(total, to.min(size) - from, "pieces do not cover the range");
        }
        // through a node cache, empty and then filled by the first walk: the same pieces
        let cache = MapCache::default();
        for _ in 0..2 {
            let c = FileRange::new(root, size, from, to, limits).with_cache(&cache);
            same(&drive(c, map, b), &f1);
        }
    }
    let r1 = drive(Leaves::new(root, 64, None, limits), map, a);
    let r2 = drive(Leaves::new(root, 64, None, limits), map, b);
    same(&r1, &r2);
    if let Ok(runs) = &r1 {
        let total = runs.iter().fold(0u64, |t, r| t.saturating_add(r.len()));
        assert_eq!(total, 64, "runs do not add up to the file size");
    }
    let p1 = drive(PathWalk::new(root, names.to_vec(), limits), map, a);
    let p2 = drive(PathWalk::new(root, names.to_vec(), limits), map, b);
    same(&p1, &p2);
    // from a decoded HAMT root: what the walk from its block finds
    if let Some(Ok(unixfs::Node::HamtShard(h))) =
        map.get(&root).map(|b| unixfs::decode_node_shared(&root, b))
    {
        if let Ok(w) = PathWalk::from_hamt_root(root, &h, names.to_vec(), limits) {
            same(&p1, &drive(w, map, a));
        }
    }
}

/// A [`NodeCache`] over a map, for the walks above and the unit tests.
#[derive(Default)]
pub struct MapCache(pub Mutex<HashMap<Cid, Arc<FileNode>>>);

impl NodeCache for MapCache {
    fn get(&self, cid: &Cid) -> Option<Arc<FileNode>> {
        self.0.lock().ok()?.get(cid).cloned()
    }
    fn insert(&self, cid: Cid, node: Arc<FileNode>) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(cid, node);
        }
    }
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
}

fn pb(d: UnixFsData, links: Vec<PbLink>) -> Vec<u8> {
    dagpb::encode(&PbNode {
        links,
        data: Some(Bytes::from(encode_data(&d))),
    })
}

/// Turns arbitrary bytes into blocks. Returns the map (some blocks left out), every CID made
/// (the last is the natural root), path names to resolve, and a seed for fetch orders.
pub fn blocks_from_bytes(data: &[u8]) -> (BlockMap, Vec<Cid>, Vec<Vec<u8>>, u64) {
    let mut inp = Input(data);
    let seed = u64::from(inp.byte());
    let missing = u64::from_le_bytes(inp.take(8).try_into().unwrap_or([0; 8]));
    let mut names = Vec::new();
    for _ in 0..inp.byte() % 4 {
        let n = usize::from(inp.byte() % 4);
        names.push(match inp.byte() % 3 {
            0 => b"a".to_vec(),
            1 => b"b".to_vec(),
            _ => inp.take(n),
        });
    }
    let mut all = BlockMap::new();
    let mut made: Vec<Cid> = Vec::new();
    while !inp.0.is_empty() && made.len() < 64 {
        let op = inp.byte() % 7;
        let pick = |i: u8| (!made.is_empty()).then(|| made[usize::from(i) % made.len()]);
        let (codec, block) = match op {
            0 => {
                let n = usize::from(inp.byte() % 64);
                (codec::RAW, inp.take(n))
            }
            1 => {
                let n = usize::from(inp.byte());
                (codec::DAG_PB, inp.take(n))
            }
            2 => {
                let mut d = UnixFsData::new(DataType::File);
                let n = usize::from(inp.byte() % 16);
                d.data = Some(Bytes::from(inp.take(n)));
                let mut links = Vec::new();
                for _ in 0..inp.byte() % 8 {
                    let (i, size) = (inp.byte(), inp.byte());
                    let Some(c) = pick(i) else { continue };
                    // mostly a raw child's real size, sometimes a lie
                    let real = all
                        .get(&c)
                        .filter(|_| c.codec() == codec::RAW && size & 0x80 == 0)
                        .map(|b| b.len() as u64);
                    let size = real.unwrap_or(u64::from(size & 0x7f));
                    d.blocksizes.push(size);
                    links.push(PbLink {
                        cid: c,
                        name: Some(vec![]),
                        tsize: Some(size),
                    });
                }
                let total = n as u64 + d.blocksizes.iter().sum::<u64>();
                d.filesize = match inp.byte() % 4 {
                    0 => None,
                    1 => Some(total + 1),
                    _ => Some(total),
                };
                (codec::DAG_PB, pb(d, links))
            }
            3 => {
                let mut links = Vec::new();
                for _ in 0..inp.byte() % 8 {
                    let n = usize::from(inp.byte() % 4);
                    let name = match inp.byte() % 4 {
                        0 => b"a".to_vec(),
                        1 => b"b".to_vec(),
                        _ => inp.take(n),
                    };
                    if let Some(c) = pick(inp.byte()) {
                        links.push(PbLink {
                            cid: c,
                            name: Some(name),
                            tsize: Some(1),
                        });
                    }
                }
                (
                    codec::DAG_PB,
                    pb(UnixFsData::new(DataType::Directory), links),
                )
            }
            4 => {
                let fanout = 1u32 << (3 + inp.byte() % 8);
                let width = hamt::prefix_width(fanout);
                let mut by_index = BTreeMap::new();
                for _ in 0..inp.byte() % 16 {
                    let idx = u32::from(u16::from_le_bytes([inp.byte(), inp.byte()])) % fanout;
                    let name = match inp.byte() % 3 {
                        0 => None,
                        1 => Some(b"a".to_vec()),
                        _ => {
                            let n = usize::from(inp.byte() % 4);
                            Some(inp.take(n))
                        }
                    };
                    if let Some(c) = pick(inp.byte()) {
                        by_index.insert(idx, (name, c));
                    }
                }
                let mut bitfield = vec![0u8; (fanout / 8) as usize];
                let n = bitfield.len();
                let mut links = Vec::new();
                for (idx, (name, c)) in by_index {
                    bitfield[n - 1 - (idx / 8) as usize] |= 1 << (idx % 8);
                    let mut lname = format!("{idx:0width$X}").into_bytes();
                    lname.extend_from_slice(name.as_deref().unwrap_or_default());
                    links.push(PbLink {
                        cid: c,
                        name: Some(lname),
                        tsize: Some(1),
                    });
                }
                let mut d = UnixFsData::new(DataType::HamtShard);
                d.data = Some(Bytes::from(bitfield));
                d.fanout = Some(u64::from(fanout));
                d.hash_type = Some(mh::MURMUR3_X64_64);
                (codec::DAG_PB, pb(d, links))
            }
            5 => {
                let mut d = UnixFsData::new(DataType::Symlink);
                let n = usize::from(inp.byte() % 8);
                d.data = Some(Bytes::from(inp.take(n)));
                (codec::DAG_PB, pb(d, vec![]))
            }
            _ => {
                // a truncated copy of the last block
                let Some(last) = made.last() else { continue };
                let mut b = all[last].to_vec();
                b.truncate(usize::from(inp.byte()) % (b.len() + 1));
                (last.codec(), b)
            }
        };
        let Ok(c) = cids::compute(Version::V1, codec, mh::SHA2_256, &block) else {
            continue;
        };
        all.insert(c, Bytes::from(block));
        made.push(c);
    }
    let n = made.len();
    let map = made
        .iter()
        .enumerate()
        .filter(|(i, _)| missing >> (i % 64) & 1 == 0 || i + 1 == n)
        .map(|(_, c)| (*c, all[c].clone()))
        .collect();
    (map, made, names, seed)
}

/// The fuzz target's body: blocks from `data`, then [`exercise`] from the last few blocks.
pub fn fuzz_one(data: &[u8]) {
    let (map, made, names, seed) = blocks_from_bytes(data);
    for c in made.iter().rev().take(3) {
        exercise(&map, *c, &names, seed);
    }
}
