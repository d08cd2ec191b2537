//! Tests against the gateway-conformance fixture CARs in `../shared/fixtures` (or
//! `$IPFS_MOUNT_SHARED/fixtures`): skipped without them, failed under
//! `IPFS_MOUNT_REQUIRE_PEERS=1` (CI).

mod shared;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use ipfs_mount_ipld::car::CarDecoder;
use ipfs_mount_ipld::hamt::{self, HamtLink, Step};
use ipfs_mount_ipld::unixfs::{self, Node};
use ipfs_mount_ipld::{cids, codec, dagpb, Cid};

use shared::fixtures_dir;

fn car_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "car") {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&fixtures_dir(), &mut v);
    v.sort();
    v
}

struct Car {
    roots: Vec<Cid>,
    blocks: Vec<(Cid, Bytes)>,
}

fn read_car(path: &Path) -> Car {
    let bytes = std::fs::read(path).unwrap();
    let mut d = CarDecoder::new();
    d.push(&bytes);
    let mut blocks = Vec::new();
    while let Some(b) = d
        .next_block()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    {
        blocks.push(b);
    }
    d.finish().unwrap();
    Car {
        roots: d.header().unwrap().roots.clone(),
        blocks,
    }
}

fn load(rel: &str) -> Car {
    read_car(&fixtures_dir().join(rel))
}

/// The fixtures are there; else the test skips (or fails in CI).
fn have_fixtures() -> bool {
    shared::require_fixtures().is_some()
}

#[test]
fn every_block_verifies_and_recomputes() {
    if !have_fixtures() {
        return;
    }
    let files = car_files();
    assert!(files.len() >= 20, "found {} CARs", files.len());
    let mut n = 0;
    for f in &files {
        let car = read_car(f);
        assert!(!car.roots.is_empty(), "{}", f.display());
        for (cid, data) in &car.blocks {
            cids::verify(cid, data).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            let again = cids::compute(cid.version(), cid.codec(), cid.hash().code(), data).unwrap();
            assert_eq!(&again, cid);
            n += 1;
        }
    }
    assert!(n > 300, "{n} blocks");
}

#[test]
fn dagpb_blocks_reencode_identically() {
    if !have_fixtures() {
        return;
    }
    let mut n = 0;
    for f in car_files() {
        for (cid, data) in read_car(&f).blocks {
            if cid.codec() != codec::DAG_PB {
                continue;
            }
            let node =
                dagpb::decode(&data).unwrap_or_else(|e| panic!("{} {cid}: {e}", f.display()));
            assert_eq!(dagpb::encode(&node), data.to_vec(), "{} {cid}", f.display());
            if let Some(d) = &node.data {
                let u = unixfs::decode_data(d).unwrap();
                assert_eq!(unixfs::encode_data(&u), d.to_vec(), "{} {cid}", f.display());
            }
            n += 1;
        }
    }
    assert!(n > 100);
}

#[test]
fn every_block_decodes_as_a_node() {
    if !have_fixtures() {
        return;
    }
    let mut kinds: HashMap<&'static str, usize> = HashMap::new();
    for f in car_files() {
        for (cid, data) in read_car(&f).blocks {
            let node = unixfs::decode_node_shared(&cid, &data)
                .unwrap_or_else(|e| panic!("{} {cid}: {e}", f.display()));
            let k = match node {
                Node::File(_) => "file",
                Node::Directory(_) => "dir",
                Node::HamtShard(_) => "hamt",
                Node::Symlink(_) => "symlink",
                Node::Document(_) => "doc",
            };
            *kinds.entry(k).or_default() += 1;
        }
    }
    for k in ["file", "dir", "hamt", "symlink", "doc"] {
        assert!(
            kinds.get(k).copied().unwrap_or(0) > 0,
            "no {k} in fixtures: {kinds:?}"
        );
    }
}

#[test]
fn known_cids() {
    if !have_fixtures() {
        return;
    }
    // CIDv0 root of the symlink fixture: recompute from the dag-pb bytes.
    let car = load("path_gateway_unixfs/symlink.car");
    let root = cids::parse("QmWvY6FaqFMS89YAQ9NAPjVP4WZKA1qbHbicc9HeSKQTgt").unwrap();
    assert_eq!(car.roots, vec![root]);
    let (_, data) = car.blocks.iter().find(|(c, _)| *c == root).unwrap();
    let c = cids::compute(cid::Version::V0, codec::DAG_PB, 0x12, data).unwrap();
    assert_eq!(
        c.to_string(),
        "QmWvY6FaqFMS89YAQ9NAPjVP4WZKA1qbHbicc9HeSKQTgt"
    );
    // the re-encoded decoded node has the same CID
    let re = dagpb::encode(&dagpb::decode(data).unwrap());
    assert_eq!(
        cids::compute(cid::Version::V0, codec::DAG_PB, 0x12, &re).unwrap(),
        root
    );
    // and the directory contains a symlink
    let Node::Directory(dir) = unixfs::decode_node(&root, data).unwrap() else {
        panic!()
    };
    let mut saw_symlink = false;
    for e in &dir.entries {
        assert!(unixfs::is_safe_name(&e.name));
        let (_, b) = car.blocks.iter().find(|(c, _)| *c == e.cid).unwrap();
        if let Node::Symlink(s) = unixfs::decode_node(&e.cid, b).unwrap() {
            assert!(!s.target.is_empty());
            saw_symlink = true;
        }
    }
    assert!(saw_symlink);
    // CIDv1 root
    let car = load("path_gateway_unixfs/dir-with-files.car");
    assert_eq!(
        car.roots[0].to_string(),
        "bafybeihchr7vmgjaasntayyatmp5sv6xza57iy2h4xj7g46bpjij6yhrmy"
    );
}

#[test]
fn multi_block_file_sizes_are_consistent() {
    if !have_fixtures() {
        return;
    }
    let car = load("trustless_gateway_car/subdir-with-mixed-block-files.car");
    let blocks: HashMap<Cid, Bytes> = car.blocks.into_iter().collect();
    let mut checked = 0;
    for (cid, data) in &blocks {
        if let Node::File(f) = unixfs::decode_node(cid, data).unwrap() {
            if f.children.is_empty() {
                continue;
            }
            let mut total = f.inline.len() as u64;
            for (c, sz) in &f.children {
                if let Some(b) = blocks.get(c) {
                    let Node::File(child) = unixfs::decode_node(c, b).unwrap() else {
                        panic!()
                    };
                    assert_eq!(child.size, *sz);
                }
                total += sz;
            }
            assert_eq!(total, f.size);
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn documents_render() {
    if !have_fixtures() {
        return;
    }
    for rel in [
        "path_gateway_dag/dag-cbor-traversal.car",
        "path_gateway_dag/dag-json-traversal.car",
        "path_gateway_dag/plain-cbor.car",
        "path_gateway_dag/plain-json.car",
    ] {
        let car = load(rel);
        for (cid, data) in &car.blocks {
            if cid.codec() == codec::DAG_PB || cid.codec() == codec::RAW {
                continue;
            }
            let Node::Document(doc) = unixfs::decode_node(cid, data).unwrap() else {
                panic!()
            };
            let s = std::str::from_utf8(&doc.json).unwrap();
            assert!(s.starts_with('{') || s.starts_with('['), "{rel}: {s}");
        }
    }
}

#[test]
fn hamt_fixture_lookup() {
    if !have_fixtures() {
        return;
    }
    let car = load("trustless_gateway_car/single-layer-hamt-with-multi-block-files.car");
    let blocks: HashMap<Cid, Bytes> = car.blocks.into_iter().collect();
    let root = car.roots[0];
    let Node::HamtShard(root_node) = unixfs::decode_node(&root, &blocks[&root]).unwrap() else {
        panic!("root is not a HAMT shard")
    };
    assert_eq!(root_node.fanout, 256);
    // collect all entries, walking every shard
    let mut entries: Vec<(Vec<u8>, Cid, u32)> = Vec::new();
    let mut stack = vec![(root, 0u32)];
    let mut shards = 0;
    while let Some((c, depth)) = stack.pop() {
        let Node::HamtShard(n) = unixfs::decode_node(&c, &blocks[&c]).unwrap() else {
            panic!()
        };
        shards += 1;
        for l in &n.links {
            match l {
                HamtLink::Shard { cid, .. } => stack.push((*cid, depth + 1)),
                HamtLink::Entry {
                    name, cid, index, ..
                } => {
                    // the entry sits in the bucket its name hashes to
                    assert_eq!(hamt::bucket_index(name, depth, n.fanout).unwrap(), *index);
                    entries.push((name.clone(), *cid, depth));
                }
            }
        }
    }
    assert!(
        entries.len() > 10,
        "{} entries in {shards} shards",
        entries.len()
    );
    let lookup = |name: &[u8]| -> Option<Cid> {
        let mut cur = root;
        for depth in 0.. {
            let Node::HamtShard(n) = unixfs::decode_node(&cur, &blocks[&cur]).unwrap() else {
                panic!()
            };
            match hamt::lookup_step(&n, name, depth).unwrap() {
                Step::Found { cid, .. } => return Some(cid),
                Step::Descend { cid } => cur = cid,
                Step::NotFound => return None,
            }
        }
        None
    };
    for (name, cid, _) in &entries {
        assert_eq!(
            lookup(name),
            Some(*cid),
            "{}",
            String::from_utf8_lossy(name)
        );
        let mut missing = name.clone();
        missing.extend_from_slice(b".missing");
        assert_eq!(lookup(&missing), None);
    }
    for name in [&b"does-not-exist"[..], b"", b"a", b"1.txt.bak"] {
        assert_eq!(lookup(name), None);
    }
}

#[test]
fn chunked_feed_matches_whole() {
    if !have_fixtures() {
        return;
    }
    let bytes = std::fs::read(
        fixtures_dir().join("trustless_gateway_car/single-layer-hamt-with-multi-block-files.car"),
    )
    .unwrap();
    let whole = read_car(
        &fixtures_dir().join("trustless_gateway_car/single-layer-hamt-with-multi-block-files.car"),
    )
    .blocks;
    for chunk in [1usize, 7, 100, 4096] {
        let mut d = CarDecoder::new();
        let mut got = Vec::new();
        for c in bytes.chunks(chunk) {
            d.push(c);
            while let Some(b) = d.next_block().unwrap() {
                got.push(b);
            }
        }
        d.finish().unwrap();
        assert_eq!(got, whole);
    }
}
