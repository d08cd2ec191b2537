//! Writable datasets: a mutable working tree over immutable, content-addressed versions.
//!
//! Each dataset is a UnixFS directory built with the dataset's import profile; a version is a
//! commit record (dag-cbor) that links its root and the previous commit. Every version's blocks
//! stay pinned and `/ipfs/<root>` of any version reads back, until `dataset prune` releases the
//! trees of older versions (their commit records stay: see `prune.rs`).
//!
//! Writes go through three states (see `worktree.rs`): the **live** tree that readers of the
//! mount see at once; the **closed** tree of what writers acknowledged (a file enters it when
//! closed or fsynced, by one record in the dataset's journal, its blocks under a temporary pin
//! from their first byte); and the **committed** versions, group commits of the closed tree
//! made by the committer thread beside the FUSE threads: when the dataset has been quiet for
//! [`CommitPolicy::quiet`], at least every [`CommitPolicy::interval`] under continuous writes,
//! soon after an `fsync`, on `ipfs-mount dataset commit`, on reading `user.ipfs.cid` of a
//! directory, and at unmount. A commit rebuilds only the directories on changed paths.
//!
//! On disk, under the store: `datasets/<name>/HEAD` (the head commit CID, then the last journal
//! record it includes), `datasets/<name>/PROFILE`, `datasets/<name>/JOURNAL`; `staging/` holds
//! the temporary files of open writers (gone with them: an unclosed file is in no version).

pub mod admin;
mod attrs;
mod chunker;
mod closed;
mod commit;
pub mod follow;
mod hashpool;
mod journal;
#[cfg(test)]
mod model_tests;
pub mod prune;
mod stagebuf;
mod worktree;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cid::Cid;
use ipfs_mount_ipld::builder::ImportProfile;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::blocks::BlockService;
pub use commit::{Commit, Meta};
pub use worktree::{
    Dataset, DsError, NodeAttr, NodeId, NodeKind, ReadFrom, MAX_FILE_SIZE, NAME_MAX, ROOT_NODE,
};

/// The import profiles a dataset can use.
pub fn profile_by_name(name: &str) -> Option<ImportProfile> {
    match name {
        "unixfs-v1-2025" => Some(ImportProfile::unixfs_v1_2025()),
        "unixfs-v0-2015" => Some(ImportProfile::unixfs_v0_2015()),
        _ => None,
    }
}

pub const DEFAULT_PROFILE: &str = "unixfs-v1-2025";

/// A dataset name is one path component that tools will not mistake for something else.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// When the committer folds acknowledged changes into a version.
#[derive(Debug, Clone, Copy)]
pub struct CommitPolicy {
    /// Commit once a dataset has had no change for this long.
    pub quiet: Duration,
    /// Under continuous changes, commit at least this often.
    pub interval: Duration,
}

impl Default for CommitPolicy {
    /// 500 ms of quiet: a `cp -r` or a DuckDB `COPY` becomes one version, not thousands, while
    /// an interactive change is committed before its author looks for it. 5 s under continuous
    /// writes bounds how far the newest version (and a follower at `/ipns`) lags behind.
    fn default() -> Self {
        CommitPolicy {
            quiet: Duration::from_millis(500),
            interval: Duration::from_secs(5),
        }
    }
}

/// What datasets tell the rest of the mount: the committer's wake-up and new versions.
pub struct Hooks {
    kick: (Mutex<bool>, Condvar),
    commits: tokio::sync::watch::Sender<u64>,
    /// A file of [`RESERVE_BYTES`] kept on the store's disk: when the disk is full, deleting
    /// it gives the index room to release and evict, so space can be won back.
    reserve: PathBuf,
    /// Temporary pins whose release failed (a full disk): retried at each commit.
    unreleased: Mutex<Vec<u64>>,
}

/// Bytes available to unprivileged users on the file system `st` describes.
// The casts are no-ops on 64-bit Linux, but `c_ulong` and `fsblkcnt_t` are 32-bit elsewhere.
#[allow(clippy::unnecessary_cast)]
fn free_bytes(st: &nix::sys::statvfs::Statvfs) -> u64 {
    st.blocks_available() as u64 * st.fragment_size() as u64
}

/// Before the store opens: on a full disk, gives the datasets' reserve back, so that the
/// store's recovery and the replay of journals have room.
pub fn free_reserve_if_full(store_dir: &Path) {
    let reserve = store_dir.join("datasets").join(".reserve");
    let Ok(st) = nix::sys::statvfs::statvfs(store_dir) else {
        return;
    };
    let free = free_bytes(&st);
    if free < RESERVE_BYTES as u64 && std::fs::remove_file(&reserve).is_ok() {
        tracing::warn!("the store's disk is full: released the datasets' reserve");
    }
}

/// Size of the store's reserve file.
const RESERVE_BYTES: usize = 2 << 20;

impl Hooks {
    fn new(reserve: PathBuf) -> Self {
        Hooks {
            kick: (Mutex::new(false), Condvar::new()),
            commits: tokio::sync::watch::Sender::new(0),
            reserve,
            unreleased: Mutex::new(Vec::new()),
        }
    }

    /// Gives the reserve's space back to the disk (it is made again once there is room).
    pub(crate) fn free_reserve(&self) -> bool {
        match std::fs::remove_file(&self.reserve) {
            Ok(()) => {
                tracing::warn!(
                    "the store's disk is full: released the {} MiB reserve",
                    RESERVE_BYTES >> 20
                );
                true
            }
            Err(_) => false,
        }
    }

    /// Makes the reserve if it is missing and the disk has room for it and more.
    fn keep_reserve(&self) {
        if self.reserve.exists() {
            return;
        }
        let Some(dir) = self.reserve.parent() else {
            return;
        };
        let Ok(st) = nix::sys::statvfs::statvfs(dir) else {
            return;
        };
        let free = free_bytes(&st);
        if free < 8 * RESERVE_BYTES as u64 {
            return;
        }
        let tmp = self.reserve.with_extension("tmp");
        if std::fs::write(&tmp, vec![0u8; RESERVE_BYTES]).is_ok() {
            let _ = std::fs::rename(&tmp, &self.reserve);
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    pub(crate) fn defer_release(&self, temp: u64) {
        self.unreleased.lock().push(temp);
    }

    fn take_unreleased(&self) -> Vec<u64> {
        std::mem::take(&mut *self.unreleased.lock())
    }

    /// Wakes the committer (an fsync asked for a commit).
    pub fn kick(&self) {
        *self.kick.0.lock() = true;
        self.kick.1.notify_all();
    }

    fn committed(&self) {
        self.commits.send_modify(|n| *n += 1);
    }
}

/// One row of `dataset list`.
#[derive(Debug, Clone)]
pub struct DatasetInfo {
    pub name: String,
    pub version: Option<u64>,
    pub root: Option<Cid>,
    pub head: Option<Cid>,
    pub profile: String,
    /// `None` when loaded; else why the dataset cannot be used (its files are left untouched).
    pub damaged: Option<String>,
    pub pending: bool,
}

/// All datasets of a store.
pub struct Datasets {
    dir: PathBuf,
    staging: PathBuf,
    blocks: Arc<BlockService>,
    sets: RwLock<BTreeMap<String, Arc<Dataset>>>,
    /// Datasets that failed to load, with the reason: listed, never overwritten.
    damaged: RwLock<BTreeMap<String, (String, String)>>,
    hooks: Arc<Hooks>,
    policy: CommitPolicy,
    stop: AtomicBool,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Read-only copies of other machines' datasets (`follow.rs`).
    replicas: follow::Replicas,
}

impl Datasets {
    /// Loads every dataset of `<store>/datasets` (replaying what crashed runs journaled). No
    /// committer runs until [`Datasets::start_committer`].
    pub fn open(store_dir: &Path, blocks: Arc<BlockService>) -> Result<Arc<Self>> {
        Self::open_with(store_dir, blocks, CommitPolicy::default())
    }

    pub fn open_with(
        store_dir: &Path,
        blocks: Arc<BlockService>,
        policy: CommitPolicy,
    ) -> Result<Arc<Self>> {
        let dir = store_dir.join("datasets");
        let staging = store_dir.join("staging");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // Staged files of a previous run belong to writers that are gone: never acknowledged.
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)
            .with_context(|| format!("cannot create {}", staging.display()))?;
        let hooks = Arc::new(Hooks::new(dir.join(".reserve")));
        hooks.keep_reserve();
        let mut sets = BTreeMap::new();
        let mut damaged = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_name(&name) || !entry.path().join("PROFILE").exists() {
                continue;
            }
            match load(&entry.path(), &name, &blocks, &staging, &hooks) {
                Ok(ds) => {
                    sets.insert(name, ds);
                }
                Err(e) => {
                    let profile = std::fs::read_to_string(entry.path().join("PROFILE"))
                        .map(|s| s.trim().to_string())
                        .unwrap_or_default();
                    tracing::error!(dataset = %name, "cannot load dataset (left untouched; listed as damaged): {e:#}");
                    damaged.insert(name, (profile, format!("{e:#}")));
                }
            }
        }
        let replicas = follow::Replicas::open(&dir, &blocks);
        Ok(Arc::new(Datasets {
            replicas,
            dir,
            staging,
            blocks,
            sets: RwLock::new(sets),
            damaged: RwLock::new(damaged),
            hooks,
            policy,
            stop: AtomicBool::new(false),
            committer: Mutex::new(None),
        }))
    }

    /// Starts the committer thread (a mount does; one-shot commands commit explicitly).
    pub fn start_committer(self: &Arc<Self>) {
        let weak: Weak<Datasets> = Arc::downgrade(self);
        let hooks = self.hooks.clone();
        let policy = self.policy;
        let tick = (policy.quiet / 4).clamp(Duration::from_millis(10), Duration::from_millis(100));
        let handle = std::thread::Builder::new()
            .name("ds-committer".into())
            // Directory builds recurse along paths: room for deep trees.
            .stack_size(32 << 20)
            .spawn(move || loop {
                {
                    let mut kicked = hooks.kick.0.lock();
                    if !*kicked {
                        hooks.kick.1.wait_for(&mut kicked, tick);
                    }
                    *kicked = false;
                }
                let Some(sets) = weak.upgrade() else { return };
                if sets.stop.load(Ordering::Acquire) {
                    return;
                }
                sets.retry_releases();
                let now = Instant::now();
                for ds in sets.all() {
                    if ds.commit_due(now, policy.quiet, policy.interval) {
                        // Errors are logged by commit and retried at the next due time.
                        let _ = ds.commit(None);
                    }
                }
            })
            .expect("spawning the committer thread");
        *self.committer.lock() = Some(handle);
    }

    /// Releases temporary pins a full disk kept from being released, and keeps the reserve.
    fn retry_releases(&self) {
        let pending = self.hooks.take_unreleased();
        for t in pending {
            if self.blocks.release_temp(t).is_err() {
                self.hooks.defer_release(t);
            }
        }
        self.hooks.keep_reserve();
    }

    /// Stops the committer and commits everything pending (unmount).
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        self.hooks.kick();
        if let Some(h) = self.committer.lock().take() {
            let _ = h.join();
        }
        self.commit_all();
        // Files unlinked while open: no handle outlives the mount, nor may their pins.
        for ds in self.all() {
            ds.release_orphans();
        }
    }

    /// Commits every dataset with pending changes now.
    pub fn commit_all(&self) {
        for ds in self.all() {
            if let Err(e) = ds.commit(None) {
                tracing::error!(dataset = %ds.name, "final commit failed (the journal keeps the changes for the next mount): {e}");
            }
        }
    }

    /// Woken after every new version (the IPNS publisher signs a record right after it).
    pub fn subscribe_commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.hooks.commits.subscribe()
    }

    fn all(&self) -> Vec<Arc<Dataset>> {
        self.sets.read().values().cloned().collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.sets.read().keys().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Dataset>> {
        self.sets.read().get(name).cloned()
    }

    /// Why a dataset of that name exists on disk but cannot be used, if so.
    pub fn damaged(&self, name: &str) -> Option<String> {
        self.damaged.read().get(name).map(|d| d.1.clone())
    }

    /// Every dataset, loaded or damaged, by name.
    pub fn list(&self) -> Vec<DatasetInfo> {
        let mut out: Vec<DatasetInfo> = self
            .all()
            .into_iter()
            .map(|ds| DatasetInfo {
                name: ds.name.clone(),
                version: Some(ds.version()),
                root: ds.root_cid(),
                head: ds.head(),
                profile: ds.profile_name.clone(),
                damaged: None,
                pending: ds.has_pending(),
            })
            .collect();
        for (name, r) in self.replicas.all() {
            out.push(DatasetInfo {
                name,
                version: Some(r.version),
                root: r.root,
                head: r.head,
                profile: format!("replica-of:{}", r.source),
                damaged: None,
                pending: false,
            });
        }
        for (name, (profile, reason)) in self.damaged.read().iter() {
            out.push(DatasetInfo {
                name: name.clone(),
                version: None,
                root: None,
                head: None,
                profile: profile.clone(),
                damaged: Some(reason.clone()),
                pending: false,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn create(&self, name: &str, profile_name: &str) -> Result<Arc<Dataset>, DsError> {
        if !valid_name(name) {
            return Err(DsError::Invalid(format!(
                "{name:?} is not a valid dataset name"
            )));
        }
        let profile = profile_by_name(profile_name)
            .ok_or_else(|| DsError::Invalid(format!("unknown import profile {profile_name:?}")))?;
        let mut sets = self.sets.write();
        let dir = self.dir.join(name);
        // A dataset that failed to load keeps its name: its history stays reachable.
        if sets.contains_key(name)
            || self.replicas.get(name).is_some()
            || self.damaged.read().contains_key(name)
            || dir.join("HEAD").exists()
            || dir.join("PROFILE").exists()
        {
            return Err(DsError::Exists);
        }
        let io = |e: std::io::Error| DsError::Io(format!("creating dataset {name}: {e}"));
        std::fs::create_dir_all(&dir).map_err(io)?;
        write_atomic(&dir.join("PROFILE"), profile_name.as_bytes(), true).map_err(io)?;
        let ds = Dataset::new_empty(worktree::Setup {
            name: name.to_string(),
            profile_name: profile_name.to_string(),
            profile,
            dir,
            staging: self.staging.clone(),
            blocks: self.blocks.clone(),
            hooks: self.hooks.clone(),
        })?;
        sets.insert(name.to_string(), ds.clone());
        Ok(ds)
    }

    /// Removes an empty dataset's name; its versions stay in the store (pinned) until unpinned.
    pub fn remove(&self, name: &str) -> Result<(), DsError> {
        let mut sets = self.sets.write();
        let ds = sets.get(name).ok_or(DsError::NotFound)?;
        if !ds.is_empty() {
            return Err(DsError::NotEmpty);
        }
        // The removal itself is a version (the empty tree), so nothing acknowledged is lost.
        ds.commit(None)?;
        let dir = self.dir.join(name);
        // Keep the history file for `dataset log`, but take the name away.
        let gone = self.dir.join(format!(".removed-{name}-{}", unique_stamp()));
        std::fs::rename(&dir, &gone)
            .map_err(|e| DsError::Io(format!("removing dataset {name}: {e}")))?;
        sets.remove(name);
        Ok(())
    }
}

impl Drop for Datasets {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.hooks.kick();
    }
}

fn load(
    dir: &Path,
    name: &str,
    blocks: &Arc<BlockService>,
    staging: &Path,
    hooks: &Arc<Hooks>,
) -> Result<Arc<Dataset>> {
    let profile_name = std::fs::read_to_string(dir.join("PROFILE"))?
        .trim()
        .to_string();
    let profile = profile_by_name(&profile_name)
        .ok_or_else(|| anyhow!("unknown profile {profile_name:?}"))?;
    let head = match std::fs::read_to_string(dir.join("HEAD")) {
        Ok(s) => Some(worktree::parse_head(&s).map_err(|e| anyhow!("{e}"))?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let setup = worktree::Setup {
        name: name.to_string(),
        profile_name,
        profile,
        dir: dir.to_path_buf(),
        staging: staging.to_path_buf(),
        blocks: blocks.clone(),
        hooks: hooks.clone(),
    };
    let ds = match head {
        None => Dataset::new_empty(setup).map_err(|e| anyhow!("{e}"))?,
        Some((head, jseq)) => {
            let bytes = blocks
                .get_local(&head)?
                .ok_or_else(|| anyhow!("head commit {head} is not in the store"))?;
            let commit = Commit::decode(&head, &bytes)?;
            Dataset::load(setup, head, jseq, commit)?
        }
    };
    Ok(ds)
}

/// Writes a small file so that readers see either the old or the new content (atomic against
/// a crashed process); `durable` also survives power loss.
pub(crate) fn write_atomic(path: &Path, data: &[u8], durable: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)?;
    if let (true, Some(parent)) = (durable, path.parent()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// The chain of commits from the head back to the first, newest first.
pub fn history(blocks: &BlockService, head: Option<Cid>) -> Result<Vec<(Cid, Commit)>> {
    let mut out = Vec::new();
    let mut next = head;
    while let Some(cid) = next {
        let bytes = blocks
            .get_local(&cid)?
            .ok_or_else(|| anyhow!("commit {cid} is not in the store"))?;
        let c = Commit::decode(&cid, &bytes)?;
        next = c.prev;
        out.push((cid, c));
        if out.len() > 10_000_000 {
            bail!("commit chain too long");
        }
    }
    Ok(out)
}

/// Nanoseconds since the epoch: distinct names for removed datasets' history directories.
fn unique_stamp() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
