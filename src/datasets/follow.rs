//! Replicas: `ipfs-mount dataset follow <name> [--as NAME]` makes `/datasets/NAME` a read-only
//! copy of another machine's dataset, kept current from its IPNS name (or DNSLink domain).
//!
//! A replica is a directory `<store>/datasets/NAME/` with `FOLLOW` (the name followed) and,
//! once a version has been seen, `HEAD` (as a dataset's: the head commit, then `0`). Each
//! version seen becomes a local commit record (`prev`: the previous one seen, `root`: the
//! content the name pointed to, `seq`: counted here, `time`: when it was seen, `message`: the
//! name), so `dataset log NAME` lists the versions seen with the same code as a dataset's, and
//! the chain is verifiable. A version's new blocks (its DAG less the subtrees the previous
//! version has) are walked into the store under a temporary pin, fetched where the store lacks
//! them, and the pin of its commit (label `dataset:NAME`) takes it over; only then does HEAD
//! move. As with a dataset's versions, what a version shares with the one before is held by
//! that one's pin (`dataset prune` keeps the kept versions whole). So a replica
//! reads offline, and after the publisher is gone, at the last version seen.
//!
//! The mount's follower task asks the name resolver about every replica each second; the
//! resolver answers from its cache within the record's TTL, so a new version is seen within
//! about the TTL. Nothing is written through `/datasets/NAME` (`EROFS`: it is content, as
//! under `/ipfs`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use cid::Cid;
use ipfs_mount_store::TempPinId;
use parking_lot::Mutex;

use super::{history, write_atomic, Commit, Datasets};
use crate::blocks::BlockService;
use crate::pins::{self, NameLookup};

/// The file naming what a replica follows.
pub const FOLLOW_FILE: &str = "FOLLOW";
/// Owner of the temporary pins of replica updates.
pub const FOLLOW_TEMP_OWNER: &str = "follow";
/// How often the follower asks about each replica (the resolver's cache answers within a
/// record's TTL).
const POLL: Duration = Duration::from_secs(1);

/// One replica: what it follows and the last version seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub source: String,
    pub head: Option<Cid>,
    pub root: Option<Cid>,
    pub version: u64,
}

/// The replicas of a store, by local name.
#[derive(Default)]
pub struct Replicas {
    dir: PathBuf,
    sets: Mutex<BTreeMap<String, Replica>>,
    /// Serialises updates of one replica (the follower and `dataset follow`).
    updating: tokio::sync::Mutex<()>,
}

/// The name `follow` is given when `--as` is not: the IPNS name or domain itself.
pub fn default_name(source: &str) -> String {
    let s = source.trim_start_matches("/ipns/");
    s.split('/').next().unwrap_or(s).to_string()
}

/// `/ipns/<name>` for any spelling `follow` accepts.
fn ipns_path(source: &str) -> String {
    format!("/ipns/{}", source.trim_start_matches("/ipns/"))
}

/// Walks a new version's DAG into the store under `temp`, level by level with up to 32
/// blocks in flight, skipping every subtree the previous version has (that version's pins hold
/// it whole: a replica's head is never pruned): an update costs its new blocks only, fetched or
/// held. Returns the new blocks and how many of them were fetched.
async fn take_new_blocks(
    blocks: &BlockService,
    root: Cid,
    previous: Option<Cid>,
    temp: TempPinId,
) -> Result<pins::Progress> {
    use futures::{StreamExt, TryStreamExt};
    use ipfs_mount_ipld::reader::BlockGetter;
    let mut known = HashSet::new();
    if let Some(prev) = previous {
        if let Err(e) = super::prune::walk_new(blocks, prev, &mut known) {
            // Then everything counts as new: correct, only slower.
            tracing::warn!(%prev, "cannot walk the replica's previous version: {e:#}");
            known.clear();
        }
    }
    let getter = pins::Holding::new(blocks, temp);
    let mut progress = pins::Progress::default();
    let mut level = vec![root];
    while !level.is_empty() {
        let todo: Vec<Cid> = level.drain(..).filter(|c| known.insert(*c)).collect();
        let getter = &getter;
        let got: Vec<(Cid, bytes::Bytes)> = futures::stream::iter(todo)
            .map(|cid| async move { getter.get(cid).await.map(|b| (cid, b)) })
            .buffer_unordered(32)
            .try_collect()
            .await?;
        for (cid, block) in got {
            progress.blocks += 1;
            progress.bytes += block.len() as u64;
            level.extend(super::prune::block_links(&cid, &block)?);
        }
    }
    progress.fetched = getter.fetched();
    Ok(progress)
}

impl Replicas {
    /// Loads the replicas of `<store>/datasets` (directories with a `FOLLOW` file).
    pub(super) fn open(datasets_dir: &Path, blocks: &BlockService) -> Self {
        let mut sets = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(datasets_dir) {
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let dir = entry.path();
                if !super::valid_name(&name) {
                    continue;
                }
                let Ok(source) = std::fs::read_to_string(dir.join(FOLLOW_FILE)) else {
                    continue;
                };
                let mut r = Replica {
                    source: source.trim().to_string(),
                    head: None,
                    root: None,
                    version: 0,
                };
                if let Ok(text) = std::fs::read_to_string(dir.join("HEAD")) {
                    match super::worktree::parse_head(&text)
                        .map_err(|e| anyhow!(e))
                        .and_then(|(head, _)| {
                            let bytes = blocks
                                .get_local(&head)?
                                .ok_or_else(|| anyhow!("commit {head} is not in the store"))?;
                            Ok((head, Commit::decode(&head, &bytes)?))
                        }) {
                        Ok((head, c)) => {
                            r.head = Some(head);
                            r.root = Some(c.root);
                            r.version = c.seq;
                        }
                        Err(e) => {
                            tracing::error!(replica = %name, "cannot read the replica's head (it starts again from the next version seen): {e:#}")
                        }
                    }
                }
                sets.insert(name, r);
            }
        }
        Replicas {
            dir: datasets_dir.to_path_buf(),
            sets: Mutex::new(sets),
            updating: tokio::sync::Mutex::new(()),
        }
    }

    pub fn get(&self, name: &str) -> Option<Replica> {
        self.sets.lock().get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.sets.lock().keys().cloned().collect()
    }

    pub fn all(&self) -> Vec<(String, Replica)> {
        self.sets
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Datasets {
    /// The replicas of this store.
    pub fn replicas(&self) -> &Replicas {
        &self.replicas
    }

    /// Registers a replica of `source` named `name` (nothing fetched yet).
    pub fn add_replica(&self, source: &str, name: &str) -> Result<()> {
        if !super::valid_name(name) {
            bail!("{name:?} is not a valid dataset name");
        }
        let source = ipns_path(source);
        let dir = self.replicas.dir.join(name);
        let mut sets = self.replicas.sets.lock();
        if sets.contains_key(name)
            || self.get(name).is_some()
            || self.damaged(name).is_some()
            || dir.join("HEAD").exists()
            || dir.join("PROFILE").exists()
        {
            bail!("a dataset or replica named {name:?} exists already");
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(&dir.join(FOLLOW_FILE), source.as_bytes(), true)
            .with_context(|| format!("writing {}", dir.display()))?;
        sets.insert(
            name.to_string(),
            Replica {
                source,
                head: None,
                root: None,
                version: 0,
            },
        );
        Ok(())
    }

    /// Stops following `name`: its versions' pins go (their blocks become cache, for `gc`),
    /// and so does `/datasets/NAME`.
    pub fn remove_replica(&self, blocks: &BlockService, name: &str) -> Result<u64> {
        let Some(r) = self.replicas.sets.lock().remove(name) else {
            bail!("no replica named {name:?}");
        };
        let mut released = 0;
        for (cid, _) in history(blocks, r.head).unwrap_or_default() {
            if blocks.unpin(&cid)? {
                released += 1;
            }
        }
        let dir = self.replicas.dir.join(name);
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        Ok(released)
    }

    /// Brings the replica `name` to the version its name points to now; `Some(version)` when
    /// a new one was taken.
    pub async fn update_replica(
        &self,
        blocks: &BlockService,
        names: &dyn NameLookup,
        name: &str,
    ) -> Result<Option<u64>> {
        let _one = self.replicas.updating.lock().await;
        let r = self
            .replicas
            .get(name)
            .ok_or_else(|| anyhow!("no replica named {name:?}"))?;
        let root = pins::resolve_target(blocks, Some(names), &r.source).await?;
        if r.root == Some(root) {
            return Ok(None);
        }
        let temp = blocks.temp_pin(FOLLOW_TEMP_OWNER)?;
        let taken = async {
            let progress = take_new_blocks(blocks, root, r.root, temp).await?;
            let commit = Commit {
                prev: r.head,
                root,
                seq: r.version + 1,
                time_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
                meta: BTreeMap::new(),
                attrs: None,
                message: Some(format!("seen at {}", r.source)),
            };
            let (commit_cid, bytes) = commit.encode()?;
            blocks.put_temp(temp, &[(commit_cid, bytes)])?;
            blocks.pin_with_temps(
                &commit_cid,
                &format!("dataset:{name}"),
                &mut std::iter::once(commit_cid),
                &[temp],
            )?;
            blocks.flush_deferred()?;
            if self.replicas.get(name).is_none() {
                // Unfollowed meanwhile: this version is nobody's.
                blocks.unpin(&commit_cid)?;
                bail!("the replica was unfollowed");
            }
            let dir = self.replicas.dir.join(name);
            write_atomic(
                &dir.join("HEAD"),
                format!("{commit_cid}\n0\n").as_bytes(),
                true,
            )?;
            Ok::<_, anyhow::Error>((commit_cid, commit.seq, progress))
        }
        .await;
        let (head, version, progress) = match taken {
            Ok(t) => t,
            Err(e) => {
                let _ = blocks.release_temp(temp);
                return Err(e);
            }
        };
        if let Some(r) = self.replicas.sets.lock().get_mut(name) {
            r.head = Some(head);
            r.root = Some(root);
            r.version = version;
        }
        tracing::info!(replica = %name, source = %r.source, version, %root, blocks = progress.blocks, fetched = progress.fetched, "replica: new version");
        Ok(Some(version))
    }

    /// `dataset follow` in a mount: registers the replica and takes its current version
    /// (a name that cannot be resolved or fetched now is not registered).
    pub async fn follow_now(
        &self,
        blocks: &BlockService,
        names: &dyn NameLookup,
        source: &str,
        name: Option<&str>,
    ) -> Result<String> {
        let name = name
            .map(String::from)
            .unwrap_or_else(|| default_name(source));
        self.add_replica(source, &name)?;
        match self.update_replica(blocks, names, &name).await {
            Ok(_) => {
                let r = self.replicas.get(&name).unwrap_or_else(|| Replica {
                    source: source.to_string(),
                    head: None,
                    root: None,
                    version: 0,
                });
                Ok(format!(
                    "{name}\tv{}\t{}\t{}\n",
                    r.version,
                    r.root.map(|c| c.to_string()).unwrap_or_default(),
                    r.source
                ))
            }
            Err(e) => {
                if let Err(e2) = self.remove_replica(blocks, &name) {
                    tracing::warn!(replica = %name, "cannot remove the replica again: {e2:#}");
                }
                Err(e.context(format!("cannot follow {source}")))
            }
        }
    }

    /// The follower: updates every replica each second until the datasets go away.
    pub fn start_follower(
        self: &Arc<Self>,
        blocks: Arc<BlockService>,
        names: Arc<dyn NameLookup>,
        rt: &tokio::runtime::Handle,
    ) {
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            let mut last_error: BTreeMap<String, String> = BTreeMap::new();
            loop {
                tokio::time::sleep(POLL).await;
                let Some(sets) = weak.upgrade() else { return };
                for name in sets.replicas.names() {
                    match sets.update_replica(&blocks, &*names, &name).await {
                        Ok(_) => {
                            last_error.remove(&name);
                        }
                        Err(e) => {
                            let text = format!("{e:#}");
                            // Said once per cause, not every second.
                            if last_error.get(&name) != Some(&text) {
                                tracing::warn!(replica = %name, "cannot update the replica (it keeps its last version): {text}");
                                last_error.insert(name, text);
                            }
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_replicas() {
        assert_eq!(default_name("/ipns/k51abc"), "k51abc");
        assert_eq!(default_name("k51abc"), "k51abc");
        assert_eq!(default_name("example.org/sub"), "example.org");
        assert_eq!(ipns_path("example.org"), "/ipns/example.org");
        assert_eq!(ipns_path("/ipns/k51abc"), "/ipns/k51abc");
    }
}
