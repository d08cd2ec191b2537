//! Positional reads of UnixFS files, planned by the ipld reader's file-range planner
//! ([`FileRange`]).
//!
//! A file is a tree: each node holds some bytes of its own first, then children whose byte
//! counts come from `blocksizes`. The planner walks from the root down only the children that
//! overlap the requested range, taking interior nodes from the tree's cache of decoded nodes
//! (and putting there the ones it decodes); the leaves it names are then read, each distinct
//! leaf once and in parallel, and the slices stitched together. Every node's size is checked
//! against what its parent declared, and every leaf's length, so a lying DAG gives EIO, never
//! short or shifted data.
//!
//! Read-ahead (what to fetch before the reader asks) is its own piece: [`super::prefetch`].

use std::collections::{HashMap, HashSet};

use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures::stream::{self, StreamExt};
use ipfs_mount_ipld::reader::file::{FileRange, Piece};
use ipfs_mount_ipld::reader::{self, Limits};

use super::account::{charged_get, Account, Charged};
use super::error::{Error, Result};
use super::{Nodes, Tree};
use crate::blocks::RangeFetch;

/// Leaves (and nodes) fetched at once for a single read.
const READ_PARALLELISM: usize = 16;
/// No leaf holds more (it is bitswap's block limit): a child whose `blocksizes` entry says
/// more is an interior node.
const MAX_LEAF_BYTES: u64 = 2 << 20;
/// Bytes a range request may bring beyond the range itself: the leaves at its ends and the
/// interior nodes on the way.
const RANGE_SLACK: u64 = (1 << 20) + (64 << 10);

impl Tree {
    /// Bytes `[from, to)` if every block needed is local; `None` otherwise.
    pub(super) fn read_range_local(
        &self,
        root: &Cid,
        file_size: u64,
        from: u64,
        to: u64,
    ) -> Option<Result<Bytes>> {
        let cache = Nodes(&self.file_nodes);
        let planner =
            FileRange::new(*root, file_size, from, to, Limits::default()).with_cache(&cache);
        let pieces = match reader::drive::collect_local(planner, self.blocks.as_ref()) {
            Ok(Some(p)) => p,
            Ok(None) => return None,
            Err(e) => return Some(Err(e.into())),
        };
        // Each distinct leaf is read once, however many pieces name it.
        let mut leaves: HashMap<Cid, Bytes> = HashMap::new();
        let mut parts = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match piece {
                Piece::Inline(b) => parts.push(b),
                Piece::Leaf {
                    cid,
                    size,
                    start,
                    end,
                } => {
                    let data = match leaves.get(&cid) {
                        Some(d) => d.clone(),
                        None => match self.blocks.get_local(&cid) {
                            Ok(Some(d)) => {
                                leaves.insert(cid, d.clone());
                                d
                            }
                            Ok(None) => return None,
                            Err(e) => return Some(Err(e.into())),
                        },
                    };
                    match check_leaf(&cid, data, size) {
                        Ok(data) => parts.push(data.slice(start as usize..end as usize)),
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
        }
        Some(assemble(root, parts, to - from))
    }

    /// Bytes `[from, to)` of a file; `to` is already clamped to the file size. The planner
    /// fetches the nodes on the way (up to [`READ_PARALLELISM`] at once), then the leaves are
    /// fetched in parallel. What is fetched is charged to `account`.
    pub(super) async fn read_range(
        &self,
        root: &Cid,
        file_size: u64,
        from: u64,
        to: u64,
        account: &Account,
    ) -> Result<Bytes> {
        if let Some(range) = self.cold_range(root, from, to) {
            // One round trip for the interior nodes and leaves of the range, instead of one
            // per level; bounded in time, since the block-wise path below hedges sources.
            let limit = std::time::Duration::from_secs(2)
                + std::time::Duration::from_millis((to - from) / (8 << 10));
            let fetch = self
                .blocks
                .fetch_range(root, &range, Some(account.fetched_counter()));
            match tokio::time::timeout(limit, fetch).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::debug!(%root, from, to, "range request failed: {e}"),
                Err(_) => tracing::debug!(%root, from, to, "range request too slow"),
            }
        }
        let blocks = Charged {
            blocks: self.blocks.as_ref(),
            account,
        };
        let pieces = {
            let cache = Nodes(&self.file_nodes);
            let limits = Limits::default().with_window(READ_PARALLELISM, 32 << 20);
            let planner = FileRange::new(*root, file_size, from, to, limits).with_cache(&cache);
            reader::drive::collect(planner, &blocks).await?
        };
        // Each distinct leaf is fetched once (in parallel), however many pieces name it.
        let mut distinct = HashSet::new();
        let wanted: Vec<Cid> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Leaf { cid, .. } if distinct.insert(*cid) => Some(*cid),
                _ => None,
            })
            .collect();
        let fetched: Vec<Result<(Cid, Bytes)>> = stream::iter(wanted)
            .map(|cid| async move { Ok((cid, charged_get(&self.blocks, account, cid).await?)) })
            .buffer_unordered(READ_PARALLELISM)
            .collect()
            .await;
        let leaves = fetched
            .into_iter()
            .collect::<Result<HashMap<Cid, Bytes>>>()?;
        let mut parts = Vec::with_capacity(pieces.len());
        for piece in pieces {
            match piece {
                Piece::Inline(b) => parts.push(b),
                Piece::Leaf {
                    cid,
                    size,
                    start,
                    end,
                } => {
                    let data = leaves.get(&cid).cloned().unwrap_or_default();
                    let data = check_leaf(&cid, data, size)?;
                    parts.push(data.slice(start as usize..end as usize));
                }
            }
        }
        assemble(root, parts, to - from)
    }
}

impl Tree {
    /// A range request for a read of `[from, to)` of the file `root` that would otherwise
    /// fetch level by level: the root's children that overlap the range include an interior
    /// node we do not have. `None` when the root is not at hand, or one level of fetches
    /// (the leaves, in parallel) is all the read needs.
    pub(super) fn cold_range(&self, root: &Cid, from: u64, to: u64) -> Option<RangeFetch> {
        if to <= from || self.blocks.is_offline() {
            return None;
        }
        let node = self.file_nodes.get(root)?;
        let mut offset = node.inline.len() as u64;
        let mut expected_first = HashSet::new();
        let mut cold_interior = false;
        for (cid, size) in &node.children {
            let (start, end) = (offset, offset.saturating_add(*size));
            offset = end;
            if end <= from {
                continue;
            }
            if start >= to {
                break;
            }
            expected_first.insert(*cid);
            cold_interior |= *size > MAX_LEAF_BYTES
                && self.file_nodes.get(cid).is_none()
                && !self.blocks.has_local(cid);
        }
        cold_interior.then(|| RangeFetch {
            first_byte: from,
            last_byte: to - 1,
            expected_first,
            budget: (to - from) + RANGE_SLACK,
        })
    }
}

/// A raw leaf must hold exactly the bytes its parent declared.
fn check_leaf(cid: &Cid, data: Bytes, declared: u64) -> Result<Bytes> {
    if let Err(e) = reader::check_leaf(cid, &data, declared) {
        tracing::warn!(%cid, "{e}");
        return Err(e.into());
    }
    Ok(data)
}

/// Joins the parts of a read (no copy when there is one part) and checks the total length.
fn assemble(root: &Cid, parts: Vec<Bytes>, expected: u64) -> Result<Bytes> {
    let out = if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        let mut out = BytesMut::with_capacity(expected as usize);
        for p in &parts {
            out.extend_from_slice(p);
        }
        out.freeze()
    };
    if out.len() as u64 != expected {
        return Err(Error::Corrupt {
            cid: *root,
            cause: format!("read of {expected} bytes assembled {} bytes", out.len()),
        });
    }
    Ok(out)
}
