//! Directory listings, from the directory's own blocks only.
//!
//! A plain UnixFS directory is one block. A HAMT-sharded directory is a tree of shards: for a
//! listing all shards are needed, so they are first asked for in one CAR request
//! (`dag-scope=entity` is exactly "the blocks needed to enumerate the directory") and any still
//! missing are then fetched by the listing planner ([`ipfs_mount_ipld::reader::listing`]), in
//! parallel, each distinct shard once. A lookup hashes the name and walks only the shards on
//! its path ([`ipfs_mount_ipld::reader::path`]).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use cid::Cid;
use ipfs_mount_fetch::DagScope;
use ipfs_mount_ipld::hamt::{HamtLink, HamtNode};
use ipfs_mount_ipld::reader::listing::{Hidden, Listed};
use ipfs_mount_ipld::reader::path::{PathWalk, Resolved};
use ipfs_mount_ipld::reader::{self, Limits, Planner, Step};
use ipfs_mount_ipld::unixfs::DirNode;

use super::error::Result;
use crate::blocks::BlockService;

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
    /// Adds what the listing planner found (which already hid unsafe and repeated names).
    fn add(&mut self, dir: &Cid, item: Listed) {
        match item {
            Listed::Entry(e) => {
                self.by_name.insert(e.name.clone(), self.entries.len());
                self.entries.push(ListEntry {
                    name: e.name,
                    cid: e.cid,
                    tsize: e.tsize,
                });
            }
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
    }

    /// The entries of a plain directory, already decoded (no block is needed).
    pub fn from_directory(cid: &Cid, dir: DirNode) -> Self {
        let mut listing = Listing::default();
        let mut planner = reader::listing::Listing::from_directory(*cid, dir, Limits::default());
        while let Ok(Step::Item(item)) = planner.next() {
            listing.add(cid, item);
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

/// Looks `name` up in a sharded directory, fetching only the shards on the name's hash path
/// (through the reader's path planner, which bounds the depth and checks each shard).
pub async fn hamt_find(
    blocks: &Arc<BlockService>,
    dir: &Cid,
    root: &HamtNode,
    name: &[u8],
) -> Result<Option<(Cid, Option<u64>)>> {
    let planner = PathWalk::from_hamt_root(*dir, root, vec![name.to_vec()], Limits::default())?;
    let found = reader::drive::collect(planner, blocks.as_ref()).await?;
    Ok(match found.into_iter().next() {
        Some(Resolved::Found { cid, tsize }) => Some((cid, tsize)),
        _ => None,
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
        listing.add(dir, item);
        ControlFlow::Continue(())
    })
    .await?;
    Ok(listing)
}
