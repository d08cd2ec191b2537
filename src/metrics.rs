//! What the mount is doing, as numbers: one [`Snapshot`] read from the counters kept where the
//! bytes move (the block service and its fetchers, the bitswap server, the `--serve` gateway)
//! and from the store and the datasets. `ipfs-mount stats` shows it (through the control
//! socket), `--metrics ADDR` serves it as Prometheus / OpenMetrics text at `/metrics`
//! (encoded by the `prometheus-client` crate, the Prometheus project's own Rust client).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Result;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde_json::json;

use crate::blocks::BlockService;
use crate::datasets::Datasets;

/// Where a snapshot is read from: the parts of a running mount (or of an unmounted store).
#[derive(Clone)]
pub struct Sources {
    pub blocks: Arc<BlockService>,
    pub datasets: Option<Arc<Datasets>>,
    pub node: Option<Arc<ipfs_mount_p2p::Node>>,
}

/// One dataset's line in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetStat {
    pub name: String,
    pub version: Option<u64>,
    /// Changes written but not yet committed as a version.
    pub pending: bool,
}

/// The numbers at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Bytes of unpinned (evictable) blocks in the store, and their limit (`--cache-size`).
    pub cache_bytes: u64,
    pub cache_limit: u64,
    pub pinned_bytes: u64,
    pub blocks: u64,
    pub store_bytes: u64,
    /// Block reads answered from memory, from the store, and by fetching.
    pub memory_hits: u64,
    pub store_hits: u64,
    pub fetched_blocks: u64,
    /// Verified bytes received per source: each gateway URL, `bitswap`.
    pub fetched_bytes: Vec<(String, u64)>,
    /// Block bytes sent to peers over bitswap, and body bytes sent by the `--serve` gateway.
    pub served_peers_bytes: u64,
    pub served_http_bytes: u64,
    /// Bytes read from files under /ipfs and /ipns (what `fetched_bytes` was for, mostly).
    pub file_read_bytes: u64,
    pub peers_connected: u64,
    pub datasets: Vec<DatasetStat>,
}

impl Snapshot {
    pub fn collect(src: &Sources) -> Result<Snapshot> {
        Self::read(&src.blocks, src.datasets.as_deref(), src.node.as_deref())
    }

    pub fn read(
        blocks: &BlockService,
        datasets: Option<&Datasets>,
        node: Option<&ipfs_mount_p2p::Node>,
    ) -> Result<Snapshot> {
        let store = blocks.stats()?;
        let c = &blocks.stats;
        let (served_peers_bytes, peers_connected) = match node {
            Some(n) => (
                n.bitswap().stats.bytes_sent.load(Ordering::Relaxed),
                n.bitswap().connected_peers().len() as u64,
            ),
            None => (0, 0),
        };
        let datasets = datasets
            .map(|d| {
                d.list()
                    .into_iter()
                    .map(|i| DatasetStat {
                        name: i.name,
                        version: i.version,
                        pending: i.pending,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Snapshot {
            cache_bytes: store.bytes.saturating_sub(store.pinned_bytes),
            cache_limit: store.cache_capacity,
            pinned_bytes: store.pinned_bytes,
            blocks: store.blocks,
            store_bytes: store.bytes,
            memory_hits: c.memory_hits.load(Ordering::Relaxed),
            store_hits: c.store_hits.load(Ordering::Relaxed),
            fetched_blocks: c.fetched_blocks.load(Ordering::Relaxed),
            fetched_bytes: blocks.fetched_by_source(),
            served_peers_bytes,
            served_http_bytes: c.served_http_bytes.load(Ordering::Relaxed),
            file_read_bytes: c.file_read_bytes.load(Ordering::Relaxed),
            peers_connected,
            datasets,
        })
    }

    /// Share of block reads answered without fetching (0 when nothing was read).
    pub fn hit_ratio(&self) -> f64 {
        let hits = self.memory_hits + self.store_hits;
        let all = hits + self.fetched_blocks;
        if all == 0 {
            0.0
        } else {
            hits as f64 / all as f64
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "cache_bytes": self.cache_bytes,
            "cache_limit_bytes": self.cache_limit,
            "pinned_bytes": self.pinned_bytes,
            "blocks": self.blocks,
            "store_bytes": self.store_bytes,
            "reads": {
                "memory_hits": self.memory_hits,
                "store_hits": self.store_hits,
                "fetched": self.fetched_blocks,
                "hit_ratio": self.hit_ratio(),
            },
            "fetched_bytes": self.fetched_bytes.iter()
                .map(|(s, b)| json!({"source": s, "bytes": b}))
                .collect::<Vec<_>>(),
            "served_bytes": {"peers": self.served_peers_bytes, "http": self.served_http_bytes},
            "file_read_bytes": self.file_read_bytes,
            "peers_connected": self.peers_connected,
            "datasets": self.datasets.iter()
                .map(|d| json!({"name": d.name, "version": d.version, "pending": d.pending}))
                .collect::<Vec<_>>(),
        })
    }

    /// Parses what [`Snapshot::to_json`] wrote (the control socket's answer).
    pub fn from_json(v: &serde_json::Value) -> Snapshot {
        let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
        Snapshot {
            cache_bytes: u(&v["cache_bytes"]),
            cache_limit: u(&v["cache_limit_bytes"]),
            pinned_bytes: u(&v["pinned_bytes"]),
            blocks: u(&v["blocks"]),
            store_bytes: u(&v["store_bytes"]),
            memory_hits: u(&v["reads"]["memory_hits"]),
            store_hits: u(&v["reads"]["store_hits"]),
            fetched_blocks: u(&v["reads"]["fetched"]),
            fetched_bytes: v["fetched_bytes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    (
                        e["source"].as_str().unwrap_or("").to_string(),
                        u(&e["bytes"]),
                    )
                })
                .collect(),
            served_peers_bytes: u(&v["served_bytes"]["peers"]),
            served_http_bytes: u(&v["served_bytes"]["http"]),
            file_read_bytes: u(&v["file_read_bytes"]),
            peers_connected: u(&v["peers_connected"]),
            datasets: v["datasets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| DatasetStat {
                    name: d["name"].as_str().unwrap_or("").to_string(),
                    version: d["version"].as_u64(),
                    pending: d["pending"].as_bool().unwrap_or(false),
                })
                .collect(),
        }
    }

    /// For people: one `name: value` line each, sizes in binary units.
    pub fn to_text(&self) -> String {
        let size = |b: u64| bytesize::ByteSize::b(b).display().iec().to_string();
        let mut s = String::new();
        let mut line = |k: &str, v: String| s.push_str(&format!("{k:<22} {v}\n"));
        line(
            "cache",
            format!("{} of {}", size(self.cache_bytes), size(self.cache_limit)),
        );
        line("pinned", size(self.pinned_bytes));
        line(
            "blocks",
            format!("{} ({})", self.blocks, size(self.store_bytes)),
        );
        line(
            "cache hit ratio",
            format!(
                "{:.3} ({} memory, {} store, {} fetched)",
                self.hit_ratio(),
                self.memory_hits,
                self.store_hits,
                self.fetched_blocks
            ),
        );
        for (source, bytes) in &self.fetched_bytes {
            line(&format!("fetched from {source}"), size(*bytes));
        }
        line("read from files", size(self.file_read_bytes));
        line("served to peers", size(self.served_peers_bytes));
        line("served over --serve", size(self.served_http_bytes));
        line("peers connected", self.peers_connected.to_string());
        for d in &self.datasets {
            let version = d.version.map(|v| v.to_string()).unwrap_or("-".into());
            let pending = if d.pending {
                "pending changes"
            } else {
                "clean"
            };
            line(
                &format!("dataset {}", d.name),
                format!("version {version}, {pending}"),
            );
        }
        s
    }

    /// Prometheus / OpenMetrics text exposition.
    pub fn to_prometheus(&self) -> String {
        type Labels = Vec<(String, String)>;
        let mut r = Registry::with_prefix("ipfs_mount");
        let gauge = |r: &mut Registry, name: &str, help: &str, unit: Option<Unit>, v: u64| {
            let g: Gauge = Gauge::default();
            g.set(v as i64);
            match unit {
                Some(u) => r.register_with_unit(name, help, u, g),
                None => r.register(name, help, g),
            }
        };
        gauge(
            &mut r,
            "cache",
            "Unpinned (evictable) block bytes in the store",
            Some(Unit::Bytes),
            self.cache_bytes,
        );
        gauge(
            &mut r,
            "cache_limit",
            "Limit of unpinned block bytes (--cache-size)",
            Some(Unit::Bytes),
            self.cache_limit,
        );
        gauge(
            &mut r,
            "pinned",
            "Pinned block bytes in the store",
            Some(Unit::Bytes),
            self.pinned_bytes,
        );
        gauge(&mut r, "blocks", "Blocks in the store", None, self.blocks);
        gauge(
            &mut r,
            "peers_connected",
            "Peers connected over libp2p",
            None,
            self.peers_connected,
        );
        let reads = Family::<Labels, Counter>::default();
        for (answer, n) in [
            ("memory", self.memory_hits),
            ("store", self.store_hits),
            ("fetched", self.fetched_blocks),
        ] {
            reads
                .get_or_create(&vec![("answer".into(), answer.into())])
                .inc_by(n);
        }
        r.register(
            "block_reads",
            "Block reads by where the block came from",
            reads,
        );
        let ratio = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        ratio.set(self.hit_ratio());
        r.register(
            "cache_hit_ratio",
            "Share of block reads answered without fetching",
            ratio,
        );
        let fetched = Family::<Labels, Counter>::default();
        for (source, bytes) in &self.fetched_bytes {
            fetched
                .get_or_create(&vec![("source".into(), source.clone())])
                .inc_by(*bytes);
        }
        r.register_with_unit(
            "fetched",
            "Verified block bytes received, per source (each gateway, bitswap)",
            Unit::Bytes,
            fetched,
        );
        let served = Family::<Labels, Counter>::default();
        served
            .get_or_create(&vec![("to".into(), "peers".into())])
            .inc_by(self.served_peers_bytes);
        served
            .get_or_create(&vec![("to".into(), "http".into())])
            .inc_by(self.served_http_bytes);
        r.register_with_unit(
            "served",
            "Bytes sent: blocks to peers over bitswap, bodies over --serve",
            Unit::Bytes,
            served,
        );
        let file_read: Counter = Counter::default();
        file_read.inc_by(self.file_read_bytes);
        r.register_with_unit(
            "file_read",
            "Bytes read from files under /ipfs and /ipns",
            Unit::Bytes,
            file_read,
        );
        let version = Family::<Labels, Gauge>::default();
        let pending = Family::<Labels, Gauge>::default();
        for d in &self.datasets {
            let l = vec![("dataset".to_string(), d.name.clone())];
            version.get_or_create(&l).set(d.version.unwrap_or(0) as i64);
            pending.get_or_create(&l).set(i64::from(d.pending));
        }
        r.register(
            "dataset_version",
            "Current version of each dataset",
            version,
        );
        r.register(
            "dataset_pending",
            "1 when a dataset has changes not yet committed",
            pending,
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &r);
        out
    }
}

/// The content type of [`Snapshot::to_prometheus`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `addr` until the runtime stops; returns the bound address.
pub async fn serve(addr: SocketAddr, sources: Sources) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let sources = Arc::new(sources);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let sources = sources.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let sources = sources.clone();
                        async move { Ok::<_, Infallible>(answer(&req, &sources).await) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}

async fn answer(
    req: &Request<hyper::body::Incoming>,
    sources: &Arc<Sources>,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &str, body: String| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, ctype)
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts")
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "only /metrics here\n".into(),
        );
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    // The store's statistics read its index: off the async workers.
    let src = sources.clone();
    match tokio::task::spawn_blocking(move || Snapshot::collect(&src)).await {
        Ok(Ok(s)) => reply(StatusCode::OK, CONTENT_TYPE, s.to_prometheus()),
        Ok(Err(e)) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{e:#}\n"),
        ),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}
