//! Bitswap 1.2.0 over libp2p streams: one engine that is both client (fetching the blocks
//! our readers want) and server (answering the wants of remote peers from our store).
//!
//! Streams follow what Kubo (boxo) does: each side sends its messages on a long-lived stream
//! it opened itself, and reads the messages of the other side on the streams it accepts. So
//! a want we send goes out on our stream, and the block comes back on the peer's stream.
//!
//! Per peer there is one writer task (coalescing wants, presences and blocks into messages
//! of about [`message::TARGET_MESSAGE_BYTES`]), one server task answering the peer's
//! wantlist in order, and one reader task per inbound stream. Everything a peer can make us
//! hold is bounded: its wantlist length (further wants are dropped and counted), the
//! HAVE/DONT_HAVE answers and the bytes of blocks queued for it (the server waits for room, so
//! a peer that does not read leaves its wants waiting in its bounded wantlist), and the
//! streams it has open to us. A write that makes no progress within
//! [`BitswapConfig::write_timeout`] (plus time for the message's size at a minimal rate) is
//! abandoned: the stream is reset and what was queued for the peer is dropped and counted.

pub mod client;
pub mod dag;
pub mod message;
mod server;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use cid::Cid;
use ipfs_mount_ipld::cids::Prefix;
use ipfs_mount_ipld::VerifiedBlock;
use libp2p::{PeerId, StreamProtocol};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Semaphore};

use message::{Message, Presence, WantEntry};

/// The protocol we open streams with (Kubo and Helia both speak it).
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/bitswap/1.2.0");
/// Protocols we accept streams on: older peers send 1.1.0/1.0.0 messages, which decode alike.
const INBOUND_PROTOCOLS: [&str; 4] = [
    "/ipfs/bitswap/1.2.0",
    "/ipfs/bitswap/1.1.0",
    "/ipfs/bitswap/1.0.0",
    "/ipfs/bitswap",
];

/// Where served blocks come from: the local store, never the network.
pub trait BlockSource: Send + Sync + 'static {
    fn get(&self, cid: &Cid) -> Option<Bytes>;
    fn has(&self, cid: &Cid) -> bool;
}

/// Finds and connects providers beyond the peers we are connected to (delegated routing,
/// DHT). Implemented by the node; returns the peers it connected to.
#[async_trait::async_trait]
pub trait Discovery: Send + Sync + 'static {
    async fn connect_providers(&self, cid: &Cid) -> Vec<PeerId>;
}

#[derive(Debug, Clone)]
pub struct BitswapConfig {
    /// A want gives up after this long without the block.
    pub fetch_timeout: Duration,
    /// Ask another peer for the block when the chosen one has not sent it within this time.
    pub hedge_after: Duration,
    /// Want-have is sent to at most this many peers besides the one asked for the block.
    pub max_have_peers: usize,
    /// Entries of a remote peer's wantlist we keep; more are ignored.
    pub max_wantlist_per_peer: usize,
    /// Bytes of blocks queued for sending to one peer.
    pub max_queued_bytes_per_peer: usize,
    /// Largest message read from a peer.
    pub max_message_bytes: usize,
    /// HAVE/DONT_HAVE answers queued for sending to one peer.
    pub max_queued_presences_per_peer: usize,
    /// A message write to a peer gives up after this long plus its size at
    /// [`MIN_SEND_RATE`]; the stream is reset.
    pub write_timeout: Duration,
}

/// Slowest rate (bytes/s) a peer may read a message at before the write is abandoned:
/// 100 kbit/s, so a 1 MiB message gets 84 s on top of [`BitswapConfig::write_timeout`].
pub const MIN_SEND_RATE: u64 = 100_000 / 8;

impl Default for BitswapConfig {
    fn default() -> Self {
        BitswapConfig {
            fetch_timeout: Duration::from_secs(30),
            hedge_after: Duration::from_secs(3),
            max_have_peers: 8,
            max_wantlist_per_peer: 8192,
            max_queued_bytes_per_peer: 8 << 20,
            max_message_bytes: message::MAX_MESSAGE_BYTES,
            max_queued_presences_per_peer: 4096,
            write_timeout: Duration::from_secs(20),
        }
    }
}

/// Counters for logs and tests.
#[derive(Debug, Default)]
pub struct BitswapStats {
    pub blocks_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub blocks_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub unwanted_blocks: AtomicU64,
    pub banned_peers: AtomicU64,
    /// Want entries of peers ignored because the peer's wantlist was full.
    pub wants_dropped: AtomicU64,
    /// Writes abandoned (stream reset) because the peer did not read.
    pub stalled_writes: AtomicU64,
    /// Queued wants, presences and blocks for a peer dropped after a stalled write.
    pub outbound_dropped: AtomicU64,
}

/// What one peer makes us hold now (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerQueue {
    /// Entries of its wantlist not answered yet.
    pub wantlist: usize,
    /// HAVE/DONT_HAVE answers queued for it.
    pub presences: usize,
    /// Bytes of blocks queued for it.
    pub block_bytes: usize,
    /// Its inbound streams being read.
    pub inbound_streams: usize,
}

/// What a peer's writer task sends.
enum Outbound {
    Want(WantEntry),
    /// An answer, holding its place in the peer's presence budget until written.
    Presence(Cid, Presence, tokio::sync::OwnedSemaphorePermit),
    /// A block, holding its share of the peer's byte budget until written.
    Block(Cid, Bytes, tokio::sync::OwnedSemaphorePermit),
}

struct PeerState {
    out: mpsc::UnboundedSender<Outbound>,
    ledger: Arc<server::Ledger>,
    /// Blocks this peer delivered to us: peers that delivered are asked first.
    delivered: u64,
    /// Our want-blocks outstanding at this peer.
    inflight: u64,
    /// The peer refused our bitswap stream: never a candidate.
    no_bitswap: bool,
}

pub struct Bitswap {
    config: BitswapConfig,
    source: Arc<dyn BlockSource>,
    control: Mutex<libp2p_stream::Control>,
    peers: Mutex<HashMap<PeerId, PeerState>>,
    wants: Mutex<HashMap<Vec<u8>, client::WantSlot>>,
    /// Blocks received lately, so a late duplicate is not mistaken for a forgery.
    recent: Mutex<RecentSet>,
    /// Peers that sent bytes we did not ask for under any CID we wanted from them.
    banned: Mutex<HashSet<PeerId>>,
    discovery: OnceLock<Arc<dyn Discovery>>,
    /// Inbound streams being read, per peer.
    inbound_streams: Mutex<HashMap<PeerId, usize>>,
    pub stats: BitswapStats,
}

/// Inbound bitswap streams read at once from one peer.
const MAX_INBOUND_STREAMS_PER_PEER: usize = 16;

impl Bitswap {
    /// The protocols bitswap streams are accepted on (see [`crate::inbound`]).
    pub fn inbound_protocols() -> Vec<StreamProtocol> {
        INBOUND_PROTOCOLS
            .iter()
            .map(|p| StreamProtocol::new(p))
            .collect()
    }

    /// Starts reading the streams peers open to us. Must be called inside a tokio runtime.
    pub fn new(
        config: BitswapConfig,
        source: Arc<dyn BlockSource>,
        control: libp2p_stream::Control,
        mut incoming: crate::inbound::Incoming,
    ) -> Arc<Self> {
        let this = Arc::new(Bitswap {
            config,
            source,
            control: Mutex::new(control),
            peers: Mutex::new(HashMap::new()),
            wants: Mutex::new(HashMap::new()),
            recent: Mutex::new(RecentSet::new(4096)),
            banned: Mutex::new(HashSet::new()),
            discovery: OnceLock::new(),
            inbound_streams: Mutex::new(HashMap::new()),
            stats: BitswapStats::default(),
        });
        let weak = Arc::downgrade(&this);
        tokio::spawn(async move {
            while let Some((peer, stream, _protocol)) = incoming.recv().await {
                let Some(bs) = weak.upgrade() else { break };
                if bs.is_banned(&peer) {
                    continue; // dropping the stream resets it
                }
                bs.ensure_peer(peer);
                // Each open stream may hold one message (up to max_message_bytes) in memory:
                // a peer gets a few at a time, as Kubo never needs more.
                let open = {
                    let mut counts = bs.inbound_streams.lock();
                    let n = counts.entry(peer).or_insert(0);
                    if *n >= MAX_INBOUND_STREAMS_PER_PEER {
                        None
                    } else {
                        *n += 1;
                        Some(())
                    }
                };
                if open.is_none() {
                    tracing::debug!(%peer, "too many bitswap streams from one peer; resetting one");
                    continue;
                }
                tokio::spawn(bs.clone().read_stream(peer, stream));
            }
        });
        this
    }

    pub fn config(&self) -> &BitswapConfig {
        &self.config
    }

    pub fn set_discovery(&self, d: Arc<dyn Discovery>) {
        let _ = self.discovery.set(d);
    }

    /// The node tells us a connection to `peer` exists.
    pub fn peer_connected(self: &Arc<Self>, peer: PeerId) {
        if self.ensure_peer(peer) {
            self.notify_wants(client::WantEvent::PeerConnected(peer));
        }
    }

    /// The node tells us the last connection to `peer` closed.
    pub fn peer_disconnected(&self, peer: PeerId) {
        let removed = self.peers.lock().remove(&peer);
        if let Some(state) = removed {
            state.ledger.close();
            self.notify_wants(client::WantEvent::PeerGone(peer));
        }
    }

    pub fn connected_peers(&self) -> Vec<PeerId> {
        self.peers.lock().keys().copied().collect()
    }

    /// What `peer` makes us hold now; `None` for a peer we have no state for.
    pub fn peer_queue(&self, peer: &PeerId) -> Option<PeerQueue> {
        let ledger = self.peers.lock().get(peer)?.ledger.clone();
        let (wantlist, presences, block_bytes) = ledger.held(
            self.config.max_queued_presences_per_peer,
            self.config.max_queued_bytes_per_peer,
        );
        Some(PeerQueue {
            wantlist,
            presences,
            block_bytes,
            inbound_streams: self.inbound_streams.lock().get(peer).copied().unwrap_or(0),
        })
    }

    /// Adds the peer's tasks if it is new; true if it was.
    fn ensure_peer(self: &Arc<Self>, peer: PeerId) -> bool {
        if self.banned.lock().contains(&peer) {
            return false;
        }
        let mut peers = self.peers.lock();
        if peers.contains_key(&peer) {
            return false;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let ledger = Arc::new(server::Ledger::new(
            self.config.max_wantlist_per_peer,
            Arc::new(Semaphore::new(self.config.max_queued_bytes_per_peer)),
            Arc::new(Semaphore::new(self.config.max_queued_presences_per_peer)),
        ));
        peers.insert(
            peer,
            PeerState {
                out: tx.clone(),
                ledger: ledger.clone(),
                delivered: 0,
                inflight: 0,
                no_bitswap: false,
            },
        );
        drop(peers);
        tokio::spawn(self.clone().write_loop(peer, rx));
        tokio::spawn(server::serve_peer(self.clone(), peer, ledger, tx));
        true
    }

    fn send(&self, peer: &PeerId, item: Outbound) -> bool {
        match self.peers.lock().get(peer) {
            Some(p) if !p.no_bitswap => p.out.send(item).is_ok(),
            _ => false,
        }
    }

    fn notify_wants(&self, ev: client::WantEvent) {
        for slot in self.wants.lock().values() {
            let _ = slot.events.send(ev.clone());
        }
    }

    /// Sends the peer's messages on one stream we open, re-opening it once after an error.
    async fn write_loop(self: Arc<Self>, peer: PeerId, mut rx: mpsc::UnboundedReceiver<Outbound>) {
        let mut stream: Option<libp2p::Stream> = None;
        let mut held: Option<Outbound> = None;
        loop {
            let first = match held.take() {
                Some(o) => o,
                None => match rx.recv().await {
                    Some(o) => o,
                    None => break,
                },
            };
            let mut msg = Message::default();
            let mut permits = Vec::new();
            let mut size = 0usize;
            let mut add = |o: Outbound, msg: &mut Message, size: &mut usize| match o {
                Outbound::Want(w) => {
                    *size += 48;
                    msg.wants.push(w)
                }
                Outbound::Presence(c, p, permit) => {
                    *size += 48;
                    msg.presences.push((c, p));
                    permits.push(permit);
                }
                Outbound::Block(c, b, permit) => {
                    *size += b.len() + 48;
                    msg.blocks.push((Prefix::of(&c), b));
                    permits.push(permit);
                }
            };
            add(first, &mut msg, &mut size);
            while size < message::TARGET_MESSAGE_BYTES {
                match rx.try_recv() {
                    Ok(o) => {
                        let extra = match &o {
                            Outbound::Block(_, b, _) => b.len(),
                            _ => 0,
                        };
                        if extra > 0 && size + extra > message::TARGET_MESSAGE_BYTES && size > 0 {
                            held = Some(o);
                            break;
                        }
                        add(o, &mut msg, &mut size);
                    }
                    Err(_) => break,
                }
            }
            let blocks = msg.blocks.len() as u64;
            let bytes: u64 = msg.blocks.iter().map(|(_, b)| b.len() as u64).sum();
            let mut sent = false;
            let mut stalled = false;
            let deadline = self.config.write_timeout
                + Duration::from_secs((size as u64).div_ceil(MIN_SEND_RATE));
            for _attempt in 0..2 {
                if stream.is_none() {
                    let mut control = self.control.lock().clone();
                    match tokio::time::timeout(
                        Duration::from_secs(10),
                        control.open_stream(peer, PROTOCOL),
                    )
                    .await
                    {
                        Ok(Ok(s)) => stream = Some(s),
                        Ok(Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_))) => {
                            tracing::debug!(%peer, "peer does not speak bitswap 1.2.0");
                            self.mark_no_bitswap(peer);
                            break;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "cannot open a bitswap stream: {e}");
                            break;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "opening a bitswap stream timed out");
                            break;
                        }
                    }
                }
                let s = stream.as_mut().expect("opened above");
                tracing::trace!(%peer, wants = msg.wants.len(), blocks = msg.blocks.len(), presences = msg.presences.len(), "sending bitswap message");
                match tokio::time::timeout(deadline, message::write_message(s, &msg)).await {
                    Ok(Ok(())) => {
                        sent = true;
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, "bitswap write failed: {e}");
                        stream = None;
                    }
                    Err(_) => {
                        // The peer does not read: dropping the stream resets it.
                        tracing::debug!(%peer, "bitswap write stalled for {deadline:?}; resetting the stream");
                        self.stats.stalled_writes.fetch_add(1, Ordering::Relaxed);
                        stream = None;
                        stalled = true;
                        break;
                    }
                }
            }
            drop(permits);
            if stalled {
                // What waits for a peer that does not read is dropped, freeing its budgets.
                let mut dropped = u64::from(held.take().is_some());
                while rx.try_recv().is_ok() {
                    dropped += 1;
                }
                self.stats
                    .outbound_dropped
                    .fetch_add(dropped, Ordering::Relaxed);
            }
            if sent {
                self.stats.blocks_sent.fetch_add(blocks, Ordering::Relaxed);
                self.stats.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
            } else if !self.peers.lock().contains_key(&peer) {
                break;
            }
        }
    }

    fn mark_no_bitswap(&self, peer: PeerId) {
        if let Some(p) = self.peers.lock().get_mut(&peer) {
            p.no_bitswap = true;
        }
        self.notify_wants(client::WantEvent::PeerGone(peer));
    }

    /// Reads the messages a peer sends on one of its streams.
    async fn read_stream(self: Arc<Self>, peer: PeerId, mut stream: libp2p::Stream) {
        loop {
            if self.banned.lock().contains(&peer) {
                break;
            }
            match message::read_message(&mut stream, self.config.max_message_bytes).await {
                Ok(Some(msg)) => self.handle_message(peer, msg),
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(%peer, "bitswap stream closed: {e}");
                    break;
                }
            }
        }
        let mut counts = self.inbound_streams.lock();
        if let Some(n) = counts.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&peer);
            }
        }
    }

    fn handle_message(self: &Arc<Self>, peer: PeerId, msg: Message) {
        tracing::trace!(%peer, wants = msg.wants.len(), blocks = msg.blocks.len(), presences = msg.presences.len(), "received bitswap message");
        if !msg.wants.is_empty() || msg.full_wantlist {
            let ledger = self.peers.lock().get(&peer).map(|p| p.ledger.clone());
            if let Some(ledger) = ledger {
                let dropped = ledger.update(msg.full_wantlist, msg.wants);
                if dropped > 0 {
                    self.stats
                        .wants_dropped
                        .fetch_add(dropped as u64, Ordering::Relaxed);
                }
            }
        }
        for (prefix, data) in msg.blocks {
            self.on_block(peer, prefix, data);
        }
        for (cid, presence) in msg.presences {
            let key = ipfs_mount_ipld::cids::multihash_key(&cid);
            if let Some(slot) = self.wants.lock().get(&key) {
                let ev = match presence {
                    Presence::Have => client::WantEvent::Have(peer),
                    Presence::DontHave => client::WantEvent::DontHave(peer),
                };
                let _ = slot.events.send(ev);
            }
        }
    }

    /// A block arrived with its CID prefix. Hashing its bytes into their CID is the
    /// verification (the only time they are hashed); finding a want with that multihash is
    /// the check that it is a block we asked for.
    fn on_block(&self, peer: PeerId, prefix: Prefix, data: Bytes) {
        let block = match VerifiedBlock::from_prefix(prefix, data) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(%peer, ?prefix, "bitswap: dropping a block we cannot verify: {e}");
                return;
            }
        };
        let cid = *block.cid();
        let key = ipfs_mount_ipld::cids::multihash_key(&cid);
        let slot = self.wants.lock().remove(&key);
        match slot {
            Some(slot) => {
                self.stats.blocks_received.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .bytes_received
                    .fetch_add(block.data().len() as u64, Ordering::Relaxed);
                if let Some(p) = self.peers.lock().get_mut(&peer) {
                    p.delivered += 1;
                }
                self.recent.lock().insert(key);
                slot.complete(peer, block);
            }
            None => {
                if self.recent.lock().contains(&key) {
                    return; // a duplicate of something another peer sent first
                }
                self.stats.unwanted_blocks.fetch_add(1, Ordering::Relaxed);
                let asked = self.peers.lock().get(&peer).is_some_and(|p| p.inflight > 0);
                if asked {
                    // We asked this peer for blocks and it sent bytes that are none of them:
                    // wrong bytes under a wanted CID's prefix. Never trust it again.
                    tracing::warn!(%peer, %cid, "peer sent a block we did not want (bytes not matching any wanted CID); dropping the peer");
                    self.ban(peer);
                } else {
                    tracing::debug!(%peer, %cid, "ignoring an unsolicited block");
                }
            }
        }
    }

    fn ban(&self, peer: PeerId) {
        if self.banned.lock().insert(peer) {
            self.stats.banned_peers.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(state) = self.peers.lock().remove(&peer) {
            state.ledger.close();
        }
        self.notify_wants(client::WantEvent::PeerBanned(peer));
    }

    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.banned.lock().contains(peer)
    }
}

/// A bounded set of recent keys (FIFO eviction).
struct RecentSet {
    order: VecDeque<Vec<u8>>,
    set: HashSet<Vec<u8>>,
    cap: usize,
}

impl RecentSet {
    fn new(cap: usize) -> Self {
        RecentSet {
            order: VecDeque::new(),
            set: HashSet::new(),
            cap,
        }
    }
    fn insert(&mut self, k: Vec<u8>) {
        if self.set.insert(k.clone()) {
            self.order.push_back(k);
            if self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
    fn contains(&self, k: &[u8]) -> bool {
        self.set.contains(k)
    }
}
