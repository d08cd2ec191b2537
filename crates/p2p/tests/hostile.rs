//! Hostile peers on loopback against an in-process node: a peer that floods want-haves and
//! never reads our answers (and holds idle streams open), and too many connections from one
//! address. (A DAG whose levels all link to one child: `exchange.rs`.)
//!
//! The hostile peers are bare rust-libp2p swarms (TCP, noise, yamux, libp2p-stream) driven
//! by the test; they only ever dial the node under test on 127.0.0.1.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cid::Cid;
use futures::{AsyncWriteExt, StreamExt};
use ipfs_mount_ipld::{cids, codec, mh};
use ipfs_mount_p2p::bitswap::message::{self, Message, WantEntry, WantType};
use ipfs_mount_p2p::bitswap::{BitswapConfig, BlockSource, PROTOCOL};
use ipfs_mount_p2p::{ConnectionCaps, DhtMode, Multiaddr, Node, NodeConfig, PeerId};
use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux, Swarm};
use parking_lot::Mutex;

#[derive(Default)]
struct MemSource {
    blocks: Mutex<HashMap<Vec<u8>, Bytes>>,
    gets: std::sync::atomic::AtomicU64,
}

impl MemSource {
    fn add(&self, blocks: &[(Cid, Bytes)]) {
        let mut m = self.blocks.lock();
        for (c, b) in blocks {
            m.insert(c.hash().to_bytes(), b.clone());
        }
    }
}

impl BlockSource for MemSource {
    fn get(&self, cid: &Cid) -> Option<Bytes> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.blocks.lock().get(&cid.hash().to_bytes()).cloned()
    }
    fn has(&self, cid: &Cid) -> bool {
        self.blocks.lock().contains_key(&cid.hash().to_bytes())
    }
}

async fn node(
    peers: Vec<Multiaddr>,
    bitswap: BitswapConfig,
    limits: ConnectionCaps,
) -> (Arc<Node>, Arc<MemSource>) {
    let source = Arc::new(MemSource::default());
    let config = NodeConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        peers,
        routers: vec![],
        dht: DhtMode::Off,
        bitswap,
        serve_only: false,
        limits,
    };
    let n = Node::start(Keypair::generate_ed25519(), config, source.clone())
        .await
        .expect("node starts");
    (n, source)
}

fn raw_block(seed: u64) -> (Cid, Bytes) {
    let data = Bytes::from(format!("block {seed}").repeat(40));
    let cid = cids::compute(cid::Version::V1, codec::RAW, mh::SHA2_256, &data).unwrap();
    (cid, data)
}

/// A bare libp2p peer: its swarm runs in a task; the control opens and accepts streams.
fn bare_peer() -> (
    PeerId,
    libp2p_stream::Control,
    tokio::sync::mpsc::UnboundedSender<Multiaddr>,
    tokio::sync::watch::Receiver<usize>,
) {
    let mut swarm: Swarm<libp2p_stream::Behaviour> = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let id = *swarm.local_peer_id();
    let control = swarm.behaviour().new_control();
    let (dial_tx, mut dial_rx) = tokio::sync::mpsc::unbounded_channel::<Multiaddr>();
    // connections established and still open
    let (open_tx, open_rx) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        let mut open = 0usize;
        loop {
            tokio::select! {
                addr = dial_rx.recv() => match addr {
                    Some(a) => { let _ = swarm.dial(a); }
                    None => return,
                },
                ev = swarm.select_next_some() => match ev {
                    SwarmEvent::ConnectionEstablished { .. } => { open += 1; let _ = open_tx.send(open); }
                    SwarmEvent::ConnectionClosed { .. } => { open -= 1; let _ = open_tx.send(open); }
                    _ => {}
                },
            }
        }
    });
    (id, control, dial_tx, open_rx)
}

fn want_haves(from: u64, n: u64) -> Message {
    Message {
        wants: (from..from + n)
            .map(|i| WantEntry {
                cid: raw_block(i).0,
                priority: 1,
                cancel: false,
                want_type: WantType::Have,
                send_dont_have: true,
            })
            .collect(),
        ..Message::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_floods_wants_and_never_reads_is_bounded_and_others_are_served() {
    let config = BitswapConfig {
        fetch_timeout: Duration::from_secs(5),
        max_wantlist_per_peer: 512,
        max_queued_presences_per_peer: 256,
        write_timeout: Duration::from_secs(2),
        ..BitswapConfig::default()
    };
    let (server, source) = node(vec![], config.clone(), ConnectionCaps::default()).await;
    let wanted = raw_block(u64::MAX);
    source.add(std::slice::from_ref(&wanted));
    let addr = server.listen_addrs()[0].clone();

    // The flooder accepts our streams (so writes to it are attempted) and never reads them.
    let (flooder, mut control, dial, _) = bare_peer();
    let mut incoming = control.accept(PROTOCOL).unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((_, stream)) = incoming.next().await {
            held.push(stream);
        }
    });
    dial.send(addr.clone()).unwrap();
    let mut out = None;
    for _ in 0..100 {
        match control.open_stream(server.peer_id(), PROTOCOL).await {
            Ok(s) => {
                out = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let mut out = out.expect("flooder opens a bitswap stream");
    // 40 more streams, held open and idle: the server reads at most 16 per peer
    let mut idle = Vec::new();
    for _ in 0..40 {
        if let Ok(s) = control.open_stream(server.peer_id(), PROTOCOL).await {
            idle.push(s);
        }
    }

    // Floods 200k want-haves for blocks the server lacks (each asking for DONT_HAVE), in
    // messages of 2000, watching what the server holds for it.
    let flood = tokio::spawn(async move {
        for m in 0..100u64 {
            let msg = want_haves(m * 2000, 2000);
            if message::write_message(&mut out, &msg).await.is_err() {
                break;
            }
        }
        let _ = out.flush().await;
        out
    });
    let bitswap = server.bitswap().clone();
    let mut worst = (0, 0, 0, 0);
    let watch = tokio::spawn({
        let bitswap = bitswap.clone();
        async move {
            let end = Instant::now() + Duration::from_secs(8);
            let mut worst = (0usize, 0usize, 0usize, 0usize);
            while Instant::now() < end {
                if let Some(q) = bitswap.peer_queue(&flooder) {
                    worst.0 = worst.0.max(q.wantlist);
                    worst.1 = worst.1.max(q.presences);
                    worst.2 = worst.2.max(q.block_bytes);
                    worst.3 = worst.3.max(q.inbound_streams);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            worst
        }
    });

    // Meanwhile another peer is served a block within a couple of seconds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (client, _) = node(vec![addr], config.clone(), ConnectionCaps::default()).await;
    let t = Instant::now();
    let got = tokio::time::timeout(Duration::from_secs(3), client.bitswap().get(&wanted.0))
        .await
        .expect("served while the flood goes on")
        .unwrap();
    assert_eq!(got.data(), &wanted.1);
    let took = t.elapsed();

    let _out = flood.await.unwrap();
    drop(idle);
    worst = worst.max(watch.await.unwrap());
    let stats = &bitswap.stats;
    let dropped = stats.wants_dropped.load(Ordering::Relaxed);
    let stalled = stats.stalled_writes.load(Ordering::Relaxed);
    let discarded = stats.outbound_dropped.load(Ordering::Relaxed);
    eprintln!(
        "flood: other peer served in {took:?}; worst (wantlist, presences, block bytes, streams) {worst:?}; \
         wants dropped {dropped}, stalled writes {stalled}, queued items discarded {discarded}"
    );
    assert!(worst.0 <= 512, "wantlist {worst:?}");
    assert!(worst.1 <= 256, "presences queued {worst:?}");
    assert!(worst.3 <= 16, "inbound streams read {worst:?}");
    assert!(dropped > 0, "a full wantlist drops and counts wants");
    assert!(stalled >= 1, "the stalled write was abandoned");
    assert!(
        took < Duration::from_secs(2),
        "other peer served in {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_connections_from_one_address_are_capped() {
    let caps = ConnectionCaps {
        max_incoming_per_ip: 2,
        ..ConnectionCaps::default()
    };
    let (server, _) = node(vec![], BitswapConfig::default(), caps).await;
    let addr = server.listen_addrs()[0].clone();
    let mut peers = Vec::new();
    for _ in 0..4 {
        let (_, _, dial, open) = bare_peer();
        dial.send(addr.clone()).unwrap();
        peers.push((dial, open));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let connected = server.bitswap().connected_peers().len();
    let open: usize = peers.iter().map(|(_, o)| *o.borrow()).sum();
    eprintln!("4 peers from 127.0.0.1: {connected} accepted, {open} connections open");
    assert_eq!(connected, 2);
    assert_eq!(open, 2);
}
