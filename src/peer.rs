//! ipfs-mount as an IPFS peer: starts the libp2p node (crate `ipfs-mount-p2p`) beside the
//! mount and serves the store over bitswap.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use cid::Cid;
use ipfs_mount_p2p::bitswap::{BitswapConfig, BlockSource};
use ipfs_mount_p2p::{DhtMode, Multiaddr, Node, NodeConfig};
use ipfs_mount_store::BlockStore;

/// Where the node listens when no listen address is given: loopback only.
pub const DEFAULT_LISTEN: &str = "/ip4/127.0.0.1/tcp/4021";

/// What the peer is told to do (from the command line's `--peer`, `--routing`, `--listen`,
/// `--dht`, `--no-p2p`, `--timeout` and `--offline`).
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub enabled: bool,
    /// Multiaddrs of peers to connect to.
    pub peers: Vec<String>,
    /// Delegated routing (HTTP) endpoints.
    pub routers: Vec<String>,
    /// Listen multiaddrs; empty: [`DEFAULT_LISTEN`], or any loopback port when that is taken.
    pub listen: Vec<String>,
    pub dht: DhtMode,
    /// Seconds a bitswap fetch may take.
    pub fetch_timeout_secs: u64,
    /// Serve only: never fetch from peers.
    pub offline: bool,
}

impl PeerConfig {
    /// True when the user named any source of blocks besides gateways.
    pub fn has_peer_sources(&self) -> bool {
        self.enabled && (!self.peers.is_empty() || !self.routers.is_empty())
    }
}

/// Serving reads the store only: what we hold is what we have verified or written.
struct StoreSource(Arc<dyn BlockStore>);

impl BlockSource for StoreSource {
    fn get(&self, cid: &Cid) -> Option<Bytes> {
        match ipfs_mount_ipld::cids::identity_data(cid) {
            Some(d) => Some(Bytes::copy_from_slice(d)),
            None => self.0.get(cid).ok().flatten(),
        }
    }
    fn has(&self, cid: &Cid) -> bool {
        ipfs_mount_ipld::cids::identity_data(cid).is_some() || self.0.has(cid).unwrap_or(false)
    }
}

fn parse_addrs(list: &[String], what: &str) -> Result<Vec<Multiaddr>> {
    list.iter()
        .map(|s| {
            s.parse::<Multiaddr>()
                .with_context(|| format!("invalid {what} multiaddr {s:?}"))
        })
        .collect()
}

/// Starts the node on `runtime`, or returns None with `--no-p2p`.
pub fn start(
    p2p: &PeerConfig,
    store_dir: &Path,
    store: Arc<dyn BlockStore>,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<Arc<Node>>> {
    if !p2p.enabled {
        return Ok(None);
    }
    let key = ipfs_mount_p2p::identity::load_or_create(store_dir)?;
    let peers = parse_addrs(&p2p.peers, "--peer")?;
    let mut routers = Vec::new();
    for r in &p2p.routers {
        let u = url::Url::parse(r).with_context(|| format!("invalid --routing URL {r:?}"))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(anyhow!("--routing URL {r:?} must be http or https"));
        }
        routers.push(u);
    }
    let explicit_listen = !p2p.listen.is_empty();
    let listen = if explicit_listen {
        parse_addrs(&p2p.listen, "--listen")?
    } else {
        vec![DEFAULT_LISTEN.parse().expect("valid default")]
    };
    let config = NodeConfig {
        listen: listen.clone(),
        peers,
        routers,
        dht: p2p.dht,
        bitswap: BitswapConfig {
            fetch_timeout: Duration::from_secs(p2p.fetch_timeout_secs.max(1)),
            ..BitswapConfig::default()
        },
        serve_only: p2p.offline,
        limits: Default::default(),
    };
    let source: Arc<dyn BlockSource> = Arc::new(StoreSource(store));
    let node = match runtime.block_on(Node::start(key.clone(), config.clone(), source.clone())) {
        Ok(n) => n,
        // The default port is a convenience: when it is taken, any loopback port will do.
        Err(e @ ipfs_mount_p2p::node::NodeError::Listen { .. }) if !explicit_listen => {
            tracing::warn!("{e}; listening on another loopback port");
            let config = NodeConfig {
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid")],
                ..config
            };
            runtime.block_on(Node::start(key, config, source))?
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(peer_id = %node.peer_id(), addrs = ?node.listen_addrs(), dht = ?p2p.dht, "IPFS peer started");
    Ok(Some(node))
}

/// `{"ID": …, "Addresses": […]}` for `ipfs-mount id`.
pub fn id_json(node: Option<&Node>, peer_id: &str) -> String {
    let addrs: Vec<String> = node
        .map(|n| n.listen_addrs().iter().map(|a| a.to_string()).collect())
        .unwrap_or_default();
    serde_json::json!({ "ID": peer_id, "Addresses": addrs }).to_string()
}

/// Blocks announced per pin at most (the root first): enough for any dataset version a user
/// writes by hand, bounded for a huge import.
const MAX_ANNOUNCED_PER_PIN: usize = 100_000;

/// The store as the rest of the mount sees it when the DHT is on: every pin (a dataset
/// version, an imported CAR) also announces its blocks as provider records.
pub struct AnnouncingStore {
    inner: Arc<dyn BlockStore>,
    node: Arc<Node>,
    /// Blocks put into (or added to) each temporary pin since this process started, announced when
    /// the temporary pin becomes a pin (`pin_with_temps`); at most MAX_ANNOUNCED_PER_PIN each.
    temp_cids: parking_lot::Mutex<std::collections::HashMap<ipfs_mount_store::TempPinId, Vec<Cid>>>,
}

impl AnnouncingStore {
    fn note_temp(&self, pin: ipfs_mount_store::TempPinId, cids: impl Iterator<Item = Cid>) {
        let mut map = self.temp_cids.lock();
        let list = map.entry(pin).or_default();
        for c in cids {
            if list.len() >= MAX_ANNOUNCED_PER_PIN {
                break;
            }
            list.push(c);
        }
    }
}

impl AnnouncingStore {
    /// Wraps `inner`, and announces the roots already pinned.
    pub fn wrap(inner: Arc<dyn BlockStore>, node: Arc<Node>, dht: DhtMode) -> Arc<dyn BlockStore> {
        if dht == DhtMode::Off {
            return inner;
        }
        match inner.pins() {
            Ok(pins) => node.provide(pins.into_iter().map(|p| p.root)),
            Err(e) => tracing::warn!("cannot list pins to announce them: {e}"),
        }
        Arc::new(AnnouncingStore {
            inner,
            node,
            temp_cids: Default::default(),
        })
    }
}

impl BlockStore for AnnouncingStore {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>, ipfs_mount_store::StoreError> {
        self.inner.get(cid)
    }
    fn has(&self, cid: &Cid) -> Result<bool, ipfs_mount_store::StoreError> {
        self.inner.has(cid)
    }
    fn put(&self, cid: &Cid, data: &[u8]) -> Result<(), ipfs_mount_store::StoreError> {
        self.inner.put(cid, data)
    }
    fn put_many(&self, blocks: &[(Cid, Bytes)]) -> Result<(), ipfs_mount_store::StoreError> {
        self.inner.put_many(blocks)
    }
    fn pin(
        &self,
        root: &Cid,
        label: &str,
        blocks: &mut dyn Iterator<Item = Cid>,
    ) -> Result<(), ipfs_mount_store::StoreError> {
        let mut announced = vec![*root];
        let mut tee = blocks.inspect(|c| {
            if announced.len() < MAX_ANNOUNCED_PER_PIN && c != root {
                announced.push(*c);
            }
        });
        self.inner.pin(root, label, &mut tee)?;
        self.node.provide(announced);
        Ok(())
    }
    fn unpin(&self, root: &Cid) -> Result<bool, ipfs_mount_store::StoreError> {
        self.inner.unpin(root)
    }
    fn pins(&self) -> Result<Vec<ipfs_mount_store::PinInfo>, ipfs_mount_store::StoreError> {
        self.inner.pins()
    }
    fn is_pinned(&self, cid: &Cid) -> Result<bool, ipfs_mount_store::StoreError> {
        self.inner.is_pinned(cid)
    }
    fn temp_pin(
        &self,
        owner: &str,
    ) -> Result<ipfs_mount_store::TempPinId, ipfs_mount_store::StoreError> {
        self.inner.temp_pin(owner)
    }
    fn put_temp(
        &self,
        pin: ipfs_mount_store::TempPinId,
        blocks: &[(Cid, Bytes)],
    ) -> Result<(), ipfs_mount_store::StoreError> {
        self.inner.put_temp(pin, blocks)?;
        self.note_temp(pin, blocks.iter().map(|(c, _)| *c));
        Ok(())
    }
    fn temp_pin_add(
        &self,
        pin: ipfs_mount_store::TempPinId,
        blocks: &mut dyn Iterator<Item = Cid>,
    ) -> Result<(), ipfs_mount_store::StoreError> {
        let mut added = Vec::new();
        let mut tee = blocks.inspect(|c| added.push(*c));
        self.inner.temp_pin_add(pin, &mut tee)?;
        self.note_temp(pin, added.into_iter());
        Ok(())
    }
    fn release_temp(
        &self,
        pin: ipfs_mount_store::TempPinId,
    ) -> Result<bool, ipfs_mount_store::StoreError> {
        self.temp_cids.lock().remove(&pin);
        self.inner.release_temp(pin)
    }
    fn release_temp_owner(&self, owner: &str) -> Result<u64, ipfs_mount_store::StoreError> {
        for id in self.inner.temp_pins(owner)? {
            self.temp_cids.lock().remove(&id);
        }
        self.inner.release_temp_owner(owner)
    }
    fn temp_pins(
        &self,
        owner: &str,
    ) -> Result<Vec<ipfs_mount_store::TempPinId>, ipfs_mount_store::StoreError> {
        self.inner.temp_pins(owner)
    }
    fn pin_with_temps(
        &self,
        root: &Cid,
        label: &str,
        blocks: &mut dyn Iterator<Item = Cid>,
        temps: &[ipfs_mount_store::TempPinId],
    ) -> Result<(), ipfs_mount_store::StoreError> {
        // Announced like a pin: the root, the blocks given, then those put into the temporary
        // pins, each multihash once.
        let mut announced = vec![*root];
        let mut keys: std::collections::HashSet<Vec<u8>> =
            std::iter::once(root.hash().to_bytes()).collect();
        let mut add = |c: Cid| {
            if announced.len() < MAX_ANNOUNCED_PER_PIN && keys.insert(c.hash().to_bytes()) {
                announced.push(c);
            }
        };
        let mut tee = blocks.inspect(|c| add(*c));
        self.inner.pin_with_temps(root, label, &mut tee, temps)?;
        let remembered: Vec<Vec<Cid>> = {
            let mut map = self.temp_cids.lock();
            temps.iter().filter_map(|id| map.remove(id)).collect()
        };
        for c in remembered.into_iter().flatten() {
            add(c);
        }
        self.node.provide(announced);
        Ok(())
    }
    fn stats(&self) -> Result<ipfs_mount_store::StoreStats, ipfs_mount_store::StoreError> {
        self.inner.stats()
    }
    fn evict(&self) -> Result<ipfs_mount_store::EvictStats, ipfs_mount_store::StoreError> {
        self.inner.evict()
    }
    fn evict_to(
        &self,
        target: u64,
    ) -> Result<ipfs_mount_store::EvictStats, ipfs_mount_store::StoreError> {
        self.inner.evict_to(target)
    }
    fn flush(&self) -> Result<(), ipfs_mount_store::StoreError> {
        self.inner.flush()
    }
}
