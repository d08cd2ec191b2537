//! `ipfs-mount dataset prune`: bounds a dataset's history.
//!
//! Each version's pin (root: its commit CID, label `dataset:<name>`) lists the blocks that
//! version brought: its commit record and the blocks no older version had; what it shares is
//! pinned by the older versions. Pruning releases the trees of the versions it drops while
//! keeping every kept version whole:
//!
//! 1. the DAGs of the kept versions are walked locally, oldest first, each block once (a
//!    subtree already seen in an older kept version is not walked again), and every kept
//!    version is re-pinned with its commit and the blocks no older *kept* version has: so the
//!    kept pins together hold every block of every kept version, with no dropped version's
//!    help;
//! 2. then each dropped version is re-pinned with its commit record alone, under the label
//!    `dataset-pruned:<name>`: the chain of commits stays complete and verifiable
//!    (`dataset log` reads it and marks these versions pruned), and their trees' blocks that no
//!    kept version has become ordinary cache, for `gc` or eviction to take.
//!
//! A replica (`follow.rs`) is pruned the same way: its versions' pins have the same labels.
//!
//! Step 1 only adds protection and runs before step 2 takes any away, so a crash between
//! them loses nothing. The head is always kept. Pending changes are not touched: they become a
//! version on top of the head as usual, pinned on top of the kept versions.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use cid::Cid;
use ipfs_mount_ipld::{codec, dagpb};
use ipld_core::ipld::Ipld;

use super::{history, Commit, Datasets};
use crate::blocks::BlockService;

/// Which versions a prune keeps (the head always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The newest N.
    Last(u64),
    /// Those committed within this long before now.
    Within(Duration),
}

/// The label of a pruned version's pin (its commit record alone).
pub fn pruned_label(dataset: &str) -> String {
    format!("dataset-pruned:{dataset}")
}

/// The label of a kept version's pin.
fn version_label(dataset: &str) -> String {
    format!("dataset:{dataset}")
}

/// The commit CIDs of a dataset's pruned versions.
pub fn pruned_versions(blocks: &BlockService, dataset: &str) -> Result<HashSet<Cid>> {
    let label = pruned_label(dataset);
    Ok(blocks
        .pins()?
        .into_iter()
        .filter(|p| p.label == label)
        .map(|p| p.root)
        .collect())
}

/// What a prune did.
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    /// Versions released now: (seq, commit).
    pub released: Vec<(u64, Cid)>,
    /// Versions kept.
    pub kept: usize,
}

/// Walks the DAG below `root` through local blocks, skipping what `seen` has (a block seen
/// was walked with its whole subtree); adds and returns the blocks found new. Raw leaves are
/// never read. A block that is not local is an error (a kept version must be whole).
pub(super) fn walk_new(
    blocks: &BlockService,
    root: Cid,
    seen: &mut HashSet<Cid>,
) -> Result<Vec<Cid>> {
    let mut found = Vec::new();
    let mut stack = vec![root];
    while let Some(cid) = stack.pop() {
        if !seen.insert(cid) {
            continue;
        }
        found.push(cid);
        if cid.codec() == codec::RAW || ipfs_mount_ipld::cids::identity_data(&cid).is_some() {
            continue;
        }
        let block = blocks
            .get_local(&cid)?
            .ok_or_else(|| anyhow!("block {cid} of a kept version is not in the store"))?;
        stack.extend(block_links(&cid, &block)?);
    }
    Ok(found)
}

/// The links of a block of a dataset tree (dag-pb, dag-cbor; raw leaves have none).
pub(super) fn block_links(cid: &Cid, block: &[u8]) -> Result<Vec<Cid>> {
    let mut out = Vec::new();
    match cid.codec() {
        codec::RAW => {}
        codec::DAG_PB => {
            let node = dagpb::decode(block).with_context(|| format!("decoding {cid}"))?;
            out.extend(node.links.iter().map(|l| l.cid));
        }
        codec::DAG_CBOR => {
            let ipld: Ipld =
                serde_ipld_dagcbor::from_slice(block).with_context(|| format!("decoding {cid}"))?;
            links_of(&ipld, &mut out, 0);
        }
        other => bail!("block {cid} has codec {other:#x}, which a dataset tree never holds"),
    }
    Ok(out)
}

fn links_of(ipld: &Ipld, out: &mut Vec<Cid>, depth: u32) {
    if depth > 4096 {
        return;
    }
    match ipld {
        Ipld::Link(c) => out.push(*c),
        Ipld::List(l) => l.iter().for_each(|i| links_of(i, out, depth + 1)),
        Ipld::Map(m) => m.values().for_each(|v| links_of(v, out, depth + 1)),
        _ => {}
    }
}

/// Which of `chain` (newest first) `keep` keeps: a prefix, the head at least.
fn kept_count(chain: &[(Cid, Commit)], keep: Keep, now: SystemTime) -> usize {
    let n = match keep {
        Keep::Last(n) => (n as usize).min(chain.len()),
        Keep::Within(d) => {
            let since = now
                .checked_sub(d)
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|t| t.as_millis() as i64)
                .unwrap_or(i64::MIN);
            chain.iter().take_while(|(_, c)| c.time_ms >= since).count()
        }
    };
    n.max(1).min(chain.len())
}

/// Prunes `name` as described in the [module docs](self).
pub fn prune(sets: &Datasets, blocks: &BlockService, name: &str, keep: Keep) -> Result<Pruned> {
    // A replica's versions are pinned the same way (`follow.rs`): pruned the same way too.
    let head = match (sets.get(name), sets.replicas().get(name)) {
        (Some(ds), _) => ds.head(),
        (None, Some(replica)) => replica.head,
        (None, None) => bail!("no dataset named {name:?}"),
    };
    let chain = history(blocks, head)?;
    if chain.is_empty() {
        return Ok(Pruned::default());
    }
    let kept = kept_count(&chain, keep, SystemTime::now());
    let already = pruned_versions(blocks, name)?;
    let dropped: Vec<&(Cid, Commit)> = chain[kept..]
        .iter()
        .filter(|(cid, _)| !already.contains(cid))
        .collect();
    if dropped.is_empty() {
        return Ok(Pruned {
            released: Vec::new(),
            kept,
        });
    }
    // Step 1: every kept version whole on its own, computed before anything changes.
    let mut seen = HashSet::new();
    let mut pins = Vec::with_capacity(kept);
    // A version pruned before stays pruned (its tree may be gone) even when `keep` would keep it.
    for (commit_cid, commit) in chain[..kept].iter().rev() {
        if already.contains(commit_cid) {
            continue;
        }
        let mut set = walk_new(blocks, commit.root, &mut seen)
            .with_context(|| format!("walking version {} of {name}", commit.seq))?;
        // The version's modes and mtimes (`attrs.rs`) are part of it too.
        if let Some(attrs) = commit.attrs {
            set.extend(walk_new(blocks, attrs, &mut seen).with_context(|| {
                format!("walking the attributes of version {} of {name}", commit.seq)
            })?);
        }
        set.push(*commit_cid);
        pins.push((*commit_cid, set));
    }
    let label = version_label(name);
    for (commit_cid, set) in pins {
        blocks
            .pin(&commit_cid, &label, &mut set.into_iter())
            .with_context(|| format!("re-pinning version {commit_cid} of {name}"))?;
    }
    // Step 2: the dropped versions keep their commit records only.
    let pruned = pruned_label(name);
    let mut released = Vec::new();
    for (commit_cid, commit) in dropped {
        blocks
            .pin(commit_cid, &pruned, &mut std::iter::once(*commit_cid))
            .with_context(|| format!("releasing version {commit_cid} of {name}"))?;
        released.push((commit.seq, *commit_cid));
    }
    tracing::info!(dataset = %name, kept, released = released.len(), "pruned");
    Ok(Pruned { released, kept })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn chain(times: &[i64]) -> Vec<(Cid, Commit)> {
        let root = ipfs_mount_ipld::cids::compute(
            cid::Version::V1,
            codec::RAW,
            ipfs_mount_ipld::mh::SHA2_256,
            b"x",
        )
        .unwrap();
        times
            .iter()
            .enumerate()
            .map(|(i, t)| {
                (
                    root,
                    Commit {
                        prev: None,
                        root,
                        seq: (times.len() - i) as u64,
                        time_ms: *t,
                        meta: BTreeMap::new(),
                        attrs: None,
                        message: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_head_is_always_kept() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1000);
        let c = chain(&[999_000, 990_000, 900_000, 10_000]);
        assert_eq!(kept_count(&c, Keep::Last(0), now), 1);
        assert_eq!(kept_count(&c, Keep::Last(2), now), 2);
        assert_eq!(kept_count(&c, Keep::Last(9), now), 4);
        assert_eq!(kept_count(&c, Keep::Within(Duration::from_secs(5)), now), 1);
        assert_eq!(
            kept_count(&c, Keep::Within(Duration::from_secs(10)), now),
            2
        );
        assert_eq!(
            kept_count(&c, Keep::Within(Duration::from_secs(100)), now),
            3
        );
        assert_eq!(kept_count(&c, Keep::Within(Duration::ZERO), now), 1);
        assert_eq!(
            kept_count(&chain(&[1]), Keep::Within(Duration::ZERO), now),
            1
        );
    }
}
