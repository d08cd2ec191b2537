//! Named pins (`ipfs-mount pin add|ls|rm`) and garbage collection (`ipfs-mount gc`).
//!
//! A pin keeps a whole DAG in the store: readable offline, served to peers, never evicted.
//! `pin add` walks the DAG, fetching only the blocks the store lacks (so an interrupted add
//! resumes where it stopped), every block verified on the way in, each one held by a temporary
//! pin (owner [`PIN_TEMP_OWNER`]) from the moment the walk reaches it; the pin then takes the
//! temporary pin over in one store transaction, so no block of the DAG is evictable at any
//! moment.
//!
//! Names ("aliases", as ipfs-embed calls them) live in the store's pin label: `pin` for a pin
//! without a name, `pin:a,b` for one named `a` and `b`. A name belongs to one CID at a time:
//! `pin add --name data <new>` moves it (the new CID is pinned first, then the old one loses
//! the name, and its pin goes when that was its last name). `pin rm <name>` removes a name
//! (and the pin with its last one); `pin rm <cid>` removes the pin and all its names.
//!
//! Pins made by `import` (label `import`) are listed and removable too. The pins of dataset
//! versions (labels `dataset:…`) belong to their datasets: `dataset prune` releases them.
//!
//! Garbage collection deletes every block that no pin, no kept dataset version and no
//! temporary pin (a writer's staged or closed file, an import or a pin under way) holds; see
//! [`BlockService::collect_garbage`].

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use cid::Cid;
use ipfs_mount_ipld::cids;
use ipfs_mount_ipld::reader::dag::{DagWalk, Scope};
use ipfs_mount_ipld::reader::path::{PathWalk, Resolved};
use ipfs_mount_ipld::reader::{self, BlockGetter, Limits};
use ipfs_mount_store::TempPinId;

use crate::blocks::{BlockError, BlockService};

/// Owner of the temporary pins of `pin add` walks under way.
pub const PIN_TEMP_OWNER: &str = "pin";
/// Label of a pin made by `import`.
const IMPORT_LABEL: &str = "import";
/// Deepest block a pin follows (dag-cbor chains can be long; UnixFS is a few levels).
const PIN_MAX_DEPTH: u32 = 4096;

/// One user pin, as `pin ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPin {
    pub cid: Cid,
    /// Its names, sorted; empty for a pin without a name.
    pub names: Vec<String>,
    /// `pin` or `import`: who made it.
    pub kind: &'static str,
    pub blocks: u64,
    pub bytes: u64,
}

/// A pin name is one word tools will not mistake for a CID or a path.
pub fn valid_name(name: &str) -> bool {
    crate::datasets::valid_name(name) && cids::parse(name).is_err()
}

fn label_of(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        "pin".to_string()
    } else {
        let list: Vec<&str> = names.iter().map(String::as_str).collect();
        format!("pin:{}", list.join(","))
    }
}

/// The kind and names of a user pin's label; `None` for the pins of datasets and others.
fn parse_label(label: &str) -> Option<(&'static str, BTreeSet<String>)> {
    if label == "pin" {
        return Some(("pin", BTreeSet::new()));
    }
    if label == IMPORT_LABEL {
        return Some(("import", BTreeSet::new()));
    }
    let names = label.strip_prefix("pin:")?;
    Some((
        "pin",
        names
            .split(',')
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect(),
    ))
}

/// Every user pin (named, unnamed, imported), by CID.
pub fn list(blocks: &BlockService) -> Result<Vec<UserPin>> {
    let mut out: Vec<UserPin> = blocks
        .pins()?
        .into_iter()
        .filter_map(|p| {
            let (kind, names) = parse_label(&p.label)?;
            Some(UserPin {
                cid: p.root,
                names: names.into_iter().collect(),
                kind,
                blocks: p.blocks,
                bytes: p.bytes,
            })
        })
        .collect();
    out.sort_by(|a, b| a.names.cmp(&b.names).then(a.cid.cmp(&b.cid)));
    Ok(out)
}

/// `pin ls` text: `<cid>\t<names, comma-separated, or ->\t<kind>\t<blocks>\t<bytes>` lines, or
/// one JSON object per line.
pub fn list_text(blocks: &BlockService, json: bool) -> Result<String> {
    let mut out = String::new();
    for p in list(blocks)? {
        if json {
            let v = serde_json::json!({
                "cid": p.cid.to_string(),
                "names": p.names,
                "kind": p.kind,
                "blocks": p.blocks,
                "bytes": p.bytes,
            });
            out.push_str(&format!("{v}\n"));
        } else {
            let names = if p.names.is_empty() {
                "-".to_string()
            } else {
                p.names.join(",")
            };
            out.push_str(&format!(
                "{}\t{names}\t{}\t{}\t{}\n",
                p.cid, p.kind, p.blocks, p.bytes
            ));
        }
    }
    Ok(out)
}

/// Blocks and bytes walked so far, and how many of them were fetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub blocks: u64,
    pub bytes: u64,
    pub fetched: u64,
}

/// What `pin add` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub cid: Cid,
    pub names: Vec<String>,
    pub progress: Progress,
    /// The CID a moved name was taken from.
    pub moved_from: Option<Cid>,
}

/// Where a `pin add` target's names are resolved: the mount's resolver, when there is one.
pub trait NameLookup: Send + Sync {
    /// `/ipns/<name>[/path]` to `/ipfs/<cid>[/path]`.
    fn resolve<'a>(
        &'a self,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<String, String>>;
}

impl NameLookup for Arc<crate::names::Names> {
    fn resolve<'a>(
        &'a self,
        name: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            crate::names::Names::resolve(self, name)
                .await
                .map(|r| r.path)
                .map_err(|e| e.to_string())
        })
    }
}

/// Resolves `<cid>`, `/ipfs/<cid>[/path]` or `/ipns/<name>[/path]` to the CID it names.
pub async fn resolve_target(
    blocks: &BlockService,
    names: Option<&dyn NameLookup>,
    target: &str,
) -> Result<Cid> {
    let path = if let Some(rest) = target.strip_prefix("/ipns/") {
        let Some(names) = names else {
            bail!("resolving {target} needs a running mount of this store (its name resolver)");
        };
        names
            .resolve(rest)
            .await
            .map_err(|e| anyhow!("cannot resolve {target}: {e}"))?
    } else if target.starts_with("/ipfs/") {
        target.to_string()
    } else {
        format!("/ipfs/{target}")
    };
    let rest = path.strip_prefix("/ipfs/").unwrap_or(&path);
    let mut parts = rest.split('/').filter(|p| !p.is_empty());
    let first = parts
        .next()
        .ok_or_else(|| anyhow!("{target:?} names no CID"))?;
    let root = cids::parse(first).map_err(|e| anyhow!("{first:?} is not a CID: {e}"))?;
    let names: Vec<Vec<u8>> = parts.map(|p| p.as_bytes().to_vec()).collect();
    if names.is_empty() {
        return Ok(root);
    }
    let found = reader::collect(PathWalk::new(root, names, Limits::default()), blocks)
        .await
        .map_err(|e| anyhow!("cannot resolve {target}: {e}"))?;
    match found.into_iter().next() {
        Some(Resolved::Found { cid, .. }) => Ok(cid),
        Some(Resolved::NotFound { .. }) => bail!("{target}: no such file or directory"),
        Some(Resolved::NotDirectory { .. }) => bail!("{target}: not a directory"),
        Some(Resolved::Symlink { .. }) => bail!("{target}: the path crosses a symlink"),
        None => bail!("{target}: the path walk ended without an answer"),
    }
}

/// The walk's block source: every block it reaches is held by the temporary pin and left in
/// the store (a block only the memory cache had is stored), fetched only when the store lacks
/// it.
pub struct Holding<'a> {
    blocks: &'a BlockService,
    temp: TempPinId,
    fetched: std::sync::atomic::AtomicU64,
}

impl<'a> Holding<'a> {
    pub fn new(blocks: &'a BlockService, temp: TempPinId) -> Self {
        Holding {
            blocks,
            temp,
            fetched: Default::default(),
        }
    }

    /// Blocks fetched from a source so far.
    pub fn fetched(&self) -> u64 {
        self.fetched.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl BlockGetter for Holding<'_> {
    type Error = BlockError;

    fn get_local(&self, cid: &Cid) -> Result<Option<Bytes>, BlockError> {
        self.blocks.hold(self.temp, cid)
    }

    async fn get(&self, cid: Cid) -> Result<Bytes, BlockError> {
        if let Some(b) = self.blocks.hold(self.temp, &cid)? {
            return Ok(b);
        }
        let data = self.blocks.get(&cid).await?;
        // Fetched blocks are stored by `get`; a memory-cache hit is stored here. The hold
        // above protects it either way.
        if !self.blocks.has_stored(&cid) {
            self.blocks
                .put_temp(self.temp, &[(cid, data.clone())])
                .map_err(|e| BlockError::Store {
                    cid,
                    cause: e.to_string(),
                })?;
        } else {
            self.fetched
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(data)
    }
}

/// Walks the whole DAG below `root` into the store under the temporary pin `temp`.
pub async fn fetch_held(
    blocks: &BlockService,
    root: &Cid,
    temp: TempPinId,
    on_progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Progress> {
    let getter = Holding {
        blocks,
        temp,
        fetched: Default::default(),
    };
    let mut walk = DagWalk::new(
        *root,
        Scope::All,
        Limits::default().with_max_depth(PIN_MAX_DEPTH),
    );
    let mut progress = Progress::default();
    reader::drive::run(&mut walk, &getter, |v| {
        progress.blocks += 1;
        progress.bytes += v.block.len() as u64;
        progress.fetched = getter.fetched.load(std::sync::atomic::Ordering::Relaxed);
        on_progress(progress);
        ControlFlow::Continue(())
    })
    .await
    .map_err(|e| anyhow!("cannot fetch the DAG of {root}: {e}"))?;
    progress.fetched = getter.fetched.load(std::sync::atomic::Ordering::Relaxed);
    Ok(progress)
}

/// Pins `root` with the names `names` (replacing its label): walks its DAG into the store
/// under a temporary pin, then turns that into the pin.
async fn pin_walked(
    blocks: &Arc<BlockService>,
    root: &Cid,
    label: &str,
    on_progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Progress> {
    let temp = blocks
        .temp_pin(PIN_TEMP_OWNER)
        .context("creating the pin's temporary pin")?;
    let result = async {
        let fetched = fetch_whole(blocks, root, temp, on_progress).await;
        let mut progress = fetch_held(blocks, root, temp, on_progress).await?;
        progress.fetched += fetched;
        blocks
            .pin_with_temps(root, label, &mut std::iter::once(*root), &[temp])
            .with_context(|| format!("pinning {root}"))?;
        Ok(progress)
    }
    .await;
    if result.is_err() {
        // What was stored stays as ordinary cache: a new `pin add` finds it.
        if let Err(e) = blocks.release_temp(temp) {
            tracing::warn!(%root, "cannot release the temporary pin of a failed pin add: {e}");
        }
    }
    result
}

/// A DAG whose root the store lacks is most likely missing whole: asked for in one request (a
/// CAR from a gateway, a walk over bitswap), every block held by `temp` as it arrives, instead
/// of block by block. Returns how many blocks came; a failure only leaves the rest to the
/// block-by-block walk that follows.
async fn fetch_whole(
    blocks: &Arc<BlockService>,
    root: &Cid,
    temp: TempPinId,
    on_progress: &mut (dyn FnMut(Progress) + Send),
) -> u64 {
    use std::sync::atomic::Ordering::Relaxed;
    if blocks.is_offline() || blocks.has_stored(root) {
        return 0;
    }
    let (blocks0, bytes0) = (
        blocks.stats.fetched_blocks.load(Relaxed),
        blocks.stats.fetched_bytes.load(Relaxed),
    );
    let whole = blocks.fetch_dag_held(root, temp);
    tokio::pin!(whole);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    let result = loop {
        tokio::select! {
            r = &mut whole => break r,
            _ = tick.tick() => {
                // The service's counters: other fetches may add to them, for a progress line only.
                let n = blocks.stats.fetched_blocks.load(Relaxed).saturating_sub(blocks0);
                on_progress(Progress {
                    blocks: n,
                    bytes: blocks.stats.fetched_bytes.load(Relaxed).saturating_sub(bytes0),
                    fetched: n,
                });
            }
        }
    };
    match result {
        Ok(n) => n,
        Err(e) => {
            tracing::info!(%root, "whole-DAG fetch failed, going on block by block: {e}");
            0
        }
    }
}

/// The label of the store's pin of `cid`, if it has one.
fn label_of_pin(blocks: &BlockService, cid: &Cid) -> Result<Option<String>> {
    Ok(blocks
        .pins()?
        .into_iter()
        .find(|p| p.root == *cid)
        .map(|p| p.label))
}

/// The user pin holding the name `name`.
fn find_name(blocks: &BlockService, name: &str) -> Result<Option<UserPin>> {
    Ok(list(blocks)?
        .into_iter()
        .find(|p| p.names.iter().any(|n| n == name)))
}

/// `pin add`: resolves `target`, walks and pins its DAG, gives it `name` (moved from the CID
/// that had it).
pub async fn add(
    blocks: &Arc<BlockService>,
    names: Option<&dyn NameLookup>,
    target: &str,
    name: Option<&str>,
    on_progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Added> {
    if let Some(n) = name {
        if !valid_name(n) {
            bail!("{n:?} is not a valid pin name (letters, digits, '-', '_', '.'; not a CID)");
        }
    }
    let cid = resolve_target(blocks, names, target).await?;
    let mut pin_names = match label_of_pin(blocks, &cid)? {
        None => BTreeSet::new(),
        Some(label) => match parse_label(&label) {
            Some((_, names)) => names,
            None => bail!("{cid} is pinned by {label:?}, not by `pin add`; it stays as it is"),
        },
    };
    if let Some(n) = name {
        pin_names.insert(n.to_string());
    }
    let old = match name {
        Some(n) => find_name(blocks, n)?.filter(|p| p.cid != cid),
        None => None,
    };
    let progress = pin_walked(blocks, &cid, &label_of(&pin_names), on_progress).await?;
    if let (Some(old), Some(n)) = (&old, name) {
        drop_name(blocks, old, n).await?;
    }
    tracing::info!(%cid, names = ?pin_names, blocks = progress.blocks, fetched = progress.fetched, "pinned");
    Ok(Added {
        cid,
        names: pin_names.into_iter().collect(),
        progress,
        moved_from: old.map(|p| p.cid),
    })
}

/// Takes `name` from `pin`: the pin goes with its last name, else it is relabelled (a local
/// walk: its blocks are all in the store).
async fn drop_name(blocks: &Arc<BlockService>, pin: &UserPin, name: &str) -> Result<()> {
    let rest: BTreeSet<String> = pin.names.iter().filter(|n| *n != name).cloned().collect();
    if rest.is_empty() {
        blocks.unpin(&pin.cid)?;
    } else {
        pin_walked(blocks, &pin.cid, &label_of(&rest), &mut |_| {}).await?;
    }
    Ok(())
}

/// `pin rm <cid | name>`: removes a name (the pin with its last one) or a whole pin. Returns
/// the CID concerned and whether its pin is gone.
pub async fn remove(blocks: &Arc<BlockService>, what: &str) -> Result<(Cid, bool)> {
    if let Ok(cid) = cids::parse(what) {
        let Some(label) = label_of_pin(blocks, &cid)? else {
            bail!("{cid} is not pinned");
        };
        if parse_label(&label).is_none() {
            bail!("{cid} is pinned by {label:?}, not by `pin add` or `import`");
        }
        blocks.unpin(&cid)?;
        return Ok((cid, true));
    }
    let Some(pin) = find_name(blocks, what)? else {
        bail!("no pin named {what:?}");
    };
    drop_name(blocks, &pin, what).await?;
    Ok((pin.cid, pin.names.len() == 1))
}

/// `pin add` text: `<cid>\t<names or ->\t<blocks>\t<bytes>\t<fetched>` (and the CID a moved
/// name came from).
pub fn added_text(a: &Added) -> String {
    let names = if a.names.is_empty() {
        "-".to_string()
    } else {
        a.names.join(",")
    };
    let mut out = format!(
        "{}\t{names}\t{} blocks\t{} bytes\t{} fetched\n",
        a.cid, a.progress.blocks, a.progress.bytes, a.progress.fetched
    );
    if let Some(old) = a.moved_from {
        out.push_str(&format!("moved from {old}\n"));
    }
    out
}

/// `pin rm` text.
pub fn removed_text(what: &str, (cid, gone): (Cid, bool)) -> String {
    if gone {
        format!("unpinned {cid}\n")
    } else {
        format!("removed the name {what} from {cid} (still pinned by its other names)\n")
    }
}

/// What `gc` freed (or, with `--dry-run`, would free).
pub fn gc_text(freed: &ipfs_mount_store::EvictStats, dry_run: bool) -> String {
    let verb = if dry_run { "would free" } else { "freed" };
    format!(
        "{verb} {} bytes in {} blocks ({})\n",
        freed.bytes,
        freed.blocks,
        bytesize::ByteSize(freed.bytes)
    )
}

/// Releases the temporary pins that a `pin add` or a replica update which did not finish left in the store (what
/// they held stays as cache, so the next `pin add` fetches only the rest). Call right after
/// opening the store, before any `pin add` of this process starts.
pub fn release_leftovers(store: &dyn ipfs_mount_store::BlockStore) {
    for owner in [PIN_TEMP_OWNER, crate::datasets::follow::FOLLOW_TEMP_OWNER] {
        match store.release_temp_owner(owner) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                temp_pins = n,
                owner,
                "released the temporary pins of an unfinished fetch"
            ),
            Err(e) => {
                tracing::warn!(
                    owner,
                    "cannot release the temporary pins of unfinished fetches: {e}"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipfs_mount_fetch::{Fetcher, MockFetcher};
    use ipfs_mount_ipld::builder::{build_file, Built, ImportProfile};
    use ipfs_mount_store::{BlockStore, MemoryStore};

    /// A file DAG of `len` bytes in 1 KiB leaves.
    fn dag(seed: u8, len: usize) -> Built {
        // xorshift: no two leaves alike
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ seed as u64;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut profile = ImportProfile::unixfs_v1_2025();
        profile.chunk_size = 1024;
        build_file(&data, &profile)
    }

    /// A service over a small memory store whose only source has `dags`.
    fn service(
        cache: u64,
        dags: &[&Built],
    ) -> (Arc<BlockService>, Arc<MemoryStore>, Arc<MockFetcher>) {
        let store = Arc::new(MemoryStore::new(cache));
        let all = dags.iter().flat_map(|d| d.blocks.iter().cloned());
        let mock = Arc::new(MockFetcher::with_blocks(all));
        let fetchers: Vec<Arc<dyn Fetcher>> = vec![mock.clone()];
        let blocks = Arc::new(BlockService::new(store.clone(), fetchers, false, 1 << 20));
        (blocks, store, mock)
    }

    /// A DAG far larger than the cache is pinned whole; a name moves with the old pin going;
    /// removing one of two names keeps the pin; `gc` keeps everything pinned and nothing else.
    #[tokio::test]
    async fn pins_names_and_gc_on_a_memory_store() {
        let (a, b) = (dag(3, 40 << 10), dag(5, 20 << 10));
        let (blocks, store, _) = service(4096, &[&a, &b]);
        let mut quiet = |_: Progress| {};
        let added = add(&blocks, None, &a.root.to_string(), Some("data"), &mut quiet)
            .await
            .unwrap();
        assert_eq!(added.progress.blocks, a.blocks.len() as u64);
        for (c, d) in &a.blocks {
            assert_eq!(store.get(c).unwrap().as_ref(), Some(d), "{c}");
        }
        let moved = add(&blocks, None, &b.root.to_string(), Some("data"), &mut quiet)
            .await
            .unwrap();
        assert_eq!(moved.moved_from, Some(a.root));
        let names = |blocks: &BlockService| -> Vec<(Cid, Vec<String>)> {
            list(blocks)
                .unwrap()
                .into_iter()
                .map(|p| (p.cid, p.names))
                .collect()
        };
        assert_eq!(names(&blocks), vec![(b.root, vec!["data".to_string()])]);
        add(
            &blocks,
            None,
            &b.root.to_string(),
            Some("other"),
            &mut quiet,
        )
        .await
        .unwrap();
        assert_eq!(remove(&blocks, "data").await.unwrap(), (b.root, false));
        assert_eq!(names(&blocks), vec![(b.root, vec!["other".to_string()])]);
        // a's blocks are unpinned now: gc takes them, b's stay.
        let freed = blocks.collect_garbage(false).unwrap();
        // (mostly evicted already: the cache is 4 KiB)
        assert!(freed.bytes > 0, "{freed:?}");
        assert!(a.blocks.iter().all(|(c, _)| !store.has(c).unwrap()));
        assert!(b.blocks.iter().all(|(c, _)| store.has(c).unwrap()));
        assert_eq!(
            remove(&blocks, &b.root.to_string()).await.unwrap(),
            (b.root, true)
        );
        assert!(list(&blocks).unwrap().is_empty());
        assert!(remove(&blocks, "other").await.is_err());
    }

    /// Blocks already stored are not fetched again: an add after an interrupted one (the root
    /// and every other block stored) fetches the rest only, one by one.
    #[tokio::test]
    async fn an_add_fetches_only_what_is_missing() {
        let a = dag(7, 30 << 10);
        let (blocks, store, mock) = service(1 << 20, &[&a]);
        let mut stored = 0u64;
        for (i, (c, d)) in a.blocks.iter().enumerate() {
            if *c == a.root || i % 2 == 0 {
                store.put(c, d).unwrap();
                stored += 1;
            }
        }
        let missing = a.blocks.len() as u64 - stored;
        assert!(missing > 10);
        let added = add(&blocks, None, &a.root.to_string(), None, &mut |_| {})
            .await
            .unwrap();
        assert_eq!(added.progress.blocks, a.blocks.len() as u64);
        assert_eq!(added.progress.fetched, missing);
        assert_eq!((mock.block_calls(), mock.car_calls()), (missing, 0));
        assert!(a.blocks.iter().all(|(c, _)| store.is_pinned(c).unwrap()));
    }

    #[test]
    fn labels_round_trip() {
        let names: BTreeSet<String> = ["b", "a"].iter().map(|s| s.to_string()).collect();
        let label = label_of(&names);
        assert_eq!(label, "pin:a,b");
        assert_eq!(parse_label(&label), Some(("pin", names)));
        assert_eq!(parse_label("pin"), Some(("pin", BTreeSet::new())));
        assert_eq!(parse_label("import"), Some(("import", BTreeSet::new())));
        assert_eq!(parse_label("dataset:sales"), None);
        assert!(valid_name("data") && !valid_name("a,b") && !valid_name(""));
        assert!(!valid_name(
            "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
        ));
    }
}
