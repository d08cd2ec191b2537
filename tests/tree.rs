//! The filesystem logic without the kernel: the tree over an in-memory store and a mock
//! fetcher with counters and injectable failures (as mountpoint-s3 tests its `fs`).

mod common;

use std::ffi::OsStr;
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use ipfs_mount::blocks::BlockService;
use ipfs_mount::tree::{Kind, Tree, TreeConfig, IPFS_INO};
use ipfs_mount_fetch::mock::MockFetcher;
use ipfs_mount_fetch::Fetcher;
use ipfs_mount_ipld::builder::{build_directory, build_file, Built, ImportProfile};
use ipfs_mount_store::MemoryStore;

fn data(len: usize, seed: u32) -> Vec<u8> {
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

struct Fixture {
    tree: Arc<Tree>,
    mock: Arc<MockFetcher>,
}

fn fixture(blocks: &[(Cid, Bytes)], offline: bool) -> Fixture {
    let mock = Arc::new(MockFetcher::new());
    for (c, b) in blocks {
        mock.insert(*c, b.clone());
    }
    let store = Arc::new(MemoryStore::new(1 << 30));
    let fetchers: Vec<Arc<dyn Fetcher>> = if offline { vec![] } else { vec![mock.clone()] };
    let service = Arc::new(BlockService::new(store, fetchers, offline, 8 << 20));
    Fixture {
        tree: Tree::new(service, TreeConfig::default()),
        mock,
    }
}

fn odd_profile() -> ImportProfile {
    let mut p = ImportProfile::unixfs_v0_2015();
    p.chunk_size = 100_000;
    p.max_links = 7;
    p
}

async fn read_all(tree: &Arc<Tree>, ino: u64, size: u64, step: u32) -> Vec<u8> {
    let fh = tree.open(ino, false).unwrap();
    let mut out = Vec::new();
    let mut off = 0;
    while off < size {
        let chunk = tree.read(ino, fh, off, step).await.unwrap();
        assert!(!chunk.is_empty());
        off += chunk.len() as u64;
        out.extend_from_slice(&chunk);
    }
    tree.release(fh).unwrap();
    out
}

#[tokio::test]
async fn files_read_back_exactly_for_several_layouts() {
    let content = data(3_000_017, 1);
    for profile in [
        ImportProfile::unixfs_v0_2015(),
        ImportProfile::unixfs_v1_2025(),
        odd_profile(),
    ] {
        let built = build_file(&content, &profile);
        let f = fixture(&built.blocks, false);
        let entry = f
            .tree
            .lookup(IPFS_INO, OsStr::new(&built.root.to_string()))
            .await
            .unwrap();
        assert_eq!(entry.attr.kind, Kind::File);
        assert_eq!(entry.attr.size, content.len() as u64);
        assert_eq!(
            read_all(&f.tree, entry.attr.ino, entry.attr.size, 131_072).await,
            content
        );
        // Positional reads at odd offsets and lengths, crossing leaves and levels.
        let fh = f.tree.open(entry.attr.ino, false).unwrap();
        for (off, len) in [
            (0u64, 1u32),
            (99_999, 2),
            (700_000 - 3, 200_007),
            (2_999_000, 100_000),
            (5_000_000, 10),
        ] {
            let got = f.tree.read(entry.attr.ino, fh, off, len).await.unwrap();
            let start = (off as usize).min(content.len());
            let end = (start + len as usize).min(content.len());
            assert_eq!(
                &got[..],
                &content[start..end],
                "profile {profile:?} off {off} len {len}"
            );
        }
    }
}

#[tokio::test]
async fn concurrent_reads_share_fetches_and_warm_reads_fetch_nothing() {
    let content = data(2_000_000, 2);
    let built = build_file(&content, &odd_profile());
    let f = fixture(&built.blocks, false);
    let entry = f
        .tree
        .lookup(IPFS_INO, OsStr::new(&built.root.to_string()))
        .await
        .unwrap();
    let ino = entry.attr.ino;
    let fh = f.tree.open(ino, false).unwrap();
    let reads: Vec<_> = (0..8)
        .map(|_| {
            let tree = f.tree.clone();
            tokio::spawn(async move { tree.read(ino, fh, 0, 2_000_000).await.unwrap() })
        })
        .collect();
    for r in reads {
        assert_eq!(&r.await.unwrap()[..], &content[..]);
    }
    // Each block fetched once, however many readers wanted it at the same moment.
    assert!(
        f.mock.block_calls() <= built.blocks.len() as u64,
        "{} calls for {} blocks",
        f.mock.block_calls(),
        built.blocks.len()
    );
    f.mock.reset_counters();
    assert_eq!(
        read_all(&f.tree, ino, entry.attr.size, 65_536).await,
        content
    );
    assert_eq!(f.mock.block_calls(), 0);
}

#[tokio::test]
async fn malformed_names_fail_without_network() {
    let f = fixture(&[], false);
    for name in [
        "not-a-cid",
        "Qm",
        "bafy",
        "",
        "zzzz",
        ".Trash",
        "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi/x",
    ] {
        let e = f.tree.lookup(IPFS_INO, OsStr::new(name)).await.unwrap_err();
        assert_eq!(e.to_errno(), libc::ENOENT, "{name}");
    }
    assert_eq!(f.mock.block_calls(), 0);
    // A well-formed CID that no source has is ENOENT too, after asking.
    let missing = build_file(b"nobody has this", &ImportProfile::unixfs_v1_2025()).root;
    let e = f
        .tree
        .lookup(IPFS_INO, OsStr::new(&missing.to_string()))
        .await
        .unwrap_err();
    assert_eq!(e.to_errno(), libc::ENOENT);
}

#[tokio::test]
async fn wrong_bytes_and_missing_blocks_give_eio_never_bad_data() {
    let content = data(1_000_000, 3);
    let built = build_file(&content, &odd_profile());
    // A leaf in the middle: the fourth block built is the fourth chunk.
    let bad_leaf = built.blocks[3].0;
    let f = fixture(&built.blocks, false);
    f.mock.set_wrong_bytes(bad_leaf, true);
    let entry = f
        .tree
        .lookup(IPFS_INO, OsStr::new(&built.root.to_string()))
        .await
        .unwrap();
    let fh = f.tree.open(entry.attr.ino, false).unwrap();
    assert_eq!(
        &f.tree.read(entry.attr.ino, fh, 0, 100_000).await.unwrap()[..],
        &content[..100_000]
    );
    let e = f
        .tree
        .read(entry.attr.ino, fh, 300_000, 100_000)
        .await
        .unwrap_err();
    assert_eq!(e.to_errno(), libc::EIO);
    // The block never entered the store, and a good copy later is accepted.
    f.mock.set_wrong_bytes(bad_leaf, false);
    assert_eq!(
        &f.tree
            .read(entry.attr.ino, fh, 300_000, 100_000)
            .await
            .unwrap()[..],
        &content[300_000..400_000]
    );
    // A block no source has: EIO for that range only.
    let missing_leaf = built.blocks[6].0;
    f.mock.remove(&missing_leaf);
    let e = f
        .tree
        .read(entry.attr.ino, fh, 600_000, 1000)
        .await
        .unwrap_err();
    assert_eq!(e.to_errno(), libc::EIO);
    assert_eq!(
        &f.tree
            .read(entry.attr.ino, fh, 500_000, 1000)
            .await
            .unwrap()[..],
        &content[500_000..501_000]
    );
}

#[tokio::test]
async fn offline_serves_only_local_blocks() {
    let built = build_file(b"hello offline", &ImportProfile::unixfs_v1_2025());
    let f = fixture(&built.blocks, true);
    let e = f
        .tree
        .lookup(IPFS_INO, OsStr::new(&built.root.to_string()))
        .await
        .unwrap_err();
    assert_eq!(e.to_errno(), libc::ENOENT);
    for (c, b) in &built.blocks {
        f.tree.blocks().put_verified(c, b.clone()).unwrap();
    }
    let entry = f
        .tree
        .lookup(IPFS_INO, OsStr::new(&built.root.to_string()))
        .await
        .unwrap();
    assert_eq!(
        read_all(&f.tree, entry.attr.ino, entry.attr.size, 4096).await,
        b"hello offline"
    );
}

fn directory_with(
    entries: Vec<(&[u8], &Built)>,
    profile: &ImportProfile,
) -> (Built, Vec<(Cid, Bytes)>) {
    let list: Vec<(Vec<u8>, Cid, u64)> = entries
        .iter()
        .map(|(n, b)| (n.to_vec(), b.root, b.tsize))
        .collect();
    let dir = build_directory(&list, profile);
    let mut blocks = dir.blocks.clone();
    for (_, b) in entries {
        blocks.extend(b.blocks.iter().cloned());
    }
    (dir, blocks)
}

#[tokio::test]
async fn directories_list_safe_names_only_and_resolve_paths() {
    let p = ImportProfile::unixfs_v0_2015();
    let a = build_file(b"aaa", &p);
    let b = build_file(&data(500_000, 4), &p);
    let inner = build_directory(&[(b"deep.txt".to_vec(), a.root, a.tsize)], &p);
    let mut blocks_inner = inner.blocks.clone();
    blocks_inner.extend(a.blocks.iter().cloned());
    let (dir, mut blocks) = directory_with(
        vec![
            (b"a.txt", &a),
            (b"big.bin", &b),
            (b"..", &a),
            (b"x/y", &a),
            (b"sub", &inner),
            ("ünï cødé name".as_bytes(), &a),
        ],
        &p,
    );
    blocks.extend(blocks_inner);
    let f = fixture(&blocks, false);
    let root = f
        .tree
        .lookup(IPFS_INO, OsStr::new(&dir.root.to_string()))
        .await
        .unwrap();
    assert_eq!(root.attr.kind, Kind::Directory);
    let entries = f.tree.readdir(root.attr.ino, 0, 1000).await.unwrap();
    let names: Vec<String> = entries
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![".", "..", "a.txt", "big.bin", "sub", "ünï cødé name"]
    );
    let kinds: Vec<Kind> = entries.iter().map(|e| e.kind).collect();
    assert_eq!(kinds[4], Kind::Directory);
    assert_eq!(kinds[3], Kind::File);
    // Offsets continue where the kernel stopped.
    let rest = f
        .tree
        .readdir(root.attr.ino, entries[3].next_offset, 1000)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    // Escaping names are never reachable.
    for bad in ["..", "x/y", "x"] {
        assert_eq!(
            f.tree
                .lookup(root.attr.ino, OsStr::new(bad))
                .await
                .unwrap_err()
                .to_errno(),
            libc::ENOENT
        );
    }
    let sub = f
        .tree
        .lookup(root.attr.ino, OsStr::new("sub"))
        .await
        .unwrap();
    let deep = f
        .tree
        .lookup(sub.attr.ino, OsStr::new("deep.txt"))
        .await
        .unwrap();
    assert_eq!(
        read_all(&f.tree, deep.attr.ino, deep.attr.size, 4096).await,
        b"aaa"
    );
    assert_eq!(
        f.tree
            .getxattr(deep.attr.ino, OsStr::new("user.ipfs.cid"))
            .unwrap(),
        a.root.to_string().into_bytes()
    );
    // The same path gives the same inode; a read-write open is refused.
    let again = f
        .tree
        .lookup(root.attr.ino, OsStr::new("sub"))
        .await
        .unwrap();
    assert_eq!(again.attr.ino, sub.attr.ino);
    assert_eq!(
        f.tree.open(deep.attr.ino, true).unwrap_err().to_errno(),
        libc::EROFS
    );
}

/// Roots and blocks of a CAR.
type CarContent = (Vec<Cid>, Vec<(Cid, Bytes)>);

/// Reads the blocks of a conformance-fixture CAR, if the fixtures are beside the project.
/// Without the fixtures the test skips, or fails under `IPFS_MOUNT_REQUIRE_PEERS=1` (CI).
fn fixture_car(test: &str, rel: &str) -> Option<CarContent> {
    let path = common::fixtures_dir(test)?.join(rel);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut dec = ipfs_mount_ipld::car::CarDecoder::new();
    dec.push(&bytes);
    let mut blocks = Vec::new();
    while let Some(b) = dec.next_block().unwrap() {
        blocks.push(b);
    }
    dec.finish().unwrap();
    Some((dec.header().unwrap().roots.clone(), blocks))
}

#[tokio::test]
async fn hamt_lookup_walks_only_its_path_and_listing_is_complete() {
    let Some((roots, blocks)) = fixture_car(
        "hamt_lookup_walks_only_its_path_and_listing_is_complete",
        "trustless_gateway_car/single-layer-hamt-with-multi-block-files.car",
    ) else {
        return;
    };
    let f = fixture(&blocks, false);
    let root = f
        .tree
        .lookup(IPFS_INO, OsStr::new(&roots[0].to_string()))
        .await
        .unwrap();
    assert_eq!(root.attr.kind, Kind::Directory);
    f.mock.reset_counters();
    // A lookup hashes the name: root shard (cached) plus the child's root block, nothing else.
    let e = f
        .tree
        .lookup(root.attr.ino, OsStr::new("1.txt"))
        .await
        .unwrap();
    assert_eq!(e.attr.kind, Kind::File);
    assert!(
        f.mock.block_calls() <= 2,
        "lookup fetched {} blocks",
        f.mock.block_calls()
    );
    assert_eq!(
        f.tree
            .lookup(root.attr.ino, OsStr::new("no-such-name"))
            .await
            .unwrap_err()
            .to_errno(),
        libc::ENOENT
    );
    let entries = f.tree.readdir(root.attr.ino, 0, 100_000).await.unwrap();
    assert_eq!(entries.len(), 2 + 1000);
}

#[tokio::test]
async fn documents_show_dag_json() {
    let Some((roots, blocks)) = fixture_car(
        "documents_show_dag_json",
        "path_gateway_dag/dag-cbor-traversal.car",
    ) else {
        return;
    };
    let f = fixture(&blocks, false);
    let e = f
        .tree
        .lookup(IPFS_INO, OsStr::new(&roots[0].to_string()))
        .await
        .unwrap();
    assert_eq!(e.attr.kind, Kind::File);
    let text = read_all(&f.tree, e.attr.ino, e.attr.size, 4096).await;
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert!(v.is_object());
}

/// Three blocks: a HAMT shard (fanout 1024) whose 1024 buckets all link to S1, whose 1024
/// buckets all link to S2, a shard holding `n` entries. Returns the blocks (root last) and S2's
/// entry names.
fn shared_children_hamt(n: usize) -> (Vec<(Cid, Bytes)>, Vec<Vec<u8>>) {
    use ipfs_mount_ipld::dagpb::{self, PbLink, PbNode};
    use ipfs_mount_ipld::unixfs::{encode_data, DataType, UnixFsData};
    use ipfs_mount_ipld::{cids, codec, hamt, mh};
    let shard = |links: Vec<PbLink>, bitfield: Vec<u8>| {
        let mut d = UnixFsData::new(DataType::HamtShard);
        d.data = Some(Bytes::from(bitfield));
        d.fanout = Some(1024);
        d.hash_type = Some(mh::MURMUR3_X64_64);
        let block = dagpb::encode(&PbNode {
            links,
            data: Some(Bytes::from(encode_data(&d))),
        });
        let cid = cids::compute(cid::Version::V1, codec::DAG_PB, mh::SHA2_256, &block).unwrap();
        (cid, Bytes::from(block))
    };
    let mut by_index = std::collections::BTreeMap::new();
    let mut leaves = Vec::new();
    for i in 0..n {
        let name = format!("entry-{i:04}").into_bytes();
        let idx = hamt::bucket_index(&name, 2, 1024).unwrap();
        let leaf = Bytes::from(name.clone());
        let leaf_cid = cids::compute(cid::Version::V1, codec::RAW, mh::SHA2_256, &leaf).unwrap();
        if let std::collections::btree_map::Entry::Vacant(v) = by_index.entry(idx) {
            v.insert((name, leaf_cid));
            leaves.push((leaf_cid, leaf));
        }
    }
    let mut bitfield = vec![0u8; 128];
    let mut links = Vec::new();
    let mut names = Vec::new();
    for (idx, (name, leaf)) in by_index {
        bitfield[127 - (idx / 8) as usize] |= 1 << (idx % 8);
        let mut lname = format!("{idx:03X}").into_bytes();
        lname.extend_from_slice(&name);
        links.push(PbLink {
            cid: leaf,
            name: Some(lname),
            tsize: Some(name.len() as u64),
        });
        names.push(name);
    }
    let s2 = shard(links, bitfield);
    let all_to = |child: Cid| {
        let links = (0..1024u32)
            .map(|i| PbLink {
                cid: child,
                name: Some(format!("{i:03X}").into_bytes()),
                tsize: Some(1),
            })
            .collect();
        shard(links, vec![0xff; 128])
    };
    let s1 = all_to(s2.0);
    let root = all_to(s1.0);
    leaves.extend([s2, s1, root]);
    (leaves, names)
}

#[tokio::test]
async fn hamt_with_shared_children_lists_each_entry_once_quickly() {
    let (blocks, names) = shared_children_hamt(40);
    let root_cid = blocks.last().unwrap().0;
    let f = fixture(&blocks, false);
    let t = std::time::Instant::now();
    let root = f
        .tree
        .lookup(IPFS_INO, OsStr::new(&root_cid.to_string()))
        .await
        .unwrap();
    let entries = f.tree.readdir(root.attr.ino, 0, 100_000).await.unwrap();
    let took = t.elapsed();
    eprintln!("shared-children HAMT (3 blocks, 1024 x 1024 links): listed in {took:?}");
    assert_eq!(entries.len(), 2 + names.len());
    assert!(
        took < std::time::Duration::from_secs(1),
        "listing took {took:?}"
    );
    // the root, S1 and S2, each once
    let fetched = f
        .tree
        .blocks()
        .stats
        .fetched_blocks
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(fetched <= 3, "{fetched} blocks fetched");
    assert!(
        block_reads(&f.tree) <= 8,
        "{} block reads",
        block_reads(&f.tree)
    );
    // A lookup walks the hash path: S1 and S2, then the entry.
    let e = f
        .tree
        .lookup(
            root.attr.ino,
            OsStr::new(std::str::from_utf8(&names[0]).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(e.attr.kind, Kind::File);
}

/// Three blocks: a file root with 1024 links to S1, S1 with 1024 links to one raw leaf of 64
/// bytes: a 64 MiB file. Returns the blocks (root last).
fn shared_children_file() -> Vec<(Cid, Bytes)> {
    use ipfs_mount_ipld::dagpb::{self, PbLink, PbNode};
    use ipfs_mount_ipld::unixfs::{encode_data, DataType, UnixFsData};
    use ipfs_mount_ipld::{cids, codec, mh};
    let leaf = Bytes::from(data(64, 9));
    let leaf_cid = cids::compute(cid::Version::V1, codec::RAW, mh::SHA2_256, &leaf).unwrap();
    let node = |child: Cid, child_size: u64| {
        let mut d = UnixFsData::new(DataType::File);
        d.blocksizes = vec![child_size; 1024];
        d.filesize = Some(child_size * 1024);
        let links = (0..1024)
            .map(|_| PbLink {
                cid: child,
                name: Some(vec![]),
                tsize: Some(child_size),
            })
            .collect();
        let block = dagpb::encode(&PbNode {
            links,
            data: Some(Bytes::from(encode_data(&d))),
        });
        let cid = cids::compute(cid::Version::V1, codec::DAG_PB, mh::SHA2_256, &block).unwrap();
        (cid, Bytes::from(block))
    };
    let s1 = node(leaf_cid, 64);
    let root = node(s1.0, 64 * 1024);
    vec![(leaf_cid, leaf), s1, root]
}

/// Block reads through the block service (memory or store): what a walk costs.
fn block_reads(tree: &Tree) -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &tree.blocks().stats;
    s.memory_hits.load(Relaxed) + s.store_hits.load(Relaxed)
}

#[tokio::test]
async fn file_of_one_shared_leaf_reads_each_block_once_per_read() {
    let blocks = shared_children_file();
    let root_cid = blocks.last().unwrap().0;
    let leaf = blocks[0].1.clone();
    let f = fixture(&blocks, false);
    let e = f
        .tree
        .lookup(IPFS_INO, OsStr::new(&root_cid.to_string()))
        .await
        .unwrap();
    assert_eq!(e.attr.size, 64 << 20);
    let t = std::time::Instant::now();
    let reads_before = block_reads(&f.tree);
    // 4 MiB in 128 KiB reads: 2048 pieces of the one leaf per read; the sequential reads
    // also start the prefetcher over a growing window.
    let fh = f.tree.open(e.attr.ino, false).unwrap();
    let mut off = 0u64;
    while off < 4 << 20 {
        let chunk = f.tree.read(e.attr.ino, fh, off, 128 << 10).await.unwrap();
        assert_eq!(chunk.len(), 128 << 10);
        assert!(chunk.chunks(64).all(|c| c == &leaf[..]));
        off += chunk.len() as u64;
    }
    f.tree.release(fh).unwrap();
    let took = t.elapsed();
    let reads = block_reads(&f.tree) - reads_before;
    let fetched = f
        .tree
        .blocks()
        .stats
        .fetched_blocks
        .load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("shared-leaf file: 4 MiB read in {took:?}, {reads} block reads, {fetched} fetched");
    assert!(
        fetched <= 3,
        "{fetched} blocks fetched for 3 distinct blocks"
    );
    // 32 reads: a few block reads each, never one per piece (2048 per read)
    assert!(
        reads <= 32 * 4,
        "{reads} block reads for 32 reads of a 3-block file"
    );
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}
