//! [`DiskStore`]: flatfs-style block files plus an SQLite index. Layout and invariants are in the crate docs.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cid::Cid;
use multibase::Base;
use parking_lot::{Mutex, RwLock};
use rusqlite::{params, Connection, OptionalExtension};
use tracing::{debug, info, warn};

use crate::{
    block_key, low_water, select_victims, BlockStore, EvictStats, PinInfo, StoreConfig, StoreError,
    StoreStats, TempPinId, IDENTITY_CODE,
};

/// Version of the on-disk layout written to `dir/VERSION`.
pub const LAYOUT_VERSION: u32 = 1;

/// Pending access records that trigger a (non-blocking) flush to the index.
/// Distinct pending access records that wake the flusher thread early.
const FLUSH_BATCH: usize = 4096;
/// The flusher thread persists pending access records at least this often.
const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Above this many distinct directories to fsync, one `syncfs` is cheaper than one fsync per directory.
const MAX_DIR_FSYNCS: usize = 32;

type Key = Box<[u8]>;
type Result<T, E = StoreError> = std::result::Result<T, E>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS blocks (
    mh BLOB PRIMARY KEY NOT NULL,
    size INTEGER NOT NULL,
    last_access INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pins (
    root BLOB PRIMARY KEY NOT NULL,
    label TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pin_blocks (
    root BLOB NOT NULL,
    mh BLOB NOT NULL,
    PRIMARY KEY (root, mh)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pin_blocks_mh ON pin_blocks (mh);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY NOT NULL,
    value
);
CREATE TABLE IF NOT EXISTS temp_pins (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS temp_pins_owner ON temp_pins (owner);
CREATE TABLE IF NOT EXISTS temp_pin_blocks (
    id INTEGER NOT NULL,
    mh BLOB NOT NULL,
    PRIMARY KEY (id, mh)
) WITHOUT ROWID;
";

/// How [`DiskStore::open`] found the store ([`DiskStore::opened`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// No index existed: the store is new (or its index was deleted; then `rebuilt` tells what
    /// the scan of `blocks/` adopted).
    Created { rebuilt: RecoveryStats },
    /// The last process closed it in order: nothing to repair.
    Clean,
    /// The last process did not close it (crash, kill): `blocks/` was scanned and the index
    /// repaired.
    Recovered(RecoveryStats),
}

/// What a recovery scan of `blocks/` did (see [`DiskStore::recover`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecoveryStats {
    /// Leftover temporary files deleted.
    pub temp_removed: u64,
    /// Index rows dropped because their block file was missing.
    pub rows_dropped: u64,
    /// Block files without an index row that were adopted into the index.
    pub files_adopted: u64,
}

struct Entry {
    size: u64,
    last_access: AtomicU64,
}

/// In-memory mirror of the index: what `get`, `has`, `stats` and eviction read without touching SQLite.
#[derive(Default)]
struct State {
    blocks: HashMap<Key, Entry>,
    /// Number of pins and temporary pins listing each block (present or not): a block is protected while it has an
    /// entry here.
    pin_counts: HashMap<Key, u32>,
    /// Number of temporary pins listing each block (a subset of what `pin_counts` counts).
    temp_counts: HashMap<Key, u32>,
    bytes: u64,
    pinned_bytes: u64,
    pinned_blocks: u64,
    temp_pinned_bytes: u64,
    temp_pinned_blocks: u64,
}

impl State {
    fn insert(&mut self, key: Key, size: u64, access: u64) -> bool {
        if self.blocks.contains_key(&key) {
            return false;
        }
        if self.pin_counts.contains_key(&key) {
            self.pinned_bytes += size;
            self.pinned_blocks += 1;
        }
        if self.temp_counts.contains_key(&key) {
            self.temp_pinned_bytes += size;
            self.temp_pinned_blocks += 1;
        }
        self.bytes += size;
        self.blocks.insert(
            key,
            Entry {
                size,
                last_access: AtomicU64::new(access),
            },
        );
        true
    }

    fn remove(&mut self, key: &[u8]) -> Option<u64> {
        let e = self.blocks.remove(key)?;
        self.bytes -= e.size;
        if self.pin_counts.contains_key(key) {
            self.pinned_bytes -= e.size;
            self.pinned_blocks -= 1;
        }
        if self.temp_counts.contains_key(key) {
            self.temp_pinned_bytes -= e.size;
            self.temp_pinned_blocks -= 1;
        }
        Some(e.size)
    }

    /// One more temporary pin lists `key` (which also counts as one more protection in `pin_counts`).
    fn temp_inc(&mut self, key: &[u8]) {
        self.pin_inc(key);
        if let Some(c) = self.temp_counts.get_mut(key) {
            *c += 1;
            return;
        }
        self.temp_counts.insert(key.into(), 1);
        if let Some(e) = self.blocks.get(key) {
            self.temp_pinned_bytes += e.size;
            self.temp_pinned_blocks += 1;
        }
    }

    fn temp_dec(&mut self, key: &[u8]) {
        let Some(c) = self.temp_counts.get_mut(key) else {
            return;
        };
        *c -= 1;
        if *c == 0 {
            self.temp_counts.remove(key);
            if let Some(e) = self.blocks.get(key) {
                self.temp_pinned_bytes -= e.size;
                self.temp_pinned_blocks -= 1;
            }
        }
        self.pin_dec(key);
    }

    fn pin_inc(&mut self, key: &[u8]) {
        if let Some(c) = self.pin_counts.get_mut(key) {
            *c += 1;
            return;
        }
        self.pin_counts.insert(key.into(), 1);
        if let Some(e) = self.blocks.get(key) {
            self.pinned_bytes += e.size;
            self.pinned_blocks += 1;
        }
    }

    fn pin_dec(&mut self, key: &[u8]) {
        let Some(c) = self.pin_counts.get_mut(key) else {
            return;
        };
        *c -= 1;
        if *c == 0 {
            self.pin_counts.remove(key);
            if let Some(e) = self.blocks.get(key) {
                self.pinned_bytes -= e.size;
                self.pinned_blocks -= 1;
            }
        }
    }

    fn unpinned_bytes(&self) -> u64 {
        self.bytes - self.pinned_bytes
    }
}

struct Index {
    conn: Connection,
}

type Pending = Mutex<HashMap<Key, u64>>;

/// Writes pending access times to the index in one transaction.
fn flush_pending(pending: &Pending, idx: &mut Index) -> Result<()> {
    let batch = std::mem::take(&mut *pending.lock());
    if batch.is_empty() {
        return Ok(());
    }
    let tx = idx.conn.transaction()?;
    {
        let mut st = tx
            .prepare_cached("UPDATE blocks SET last_access = MAX(last_access, ?2) WHERE mh = ?1")?;
        for (k, t) in &batch {
            st.execute(params![&k[..], *t as i64])?;
        }
    }
    tx.commit()?;
    debug!(n = batch.len(), "persisted LRU access times");
    Ok(())
}

/// Whether the temporary pin `id` exists.
fn temp_exists(conn: &Connection, id: TempPinId) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM temp_pins WHERE id = ?1")?
        .query_row(params![id as i64], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Adds `keys` to the temporary pin `id`; returns those it did not list yet.
fn temp_add_rows<'k>(conn: &Connection, id: TempPinId, keys: &'k [Key]) -> Result<Vec<&'k Key>> {
    let mut st =
        conn.prepare_cached("INSERT OR IGNORE INTO temp_pin_blocks (id, mh) VALUES (?1, ?2)")?;
    let mut added = Vec::new();
    for k in keys {
        if st.execute(params![id as i64, &k[..]])? > 0 {
            added.push(k);
        }
    }
    Ok(added)
}

/// Deletes the temporary pin `id` and its block list; returns its blocks, or `None` if it did not exist.
fn temp_delete(conn: &Connection, id: TempPinId) -> Result<Option<Vec<Vec<u8>>>> {
    let keys: Vec<Vec<u8>> = {
        let mut st = conn.prepare_cached("SELECT mh FROM temp_pin_blocks WHERE id = ?1")?;
        let rows = st.query_map(params![id as i64], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    conn.prepare_cached("DELETE FROM temp_pin_blocks WHERE id = ?1")?
        .execute(params![id as i64])?;
    let existed = conn
        .prepare_cached("DELETE FROM temp_pins WHERE id = ?1")?
        .execute(params![id as i64])?
        > 0;
    Ok(existed.then_some(keys))
}

/// Writes the pin of `root_bytes` with the block set `set`, replacing an earlier pin of the same root; returns the
/// earlier block set (empty if there was none).
fn pin_write(
    conn: &Connection,
    root_bytes: &[u8],
    label: &str,
    set: &HashSet<Key>,
) -> Result<Vec<Vec<u8>>> {
    let old: Vec<Vec<u8>> = {
        let mut st = conn.prepare_cached("SELECT mh FROM pin_blocks WHERE root = ?1")?;
        let rows = st.query_map(params![root_bytes], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    conn.execute(
        "DELETE FROM pin_blocks WHERE root = ?1",
        params![root_bytes],
    )?;
    conn.execute(
        "INSERT OR REPLACE INTO pins (root, label, created) VALUES (?1, ?2, ?3)",
        params![root_bytes, label, now_secs()],
    )?;
    let mut st = conn.prepare_cached("INSERT INTO pin_blocks (root, mh) VALUES (?1, ?2)")?;
    for k in set {
        st.execute(params![root_bytes, &k[..]])?;
    }
    Ok(old)
}

/// The ids of the temporary pins of `owner`, oldest first.
fn temp_ids_of(conn: &Connection, owner: &str) -> Result<Vec<TempPinId>> {
    let mut st = conn.prepare_cached("SELECT id FROM temp_pins WHERE owner = ?1 ORDER BY id")?;
    let rows = st.query_map(params![owner], |r| r.get::<_, i64>(0))?;
    Ok(rows
        .map(|r| r.map(|id| id as TempPinId))
        .collect::<rusqlite::Result<_>>()?)
}

/// The distinct store keys of `root` (if given) and `blocks` (identity CIDs left out).
fn key_set(root: Option<&Cid>, blocks: &mut dyn Iterator<Item = Cid>) -> HashSet<Key> {
    let mut set: HashSet<Key> = HashSet::new();
    if let Some(k) = root.and_then(block_key) {
        set.insert(k.into_boxed_slice());
    }
    for c in blocks {
        if let Some(k) = block_key(&c) {
            set.insert(k.into_boxed_slice());
        }
    }
    set
}

/// Background thread that persists access records, so `get` never waits for SQLite.
struct Flusher {
    wake: Option<mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    fn start(index: Arc<Mutex<Index>>, pending: Arc<Pending>) -> Self {
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("store-lru-flush".into())
            .spawn(move || loop {
                match rx.recv_timeout(FLUSH_INTERVAL) {
                    Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                }
                if pending.lock().is_empty() {
                    continue;
                }
                let mut idx = index.lock();
                if let Err(e) = flush_pending(&pending, &mut idx) {
                    warn!(error = %e, "could not persist LRU access times");
                }
            })
            .ok();
        if thread.is_none() {
            warn!("could not start the LRU flusher thread: access times are persisted on eviction and close only");
        }
        Flusher {
            wake: Some(tx),
            thread,
        }
    }

    fn wake(&self) {
        if let Some(w) = &self.wake {
            let _ = w.try_send(());
        }
    }

    fn stop(&mut self) {
        self.wake = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The persistent block store: one file per block, SQLite index. See the crate docs.
pub struct DiskStore {
    dir: PathBuf,
    blocks_dir: PathBuf,
    capacity: u64,
    sync_writes: bool,
    state: RwLock<State>,
    index: Arc<Mutex<Index>>,
    /// Access records not yet written to the index: key -> logical time.
    pending: Arc<Pending>,
    flusher: Flusher,
    clock: AtomicU64,
    tmp_counter: AtomicU64,
    /// Temporary pins handed out but not written to the index yet: a pin protects nothing until
    /// its first block, so its row is written in the transaction that adds that block (most
    /// pins hold one small file: one transaction instead of two). Id -> owner. Read and changed
    /// with the index lock held.
    unborn_temps: Mutex<HashMap<TempPinId, String>>,
    /// The next temporary pin id (ids are never reused, like the table's AUTOINCREMENT).
    next_temp: AtomicU64,
    /// Ids up to this are recorded as handed out (`meta.temp_reserved`), so that an unborn id
    /// is not handed out again after a restart; reserved [`TEMP_ID_BATCH`] at a time.
    temp_reserved: AtomicU64,
    /// Set by [`DiskStore::abandon`]: drop without the orderly close.
    abandoned: bool,
    /// How `open` found the store.
    opened: Opened,
    /// Held (flock) until the store is dropped; declared last so the index closes first.
    _lock: File,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("dir", &self.dir)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// File name stem of a key: base32, uppercase, no padding (as Kubo's flatfs).
fn key_name(key: &[u8]) -> String {
    Base::Base32Upper.encode(key)
}

/// flatfs `next-to-last/2` shard: the two characters before the last one.
fn shard_of(name: &str) -> &str {
    let n = name.len();
    if n >= 3 {
        &name[n - 3..n - 1]
    } else {
        "__"
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn fsync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(path, e))
}

fn remove_file_quiet(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            warn!(path = %path.display(), error = %e, "could not remove file");
        }
    }
}

/// Temporary pin ids recorded as handed out per index write.
const TEMP_ID_BATCH: u64 = 1024;

/// How long a busy store lock is retried before [`StoreError::Locked`].
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(750);

/// Creates `path` and any missing parents with mode 0700 (before the umask): the store holds
/// keys, private datasets and a control socket, so what we create is the owner's alone. A
/// directory that exists keeps its mode.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// A store directory others may enter (made by an older version, or on purpose) is logged once
/// at open, not changed.
fn warn_if_shared(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = fs::metadata(dir) {
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warn!(
                dir = %dir.display(),
                "the store directory has mode {mode:o}: other users may read its blocks and datasets (chmod 700 to keep them out)"
            );
        }
    }
}

fn acquire_lock(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    // A lock this process released can stay busy for a moment: a thread that forked meanwhile
    // gave its child a copy of the descriptor, held until the child execs (close-on-exec). So a
    // lock whose recorded holder is this very process is retried briefly; another holder's
    // lock is reported at once.
    let deadline = std::time::Instant::now() + LOCK_RETRY;
    let err = loop {
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            break None;
        }
        let err = io::Error::last_os_error();
        let ours = || {
            let mut s = String::new();
            let _ = (&f).read_to_string(&mut s);
            let _ = (&f).seek(io::SeekFrom::Start(0));
            s.trim().parse::<u32>().ok() == Some(std::process::id())
        };
        if err.raw_os_error() != Some(libc::EWOULDBLOCK)
            || std::time::Instant::now() >= deadline
            || !ours()
        {
            break Some(err);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    if let Some(err) = err {
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut s = String::new();
            let _ = f.read_to_string(&mut s);
            return Err(StoreError::Locked {
                path: dir.to_path_buf(),
                pid: s.trim().parse().ok(),
            });
        }
        return Err(StoreError::io(&path, err));
    }
    f.set_len(0)
        .and_then(|_| writeln!(f, "{}", std::process::id()))
        .map_err(|e| StoreError::io(&path, e))?;
    Ok(f)
}

fn check_version(dir: &Path, sync: bool) -> Result<()> {
    let path = dir.join("VERSION");
    match fs::read_to_string(&path) {
        Ok(s) => {
            if s.trim() == LAYOUT_VERSION.to_string() {
                Ok(())
            } else {
                Err(StoreError::UnsupportedVersion {
                    path,
                    found: s.trim().to_string(),
                    expected: LAYOUT_VERSION,
                })
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if dir.join("index.sqlite").exists() {
                return Err(StoreError::UnsupportedVersion {
                    path,
                    found: "(no VERSION file)".into(),
                    expected: LAYOUT_VERSION,
                });
            }
            let tmp = dir.join("VERSION.tmp");
            let write = || -> io::Result<()> {
                let mut f = File::create(&tmp)?;
                writeln!(f, "{LAYOUT_VERSION}")?;
                if sync {
                    f.sync_all()?;
                }
                fs::rename(&tmp, &path)
            };
            write().map_err(|e| StoreError::io(&path, e))?;
            if sync {
                fsync_dir(dir)?;
            }
            Ok(())
        }
        Err(e) => Err(StoreError::io(path, e)),
    }
}

enum ReadOutcome {
    Data(Vec<u8>),
    WrongSize,
    Missing,
}

/// Reads a block file expected to hold `size` bytes: open, fstat, read. No zero-filling of the buffer.
fn read_block(path: &Path, size: u64) -> io::Result<ReadOutcome> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadOutcome::Missing),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len != size {
        return Ok(ReadOutcome::WrongSize);
    }
    // Read straight into uninitialized capacity with as few read(2) calls as the kernel allows (usually one), like
    // std::fs::read does. `Read::read_to_end` on a `Take` would start with 8 KiB reads and double.
    let size = usize::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "block too large"))?;
    let mut buf: Vec<u8> = Vec::with_capacity(size);
    while buf.len() < size {
        let want = size - buf.len();
        let spare = &mut buf.spare_capacity_mut()[..want];
        // SAFETY: the kernel writes at most `spare.len()` bytes into memory we own; `set_len` below only covers
        // the bytes it reported as written.
        let n = unsafe { libc::read(f.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(ReadOutcome::WrongSize); // shorter than its fstat said: truncated concurrently
        }
        // SAFETY: `n` bytes past the old length were initialized by read(2).
        unsafe { buf.set_len(buf.len() + n as usize) };
    }
    Ok(ReadOutcome::Data(buf))
}

/// A block written to its temporary file, waiting for rename + index.
struct Staged {
    key: Key,
    tmp: PathBuf,
    path: PathBuf,
    size: u64,
}

impl DiskStore {
    /// Opens or creates the store in `config.dir`. See the crate docs for locking, versioning and recovery.
    pub fn open(config: StoreConfig) -> Result<Self> {
        let dir = config.dir;
        create_private_dir(&dir).map_err(|e| StoreError::io(&dir, e))?;
        warn_if_shared(&dir);
        let lock = acquire_lock(&dir)?;
        check_version(&dir, config.sync_writes)?;
        let blocks_dir = dir.join("blocks");
        create_private_dir(&blocks_dir).map_err(|e| StoreError::io(&blocks_dir, e))?;

        let conn = Connection::open(dir.join("index.sqlite"))?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            warn!(mode, "SQLite refused WAL mode");
        }
        conn.pragma_update(
            None,
            "synchronous",
            if config.sync_writes { "FULL" } else { "NORMAL" },
        )?;
        conn.execute_batch(SCHEMA)?;
        // No row: an index created just now (a new store); 0: the last process did not close
        // the store; 1: it did.
        let clean_flag: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE key = 'clean'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?;
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('clean', 0)",
            [],
        )?;

        let mut state = State::default();
        let mut max_access = 0u64;
        {
            let mut st = conn.prepare("SELECT mh, size, last_access FROM blocks")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let key: Vec<u8> = r.get(0)?;
                let size: i64 = r.get(1)?;
                let access: i64 = r.get(2)?;
                max_access = max_access.max(access as u64);
                state.insert(key.into_boxed_slice(), size as u64, access as u64);
            }
            let mut st = conn.prepare("SELECT mh, COUNT(*) FROM pin_blocks GROUP BY mh")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let key: Vec<u8> = r.get(0)?;
                let n: i64 = r.get(1)?;
                for _ in 0..n {
                    state.pin_inc(&key);
                }
            }
            let mut st = conn.prepare("SELECT mh, COUNT(*) FROM temp_pin_blocks GROUP BY mh")?;
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let key: Vec<u8> = r.get(0)?;
                let n: i64 = r.get(1)?;
                for _ in 0..n {
                    state.temp_inc(&key);
                }
            }
        }

        // Past every id ever handed out: written ones (AUTOINCREMENT's sequence) and those an
        // earlier process reserved for pins it never wrote.
        let last_temp: i64 = conn.query_row(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'temp_pins'), 0),
                        COALESCE((SELECT MAX(id) FROM temp_pins), 0),
                        COALESCE((SELECT value FROM meta WHERE key = 'temp_reserved'), 0))",
            [],
            |r| r.get(0),
        )?;

        let index = Arc::new(Mutex::new(Index { conn }));
        let pending: Arc<Pending> = Arc::default();
        let mut store = DiskStore {
            dir,
            blocks_dir,
            capacity: config.cache_capacity,
            sync_writes: config.sync_writes,
            state: RwLock::new(state),
            flusher: Flusher::start(Arc::clone(&index), Arc::clone(&pending)),
            index,
            pending,
            clock: AtomicU64::new(max_access + 1),
            tmp_counter: AtomicU64::new(0),
            unborn_temps: Mutex::new(HashMap::new()),
            next_temp: AtomicU64::new(last_temp as u64 + 1),
            temp_reserved: AtomicU64::new(last_temp as u64),
            abandoned: false,
            opened: Opened::Clean,
            _lock: lock,
        };
        match clean_flag {
            Some(1) => {}
            None => {
                // A new index: a new store, or an index deleted by hand (then the block files
                // are adopted).
                let r = store.recover()?;
                if r == RecoveryStats::default() {
                    info!(dir = %store.dir.display(), "store created");
                } else {
                    info!(dir = %store.dir.display(), temp_removed = r.temp_removed,
                        files_adopted = r.files_adopted, "store index rebuilt from the block files");
                }
                store.opened = Opened::Created { rebuilt: r };
            }
            Some(_) => {
                let r = store.recover()?;
                info!(dir = %store.dir.display(), temp_removed = r.temp_removed, rows_dropped = r.rows_dropped,
                    files_adopted = r.files_adopted, "store recovered after unclean shutdown");
                store.opened = Opened::Recovered(r);
            }
        }
        Ok(store)
    }

    /// How [`DiskStore::open`] found the store: new, closed in order, or recovered.
    pub fn opened(&self) -> Opened {
        self.opened
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the block file of `cid` if the block is present (e.g. for passthrough reads). The file is immutable
    /// but may be evicted at any time.
    pub fn block_path(&self, cid: &Cid) -> Option<PathBuf> {
        let key = block_key(cid)?;
        self.state
            .read()
            .blocks
            .contains_key(&key[..])
            .then(|| self.path_for_name(&key_name(&key)))
    }

    fn path_for_name(&self, name: &str) -> PathBuf {
        let mut p = self.blocks_dir.join(shard_of(name));
        p.push(format!("{name}.data"));
        p
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Refreshes recency if present. Returns whether the block is present.
    fn touch(&self, key: &[u8]) -> bool {
        let tick = self.tick();
        {
            let st = self.state.read();
            match st.blocks.get(key) {
                Some(e) => e.last_access.fetch_max(tick, Ordering::Relaxed),
                None => return false,
            };
        }
        self.record_access(key.into(), tick);
        true
    }

    fn record_access(&self, key: Key, tick: u64) {
        let n = {
            let mut p = self.pending.lock();
            let t = p.entry(key).or_insert(0);
            *t = (*t).max(tick);
            p.len()
        };
        if n >= FLUSH_BATCH {
            // Never touch the index on the read path: the flusher thread does it.
            self.flusher.wake();
        }
    }

    /// Housekeeping after a write under the index lock: automatic eviction.
    fn after_write(&self, idx: &mut Index) -> Result<()> {
        if self.state.read().unpinned_bytes() > self.capacity {
            let s = self.evict_locked(idx, low_water(self.capacity))?;
            debug!(blocks = s.blocks, bytes = s.bytes, "automatic eviction");
        }
        Ok(())
    }

    /// Writes `data` to a fresh temporary file next to `path` (fsynced if `sync_writes`).
    fn write_temp(&self, path: &Path, data: &[u8]) -> Result<PathBuf> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let mut name = path
            .file_name()
            .expect("block path has a name")
            .to_os_string();
        name.push(format!(".{}.{}.tmp", std::process::id(), n));
        let tmp = path.with_file_name(name);
        let open = || OpenOptions::new().write(true).create_new(true).open(&tmp);
        let mut f = match open() {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let shard = path.parent().expect("block path has a shard dir");
                create_private_dir(shard).map_err(|e| StoreError::io(shard, e))?;
                if self.sync_writes {
                    fsync_dir(&self.blocks_dir)?;
                }
                open().map_err(|e| StoreError::io(&tmp, e))?
            }
            Err(e) => return Err(StoreError::io(&tmp, e)),
        };
        let res = f.write_all(data).and_then(|_| {
            if self.sync_writes {
                f.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = res {
            drop(f);
            remove_file_quiet(&tmp);
            return Err(StoreError::io(&tmp, e));
        }
        Ok(tmp)
    }

    /// Makes directory entries durable: one fsync per directory, or one `syncfs` when there are many.
    fn sync_dirs(&self, dirs: &HashSet<PathBuf>) -> Result<()> {
        if dirs.len() <= MAX_DIR_FSYNCS {
            for d in dirs {
                fsync_dir(d)?;
            }
            return Ok(());
        }
        let f = File::open(&self.blocks_dir).map_err(|e| StoreError::io(&self.blocks_dir, e))?;
        // SAFETY: syncfs on a file descriptor we own.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(StoreError::io(&self.blocks_dir, io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Renames staged files into place and indexes them, all under the index lock, in one transaction. With
    /// `temp = Some((id, keys))` the same transaction adds `keys` to the temporary pin `id` (which the caller checked
    /// exists), and the memory mirror protects them in the same state update that makes the new blocks present.
    fn commit_staged(
        &self,
        idx: &mut Index,
        staged: Vec<Staged>,
        temps: &[(TempPinId, Vec<Key>)],
    ) -> Result<()> {
        let mut placed: Vec<Staged> = Vec::with_capacity(staged.len());
        let mut rest = staged.into_iter();
        let res = (|| -> Result<()> {
            for s in rest.by_ref() {
                if self.state.read().blocks.contains_key(&s.key) {
                    // A concurrent put stored it meanwhile.
                    remove_file_quiet(&s.tmp);
                    continue;
                }
                if let Err(e) = fs::rename(&s.tmp, &s.path) {
                    remove_file_quiet(&s.tmp);
                    return Err(StoreError::io(&s.path, e));
                }
                placed.push(s);
            }
            if placed.is_empty() && temps.is_empty() {
                return Ok(());
            }
            if self.sync_writes && !placed.is_empty() {
                let dirs: HashSet<PathBuf> = placed
                    .iter()
                    .filter_map(|s| s.path.parent().map(Path::to_path_buf))
                    .collect();
                self.sync_dirs(&dirs)?;
            }
            // One tick per block, in batch order, so LRU order within a batch is well defined.
            let first_tick = self.clock.fetch_add(placed.len() as u64, Ordering::Relaxed);
            let tx = idx.conn.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT OR REPLACE INTO blocks (mh, size, last_access) VALUES (?1, ?2, ?3)",
                )?;
                for (i, s) in placed.iter().enumerate() {
                    st.execute(params![
                        &s.key[..],
                        s.size as i64,
                        (first_tick + i as u64) as i64
                    ])?;
                }
            }
            let mut born = Vec::new();
            let mut added = Vec::new();
            for (id, keys) in temps {
                if self.write_unborn(&tx, *id)? {
                    born.push(*id);
                }
                added.extend(temp_add_rows(&tx, *id, keys)?);
            }
            tx.commit()?;
            if !born.is_empty() {
                let mut unborn = self.unborn_temps.lock();
                for id in born {
                    unborn.remove(&id);
                }
            }
            let mut state = self.state.write();
            for (i, s) in placed.drain(..).enumerate() {
                state.insert(s.key, s.size, first_tick + i as u64);
            }
            for k in added {
                state.temp_inc(k);
            }
            Ok(())
        })();
        if res.is_err() {
            // Nothing of this batch is indexed: remove what was renamed and what is still staged.
            for s in placed {
                remove_file_quiet(&s.path);
            }
            for s in rest {
                remove_file_quiet(&s.tmp);
            }
        }
        res
    }

    fn evict_locked(&self, idx: &mut Index, target: u64) -> Result<EvictStats> {
        flush_pending(&self.pending, idx)?;
        let victims: Vec<(u64, Key)> = {
            let st = self.state.read();
            let unpinned = st.unpinned_bytes();
            if unpinned <= target {
                return Ok(EvictStats::default());
            }
            let candidates = st
                .blocks
                .iter()
                .filter(|(k, _)| !st.pin_counts.contains_key(*k))
                .map(|(k, e)| (e.last_access.load(Ordering::Relaxed), e.size, k))
                .collect();
            select_victims(candidates, unpinned, target)
                .into_iter()
                .map(|(s, k)| (s, k.clone()))
                .collect()
        };
        let tx = idx.conn.transaction()?;
        {
            let mut st = tx.prepare_cached("DELETE FROM blocks WHERE mh = ?1")?;
            for (_, k) in &victims {
                st.execute(params![&k[..]])?;
            }
        }
        tx.commit()?;
        let mut stats = EvictStats::default();
        {
            let mut st = self.state.write();
            for (_, k) in &victims {
                if let Some(size) = st.remove(k) {
                    stats.blocks += 1;
                    stats.bytes += size;
                }
            }
        }
        // Rows are gone; now the files (still under the index lock, so no put of the same block interleaves).
        for (_, k) in &victims {
            remove_file_quiet(&self.path_for_name(&key_name(k)));
        }
        Ok(stats)
    }

    /// Called by `get` when a block file is missing or has the wrong size. Re-checks under the index lock; if the
    /// problem persists, drops the row (and the file). Returns true if the file now looks right (retry the read).
    fn handle_bad_file(&self, cid: &Cid, key: &[u8]) -> Result<bool> {
        let idx = self.index.lock();
        let Some(size) = self.state.read().blocks.get(key).map(|e| e.size) else {
            return Ok(false); // evicted concurrently: simply absent
        };
        let path = self.path_for_name(&key_name(key));
        match fs::metadata(&path) {
            Ok(m) if m.len() == size => return Ok(true),
            Ok(m) => {
                warn!(%cid, path = %path.display(), expected = size, actual = m.len(),
                    "block file has the wrong size: removing it as corrupt");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                warn!(%cid, path = %path.display(), "block file missing: dropping its index entry");
            }
            Err(e) => return Err(StoreError::io(path, e)),
        }
        idx.conn
            .prepare_cached("DELETE FROM blocks WHERE mh = ?1")?
            .execute(params![key])?;
        self.state.write().remove(key);
        self.pending.lock().remove(key);
        remove_file_quiet(&path);
        Ok(false)
    }

    /// Scans `blocks/` and reconciles it with the index: deletes leftover temporary files (except this process's
    /// in-flight ones), drops rows whose file is missing, adopts unindexed block files. Runs automatically at open
    /// after an unclean shutdown.
    pub fn recover(&self) -> Result<RecoveryStats> {
        let mut idx = self.index.lock();
        flush_pending(&self.pending, &mut idx)?;
        let mut stats = RecoveryStats::default();
        let own_tmp = format!(".{}.", std::process::id());
        let mut seen: HashSet<Key> = HashSet::new();
        let mut adopt: Vec<(Key, u64)> = Vec::new();
        let rd = |p: &Path| fs::read_dir(p).map_err(|e| StoreError::io(p, e));
        for shard in rd(&self.blocks_dir)? {
            let shard = shard.map_err(|e| StoreError::io(&self.blocks_dir, e))?;
            let shard_path = shard.path();
            if !shard.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let shard_name = shard.file_name();
            for f in rd(&shard_path)? {
                let f = f.map_err(|e| StoreError::io(&shard_path, e))?;
                let fname = f.file_name();
                let Some(name) = fname.to_str() else { continue };
                if name.ends_with(".tmp") {
                    if !name.contains(&own_tmp) {
                        remove_file_quiet(&f.path());
                        stats.temp_removed += 1;
                    }
                    continue;
                }
                let Some(stem) = name.strip_suffix(".data") else {
                    continue;
                };
                let key = match Base::Base32Upper.decode(stem) {
                    Ok(k) if key_name(&k) == stem && shard_of(stem) == shard_name => k,
                    _ => {
                        warn!(path = %f.path().display(), "ignoring unexpected file in the block directory");
                        continue;
                    }
                };
                match multihash::Multihash::<64>::from_bytes(&key) {
                    Ok(mh) if mh.code() != IDENTITY_CODE => {}
                    _ => {
                        warn!(path = %f.path().display(), "ignoring block file whose name is not a multihash");
                        continue;
                    }
                }
                let key = key.into_boxed_slice();
                if self.state.read().blocks.contains_key(&key) {
                    seen.insert(key);
                } else {
                    let size = f.metadata().map_err(|e| StoreError::io(f.path(), e))?.len();
                    adopt.push((key, size));
                }
            }
        }
        let missing: Vec<Key> = {
            let st = self.state.read();
            st.blocks
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect()
        };
        let tx = idx.conn.transaction()?;
        {
            let mut del = tx.prepare_cached("DELETE FROM blocks WHERE mh = ?1")?;
            for k in &missing {
                del.execute(params![&k[..]])?;
            }
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO blocks (mh, size, last_access) VALUES (?1, ?2, 0)",
            )?;
            for (k, size) in &adopt {
                ins.execute(params![&k[..], *size as i64])?;
            }
        }
        tx.commit()?;
        let mut st = self.state.write();
        for k in &missing {
            warn!(key = %key_name(k), "block file missing: dropped its index entry");
            st.remove(k);
        }
        stats.rows_dropped = missing.len() as u64;
        stats.files_adopted = adopt.len() as u64;
        for (k, size) in adopt {
            st.insert(k, size, 0);
        }
        Ok(stats)
    }

    /// Whether the temporary pin `id` was handed out and not released.
    fn temp_known(&self, conn: &Connection, id: TempPinId) -> Result<bool> {
        Ok(self.unborn_temps.lock().contains_key(&id) || temp_exists(conn, id)?)
    }

    /// Writes the row of `id` if it is still unborn (inside the caller's transaction); true if it
    /// did, and then the caller removes it from the unborn map once that transaction commits.
    fn write_unborn(&self, conn: &Connection, id: TempPinId) -> Result<bool> {
        let Some(owner) = self.unborn_temps.lock().get(&id).cloned() else {
            return Ok(false);
        };
        conn.prepare_cached("INSERT INTO temp_pins (id, owner, created) VALUES (?1, ?2, ?3)")?
            .execute(params![id as i64, owner, now_secs()])?;
        Ok(true)
    }

    /// The temporary pins of `owner`, written or not yet, oldest first.
    fn temp_ids_with_unborn(&self, conn: &Connection, owner: &str) -> Result<Vec<TempPinId>> {
        let mut ids = temp_ids_of(conn, owner)?;
        ids.extend(
            self.unborn_temps
                .lock()
                .iter()
                .filter(|(_, o)| o.as_str() == owner)
                .map(|(id, _)| *id),
        );
        ids.sort_unstable();
        Ok(ids)
    }

    /// Releases the temporary pins `ids` in one transaction (unknown ids are skipped); returns how many existed.
    fn release_temps_locked(&self, idx: &mut Index, ids: &[TempPinId]) -> Result<u64> {
        let mut n = 0;
        let mut ids = ids.to_vec();
        {
            let mut unborn = self.unborn_temps.lock();
            ids.retain(|id| {
                let was = unborn.remove(id).is_some();
                n += was as u64;
                !was
            });
        }
        if ids.is_empty() {
            return Ok(n);
        }
        let tx = idx.conn.transaction()?;
        let mut released: Vec<Vec<u8>> = Vec::new();
        for &id in &ids {
            if let Some(keys) = temp_delete(&tx, id)? {
                n += 1;
                released.extend(keys);
            }
        }
        tx.commit()?;
        let mut state = self.state.write();
        for k in &released {
            state.temp_dec(k);
        }
        drop(state);
        // Released blocks beyond the capacity go now rather than at the next put.
        self.after_write(idx)?;
        Ok(n)
    }

    /// Drops the store without the orderly close (no access flush, no clean flag), as a crash would: the next open
    /// runs recovery. For tests.
    #[doc(hidden)]
    pub fn abandon(mut self) {
        self.abandoned = true;
    }

    fn close(&self) -> Result<()> {
        let mut idx = self.index.lock();
        flush_pending(&self.pending, &mut idx)?;
        idx.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        idx.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('clean', 1)",
            [],
        )?;
        Ok(())
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        self.flusher.stop();
        if self.abandoned {
            return;
        }
        if let Err(e) = self.close() {
            warn!(dir = %self.dir.display(), error = %e, "store did not close cleanly");
        }
    }
}

impl BlockStore for DiskStore {
    fn get(&self, cid: &Cid) -> Result<Option<Bytes>> {
        let Some(key) = block_key(cid) else {
            return Ok(None);
        };
        let path = self.path_for_name(&key_name(&key));
        for _ in 0..2 {
            let tick = self.tick();
            let size = {
                let st = self.state.read();
                match st.blocks.get(&key[..]) {
                    Some(e) => {
                        e.last_access.fetch_max(tick, Ordering::Relaxed);
                        e.size
                    }
                    None => return Ok(None),
                }
            };
            match read_block(&path, size).map_err(|e| StoreError::io(&path, e))? {
                ReadOutcome::Data(data) => {
                    self.record_access(key.into_boxed_slice(), tick);
                    return Ok(Some(Bytes::from(data)));
                }
                ReadOutcome::WrongSize | ReadOutcome::Missing => {
                    if !self.handle_bad_file(cid, &key)? {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(None)
    }

    fn has(&self, cid: &Cid) -> Result<bool> {
        Ok(match block_key(cid) {
            Some(key) => self.state.read().blocks.contains_key(&key[..]),
            None => false,
        })
    }

    fn put(&self, cid: &Cid, data: &[u8]) -> Result<()> {
        let Some(key) = block_key(cid) else {
            return Ok(());
        };
        if self.touch(&key) {
            return Ok(());
        }
        let path = self.path_for_name(&key_name(&key));
        let tmp = self.write_temp(&path, data)?;
        let mut idx = self.index.lock();
        let staged = Staged {
            key: key.into_boxed_slice(),
            tmp,
            path,
            size: data.len() as u64,
        };
        self.commit_staged(&mut idx, vec![staged], &[])?;
        self.after_write(&mut idx)
    }

    fn put_many(&self, blocks: &[(Cid, Bytes)]) -> Result<()> {
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut staged: Vec<Staged> = Vec::new();
        for (cid, data) in blocks {
            let Some(key) = block_key(cid) else { continue };
            if !seen.insert(key.clone()) || self.touch(&key) {
                continue;
            }
            let path = self.path_for_name(&key_name(&key));
            match self.write_temp(&path, data) {
                Ok(tmp) => staged.push(Staged {
                    key: key.into_boxed_slice(),
                    tmp,
                    path,
                    size: data.len() as u64,
                }),
                Err(e) => {
                    for s in &staged {
                        remove_file_quiet(&s.tmp);
                    }
                    return Err(e);
                }
            }
        }
        if staged.is_empty() {
            return Ok(());
        }
        let mut idx = self.index.lock();
        self.commit_staged(&mut idx, staged, &[])?;
        self.after_write(&mut idx)
    }

    fn pin(&self, root: &Cid, label: &str, blocks: &mut dyn Iterator<Item = Cid>) -> Result<()> {
        let root_bytes = root.to_bytes();
        let set = key_set(Some(root), blocks);
        let mut idx = self.index.lock();
        let tx = idx.conn.transaction()?;
        let old = pin_write(&tx, &root_bytes, label, &set)?;
        tx.commit()?;
        let mut state = self.state.write();
        for k in &set {
            state.pin_inc(k);
        }
        for k in &old {
            state.pin_dec(k);
        }
        drop(state);
        // Re-pinning may have released blocks.
        self.after_write(&mut idx)
    }

    fn unpin(&self, root: &Cid) -> Result<bool> {
        let root_bytes = root.to_bytes();
        let mut idx = self.index.lock();
        let tx = idx.conn.transaction()?;
        let existed = tx.execute("DELETE FROM pins WHERE root = ?1", params![&root_bytes])? > 0;
        let old: Vec<Vec<u8>> = {
            let mut st = tx.prepare_cached("SELECT mh FROM pin_blocks WHERE root = ?1")?;
            let rows = st.query_map(params![&root_bytes], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        tx.execute(
            "DELETE FROM pin_blocks WHERE root = ?1",
            params![&root_bytes],
        )?;
        tx.commit()?;
        let mut state = self.state.write();
        for k in &old {
            state.pin_dec(k);
        }
        drop(state);
        // Released blocks beyond the capacity go now rather than at the next put.
        self.after_write(&mut idx)?;
        Ok(existed)
    }

    fn pins(&self) -> Result<Vec<PinInfo>> {
        let idx = self.index.lock();
        let mut st = idx.conn.prepare_cached(
            "SELECT p.root, p.label, COUNT(pb.mh), COALESCE(SUM(b.size), 0)
             FROM pins p LEFT JOIN pin_blocks pb ON pb.root = p.root LEFT JOIN blocks b ON b.mh = pb.mh
             GROUP BY p.root ORDER BY p.created, p.root",
        )?;
        let rows = st.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (root, label, blocks, bytes) = row?;
            let root = Cid::try_from(root.as_slice()).map_err(|e| {
                StoreError::Corrupt(format!("pin with an invalid root CID in the index: {e}"))
            })?;
            out.push(PinInfo {
                root,
                label,
                blocks: blocks as u64,
                bytes: bytes as u64,
            });
        }
        Ok(out)
    }

    fn is_pinned(&self, cid: &Cid) -> Result<bool> {
        Ok(match block_key(cid) {
            Some(key) => self.state.read().pin_counts.contains_key(&key[..]),
            None => false,
        })
    }

    fn temp_pin(&self, owner: &str) -> Result<TempPinId> {
        let id = self.next_temp.fetch_add(1, Ordering::Relaxed);
        if id > self.temp_reserved.load(Ordering::Acquire) {
            let idx = self.index.lock();
            let reserved = self.temp_reserved.load(Ordering::Acquire);
            if id > reserved {
                let upto = id.max(reserved) + TEMP_ID_BATCH;
                idx.conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('temp_reserved', ?1)",
                    )?
                    .execute(params![upto as i64])?;
                self.temp_reserved.store(upto, Ordering::Release);
            }
        }
        self.unborn_temps.lock().insert(id, owner.to_string());
        Ok(id)
    }

    fn put_temp(&self, pin: TempPinId, blocks: &[(Cid, Bytes)]) -> Result<()> {
        match self.put_temp_many(&[(pin, blocks)])?.first() {
            Some(&unknown) => Err(StoreError::UnknownTempPin(unknown)),
            None => Ok(()),
        }
    }

    fn put_temp_many(&self, batches: &[(TempPinId, &[(Cid, Bytes)])]) -> Result<Vec<TempPinId>> {
        // Refuse unknown ids before touching or writing anything (checked again under the lock at commit).
        let mut unknown: Vec<TempPinId> = Vec::new();
        {
            let idx = self.index.lock();
            for (pin, _) in batches {
                if !self.temp_known(&idx.conn, *pin)? {
                    unknown.push(*pin);
                }
            }
        }
        let mut seen: HashSet<Key> = HashSet::new();
        let mut items: Vec<(Key, &Bytes)> = Vec::new();
        let mut temps: Vec<(TempPinId, Vec<Key>)> = Vec::new();
        for (pin, blocks) in batches {
            if unknown.contains(pin) {
                continue;
            }
            let mut keys = Vec::with_capacity(blocks.len());
            for (cid, data) in blocks.iter() {
                if let Some(key) = block_key(cid) {
                    let key = key.into_boxed_slice();
                    if seen.insert(key.clone()) {
                        items.push((key.clone(), data));
                    }
                    keys.push(key);
                }
            }
            temps.push((*pin, keys));
        }
        if temps.is_empty() {
            return Ok(unknown);
        }
        // Data is written outside the index lock. A block that is present now may be evicted before the lock is
        // taken; then it is written too (second pass) so that under the lock every block is present or staged,
        // and one transaction makes the new ones present and all of them protected.
        let mut staged: Vec<Staged> = Vec::new();
        let mut staged_keys: HashSet<Key> = HashSet::new();
        let mut first_pass = true;
        let mut idx = loop {
            for (key, data) in &items {
                if staged_keys.contains(key) || (first_pass && self.touch(key)) {
                    continue;
                }
                let path = self.path_for_name(&key_name(key));
                match self.write_temp(&path, data) {
                    Ok(tmp) => {
                        staged_keys.insert(key.clone());
                        staged.push(Staged {
                            key: key.clone(),
                            tmp,
                            path,
                            size: data.len() as u64,
                        });
                    }
                    Err(e) => {
                        for s in &staged {
                            remove_file_quiet(&s.tmp);
                        }
                        return Err(e);
                    }
                }
            }
            let idx = self.index.lock();
            let complete = {
                let st = self.state.read();
                items
                    .iter()
                    .all(|(k, _)| staged_keys.contains(k) || st.blocks.contains_key(k))
            };
            if complete {
                break idx;
            }
            drop(idx);
            first_pass = false;
        };
        // A pin released meanwhile protects nothing: its blocks are stored as cache.
        let mut known = Vec::with_capacity(temps.len());
        for (pin, keys) in temps {
            match self.temp_known(&idx.conn, pin) {
                Ok(true) => known.push((pin, keys)),
                Ok(false) => unknown.push(pin),
                Err(e) => {
                    for s in &staged {
                        remove_file_quiet(&s.tmp);
                    }
                    return Err(e);
                }
            }
        }
        self.commit_staged(&mut idx, staged, &known)?;
        self.after_write(&mut idx)?;
        Ok(unknown)
    }

    fn temp_pin_add(&self, pin: TempPinId, blocks: &mut dyn Iterator<Item = Cid>) -> Result<()> {
        let keys: Vec<Key> = key_set(None, blocks).into_iter().collect();
        let mut idx = self.index.lock();
        let tx = idx.conn.transaction()?;
        if !self.temp_known(&tx, pin)? {
            return Err(StoreError::UnknownTempPin(pin));
        }
        let born = self.write_unborn(&tx, pin)?;
        let added = temp_add_rows(&tx, pin, &keys)?;
        tx.commit()?;
        if born {
            self.unborn_temps.lock().remove(&pin);
        }
        let mut state = self.state.write();
        for k in added {
            state.temp_inc(k);
        }
        Ok(())
    }

    fn release_temp(&self, pin: TempPinId) -> Result<bool> {
        let mut idx = self.index.lock();
        Ok(self.release_temps_locked(&mut idx, &[pin])? > 0)
    }

    fn release_temp_owner(&self, owner: &str) -> Result<u64> {
        let mut idx = self.index.lock();
        let ids = self.temp_ids_with_unborn(&idx.conn, owner)?;
        self.release_temps_locked(&mut idx, &ids)
    }

    fn temp_pins(&self, owner: &str) -> Result<Vec<TempPinId>> {
        let idx = self.index.lock();
        self.temp_ids_with_unborn(&idx.conn, owner)
    }

    fn pin_with_temps(
        &self,
        root: &Cid,
        label: &str,
        blocks: &mut dyn Iterator<Item = Cid>,
        temps: &[TempPinId],
    ) -> Result<()> {
        let root_bytes = root.to_bytes();
        let mut set = key_set(Some(root), blocks);
        let temps: Vec<TempPinId> = temps
            .iter()
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut idx = self.index.lock();
        // Pins that never got a block protect nothing: they just end.
        let unborn: Vec<TempPinId> = {
            let map = self.unborn_temps.lock();
            temps
                .iter()
                .copied()
                .filter(|id| map.contains_key(id))
                .collect()
        };
        let tx = idx.conn.transaction()?;
        let mut released: Vec<Vec<u8>> = Vec::new();
        for &id in temps.iter().filter(|id| !unborn.contains(id)) {
            // Dropping `tx` on an error rolls everything back.
            let keys = temp_delete(&tx, id)?.ok_or(StoreError::UnknownTempPin(id))?;
            released.extend(keys);
        }
        set.extend(released.iter().map(|k| k.clone().into_boxed_slice()));
        let old = pin_write(&tx, &root_bytes, label, &set)?;
        tx.commit()?;
        {
            let mut map = self.unborn_temps.lock();
            for id in &unborn {
                map.remove(id);
            }
        }
        let mut state = self.state.write();
        // Protect first, then let go: no block's count passes through zero.
        for k in &set {
            state.pin_inc(k);
        }
        for k in &old {
            state.pin_dec(k);
        }
        for k in &released {
            state.temp_dec(k);
        }
        drop(state);
        self.after_write(&mut idx)
    }

    fn stats(&self) -> Result<StoreStats> {
        let st = self.state.read();
        Ok(StoreStats {
            blocks: st.blocks.len() as u64,
            bytes: st.bytes,
            pinned_blocks: st.pinned_blocks,
            pinned_bytes: st.pinned_bytes,
            temp_pinned_blocks: st.temp_pinned_blocks,
            temp_pinned_bytes: st.temp_pinned_bytes,
            cache_capacity: self.capacity,
        })
    }

    fn evict(&self) -> Result<EvictStats> {
        let mut idx = self.index.lock();
        self.evict_locked(&mut idx, self.capacity)
    }

    fn evict_to(&self, target: u64) -> Result<EvictStats> {
        let mut idx = self.index.lock();
        self.evict_locked(&mut idx, target.min(self.capacity))
    }

    fn flush(&self) -> Result<()> {
        let mut idx = self.index.lock();
        flush_pending(&self.pending, &mut idx)?;
        idx.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}
