//! Positional reads of UnixFS files, and the sequential prefetcher.
//!
//! A file is a tree: each node holds some bytes of its own first, then children whose byte
//! counts come from `blocksizes`. A read walks from the root down only the children that
//! overlap the requested range (interior nodes are cached decoded), then fetches the leaves it
//! needs in parallel and stitches the slices together. Every leaf's length is checked against
//! what its parent declared, so a lying DAG gives EIO, never short or shifted data.
//!
//! A DAG may reach one block through many links (a file of repeated chunks, or a hostile
//! DAG whose levels all link to one child): a read fetches and checks each distinct leaf once,
//! a missing node is asked for once, and the prefetcher's walk visits a node once per window
//! of it, so work follows the distinct blocks and the bytes read, not the number of paths.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use cid::Cid;
use futures::stream::{self, StreamExt};
use ipfs_mount_ipld::codec;
use ipfs_mount_ipld::unixfs::{self, FileNode, Node};

use super::error::{Error, Result};
use super::Tree;

/// A part of the requested range, in file order.
enum Piece {
    /// Bytes held inside an interior node.
    Inline(Bytes),
    /// `[start, end)` of a leaf block whose whole content is `size` bytes.
    Leaf {
        cid: Cid,
        size: u64,
        start: u64,
        end: u64,
    },
}

/// How deep a file tree may be before we call it malformed.
const MAX_FILE_DEPTH: usize = 64;
/// Leaves fetched at once for a single read.
const READ_PARALLELISM: usize = 16;
/// Leaves fetched at once by the prefetcher.
const PREFETCH_PARALLELISM: usize = 8;

/// Nodes the planner needs that are not local yet.
struct Missing(Vec<Cid>);

impl Tree {
    /// A decoded file node from the cache or from a local block; `Ok(None)` if its block is not
    /// local. Interior nodes are cached decoded; leaves are decoded on demand (zero-copy).
    fn file_node_local(&self, cid: &Cid) -> Result<Option<Arc<FileNode>>> {
        if let Some(n) = self.file_nodes.get(cid) {
            return Ok(Some(n));
        }
        let Some(block) = self.blocks.get_local(cid)? else {
            return Ok(None);
        };
        let node = Arc::new(decode_file(cid, &block)?);
        if !node.children.is_empty() {
            self.file_nodes.insert(*cid, node.clone());
        }
        Ok(Some(node))
    }

    /// Plans `[from, to)` of the file rooted at `root` from local nodes only; if that cannot be
    /// completed, names every node reachable so far that has to be fetched.
    fn plan_local(
        &self,
        root: &Cid,
        file_size: u64,
        from: u64,
        to: u64,
    ) -> Result<Result<Vec<Piece>, Missing>> {
        let mut pieces = Vec::new();
        let mut missing = Vec::new();
        let mut missing_set = HashSet::new();
        // Stack of (node cid, byte offset of the node in the file, declared size, depth),
        // pushed in reverse so that pieces come out in file order.
        let mut stack: Vec<(Cid, u64, u64, usize)> = vec![(*root, 0, file_size, 0)];
        while let Some((cid, node_start, declared, depth)) = stack.pop() {
            if depth > MAX_FILE_DEPTH {
                return Err(Error::Corrupt {
                    cid: *root,
                    cause: "file tree deeper than 64 levels".into(),
                });
            }
            if cid.codec() == codec::RAW {
                let start = from.max(node_start) - node_start;
                let end = to.min(node_start + declared) - node_start;
                pieces.push(Piece::Leaf {
                    cid,
                    size: declared,
                    start,
                    end,
                });
                continue;
            }
            let Some(node) = self.file_node_local(&cid)? else {
                if missing_set.insert(cid) {
                    missing.push(cid);
                }
                continue;
            };
            if node.size != declared {
                return Err(Error::Corrupt {
                    cid,
                    cause: format!(
                        "node holds {} bytes but its parent declared {declared}",
                        node.size
                    ),
                });
            }
            let inline_end = node_start + node.inline.len() as u64;
            if from < inline_end && to > node_start {
                let s = (from.max(node_start) - node_start) as usize;
                let e = (to.min(inline_end) - node_start) as usize;
                pieces.push(Piece::Inline(node.inline.slice(s..e)));
            }
            let mut child_start = inline_end;
            let mut overlapping = Vec::new();
            for (child, child_size) in &node.children {
                if child_start >= to {
                    break;
                }
                let child_end = child_start + child_size;
                if child_end > from && *child_size > 0 {
                    overlapping.push((*child, child_start, *child_size, depth + 1));
                }
                child_start = child_end;
            }
            stack.extend(overlapping.into_iter().rev());
        }
        if !missing.is_empty() {
            return Ok(Err(Missing(missing)));
        }
        Ok(Ok(pieces))
    }

    /// Plans a read, fetching the file nodes on its path (interior nodes are few and cached).
    async fn plan(&self, root: &Cid, file_size: u64, from: u64, to: u64) -> Result<Vec<Piece>> {
        loop {
            match self.plan_local(root, file_size, from, to)? {
                Ok(pieces) => return Ok(pieces),
                Err(Missing(cids)) => {
                    let fetches: Vec<_> =
                        cids.into_iter().map(|c| self.blocks.get_owned(c)).collect();
                    let results: Vec<_> = stream::iter(fetches)
                        .buffer_unordered(READ_PARALLELISM)
                        .collect()
                        .await;
                    for r in results {
                        r?;
                    }
                }
            }
        }
    }

    /// Bytes `[from, to)` if every block needed is local; `None` otherwise.
    pub(super) fn read_range_local(
        &self,
        root: &Cid,
        file_size: u64,
        from: u64,
        to: u64,
    ) -> Option<Result<Bytes>> {
        let pieces = match self.plan_local(root, file_size, from, to) {
            Err(e) => return Some(Err(e)),
            Ok(Err(Missing(_))) => return None,
            Ok(Ok(p)) => p,
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

    /// Bytes `[from, to)` of a file; `to` is already clamped to the file size.
    pub(super) async fn read_range(
        &self,
        root: &Cid,
        file_size: u64,
        from: u64,
        to: u64,
    ) -> Result<Bytes> {
        let pieces = self.plan(root, file_size, from, to).await?;
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
            .map(|cid| async move { Ok((cid, self.blocks.get(&cid).await?)) })
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

    /// Brings the blocks of `[from, to)` into the local store ahead of the reader. Only what is
    /// missing is fetched: local leaves are not even read (the page cache already holds them).
    pub(super) async fn prefetch(self: Arc<Self>, root: &Cid, file_size: u64, from: u64, to: u64) {
        let to = to.min(file_size);
        if from >= to {
            return;
        }
        // Each round fetches the missing nodes one level further down.
        for _ in 0..MAX_FILE_DEPTH {
            let missing = match self.missing_in_range(root, from, to) {
                Ok(m) if m.is_empty() => return,
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(%root, "prefetch stopped: {e}");
                    return;
                }
            };
            let fetches: Vec<_> = missing
                .into_iter()
                .map(|c| self.fetch_file_node(c))
                .collect();
            let results: Vec<Result<()>> = stream::iter(fetches)
                .buffer_unordered(PREFETCH_PARALLELISM)
                .collect()
                .await;
            if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
                tracing::debug!(%root, "prefetch stopped: {e}");
                return;
            }
        }
    }

    /// Fetches a node; interior nodes are decoded into the cache so the next round descends.
    async fn fetch_file_node(&self, cid: Cid) -> Result<()> {
        self.blocks.get(&cid).await?;
        if cid.codec() != codec::RAW {
            self.file_node_local(&cid)?;
        }
        Ok(())
    }

    /// The nodes of `[from, to)` that are not local, walking only cached interior nodes. A local
    /// node that is not a cached interior node is taken for a leaf and not read.
    ///
    /// Each distinct node is named once, and a node reached again over the same part of itself
    /// (its whole, for every node strictly inside the range) is not walked again: a file whose
    /// leaves are all one block costs its distinct nodes here, not its size.
    fn missing_in_range(&self, root: &Cid, from: u64, to: u64) -> Result<Vec<Cid>> {
        let mut missing = Vec::new();
        let mut named: HashSet<Cid> = HashSet::new();
        // (node, part of it in the range): walked already
        let mut walked: HashSet<(Cid, u64, u64)> = HashSet::new();
        let mut stack: Vec<(Cid, u64, u64, usize)> = vec![(*root, 0, u64::MAX, 0)];
        while let Some((cid, node_start, declared, depth)) = stack.pop() {
            if depth > MAX_FILE_DEPTH {
                return Err(Error::Corrupt {
                    cid: *root,
                    cause: "file tree deeper than 64 levels".into(),
                });
            }
            let window = (
                from.saturating_sub(node_start),
                to.min(node_start.saturating_add(declared)) - node_start,
            );
            if !walked.insert((cid, window.0, window.1)) {
                continue;
            }
            let node = match self.file_nodes.get(&cid) {
                Some(n) => n,
                None if !self.blocks.has_local(&cid) => {
                    if named.insert(cid) {
                        missing.push(cid);
                    }
                    continue;
                }
                None if cid == *root => match self.file_node_local(&cid)? {
                    Some(n) => n,
                    None => continue,
                },
                None => continue,
            };
            let mut child_start = node_start + node.inline.len() as u64;
            for (child, child_size) in &node.children {
                if child_start >= to {
                    break;
                }
                if child_start + child_size > from && *child_size > 0 {
                    stack.push((*child, child_start, *child_size, depth + 1));
                }
                child_start += child_size;
            }
        }
        Ok(missing)
    }
}

fn decode_file(cid: &Cid, block: &Bytes) -> Result<FileNode> {
    match unixfs::decode_node_shared(cid, block).map_err(|e| Error::corrupt(cid, e))? {
        Node::File(f) => Ok(f),
        _ => Err(Error::Corrupt {
            cid: *cid,
            cause: "file links to a node that is not file data".into(),
        }),
    }
}

/// A raw leaf must hold exactly the bytes its parent declared.
fn check_leaf(cid: &Cid, data: Bytes, declared: u64) -> Result<Bytes> {
    if data.len() as u64 != declared {
        tracing::warn!(%cid, "leaf holds {} bytes but its parent declared {declared}", data.len());
        return Err(Error::Corrupt {
            cid: *cid,
            cause: format!(
                "leaf holds {} bytes but its parent declared {declared}",
                data.len()
            ),
        });
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

/// Adaptive read-ahead for one open file, in the style of mountpoint-s3: the window starts
/// small, doubles while the reader stays sequential (small jumps tolerated), and resets when it
/// seeks away.
#[derive(Debug)]
pub struct Prefetcher {
    next_expected: u64,
    window: u64,
    max_window: u64,
    /// Everything before this offset has already been asked for.
    requested_to: u64,
    /// Bytes read in the current sequential run, and where it began.
    sequential_run: u64,
    run_start: u64,
    /// A CAR stream of the rest of the file is running (or ran); block-wise prefetch stops.
    streaming: bool,
}

/// What the prefetcher wants done after a read.
#[derive(Debug, PartialEq, Eq)]
pub enum Prefetch {
    Nothing,
    /// Fetch the leaves of `[from, to)` block by block.
    Blocks(u64, u64),
    /// Stream the rest of the file, from this offset, in one CAR request.
    Stream(u64),
}

/// A reader that has read this much in order from its start gets the rest of the file in one
/// stream: one request instead of one per block, which is what makes cold reads run near the
/// speed of a plain download. Closing the file stops the stream, so `head` costs little.
pub const STREAM_AFTER: u64 = 128 << 10;
/// The same for a run that began after a seek (a Parquet reader jumping between column chunks
/// should not pull the whole file).
pub const STREAM_AFTER_SEEK: u64 = 16 << 20;

const INITIAL_WINDOW: u64 = 1 << 20;
/// Forward or backward distance still counted as sequential (readers with several threads, or
/// the kernel's readahead, reorder nearby requests).
const SEQUENTIAL_SLACK: u64 = 2 << 20;

impl Prefetcher {
    pub fn new(max_window: u64) -> Self {
        Prefetcher {
            next_expected: 0,
            window: INITIAL_WINDOW,
            max_window: max_window.max(INITIAL_WINDOW),
            requested_to: 0,
            sequential_run: 0,
            run_start: 0,
            streaming: false,
        }
    }

    /// Like [`Prefetcher::on_read`], also deciding when to switch to streaming.
    pub fn after_read(&mut self, offset: u64, end: u64, file_size: u64, online: bool) -> Prefetch {
        let was_next = self.next_expected;
        let blocks = self.on_read(offset, end, file_size);
        let sequential =
            offset + SEQUENTIAL_SLACK >= was_next && offset <= was_next + SEQUENTIAL_SLACK;
        if sequential {
            self.sequential_run += end - offset;
        } else {
            self.sequential_run = end - offset;
            self.run_start = offset;
        }
        if self.streaming || !online {
            // Offline, every block is local: read-ahead would only copy page cache into memory.
            return Prefetch::Nothing;
        }
        let long_run = if self.run_start == 0 {
            STREAM_AFTER
        } else {
            STREAM_AFTER_SEEK
        };
        if self.sequential_run >= long_run && end < file_size {
            self.streaming = true;
            return Prefetch::Stream(self.requested_to.max(end).min(file_size));
        }
        match blocks {
            Some((from, to)) => Prefetch::Blocks(from, to),
            None => Prefetch::Nothing,
        }
    }

    /// The stream ended early (gateway error): go back to block-wise prefetch.
    pub fn stream_failed(&mut self) {
        self.streaming = false;
        self.sequential_run = 0;
    }

    /// Records a read of `[offset, end)`; returns a range to prefetch, if any.
    pub fn on_read(&mut self, offset: u64, end: u64, file_size: u64) -> Option<(u64, u64)> {
        let sequential = offset + SEQUENTIAL_SLACK >= self.next_expected
            && offset <= self.next_expected + SEQUENTIAL_SLACK;
        if sequential {
            if offset >= self.next_expected {
                self.window = (self.window * 2).min(self.max_window);
            }
        } else {
            self.window = INITIAL_WINDOW;
            self.requested_to = end;
        }
        self.next_expected = self.next_expected.max(end);
        if !sequential {
            self.next_expected = end;
        }
        let target = (end + self.window).min(file_size);
        // Ask again only when the reader has consumed half the window, so requests are batched.
        let start = self.requested_to.max(end);
        if target > start && target - start >= self.window / 2 {
            self.requested_to = target;
            return Some((start, target));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_grows_while_sequential_and_resets_on_seek() {
        let mut p = Prefetcher::new(64 << 20);
        let mut offset = 0;
        let mut last_window = 0;
        for _ in 0..64 {
            let r = p.on_read(offset, offset + (128 << 10), 1 << 40);
            if let Some((from, to)) = r {
                assert!(from >= offset);
                assert!(to - from <= 64 << 20);
            }
            offset += 128 << 10;
            assert!(p.window >= last_window);
            last_window = p.window;
        }
        assert_eq!(p.window, 64 << 20);
        p.on_read(500 << 20, (500 << 20) + 4096, 1 << 40);
        assert_eq!(p.window, INITIAL_WINDOW);
    }

    #[test]
    fn never_prefetches_past_end_of_file() {
        let mut p = Prefetcher::new(64 << 20);
        let size = 3 << 20;
        let mut offset = 0;
        while offset < size {
            if let Some((_, to)) = p.on_read(offset, (offset + (128 << 10)).min(size), size) {
                assert!(to <= size);
            }
            offset += 128 << 10;
        }
    }
}
