//! ipfs-mount as an IPFS peer: starts the libp2p node (crate `ipfs-mount-p2p`) beside the
//! mount, serves the store over bitswap, and answers `ipfs-mount id`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use cid::Cid;
use ipfs_mount_p2p::bitswap::{BitswapConfig, BlockSource};
use ipfs_mount_p2p::{DhtMode, Multiaddr, Node, NodeConfig};
use ipfs_mount_store::BlockStore;

use crate::cli::{NetArgs, P2pArgs, StoreArgs, DEFAULT_LISTEN};

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
    p2p: &P2pArgs,
    net: &NetArgs,
    store_dir: &Path,
    store: Arc<dyn BlockStore>,
    runtime: &tokio::runtime::Runtime,
) -> Result<Option<Arc<Node>>> {
    if p2p.no_p2p {
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
            fetch_timeout: Duration::from_secs(net.timeout.max(1)),
            ..BitswapConfig::default()
        },
        serve_only: net.offline,
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

/// True when the user named any source of blocks besides gateways.
pub fn has_peer_sources(p2p: &P2pArgs) -> bool {
    !p2p.no_p2p && (!p2p.peers.is_empty() || !p2p.routers.is_empty())
}

/// `{"ID": …, "Addresses": […]}` for `ipfs-mount id`.
pub fn id_json(node: Option<&Node>, peer_id: &str) -> String {
    let addrs: Vec<String> = node
        .map(|n| n.listen_addrs().iter().map(|a| a.to_string()).collect())
        .unwrap_or_default();
    serde_json::json!({ "ID": peer_id, "Addresses": addrs }).to_string()
}

/// `ipfs-mount id`: asks the running mount, else reads (or creates) the key.
pub fn print_id(store: &StoreArgs, json: bool) -> Result<()> {
    let dir = store.dir();
    let text = match crate::control::remote_request(&dir, "id") {
        Ok(t) => t,
        Err(_) => {
            let key = ipfs_mount_p2p::identity::load_or_create(&dir)?;
            id_json(None, &key.public().to_peer_id().to_string())
        }
    };
    if json {
        println!("{}", text.trim_end());
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&text).context("bad answer from the mount")?;
    println!("{}", v["ID"].as_str().unwrap_or_default());
    for a in v["Addresses"].as_array().into_iter().flatten() {
        println!("{}", a.as_str().unwrap_or_default());
    }
    Ok(())
}

/// Keeps DHT provider records for every block of new dataset versions.
pub fn provide(node: &Node, dht: DhtMode, cids: impl IntoIterator<Item = Cid>) {
    if dht != DhtMode::Off {
        node.provide(cids);
    }
}
