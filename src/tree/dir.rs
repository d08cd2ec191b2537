//! Directory listings, from the directory's own blocks only.
//!
//! A plain UnixFS directory is one block. A HAMT-sharded directory is a tree of shards: for a
//! listing all shards are needed, so they are first asked for in one CAR request
//! (`dag-scope=entity` is exactly "the blocks needed to enumerate the directory") and any still
//! missing are then fetched by the listing planner ([`ipfs_mount_ipld::reader::listing`]), in
//! parallel, each distinct shard once. A lookup hashes the name and walks only the shards on
//! its path.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use cid::Cid;
use ipfs_mount_fetch::DagScope;
use ipfs_mount_ipld::hamt::{self, HamtLink, HamtNode, Step};
use ipfs_mount_ipld::reader::listing::{Hidden, Listed};
use ipfs_mount_ipld::reader::{self, Limits};
use ipfs_mount_ipld::unixfs::{self, DirNode, Node};

use super::error::{Error, Result};
use crate::blocks::BlockService;

/// Deepest HAMT we walk: 64 hash bits / 1 bit per level is the theoretical maximum.
const MAX_HAMT_DEPTH: u32 = 64;

#[derive(Debug, Clone)]
pub struct ListEntry {
    pub name: Vec<u8>,
    pub cid: Cid,
    /// The link's cumulative DAG size; for a raw block it is the file size.
    pub tsize: Option<u64>,
}

/// The entries of a directory, in the order the directory stores them, with unsafe names
/// (`.`, `..`, containing `/` or NUL) and duplicates removed.
#[derive(Debug, Default)]
pub struct Listing {
    entries: Vec<ListEntry>,
    by_name: HashMap<Vec<u8>, usize>,
}

impl Listing {
    fn push(&mut self, dir: &Cid, name: Vec<u8>, cid: Cid, tsize: Option<u64>) {
        if !unixfs::is_safe_name(&name) {
            tracing::warn!(%dir, name = %String::from_utf8_lossy(&name), "hiding directory entry with an unsafe name");
            return;
        }
        if self.by_name.contains_key(&name) {
            tracing::warn!(%dir, name = %String::from_utf8_lossy(&name), "hiding duplicate directory entry");
            return;
        }
        self.by_name.insert(name.clone(), self.entries.len());
        self.entries.push(ListEntry { name, cid, tsize });
    }

    pub fn from_directory(cid: &Cid, dir: DirNode) -> Self {
        let mut listing = Listing::default();
        for e in dir.entries {
            listing.push(cid, e.name, e.cid, e.tsize);
        }
        listing
    }

    pub fn entries(&self) -> &[ListEntry] {
        &self.entries
    }

    pub fn find(&self, name: &[u8]) -> Option<&ListEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }
}

async fn shard(blocks: &Arc<BlockService>, cid: &Cid) -> Result<HamtNode> {
    let block = blocks.get(cid).await?;
    match unixfs::decode_node_shared(cid, &block).map_err(|e| Error::corrupt(cid, e))? {
        Node::HamtShard(h) => Ok(h),
        _ => Err(Error::Corrupt {
            cid: *cid,
            cause: "HAMT link points to a block that is not a shard".into(),
        }),
    }
}

/// Looks `name` up in a sharded directory, fetching only the shards on the name's hash path.
pub async fn hamt_find(
    blocks: &Arc<BlockService>,
    dir: &Cid,
    root: &HamtNode,
    name: &[u8],
) -> Result<Option<(Cid, Option<u64>)>> {
    let mut current: Option<HamtNode> = None;
    for depth in 0..MAX_HAMT_DEPTH {
        let node = current.as_ref().unwrap_or(root);
        match hamt::lookup_step(node, name, depth).map_err(|e| Error::corrupt(dir, e))? {
            Step::Found { cid, tsize } => return Ok(Some((cid, tsize))),
            Step::NotFound => return Ok(None),
            Step::Descend { cid } => current = Some(shard(blocks, &cid).await?),
        }
    }
    Err(Error::Corrupt {
        cid: *dir,
        cause: "HAMT deeper than 64 levels".into(),
    })
}

/// All entries of a sharded directory.
pub async fn hamt_listing(
    blocks: &Arc<BlockService>,
    dir: &Cid,
    root: &HamtNode,
) -> Result<Listing> {
    let has_subshards = root
        .links
        .iter()
        .any(|l| matches!(l, HamtLink::Shard { .. }));
    if has_subshards && !blocks.is_offline() {
        let missing = root.links.iter().any(|l| match l {
            HamtLink::Shard { cid, .. } => !blocks.has_local(cid),
            _ => false,
        });
        if missing {
            // One request for the whole skeleton; what it misses is fetched below.
            if let Err(e) = blocks
                .fetch_dag(dir, DagScope::Entity { bytes: None })
                .await
            {
                tracing::debug!(%dir, "bulk fetch of HAMT shards failed, fetching them one by one: {e}");
            }
        }
    }
    // The planner asks for each distinct shard once (up to 32 in flight) and lists a shard
    // reached by several links once, so a DAG whose levels all point at one child costs its
    // distinct blocks; entries come out in the directory's own order.
    let mut planner =
        reader::listing::Listing::from_hamt_root(*dir, root.clone(), Limits::default());
    let mut listing = Listing::default();
    reader::drive::run(&mut planner, blocks.as_ref(), |item| {
        match item {
            Listed::Entry(e) => listing.push(dir, e.name, e.cid, e.tsize),
            Listed::Hidden { name, why } => tracing::warn!(
                %dir,
                name = %String::from_utf8_lossy(&name),
                "hiding directory entry: {}",
                match why {
                    Hidden::UnsafeName => "unsafe name",
                    Hidden::Duplicate => "duplicate name",
                }
            ),
        }
        ControlFlow::Continue(())
    })
    .await?;
    Ok(listing)
}
