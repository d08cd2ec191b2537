//! Sealing: turning a staged file into content-addressed blocks and a journaled closed state.
//! A close hashes the staged bytes (small files in one pass on the calling thread, big ones
//! with hashing and storing overlapped on two threads), a sequential writer is hashed while
//! it writes (a [`Stream`]), and after a seal the staging buffer keeps only the last partial
//! chunk so that an append reuses every full leaf. Seals of one file run one at a time.

use super::*;
use crate::datasets::hashpool;

/// Staged bytes up to this are sealed on the FUSE thread that closes the file: hashing them
/// costs less than handing the request to another thread.
pub(super) const LIGHT_SEAL: u64 = 256 << 10;

/// A sequential writer whose staged bytes would outgrow memory is hashed while it writes
/// instead: its bytes then go to the block store once, never to a staging file.
pub(super) const STREAM_FROM: u64 = crate::datasets::stagebuf::MEMORY_LIMIT;

/// Blocks a stream stores per index transaction (fewer, larger transactions).
const STREAM_BATCH_BYTES: usize = 4 << 20;

/// What writes hand to a [`Stream`]'s hasher, in order.
pub(super) enum Feed {
    /// Bytes at an offset; the offset must be the end of what was fed so far.
    Bytes(u64, Bytes),
    /// Answered with the number of bytes fed, once everything queued before is hashed and stored.
    Sync(std::sync::mpsc::SyncSender<u64>),
}

/// A sequential writer hashed as it writes: one pass over the bytes, which go straight into
/// leaves under a temporary pin. While a stream runs it holds the file's bytes (the staging
/// buffer is empty); anything but an append ends it ([`Dataset::unstream`]) and the file becomes
/// the stream's leaves plus a staged tail, like a sealed file opened again.
pub(super) struct Stream {
    /// Both `Some` until [`close`](Self::close).
    tx: Option<std::sync::mpsc::SyncSender<Feed>>,
    hasher: Option<std::thread::JoinHandle<Hashed>>,
    temp: u64,
    /// Set by whoever takes the result; an abandoned stream releases its own pin.
    claimed: Arc<std::sync::atomic::AtomicBool>,
    /// The hasher's first failure (the store refused a block): bytes from there on are lost,
    /// and the next write, close or fsync of the file reports it.
    failure: Arc<Mutex<Option<DsError>>>,
}

/// A stream's state once its queue closed.
pub(super) struct Hashed {
    pub(super) writer: FileWriter,
    /// File bytes in the writer (base leaves included).
    pub(super) fed: u64,
}

impl Stream {
    /// Starts a hasher over `base` (full leaves already stored and pinned by `temp`) followed by
    /// `head`.
    fn start(
        blocks: Arc<BlockService>,
        profile: &ImportProfile,
        temp: u64,
        name: &str,
        base: &LeafRuns,
        head: Vec<u8>,
    ) -> std::io::Result<Stream> {
        // A small queue: a writer faster than the hasher waits (outside the dataset's lock).
        let (tx, rx) = std::sync::mpsc::sync_channel::<Feed>(16);
        let claimed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let failure: Arc<Mutex<Option<DsError>>> = Arc::default();
        let mut writer = FileWriter::new(profile);
        for (leaf, n) in base {
            writer.push_leaf_run(*leaf, *n);
        }
        let mut pipeline = Pipeline {
            fed: runs_len(base),
            writer,
            profile: Arc::new(profile.clone()),
            chunk: profile.chunk_size.max(1),
            inflight: std::collections::VecDeque::new(),
            batch: Vec::new(),
            batch_bytes: 0,
            blocks,
            temp,
        };
        let done = claimed.clone();
        let failed = failure.clone();
        let dataset = name.to_string();
        let hasher = std::thread::Builder::new()
            .name(format!("ds-hash-{name}"))
            .spawn(move || {
                let ok = std::cell::Cell::new(true);
                let fail = |e: DsError| {
                    tracing::warn!(dataset = %dataset, "storing a written file's blocks failed: {e}");
                    failed.lock().get_or_insert(e);
                    ok.set(false);
                };
                let first = Feed::Bytes(pipeline.fed, head.into());
                for msg in std::iter::once(first).chain(rx.iter()) {
                    match msg {
                        Feed::Bytes(_, _) if !ok.get() => {}
                        Feed::Bytes(offset, data) => {
                            if offset != pipeline.fed {
                                fail(DsError::Io(format!(
                                    "a write at {offset} skipped the stream's end at {}",
                                    pipeline.fed
                                )));
                            } else if let Err(e) = pipeline.feed(data) {
                                fail(e);
                            }
                        }
                        Feed::Sync(reply) => {
                            if ok.get() {
                                if let Err(e) = pipeline.flush() {
                                    fail(e);
                                }
                            }
                            let _ = reply.send(pipeline.fed);
                        }
                    }
                }
                if ok.get() {
                    if let Err(e) = pipeline.flush() {
                        fail(e);
                    }
                }
                if !done.load(Ordering::Acquire) {
                    let _ = pipeline.blocks.release_temp(pipeline.temp);
                }
                Hashed {
                    writer: pipeline.writer,
                    fed: pipeline.fed,
                }
            })?;
        Ok(Stream {
            tx: Some(tx),
            hasher: Some(hasher),
            temp,
            claimed,
            failure,
        })
    }

    /// A handle for queueing bytes (sent without the dataset's lock: the queue may be full).
    pub(super) fn feeder(&self) -> std::sync::mpsc::SyncSender<Feed> {
        self.tx.clone().expect("a stream is open until closed")
    }

    pub(super) fn failure(&self) -> Option<DsError> {
        self.failure.lock().clone()
    }

    /// Waits until everything queued so far is hashed and stored; the bytes fed by then.
    /// Called without the dataset's lock, so that finishing under it costs little.
    pub(super) fn settle(feeder: &std::sync::mpsc::SyncSender<Feed>) -> Option<u64> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        feeder.send(Feed::Sync(tx)).ok()?;
        rx.recv().ok()
    }

    /// Ends the stream: the hasher's state (its writer holds every fed byte, the blocks of its
    /// full leaves stored under the returned pin), or its failure.
    pub(super) fn close(mut self) -> (Result<Hashed, DsError>, u64) {
        self.claimed.store(true, Ordering::Release);
        let hashed = self.join();
        let failure = self.failure.lock().take();
        let result = match (hashed, failure) {
            (_, Some(e)) | (Err(e), None) => Err(e),
            (Ok(h), None) => Ok(h),
        };
        (result, self.temp)
    }
}

/// A stream's hashing: whole chunks go to the [`hashpool`] (several in flight, taken back
/// in order), the bytes of a partial chunk through the writer; new blocks are stored in
/// batches under the stream's pin.
struct Pipeline {
    writer: FileWriter,
    /// File bytes received (base leaves included).
    fed: u64,
    profile: Arc<ImportProfile>,
    chunk: usize,
    /// Chunks being hashed, in file order. Not empty only while the writer has no pending bytes.
    inflight: std::collections::VecDeque<std::sync::mpsc::Receiver<(Leaf, Bytes)>>,
    batch: Vec<(Cid, Bytes)>,
    batch_bytes: usize,
    blocks: Arc<BlockService>,
    temp: u64,
}

impl Pipeline {
    /// Chunks in flight per stream: enough to keep every worker busy while this thread stores.
    fn max_inflight() -> usize {
        2 * hashpool::workers()
    }

    fn feed(&mut self, mut data: Bytes) -> Result<(), DsError> {
        self.fed += data.len() as u64;
        if !self.writer.pending().is_empty() {
            // Complete the partial chunk first (the pool is idle then: nothing is in flight).
            let need = self.chunk - self.writer.pending().len();
            let head = data.split_to(need.min(data.len()));
            self.writer.write(&head);
            self.collect()?;
        }
        while data.len() >= self.chunk {
            let chunk = data.split_to(self.chunk);
            if self.inflight.len() >= Self::max_inflight() {
                self.take_one()?;
            }
            self.inflight
                .push_back(hashpool::hash(&self.profile, chunk));
        }
        if !data.is_empty() {
            self.drain()?;
            self.writer.write(&data);
            self.collect()?;
        }
        Ok(())
    }

    fn take_one(&mut self) -> Result<(), DsError> {
        let Some(rx) = self.inflight.pop_front() else {
            return Ok(());
        };
        let (leaf, block) = rx
            .recv()
            .map_err(|_| DsError::Io("a leaf hashing thread stopped".into()))?;
        self.writer.push_made_leaf(leaf, block);
        self.collect()
    }

    fn drain(&mut self) -> Result<(), DsError> {
        while !self.inflight.is_empty() {
            self.take_one()?;
        }
        Ok(())
    }

    fn collect(&mut self) -> Result<(), DsError> {
        for b in self.writer.take_blocks() {
            self.batch_bytes += b.1.len();
            self.batch.push(b);
        }
        if self.batch_bytes >= STREAM_BATCH_BYTES {
            self.store()?;
        }
        Ok(())
    }

    fn store(&mut self) -> Result<(), DsError> {
        self.batch_bytes = 0;
        if self.batch.is_empty() {
            return Ok(());
        }
        let result = self
            .blocks
            .put_temp(self.temp, &self.batch)
            .map_err(DsError::block);
        self.batch.clear();
        result
    }

    /// Everything fed so far hashed and stored.
    fn flush(&mut self) -> Result<(), DsError> {
        self.drain()?;
        self.store()
    }
}

impl Stream {
    fn join(&mut self) -> Result<Hashed, DsError> {
        self.tx = None;
        match self.hasher.take().map(|h| h.join()) {
            Some(Ok(h)) => Ok(h),
            _ => Err(DsError::Io("a file's hasher thread panicked".into())),
        }
    }
}

impl Drop for Stream {
    /// An abandoned stream (its file truncated or dropped): the hasher ends and releases its
    /// pin before this returns, so no pin outlives the file's state.
    fn drop(&mut self) {
        if self.hasher.is_some() {
            let _ = self.join();
        }
    }
}

/// A temporary pin owned by a value: released when it is dropped.
pub(super) struct PinGuard {
    /// `None` once disarmed (someone else releases the pin).
    temp: Option<u64>,
    blocks: Arc<BlockService>,
    hooks: Arc<Hooks>,
    dataset: String,
}

impl PinGuard {
    fn id(&self) -> u64 {
        self.temp.expect("an armed guard")
    }

    /// Hands the pin over to whoever releases it otherwise.
    pub(super) fn disarm(mut self) {
        self.temp = None;
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Some(temp) = self.temp {
            release_temp(&self.blocks, &self.hooks, &self.dataset, temp);
        }
    }
}

/// Releases a temporary pin; on a full disk with the reserve's help, else later.
pub(super) fn release_temp(blocks: &BlockService, hooks: &Hooks, dataset: &str, temp: u64) {
    let Err(e) = blocks.release_temp(temp) else {
        return;
    };
    // A full disk: the index needs room to record even a release. Use the reserve.
    if e.is_no_space() && hooks.free_reserve() && blocks.release_temp(temp).is_ok() {
        return;
    }
    tracing::warn!(dataset = %dataset, "cannot release a temporary pin (retried later): {e}");
    hooks.defer_release(temp);
}

/// Zeros: a run of whole zero chunks is one leaf, hashed once.
pub(super) fn write_zeros(w: &mut FileWriter, n: u64) {
    w.write_zeros(n);
}

/// A staged file's state at the start of a seal.
pub(super) struct Snapshot {
    file: StageBuf,
    size: u64,
    base: LeafRuns,
    base_len: u64,
    generation: u64,
}

impl Snapshot {
    fn of(s: &Staged) -> Result<Self, DsError> {
        Ok(Snapshot {
            file: s.file.snapshot().map_err(DsError::io)?,
            size: s.size,
            base: s.base.clone(),
            base_len: s.base_len,
            generation: s.generation,
        })
    }

    /// Whether the snapshot reads the live staging file (writes during a seal show through).
    fn shares_file(&self) -> bool {
        matches!(self.file, StageBuf::File(_))
    }
}

/// The leaf of a whole chunk of zeros under `profile` (what holes are made of).
pub(super) fn zero_leaf(profile: &ImportProfile) -> Cid {
    let mut w = FileWriter::new(profile);
    w.write_zeros(profile.chunk_size as u64);
    w.finish().cid
}

pub(super) fn runs_len(runs: &LeafRuns) -> u64 {
    runs.iter().map(|(l, n)| l.size * n).sum()
}

pub(super) fn push_run(runs: &mut LeafRuns, leaf: Leaf, n: u64) {
    match runs.last_mut() {
        Some((l, k)) if *l == leaf => *k += n,
        _ => runs.push((leaf, n)),
    }
}

/// The leaves of a sealed file that an append can keep: every leading full chunk, when the file
/// was built with this profile's chunker (same leaf codec, full-size leaves). The reader's leaf
/// planner expands identical subtrees (the holes of a sparse file) once, so this costs the
/// distinct blocks. `None` when a block is missing or the DAG is not this chunker's layout.
pub(super) fn reusable_leaves(
    blocks: &BlockService,
    profile: &ImportProfile,
    sealed: &Sealed,
) -> Option<LeafRuns> {
    let chunk = profile.chunk_size as u64;
    if sealed.size < chunk {
        return Some(Vec::new());
    }
    let leaf_codec = if profile.raw_leaves {
        codec::RAW
    } else {
        codec::DAG_PB
    };
    let planner = reader::leaves::Leaves::new(
        sealed.cid,
        sealed.size,
        Some(sealed.tsize),
        reader::Limits::default(),
    );
    let runs = match reader::drive::collect_local(planner, blocks) {
        Ok(runs) => runs?,
        Err(e) => {
            tracing::debug!(cid = %sealed.cid, "sealed file's leaves not reusable: {e}");
            return None;
        }
    };
    let mut all: LeafRuns = Vec::new();
    for run in runs {
        match run {
            reader::leaves::Run::Leaf { leaf, count } => {
                if leaf.cid.codec() == codec::DAG_PB && leaf_codec != codec::DAG_PB {
                    return None; // dag-pb leaves under a raw-leaf profile
                }
                let leaf = Leaf {
                    cid: leaf.cid,
                    size: leaf.size,
                    tsize: leaf.tsize.unwrap_or(0),
                };
                push_run(&mut all, leaf, count);
            }
            // data in an interior node: not this chunker's layout
            reader::leaves::Run::Inline(_) => return None,
        }
    }
    // Keep the leading full chunks (all but a partial last one).
    let mut keep: LeafRuns = Vec::new();
    for (l, n) in all {
        if l.size != chunk || l.cid.codec() != leaf_codec {
            break;
        }
        push_run(&mut keep, l, n);
    }
    Some(keep)
}

/// Bytes `[from, to)` of a sealed file of `file_size` bytes, from local blocks, through the
/// ipld reader (which checks every node's size against its parent's and bounds the depth).
pub(super) fn read_sealed(
    blocks: &BlockService,
    root: &Cid,
    file_size: u64,
    from: u64,
    to: u64,
) -> Result<Vec<u8>, DsError> {
    let bad = |e: String| DsError::Block(format!("file {root}: {e}"));
    let planner =
        reader::file::FileRange::new(*root, file_size, from, to, reader::Limits::default());
    let pieces = reader::drive::collect_local(planner, blocks)
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("a block is missing from the store".into()))?;
    let mut out = Vec::with_capacity(to.saturating_sub(from) as usize);
    for piece in pieces {
        match piece {
            reader::file::Piece::Inline(b) => out.extend_from_slice(&b),
            reader::file::Piece::Leaf {
                cid,
                size,
                start,
                end,
            } => {
                let leaf = blocks
                    .get_local(&cid)
                    .map_err(|e| DsError::Block(e.to_string()))?
                    .ok_or_else(|| bad(format!("leaf {cid} is missing from the store")))?;
                if leaf.len() as u64 != size {
                    return Err(bad(format!(
                        "leaf {cid} holds {} bytes, its parent says {size}",
                        leaf.len()
                    )));
                }
                out.extend_from_slice(&leaf[start as usize..end as usize]);
            }
        }
    }
    Ok(out)
}

impl Dataset {
    /// Starts hashing a sequential writer: its base leaves and staged bytes go first, and the
    /// staging buffer is emptied (the stream holds the bytes from now on).
    pub(super) fn start_stream(&self, s: &mut Staged) -> Result<(), DsError> {
        let temp = self.new_temp()?;
        let pin = self.pin_guard(temp);
        if !s.base.is_empty() {
            // The stream's pin covers the whole file, as a seal's does.
            self.blocks
                .temp_pin_add(temp, &mut s.base.iter().map(|r| r.0.cid))
                .map_err(DsError::block)?;
        }
        let mut head = vec![0u8; (s.size - s.base_len) as usize];
        let got = s.file.read_at(&mut head, 0).map_err(DsError::io)?;
        head[got..].fill(0); // past the buffer's end: zeros (a grown truncate)
        let stream = Stream::start(
            self.blocks.clone(),
            &self.profile,
            temp,
            &self.name,
            &s.base,
            head,
        )
        .map_err(|e| DsError::Io(format!("cannot start a hasher thread: {e}")))?;
        // The hasher releases the pin itself unless the stream's result is taken.
        pin.disarm();
        s.stream = Some(stream);
        s.file = StageBuf::new();
        Ok(())
    }

    /// Ends a file's stream: its bytes become the stream's full leaves (pinned by `base_pin`)
    /// and a staged tail of less than a chunk. Waits for the hasher (under the dataset's lock:
    /// only a write elsewhere than the end, a read or a truncate of a streamed file does this).
    pub(super) fn unstream(&self, s: &mut Staged) -> Result<(), DsError> {
        if let Some((_, pin)) = self.end_stream(s)? {
            s.base_pin = Some(pin);
        }
        Ok(())
    }

    /// Closes a file's stream, if it has one: the file becomes the stream's full leaves and a
    /// staged tail; returns the hasher's writer and the pin holding those leaves. A stream that
    /// failed, or hashed less than was written, loses the file's staged bytes (see `lose`).
    fn end_stream(&self, s: &mut Staged) -> Result<Option<(Hashed, PinGuard)>, DsError> {
        let Some(stream) = s.stream.take() else {
            return Ok(None);
        };
        let (hashed, temp) = stream.close();
        let pin = self.pin_guard(temp);
        let h = match hashed {
            Ok(h) if h.fed == s.size => h,
            Ok(h) => {
                let e = DsError::Io(format!(
                    "the stream hashed {} of {} bytes written",
                    h.fed, s.size
                ));
                return Err(self.lose(s, e));
            }
            Err(e) => return Err(self.lose(s, e)),
        };
        s.base = h.writer.runs().to_vec();
        s.base_len = runs_len(&s.base);
        s.file = StageBuf::Memory(h.writer.pending().to_vec());
        Ok(Some((h, pin)))
    }

    /// A staged file whose bytes could not be stored: it answers `err` until its last close,
    /// which drops it (the file then shows its last closed content).
    pub(super) fn lose(&self, s: &mut Staged, err: DsError) -> DsError {
        tracing::warn!(dataset = %self.name, "a written file's bytes are lost: {err}");
        s.stream = None;
        s.lost = Some(err.clone());
        if matches!(err, DsError::NoSpace) {
            self.win_back_space();
        }
        err
    }

    pub(super) fn pin_guard(&self, temp: u64) -> PinGuard {
        PinGuard {
            temp: Some(temp),
            blocks: self.blocks.clone(),
            hooks: self.hooks.clone(),
            dataset: self.name.clone(),
        }
    }

    /// Seals a streamed file: lets the hasher catch up without the lock, then, under it, takes
    /// its writer (a few interior nodes are left to make) and installs the result.
    fn seal_streamed(&self, id: NodeId) -> Result<(), DsError> {
        for _ in 0..8 {
            let (feeder, size, generation) = {
                let st = self.state.lock();
                match st.nodes.get(&id).map(|n| &n.body) {
                    Some(Body::File {
                        staged: Some(s), ..
                    }) => match &s.stream {
                        Some(stream) => (stream.feeder(), s.size, s.generation),
                        None => return Ok(()),
                    },
                    _ => return Ok(()),
                }
            };
            let fed = Stream::settle(&feeder);
            drop(feeder);
            let st = self.state.lock();
            let settled = matches!(
                st.nodes.get(&id).map(|n| &n.body),
                Some(Body::File { staged: Some(s), .. }) if s.generation == generation
            );
            if settled && fed == Some(size) {
                break;
            }
        }
        let mut st = self.state.lock();
        let Some(Body::File {
            staged: Some(s), ..
        }) = st.nodes.get_mut(&id).map(|n| &mut n.body)
        else {
            return Ok(());
        };
        // The live file becomes leaves plus tail, as after an unstream; the seal makes the root.
        let Some((mut h, pin)) = self.end_stream(s)? else {
            return Ok(());
        };
        let temp = pin.id();
        let generation = s.generation;
        let root = h.writer.finish();
        if let Err(e) = self.blocks.put_temp(temp, &h.writer.take_blocks()) {
            // The leaves are stored: the file stays usable, this close reports the failure.
            s.base_pin = Some(pin);
            return Err(DsError::block(e));
        }
        pin.disarm(); // `install` takes the pin over
        let sealed = Sealed {
            cid: root.cid,
            size: root.size,
            tsize: root.tsize,
        };
        tracing::trace!(dataset = %self.name, node = id, size = sealed.size, generation, "sealed a stream");
        self.install(st, id, sealed, generation, temp, Vec::new())
    }

    /// Whether sealing the file now costs little (nothing staged, or a few staged bytes in
    /// memory): then a close is served on the FUSE thread rather than handed to the pool.
    pub fn seal_is_light(&self, id: NodeId) -> bool {
        let st = self.state.lock();
        match st.nodes.get(&id).map(|n| &n.body) {
            Some(Body::File {
                staged: Some(s), ..
            }) if s.dirty => {
                s.stream.is_none()
                    && matches!(s.file, StageBuf::Memory(_))
                    && s.size - s.base_len <= LIGHT_SEAL
            }
            _ => true,
        }
    }

    /// Seals a staged file: hashes its bytes without the dataset's lock (other files stay
    /// usable meanwhile), then journals the new content.
    pub(super) fn seal(&self, id: NodeId) -> Result<(), DsError> {
        let lock = self.seal_locks.lock().entry(id).or_default().clone();
        let result = {
            let _one_at_a_time = lock.lock();
            self.seal_now(id)
        };
        let mut locks = self.seal_locks.lock();
        // Only the map and this call hold it (others clone it under the map's lock): done.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(&id);
        }
        result
    }

    pub(super) fn seal_now(&self, id: NodeId) -> Result<(), DsError> {
        for attempt in 0..4 {
            let mut guard = Some(self.state.lock());
            let snapshot = match guard
                .as_ref()
                .and_then(|st| st.nodes.get(&id))
                .map(|n| &n.body)
            {
                Some(Body::File {
                    staged: Some(s), ..
                }) if s.dirty => {
                    if let Some(e) = &s.lost {
                        return Err(e.clone());
                    }
                    if s.stream.is_some() {
                        drop(guard);
                        return self.seal_streamed(id);
                    }
                    Snapshot::of(s)?
                }
                _ => return Ok(()),
            };
            // A file-backed snapshot shares the staging file: if writes go on while it is
            // hashed, hash again; the last attempt holds the lock, so it always completes.
            if attempt < 3 {
                guard = None;
            }
            let temp = self.new_temp()?;
            let (sealed, inline) = match self.hash_snapshot(&snapshot, temp) {
                Ok(s) => s,
                Err(e) => {
                    drop(guard);
                    self.release_temp(temp);
                    if matches!(e, DsError::NoSpace) {
                        self.win_back_space();
                    }
                    return Err(e);
                }
            };
            let st = match guard {
                Some(st) => st,
                None => self.state.lock(),
            };
            let current = matches!(
                st.nodes.get(&id).map(|n| &n.body),
                Some(Body::File { staged: Some(s), .. }) if s.generation == snapshot.generation
            );
            if !current && snapshot.shares_file() && attempt < 3 {
                drop(st);
                self.release_temp(temp);
                continue;
            }
            tracing::trace!(dataset = %self.name, node = id, size = sealed.size, generation = snapshot.generation, current, "sealed");
            return self.install(st, id, sealed, snapshot.generation, temp, inline);
        }
        unreachable!("the last attempt holds the lock")
    }

    /// Chunks, hashes and stores a staged file's bytes under the temporary pin `temp`. For a
    /// small file the store write is left to the block service's background writer and the
    /// blocks are returned, for the journal record to carry them (so that a crash before that
    /// write loses nothing); otherwise the returned list is empty.
    pub(super) fn hash_snapshot(
        &self,
        snap: &Snapshot,
        temp: u64,
    ) -> Result<(Sealed, Vec<(Cid, Bytes)>), DsError> {
        if !snap.base.is_empty() {
            self.blocks
                .temp_pin_add(temp, &mut snap.base.iter().map(|r| r.0.cid))
                .map_err(DsError::block)?;
        }
        if let StageBuf::Memory(_) = snap.file {
            // Small files (most of them): one pass and one store write, no second thread.
            let mut blocks = Vec::new();
            let sealed = self.hash_staged(snap, &mut |b| {
                blocks.extend(b);
                true
            })?;
            let bytes: u64 = blocks.iter().map(|(_, b)| b.len() as u64).sum();
            if bytes <= LIGHT_SEAL && self.blocks.put_temp_later(temp, blocks.clone()) {
                return Ok((sealed, blocks));
            }
            self.blocks
                .put_temp(temp, &blocks)
                .map_err(DsError::block)?;
            return Ok((sealed, Vec::new()));
        }
        // Two stages on two threads: this one reads, chunks and hashes; the other stores the
        // blocks, so hashing and disk writes overlap.
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(Cid, Bytes)>>(4);
            let store = scope.spawn(move || -> Result<(), DsError> {
                for blocks in rx {
                    self.blocks
                        .put_temp(temp, &blocks)
                        .map_err(DsError::block)?;
                }
                Ok(())
            });
            // A failed send means the store stage failed; its error is reported below.
            let hashed = self.hash_staged(snap, &mut |b| tx.send(b).is_ok());
            drop(tx);
            store
                .join()
                .map_err(|_| DsError::Io("block store thread panicked".into()))??;
            hashed.map(|sealed| (sealed, Vec::new()))
        })
    }

    /// Chunks and hashes a snapshot, handing each batch of new blocks to `emit` (which says
    /// whether to go on).
    pub(super) fn hash_staged(
        &self,
        snap: &Snapshot,
        emit: &mut dyn FnMut(Vec<(Cid, Bytes)>) -> bool,
    ) -> Result<Sealed, DsError> {
        let mut w = FileWriter::new(&self.profile);
        for (leaf, n) in &snap.base {
            w.push_leaf_run(*leaf, *n);
        }
        let total = snap.size - snap.base_len;
        let mut buf = Vec::new();
        for (start, end, is_data) in snap.file.extents(total).map_err(DsError::io)? {
            if !is_data {
                write_zeros(&mut w, end - start);
            } else if let StageBuf::Memory(v) = &snap.file {
                // Bytes past the buffer's end (a truncate that grew it) are zeros.
                let have = (end.min(v.len() as u64)).max(start);
                w.write(&v[start as usize..have as usize]);
                write_zeros(&mut w, end - have);
            } else {
                if buf.is_empty() {
                    buf = vec![0u8; self.profile.chunk_size.max(1 << 20)];
                }
                let mut pos = start;
                while pos < end {
                    let want = (buf.len() as u64).min(end - pos) as usize;
                    let got = snap
                        .file
                        .read_at(&mut buf[..want], pos)
                        .map_err(DsError::io)?;
                    buf[got..want].fill(0);
                    w.write(&buf[..want]);
                    pos += want as u64;
                }
            }
            let blocks = w.take_blocks();
            if !blocks.is_empty() && !emit(blocks) {
                break;
            }
        }
        let root = w.finish();
        emit(w.take_blocks());
        Ok(Sealed {
            cid: root.cid,
            size: root.size,
            tsize: root.tsize,
        })
    }

    /// Makes `new` the file's closed content: journaled (so it survives a crash) and in the
    /// closed tree; the live staging buffer then keeps only the last partial chunk, so the next
    /// append reuses every full leaf.
    pub(super) fn install(
        &self,
        mut st: parking_lot::MutexGuard<'_, State>,
        id: NodeId,
        new: Sealed,
        generation: u64,
        temp: u64,
        inline: Vec<(Cid, Bytes)>,
    ) -> Result<(), DsError> {
        let Some(n) = st.nodes.get(&id) else {
            drop(st);
            self.release_temp(temp);
            return Ok(());
        };
        let parent = n.parent;
        let path = path_components(&st, id);
        if let Some(path) = &path {
            let put = Op::Put {
                path: path.clone(),
                kind: LeafKind::File,
                cid: new.cid,
                size: new.size,
                tsize: new.tsize,
                temp: Some(temp),
                target: Vec::new(),
                inline,
            };
            let put = super::stamped(&st, put, &[id, parent]);
            if let Err(e) = self.log(&mut st, put) {
                drop(st);
                self.release_temp(temp);
                return Err(e);
            }
        }
        let mut old_hold = None;
        if path.is_none() {
            // Unlinked while open: its content is in no version; the temporary pin now holds
            // it for the handles until the last close.
            if let Some(Body::File { hold, .. }) = st.nodes.get_mut(&id).map(|n| &mut n.body) {
                old_hold = hold.replace(temp);
            }
        }
        let result = self.rebase(&mut st, id, new, generation);
        drop(st);
        if let Some(t) = old_hold {
            self.release_temp(t);
        }
        result
    }

    /// After a seal: the staging buffer keeps only the last partial chunk (if nothing was
    /// written since the snapshot), so the next append reuses every full leaf.
    pub(super) fn rebase(
        &self,
        st: &mut State,
        id: NodeId,
        new: Sealed,
        generation: u64,
    ) -> Result<(), DsError> {
        let Some(n) = st.nodes.get_mut(&id) else {
            return Ok(());
        };
        let Body::File { sealed, staged, .. } = &mut n.body else {
            return Ok(());
        };
        *sealed = Some(new);
        let Some(s) = staged else { return Ok(()) };
        if s.generation != generation {
            return Ok(());
        }
        // The seal's pin covers the base leaves from now on.
        s.base_pin = None;
        let leaves = reusable_leaves(&self.blocks, &self.profile, &new).unwrap_or_default();
        let base_len = runs_len(&leaves);
        if base_len == s.base_len && !matches!(s.file, StageBuf::File(_)) {
            // Nothing new to leave to the leaves: the staged bytes already are the tail.
            s.base = leaves;
            s.dirty = false;
            return Ok(());
        }
        // The staged bytes are those just sealed (same generation): the tail comes from them
        // when they cover it, else from the new leaves.
        let tail = if new.size <= base_len {
            Vec::new()
        } else if base_len >= s.base_len {
            let mut tail = vec![0u8; (new.size - base_len) as usize];
            let got = s
                .file
                .read_at(&mut tail, base_len - s.base_len)
                .map_err(DsError::io)?;
            tail[got..].fill(0); // past the staging file's end: zeros (a grown truncate)
            tail
        } else {
            read_sealed(&self.blocks, &new.cid, new.size, base_len, new.size)?
        };
        s.file = StageBuf::new();
        s.file
            .write_all_at(&tail, 0, &|| self.spill_file())
            .map_err(DsError::io)?;
        s.base = leaves;
        s.base_len = base_len;
        s.dirty = false;
        Ok(())
    }
}
