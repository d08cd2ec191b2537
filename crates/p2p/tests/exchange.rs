//! Two and three in-process nodes on loopback exchanging blocks over bitswap: single blocks,
//! whole files through the DAG walk (in file order, byte ranges), missing blocks, providers
//! found through the DHT, and a provider that goes away.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use ipfs_mount_fetch::{DagScope, FetchError, Fetcher, SinkControl, VerifiedBlock};
use ipfs_mount_ipld::builder::{build_file, ImportProfile};
use ipfs_mount_ipld::cids::VerifyError;
use ipfs_mount_p2p::bitswap::dag::BitswapFetcher;
use ipfs_mount_p2p::bitswap::{BitswapConfig, BlockSource};
use ipfs_mount_p2p::{DhtMode, Multiaddr, Node, NodeConfig};
use libp2p::identity::Keypair;
use parking_lot::Mutex;

#[derive(Default)]
struct MemSource(Mutex<HashMap<Vec<u8>, Bytes>>);

impl MemSource {
    fn add(&self, blocks: &[(Cid, Bytes)]) {
        let mut m = self.0.lock();
        for (c, b) in blocks {
            m.insert(c.hash().to_bytes(), b.clone());
        }
    }
}

impl BlockSource for MemSource {
    fn get(&self, cid: &Cid) -> Option<Bytes> {
        self.0.lock().get(&cid.hash().to_bytes()).cloned()
    }
    fn has(&self, cid: &Cid) -> bool {
        self.0.lock().contains_key(&cid.hash().to_bytes())
    }
}

fn config(peers: Vec<Multiaddr>, dht: DhtMode) -> NodeConfig {
    NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        peers,
        routers: vec![],
        dht,
        bitswap: BitswapConfig {
            fetch_timeout: Duration::from_secs(5),
            hedge_after: Duration::from_millis(500),
            ..BitswapConfig::default()
        },
        serve_only: false,
        limits: Default::default(),
    }
}

async fn node(peers: Vec<Multiaddr>, dht: DhtMode) -> (Arc<Node>, Arc<MemSource>) {
    let source = Arc::new(MemSource::default());
    let n = Node::start(
        Keypair::generate_ed25519(),
        config(peers, dht),
        source.clone(),
    )
    .await
    .expect("node starts");
    (n, source)
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn wait_connected(n: &Node, count: usize) {
    for _ in 0..100 {
        if n.bitswap().connected_peers().len() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not connected to {count} peer(s)");
}

/// Reassembles a UnixFS file from the blocks a DAG walk delivered (leaves in order).
fn leaves_in_order(blocks: &[(Cid, Bytes)]) -> Vec<u8> {
    blocks
        .iter()
        .filter(|(c, _)| c.codec() == 0x55)
        .flat_map(|(_, b)| b.to_vec())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_moves_between_two_nodes_in_file_order() {
    let (server, source) = node(vec![], DhtMode::Off).await;
    let data = random(5 * 1024 * 1024 + 123, 1);
    let built = build_file(&data, &ImportProfile::unixfs_v1_2025());
    source.add(&built.blocks);
    let (client, _) = node(server.listen_addrs(), DhtMode::Off).await;
    wait_connected(&client, 1).await;

    // One block.
    let got = client.bitswap().get(&built.root).await.unwrap();
    assert_eq!(got.cid(), &built.root);
    assert_eq!(
        got.data(),
        &built
            .blocks
            .iter()
            .find(|(c, _)| *c == built.root)
            .unwrap()
            .1
    );

    // The whole file through the DAG walk: every leaf, in file order.
    let fetcher = BitswapFetcher::new(client.bitswap().clone());
    let mut received = Vec::new();
    let mut sink = |b: VerifiedBlock| {
        received.push(b.into_parts());
        SinkControl::Continue
    };
    fetcher
        .fetch_car(&built.root, DagScope::Entity { bytes: None }, &mut sink)
        .await
        .unwrap();
    assert_eq!(leaves_in_order(&received), data);
    assert!(
        server
            .bitswap()
            .stats
            .blocks_sent
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 6
    );

    // A byte range wants only the leaves it overlaps (1 MiB chunks: bytes 1.5..2.5 MiB -> 2).
    let mut ranged = Vec::new();
    let mut sink = |b: VerifiedBlock| {
        ranged.push(b.into_parts());
        SinkControl::Continue
    };
    let from = 3 * 512 * 1024;
    fetcher
        .fetch_car(
            &built.root,
            DagScope::Entity {
                bytes: Some((from, Some(from + 1024 * 1024 - 1))),
            },
            &mut sink,
        )
        .await
        .unwrap();
    assert_eq!(ranged.iter().filter(|(c, _)| c.codec() == 0x55).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_nobody_has_is_not_found_quickly() {
    let (server, _source) = node(vec![], DhtMode::Off).await;
    let (client, _) = node(server.listen_addrs(), DhtMode::Off).await;
    wait_connected(&client, 1).await;
    let missing = build_file(b"nobody has this", &ImportProfile::unixfs_v1_2025()).root;
    let t = std::time::Instant::now();
    let r = client.bitswap().get(&missing).await;
    assert_eq!(r, Err(FetchError::NotFound));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
}

/// A CID with a truncated digest (or a hash we cannot compute) is refused with the error the
/// gateway fetcher gives (crates/fetch/tests/gateway.rs), before a want goes out, even though
/// a peer holds bytes that would match the truncated digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_digest_and_unsupported_hash_are_refused_like_the_gateway_does() {
    let (server, source) = node(vec![], DhtMode::Off).await;
    let data = Bytes::from_static(b"cut short");
    let full = ipfs_mount_ipld::cids::compute(cid::Version::V1, 0x55, 0x12, &data).unwrap();
    let digest = &full.hash().digest()[..20];
    let short = Cid::new_v1(0x55, cid::multihash::Multihash::wrap(0x12, digest).unwrap());
    let sha3 = Cid::new_v1(
        0x55,
        cid::multihash::Multihash::wrap(0x14, &[1; 64]).unwrap(),
    );
    source.add(&[(short, data.clone()), (sha3, data)]);
    let (client, _) = node(server.listen_addrs(), DhtMode::Off).await;
    wait_connected(&client, 1).await;
    let fetcher = BitswapFetcher::new(client.bitswap().clone());
    let truncated = VerifyError::BadDigestLength {
        code: 0x12,
        len: 20,
        expected: 32,
    };
    let t = std::time::Instant::now();
    for (cid, why) in [
        (short, truncated),
        (sha3, VerifyError::UnsupportedHash(0x14)),
    ] {
        let expected = Err(FetchError::unverified(&cid, why));
        assert_eq!(client.bitswap().get(&cid).await, expected);
        assert_eq!(fetcher.fetch_block(&cid).await, expected);
    }
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    let sent = server
        .bitswap()
        .stats
        .blocks_sent
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halves_of_a_dag_come_from_two_providers() {
    let data = random(4 * 1024 * 1024, 2);
    let built = build_file(&data, &ImportProfile::unixfs_v1_2025());
    let (p1, s1) = node(vec![], DhtMode::Off).await;
    let (p2, s2) = node(vec![], DhtMode::Off).await;
    // Root and even leaves on p1, odd leaves on p2.
    for (i, b) in built.blocks.iter().enumerate() {
        if b.0 == built.root || i % 2 == 0 {
            s1.add(std::slice::from_ref(b));
        } else {
            s2.add(std::slice::from_ref(b));
        }
    }
    let mut peers = p1.listen_addrs();
    peers.extend(p2.listen_addrs());
    let (client, _) = node(peers, DhtMode::Off).await;
    wait_connected(&client, 2).await;
    let fetcher = BitswapFetcher::new(client.bitswap().clone());
    let mut received = Vec::new();
    let mut sink = |b: VerifiedBlock| {
        received.push(b.into_parts());
        SinkControl::Continue
    };
    fetcher
        .fetch_car(&built.root, DagScope::All, &mut sink)
        .await
        .unwrap();
    assert_eq!(leaves_in_order(&received), data);
    let sent = |n: &Node| {
        n.bitswap()
            .stats
            .blocks_sent
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert!(sent(&p1) > 0 && sent(&p2) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dht_finds_a_provider_two_hops_away() {
    // C holds the block and announces it; B knows C; A knows only B.
    let (c, sc) = node(vec![], DhtMode::Server).await;
    let built = build_file(&random(300_000, 3), &ImportProfile::unixfs_v1_2025());
    sc.add(&built.blocks);
    let (b, _) = node(c.listen_addrs(), DhtMode::Server).await;
    wait_connected(&b, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // identify: C enters B's routing table
    c.provide([built.root]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (a, _) = node(b.listen_addrs(), DhtMode::Client).await;
    wait_connected(&a, 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = a
        .bitswap()
        .get(&built.root)
        .await
        .expect("found through the DHT");
    assert_eq!(
        got.data(),
        &built
            .blocks
            .iter()
            .find(|(x, _)| *x == built.root)
            .unwrap()
            .1
    );
    assert!(a.bitswap().connected_peers().contains(&c.peer_id()));
}

/// Three blocks: a HAMT shard (fanout 1024) whose 1024 buckets all link to S1, whose 1024
/// buckets all link to S2, a shard holding `n` entries (raw leaves, also returned).
fn shared_children_hamt(n: usize) -> (Cid, Vec<(Cid, Bytes)>) {
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
    for i in 0..n {
        let name = format!("entry-{i:04}").into_bytes();
        let idx = hamt::bucket_index(&name, 2, 1024).unwrap();
        by_index.entry(idx).or_insert(name);
    }
    let mut bitfield = vec![0u8; 128];
    let mut links = Vec::new();
    let mut blocks = Vec::new();
    for (idx, name) in by_index {
        bitfield[127 - (idx / 8) as usize] |= 1 << (idx % 8);
        let leaf = Bytes::from(name.clone());
        let leaf_cid = cids::compute(cid::Version::V1, codec::RAW, mh::SHA2_256, &leaf).unwrap();
        blocks.push((leaf_cid, leaf));
        let mut lname = format!("{idx:03X}").into_bytes();
        lname.extend_from_slice(&name);
        links.push(PbLink {
            cid: leaf_cid,
            name: Some(lname),
            tsize: Some(name.len() as u64),
        });
    }
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
    let s2 = shard(links, bitfield);
    let s1 = all_to(s2.0);
    let root = all_to(s1.0);
    let root_cid = root.0;
    blocks.extend([s2, s1, root]);
    (root_cid, blocks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dag_of_shared_children_moves_each_block_once() {
    let (server, source) = node(vec![], DhtMode::Off).await;
    let (root, blocks) = shared_children_hamt(30);
    source.add(&blocks);
    let (client, _) = node(server.listen_addrs(), DhtMode::Off).await;
    wait_connected(&client, 1).await;
    let fetcher = BitswapFetcher::new(client.bitswap().clone());
    for (scope, want) in [
        (DagScope::Entity { bytes: None }, 3),
        (DagScope::All, blocks.len()),
    ] {
        let mut received = Vec::new();
        let mut sink = |b: VerifiedBlock| {
            received.push(b.into_parts());
            SinkControl::Continue
        };
        let t = std::time::Instant::now();
        let n = fetcher.fetch_car(&root, scope, &mut sink).await.unwrap();
        let took = t.elapsed();
        eprintln!("shared-children DAG over bitswap, {scope:?}: {n} blocks in {took:?}");
        assert!(took < Duration::from_secs(5), "{scope:?} took {took:?}");
        assert_eq!(received.first().map(|b| b.0), Some(root));
        let distinct: std::collections::HashSet<_> = received.iter().map(|b| b.0).collect();
        assert_eq!(distinct.len(), received.len(), "a block delivered twice");
        // the entity walk delivers the shards; the second walk finds them held and delivers
        // only the leaves
        assert!(
            received.len() <= want,
            "{scope:?}: {} blocks",
            received.len()
        );
    }
}
