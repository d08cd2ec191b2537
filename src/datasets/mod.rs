//! Writable datasets: a mutable working tree over immutable, content-addressed versions.
//!
//! Each dataset is a UnixFS directory whose every change (a file closed after writing, a
//! rename, an unlink, a chmod) becomes a new version: changed directories are rebuilt bottom-up
//! with the dataset's import profile, a commit record (dag-cbor) chains the new root to the
//! previous commit, the new blocks are pinned, and `HEAD` moves atomically. History is never
//! lost: every version's blocks stay pinned and `/ipfs/<root>` of any version reads back.
//!
//! Open files are staged in a local temporary file with ordinary random-write semantics, and
//! sealed (chunked, hashed, stored) when they are flushed, fsynced or closed. Appending to a
//! sealed file reuses its full leaves: only the last partial chunk and the new bytes are
//! hashed.
//!
//! On disk, under the store: `datasets/<name>/HEAD` (the head commit CID) and
//! `datasets/<name>/PROFILE`; `staging/` holds the temporary files of open writers.

mod chunker;
mod commit;
mod stagebuf;
mod worktree;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use cid::Cid;
use ipfs_mount_ipld::builder::ImportProfile;
use parking_lot::RwLock;

use crate::blocks::BlockService;
pub use commit::{Commit, Meta};
pub use worktree::{Dataset, DsError, NodeAttr, NodeId, NodeKind, ReadFrom, ROOT_NODE};

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

/// Woken on every new dataset version (the IPNS publisher waits on it: a new record is
/// signed right after the commit, not on its next periodic pass).
pub static COMMITTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// All datasets of a store.
pub struct Datasets {
    dir: PathBuf,
    staging: PathBuf,
    blocks: Arc<BlockService>,
    sets: RwLock<BTreeMap<String, Arc<Dataset>>>,
}

impl Datasets {
    /// Loads every dataset's head from `<store>/datasets`.
    pub fn open(store_dir: &Path, blocks: Arc<BlockService>) -> Result<Arc<Self>> {
        let dir = store_dir.join("datasets");
        let staging = store_dir.join("staging");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // Staged files of a previous run belong to writers that are gone: never committed.
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)
            .with_context(|| format!("cannot create {}", staging.display()))?;
        let mut sets = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !valid_name(&name) || !entry.path().join("PROFILE").exists() {
                continue;
            }
            match load(&entry.path(), &name, &blocks, &staging) {
                Ok(ds) => {
                    sets.insert(name, ds);
                }
                Err(e) => tracing::error!(dataset = %name, "cannot load dataset: {e:#}"),
            }
        }
        Ok(Arc::new(Datasets {
            dir,
            staging,
            blocks,
            sets: RwLock::new(sets),
        }))
    }

    pub fn names(&self) -> Vec<String> {
        self.sets.read().keys().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Dataset>> {
        self.sets.read().get(name).cloned()
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
        if sets.contains_key(name) {
            return Err(DsError::Exists);
        }
        let dir = self.dir.join(name);
        let io = |e: std::io::Error| DsError::Io(format!("creating dataset {name}: {e}"));
        std::fs::create_dir_all(&dir).map_err(io)?;
        write_atomic(&dir.join("PROFILE"), profile_name.as_bytes(), true).map_err(io)?;
        let ds = Dataset::new_empty(
            name,
            profile_name,
            profile,
            dir,
            self.staging.clone(),
            self.blocks.clone(),
        )?;
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
        let dir = self.dir.join(name);
        // Keep the history file for `dataset log`, but take the name away.
        let gone = self.dir.join(format!(".removed-{name}-{}", unique_stamp()));
        std::fs::rename(&dir, &gone)
            .map_err(|e| DsError::Io(format!("removing dataset {name}: {e}")))?;
        sets.remove(name);
        Ok(())
    }
}

fn load(
    dir: &Path,
    name: &str,
    blocks: &Arc<BlockService>,
    staging: &Path,
) -> Result<Arc<Dataset>> {
    let profile_name = std::fs::read_to_string(dir.join("PROFILE"))?
        .trim()
        .to_string();
    let profile = profile_by_name(&profile_name)
        .ok_or_else(|| anyhow!("unknown profile {profile_name:?}"))?;
    let head = match std::fs::read_to_string(dir.join("HEAD")) {
        Ok(s) => Some(
            s.trim()
                .parse::<Cid>()
                .with_context(|| format!("bad HEAD {s:?}"))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let ds = match head {
        None => Dataset::new_empty(
            name,
            &profile_name,
            profile,
            dir.to_path_buf(),
            staging.to_path_buf(),
            blocks.clone(),
        )
        .map_err(|e| anyhow!("{e}"))?,
        Some(head) => {
            let bytes = blocks
                .get_local(&head)?
                .ok_or_else(|| anyhow!("head commit {head} is not in the store"))?;
            let commit = Commit::decode(&head, &bytes)?;
            Dataset::load(
                name,
                &profile_name,
                profile,
                dir.to_path_buf(),
                staging.to_path_buf(),
                blocks.clone(),
                head,
                commit,
            )?
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

/// `ipfs-mount dataset …`, on an unmounted store or through a mount's control socket.
pub mod cli {
    use std::fmt::Write as _;
    use std::sync::Arc;

    use anyhow::{anyhow, Result};
    use ipfs_mount_store::BlockStore;

    use super::{history, Datasets};
    use crate::blocks::BlockService;
    use crate::cli::{DatasetAction, StoreArgs};

    pub fn run(store_args: &StoreArgs, action: &DatasetAction) -> Result<()> {
        let text = match crate::mount::open_store(store_args) {
            Ok(store) => {
                let blocks = Arc::new(BlockService::new(store.clone(), Vec::new(), true, 16 << 20));
                let sets = Datasets::open(&store_args.dir(), blocks.clone())?;
                let out = execute(&sets, &blocks, action);
                store.flush().ok();
                out?
            }
            Err(e) if crate::transfer::is_locked(&e) => {
                crate::control::remote_request(&store_args.dir(), &action.to_request())?
            }
            Err(e) => return Err(e),
        };
        print!("{text}");
        Ok(())
    }

    /// Runs an action and returns what it prints.
    pub fn execute(
        sets: &Datasets,
        blocks: &BlockService,
        action: &DatasetAction,
    ) -> Result<String> {
        let mut out = String::new();
        match action {
            DatasetAction::List => {
                for name in sets.names() {
                    if let Some(ds) = sets.get(&name) {
                        let root = ds.root_cid().map(|c| c.to_string()).unwrap_or_default();
                        let head = ds.head().map(|c| c.to_string()).unwrap_or_default();
                        writeln!(
                            out,
                            "{name}\tv{}\t{root}\t{head}\t{}",
                            ds.version(),
                            ds.profile_name
                        )?;
                    }
                }
            }
            DatasetAction::Create { name, profile } => {
                let ds = sets
                    .create(name, profile)
                    .map_err(|e| anyhow!("cannot create dataset {name}: {e}"))?;
                writeln!(
                    out,
                    "{}",
                    ds.root_cid().map(|c| c.to_string()).unwrap_or_default()
                )?;
            }
            DatasetAction::Log { name } => {
                let ds = sets
                    .get(name)
                    .ok_or_else(|| anyhow!("no dataset named {name:?}"))?;
                for (cid, c) in history(blocks, ds.head())? {
                    writeln!(out, "v{}\t{}\t{}\t{}", c.seq, c.root, cid, c.time_ms)?;
                }
            }
            // Records go out through a running mount (its DHT node, routers and gateway).
            DatasetAction::Publish { name } => {
                anyhow::bail!("publishing {name} needs a running mount of this store (it signs and sends the records)")
            }
        }
        Ok(out)
    }
}

/// Nanoseconds since the epoch: distinct names for removed datasets' history directories.
fn unique_stamp() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
