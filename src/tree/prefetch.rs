//! Read-ahead: the policy that decides, after each read of an open file, what to bring in
//! before the reader asks ([`Prefetcher`]), and the fetch of a byte range's missing blocks
//! ([`Tree::prefetch`]), planned by the ipld reader's file-range planner. Kept apart from the
//! reads so that another policy can replace it whole.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use ipfs_mount_ipld::reader::file::{FileRange, Piece};
use ipfs_mount_ipld::reader::{Limits, Planner, Step};

use super::{Nodes, Tree};
use crate::blocks::BlockError;

/// Blocks fetched at once by the read-ahead (nodes and leaves each).
const PREFETCH_PARALLELISM: usize = 8;

/// A fetch under way: the block, whether it is a node the planner waits for, the result.
type Fetch<'a> = BoxFuture<'a, (Cid, bool, Result<Bytes, BlockError>)>;

impl Tree {
    /// Brings the blocks of `[from, to)` into the local store ahead of the reader. Only what is
    /// missing is fetched: a local block is not even read (the page cache already holds it),
    /// except the root when its node is not cached; a local node that is not a cached interior
    /// node is taken for a leaf, so the walk does not descend below it.
    pub(super) async fn prefetch(self: Arc<Self>, root: &Cid, file_size: u64, from: u64, to: u64) {
        let to = to.min(file_size);
        if from >= to {
            return;
        }
        let cache = Nodes(&self.file_nodes);
        let limits = Limits::default().with_window(PREFETCH_PARALLELISM, u64::MAX);
        let mut planner = FileRange::new(*root, file_size, from, to, limits).with_cache(&cache);
        let blocks = &self.blocks;
        let mut inflight: FuturesUnordered<Fetch<'_>> = FuturesUnordered::new();
        let mut leaves_inflight = 0;
        let mut named: HashSet<Cid> = HashSet::new();
        let fetch = |cid: Cid, node: bool| -> Fetch<'_> {
            Box::pin(async move { (cid, node, blocks.get(&cid).await) })
        };
        loop {
            let step = match planner.next() {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%root, "prefetch stopped: {e}");
                    return;
                }
            };
            let wait = match step {
                Step::Need(cid) if cid != *root && blocks.has_local(&cid) => {
                    planner.skip(&cid);
                    false
                }
                Step::Need(cid) => {
                    inflight.push(fetch(cid, true));
                    false
                }
                Step::Item(Piece::Leaf { cid, .. }) => {
                    if named.insert(cid) && !blocks.has_local(&cid) {
                        inflight.push(fetch(cid, false));
                        leaves_inflight += 1;
                    }
                    leaves_inflight >= PREFETCH_PARALLELISM
                }
                Step::Item(Piece::Inline(_)) => false,
                Step::Wait => true,
                Step::Done => break,
            };
            if wait {
                let Some((cid, node, result)) = inflight.next().await else {
                    return;
                };
                if !node {
                    leaves_inflight -= 1;
                }
                match result {
                    Ok(block) if node => {
                        if let Err(e) = planner.provide(&cid, block) {
                            tracing::debug!(%root, "prefetch stopped: {e}");
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(%root, "prefetch stopped: {e}");
                        return;
                    }
                }
            }
        }
        while let Some((_, _, result)) = inflight.next().await {
            if let Err(e) = result {
                tracing::debug!(%root, "prefetch stopped: {e}");
                return;
            }
        }
    }
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
