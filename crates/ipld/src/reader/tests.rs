use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::{Cid, Version};
use proptest::prelude::*;

use super::dag::{DagWalk, Scope, Visited};
use super::file::{FileRange, Piece};
use super::listing::{Hidden, Listed, Listing};
use super::path::{PathWalk, Resolved};
use super::*;
use crate::builder::{build_directory, build_file, build_hamt, ImportProfile};
use crate::dagpb::{self, PbLink, PbNode};
use crate::unixfs::{encode_data, DataType, UnixFsData};
use crate::{cids, codec, hamt, mh};

pub(super) type Map = HashMap<Cid, Bytes>;

struct Getter<'a>(&'a Map);

impl BlockGetter for Getter<'_> {
    type Error = String;
    fn get_local(&self, cid: &Cid) -> Result<Option<Bytes>, String> {
        Ok(self.0.get(cid).cloned())
    }
    fn get(&self, cid: Cid) -> impl std::future::Future<Output = Result<Bytes, String>> + Send {
        let r = self
            .0
            .get(&cid)
            .cloned()
            .ok_or_else(|| format!("missing {cid}"));
        async move { r }
    }
}

use super::fuzzing::{drive, exercise};

fn pb_cid(block: &[u8]) -> Cid {
    cids::compute(Version::V1, codec::DAG_PB, mh::SHA2_256, block).unwrap()
}

fn raw_cid(block: &[u8]) -> Cid {
    cids::compute(Version::V1, codec::RAW, mh::SHA2_256, block).unwrap()
}

fn put(map: &mut Map, block: Vec<u8>) -> Cid {
    let c = pb_cid(&block);
    map.insert(c, Bytes::from(block));
    c
}

fn content(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn odd_profile(raw: bool) -> ImportProfile {
    let mut p = ImportProfile::unixfs_v0_2015();
    p.chunk_size = 1000;
    p.max_links = 5;
    if raw {
        p.cid_version = Version::V1;
        p.raw_leaves = true;
    }
    p
}

fn assemble(pieces: &[Piece], map: &Map) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        match p {
            Piece::Inline(b) => out.extend_from_slice(b),
            Piece::Leaf {
                cid,
                size,
                start,
                end,
            } => {
                let b = &map[cid];
                check_leaf(cid, b, *size).unwrap();
                out.extend_from_slice(&b[*start as usize..*end as usize]);
            }
        }
    }
    out
}

#[test]
fn file_ranges_read_back_exactly() {
    let data = content(37_123, 3);
    for raw in [false, true] {
        let built = build_file(&data, &odd_profile(raw));
        let map: Map = built.blocks.iter().cloned().collect();
        let n = data.len() as u64;
        for (from, to) in [
            (0, n),
            (0, 1),
            (999, 1001),
            (5000, 30_000),
            (n - 1, n),
            (n, n + 5),
            (7, u64::MAX),
        ] {
            for seed in [0, 1, 2] {
                let limits = if seed == 0 {
                    Limits::sequential()
                } else {
                    Limits::default()
                };
                let pieces =
                    drive(FileRange::new(built.root, n, from, to, limits), &map, seed).unwrap();
                let want = &data[(from.min(n)) as usize..to.min(n) as usize];
                assert_eq!(
                    assemble(&pieces, &map),
                    want,
                    "{from}..{to} raw={raw} seed={seed}"
                );
            }
        }
        // a wrong file size is a size mismatch at the root
        let e = drive(
            FileRange::new(built.root, n + 1, 0, 10, Limits::default()),
            &map,
            0,
        )
        .unwrap_err();
        assert!(matches!(e, Some(ReadError::SizeMismatch { .. })), "{e:?}");
        // depth limit
        let e = drive(
            FileRange::new(built.root, n, 0, n, Limits::default().with_max_depth(1)),
            &map,
            0,
        )
        .unwrap_err();
        assert!(matches!(e, Some(ReadError::TooDeep { .. })), "{e:?}");
    }
}

#[test]
fn file_of_repeated_chunks_asks_each_block_once() {
    let data = vec![0u8; 200_000];
    let built = build_file(&data, &odd_profile(true));
    let map: Map = built.blocks.iter().cloned().collect();
    assert!(map.len() < 10, "{}", map.len());
    let pieces = drive(
        FileRange::new(built.root, 200_000, 0, 200_000, Limits::default()),
        &map,
        5,
    )
    .unwrap();
    assert_eq!(assemble(&pieces, &map), data);
    // the DAG walk yields each distinct block once
    let visited = drive(
        DagWalk::new(built.root, Scope::All, Limits::default()),
        &map,
        5,
    )
    .unwrap();
    assert_eq!(visited.len(), map.len());
}

#[test]
fn lying_blocksizes_are_errors() {
    let mut map = Map::new();
    let leaf = b"hello world".to_vec();
    let leaf_cid = raw_cid(&leaf);
    map.insert(leaf_cid, Bytes::from(leaf));
    let mut d = UnixFsData::new(DataType::File);
    d.blocksizes = vec![5]; // the leaf holds 11
    d.filesize = Some(5);
    let root = put(
        &mut map,
        dagpb::encode(&PbNode {
            links: vec![PbLink {
                cid: leaf_cid,
                name: Some(vec![]),
                tsize: Some(11),
            }],
            data: Some(Bytes::from(encode_data(&d))),
        }),
    );
    let pieces = drive(FileRange::new(root, 5, 0, 5, Limits::default()), &map, 0).unwrap();
    let Piece::Leaf { cid, size, .. } = &pieces[0] else {
        panic!()
    };
    assert!(matches!(
        check_leaf(cid, &map[cid], *size),
        Err(ReadError::SizeMismatch {
            declared: 5,
            actual: 11,
            ..
        })
    ));
    let e = drive(
        DagWalk::new(root, Scope::Entity { range: None }, Limits::default()),
        &map,
        0,
    )
    .unwrap_err();
    assert!(matches!(e, Some(ReadError::SizeMismatch { .. })), "{e:?}");
    // lenient: the block is yielded, not followed further
    let v = drive(
        DagWalk::new(root, Scope::Entity { range: None }, Limits::default()).lenient(),
        &map,
        0,
    )
    .unwrap();
    assert_eq!(v.len(), 2);
}

fn entries(n: usize) -> Vec<(Vec<u8>, Cid, u64)> {
    (0..n)
        .map(|i| {
            let name = format!("file-{i:05}").into_bytes();
            (name.clone(), raw_cid(&name), name.len() as u64)
        })
        .collect()
}

#[test]
fn hamt_listing_and_lookup() {
    let mut profile = ImportProfile::unixfs_v1_2025();
    profile.fanout = 8;
    let ents = entries(300);
    let built = build_hamt(&ents, &profile);
    let map: Map = built.blocks.iter().cloned().collect();
    let mut want: Vec<Vec<u8>> = ents.iter().map(|e| e.0.clone()).collect();
    want.sort();
    let mut orders = Vec::new();
    for seed in [0, 1, 7] {
        let items = drive(Listing::new(built.root, Limits::default()), &map, seed).unwrap();
        let names: Vec<Vec<u8>> = items
            .into_iter()
            .map(|i| match i {
                Listed::Entry(e) => e.name,
                other => panic!("{other:?}"),
            })
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, want);
        orders.push(names);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "order depends on fetch timing"
    );
    for (name, cid, _) in ents.iter().step_by(37) {
        let r = drive(
            PathWalk::new(built.root, vec![name.clone()], Limits::default()),
            &map,
            0,
        )
        .unwrap();
        assert_eq!(
            r,
            vec![Resolved::Found {
                cid: *cid,
                tsize: Some(name.len() as u64)
            }]
        );
    }
    let r = drive(
        PathWalk::new(built.root, vec![b"nope".to_vec()], Limits::default()),
        &map,
        0,
    )
    .unwrap();
    assert_eq!(
        r,
        vec![Resolved::NotFound {
            dir: built.root,
            at: 0
        }]
    );
    // entity walk: every shard, no entry
    let shards = drive(
        DagWalk::new(built.root, Scope::Entity { range: None }, Limits::default()),
        &map,
        3,
    )
    .unwrap();
    assert_eq!(shards.len(), map.len());
    // a depth limit of 0 stops at the first sub-shard
    let e = drive(
        Listing::new(built.root, Limits::default().with_max_depth(0)),
        &map,
        0,
    )
    .unwrap_err();
    assert!(matches!(e, Some(ReadError::TooDeep { .. })), "{e:?}");
}

#[test]
fn plain_directory_hides_unsafe_and_duplicate_names_and_paths_resolve() {
    let mut map = Map::new();
    let file = build_file(b"contents", &ImportProfile::unixfs_v1_2025());
    map.extend(file.blocks.iter().cloned());
    let mut d = UnixFsData::new(DataType::Symlink);
    d.data = Some(Bytes::from_static(b"../elsewhere"));
    let link = put(
        &mut map,
        dagpb::encode(&PbNode {
            links: vec![],
            data: Some(Bytes::from(encode_data(&d))),
        }),
    );
    let names: [&[u8]; 7] = [b"a", b"..", b"", b"x/y", b"n\0", b"a", b"ln"];
    let links = names
        .iter()
        .map(|n| PbLink {
            cid: if *n == b"ln" { link } else { file.root },
            name: Some(n.to_vec()),
            tsize: Some(1),
        })
        .collect();
    let dir = put(
        &mut map,
        dagpb::encode(&PbNode {
            links,
            data: Some(Bytes::from(encode_data(&UnixFsData::new(
                DataType::Directory,
            )))),
        }),
    );
    let items = drive(Listing::new(dir, Limits::default()), &map, 0).unwrap();
    let listed: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            Listed::Entry(e) => Some(e.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(listed, vec![b"a".to_vec(), b"ln".to_vec()]);
    let hidden: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            Listed::Hidden { why, .. } => Some(*why),
            _ => None,
        })
        .collect();
    assert_eq!(
        hidden,
        vec![Hidden::UnsafeName; 4]
            .into_iter()
            .chain([Hidden::Duplicate])
            .collect::<Vec<_>>()
    );
    let walk = |names: &[&[u8]]| {
        drive(
            PathWalk::new(
                dir,
                names.iter().map(|n| n.to_vec()).collect(),
                Limits::default(),
            ),
            &map,
            0,
        )
        .unwrap()
    };
    assert_eq!(
        walk(&[b"a"]),
        vec![Resolved::Found {
            cid: file.root,
            tsize: Some(1)
        }]
    );
    assert_eq!(
        walk(&[]),
        vec![Resolved::Found {
            cid: dir,
            tsize: None
        }]
    );
    assert_eq!(walk(&[b".."]), vec![Resolved::NotFound { dir, at: 0 }]);
    assert_eq!(
        walk(&[b"a", b"b"]),
        vec![Resolved::NotDirectory {
            cid: file.root,
            at: 1
        }]
    );
    assert_eq!(
        walk(&[b"ln", b"b"]),
        vec![Resolved::Symlink {
            cid: link,
            target: b"../elsewhere".to_vec(),
            at: 1
        }]
    );
    // a listing of a file is an error naming it
    let e = drive(Listing::new(file.root, Limits::default()), &map, 0).unwrap_err();
    assert_eq!(e, Some(ReadError::NotDirectory { cid: file.root }));
}

/// A HAMT shard node of fanout 1024 whose every bucket links to the shard `child`.
fn all_buckets_to(child: Cid) -> Vec<u8> {
    let links = (0..1024u32)
        .map(|i| PbLink {
            cid: child,
            name: Some(format!("{i:03X}").into_bytes()),
            tsize: Some(1),
        })
        .collect();
    let mut d = UnixFsData::new(DataType::HamtShard);
    d.data = Some(Bytes::from(vec![0xffu8; 128]));
    d.fanout = Some(1024);
    d.hash_type = Some(mh::MURMUR3_X64_64);
    dagpb::encode(&PbNode {
        links,
        data: Some(Bytes::from(encode_data(&d))),
    })
}

/// Three blocks: a shard with 1024 links to S1, whose 1024 links all go to S2, a leaf shard
/// with `n` entries. Returns (map, root, S2's entry names).
pub(super) fn shared_children_hamt(n: usize) -> (Map, Cid, Vec<Vec<u8>>) {
    let mut map = Map::new();
    let ents = entries(n);
    let mut links = Vec::new();
    let mut bitfield = vec![0u8; 128];
    let mut used = BTreeSet::new();
    for (name, cid, tsize) in &ents {
        let idx = hamt::bucket_index(name, 2, 1024).unwrap();
        if !used.insert(idx) {
            continue;
        }
        bitfield[127 - (idx / 8) as usize] |= 1 << (idx % 8);
        let mut lname = format!("{idx:03X}").into_bytes();
        lname.extend_from_slice(name);
        links.push((
            idx,
            PbLink {
                cid: *cid,
                name: Some(lname),
                tsize: Some(*tsize),
            },
        ));
    }
    links.sort_by_key(|l| l.0);
    let names = links
        .iter()
        .map(|(_, l)| l.name.as_ref().unwrap()[3..].to_vec())
        .collect();
    let mut d = UnixFsData::new(DataType::HamtShard);
    d.data = Some(Bytes::from(bitfield));
    d.fanout = Some(1024);
    d.hash_type = Some(mh::MURMUR3_X64_64);
    let s2 = put(
        &mut map,
        dagpb::encode(&PbNode {
            links: links.into_iter().map(|l| l.1).collect(),
            data: Some(Bytes::from(encode_data(&d))),
        }),
    );
    let s1 = put(&mut map, all_buckets_to(s2));
    let root = put(&mut map, all_buckets_to(s1));
    (map, root, names)
}

#[test]
fn shared_children_hamt_costs_its_distinct_blocks() {
    let (map, root, names) = shared_children_hamt(50);
    assert_eq!(map.len(), 3);
    for seed in [0, 1] {
        let t = Instant::now();
        let items = drive(Listing::new(root, Limits::default()), &map, seed).unwrap();
        let listed: Vec<Vec<u8>> = items
            .into_iter()
            .map(|i| match i {
                Listed::Entry(e) => e.name,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(listed, names, "each entry once, in bucket order");
        let took = t.elapsed();
        assert!(took < Duration::from_secs(1), "listing took {took:?}");
        let t = Instant::now();
        let shards = drive(
            DagWalk::new(root, Scope::Entity { range: None }, Limits::default()),
            &map,
            seed,
        )
        .unwrap();
        assert_eq!(
            shards.iter().map(|v| v.depth).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "entity walk took {:?}",
            t.elapsed()
        );
        // every block, including the entries' targets (raw blocks put here)
        let mut full = map.clone();
        for n in &names {
            full.insert(raw_cid(n), Bytes::from(n.clone()));
        }
        let t = Instant::now();
        let all = drive(
            DagWalk::new(root, Scope::All, Limits::default()),
            &full,
            seed,
        )
        .unwrap();
        assert_eq!(all.len(), 3 + names.len());
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "full walk took {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn async_driver_and_local_driver() {
    let data = content(20_000, 9);
    let built = build_file(&data, &odd_profile(false));
    let map: Map = built.blocks.iter().cloned().collect();
    let g = Getter(&map);
    let planner = FileRange::new(
        built.root,
        data.len() as u64,
        100,
        15_000,
        Limits::default(),
    );
    let pieces = futures_executor::block_on(collect(planner, &g)).unwrap();
    assert_eq!(assemble(&pieces, &map), &data[100..15_000]);
    let planner = FileRange::new(
        built.root,
        data.len() as u64,
        100,
        15_000,
        Limits::default(),
    );
    let pieces = collect_local(planner, &g).unwrap().unwrap();
    assert_eq!(assemble(&pieces, &map), &data[100..15_000]);
    // a block that is not local: None; not fetchable: an error
    let empty = Map::new();
    let planner = FileRange::new(built.root, data.len() as u64, 0, 10, Limits::default());
    assert!(collect_local(planner, &Getter(&empty)).unwrap().is_none());
    let planner = FileRange::new(built.root, data.len() as u64, 0, 10, Limits::default());
    assert!(matches!(
        futures_executor::block_on(collect(planner, &Getter(&empty))),
        Err(DriveError::Get(_))
    ));
}

#[test]
fn dag_walk_ranges_and_order() {
    let data = content(50_000, 11);
    let built = build_file(&data, &odd_profile(true));
    let map: Map = built.blocks.iter().cloned().collect();
    let all: Vec<Visited> = drive(
        DagWalk::new(built.root, Scope::All, Limits::default()),
        &map,
        0,
    )
    .unwrap();
    assert_eq!(all.len(), map.len());
    assert_eq!(all[0].cid, built.root);
    // leaves come in file order
    let leaves: Vec<u8> = all
        .iter()
        .filter(|v| v.cid.codec() == codec::RAW)
        .flat_map(|v| v.block.to_vec())
        .collect();
    assert_eq!(leaves, data);
    for seed in [1, 2, 3] {
        let again = drive(
            DagWalk::new(
                built.root,
                Scope::All,
                Limits::default().with_window(3, 1 << 20),
            ),
            &map,
            seed,
        )
        .unwrap();
        assert_eq!(again, all, "order independent of fetch order");
    }
    // a range: exactly the leaves overlapping it, plus their ancestors
    let ranged = drive(
        DagWalk::new(
            built.root,
            Scope::Entity {
                range: Some((2500, 4499)),
            },
            Limits::default(),
        ),
        &map,
        2,
    )
    .unwrap();
    let leaves: Vec<u8> = ranged
        .iter()
        .filter(|v| v.cid.codec() == codec::RAW)
        .flat_map(|v| v.block.to_vec())
        .collect();
    assert_eq!(leaves, &data[2000..5000]);
    let e = drive(
        DagWalk::new(
            built.root,
            Scope::All,
            Limits {
                max_blocks: 3,
                ..Limits::default()
            },
        ),
        &map,
        0,
    )
    .unwrap_err();
    assert!(
        matches!(e, Some(ReadError::TooManyBlocks { limit: 3, .. })),
        "{e:?}"
    );
    let one = drive(
        DagWalk::new(built.root, Scope::Block, Limits::default()),
        &map,
        0,
    )
    .unwrap();
    assert_eq!(one.len(), 1);
}

// ---- property tests over arbitrary block maps ----

/// A recipe for a block: links only go to blocks made before it, so any DAG shape (and any
/// amount of sharing) can come out, cycles cannot.
#[derive(Debug, Clone)]
enum Recipe {
    Raw(Vec<u8>),
    File {
        inline: Vec<u8>,
        children: Vec<(usize, u64)>,
        filesize_delta: i8,
    },
    Dir(Vec<(Vec<u8>, usize)>),
    Shard {
        fanout_log: u8,
        links: Vec<(u16, Option<Vec<u8>>, usize)>,
    },
    Symlink(Vec<u8>),
    Garbage(Vec<u8>),
    Truncated(Box<Recipe>, u16),
}

fn recipe() -> impl Strategy<Value = Recipe> {
    let leaf = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Recipe::Raw),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Recipe::Garbage),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Recipe::Symlink),
    ];
    let name = prop_oneof![
        Just(b"a".to_vec()),
        Just(b"b".to_vec()),
        Just(b"..".to_vec()),
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..4)
    ];
    let node = prop_oneof![
        (
            prop::collection::vec(any::<u8>(), 0..8),
            prop::collection::vec((any::<usize>(), 0u64..80), 0..6),
            -1i8..=1
        )
            .prop_map(|(inline, children, filesize_delta)| Recipe::File {
                inline,
                children,
                filesize_delta
            }),
        prop::collection::vec((name.clone(), any::<usize>()), 0..6).prop_map(Recipe::Dir),
        (
            3u8..=4,
            prop::collection::vec((0u16..16, prop::option::of(name), any::<usize>()), 0..8)
        )
            .prop_map(|(fanout_log, links)| Recipe::Shard { fanout_log, links }),
    ];
    prop_oneof![3 => leaf, 6 => node.clone(), 1 => (node, any::<u16>()).prop_map(|(r, n)| Recipe::Truncated(Box::new(r), n))]
}

fn make(r: &Recipe, made: &[Cid], map: &Map) -> (u64, Vec<u8>) {
    let pick = |i: usize| {
        if made.is_empty() {
            None
        } else {
            Some(made[i % made.len()])
        }
    };
    let data_node = |d: UnixFsData, links: Vec<PbLink>| {
        dagpb::encode(&PbNode {
            links,
            data: Some(Bytes::from(encode_data(&d))),
        })
    };
    match r {
        Recipe::Raw(b) => (codec::RAW, b.clone()),
        Recipe::Garbage(b) => (codec::DAG_PB, b.clone()),
        Recipe::Symlink(t) => {
            let mut d = UnixFsData::new(DataType::Symlink);
            d.data = Some(Bytes::from(t.clone()));
            (codec::DAG_PB, data_node(d, vec![]))
        }
        Recipe::File {
            inline,
            children,
            filesize_delta,
        } => {
            let mut d = UnixFsData::new(DataType::File);
            d.data = Some(Bytes::from(inline.clone()));
            let mut links = Vec::new();
            for &(i, size) in children {
                let Some(c) = pick(i) else { continue };
                // mostly the child's real size (raw leaves: their length), sometimes a lie
                let real = map
                    .get(&c)
                    .filter(|_| c.codec() == codec::RAW)
                    .map(|b| b.len() as u64);
                let size = real.filter(|_| size % 7 != 0).unwrap_or(size);
                d.blocksizes.push(size);
                links.push(PbLink {
                    cid: c,
                    name: Some(vec![]),
                    tsize: Some(size),
                });
            }
            let total = inline.len() as u64 + d.blocksizes.iter().sum::<u64>();
            d.filesize = Some(total.saturating_add_signed(i64::from(*filesize_delta)));
            (codec::DAG_PB, data_node(d, links))
        }
        Recipe::Dir(ents) => {
            let links = ents
                .iter()
                .filter_map(|(n, i)| {
                    pick(*i).map(|c| PbLink {
                        cid: c,
                        name: Some(n.clone()),
                        tsize: Some(1),
                    })
                })
                .collect();
            (
                codec::DAG_PB,
                data_node(UnixFsData::new(DataType::Directory), links),
            )
        }
        Recipe::Shard { fanout_log, links } => {
            let fanout = 1u32 << fanout_log;
            let width = hamt::prefix_width(fanout);
            let mut by_index = std::collections::BTreeMap::new();
            for (idx, name, i) in links {
                let idx = u32::from(*idx) % fanout;
                if let Some(c) = pick(*i) {
                    by_index.insert(idx, (name.clone(), c));
                }
            }
            let mut bitfield = vec![0u8; (fanout / 8) as usize];
            let n = bitfield.len();
            let mut pl = Vec::new();
            for (idx, (name, c)) in by_index {
                bitfield[n - 1 - (idx / 8) as usize] |= 1 << (idx % 8);
                let mut lname = format!("{idx:0width$X}").into_bytes();
                if let Some(name) = name {
                    lname.extend_from_slice(&name);
                }
                pl.push(PbLink {
                    cid: c,
                    name: Some(lname),
                    tsize: Some(1),
                });
            }
            let mut d = UnixFsData::new(DataType::HamtShard);
            d.data = Some(Bytes::from(bitfield));
            d.fanout = Some(u64::from(fanout));
            d.hash_type = Some(mh::MURMUR3_X64_64);
            (codec::DAG_PB, data_node(d, pl))
        }
        Recipe::Truncated(r, n) => {
            let (c, mut b) = make(r, made, map);
            b.truncate(usize::from(*n) % (b.len() + 1));
            (c, b)
        }
    }
}

/// Builds the blocks of `recipes`; some CIDs are left out of the map (missing blocks).
fn build(recipes: &[Recipe], missing_mask: u64) -> (Map, Vec<Cid>) {
    let mut map = Map::new();
    let mut made = Vec::new();
    let mut present = Map::new();
    for (i, r) in recipes.iter().enumerate() {
        let (codec, block) = make(r, &made, &map);
        let c = cids::compute(Version::V1, codec, mh::SHA2_256, &block).unwrap();
        map.insert(c, Bytes::from(block.clone()));
        if missing_mask >> (i % 64) & 1 == 0 || i + 1 == recipes.len() {
            present.insert(c, Bytes::from(block));
        }
        made.push(c);
    }
    (present, made)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn planners_never_panic_on_arbitrary_dags(
        recipes in prop::collection::vec(recipe(), 1..24),
        missing in any::<u64>(),
        names in prop::collection::vec(prop_oneof![Just(b"a".to_vec()), Just(b"b".to_vec()), prop::collection::vec(any::<u8>(), 0..3)], 0..4),
    ) {
        let (map, made) = build(&recipes, missing);
        let root = *made.last().unwrap();
        exercise(&map, root, &names, 3);
        // every block of the map as a root too
        for c in made.iter().rev().take(4) {
            exercise(&map, *c, &names, 5);
        }
    }

    #[test]
    fn fuzz_interpreter_over_random_bytes(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        super::fuzzing::fuzz_one(&data);
    }

    #[test]
    fn file_ranges_match_content(len in 0usize..6000, from in 0u64..7000, span in 0u64..7000, seed in 0u64..4, raw: bool) {
        let data = content(len, 5);
        let built = build_file(&data, &odd_profile(raw));
        let map: Map = built.blocks.iter().cloned().collect();
        let to = from.saturating_add(span);
        let pieces = drive(FileRange::new(built.root, data.len() as u64, from, to, Limits::default().with_window(2, 1 << 20)), &map, seed).unwrap();
        let n = data.len() as u64;
        let want = if from < n { &data[from as usize..to.min(n) as usize] } else { &[][..] };
        prop_assert_eq!(assemble(&pieces, &map), want);
        let ranged = drive(DagWalk::new(built.root, Scope::Entity { range: Some((from, to.saturating_sub(1))) }, Limits::default()), &map, seed);
        prop_assert!(ranged.is_ok());
    }
}

#[test]
fn plain_directory_built_by_the_builder() {
    let ents = entries(20);
    let built = build_directory(&ents, &ImportProfile::unixfs_v0_2015());
    let map: Map = built.blocks.iter().cloned().collect();
    let items = drive(Listing::new(built.root, Limits::default()), &map, 0).unwrap();
    assert_eq!(items.len(), 20);
}

#[test]
fn dag_walk_follows_document_links_in_canonical_order() {
    use ipld_core::ipld::Ipld;
    let mut map = Map::new();
    let leaf = |s: &str, map: &mut Map| {
        let c = raw_cid(s.as_bytes());
        map.insert(c, Bytes::from(s.as_bytes().to_vec()));
        c
    };
    let (a, b, c) = (
        leaf("a", &mut map),
        leaf("b", &mut map),
        leaf("c", &mut map),
    );
    let doc = Ipld::Map(
        [
            ("zz".to_string(), Ipld::Link(a)),
            (
                "b".to_string(),
                Ipld::List(vec![Ipld::Link(b), Ipld::Link(a)]),
            ),
            ("aaa".to_string(), Ipld::Link(c)),
        ]
        .into_iter()
        .collect(),
    );
    let block = serde_ipld_dagcbor::to_vec(&doc).unwrap();
    let root = cids::compute(Version::V1, codec::DAG_CBOR, mh::SHA2_256, &block).unwrap();
    map.insert(root, Bytes::from(block));
    let v = drive(DagWalk::new(root, Scope::All, Limits::default()), &map, 1).unwrap();
    // dag-cbor order: "b", "zz", "aaa"; `a` once
    assert_eq!(
        v.iter().map(|v| v.cid).collect::<Vec<_>>(),
        vec![root, b, a, c]
    );
    // garbage dag-cbor: an error (strict), a leaf (lenient)
    let bad = b"\xff\xff".to_vec();
    let bad_cid = cids::compute(Version::V1, codec::DAG_CBOR, mh::SHA2_256, &bad).unwrap();
    map.insert(bad_cid, Bytes::from(bad));
    assert!(drive(
        DagWalk::new(bad_cid, Scope::All, Limits::default()),
        &map,
        0
    )
    .is_err());
    assert_eq!(
        drive(
            DagWalk::new(bad_cid, Scope::All, Limits::default()).lenient(),
            &map,
            0
        )
        .unwrap()
        .len(),
        1
    );
}

/// Drives a planner with each block provided at once; returns the items and the CIDs asked.
fn drive_counting<P: Planner + SkipNode>(
    p: &mut P,
    map: &Map,
    mut skip: impl FnMut(&Cid) -> bool,
) -> (Vec<P::Item>, Vec<Cid>) {
    let mut items = Vec::new();
    let mut asked = Vec::new();
    loop {
        match p.next().unwrap() {
            Step::Need(c) => {
                asked.push(c);
                if skip(&c) {
                    p.skip_node(&c);
                } else {
                    p.provide(&c, map[&c].clone()).unwrap();
                }
            }
            Step::Item(i) => items.push(i),
            Step::Wait => panic!("waits with every block provided"),
            Step::Done => return (items, asked),
        }
    }
}

trait SkipNode {
    fn skip_node(&mut self, cid: &Cid);
}
impl SkipNode for FileRange<'_> {
    fn skip_node(&mut self, cid: &Cid) {
        self.skip(cid)
    }
}
impl SkipNode for DagWalk {
    fn skip_node(&mut self, _: &Cid) {
        unreachable!()
    }
}
impl SkipNode for super::leaves::Leaves {
    fn skip_node(&mut self, _: &Cid) {
        unreachable!()
    }
}

#[test]
fn file_range_takes_interior_nodes_from_a_cache() {
    let data = content(60_000, 3);
    let built = build_file(&data, &odd_profile(true));
    let map: Map = built.blocks.iter().cloned().collect();
    let size = data.len() as u64;
    let cache = super::fuzzing::MapCache::default();
    let mut first = FileRange::new(built.root, size, 0, size, Limits::default()).with_cache(&cache);
    let (pieces, asked) = drive_counting(&mut first, &map, |_| false);
    assert_eq!(assemble(&pieces, &map), data);
    let interior: BTreeSet<Cid> = cache.0.lock().unwrap().keys().copied().collect();
    assert!(interior.len() > 1, "a file of several levels");
    assert_eq!(
        interior,
        asked.iter().copied().collect(),
        "every node asked is interior"
    );
    // the second read asks for nothing: every dag-pb node is in the cache
    let mut second =
        FileRange::new(built.root, size, 1000, 50_000, Limits::default()).with_cache(&cache);
    let (pieces, asked) = drive_counting(&mut second, &map, |_| false);
    assert!(asked.is_empty(), "{asked:?}");
    assert_eq!(assemble(&pieces, &map), &data[1000..50_000]);
}

#[test]
fn file_range_skipped_nodes_give_no_pieces() {
    let data = content(60_000, 4);
    let built = build_file(&data, &odd_profile(true));
    let map: Map = built.blocks.iter().cloned().collect();
    let size = data.len() as u64;
    // skip every node but the root: the root's children are interior nodes, so no piece
    let root = built.root;
    let mut p = FileRange::new(root, size, 0, size, Limits::default());
    let (pieces, asked) = drive_counting(&mut p, &map, |c| *c != root);
    assert!(pieces.is_empty(), "{pieces:?}");
    assert!(asked.len() > 1 && asked[0] == root);
    assert!(asked.iter().all(|c| c.codec() == codec::DAG_PB));
}

#[test]
fn dag_walk_with_repeats_yields_every_path_and_reads_each_block_once() {
    // a root of 8 links to one node of 8 links to one leaf: 3 blocks, 1 + 8 + 64 visits
    let leaf = Bytes::from(content(16, 1));
    let leaf_cid = raw_cid(&leaf);
    let node = |child: Cid, size: u64| {
        let mut d = UnixFsData::new(DataType::File);
        d.blocksizes = vec![size; 8];
        d.filesize = Some(size * 8);
        let links = (0..8)
            .map(|_| PbLink {
                cid: child,
                name: Some(vec![]),
                tsize: Some(size),
            })
            .collect();
        let b = dagpb::encode(&PbNode {
            links,
            data: Some(Bytes::from(encode_data(&d))),
        });
        (pb_cid(&b), Bytes::from(b))
    };
    let mid = node(leaf_cid, 16);
    let root = node(mid.0, 128);
    let map: Map = [(leaf_cid, leaf), mid.clone(), root.clone()]
        .into_iter()
        .collect();
    for scope in [
        Scope::All,
        Scope::Entity { range: None },
        Scope::Entity {
            range: Some((0, 1023)),
        },
    ] {
        let mut w = DagWalk::new(root.0, scope, Limits::default()).with_repeats();
        let (items, asked) = drive_counting(&mut w, &map, |_| false);
        assert_eq!(items.len(), 1 + 8 + 64, "{scope:?}");
        assert_eq!(asked.len(), 3, "{scope:?}");
        assert_eq!(items[1].cid, mid.0);
        assert_eq!(items[2].cid, leaf_cid);
        assert_eq!(items[2].depth, 2);
        // without repeats: each block once
        let mut w = DagWalk::new(root.0, scope, Limits::default());
        assert_eq!(drive_counting(&mut w, &map, |_| false).0.len(), 3);
    }
    // a range: only the paths over it
    let mut w = DagWalk::new(
        root.0,
        Scope::Entity {
            range: Some((16, 47)),
        },
        Limits::default(),
    )
    .with_repeats();
    assert_eq!(drive_counting(&mut w, &map, |_| false).0.len(), 1 + 1 + 2);
    // repeats count against max_blocks
    let limits = Limits {
        max_blocks: 20,
        ..Limits::default()
    };
    let e = drive(
        DagWalk::new(root.0, Scope::All, limits).with_repeats(),
        &map,
        0,
    )
    .unwrap_err();
    assert!(matches!(e, Some(ReadError::TooManyBlocks { .. })), "{e:?}");
}

#[test]
fn leaves_of_a_sparse_file_cost_its_distinct_blocks() {
    use super::leaves::{FileLeaf, Leaves, Run};
    // 64 x 64 links to one 16-byte leaf, below a root: 3 blocks, 4096 leaves, one run
    let leaf = Bytes::from(vec![0u8; 16]);
    let leaf_cid = raw_cid(&leaf);
    let node = |child: Cid, size: u64, tsize: u64| {
        let mut d = UnixFsData::new(DataType::File);
        d.blocksizes = vec![size; 64];
        d.filesize = Some(size * 64);
        let links = (0..64)
            .map(|_| PbLink {
                cid: child,
                name: Some(vec![]),
                tsize: Some(tsize),
            })
            .collect();
        let b = dagpb::encode(&PbNode {
            links,
            data: Some(Bytes::from(encode_data(&d))),
        });
        (pb_cid(&b), Bytes::from(b))
    };
    let mid = node(leaf_cid, 16, 16);
    let root = node(mid.0, 1024, 2000);
    let map: Map = [(leaf_cid, leaf), mid.clone(), root.clone()]
        .into_iter()
        .collect();
    let mut p = Leaves::new(root.0, 65_536, Some(9), Limits::default());
    let (runs, asked) = drive_counting(&mut p, &map, |_| false);
    assert_eq!(
        asked,
        vec![root.0, mid.0],
        "each distinct dag-pb block once, no raw leaf"
    );
    let one = FileLeaf {
        cid: leaf_cid,
        size: 16,
        tsize: Some(16),
    };
    assert_eq!(
        runs,
        vec![Run::Leaf {
            leaf: one,
            count: 4096
        }]
    );
    // a parent that declares another size is an error
    let mut p = Leaves::new(root.0, 65_535, None, Limits::default());
    assert!(matches!(p.next(), Ok(Step::Need(_))));
    p.provide(&root.0, map[&root.0].clone()).unwrap();
    assert!(matches!(p.next(), Err(ReadError::SizeMismatch { .. })));
    // a file of distinct leaves: one run per leaf, in file order, Tsizes from the links
    let data = content(50_000, 7);
    let built = build_file(&data, &odd_profile(false));
    let map: Map = built.blocks.iter().cloned().collect();
    let runs = drive(
        Leaves::new(built.root, 50_000, None, Limits::default()),
        &map,
        3,
    )
    .unwrap();
    assert_eq!(runs.iter().map(|r| r.len()).sum::<u64>(), 50_000);
    assert!(runs.iter().all(|r| matches!(r, Run::Leaf { leaf, count: 1 } if leaf.cid.codec() == codec::DAG_PB && leaf.tsize.is_some())));
    let mut bytes = Vec::new();
    for r in &runs {
        let Run::Leaf { leaf, .. } = r else {
            unreachable!()
        };
        match crate::unixfs::decode_node(&leaf.cid, &map[&leaf.cid]).unwrap() {
            crate::unixfs::Node::File(f) => bytes.extend_from_slice(&f.inline),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(bytes, data, "the leaves in file order");
}
