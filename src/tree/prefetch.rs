//! Read-ahead: the policy that decides, after each read of an open file, what to bring in
//! before the reader asks ([`ReadAhead`]), the per-handle work it starts ([`HandleReadAhead`]:
//! block-wise fetches or CAR streams, cancelled when the reader leaves or closes), and the
//! fetch of a byte range's missing blocks ([`Tree::prefetch`]), planned by the ipld reader's
//! file-range planner. Kept apart from the reads so that another policy can replace it whole.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use cid::Cid;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use ipfs_mount_fetch::DagScope;
use ipfs_mount_ipld::reader::file::{FileRange, Piece};
use ipfs_mount_ipld::reader::{Limits, Planner, Step};
use parking_lot::Mutex;

use super::account::Account;
use super::{Nodes, Tree};
use crate::blocks::BlockError;

/// Blocks fetched at once by the read-ahead (nodes and leaves each).
const PREFETCH_PARALLELISM: usize = 8;

/// A fetch under way: the block, whether it is a node the planner waits for, the result.
type Fetch<'a> = BoxFuture<'a, (Cid, bool, Result<Bytes, BlockError>)>;

impl Tree {
    /// Brings the blocks of `[from, to)` into the local store ahead of the reader: first in
    /// one range request when the window's interior nodes are not at hand ([`Tree::cold_range`]),
    /// then block by block for whatever is still missing. Only what is missing is fetched: a local block is not even read (the page cache already holds it),
    /// except the root when its node is not cached; a local node that is not a cached interior
    /// node is taken for a leaf, so the walk does not descend below it.
    /// The bytes of blocks it fetches are charged to `account`.
    pub(super) async fn prefetch(
        self: Arc<Self>,
        root: &Cid,
        file_size: u64,
        from: u64,
        to: u64,
        account: Arc<Account>,
    ) {
        let to = to.min(file_size);
        if from >= to {
            return;
        }
        if let Some(range) = self.cold_range(root, from, to) {
            // The levels of the window in one request; the walk below fetches what it left.
            if let Err(e) = self
                .blocks
                .fetch_range(root, &range, Some(account.fetched_counter()))
                .await
            {
                tracing::debug!(%root, from, to, "range request for read-ahead failed: {e}");
            }
        }
        let cache = Nodes(&self.file_nodes);
        let limits = Limits::default().with_window(PREFETCH_PARALLELISM, u64::MAX);
        let mut planner = FileRange::new(*root, file_size, from, to, limits).with_cache(&cache);
        let blocks = &self.blocks;
        let mut inflight: FuturesUnordered<Fetch<'_>> = FuturesUnordered::new();
        let mut leaves_inflight = 0;
        let mut named: HashSet<Cid> = HashSet::new();
        let account = &account;
        let fetch = |cid: Cid, node: bool| -> Fetch<'_> {
            Box::pin(async move {
                let result = super::account::charged_get(blocks, account, cid).await;
                (cid, node, result)
            })
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

/// Read-ahead for one open file, in the manner of mountpoint-s3's prefetcher: the window
/// starts at the kernel's own read-ahead size, grows only while the reader stays sequential,
/// resets on a seek (which also cancels what was asked for and not yet arrived), and never
/// reaches further than one window beyond the last read.
///
/// A run that starts at offset 0 is taken for a whole-file reader (`cat`, `cp`): its window is
/// twice what it has read so far, up to the cap; once it has read [`STREAM_AFTER`] in order
/// (well past the kernel's own read-ahead of the first read), the rest of the file comes in
/// one CAR stream, which is what makes a cold `cat` run at the speed of a download. That
/// stream is the one read-ahead not bounded by the window (gateways that ignore
/// `entity-bytes` would resend the file for each window); it stops like the others when the
/// reader seeks away or closes the file. A run that starts after a seek (a Parquet reader's column chunk) gets at most
/// an eighth of what it has read in order, and nothing before it has read
/// `SEEK_SHARE * INITIAL_WINDOW`, so a reader that stops at the end of a chunk wastes at most
/// an eighth of what it read.
#[derive(Debug)]
pub struct ReadAhead {
    max_window: u64,
    /// Where the current sequential run began, the furthest byte it has read, and how many
    /// bytes it has read (less than the span for a strided reader).
    run_start: u64,
    next_expected: u64,
    run_bytes: u64,
    /// Read-ahead has been asked for up to here (in this run).
    requested_to: u64,
    window: u64,
    started: bool,
    /// The rest of the file is being streamed (this run asks for nothing more).
    streaming: bool,
    /// A stream failed on this handle: block-wise read-ahead only from then on.
    no_stream: bool,
}

/// What to do after a read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The reader left the run: drop the read-ahead still in flight.
    pub cancel: bool,
    /// Bring in `[from, to)` ahead of the reader.
    pub fetch: Option<(u64, u64)>,
    /// Fetch it as one CAR stream (the rest of the file) rather than block by block.
    pub stream: bool,
}

/// The first window: the kernel's default read-ahead.
pub const INITIAL_WINDOW: u64 = 128 << 10;
/// The largest window of a run that began after a seek.
pub const SEEK_RUN_MAX_WINDOW: u64 = 8 << 20;
/// A run that began after a seek reads ahead at most 1/SEEK_SHARE of what it has read.
pub const SEEK_SHARE: u64 = 8;
/// A run from offset 0 that has read this much in order gets the rest of the file in one CAR
/// stream (`entity-bytes=from:*`).
pub const STREAM_AFTER: u64 = 4 << 20;
/// How far behind or ahead of the last read a read still continues the run: the kernel sends
/// its own read-ahead as several concurrent requests, which arrive out of order.
const BACKWARD_SLACK: u64 = 1 << 20;
const FORWARD_SLACK: u64 = 256 << 10;

impl ReadAhead {
    pub fn new(max_window: u64) -> Self {
        ReadAhead {
            max_window: max_window.max(INITIAL_WINDOW),
            run_start: 0,
            next_expected: 0,
            run_bytes: 0,
            requested_to: 0,
            window: 0,
            started: false,
            streaming: false,
            no_stream: false,
        }
    }

    /// The current window (0 when the run has not earned any read-ahead yet).
    #[cfg(test)]
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Records a read of `[offset, end)` and says what to fetch or cancel.
    pub fn on_read(&mut self, offset: u64, end: u64, file_size: u64) -> Plan {
        let mut plan = Plan::default();
        let continues = self.started
            && offset + BACKWARD_SLACK >= self.next_expected
            && offset <= self.next_expected + FORWARD_SLACK;
        if !continues {
            // A seek: whatever was asked for beyond the old position is no longer wanted.
            plan.cancel = self.started && self.requested_to > self.next_expected;
            self.run_start = offset;
            self.next_expected = offset;
            self.requested_to = end;
            self.run_bytes = 0;
            self.window = 0;
            self.started = true;
            self.streaming = false;
        }
        // Only bytes that move the run forward count (a reordered or repeated read does not).
        self.run_bytes += end.saturating_sub(offset.max(self.next_expected));
        self.next_expected = self.next_expected.max(end);
        let run = self.run_bytes;
        let earned = if self.run_start == 0 {
            run.saturating_mul(2).clamp(INITIAL_WINDOW, self.max_window)
        } else {
            let w = (run / SEEK_SHARE).min(SEEK_RUN_MAX_WINDOW.min(self.max_window));
            if w < INITIAL_WINDOW {
                0
            } else {
                w
            }
        };
        self.window = self.window.max(earned);
        if self.window == 0 || self.streaming {
            return plan;
        }
        // Only a dense reader (not one that skips most of what it passes) gets the stream.
        let dense = run * 2 >= self.next_expected - self.run_start;
        if self.run_start == 0 && run >= STREAM_AFTER && dense && !self.no_stream {
            let start = self.requested_to.max(self.next_expected);
            self.streaming = true;
            self.requested_to = file_size;
            if start < file_size {
                plan.fetch = Some((start, file_size));
                plan.stream = true;
            }
            return plan;
        }
        let target = (self.next_expected + self.window).min(file_size);
        let start = self.requested_to.max(self.next_expected);
        // Ask again only once half a window has been consumed, so requests come in batches.
        if target > start && (target - start >= self.window / 2 || target == file_size) {
            self.requested_to = target;
            plan.fetch = Some((start, target));
        }
        plan
    }

    /// The stream ended early (a gateway without CAR support, or an error): back to block-wise
    /// read-ahead from the reader's position, for the rest of this handle's life.
    pub fn stream_failed(&mut self) {
        self.no_stream = true;
        if self.streaming {
            self.streaming = false;
            self.requested_to = self.next_expected;
        }
    }
}

/// A read-ahead under way for a handle: its range, whether it is a CAR stream, whether it
/// has ended, and how to stop it.
struct Running {
    from: u64,
    to: u64,
    stream: bool,
    done: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

/// Marks a read-ahead ended however its task ends (finished or aborted) and wakes readers
/// waiting for it.
struct EndGuard(Arc<AtomicBool>, Arc<tokio::sync::Notify>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
        self.1.notify_waiters();
    }
}

/// The read-ahead of one open handle: the policy, and the fetches it started. Dropping it
/// (the handle's last close) stops them all.
pub struct HandleReadAhead {
    /// Shared with the stream task, which reports a failure.
    policy: Arc<Mutex<ReadAhead>>,
    running: Mutex<Vec<Running>>,
    /// Woken each time a streamed block becomes readable, and when a read-ahead ends.
    progress: Arc<tokio::sync::Notify>,
}

impl HandleReadAhead {
    pub fn new(max_window: u64) -> Self {
        HandleReadAhead {
            policy: Arc::new(Mutex::new(ReadAhead::new(max_window))),
            running: Mutex::new(Vec::new()),
            progress: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// After a read of `[offset, end)` of the file `root`: cancels the read-ahead the reader
    /// left behind and starts the next one, charging what it fetches to `account`.
    pub(super) fn after_read(
        &self,
        tree: &Arc<Tree>,
        root: Cid,
        file_size: u64,
        offset: u64,
        end: u64,
        account: &Arc<Account>,
    ) {
        let plan = self.policy.lock().on_read(offset, end, file_size);
        let mut running = self.running.lock();
        running.retain(|r| !r.done.load(Ordering::Acquire));
        if plan.cancel {
            for r in running.drain(..) {
                r.task.abort();
            }
        }
        let Some((from, to)) = plan.fetch else {
            return;
        };
        // Offline, every block is local: read-ahead would only copy page cache into memory.
        if tree.blocks.is_offline() {
            return;
        }
        let done = Arc::new(AtomicBool::new(false));
        let guard = EndGuard(done.clone(), self.progress.clone());
        let stream = plan.stream;
        let task = if stream {
            let blocks = tree.blocks.clone();
            let progress = self.progress.clone();
            let counter = account.fetched_counter();
            let policy = Arc::downgrade(&self.policy);
            tokio::spawn(async move {
                let _guard = guard;
                let scope = DagScope::Entity {
                    bytes: Some((from, None)),
                };
                if let Err(e) = blocks
                    .fetch_dag_charged(&root, scope, Some(progress), Some(counter))
                    .await
                {
                    tracing::debug!(%root, from, "streaming the rest of the file stopped: {e}");
                    if let Some(p) = policy.upgrade() {
                        p.lock().stream_failed();
                    }
                }
            })
        } else {
            let tree = tree.clone();
            let account = account.clone();
            tokio::spawn(async move {
                let _guard = guard;
                tree.prefetch(&root, file_size, from, to, account).await
            })
        };
        running.push(Running {
            from,
            to,
            stream,
            done,
            task: task.abort_handle(),
        });
    }

    /// The end flag of a CAR stream under way that will bring `offset`, if any: a reader
    /// there waits for it rather than asking for the same blocks again.
    pub(super) fn stream_over(&self, offset: u64) -> Option<Arc<AtomicBool>> {
        self.running
            .lock()
            .iter()
            .find(|r| {
                r.stream && r.from <= offset && offset < r.to && !r.done.load(Ordering::Acquire)
            })
            .map(|r| r.done.clone())
    }

    pub(super) fn progress(&self) -> &tokio::sync::Notify {
        &self.progress
    }
}

impl Drop for HandleReadAhead {
    fn drop(&mut self) {
        for r in self.running.get_mut().drain(..) {
            r.task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, VecDeque};

    const LEAF: u64 = 256 << 10;
    const MAX: u64 = 64 << 20;

    /// A reader over a file of `LEAF`-sized blocks with a mock fetcher that counts what it
    /// brings: a read fetches its missing blocks at once; read-ahead is queued and
    /// `per_read` blocks of it arrive per read (the network a little faster than the
    /// reader); a cancel or close drops what has not arrived.
    struct Sim {
        policy: ReadAhead,
        size: u64,
        have: BTreeSet<u64>,
        queued: VecDeque<u64>,
        per_read: usize,
        fetched: u64,
        read: u64,
        /// Blocks covering what was read.
        covering: BTreeSet<u64>,
        max_beyond: u64,
    }

    impl Sim {
        fn new(size: u64) -> Self {
            Sim {
                policy: ReadAhead::new(MAX),
                size,
                have: BTreeSet::new(),
                queued: VecDeque::new(),
                per_read: 2,
                fetched: 0,
                read: 0,
                covering: BTreeSet::new(),
                max_beyond: 0,
            }
        }

        fn block_len(&self, b: u64) -> u64 {
            LEAF.min(self.size - b * LEAF)
        }

        fn fetch(&mut self, b: u64) {
            if self.have.insert(b) {
                self.fetched += self.block_len(b);
            }
        }

        fn read(&mut self, offset: u64, len: u64) {
            let end = (offset + len).min(self.size);
            for b in offset / LEAF..end.div_ceil(LEAF) {
                self.fetch(b);
                self.covering.insert(b);
            }
            self.read += end - offset;
            let plan = self.policy.on_read(offset, end, self.size);
            if plan.cancel {
                self.queued.clear();
            }
            if let Some((from, to)) = plan.fetch {
                assert!(
                    from < to && to <= self.size,
                    "{from}..{to} of {}",
                    self.size
                );
                if !plan.stream {
                    self.max_beyond = self.max_beyond.max(to - end);
                }
                for b in from / LEAF..to.div_ceil(LEAF) {
                    if !self.have.contains(&b) {
                        self.queued.push_back(b);
                    }
                }
            }
            for _ in 0..self.per_read {
                if let Some(b) = self.queued.pop_front() {
                    self.fetch(b);
                }
            }
        }

        fn read_span(&mut self, from: u64, to: u64, step: u64) {
            let mut off = from;
            while off < to {
                self.read(off, step.min(to - off));
                off += step;
            }
        }

        fn close(&mut self) {
            self.queued.clear();
        }

        fn covering_bytes(&self) -> u64 {
            self.covering.iter().map(|&b| self.block_len(b)).sum()
        }
    }

    #[test]
    fn sequential_read_grows_to_the_cap_and_stays_within_the_file() {
        let size = 200 << 20;
        let mut sim = Sim::new(size);
        sim.read_span(0, size, 128 << 10);
        assert_eq!(sim.fetched, size, "every byte fetched once");
        assert!(
            sim.max_beyond <= 2 * STREAM_AFTER,
            "block-wise: a window ahead at most"
        );
        assert!(
            sim.policy.streaming,
            "a whole-file reader gets the rest in one stream"
        );
        // It started small: the first read of 128 KiB asks for twice that, right behind it.
        let mut fresh = ReadAhead::new(MAX);
        let plan = fresh.on_read(0, 128 << 10, size);
        assert_eq!(plan.fetch, Some((128 << 10, 384 << 10)));
        assert!(!plan.stream);
        // A stream that fails falls back to block-wise read-ahead from the reader's position.
        let mut p = ReadAhead::new(MAX);
        let mut off = 0;
        let mut streamed = false;
        while off < STREAM_AFTER + (1 << 20) {
            streamed |= p.on_read(off, off + (128 << 10), size).stream;
            off += 128 << 10;
        }
        assert!(streamed);
        p.stream_failed();
        let plan = p.on_read(off, off + (128 << 10), size);
        let (from, to) = plan.fetch.expect("block-wise read-ahead again");
        assert!(!plan.stream && from == off + (128 << 10) && to - from <= MAX);
    }

    #[test]
    fn strided_reads_fetch_about_the_blocks_they_touch() {
        let size = 512 << 20;
        let mut sim = Sim::new(size);
        let mut off = 0;
        while off < size {
            sim.read(off, 4096);
            off += 1 << 20;
        }
        sim.close();
        assert_eq!(
            sim.fetched,
            sim.covering_bytes(),
            "no read-ahead for 4 KiB every 1 MiB"
        );
        // A finer stride (every leaf touched) may read ahead, never far past the reads.
        let mut sim = Sim::new(size);
        let mut off = 0;
        while off < 64 << 20 {
            sim.read(off, 16 << 10);
            off += 128 << 10;
        }
        sim.close();
        assert!(sim.fetched <= sim.covering_bytes() + SEEK_RUN_MAX_WINDOW.max(MAX));
        assert!(sim.fetched <= (64 << 20) + 2 * MAX);
    }

    /// Parquet-like: the footer, then one column chunk per row group, each read in order
    /// from its start (as the kernel splits a big pread).
    #[test]
    fn column_chunks_fetch_little_more_than_they_read() {
        let size: u64 = 1 << 30;
        let (groups, columns) = (16u64, 20u64);
        let chunk = size / (groups * columns);
        let mut sim = Sim::new(size);
        sim.read(size - (64 << 10), 64 << 10);
        sim.read(size - 8, 8);
        for g in 0..groups {
            let start = (g * columns + 3) * chunk;
            sim.read_span(start, start + chunk, 128 << 10);
        }
        sim.close();
        let covering = sim.covering_bytes();
        eprintln!(
            "column chunks: read {} B, blocks {} B, fetched {} B ({:.4} of the file)",
            sim.read,
            covering,
            sim.fetched,
            sim.fetched as f64 / size as f64
        );
        let bound = covering + covering / 10 + (1 << 20);
        assert!(
            sim.fetched <= bound,
            "fetched {} for {} read ({} in blocks), bound {bound}",
            sim.fetched,
            sim.read,
            covering
        );
        assert!(sim.fetched * 10 <= size, "under a tenth of the file");
    }

    #[test]
    fn backwards_reads_get_no_read_ahead() {
        let size = 64 << 20;
        let mut sim = Sim::new(size);
        let step = 64 << 10;
        let mut off = size;
        while off > 0 {
            off -= step;
            sim.read(off, step);
        }
        assert_eq!(sim.fetched, size);
        assert_eq!(sim.covering_bytes(), size);
        // From the middle backwards: nothing beyond what was read.
        let mut sim = Sim::new(size);
        let mut off = 32 << 20;
        while off > 16 << 20 {
            off -= step;
            sim.read(off, step);
        }
        assert_eq!(sim.fetched, sim.covering_bytes());
    }

    #[test]
    fn random_reads_get_no_read_ahead() {
        let size: u64 = 1 << 30;
        let mut sim = Sim::new(size);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            sim.read((x % size) & !4095, 4096);
        }
        sim.close();
        assert_eq!(sim.fetched, sim.covering_bytes());
    }

    #[test]
    fn close_mid_stream_leaves_the_rest_unfetched() {
        let size: u64 = 1 << 30;
        let mut sim = Sim::new(size);
        sim.read_span(0, 16 << 20, 128 << 10);
        sim.close();
        // What the stream brought before the close (the mock network is 4x the reader here).
        let bound = (16 << 20) * 5;
        assert!(
            sim.fetched <= bound,
            "fetched {} after reading 16 MiB",
            sim.fetched
        );
        assert!(sim.fetched < size / 4);
        // A seek away cancels what the old run had asked for.
        let mut p = ReadAhead::new(MAX);
        let mut off = 0;
        let mut asked = false;
        while off < 8 << 20 {
            asked |= p.on_read(off, off + (128 << 10), size).fetch.is_some();
            off += 128 << 10;
        }
        assert!(asked);
        let plan = p.on_read(512 << 20, (512 << 20) + 4096, size);
        assert!(plan.cancel, "the seek cancels the old run's read-ahead");
        assert_eq!(plan.fetch, None, "a fresh run earns read-ahead first");
        assert_eq!(p.window(), 0);
    }

    #[test]
    fn a_long_run_after_a_seek_grows_to_its_cap() {
        let size: u64 = 1 << 30;
        let mut sim = Sim::new(size);
        sim.read_span(100 << 20, 300 << 20, 128 << 10);
        assert_eq!(sim.policy.window(), SEEK_RUN_MAX_WINDOW);
        assert!(sim.max_beyond <= SEEK_RUN_MAX_WINDOW);
    }
}
