//! The libp2p node: transports, identify, ping, the Kademlia DHT and the bitswap streams.
//!
//! The swarm lives in one task that owns it; everything else talks to it through
//! [`Command`]s. Dialing policy: we dial only addresses the user gave (`--peer`), a
//! delegated router returned, or the DHT returned; nothing else, and no local discovery.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use cid::Cid;
use futures::StreamExt;
use libp2p::kad::{
    self, store::MemoryStore, store::RecordStore, GetProvidersOk, QueryResult, RecordKey,
};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{behaviour::toggle::Toggle, dial_opts::DialOpts, NetworkBehaviour, SwarmEvent};
use libp2p::{
    connection_limits, identify, identity::Keypair, noise, ping, tcp, yamux, Multiaddr, PeerId,
    StreamProtocol, Swarm,
};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::bitswap::{BitswapConfig, BlockSource, Discovery};
use crate::routing::DelegatedRouting;
use crate::Bitswap;

/// Kademlia protocol of the public IPFS DHT (Kubo's WAN DHT).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/kad/1.0.0");
const IDENTIFY_PROTOCOL: &str = "/ipfs/id/1.0.0";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DhtMode {
    Off,
    /// Query the DHT, never answer queries (the default: we may be behind NAT, and a
    /// client does not advertise itself to other nodes' routing tables).
    #[default]
    Client,
    /// Answer queries and keep records for others.
    Server,
}

impl std::str::FromStr for DhtMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(DhtMode::Off),
            "client" => Ok(DhtMode::Client),
            "server" => Ok(DhtMode::Server),
            _ => Err(format!("unknown DHT mode {s:?} (off, client or server)")),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    pub listen: Vec<Multiaddr>,
    /// Peers to connect at start and keep connected (each with a `/p2p/<id>` suffix).
    pub peers: Vec<Multiaddr>,
    pub routers: Vec<url::Url>,
    pub dht: DhtMode,
    pub bitswap: BitswapConfig,
    /// Do not fetch through bitswap (serve only).
    pub serve_only: bool,
    /// Caps on the connections others open to us.
    pub limits: ConnectionCaps,
}

/// Caps on inbound connections: a connection over a cap is closed as soon as it is
/// established (or, for `max_pending_incoming`, before its handshake). Connections we dial
/// count towards `max_established_per_peer` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// Inbound connections still in their handshake.
    pub max_pending_incoming: u32,
    /// Inbound connections established, in all.
    pub max_established_incoming: u32,
    /// Connections with one peer, both directions.
    pub max_established_per_peer: u32,
    /// Inbound connections established from one IP address.
    pub max_incoming_per_ip: u32,
}

impl Default for ConnectionCaps {
    fn default() -> Self {
        ConnectionCaps {
            max_pending_incoming: 64,
            max_established_incoming: 512,
            max_established_per_peer: 8,
            max_incoming_per_ip: 64,
        }
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    /// First, so that a connection over a cap is refused before the others set up for it.
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: Toggle<kad::Behaviour<MemoryStore>>,
    /// Opens our outbound streams.
    stream: libp2p_stream::Behaviour,
    /// Accepts bitswap streams (never dropping one; see `inbound`).
    inbound: crate::inbound::Behaviour,
}

enum Command {
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<bool>,
    },
    GetProviders {
        key: RecordKey,
        reply: oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>,
    },
    Provide {
        keys: Vec<RecordKey>,
    },
    GetRecords {
        key: RecordKey,
        reply: oneshot::Sender<Vec<Vec<u8>>>,
    },
    PutRecord {
        key: RecordKey,
        value: Vec<u8>,
    },
}

pub struct Node {
    peer_id: PeerId,
    commands: mpsc::UnboundedSender<Command>,
    listen_addrs: Arc<Mutex<Vec<Multiaddr>>>,
    bitswap: Arc<Bitswap>,
    routing: Option<DelegatedRouting>,
    dht: DhtMode,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot set up the libp2p transport: {0}")]
    Transport(String),
    #[error("cannot listen on {addr}: {cause}")]
    Listen { addr: Multiaddr, cause: String },
    #[error("peer address {0} has no /p2p/<peer id> suffix")]
    PeerWithoutId(Multiaddr),
    #[error("delegated routing: {0}")]
    Routing(String),
}

/// Yamux with stream receive windows that never grow past 256 KiB.
///
/// rust-yamux doubles a busy stream's window (up to the connection budget), and js-libp2p's
/// yamux then sends data frames as large as the window; frames over 1 MiB are a protocol
/// error for rust-yamux, which closed Helia connections mid-transfer. Reserving the whole
/// connection budget for the streams' minimum windows (4096 × 256 KiB = the 1 GiB default)
/// leaves nothing for growth. On loopback and LANs 256 KiB per stream is plenty.
fn yamux_config() -> yamux::Config {
    let mut c = yamux::Config::default();
    c.set_max_num_streams(4096);
    c
}

impl Node {
    /// Builds the node, starts listening and dialing the configured peers. Must be called
    /// inside a tokio runtime; the swarm runs on it until the process exits.
    pub async fn start(
        keypair: Keypair,
        config: NodeConfig,
        source: Arc<dyn BlockSource>,
    ) -> Result<Arc<Node>, NodeError> {
        let peer_id = keypair.public().to_peer_id();
        let mut persistent = Vec::new();
        for addr in &config.peers {
            match split_peer_addr(addr) {
                Some((id, a)) => persistent.push((id, a)),
                None => return Err(NodeError::PeerWithoutId(addr.clone())),
            }
        }
        let dht = config.dht;
        let (inbound, incoming) = crate::inbound::Behaviour::new(
            Bitswap::inbound_protocols(),
            config.limits.max_incoming_per_ip,
        );
        let caps = config.limits;
        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(caps.max_pending_incoming))
                .with_max_established_incoming(Some(caps.max_established_incoming))
                .with_max_established_per_peer(Some(caps.max_established_per_peer)),
        );
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux_config,
            )
            .map_err(|e| NodeError::Transport(e.to_string()))?
            .with_quic()
            .with_behaviour(|key| {
                let identify = identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                        .with_agent_version(format!("ipfs-mount/{}", env!("CARGO_PKG_VERSION"))),
                );
                let kad = (dht != DhtMode::Off).then(|| {
                    let local = key.public().to_peer_id();
                    let mut cfg = kad::Config::new(KAD_PROTOCOL);
                    cfg.set_query_timeout(Duration::from_secs(20));
                    // Our nodes are few; without this a lookup waits for 20 peers that don't exist.
                    cfg.set_replication_factor(NonZeroUsize::new(20).expect("nonzero"));
                    let mut k = kad::Behaviour::with_config(local, MemoryStore::new(local), cfg);
                    k.set_mode(Some(match dht {
                        DhtMode::Server => kad::Mode::Server,
                        _ => kad::Mode::Client,
                    }));
                    k
                });
                Behaviour {
                    limits,
                    identify,
                    ping: ping::Behaviour::default(),
                    kad: Toggle::from(kad),
                    stream: libp2p_stream::Behaviour::new(),
                    inbound,
                }
            })
            .map_err(|e| NodeError::Transport(e.to_string()))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();

        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen {
                    addr: addr.clone(),
                    cause: e.to_string(),
                })?;
        }
        if let Some(kad) = swarm.behaviour_mut().kad.as_mut() {
            for (id, addr) in &persistent {
                kad.add_address(id, addr.clone());
            }
        }
        let control = swarm.behaviour().stream.new_control();
        let bitswap = Bitswap::new(config.bitswap.clone(), source, control, incoming);
        let routing = if config.routers.is_empty() {
            None
        } else {
            Some(
                DelegatedRouting::new(config.routers.clone(), Duration::from_secs(10))
                    .map_err(|e| NodeError::Routing(e.to_string()))?,
            )
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let listen_addrs = Arc::new(Mutex::new(Vec::new()));
        let node = Arc::new(Node {
            peer_id,
            commands: tx,
            listen_addrs: listen_addrs.clone(),
            bitswap: bitswap.clone(),
            routing,
            dht,
        });
        if !config.serve_only {
            bitswap.set_discovery(node.clone());
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        let event_loop = EventLoop {
            swarm,
            commands: rx,
            bitswap,
            listen_addrs,
            persistent,
            backoff: HashMap::new(),
            dials: HashMap::new(),
            provider_queries: HashMap::new(),
            record_queries: HashMap::new(),
            addr_book: HashMap::new(),
            expected_listeners: config.listen.len(),
            ready: Some(ready_tx),
        };
        tokio::spawn(event_loop.run());
        // Wait (briefly) until the listeners have their real addresses, so `id` prints them.
        let _ = tokio::time::timeout(Duration::from_secs(5), ready_rx).await;
        Ok(node)
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    pub fn bitswap(&self) -> &Arc<Bitswap> {
        &self.bitswap
    }

    /// Listen addresses, each with our `/p2p/<id>` suffix, as peers should dial them.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs
            .lock()
            .iter()
            .map(|a| a.clone().with(Protocol::P2p(self.peer_id)))
            .collect()
    }

    /// Announces that we provide these blocks (DHT on only).
    pub fn provide(&self, cids: impl IntoIterator<Item = Cid>) {
        if self.dht == DhtMode::Off {
            return;
        }
        let keys: Vec<RecordKey> = cids
            .into_iter()
            .map(|c| RecordKey::new(&c.hash().to_bytes()))
            .collect();
        if !keys.is_empty() {
            let _ = self.commands.send(Command::Provide { keys });
        }
    }

    /// Values stored in the DHT under `key` (unvalidated: the caller validates), DHT on only.
    pub async fn get_records(&self, key: Vec<u8>) -> Vec<Vec<u8>> {
        if self.dht == DhtMode::Off {
            return Vec::new();
        }
        let (reply, rx) = oneshot::channel();
        let key = RecordKey::new(&key);
        if self
            .commands
            .send(Command::GetRecords { key, reply })
            .is_err()
        {
            return Vec::new();
        }
        tokio::time::timeout(Duration::from_secs(15), rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    }

    /// Stores `value` under `key` in the DHT (ours and the closest peers'), DHT on only.
    pub fn put_record(&self, key: Vec<u8>, value: Vec<u8>) {
        if self.dht != DhtMode::Off {
            let _ = self.commands.send(Command::PutRecord {
                key: RecordKey::new(&key),
                value,
            });
        }
    }

    async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> bool {
        if peer == self.peer_id {
            return false;
        }
        let (reply, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Dial { peer, addrs, reply })
            .is_err()
        {
            return false;
        }
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false)
    }
}

#[async_trait::async_trait]
impl Discovery for Node {
    async fn connect_providers(&self, cid: &Cid) -> Vec<PeerId> {
        let mut found: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
        if let Some(routing) = &self.routing {
            match routing.find_providers(cid).await {
                Ok(list) => found.extend(list.into_iter().map(|p| (p.peer_id, p.addrs))),
                Err(e) => tracing::debug!(%cid, "delegated routing failed: {e}"),
            }
        }
        if self.dht != DhtMode::Off {
            let (reply, rx) = oneshot::channel();
            let key = RecordKey::new(&cid.hash().to_bytes());
            if self
                .commands
                .send(Command::GetProviders { key, reply })
                .is_ok()
            {
                if let Ok(list) = rx.await {
                    found.extend(list);
                }
            }
        }
        let connected = self.bitswap.connected_peers();
        let mut out = Vec::new();
        let dials = found
            .into_iter()
            .filter(|(p, _)| *p != self.peer_id && !self.bitswap.is_banned(p))
            .map(|(p, addrs)| {
                let already = connected.contains(&p);
                async move {
                    if already || self.dial(p, addrs).await {
                        Some(p)
                    } else {
                        None
                    }
                }
            });
        for p in futures::future::join_all(dials).await.into_iter().flatten() {
            if !out.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

/// Splits `/ip4/…/tcp/…/p2p/<id>` into the peer id and the address without it.
pub fn split_peer_addr(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut a = addr.clone();
    match a.pop() {
        Some(Protocol::P2p(id)) => Some((id, a)),
        _ => None,
    }
}

/// A running provider lookup: where to send the answer, and the providers found so far.
type ProviderQuery = (oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>, Vec<PeerId>);
/// A running record lookup: where to send the answer, and the records found so far.
type RecordQuery = (oneshot::Sender<Vec<Vec<u8>>>, Vec<Vec<u8>>);

struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::UnboundedReceiver<Command>,
    bitswap: Arc<Bitswap>,
    listen_addrs: Arc<Mutex<Vec<Multiaddr>>>,
    /// `--peer`s: kept connected.
    persistent: Vec<(PeerId, Multiaddr)>,
    /// Next redial time and current backoff per persistent peer.
    backoff: HashMap<PeerId, (tokio::time::Instant, Duration)>,
    dials: HashMap<PeerId, Vec<oneshot::Sender<bool>>>,
    provider_queries: HashMap<kad::QueryId, ProviderQuery>,
    record_queries: HashMap<kad::QueryId, RecordQuery>,
    /// Addresses the DHT told us, for dialing providers it returns.
    addr_book: HashMap<PeerId, Vec<Multiaddr>>,
    expected_listeners: usize,
    ready: Option<oneshot::Sender<()>>,
}

impl EventLoop {
    async fn run(mut self) {
        for (id, addr) in self.persistent.clone() {
            self.dial_persistent(id, addr);
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                ev = self.swarm.select_next_some() => self.on_event(ev),
                cmd = self.commands.recv() => match cmd {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                _ = tick.tick() => self.redial(),
            }
        }
    }

    fn dial_persistent(&mut self, id: PeerId, addr: Multiaddr) {
        let opts = DialOpts::peer_id(id).addresses(vec![addr.clone()]).build();
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(peer = %id, %addr, "dial failed: {e}");
        }
    }

    /// Redials persistent peers that are not connected, with exponential backoff.
    fn redial(&mut self) {
        let now = tokio::time::Instant::now();
        for (id, addr) in self.persistent.clone() {
            if self.swarm.is_connected(&id) {
                self.backoff.remove(&id);
                continue;
            }
            let (next, delay) = self
                .backoff
                .get(&id)
                .copied()
                .unwrap_or((now, Duration::from_secs(1)));
            if now >= next {
                tracing::debug!(peer = %id, %addr, "redialing");
                self.dial_persistent(id, addr);
                let delay2 = (delay * 2).min(Duration::from_secs(60));
                self.backoff.insert(id, (now + delay, delay2));
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { peer, addrs, reply } => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(true);
                    return;
                }
                let mut addrs = addrs;
                if addrs.is_empty() {
                    addrs = self.addr_book.get(&peer).cloned().unwrap_or_default();
                }
                let opts = DialOpts::peer_id(peer).addresses(addrs).build();
                match self.swarm.dial(opts) {
                    Ok(()) => self.dials.entry(peer).or_default().push(reply),
                    // A dial is under way (often one we started when the DHT named the
                    // provider): wait for its outcome.
                    Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {
                        self.dials.entry(peer).or_default().push(reply)
                    }
                    Err(e) => {
                        tracing::debug!(%peer, "dial failed: {e}");
                        let _ = reply.send(false);
                    }
                }
            }
            Command::GetProviders { key, reply } => match self.swarm.behaviour_mut().kad.as_mut() {
                Some(kad) => {
                    let id = kad.get_providers(key);
                    self.provider_queries.insert(id, (reply, Vec::new()));
                }
                None => {
                    let _ = reply.send(Vec::new());
                }
            },
            Command::GetRecords { key, reply } => match self.swarm.behaviour_mut().kad.as_mut() {
                Some(kad) => {
                    // Our own store first (records we published or hold for others).
                    let mut local = Vec::new();
                    if let Some(r) = kad.store_mut().get(&key) {
                        local.push(r.value.clone());
                    }
                    let id = kad.get_record(key);
                    self.record_queries.insert(id, (reply, local));
                }
                None => {
                    let _ = reply.send(Vec::new());
                }
            },
            Command::PutRecord { key, value } => {
                if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                    let record = kad::Record::new(key, value);
                    if let Err(e) = kad.put_record(record, kad::Quorum::One) {
                        tracing::debug!("cannot store a DHT record: {e}");
                    }
                }
            }
            Command::Provide { keys } => {
                if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                    for k in keys {
                        if let Err(e) = kad.start_providing(k) {
                            tracing::debug!("cannot record a provider entry: {e}");
                        }
                    }
                }
            }
        }
    }

    fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!("listening on {address}");
                // What we listen on is what we announce (the user chose these addresses).
                self.swarm.add_external_address(address.clone());
                let mut l = self.listen_addrs.lock();
                l.push(address);
                if l.len() >= self.expected_listeners {
                    if let Some(r) = self.ready.take() {
                        let _ = r.send(());
                    }
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.lock().retain(|a| *a != address);
                self.swarm.remove_external_address(&address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                self.bitswap.peer_connected(peer_id);
                if let Some(waiters) = self.dials.remove(&peer_id) {
                    for w in waiters {
                        let _ = w.send(true);
                    }
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                cause,
                ..
            } => {
                tracing::debug!(peer = %peer_id, "disconnected: {cause:?}");
                self.bitswap.peer_disconnected(peer_id);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(p),
                error,
                ..
            } => {
                tracing::debug!(peer = %p, "outgoing connection failed: {error}");
                if let Some(waiters) = self.dials.remove(&p) {
                    for w in waiters {
                        let _ = w.send(false);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let speaks_kad = info.protocols.contains(&KAD_PROTOCOL);
                if speaks_kad {
                    if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                        for a in &info.listen_addrs {
                            kad.add_address(&peer_id, a.clone());
                        }
                    }
                }
                self.addr_book.insert(peer_id, info.listen_addrs);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => self.on_kad(ev),
            _ => {}
        }
    }

    fn on_kad(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::RoutingUpdated {
                peer, addresses, ..
            } => {
                self.addr_book.insert(peer, addresses.into_vec());
            }
            kad::Event::RoutablePeer { peer, address }
            | kad::Event::PendingRoutablePeer { peer, address } => {
                let e = self.addr_book.entry(peer).or_default();
                if !e.contains(&address) {
                    e.push(address);
                }
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => {
                if let QueryResult::GetRecord(r) = &result {
                    let mut finished = step.last;
                    if let Some((_, found)) = self.record_queries.get_mut(&id) {
                        match r {
                            Ok(kad::GetRecordOk::FoundRecord(peer_record)) => {
                                found.push(peer_record.record.value.clone());
                            }
                            Ok(kad::GetRecordOk::FinishedWithNoAdditionalRecord { .. }) => {
                                finished = true
                            }
                            Err(e) => {
                                tracing::debug!("record lookup ended: {e}");
                                finished = true;
                            }
                        }
                    }
                    if finished {
                        if let Some((reply, found)) = self.record_queries.remove(&id) {
                            let _ = reply.send(found);
                        }
                    }
                    return;
                }
                if let QueryResult::PutRecord(Err(e)) = &result {
                    tracing::debug!("storing a DHT record: {e}");
                }
                if let QueryResult::GetProviders(r) = result {
                    let mut finished = step.last;
                    if let Some((_, found)) = self.provider_queries.get_mut(&id) {
                        match r {
                            Ok(GetProvidersOk::FoundProviders { providers, .. }) => {
                                // Dial now: the addresses the DHT gave for these providers
                                // live in the running query, which the swarm asks when dialing.
                                for p in &providers {
                                    if *p != *self.swarm.local_peer_id()
                                        && !self.swarm.is_connected(p)
                                    {
                                        let known =
                                            self.addr_book.get(p).cloned().unwrap_or_default();
                                        let _ = self
                                            .swarm
                                            .dial(DialOpts::peer_id(*p).addresses(known).build());
                                    }
                                }
                                found.extend(providers);
                                // The first answer is enough to start fetching.
                                finished = true;
                            }
                            Ok(GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => {
                                finished = true
                            }
                            Err(e) => {
                                tracing::debug!("provider lookup failed: {e}");
                                finished = true;
                            }
                        }
                    }
                    if finished {
                        if let Some((reply, found)) = self.provider_queries.remove(&id) {
                            let list = found
                                .into_iter()
                                .map(|p| (p, self.addr_book.get(&p).cloned().unwrap_or_default()))
                                .collect();
                            let _ = reply.send(list);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}
