//! Names: `/ipns/<name>` resolution and the publishing of every dataset under its own key.
//!
//! Resolving, in order: our own keys (answered at once from the record we signed), then
//! gateways (`/ipns/{name}?format=ipns-record`), delegated routers (`/routing/v1/ipns/{name}`)
//! and the DHT, asked at once; every record is validated (crate `ipfs-mount-ipns`) and the
//! valid one with the highest sequence wins. A result is cached for the record's TTL; past
//! it, the next lookup re-resolves in the background and the last valid record keeps
//! answering until its EOL. DNSLink names go to the user's DNS server only (`--dns`).
//!
//! Publishing: each dataset has an Ed25519 key (`<store>/datasets/<name>/ipns.key`, made on
//! first sight). A publisher task signs a record for each new version (sequence = version,
//! value `/ipfs/<root>`), keeps it in `ipns.record` beside the key, re-signs it before it
//! expires, and pushes it to the DHT and the routers.

pub mod dnslink;

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ipfs_mount_ipns::{Name, Record};
use ipfs_mount_p2p::Node;
use libp2p_identity::Keypair;
use parking_lot::{Mutex, RwLock};

use crate::datasets::Datasets;

/// Indirections (IPNS → IPNS, DNSLink → …) followed at most.
const MAX_DEPTH: usize = 32;
/// Largest record body accepted from a gateway or router (the spec's limit).
const MAX_RECORD: usize = ipfs_mount_ipns::MAX_RECORD_BYTES;

/// How long a re-resolution past the TTL may take before the last record answers.
const REVALIDATE_TIMEOUT: Duration = Duration::from_secs(3);
/// Cache time of a record served past its TTL because its sources failed.
const STALE_TTL: Duration = Duration::from_secs(5);
/// Bytes of fetched records kept (raw record, value and entry; see [`RecordWeighter`]): at
/// most ~1500 records of the largest size (10 KiB), typically tens of thousands.
const RECORD_CACHE_BYTES: u64 = 16 << 20;

pub const KEY_FILE: &str = "ipns.key";
pub const RECORD_FILE: &str = "ipns.record";

#[derive(Debug, Clone)]
pub struct NamesConfig {
    pub gateways: Vec<url::Url>,
    pub routers: Vec<url::Url>,
    pub dns: Option<std::net::SocketAddr>,
    /// Validity of the records we sign.
    pub lifetime: Duration,
    /// TTL written into the records we sign.
    pub ttl: Duration,
    pub timeout: Duration,
    /// Never resolve through the network (own keys only).
    pub offline: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum NameError {
    /// Not a name, or no valid record anywhere: ENOENT.
    #[error("{0}")]
    NotFound(String),
    /// Sources failed: EIO.
    #[error("{0}")]
    Unavailable(String),
}

/// One source asked for a record: its URL (or name) and the records it answered, or why not.
type Attempt<'a> = futures::future::BoxFuture<'a, (String, Result<Vec<Bytes>, String>)>;

/// A resolution: the content path (`/ipfs/<cid>[/path]`) and how long it may be cached.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub path: String,
    pub ttl: Duration,
}

struct Cached {
    record: Record,
    fetched: Instant,
}

/// The weight of a cached record: its raw bytes, its value, and the entry. Never zero.
#[derive(Clone)]
struct RecordWeighter;

impl quick_cache::Weighter<Name, Cached> for RecordWeighter {
    fn weight(&self, _name: &Name, c: &Cached) -> u64 {
        (c.record.raw.len()
            + c.record.value.len()
            + std::mem::size_of::<Name>()
            + std::mem::size_of::<Cached>()
            + 64) as u64
    }
}

/// Records fetched for other names, bounded by bytes (least recently used go first).
type RecordCache = quick_cache::unsync::Cache<Name, Cached, RecordWeighter>;

fn record_cache(bytes: u64) -> RecordCache {
    let estimated_items = (bytes / 1024).clamp(16, 1 << 20) as usize;
    quick_cache::unsync::Cache::with_weighter(estimated_items, bytes, RecordWeighter)
}

struct Own {
    dataset: String,
    key: Keypair,
    key_mtime: Option<SystemTime>,
    /// The record we signed last, with the dataset version and root it names.
    record: Option<(Record, u64, cid::Cid)>,
}

pub struct Names {
    config: NamesConfig,
    datasets_dir: PathBuf,
    datasets: Arc<Datasets>,
    node: Option<Arc<Node>>,
    http: reqwest::Client,
    dnslink: Option<dnslink::DnsLinkResolver>,
    own: RwLock<HashMap<String, Own>>,
    cache: Mutex<RecordCache>,
}

impl Names {
    pub fn new(
        config: NamesConfig,
        store_dir: &Path,
        datasets: Arc<Datasets>,
        node: Option<Arc<Node>>,
    ) -> anyhow::Result<Arc<Names>> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(config.timeout)
            .build()?;
        let dnslink = match config.dns {
            // Per query attempt (one retry): a dead DNS server must not stall a lookup for long.
            Some(server) => Some(dnslink::DnsLinkResolver::new(
                server,
                config.timeout.min(Duration::from_secs(3)),
            )?),
            None => None,
        };
        Ok(Arc::new(Names {
            config,
            datasets_dir: store_dir.join("datasets"),
            datasets,
            node,
            http,
            dnslink,
            own: RwLock::new(HashMap::new()),
            cache: Mutex::new(record_cache(RECORD_CACHE_BYTES)),
        }))
    }

    /// Starts the publisher: signs right after each commit, and checks every second (EOLs).
    pub fn start_publisher(self: &Arc<Self>, rt: &tokio::runtime::Handle) {
        let this = self.clone();
        rt.spawn(async move {
            let mut commits = this.datasets.subscribe_commits();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = commits.changed() => {}
                }
                let me = this.clone();
                let pushes = tokio::task::spawn_blocking(move || me.publish_changed(false))
                    .await
                    .unwrap_or_default();
                for (name, bytes) in pushes {
                    this.push(&name, bytes).await;
                }
            }
        });
    }

    /// The IPNS name of a dataset (its key is created if needed).
    pub fn dataset_name(&self, dataset: &str) -> Option<String> {
        if let Some(o) = self.own.read().get(dataset) {
            return Some(Name::from_public_key(&o.key.public()).to_string());
        }
        self.datasets.get(dataset)?;
        let key = load_or_create_key(&self.datasets_dir.join(dataset)).ok()?;
        Some(Name::from_public_key(&key.0.public()).to_string())
    }

    /// `(dataset, name)` for every dataset.
    pub fn list(&self) -> Vec<(String, String)> {
        self.datasets
            .names()
            .into_iter()
            .filter_map(|d| self.dataset_name(&d).map(|n| (d, n)))
            .collect()
    }

    /// Signs (and pushes) a record for a dataset now, even if its version did not change.
    pub async fn publish_now(&self, dataset: &str) -> anyhow::Result<String> {
        if self.datasets.get(dataset).is_none() {
            anyhow::bail!("no dataset named {dataset:?}");
        }
        let pushed = self.publish_dataset(dataset, true)?;
        let name = self
            .dataset_name(dataset)
            .ok_or_else(|| anyhow::anyhow!("no key for {dataset}"))?;
        match pushed {
            Some((n, bytes)) => {
                self.push(&n, bytes).await;
                Ok(name)
            }
            None => anyhow::bail!("dataset {dataset:?} has no version yet: nothing to publish"),
        }
    }

    /// Signs records for datasets whose version changed or whose record nears its EOL.
    fn publish_changed(&self, force: bool) -> Vec<(Name, Bytes)> {
        let mut out = Vec::new();
        for ds in self.datasets.names() {
            match self.publish_dataset(&ds, force) {
                Ok(Some(p)) => out.push(p),
                Ok(None) => {}
                Err(e) => tracing::warn!(dataset = %ds, "cannot publish: {e:#}"),
            }
        }
        out
    }

    fn publish_dataset(&self, dataset: &str, force: bool) -> anyhow::Result<Option<(Name, Bytes)>> {
        let Some(ds) = self.datasets.get(dataset) else {
            return Ok(None);
        };
        let dir = self.datasets_dir.join(dataset);
        let mut own = self.own.write();
        // (Re)load the key when new or replaced on disk (`ipfs-mount key import`).
        let mtime = std::fs::metadata(dir.join(KEY_FILE))
            .and_then(|m| m.modified())
            .ok();
        let reload = own
            .get(dataset)
            .is_none_or(|o| o.key_mtime != mtime || mtime.is_none());
        if reload {
            let (key, created) = load_or_create_key(&dir)?;
            let mtime = std::fs::metadata(dir.join(KEY_FILE))
                .and_then(|m| m.modified())
                .ok();
            let name = Name::from_public_key(&key.public());
            // A record already signed with this key survives restarts.
            let record = std::fs::read(dir.join(RECORD_FILE))
                .ok()
                .and_then(|b| ipfs_mount_ipns::validate(&name, &b, SystemTime::now()).ok())
                .and_then(|r| {
                    let cid = r
                        .value
                        .strip_prefix("/ipfs/")
                        .and_then(|c| ipfs_mount_ipld::cids::parse(c).ok())?;
                    Some((r.clone(), r.sequence, cid))
                });
            if created {
                tracing::info!(dataset, %name, "new IPNS key for the dataset");
            }
            own.insert(
                dataset.to_string(),
                Own {
                    dataset: dataset.to_string(),
                    key,
                    key_mtime: mtime,
                    record,
                },
            );
        }
        let o = own.get_mut(dataset).expect("inserted above");
        let (Some(root), version) = (ds.root_cid(), ds.version()) else {
            return Ok(None);
        };
        let now = SystemTime::now();
        let stale = match &o.record {
            None => true,
            Some((r, v, c)) => {
                *v != version
                    || *c != root
                    || r.validity.duration_since(now).unwrap_or_default() < self.config.lifetime / 2
            }
        };
        if !stale && !force {
            return Ok(None);
        }
        let value = format!("/ipfs/{root}");
        // A re-signed record keeps the sequence but must still win over the old one: its EOL
        // is later, which is the tie-break.
        let seq = o
            .record
            .as_ref()
            .map(|(r, _, _)| {
                if r.value == value {
                    r.sequence.max(version)
                } else {
                    (r.sequence + 1).max(version)
                }
            })
            .unwrap_or(version);
        let bytes = ipfs_mount_ipns::create(
            &o.key,
            &value,
            seq,
            now + self.config.lifetime,
            self.config.ttl,
        )?;
        let name = Name::from_public_key(&o.key.public());
        let record = ipfs_mount_ipns::validate(&name, &bytes, now)?;
        crate::datasets::write_atomic(&dir.join(RECORD_FILE), &bytes, true)?;
        tracing::info!(dataset = %o.dataset, %name, seq, %value, "published");
        o.record = Some((record, version, root));
        Ok(Some((name, bytes)))
    }

    /// Sends a record we signed to the DHT and the routers (never with `--offline`: the record
    /// is kept in the dataset's directory and served to whoever asks us).
    async fn push(&self, name: &Name, bytes: Bytes) {
        if self.config.offline {
            return;
        }
        if let Some(node) = &self.node {
            node.put_record(name.to_routing_key(), bytes.to_vec());
        }
        for r in &self.config.routers {
            let url = match r.join(&format!("routing/v1/ipns/{name}")) {
                Ok(u) => u,
                Err(_) => continue,
            };
            let res = self
                .http
                .put(url.clone())
                .header("Content-Type", "application/vnd.ipfs.ipns-record")
                .body(bytes.clone())
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(%url, status = %r.status(), "router refused the record"),
                Err(e) => tracing::warn!(%url, "cannot send the record: {e}"),
            }
        }
    }

    /// The record bytes for a name: ours, or the last valid one we fetched.
    pub fn record_bytes(&self, name: &str) -> Option<Bytes> {
        let name = Name::parse(name).ok()?;
        for o in self.own.read().values() {
            if Name::from_public_key(&o.key.public()) == name {
                return o.record.as_ref().map(|(r, _, _)| r.raw.clone());
            }
        }
        let cache = self.cache.lock();
        let c = cache.get(&name)?;
        (c.record.validity > SystemTime::now()).then(|| c.record.raw.clone())
    }

    /// Resolves a name or DNSLink domain (with an optional `/path`) to `/ipfs/<cid>[/path]`.
    pub async fn resolve(self: &Arc<Self>, input: &str) -> Result<Resolved, NameError> {
        let mut path = format!("/ipns/{}", input.trim_start_matches('/'));
        let mut ttl = Duration::MAX;
        for _ in 0..MAX_DEPTH {
            if path.starts_with("/ipfs/") {
                return Ok(Resolved { path, ttl });
            }
            let rest = path.strip_prefix("/ipns/").ok_or_else(|| {
                NameError::NotFound(format!("{path}: not an /ipfs or /ipns path"))
            })?;
            let (head, tail) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, ""),
            };
            let (next, step_ttl) = self.resolve_one(head).await?;
            ttl = ttl.min(step_ttl);
            path = format!("{}{}", next.trim_end_matches('/'), tail);
        }
        Err(NameError::NotFound(format!(
            "{input}: more than {MAX_DEPTH} indirections"
        )))
    }

    async fn resolve_one(self: &Arc<Self>, label: &str) -> Result<(String, Duration), NameError> {
        let name = match Name::parse(label) {
            Ok(n) => n,
            Err(_) => {
                if !dnslink::is_dnslink_candidate(label) {
                    return Err(NameError::NotFound(format!(
                        "/ipns/{label}: not an IPNS name or domain"
                    )));
                }
                if self.config.offline {
                    return Err(NameError::NotFound(format!(
                        "/ipns/{label}: offline, DNSLink is not looked up"
                    )));
                }
                let Some(dns) = &self.dnslink else {
                    return Err(NameError::NotFound(format!(
                        "/ipns/{label}: DNSLink is off (no --dns server)"
                    )));
                };
                return dns.resolve(label).await.map_err(|e| match e {
                    dnslink::DnsLinkError::Dns(m) => {
                        NameError::Unavailable(format!("/ipns/{label}: {m}"))
                    }
                    other => NameError::NotFound(format!("/ipns/{label}: {other}")),
                });
            }
        };
        // Our own keys: no network. Reading one's own name shows what was written: pending
        // changes of that dataset are committed (and signed) first.
        let own_dataset = self
            .own
            .read()
            .values()
            .find(|o| Name::from_public_key(&o.key.public()) == name)
            .map(|o| o.dataset.clone());
        if let Some(ds) = own_dataset.as_deref().and_then(|d| self.datasets.get(d)) {
            // Also when nothing is pending: a commit in flight is waited for.
            tokio::task::block_in_place(|| {
                let _ = ds.commit(None); // a failure is logged; the last version is answered
                if let Err(e) = self.publish_dataset(&ds.name, false) {
                    tracing::warn!(dataset = %ds.name, "cannot publish: {e:#}");
                }
            });
        }
        for o in self.own.read().values() {
            if Name::from_public_key(&o.key.public()) == name {
                // A local map lookup: answer with no caching, so a new version shows at once.
                return match &o.record {
                    Some((r, _, _)) => Ok((r.value.clone(), Duration::ZERO)),
                    None => Err(NameError::NotFound(format!(
                        "/ipns/{name}: dataset {} has no version yet",
                        o.dataset
                    ))),
                };
            }
        }
        let now = SystemTime::now();
        let cached = {
            let cache = self.cache.lock();
            match cache.get(&name) {
                Some(c) if c.record.validity > now => Some((
                    c.record.value.clone(),
                    c.record.ttl,
                    c.fetched.elapsed() < c.record.ttl,
                    c.record.validity,
                )),
                _ => None,
            }
        };
        if let Some((value, ttl, fresh, eol)) = cached {
            // Never let anyone cache a record past its EOL.
            let left = eol.duration_since(now).unwrap_or_default();
            if fresh {
                return Ok((value, ttl.min(left)));
            }
            let stale_ttl = STALE_TTL.min(ttl).min(left);
            // Past its TTL: ask again, briefly; if the sources fail, the last valid record
            // keeps answering until its EOL (re-checked at most every few seconds).
            return match tokio::time::timeout(REVALIDATE_TIMEOUT, self.fetch_record(name)).await {
                Ok(Ok(rec)) => {
                    let left = rec
                        .validity
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    Ok((rec.value, rec.ttl.min(left)))
                }
                Ok(Err(e)) => {
                    tracing::info!(%name, "re-resolving failed ({e}); serving the last valid record");
                    self.touch(&name);
                    Ok((value, stale_ttl))
                }
                Err(_) => {
                    tracing::info!(%name, "re-resolving timed out; serving the last valid record");
                    self.touch(&name);
                    Ok((value, stale_ttl))
                }
            };
        }
        let record = self.fetch_record(name).await?;
        let left = record
            .validity
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        Ok((record.value, record.ttl.min(left)))
    }

    /// Counts a failed re-resolution as a fetch, so a dead source is asked again only after
    /// `STALE_TTL`, not on every lookup.
    fn touch(&self, name: &Name) {
        if let Some(mut c) = self.cache.lock().get_mut(name) {
            let ttl = c.record.ttl;
            c.fetched = Instant::now()
                .checked_sub(ttl.saturating_sub(STALE_TTL))
                .unwrap_or_else(Instant::now);
        }
    }

    /// Asks every source at once; keeps the best valid record.
    async fn fetch_record(&self, name: Name) -> Result<Record, NameError> {
        if self.config.offline {
            return Err(NameError::NotFound(format!(
                "/ipns/{name}: offline, and not one of our names"
            )));
        }
        let mut attempts: Vec<Attempt<'_>> = Vec::new();
        for g in &self.config.gateways {
            let url = g.join(&format!("ipns/{name}?format=ipns-record"));
            attempts.push(Box::pin(async move {
                let Ok(url) = url else {
                    return (g.to_string(), Err("bad URL".into()));
                };
                (url.to_string(), self.get_record(url).await.map(|b| vec![b]))
            }));
        }
        for r in &self.config.routers {
            let url = r.join(&format!("routing/v1/ipns/{name}"));
            attempts.push(Box::pin(async move {
                let Ok(url) = url else {
                    return (r.to_string(), Err("bad URL".into()));
                };
                (url.to_string(), self.get_record(url).await.map(|b| vec![b]))
            }));
        }
        if let Some(node) = &self.node {
            let key = name.to_routing_key();
            attempts.push(Box::pin(async move {
                let found = node.get_records(key).await;
                (
                    "dht".to_string(),
                    Ok(found.into_iter().map(Bytes::from).collect()),
                )
            }));
        }
        if attempts.is_empty() {
            return Err(NameError::NotFound(format!(
                "/ipns/{name}: no gateway, router or DHT to ask"
            )));
        }
        let results = futures::future::join_all(attempts).await;
        let now = SystemTime::now();
        let mut best: Option<Record> = None;
        let mut failures = Vec::new();
        let mut invalid = 0;
        for (source, r) in results {
            match r {
                Ok(list) => {
                    for bytes in list {
                        match ipfs_mount_ipns::validate(&name, &bytes, now) {
                            Ok(rec) => {
                                if best
                                    .as_ref()
                                    .is_none_or(|b| ipfs_mount_ipns::better(&rec, b))
                                {
                                    best = Some(rec);
                                }
                            }
                            Err(e) => {
                                invalid += 1;
                                tracing::warn!(%name, %source, "invalid IPNS record ignored: {e}");
                            }
                        }
                    }
                }
                Err(e) => failures.push(format!("{source}: {e}")),
            }
        }
        match best {
            Some(rec) => {
                tracing::debug!(%name, seq = rec.sequence, value = %rec.value, "resolved");
                let mut cache = self.cache.lock();
                // Never go back to an older record than one we already had.
                let keep_old = cache.get(&name).is_some_and(|c| {
                    c.record.validity > now && ipfs_mount_ipns::better(&c.record, &rec)
                });
                if !keep_old {
                    cache.insert(
                        name,
                        Cached {
                            record: rec.clone(),
                            fetched: Instant::now(),
                        },
                    );
                } else if let Some(mut c) = cache.get_mut(&name) {
                    c.fetched = Instant::now();
                }
                Ok(cache.get(&name).map(|c| c.record.clone()).unwrap_or(rec))
            }
            None if invalid > 0 => Err(NameError::NotFound(format!(
                "/ipns/{name}: only invalid records found"
            ))),
            None => {
                let detail = failures.join("; ");
                tracing::info!(%name, "no IPNS record: {detail}");
                Err(NameError::NotFound(format!(
                    "/ipns/{name}: no valid record ({detail})"
                )))
            }
        }
    }

    async fn get_record(&self, url: url::Url) -> Result<Bytes, String> {
        let resp = self
            .http
            .get(url)
            .header("Accept", "application/vnd.ipfs.ipns-record")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_RECORD {
                return Err(format!("record larger than {MAX_RECORD} bytes"));
            }
        }
        Ok(Bytes::from(body))
    }
}

/// The dataset's key, created (mode 0600) if missing; `true` when created.
pub fn load_or_create_key(dir: &Path) -> anyhow::Result<(Keypair, bool)> {
    let path = dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(b) => Ok((Keypair::from_protobuf_encoding(&b)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Link, not rename: if another process (the mount, `key list`) made the key
            // first, keep theirs.
            let key = Keypair::generate_ed25519();
            let tmp = dir.join(format!("{KEY_FILE}.{}.new", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&key.to_protobuf_encoding()?)?;
            f.sync_all()?;
            let linked = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => Ok((key, true)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((
                    Keypair::from_protobuf_encoding(&std::fs::read(&path)?)?,
                    false,
                )),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes a key file atomically with mode 0600.
pub fn write_key(dir: &Path, key: &Keypair) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{KEY_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&key.to_protobuf_encoding()?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(KEY_FILE))?;
    Ok(())
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn record(raw: usize, value: &str) -> Cached {
        Cached {
            record: Record {
                value: value.to_string(),
                sequence: 1,
                validity: SystemTime::now() + Duration::from_secs(3600),
                ttl: Duration::from_secs(60),
                raw: Bytes::from(vec![0u8; raw]),
            },
            fetched: Instant::now(),
        }
    }

    fn name() -> Name {
        Name::from_public_key(&Keypair::generate_ed25519().public())
    }

    #[test]
    fn record_cache_is_bounded_by_bytes() {
        let cap = 256 << 10;
        let mut cache = record_cache(cap);
        // 10 KiB records (the largest allowed): about 25 fit
        let mut names = Vec::new();
        for _ in 0..200 {
            let n = name();
            cache.insert(n, record(MAX_RECORD, "/ipfs/bafy"));
            names.push(n);
            assert!(cache.weight() <= cap, "{} > {cap}", cache.weight());
        }
        assert!(cache.len() <= 26, "{}", cache.len());
        assert!(cache.len() >= 12, "{}", cache.len());
        // a long value counts as well
        let long = "/ipfs/bafy/".to_string() + &"x".repeat(64 << 10);
        for _ in 0..10 {
            cache.insert(name(), record(100, &long));
            assert!(cache.weight() <= cap);
        }
        // small records: thousands fit in the same bytes
        let mut small = record_cache(cap);
        for _ in 0..2000 {
            small.insert(name(), record(300, "/ipfs/bafy"));
        }
        assert!(small.weight() <= cap);
        assert!(small.len() > 300, "{}", small.len());
        // an entry updated in place is re-weighed
        let n = names[names.len() - 1];
        if let Some(mut c) = cache.get_mut(&n) {
            c.fetched = Instant::now();
        }
        assert!(cache.weight() <= cap);
    }
}
