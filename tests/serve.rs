//! The local HTTP gateway (`src/serve`) over an in-memory store: trustless raw and CAR
//! responses (checked by verifying every block and rebuilding what was asked for from the CAR
//! alone), plain path requests with ranges, directories (plain and HAMT), IPNS through a fake
//! name source, errors, and our own gateway client reading from it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cid::{Cid, Version};
use ipfs_mount::blocks::BlockService;
use ipfs_mount::serve::{start, NameSource, ServeConfig};
use ipfs_mount_fetch::mock::MockFetcher;
use ipfs_mount_fetch::{
    DagScope, FetchError, Fetcher, GatewayConfig, GatewayFetcher, SinkControl, VerifiedBlock,
};
use ipfs_mount_ipld::builder::{build_directory, build_file, build_hamt, Built, ImportProfile};
use ipfs_mount_ipld::car::CarDecoder;
use ipfs_mount_ipld::dagpb::{self, PbNode};
use ipfs_mount_ipld::hamt::{self, Step};
use ipfs_mount_ipld::unixfs::{self, DataType, Node, UnixFsData};
use ipfs_mount_ipld::{cids, codec, mh};
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

/// Kubo's classic layout with small chunks and few links: a three-level file DAG.
fn odd_profile() -> ImportProfile {
    let mut p = ImportProfile::unixfs_v0_2015();
    p.chunk_size = 100_000;
    p.max_links = 7;
    p
}

fn small_v1(chunk: usize, links: usize) -> ImportProfile {
    let mut p = ImportProfile::unixfs_v1_2025();
    p.chunk_size = chunk;
    p.max_links = links;
    p
}

struct Fixture {
    blocks: Vec<(Cid, Bytes)>,
    /// `{dir, hamt}`
    outer: Cid,
    /// `{a.txt, big.bin, raw.bin, sub/{index.html}, link -> a.txt, zeros.bin, "sp ace é.txt"}`
    dir: Cid,
    /// 1500 small files `f{i}.txt` and `big.bin`, HAMT-sharded
    hamt: Cid,
    big: Vec<u8>,
    big_cid: Cid,
    raw: Vec<u8>,
    raw_cid: Cid,
    zeros_cid: Cid,
    small_cid: Cid,
    sym: Cid,
}

fn fixture() -> Fixture {
    let mut blocks = Vec::new();
    let mut sym_data = UnixFsData::new(DataType::Symlink);
    sym_data.data = Some(Bytes::from_static(b"a.txt"));
    let sym_block = Bytes::from(dagpb::encode(&PbNode {
        links: vec![],
        data: Some(unixfs::encode_data(&sym_data).into()),
    }));
    let sym = cids::compute(Version::V1, codec::DAG_PB, mh::SHA2_256, &sym_block).unwrap();
    blocks.push((sym, sym_block.clone()));
    let mut add = |b: &Built| blocks.extend(b.blocks.iter().cloned());
    let v1 = ImportProfile::unixfs_v1_2025();
    let small = build_file(b"hello gateway\n", &v1);
    add(&small);
    let big = data(1_234_567, 7);
    let big_b = build_file(&big, &odd_profile());
    add(&big_b);
    let raw = data(300_000, 9);
    let raw_b = build_file(&raw, &small_v1(65_536, 4));
    add(&raw_b);
    let zeros_b = build_file(&vec![0u8; 800_000], &small_v1(100_000, 7));
    add(&zeros_b);
    let index = build_file(b"<h1>hi</h1>", &v1);
    add(&index);
    let sub = build_directory(&[(b"index.html".to_vec(), index.root, index.tsize)], &v1);
    add(&sub);
    let dir = build_directory(
        &[
            (b"a.txt".to_vec(), small.root, small.tsize),
            (b"big.bin".to_vec(), big_b.root, big_b.tsize),
            (b"raw.bin".to_vec(), raw_b.root, raw_b.tsize),
            (b"sub".to_vec(), sub.root, sub.tsize),
            (b"link".to_vec(), sym, sym_block.len() as u64),
            (b"zeros.bin".to_vec(), zeros_b.root, zeros_b.tsize),
            ("sp ace é.txt".as_bytes().to_vec(), small.root, small.tsize),
        ],
        &v1,
    );
    add(&dir);
    let mut entries = Vec::new();
    for i in 0..1500 {
        let f = build_file(format!("file {i}\n").as_bytes(), &v1);
        add(&f);
        entries.push((format!("f{i}.txt").into_bytes(), f.root, f.tsize));
    }
    entries.push((b"big.bin".to_vec(), big_b.root, big_b.tsize));
    let hamt = build_hamt(&entries, &v1);
    add(&hamt);
    let outer = build_directory(
        &[
            (b"dir".to_vec(), dir.root, dir.tsize),
            (b"hamt".to_vec(), hamt.root, hamt.tsize),
        ],
        &v1,
    );
    add(&outer);
    Fixture {
        blocks,
        outer: outer.root,
        dir: dir.root,
        hamt: hamt.root,
        big,
        big_cid: big_b.root,
        raw,
        raw_cid: raw_b.root,
        zeros_cid: zeros_b.root,
        small_cid: small.root,
        sym,
    }
}

fn service(blocks: &[(Cid, Bytes)], skip: &[Cid]) -> Arc<BlockService> {
    let store = Arc::new(MemoryStore::new(1 << 30));
    let service = Arc::new(BlockService::new(store, vec![], true, 8 << 20));
    for (c, b) in blocks {
        if !skip.contains(c) {
            service.put_verified(c, b.clone()).unwrap();
        }
    }
    service
}

async fn serve(service: Arc<BlockService>, names: Option<Arc<dyn NameSource>>) -> SocketAddr {
    let cfg = ServeConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        allow_fetch: false,
        provider: None,
    };
    start(cfg, service, names).await.unwrap()
}

fn client() -> reqwest::Client {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

impl Got {
    fn h(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = client().get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap();
    Got {
        status,
        headers,
        body,
    }
}

/// The CAR's roots and blocks; every block is checked against its CID.
fn parse_car(body: &[u8]) -> (Vec<Cid>, Vec<(Cid, Bytes)>) {
    let mut d = CarDecoder::new();
    d.push(body);
    let mut blocks = Vec::new();
    while let Some((cid, data)) = d.next_block().unwrap() {
        cids::verify(&cid, &data).unwrap_or_else(|e| panic!("{cid}: {e}"));
        blocks.push((cid, data));
    }
    d.finish().unwrap();
    let roots = d.header().unwrap().roots.clone();
    (roots, blocks)
}

/// Bytes `first..=last` of the file `root`, using only `blocks` (as a trustless client would).
fn read_range(blocks: &HashMap<Cid, Bytes>, root: &Cid, first: u64, last: u64) -> Vec<u8> {
    fn walk(
        blocks: &HashMap<Cid, Bytes>,
        cid: &Cid,
        offset: u64,
        first: u64,
        last: u64,
        out: &mut Vec<u8>,
    ) {
        let b = blocks
            .get(cid)
            .unwrap_or_else(|| panic!("block {cid} needed for the range is not in the CAR"));
        let Node::File(f) = unixfs::decode_node(cid, b).unwrap() else {
            panic!("{cid} is not a file")
        };
        let inline_end = offset + f.inline.len() as u64;
        let (lo, hi) = (first.max(offset), (last + 1).min(inline_end));
        if lo < hi {
            out.extend_from_slice(&f.inline[(lo - offset) as usize..(hi - offset) as usize]);
        }
        let mut off = inline_end;
        for (c, s) in &f.children {
            if off <= last && off + s > first {
                walk(blocks, c, off, first, last, out);
            }
            off += s;
        }
    }
    let mut out = Vec::new();
    walk(blocks, root, 0, first, last, &mut out);
    out
}

/// Follows `path` from `root` through plain and HAMT directories using only `blocks`.
fn resolve_in(blocks: &HashMap<Cid, Bytes>, root: &Cid, path: &[&str]) -> Cid {
    let mut cur = *root;
    for seg in path {
        let node = unixfs::decode_node(&cur, &blocks[&cur]).unwrap();
        cur = match node {
            Node::Directory(d) => {
                d.entries
                    .iter()
                    .find(|e| e.name == seg.as_bytes())
                    .unwrap()
                    .cid
            }
            Node::HamtShard(mut h) => {
                let mut depth = 0;
                loop {
                    match hamt::lookup_step(&h, seg.as_bytes(), depth).unwrap() {
                        Step::Found { cid, .. } => break cid,
                        Step::Descend { cid } => {
                            let b = blocks
                                .get(&cid)
                                .unwrap_or_else(|| panic!("shard {cid} not in the CAR"));
                            let Node::HamtShard(next) = unixfs::decode_node(&cid, b).unwrap()
                            else {
                                panic!()
                            };
                            h = next;
                            depth += 1;
                        }
                        Step::NotFound => panic!("{seg} not found"),
                    }
                }
            }
            n => panic!("{n:?}"),
        };
    }
    cur
}

/// Every block reachable from `root` (dag-pb links), each once.
fn reachable(all: &HashMap<Cid, Bytes>, root: &Cid) -> HashSet<Cid> {
    let mut seen = HashSet::new();
    let mut stack = vec![*root];
    while let Some(c) = stack.pop() {
        if !seen.insert(c) {
            continue;
        }
        if c.codec() == codec::DAG_PB {
            for l in dagpb::decode(&all[&c]).unwrap().links {
                stack.push(l.cid);
            }
        }
    }
    seen
}

fn no_dups(blocks: &[(Cid, Bytes)]) {
    let mut seen = HashSet::new();
    for (c, _) in blocks {
        assert!(seen.insert(*c), "{c} sent twice with dups=n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_blocks_and_probe() {
    let f = fixture();
    let addr = serve(service(&f.blocks, &[]), None).await;
    let all: HashMap<Cid, Bytes> = f.blocks.iter().cloned().collect();

    let r = get(addr, &format!("/ipfs/{}?format=raw", f.dir), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, all[&f.dir]);
    assert_eq!(r.h("content-type"), "application/vnd.ipld.raw");
    assert_eq!(r.h("x-content-type-options"), "nosniff");
    assert_eq!(r.h("cache-control"), "public, max-age=29030400, immutable");
    assert_eq!(r.h("etag"), format!("\"{}.raw\"", f.dir));
    assert_eq!(r.h("content-length"), all[&f.dir].len().to_string());
    assert!(r.h("content-disposition").starts_with("attachment"));

    // by Accept, with Content-Location naming the format
    let r = get(
        addr,
        &format!("/ipfs/{}", f.big_cid),
        &[("accept", "application/vnd.ipld.raw")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, all[&f.big_cid]);
    assert_eq!(
        r.h("content-location"),
        format!("/ipfs/{}?format=raw", f.big_cid)
    );

    // with a path: the block the path ends at (through a HAMT)
    let r = get(
        addr,
        &format!("/ipfs/{}/hamt/f77.txt?format=raw", f.outer),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    let want = build_file(b"file 77\n", &ImportProfile::unixfs_v1_2025()).root;
    cids::verify(&want, &r.body).unwrap();
    assert_eq!(r.h("x-ipfs-roots").split(',').count(), 3);

    // a range of a raw block
    let r = get(
        addr,
        &format!("/ipfs/{}?format=raw", f.small_cid),
        &[("range", "bytes=6-12")],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(&r.body[..], b"gateway");

    // the identity probe
    let r = get(addr, "/ipfs/bafkqaaa?format=raw", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    let r = get(addr, "/ipfs/bafkqaaa?format=car", &[]).await;
    assert_eq!(r.status, 200);
    let (roots, blocks) = parse_car(&r.body);
    assert_eq!(roots, vec![cids::parse("bafkqaaa").unwrap()]);
    assert!(blocks.is_empty(), "identity blocks are never written");

    // HEAD: headers, no body
    let resp = client()
        .head(format!("http://{addr}/ipfs/{}?format=raw", f.dir))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"].to_str().unwrap(),
        all[&f.dir].len().to_string()
    );
    assert!(resp.bytes().await.unwrap().is_empty());

    // If-None-Match
    let etag = format!("\"{}.raw\"", f.dir);
    let r = get(
        addr,
        &format!("/ipfs/{}?format=raw", f.dir),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn car_scopes() {
    let f = fixture();
    let addr = serve(service(&f.blocks, &[]), None).await;
    let all: HashMap<Cid, Bytes> = f.blocks.iter().cloned().collect();

    // dag-scope=all (the default): the whole DAG, root first, each block once
    let r = get(addr, &format!("/ipfs/{}?format=car", f.outer), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.h("content-type"),
        "application/vnd.ipld.car; version=1; order=dfs; dups=n"
    );
    assert_eq!(r.h("x-content-type-options"), "nosniff");
    assert!(r.h("etag").contains(".car."));
    let (roots, blocks) = parse_car(&r.body);
    assert_eq!(roots, vec![f.outer]);
    assert_eq!(blocks[0].0, f.outer);
    no_dups(&blocks);
    let got: HashSet<Cid> = blocks.iter().map(|b| b.0).collect();
    assert_eq!(got, reachable(&all, &f.outer));
    let got_map: HashMap<Cid, Bytes> = blocks.into_iter().collect();
    let big = resolve_in(&got_map, &f.outer, &["hamt", "big.bin"]);
    assert_eq!(read_range(&got_map, &big, 0, f.big.len() as u64 - 1), f.big);

    // dfs order: a file's blocks come in file order (leaves left to right)
    let r = get(addr, &format!("/ipfs/{}?format=car", f.big_cid), &[]).await;
    let (_, blocks) = parse_car(&r.body);
    let mut leaves = Vec::new();
    for (c, b) in &blocks {
        if let Node::File(n) = unixfs::decode_node(c, b).unwrap() {
            if n.children.is_empty() {
                leaves.extend_from_slice(&n.inline);
            }
        }
    }
    assert_eq!(leaves, f.big);

    // dag-scope=entity on a file behind a HAMT: the path's blocks, then the whole file
    let path = format!("/ipfs/{}/hamt/big.bin?format=car&dag-scope=entity", f.outer);
    let (roots, blocks) = parse_car(&get(addr, &path, &[]).await.body);
    assert_eq!(roots, vec![f.outer]);
    assert_eq!(blocks[0].0, f.outer);
    assert_eq!(blocks[1].0, f.hamt);
    no_dups(&blocks);
    let got_map: HashMap<Cid, Bytes> = blocks.iter().cloned().collect();
    assert_eq!(
        resolve_in(&got_map, &f.outer, &["hamt", "big.bin"]),
        f.big_cid
    );
    assert_eq!(
        read_range(&got_map, &f.big_cid, 0, f.big.len() as u64 - 1),
        f.big
    );
    // no other HAMT entries than the one on the path
    let file_blocks = reachable(&all, &f.big_cid);
    let extra = blocks
        .iter()
        .filter(|(c, _)| !file_blocks.contains(c) && *c != f.outer)
        .count();
    assert!(
        extra <= 3,
        "path blocks: outer, root shard, a sub-shard or two ({extra})"
    );

    // dag-scope=entity on a HAMT directory: every shard, no entries
    let path = format!("/ipfs/{}?format=car&dag-scope=entity", f.hamt);
    let (_, blocks) = parse_car(&get(addr, &path, &[]).await.body);
    assert!(blocks.len() > 1);
    for (c, b) in &blocks {
        assert!(matches!(
            unixfs::decode_node(c, b).unwrap(),
            Node::HamtShard(_)
        ));
    }
    // ...which is enough to list it
    let got_map: HashMap<Cid, Bytes> = blocks.iter().cloned().collect();
    let mut names = 0;
    for (c, b) in &got_map {
        if let Node::HamtShard(h) = unixfs::decode_node(c, b).unwrap() {
            names += h.entries().count();
        }
    }
    assert_eq!(names, 1501);

    // dag-scope=entity on a plain directory: the block alone
    let path = format!("/ipfs/{}?format=car&dag-scope=entity", f.dir);
    let (_, blocks) = parse_car(&get(addr, &path, &[]).await.body);
    assert_eq!(blocks.iter().map(|b| b.0).collect::<Vec<_>>(), vec![f.dir]);

    // dag-scope=block through a path: the path blocks and the terminal block
    let path = format!("/ipfs/{}/dir/big.bin?format=car&dag-scope=block", f.outer);
    let (_, blocks) = parse_car(&get(addr, &path, &[]).await.body);
    assert_eq!(
        blocks.iter().map(|b| b.0).collect::<Vec<_>>(),
        vec![f.outer, f.dir, f.big_cid]
    );

    // by Accept, with the parameters our client sends
    let r = get(
        addr,
        &format!("/ipfs/{}", f.raw_cid),
        &[(
            "accept",
            "application/vnd.ipld.car; version=1; order=dfs; dups=y",
        )],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.h("content-type"),
        "application/vnd.ipld.car; version=1; order=dfs; dups=y"
    );
    let (_, blocks) = parse_car(&r.body);
    let got_map: HashMap<Cid, Bytes> = blocks.into_iter().collect();
    assert_eq!(
        read_range(&got_map, &f.raw_cid, 0, f.raw.len() as u64 - 1),
        f.raw
    );

    // HEAD: headers only
    let resp = client()
        .head(format!("http://{addr}/ipfs/{}?format=car", f.outer))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn car_entity_bytes_and_dups() {
    let f = fixture();
    let addr = serve(service(&f.blocks, &[]), None).await;
    let all: HashMap<Cid, Bytes> = f.blocks.iter().cloned().collect();
    let size = f.big.len() as u64;
    let full = reachable(&all, &f.big_cid).len();
    for (spec, first, last) in [
        ("0:*", 0, size - 1),
        ("0:0", 0, 0),
        ("150000:450000", 150_000, 450_000),
        ("99999:100000", 99_999, 100_000),
        ("-1000:*", size - 1000, size - 1),
        ("2000:-100", 2000, size - 100),
        ("1200000:99999999", 1_200_000, size - 1),
    ] {
        let path = format!(
            "/ipfs/{}?format=car&dag-scope=entity&entity-bytes={spec}",
            f.big_cid
        );
        let r = get(addr, &path, &[]).await;
        assert_eq!(r.status, 200, "{spec}");
        let (roots, blocks) = parse_car(&r.body);
        assert_eq!(roots, vec![f.big_cid]);
        assert_eq!(blocks[0].0, f.big_cid);
        no_dups(&blocks);
        let got_map: HashMap<Cid, Bytes> = blocks.iter().cloned().collect();
        let bytes = read_range(&got_map, &f.big_cid, first, last);
        assert_eq!(bytes, &f.big[first as usize..=last as usize], "{spec}");
        if !matches!(spec, "0:*" | "2000:-100") {
            assert!(
                blocks.len() < full,
                "{spec}: {} of {full} blocks",
                blocks.len()
            );
        }
    }
    // a small range needs the root, one interior node and one or two leaves
    let path = format!("/ipfs/{}?format=car&entity-bytes=150000:150010", f.big_cid);
    let (_, blocks) = parse_car(&get(addr, &path, &[]).await.body);
    assert_eq!(blocks.len(), 3);

    // entirely outside, or empty: the root block alone
    for spec in ["5000000:*", "1000:-1234000"] {
        let path = format!("/ipfs/{}?format=car&entity-bytes={spec}", f.big_cid);
        let r = get(addr, &path, &[]).await;
        assert_eq!(r.status, 200, "{spec}");
        let (_, blocks) = parse_car(&r.body);
        assert_eq!(blocks.len(), 1, "{spec}");
    }
    // ignored for directories
    let path = format!("/ipfs/{}?format=car&entity-bytes=0:10", f.dir);
    let (_, blocks) = parse_car(&get(addr, &path, &[]).await.body);
    assert_eq!(blocks.len(), 1);
    // raw leaves too
    let path = format!("/ipfs/{}?format=car&entity-bytes=70000:140000", f.raw_cid);
    let (_, blocks) = parse_car(&get(addr, &path, &[]).await.body);
    let got_map: HashMap<Cid, Bytes> = blocks.iter().cloned().collect();
    assert_eq!(
        read_range(&got_map, &f.raw_cid, 70_000, 140_000),
        &f.raw[70_000..=140_000]
    );
    assert!(blocks.len() < reachable(&all, &f.raw_cid).len());
    // bad values
    for spec in ["x", "5:2", "1", "1:2:3"] {
        let path = format!("/ipfs/{}?format=car&entity-bytes={spec}", f.big_cid);
        assert_eq!(get(addr, &path, &[]).await.status, 400, "{spec}");
    }

    // a file of zeros: the same leaf eight times
    let path = format!("/ipfs/{}?format=car", f.zeros_cid);
    let (_, blocks) = parse_car(&get(addr, &path, &[]).await.body);
    no_dups(&blocks);
    assert_eq!(blocks.len(), 4, "root, two interior nodes, one leaf");
    let path = format!("/ipfs/{}?format=car&car-dups=y", f.zeros_cid);
    let r = get(addr, &path, &[]).await;
    assert!(r.h("content-type").ends_with("dups=y"));
    let (_, blocks) = parse_car(&r.body);
    assert_eq!(blocks.len(), 11, "root, two interior nodes, eight leaves");
    let got_map: HashMap<Cid, Bytes> = blocks.into_iter().collect();
    assert_eq!(
        read_range(&got_map, &f.zeros_cid, 0, 799_999),
        vec![0u8; 800_000]
    );
    // a range within the zeros: each leaf once with dups=n, still enough to read
    let path = format!("/ipfs/{}?format=car&entity-bytes=50000:750000", f.zeros_cid);
    let (_, blocks) = parse_car(&get(addr, &path, &[]).await.body);
    no_dups(&blocks);
    let got_map: HashMap<Cid, Bytes> = blocks.into_iter().collect();
    assert_eq!(
        read_range(&got_map, &f.zeros_cid, 50_000, 750_000),
        vec![0u8; 700_001]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_files_directories_and_ranges() {
    let f = fixture();
    let addr = serve(service(&f.blocks, &[]), None).await;

    let r = get(addr, &format!("/ipfs/{}/dir/a.txt", f.outer), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"hello gateway\n");
    assert_eq!(r.h("content-type"), "text/plain; charset=utf-8");
    assert_eq!(r.h("etag"), format!("\"{}\"", f.small_cid));
    assert_eq!(r.h("x-ipfs-path"), format!("/ipfs/{}/dir/a.txt", f.outer));
    assert_eq!(
        r.h("x-ipfs-roots"),
        format!("{},{},{}", f.outer, f.dir, f.small_cid)
    );
    let r = get(addr, &format!("/ipfs/{}/sp%20ace%20%C3%A9.txt", f.dir), &[]).await;
    assert_eq!(&r.body[..], b"hello gateway\n");

    // a multi-level file, whole and in ranges
    let r = get(addr, &format!("/ipfs/{}/dir/big.bin", f.outer), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.h("content-type"), "application/octet-stream");
    assert_eq!(r.h("accept-ranges"), "bytes");
    assert_eq!(r.h("content-length"), f.big.len().to_string());
    assert_eq!(r.body, f.big);
    let size = f.big.len();
    for (range, a, b) in [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=99990-300010", 99_990, 300_010),
        ("bytes=1200000-", 1_200_000, size - 1),
        ("bytes=-10", size - 10, size - 1),
        ("bytes=5-99999999", 5, size - 1),
    ] {
        let r = get(
            addr,
            &format!("/ipfs/{}/big.bin", f.dir),
            &[("range", range)],
        )
        .await;
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(r.h("content-range"), format!("bytes {a}-{b}/{size}"));
        assert_eq!(r.h("content-length"), (b - a + 1).to_string());
        assert_eq!(&r.body[..], &f.big[a..=b], "{range}");
    }
    for range in ["bytes=5000000-", "bytes=-0"] {
        let r = get(
            addr,
            &format!("/ipfs/{}/big.bin", f.dir),
            &[("range", range)],
        )
        .await;
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.h("content-range"), format!("bytes */{size}"));
    }
    // several ranges: ignored, the whole file
    let r = get(
        addr,
        &format!("/ipfs/{}", f.big_cid),
        &[("range", "bytes=0-1,5-6")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, f.big);
    // raw leaves
    let r = get(
        addr,
        &format!("/ipfs/{}", f.raw_cid),
        &[("range", "bytes=65530-65545")],
    )
    .await;
    assert_eq!(&r.body[..], &f.raw[65_530..=65_545]);
    let r = get(addr, &format!("/ipfs/{}?filename=x.json", f.raw_cid), &[]).await;
    assert_eq!(r.body, f.raw);
    assert_eq!(r.h("content-type"), "application/json");
    assert_eq!(r.h("content-disposition"), "inline; filename=\"x.json\"");

    // HEAD of a file: the length, no body
    let resp = client()
        .head(format!("http://{addr}/ipfs/{}/big.bin", f.dir))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-length"].to_str().unwrap(),
        size.to_string()
    );
    assert!(resp.bytes().await.unwrap().is_empty());

    // through a HAMT
    for i in [0, 42, 777, 1499] {
        let r = get(addr, &format!("/ipfs/{}/hamt/f{i}.txt", f.outer), &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, format!("file {i}\n").as_bytes());
    }
    let r = get(
        addr,
        &format!("/ipfs/{}/big.bin", f.hamt),
        &[("range", "bytes=10-20")],
    )
    .await;
    assert_eq!(&r.body[..], &f.big[10..=20]);
    assert_eq!(
        get(addr, &format!("/ipfs/{}/f1500.txt", f.hamt), &[])
            .await
            .status,
        404
    );

    // directories: redirect to the slash, then index.html or a listing
    let r = get(addr, &format!("/ipfs/{}/dir?x=1", f.outer), &[]).await;
    assert_eq!(r.status, 301);
    assert_eq!(r.h("location"), format!("/ipfs/{}/dir/?x=1", f.outer));
    let r = get(addr, &format!("/ipfs/{}/", f.dir), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.h("content-type"), "text/html; charset=utf-8");
    let html = String::from_utf8(r.body.to_vec()).unwrap();
    for name in [
        "a.txt",
        "big.bin",
        "sub",
        "zeros.bin",
        "./sp%20ace%20%C3%A9.txt",
    ] {
        assert!(html.contains(name), "{name} in listing");
    }
    let r = get(addr, &format!("/ipfs/{}/sub/", f.dir), &[]).await;
    assert_eq!(&r.body[..], b"<h1>hi</h1>");
    assert_eq!(r.h("content-type"), "text/html; charset=utf-8");
    let r = get(addr, &format!("/ipfs/{}/", f.hamt), &[]).await;
    let html = String::from_utf8(r.body.to_vec()).unwrap();
    for i in [0, 1, 999, 1499] {
        assert!(
            html.contains(&format!("\"./f{i}.txt\"")),
            "f{i}.txt in HAMT listing"
        );
    }
    assert_eq!(html.matches("<tr><td>").count(), 1501);

    // a symlink answers its target as text
    let r = get(addr, &format!("/ipfs/{}/link", f.dir), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"a.txt");
    assert_eq!(r.h("content-type"), "text/plain; charset=utf-8");
    assert_eq!(
        get(addr, &format!("/ipfs/{}", f.sym), &[]).await.body,
        "a.txt"
    );
    // ...and is never followed
    assert_eq!(
        get(addr, &format!("/ipfs/{}/link/x", f.dir), &[])
            .await
            .status,
        501
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors() {
    let f = fixture();
    let all: HashMap<Cid, Bytes> = f.blocks.iter().cloned().collect();
    // a store without one leaf of big.bin (the second leaf: bytes 100000..200000)
    let mut leaves = Vec::new();
    for c in reachable(&all, &f.big_cid) {
        if let Node::File(n) = unixfs::decode_node(&c, &all[&c]).unwrap() {
            if n.children.is_empty() {
                leaves.push((c, n.inline.to_vec()));
            }
        }
    }
    let missing = leaves
        .iter()
        .find(|(_, d)| d[..] == f.big[100_000..200_000])
        .unwrap()
        .0;
    let addr = serve(service(&f.blocks, &[missing]), None).await;
    let absent = cids::compute(Version::V1, codec::RAW, mh::SHA2_256, b"nowhere").unwrap();

    for (path, status) in [
        ("/ipfs/notacid".to_string(), 400),
        ("/ipfs/Qmfoo/a".to_string(), 400),
        ("/ipfs/".to_string(), 400),
        ("/".to_string(), 404),
        ("/other/thing".to_string(), 404),
        (format!("/ipfs/{absent}"), 404),
        (format!("/ipfs/{absent}?format=raw"), 404),
        (format!("/ipfs/{absent}?format=car"), 404),
        (format!("/ipfs/{}/nothing", f.dir), 404),
        (format!("/ipfs/{}/a.txt/x", f.dir), 404),
        (format!("/ipfs/{}/%2e%2e/x", f.dir), 400),
        (format!("/ipfs/{}/a%2Fb", f.dir), 400),
        (format!("/ipfs/{}/a%zz", f.dir), 400),
        (format!("/ipfs/{}?format=tar", f.dir), 501),
        (format!("/ipfs/{}?format=dag-json", f.dir), 501),
        (format!("/ipfs/{}?format=bogus", f.dir), 400),
        (format!("/ipfs/{}?format=car&car-version=2", f.dir), 400),
        (format!("/ipfs/{}?format=car&dag-scope=some", f.dir), 400),
        (format!("/ipfs/{}?format=ipns-record", f.dir), 400),
        ("/ipns/anything".to_string(), 501),
    ] {
        let r = get(addr, &path, &[]).await;
        assert_eq!(
            r.status,
            status,
            "{path}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let r = get(
        addr,
        &format!("/ipfs/{absent}"),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(r.status, 412);
    let r = get(
        addr,
        &format!("/ipfs/{}", f.dir),
        &[("service-worker", "script")],
    )
    .await;
    assert_eq!(r.status, 400);
    let resp = client()
        .post(format!("http://{addr}/ipfs/{}", f.dir))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);

    // a DAG with a hole: the CAR starts (200) and is cut off, never completed
    let resp = client()
        .get(format!("http://{addr}/ipfs/{}?format=car", f.big_cid))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.bytes().await.is_err(),
        "a broken CAR must not end cleanly"
    );
    // the same for file bytes
    let resp = client()
        .get(format!("http://{addr}/ipfs/{}", f.big_cid))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.bytes().await.is_err(),
        "a broken file must not end cleanly"
    );
    // ranges that avoid the hole still work, as trustless CARs and as bytes
    let r = get(
        addr,
        &format!("/ipfs/{}", f.big_cid),
        &[("range", "bytes=300000-400000")],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(&r.body[..], &f.big[300_000..=400_000]);
    let path = format!("/ipfs/{}?format=car&entity-bytes=0:99999", f.big_cid);
    let r = get(addr, &path, &[]).await;
    let (_, blocks) = parse_car(&r.body);
    let got_map: HashMap<Cid, Bytes> = blocks.into_iter().collect();
    assert_eq!(
        read_range(&got_map, &f.big_cid, 0, 99_999),
        &f.big[..100_000]
    );
    // the server is still fine
    assert_eq!(
        get(addr, &format!("/ipfs/{}/a.txt", f.dir), &[])
            .await
            .status,
        200
    );
}

struct FakeNames {
    map: HashMap<String, String>,
    records: HashMap<String, Bytes>,
}

#[async_trait]
impl NameSource for FakeNames {
    async fn resolve(&self, name: &str) -> Result<String, String> {
        self.map
            .get(name)
            .cloned()
            .ok_or_else(|| "no record".to_string())
    }
    async fn record(&self, name: &str) -> Option<Bytes> {
        self.records.get(name).cloned()
    }
    fn held_record(&self, name: &ipfs_mount_ipns::Name) -> Option<Bytes> {
        self.records.get(&name.to_string()).cloned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipns_names_and_records() {
    let f = fixture();
    let names = FakeNames {
        map: HashMap::from([
            ("k51test".to_string(), format!("/ipfs/{}", f.outer)),
            ("k51sub".to_string(), format!("/ipfs/{}/dir", f.outer)),
            ("example.com".to_string(), "/ipns/k51sub".to_string()),
            ("loop.example".to_string(), "/ipns/loop.example".to_string()),
            ("broken".to_string(), "/ipfs/notacid".to_string()),
        ]),
        records: HashMap::from([("k51test".to_string(), Bytes::from_static(b"\x0a\x03rec"))]),
    };
    let addr = serve(service(&f.blocks, &[]), Some(Arc::new(names))).await;

    let r = get(addr, "/ipns/k51test/dir/a.txt", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"hello gateway\n");
    assert_eq!(r.h("cache-control"), "public, max-age=60");
    assert_eq!(r.h("x-ipfs-path"), "/ipns/k51test/dir/a.txt");
    // the record's own path, then ours; and a name pointing at a name
    let r = get(addr, "/ipns/k51sub/big.bin", &[("range", "bytes=0-9")]).await;
    assert_eq!(&r.body[..], &f.big[..10]);
    let r = get(addr, "/ipns/example.com/a.txt", &[]).await;
    assert_eq!(&r.body[..], b"hello gateway\n");
    assert_eq!(get(addr, "/ipns/example.com", &[]).await.status, 301);
    // CAR through a name
    let r = get(
        addr,
        "/ipns/k51test/hamt/f5.txt?format=car&dag-scope=block",
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.h("cache-control"), "public, max-age=60");
    let (roots, _) = parse_car(&r.body);
    assert_eq!(roots, vec![f.outer]);

    let r = get(addr, "/ipns/k51test?format=ipns-record", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"\x0a\x03rec");
    assert_eq!(r.h("content-type"), "application/vnd.ipfs.ipns-record");
    let r = get(
        addr,
        "/ipns/k51test",
        &[("accept", "application/vnd.ipfs.ipns-record")],
    )
    .await;
    assert_eq!(&r.body[..], b"\x0a\x03rec");
    assert_eq!(
        get(addr, "/ipns/k51sub?format=ipns-record", &[])
            .await
            .status,
        404
    );
    assert_eq!(
        get(addr, "/ipns/k51test/dir?format=ipns-record", &[])
            .await
            .status,
        400
    );
    assert_eq!(get(addr, "/ipns/nobody/x", &[]).await.status, 404);
    assert_eq!(get(addr, "/ipns/loop.example/x", &[]).await.status, 404);
    assert_eq!(get(addr, "/ipns/broken", &[]).await.status, 502);
}

/// Another ipfs-mount reading from us: our own gateway client, and a block service using it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_gateway_client_reads_from_us() {
    let f = fixture();
    let all: HashMap<Cid, Bytes> = f.blocks.iter().cloned().collect();
    let addr = serve(service(&f.blocks, &[]), None).await;
    let mut cfg = GatewayConfig::new(vec![url::Url::parse(&format!("http://{addr}")).unwrap()]);
    cfg.retries = 0;
    cfg.request_timeout = Duration::from_secs(10);
    let gw = GatewayFetcher::new(cfg).unwrap();

    assert_eq!(gw.fetch_block(&f.dir).await.unwrap().data(), &all[&f.dir]);
    assert_eq!(gw.fetch_block(&f.hamt).await.unwrap().data(), &all[&f.hamt]);
    let absent = cids::compute(Version::V1, codec::RAW, mh::SHA2_256, b"nowhere").unwrap();
    assert_eq!(gw.fetch_block(&absent).await, Err(FetchError::NotFound));

    for (scope, want) in [
        (DagScope::All, reachable(&all, &f.dir)),
        (DagScope::Block, HashSet::from([f.big_cid])),
        (
            DagScope::Entity { bytes: None },
            reachable(&all, &f.big_cid),
        ),
    ] {
        let root = if scope == DagScope::All {
            f.dir
        } else {
            f.big_cid
        };
        let mut got = HashSet::new();
        let mut sink = |block: VerifiedBlock| {
            got.insert(*block.cid());
            SinkControl::Continue
        };
        gw.fetch_car(&root, scope, &mut sink).await.unwrap();
        assert_eq!(got, want, "{scope:?}");
    }
    let mut got = HashMap::new();
    let mut sink = |block: VerifiedBlock| {
        let (cid, data) = block.into_parts();
        got.insert(cid, data);
        SinkControl::Continue
    };
    let scope = DagScope::Entity {
        bytes: Some((250_000, Some(520_000))),
    };
    gw.fetch_car(&f.big_cid, scope, &mut sink).await.unwrap();
    assert_eq!(
        read_range(&got, &f.big_cid, 250_000, 520_000),
        &f.big[250_000..=520_000]
    );

    // a block service whose only source is our gateway: bulk and single fetches
    let store = Arc::new(MemoryStore::new(1 << 30));
    let other = Arc::new(BlockService::new(
        store,
        vec![Arc::new(gw) as Arc<dyn Fetcher>],
        false,
        8 << 20,
    ));
    let stored = other.fetch_dag(&f.big_cid, DagScope::All).await.unwrap();
    assert_eq!(stored as usize, reachable(&all, &f.big_cid).len());
    for c in reachable(&all, &f.big_cid) {
        assert!(other.has_local(&c));
    }
    assert_eq!(other.get(&f.hamt).await.unwrap(), all[&f.hamt]);

    // and a gateway of that second service, fetching through (allow_fetch)
    let cfg = ServeConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        allow_fetch: true,
        provider: None,
    };
    let addr2 = start(cfg, other, None).await.unwrap();
    let r = get(addr2, &format!("/ipfs/{}/hamt/f9.txt", f.outer), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"file 9\n");
    let r = get(addr2, &format!("/ipfs/{}/raw.bin", f.dir), &[]).await;
    assert_eq!(r.body, f.raw);
    assert_eq!(
        get(addr2, &format!("/ipfs/{absent}"), &[]).await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetching_through_is_opt_in() {
    let f = fixture();
    let mock = Arc::new(MockFetcher::with_blocks(f.blocks.iter().cloned()));
    let make = |allow_fetch| {
        let store = Arc::new(MemoryStore::new(1 << 30));
        let service = Arc::new(BlockService::new(
            store,
            vec![mock.clone() as Arc<dyn Fetcher>],
            false,
            8 << 20,
        ));
        let cfg = ServeConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            allow_fetch,
            provider: None,
        };
        start(cfg, service, None)
    };
    let local_only = make(false).await.unwrap();
    let path = format!("/ipfs/{}/big.bin", f.dir);
    assert_eq!(get(local_only, &path, &[]).await.status, 404);
    assert_eq!(mock.block_calls(), 0, "allow_fetch=false never fetches");

    let through = make(true).await.unwrap();
    let r = get(through, &path, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, f.big);
    assert!(mock.block_calls() > 0);
    // only-if-cached: what is local now answers, what is not is 412
    let r = get(through, &path, &[("cache-control", "only-if-cached")]).await;
    assert_eq!(r.status, 200);
    let r = get(
        through,
        &format!("/ipfs/{}/raw.bin", f.dir),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(r.status, 412);
    // sources failing: 504
    mock.fail_next(1000, None);
    let r = get(through, &format!("/ipfs/{}/raw.bin", f.dir), &[]).await;
    assert_eq!(r.status, 504);
    assert_eq!(r.h("retry-after"), "30");
}

/// Raises the soft limit on open files (this test holds over a thousand sockets: both ends).
fn raise_open_files(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Reads until EOF or an error (a reset): the bytes read, and whether it ended within `limit`.
async fn drain(s: &mut tokio::net::TcpStream, limit: Duration) -> (usize, bool) {
    use tokio::io::AsyncReadExt;
    let mut total = 0;
    let mut buf = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .is_ok();
    (total, ended)
}

/// The status line a raw request gets.
async fn raw_status(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // the server may answer (and close) before it has read everything: ignore write errors
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    text.lines().next().unwrap_or_default().to_string()
}

/// 500 clients that send half a request line and 20 that ask for a large CAR and never read
/// hold more connections than the gateway has slots: a normal request is still answered at
/// once, the slow clients are closed by the server after the header timeout (5 s) and the
/// write-stall timeout (10 s), and oversized request heads get 431.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_neither_starve_nor_stay() {
    use tokio::io::AsyncWriteExt;
    raise_open_files(8192);
    let f = fixture();
    let mut blocks = f.blocks.clone();
    let large = data(12 << 20, 11);
    let large_b = build_file(&large, &small_v1(1 << 20, 174));
    blocks.extend(large_b.blocks.iter().cloned());
    let addr = serve(service(&blocks, &[]), None).await;

    let opened = tokio::time::Instant::now();
    let mut slow = Vec::new();
    for _ in 0..500 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /ipfs/bafkrei").await.unwrap();
        slow.push(s);
    }
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut s = sock.connect(addr).await.unwrap();
        let req = format!(
            "GET /ipfs/{}?format=car HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            large_b.root
        );
        s.write_all(req.as_bytes()).await.unwrap();
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        get(addr, &format!("/ipfs/{}", f.small_cid), &[]),
    )
    .await
    .expect("a normal request is answered within 2 s while 520 slow clients hang on");
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"hello gateway\n");
    eprintln!("normal request answered in {:?}", started.elapsed());

    // oversized request line, oversized headers: 431 and closed
    let long_line = format!(
        "GET /ipfs/{}/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        f.dir,
        "a".repeat(20_000)
    );
    assert_eq!(
        raw_status(addr, long_line.as_bytes()).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let big_header = format!(
        "GET /ipfs/{} HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\n\r\n",
        f.small_cid,
        "b".repeat(32_000)
    );
    assert_eq!(
        raw_status(addr, big_header.as_bytes()).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );

    // half a request line: closed by the server once the header timeout (5 s) has passed
    let deadline = opened + Duration::from_secs(9);
    for (i, s) in slow.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (_, ended) = drain(s, left).await;
        assert!(ended, "slow client {i} is still open after 9 s");
    }
    eprintln!("slow clients closed after {:?}", opened.elapsed());

    // never reading: cut off once a write made no progress for 10 s; what the kernels
    // buffered is less than the CAR
    tokio::time::sleep_until(opened + Duration::from_secs(13)).await;
    for (i, s) in stalled.iter_mut().enumerate() {
        let (got, ended) = drain(s, Duration::from_secs(5)).await;
        assert!(ended, "stalled client {i} is still open after 18 s");
        assert!(
            got < large.len(),
            "stalled client {i} got {got} bytes: the whole CAR, not cut off"
        );
    }

    // and the gateway still answers
    let r = get(addr, &format!("/ipfs/{}", f.small_cid), &[]).await;
    assert_eq!(r.status, 200);
}

/// `?filename=` cannot turn content into a page of the gateway's origin: a name that makes it
/// HTML, SVG or XML gets `attachment` unless `download=false` says otherwise, every HTML/SVG
/// response carries `Content-Security-Policy: sandbox`, and every response `nosniff`. Other
/// names stay inline, as the path gateway spec has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filename_cannot_make_content_a_page_of_our_origin() {
    let f = fixture();
    let addr = serve(service(&f.blocks, &[]), None).await;
    let raw = f.raw_cid;
    let csp = "content-security-policy";

    let r = get(addr, &format!("/ipfs/{raw}?filename=x.html"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.h("content-type"), "text/html; charset=utf-8");
    assert_eq!(
        r.h("content-disposition"),
        "attachment; filename=\"x.html\""
    );
    assert_eq!(r.h(csp), "sandbox");
    assert_eq!(r.h("x-content-type-options"), "nosniff");
    let r = get(addr, &format!("/ipfs/{raw}?filename=x.svg"), &[]).await;
    assert_eq!(r.h("content-disposition"), "attachment; filename=\"x.svg\"");
    assert_eq!(r.h(csp), "sandbox");
    let r = get(addr, &format!("/ipfs/{raw}?filename=x.xml"), &[]).await;
    assert_eq!(r.h("content-disposition"), "attachment; filename=\"x.xml\"");

    // asked for inline: inline, sandboxed
    let r = get(
        addr,
        &format!("/ipfs/{raw}?filename=x.html&download=false"),
        &[],
    )
    .await;
    assert_eq!(r.h("content-disposition"), "inline; filename=\"x.html\"");
    assert_eq!(r.h(csp), "sandbox");
    assert_eq!(r.h("x-content-type-options"), "nosniff");
    let r = get(
        addr,
        &format!("/ipfs/{raw}?filename=x.html&download=true"),
        &[],
    )
    .await;
    assert_eq!(
        r.h("content-disposition"),
        "attachment; filename=\"x.html\""
    );

    // other names: inline (spec), with nosniff and no sandbox
    let r = get(addr, &format!("/ipfs/{raw}?filename=testтест.pdf"), &[]).await;
    assert_eq!(
        r.h("content-disposition"),
        "inline; filename=\"test____.pdf\"; filename*=UTF-8''test%D1%82%D0%B5%D1%81%D1%82.pdf"
    );
    assert_eq!(r.h("x-content-type-options"), "nosniff");
    assert_eq!(r.h(csp), "");

    // HTML under its own name (index.html, the generated listing): inline, sandboxed
    let r = get(addr, &format!("/ipfs/{}/sub/", f.dir), &[]).await;
    assert_eq!(&r.body[..], b"<h1>hi</h1>");
    assert_eq!(r.h("content-disposition"), "");
    assert_eq!(r.h(csp), "sandbox");
    let r = get(addr, &format!("/ipfs/{}/", f.dir), &[]).await;
    assert!(r.h("content-type").starts_with("text/html"));
    assert_eq!(r.h(csp), "sandbox");
    assert_eq!(r.h("x-content-type-options"), "nosniff");
    // plain text and errors: nosniff
    let r = get(addr, &format!("/ipfs/{}/a.txt", f.dir), &[]).await;
    assert_eq!(r.h("x-content-type-options"), "nosniff");
    let r = get(addr, "/ipfs/not-a-cid", &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.h("x-content-type-options"), "nosniff");
}

/// A file root with `fanout` links to S1, S1 with `fanout` links to one raw leaf of `leaf`
/// bytes. Returns the blocks (root last).
fn shared_children_file(fanout: usize, leaf: usize) -> Vec<(Cid, Bytes)> {
    use ipfs_mount_ipld::dagpb::PbLink;
    let leaf = Bytes::from(data(leaf, 5));
    let leaf_cid = cids::compute(Version::V1, codec::RAW, mh::SHA2_256, &leaf).unwrap();
    let node = |child: Cid, child_size: u64| {
        let mut d = UnixFsData::new(DataType::File);
        d.blocksizes = vec![child_size; fanout];
        d.filesize = Some(child_size * fanout as u64);
        let links = (0..fanout)
            .map(|_| PbLink {
                cid: child,
                name: Some(vec![]),
                tsize: Some(child_size),
            })
            .collect();
        let block = dagpb::encode(&PbNode {
            links,
            data: Some(Bytes::from(unixfs::encode_data(&d))),
        });
        let cid = cids::compute(Version::V1, codec::DAG_PB, mh::SHA2_256, &block).unwrap();
        (cid, Bytes::from(block))
    };
    let leaf_len = leaf.len() as u64;
    let s1 = node(leaf_cid, leaf_len);
    let root = node(s1.0, leaf_len * fanout as u64);
    vec![(leaf_cid, leaf), s1, root]
}

fn block_reads(service: &BlockService) -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    service.stats.memory_hits.load(Relaxed) + service.stats.store_hits.load(Relaxed)
}

#[tokio::test]
async fn walks_over_shared_children_read_each_block_once() {
    // 1024 x 1024 links to one 16-byte leaf: a 16 MiB file of three blocks
    let blocks = shared_children_file(1024, 16);
    let (leaf, root) = (blocks[0].1.clone(), blocks[2].0);
    let svc = service(&blocks, &[]);
    let addr = serve(svc.clone(), None).await;

    // bytes of a range: 65536 leaf visits
    let before = block_reads(&svc);
    let r = get(
        addr,
        &format!("/ipfs/{root}"),
        &[("Range", "bytes=0-1048575")],
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body.len(), 1 << 20);
    assert!(r.body.chunks(16).all(|c| c == &leaf[..]));
    let reads = block_reads(&svc) - before;
    assert!(
        reads <= 8,
        "{reads} block reads for a range of a 3-block file"
    );

    // dups=n: each block once, whatever the links
    let before = block_reads(&svc);
    let r = get(addr, &format!("/ipfs/{root}?format=car&dag-scope=all"), &[]).await;
    assert_eq!(r.status, 200);
    let (_, got) = parse_car(&r.body);
    assert_eq!(got.len(), 3);
    let reads = block_reads(&svc) - before;
    assert!(reads <= 8, "{reads} block reads for a CAR of 3 blocks");

    // dups=y repeats blocks as the DAG does; each is still read once (a smaller DAG: the
    // answer itself is fanout² blocks)
    let blocks = shared_children_file(64, 16);
    let root = blocks[2].0;
    for (c, b) in &blocks {
        svc.put_verified(c, b.clone()).unwrap();
    }
    let before = block_reads(&svc);
    let r = get(
        addr,
        &format!("/ipfs/{root}?format=car&dag-scope=all&car-dups=y"),
        &[],
    )
    .await;
    assert_eq!(r.status, 200);
    let (_, got) = parse_car(&r.body);
    assert_eq!(got.len(), 1 + 64 + 64 * 64);
    let reads = block_reads(&svc) - before;
    assert!(
        reads <= 8,
        "{reads} block reads for a dups=y CAR of 3 blocks"
    );
}

/// `--serve` as a delegated router (routing/http-routing-v1.md): records it holds, itself as
/// the provider of its blocks and as a peer, nothing else; CORS open; PUT refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_routing_answers_for_what_it_holds() {
    use ipfs_mount::serve::Provider;
    use ipfs_mount_ipns::Name;
    use libp2p_identity::Keypair;

    let f = fixture();
    let key = Keypair::ed25519_from_bytes([7u8; 32]).unwrap();
    let name = Name::from_public_key(&key.public());
    let eol = std::time::SystemTime::now() + Duration::from_secs(3600);
    let value = format!("/ipfs/{}", f.outer);
    let record = ipfs_mount_ipns::create(&key, &value, 1, eol, Duration::from_secs(300)).unwrap();
    let names = FakeNames {
        map: HashMap::new(),
        records: HashMap::from([(name.to_string(), Bytes::from(record.to_vec()))]),
    };
    let me = Keypair::ed25519_from_bytes([8u8; 32]).unwrap();
    let me_id = me.public().to_peer_id().to_string();
    let cfg = ServeConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        allow_fetch: false,
        provider: Some(Provider {
            peer_id: me_id.clone(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".to_string()],
        }),
    };
    let addr = start(cfg, service(&f.blocks, &[]), Some(Arc::new(names)))
        .await
        .unwrap();
    let ipns_accept = [("accept", "application/vnd.ipfs.ipns-record")];

    // The record, by its CIDv1 name and by the base58 peer id, verifiable by the client.
    for form in [name.to_string(), name.peer_id().to_string()] {
        let r = get(addr, &format!("/routing/v1/ipns/{form}"), &ipns_accept).await;
        assert_eq!(r.status, 200, "{form}");
        assert_eq!(r.h("content-type"), "application/vnd.ipfs.ipns-record");
        assert_eq!(
            r.h("cache-control"),
            "public, max-age=300",
            "the record's TTL"
        );
        assert_eq!(r.h("access-control-allow-origin"), "*");
        assert!(r.h("etag").starts_with("\"b"), "{}", r.h("etag"));
        let got = ipfs_mount_ipns::validate(&name, &r.body, std::time::SystemTime::now()).unwrap();
        assert_eq!(got.value, value);
    }
    // No Accept is the record too; asking for something else is 406.
    let path = format!("/routing/v1/ipns/{name}");
    assert_eq!(get(addr, &path, &[]).await.status, 200);
    let r = get(addr, &path, &[("accept", "application/json")]).await;
    assert_eq!(r.status, 406);
    assert!(String::from_utf8_lossy(&r.body).contains("application/vnd.ipfs.ipns-record"));
    // A name we hold nothing for is 404 (not resolved on the client's behalf); garbage is 400.
    let other = Name::from_public_key(&Keypair::ed25519_from_bytes([9u8; 32]).unwrap().public());
    let r = get(addr, &format!("/routing/v1/ipns/{other}"), &ipns_accept).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.h("cache-control"), "public, max-age=60");
    assert_eq!(
        get(addr, "/routing/v1/ipns/not-a-name", &ipns_accept)
            .await
            .status,
        400
    );
    let cidv1_raw = f.blocks[0].0.to_string();
    assert_eq!(
        get(addr, &format!("/routing/v1/ipns/{cidv1_raw}"), &ipns_accept)
            .await
            .status,
        400,
        "a CID that is not libp2p-key"
    );

    // Providers: this peer for a block it holds, with its libp2p and HTTP addresses.
    let held = f.outer;
    let r = get(addr, &format!("/routing/v1/providers/{held}"), &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.h("content-type"), "application/json");
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let p = &v["Providers"][0];
    assert_eq!(v["Providers"].as_array().unwrap().len(), 1);
    assert_eq!(p["Schema"], "peer");
    assert_eq!(p["ID"], me_id.as_str());
    let addrs: Vec<&str> = p["Addrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        addrs,
        [
            "/ip4/127.0.0.1/tcp/4001".to_string(),
            format!("/ip4/127.0.0.1/tcp/{}/http", addr.port())
        ]
    );
    let protocols = p["Protocols"].as_array().unwrap();
    assert!(protocols.contains(&"transport-bitswap".into()));
    assert!(protocols.contains(&"transport-ipfs-gateway-http".into()));
    // Streamed on request: one record per line.
    let r = get(
        addr,
        &format!("/routing/v1/providers/{held}"),
        &[("accept", "application/x-ndjson")],
    )
    .await;
    assert_eq!(r.h("content-type"), "application/x-ndjson");
    let lines: Vec<&[u8]> = r
        .body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 1);
    let line: serde_json::Value = serde_json::from_slice(lines[0]).unwrap();
    assert_eq!(line["ID"], me_id.as_str());
    // A block not held: 404; not a CID: 400.
    let missing = cids::compute(Version::V1, codec::RAW, mh::SHA2_256, b"not here").unwrap();
    assert_eq!(
        get(addr, &format!("/routing/v1/providers/{missing}"), &[])
            .await
            .status,
        404
    );
    assert_eq!(
        get(addr, "/routing/v1/providers/xyz", &[]).await.status,
        400
    );

    // Peers: itself only.
    let r = get(addr, &format!("/routing/v1/peers/{me_id}"), &[]).await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["Peers"][0]["ID"], me_id.as_str());
    assert_eq!(
        get(addr, &format!("/routing/v1/peers/{}", name.peer_id()), &[])
            .await
            .status,
        404
    );

    // Unknown paths 400; writes 501; CORS preflight answered.
    assert_eq!(get(addr, "/routing/v1/dht/x", &[]).await.status, 400);
    let put = client()
        .put(format!("http://{addr}/routing/v1/ipns/{name}"))
        .header("content-type", "application/vnd.ipfs.ipns-record")
        .body(record.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 501);
    let pre = client()
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{addr}/routing/v1/ipns/{name}"),
        )
        .header("origin", "http://example.test")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success());
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");

    // Without a peer identity no provider is named.
    let cfg = ServeConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        allow_fetch: false,
        provider: None,
    };
    let bare = start(cfg, service(&f.blocks, &[]), None).await.unwrap();
    assert_eq!(
        get(bare, &format!("/routing/v1/providers/{held}"), &[])
            .await
            .status,
        404
    );
    assert_eq!(
        get(bare, &format!("/routing/v1/ipns/{name}"), &ipns_accept)
            .await
            .status,
        404
    );
}

/// The gateway walks through the ipld reader's planners, so it keeps their checks: a file
/// deeper than 64 levels is cut off instead of served, and a directory's second entry of a
/// name is left out of the listing (as the mount hides it).
#[tokio::test]
async fn planner_checks_hold_for_the_gateway() {
    use ipfs_mount_ipld::dagpb::PbLink;
    let pb = |d: UnixFsData, links: Vec<PbLink>| {
        let block = dagpb::encode(&PbNode {
            links,
            data: Some(Bytes::from(unixfs::encode_data(&d))),
        });
        let cid = cids::compute(Version::V1, codec::DAG_PB, mh::SHA2_256, &block).unwrap();
        (cid, Bytes::from(block))
    };
    let leaf = Bytes::from(data(16, 3));
    let leaf_cid = cids::compute(Version::V1, codec::RAW, mh::SHA2_256, &leaf).unwrap();
    let mut blocks = vec![(leaf_cid, leaf)];
    let mut top = leaf_cid;
    for _ in 0..70 {
        let mut d = UnixFsData::new(DataType::File);
        d.blocksizes = vec![16];
        d.filesize = Some(16);
        let link = PbLink {
            cid: top,
            name: Some(vec![]),
            tsize: Some(16),
        };
        let node = pb(d, vec![link]);
        top = node.0;
        blocks.push(node);
    }
    let links = ["a", "a", "b"]
        .iter()
        .map(|n| PbLink {
            cid: leaf_cid,
            name: Some(n.as_bytes().to_vec()),
            tsize: Some(16),
        })
        .collect();
    let dir = pb(UnixFsData::new(DataType::Directory), links);
    blocks.push(dir.clone());
    let addr = serve(service(&blocks, &[]), None).await;

    let resp = client()
        .get(format!("http://{addr}/ipfs/{top}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the body starts, then the walk fails");
    // cut off: the client sees an error or a short body
    if let Ok(body) = resp.bytes().await {
        assert!(body.len() < 16, "a 70-level file served whole");
    }

    let r = get(addr, &format!("/ipfs/{}/", dir.0), &[]).await;
    assert_eq!(r.status, 200);
    let html = String::from_utf8_lossy(&r.body);
    assert_eq!(html.matches("href=\"./a\"").count(), 1, "{html}");
    assert_eq!(html.matches("href=\"./b\"").count(), 1, "{html}");
}
