//! One dataset's working tree: the live tree every FUSE request sees, staged files, sealing,
//! the journal and group commits.
//!
//! Three states of one dataset, from the newest to the oldest:
//!
//! * **live** (`State::nodes`): every write as it happens, open files included (their bytes
//!   in a staging buffer). This is what `/datasets/<name>` shows.
//! * **closed** (`State::closed`, see `closed.rs`): what writers have acknowledged: files as
//!   they were last closed or fsynced, made durable by one journal record each (`journal.rs`).
//!   Blocks of a sealed file are under a temporary pin from their first byte.
//! * **committed** (`HEAD`): the last version, a commit record over a UnixFS root. The
//!   committer folds the closed tree into a new version when the dataset has been quiet for a
//!   short while, at least every few seconds under continuous writes, on `fsync`, on demand
//!   and at unmount: rebuilding only the directories on changed paths, pinning the new blocks
//!   (absorbing the temporary pins), then moving HEAD and trimming the journal.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cid::Cid;
use ipfs_mount_ipld::builder::ImportProfile;
use ipfs_mount_ipld::dagpb::{self, PbNode};
use ipfs_mount_ipld::dirtree;
use ipfs_mount_ipld::reader;
use ipfs_mount_ipld::unixfs::{self, DataType, Node, UnixFsData};
use ipfs_mount_ipld::{cids, codec};
use parking_lot::Mutex;

use super::chunker::{FileWriter, Leaf};
use super::closed::{self, ClosedDir, ClosedLeaf, ClosedTree};
use super::commit::{Commit, Meta};
use super::journal::{DsPath, Journal, LeafKind, Op};
use super::stagebuf::StageBuf;
use super::Hooks;
use crate::blocks::BlockService;

mod seal;

use seal::{
    push_run, read_sealed, reusable_leaves, runs_len, zero_leaf, PinGuard, Stream, STREAM_FROM,
};

pub type NodeId = u64;
pub const ROOT_NODE: NodeId = 1;

/// The longest name a directory entry may have (bytes), as on every Linux filesystem.
pub const NAME_MAX: usize = 255;

/// The largest file a dataset holds: 2^50 bytes (1 PiB). Sparse files that big cost a few
/// blocks; beyond it staging files (ext4: 16 TiB) and UnixFS DAGs stop being practical, so a
/// `truncate` or `write` past it answers EFBIG rather than failing halfway.
pub const MAX_FILE_SIZE: u64 = 1 << 50;

fn check_name(name: &[u8]) -> Result<(), DsError> {
    if name.len() > NAME_MAX {
        return Err(DsError::NameTooLong);
    }
    Ok(())
}

/// Errors of dataset operations, mapped to errnos by the tree.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DsError {
    #[error("no such entry")]
    NotFound,
    #[error("entry exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("no space left on the store's disk")]
    NoSpace,
    /// A name longer than [`NAME_MAX`] bytes.
    #[error("name longer than 255 bytes")]
    NameTooLong,
    /// A size beyond what a file can have here ([`MAX_FILE_SIZE`]).
    #[error("file size beyond the largest file a dataset can hold")]
    TooBig,
    #[error("I/O error: {0}")]
    Io(String),
    #[error("block error: {0}")]
    Block(String),
}

impl DsError {
    pub(super) fn io(e: std::io::Error) -> Self {
        if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
            DsError::NoSpace
        } else if e.raw_os_error() == Some(libc::EFBIG) {
            DsError::TooBig
        } else {
            DsError::Io(e.to_string())
        }
    }

    fn block(e: ipfs_mount_store::StoreError) -> Self {
        if e.is_no_space() {
            DsError::NoSpace
        } else {
            DsError::Block(e.to_string())
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Directory,
    File,
    Symlink,
}

#[derive(Debug, Clone)]
pub struct NodeAttr {
    pub kind: NodeKind,
    pub size: u64,
    pub mode: u32,
    pub mtime: SystemTime,
    pub atime: SystemTime,
    pub ctime: SystemTime,
    /// Directories: 2 + subdirectories; files unlinked while open: 0; else 1.
    pub nlink: u32,
    /// Files: the CID of the last closed content; symlinks: theirs; directories: none (see
    /// [`Dataset::cid_of`]).
    pub cid: Option<Cid>,
}

/// A file's content as of its last seal.
#[derive(Debug, Clone, Copy)]
struct Sealed {
    cid: Cid,
    size: u64,
    tsize: u64,
}

/// The bytes of an open, written file. Bytes before `base_len` are still those of the sealed
/// version's first leaves (full chunks, reused as they are when sealing); `file` holds the rest.
struct Staged {
    file: StageBuf,
    size: u64,
    base: LeafRuns,
    base_len: u64,
    dirty: bool,
    /// Bumped by every change, so a seal done without the lock knows if it is still current.
    generation: u64,
    /// Every write so far landed at the end: the file can be hashed as it is written.
    sequential: bool,
    /// The hasher of a sequential writer, once its staged bytes outgrow memory. While it runs,
    /// it holds every byte of the file and `file` is empty.
    stream: Option<Stream>,
    /// Pins `base` when its leaves come from an ended stream rather than from the sealed
    /// version (which something else pins).
    base_pin: Option<PinGuard>,
    /// The bytes could not be stored: every operation answers this until the last close.
    lost: Option<DsError>,
}

enum Body {
    Dir {
        children: BTreeMap<Vec<u8>, NodeId>,
        /// How many children are directories (a directory's link count is 2 + this).
        subdirs: u32,
        /// The children's HAMT placement keys (see [`placement_key`]): a name whose key another
        /// child has could never be placed in a sharded directory, so it is refused up front.
        keys: HashSet<u64>,
    },
    File {
        /// `None` until the file is first closed: it is not in any version before.
        sealed: Option<Sealed>,
        /// Boxed: most files in a tree are not open.
        staged: Option<Box<Staged>>,
        writers: u32,
        /// Read-only handles: an open file keeps its content after losing its name.
        readers: u32,
        /// Once unlinked while open: a temporary pin on its content, which no version holds,
        /// so that its handles can still read it; released at the last close.
        hold: Option<u64>,
    },
    Symlink {
        target: Vec<u8>,
        cid: Cid,
    },
}

struct WNode {
    /// 0 once unlinked (an open file lives on until its last close).
    parent: NodeId,
    name: Vec<u8>,
    body: Body,
    mode: u32,
    mtime: SystemTime,
    /// Live only: after a remount both are the mtime.
    atime: SystemTime,
    ctime: SystemTime,
}

struct State {
    nodes: HashMap<NodeId, WNode>,
    next_id: NodeId,
    head: Option<Cid>,
    root: Option<Cid>,
    seq: u64,
    closed: ClosedTree,
    journal: Journal,
    /// When the first change since the last commit arrived, and the latest one.
    pending_since: Option<Instant>,
    last_change: Instant,
    /// Commit at the committer's next look (fsync).
    urgent: bool,
    /// A commit that failed after its build: its blocks and pins go into the next attempt.
    stash: Option<closed::Built>,
}

impl State {
    fn touched(&mut self) {
        let now = Instant::now();
        self.pending_since.get_or_insert(now);
        self.last_change = now;
    }
}

/// What a dataset is made of before its trees are loaded.
pub(super) struct Setup {
    pub name: String,
    pub profile_name: String,
    pub profile: ImportProfile,
    /// `<store>/datasets/<name>`: HEAD, JOURNAL, keys.
    pub dir: PathBuf,
    /// Where staged bytes spill to disk.
    pub staging: PathBuf,
    pub blocks: Arc<BlockService>,
    pub hooks: Arc<Hooks>,
}

pub struct Dataset {
    pub name: String,
    pub profile_name: String,
    profile: ImportProfile,
    dir: PathBuf,
    staging: PathBuf,
    blocks: Arc<BlockService>,
    state: Mutex<State>,
    /// Commits run one at a time (the committer, `dataset commit`, fsync, unmount).
    commit_lock: Mutex<()>,
    /// Seals of one file run one at a time, so they install in the order they snapshot: two
    /// closes of the same file (say the writer's, and a forked child's closing its inherited
    /// copy) must never let the older content finish last and win.
    seal_locks: Mutex<HashMap<NodeId, Arc<Mutex<()>>>>,
    tmp_counter: AtomicU64,
    hooks: Arc<Hooks>,
}

fn now() -> SystemTime {
    SystemTime::now()
}

/// The owner name of a dataset's temporary pins in the store.
fn temp_owner(name: &str) -> String {
    format!("dataset:{name}")
}

/// `HEAD`: the head commit CID, then the last journal record that version includes.
pub(super) fn parse_head(text: &str) -> Result<(Cid, u64), String> {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("").trim();
    let cid = first
        .parse::<Cid>()
        .map_err(|e| format!("HEAD does not start with a CID ({first:?}: {e})"))?;
    let jseq = match lines.next().map(str::trim) {
        None | Some("") => 0,
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| format!("HEAD's journal position {s:?} is not a number"))?,
    };
    Ok((cid, jseq))
}

impl Dataset {
    /// A new dataset: version 0 is the empty directory, so that it has a root CID at once.
    pub(super) fn new_empty(setup: Setup) -> Result<Arc<Self>, DsError> {
        let (journal, _) = Journal::open(&setup.dir.join("JOURNAL"), 0).map_err(DsError::io)?;
        let mut closed = ClosedTree::new(ClosedDir::default());
        closed.dirty = true;
        let ds = Self::assemble(setup, None, 0, closed, journal);
        ds.commit(None)?;
        Ok(ds)
    }

    fn assemble(
        setup: Setup,
        head: Option<(Cid, Cid)>,
        seq: u64,
        closed: ClosedTree,
        journal: Journal,
    ) -> Arc<Self> {
        let mut st = State {
            nodes: HashMap::new(),
            next_id: ROOT_NODE + 1,
            head: head.map(|h| h.0),
            root: head.map(|h| h.1),
            seq,
            closed,
            journal,
            pending_since: None,
            last_change: Instant::now(),
            urgent: false,
            stash: None,
        };
        live_from_closed(&mut st);
        let Setup {
            name,
            profile_name,
            profile,
            dir,
            staging,
            blocks,
            hooks,
        } = setup;
        Arc::new(Dataset {
            name,
            profile_name,
            profile,
            dir,
            staging,
            blocks,
            state: Mutex::new(st),
            commit_lock: Mutex::new(()),
            seal_locks: Mutex::new(HashMap::new()),
            tmp_counter: AtomicU64::new(0),
            hooks,
        })
    }

    /// Loads a dataset from its HEAD and its (local, pinned) blocks, then replays what the
    /// journal holds beyond HEAD and commits it: what a crashed run acknowledged is kept.
    pub(super) fn load(
        setup: Setup,
        head: Cid,
        jseq: u64,
        commit: Commit,
    ) -> anyhow::Result<Arc<Self>> {
        let time = UNIX_EPOCH + Duration::from_millis(commit.time_ms.max(0) as u64);
        let root = load_closed(&setup.blocks, &commit.root, time)?;
        let mut closed = ClosedTree::new(root);
        match &commit.attrs {
            Some(a) => closed.apply_attrs(super::attrs::read_tree(&setup.blocks, a)?),
            // A version written before `attrs`: explicit metas only, the rest its time.
            None => closed.apply_legacy_meta(&commit.meta),
        }
        let (journal, mut records) = Journal::open(&setup.dir.join("JOURNAL"), jseq)?;
        // Small files whose blocks a crash kept from being stored: their records carry them.
        // They go under the record's temporary pin if it made it to the store (it may hold
        // the file's reused leaves too), else under a new one that the record now names.
        for (_, op) in records.iter_mut() {
            let op = match op {
                Op::Stamped { op, .. } => &mut **op,
                op => op,
            };
            if let Op::Put { inline, temp, .. } = op {
                if inline.is_empty() {
                    continue;
                }
                let stored = match *temp {
                    Some(t) => match setup.blocks.put_temp(t, inline) {
                        Ok(()) => true,
                        Err(ipfs_mount_store::StoreError::UnknownTempPin(_)) => false,
                        Err(e) => return Err(e.into()),
                    },
                    None => false,
                };
                if !stored {
                    let pin = setup.blocks.temp_pin(&temp_owner(&setup.name))?;
                    setup.blocks.put_temp(pin, inline)?;
                    *temp = Some(pin);
                }
            }
        }
        for (_, op) in &records {
            closed.apply(op);
        }
        let replayed = !records.is_empty();
        closed.dirty = replayed;
        let name = setup.name.clone();
        let ds = Self::assemble(
            setup,
            Some((head, commit.root)),
            commit.seq,
            closed,
            journal,
        );
        if replayed {
            tracing::info!(dataset = %name, records = records.len(), "replaying the journal of an unclean stop");
            if let Err(e) = ds.commit(Some("recovered after an unclean stop")) {
                // Kept pending (journal, temporary pins and all): the committer retries.
                tracing::error!(dataset = %name, "cannot commit the replayed journal yet: {e}");
                return Ok(ds);
            }
        }
        // Temporary pins of seals that never reached the journal (or were absorbed above).
        match ds.blocks.release_temp_owner(&temp_owner(&name)) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(dataset = %name, "released {n} temporary pins of a previous run")
            }
            Err(e) => tracing::warn!(dataset = %name, "cannot release old temporary pins: {e}"),
        }
        Ok(ds)
    }

    pub fn head(&self) -> Option<Cid> {
        self.state.lock().head
    }

    pub fn root_cid(&self) -> Option<Cid> {
        self.state.lock().root
    }

    pub fn version(&self) -> u64 {
        self.state.lock().seq
    }

    pub fn is_empty(&self) -> bool {
        matches!(&self.state.lock().nodes[&ROOT_NODE].body, Body::Dir { children, .. } if children.is_empty())
    }

    /// Whether acknowledged changes wait for a commit.
    pub fn has_pending(&self) -> bool {
        let st = self.state.lock();
        st.closed.dirty || st.stash.is_some()
    }

    /// Whether the committer should commit now: quiet for `quiet`, or pending for `interval`,
    /// or asked to by an fsync.
    pub(super) fn commit_due(&self, now: Instant, quiet: Duration, interval: Duration) -> bool {
        let st = self.state.lock();
        if !(st.closed.dirty || st.stash.is_some()) {
            return false;
        }
        st.urgent
            || now.duration_since(st.last_change) >= quiet
            || st
                .pending_since
                .is_some_and(|t| now.duration_since(t) >= interval)
    }

    // ---- queries ----------------------------------------------------------------------------

    pub fn lookup(&self, parent: NodeId, name: &[u8]) -> Result<NodeId, DsError> {
        check_name(name)?;
        let st = self.state.lock();
        match &st.nodes.get(&parent).ok_or(DsError::NotFound)?.body {
            Body::Dir { children, .. } => children.get(name).copied().ok_or(DsError::NotFound),
            _ => Err(DsError::NotADirectory),
        }
    }

    pub fn attr(&self, id: NodeId) -> Result<NodeAttr, DsError> {
        let st = self.state.lock();
        let n = st.nodes.get(&id).ok_or(DsError::NotFound)?;
        let (atime, ctime) = (n.atime, n.ctime);
        Ok(match &n.body {
            Body::Dir { subdirs, .. } => NodeAttr {
                kind: NodeKind::Directory,
                size: 0,
                mode: n.mode,
                mtime: n.mtime,
                atime,
                ctime,
                nlink: 2 + subdirs,
                cid: None,
            },
            Body::File { sealed, staged, .. } => NodeAttr {
                kind: NodeKind::File,
                size: staged
                    .as_ref()
                    .map(|s| s.size)
                    .or(sealed.map(|s| s.size))
                    .unwrap_or(0),
                mode: n.mode,
                mtime: n.mtime,
                atime,
                ctime,
                nlink: u32::from(n.parent != 0),
                cid: sealed.map(|s| s.cid),
            },
            Body::Symlink { target, cid } => NodeAttr {
                kind: NodeKind::Symlink,
                size: target.len() as u64,
                mode: 0o777,
                mtime: n.mtime,
                atime,
                ctime,
                nlink: 1,
                cid: Some(*cid),
            },
        })
    }

    /// The CID of a node as a version holds it: pending changes are committed first, so a
    /// directory's CID is that of what its reader sees (open files: as last closed).
    pub fn cid_of(&self, id: NodeId) -> Result<Option<Cid>, DsError> {
        let a = self.attr(id)?;
        if a.kind != NodeKind::Directory {
            return Ok(a.cid);
        }
        // Also when nothing is pending: a commit in flight (built, not yet published) is
        // waited for, so the answer is never the version before it.
        self.commit(None)?;
        let st = self.state.lock();
        if id == ROOT_NODE {
            return Ok(st.root);
        }
        let Some(path) = path_components(&st, id) else {
            return Ok(None);
        };
        Ok(match st.closed.get(&path) {
            Some(closed::Entry::Dir(d)) => d.built().map(|b| b.0),
            _ => None,
        })
    }

    pub fn children(&self, id: NodeId) -> Result<Vec<(Vec<u8>, NodeId, NodeKind)>, DsError> {
        let st = self.state.lock();
        match &st.nodes.get(&id).ok_or(DsError::NotFound)?.body {
            Body::Dir { children, .. } => Ok(children
                .iter()
                .map(|(name, &child)| {
                    let kind = match st.nodes.get(&child).map(|n| &n.body) {
                        Some(Body::Dir { .. }) => NodeKind::Directory,
                        Some(Body::Symlink { .. }) => NodeKind::Symlink,
                        _ => NodeKind::File,
                    };
                    (name.clone(), child, kind)
                })
                .collect()),
            _ => Err(DsError::NotADirectory),
        }
    }

    pub fn readlink(&self, id: NodeId) -> Result<Vec<u8>, DsError> {
        match &self
            .state
            .lock()
            .nodes
            .get(&id)
            .ok_or(DsError::NotFound)?
            .body
        {
            Body::Symlink { target, .. } => Ok(target.clone()),
            _ => Err(DsError::Invalid("not a symlink".into())),
        }
    }

    /// Where to read a file from: its staged bytes (returned here) or a sealed CID.
    pub fn read(&self, id: NodeId, offset: u64, size: u32) -> Result<ReadFrom, DsError> {
        let mut st = self.state.lock();
        match &mut st.nodes.get_mut(&id).ok_or(DsError::NotFound)?.body {
            Body::File {
                sealed,
                staged: None,
                ..
            } => Ok(match *sealed {
                Some(s) => ReadFrom::Sealed {
                    cid: s.cid,
                    size: s.size,
                },
                None => ReadFrom::Bytes(Bytes::new()),
            }),
            Body::File {
                staged: Some(s), ..
            } => {
                if let Some(e) = &s.lost {
                    return Err(e.clone());
                }
                let end = (offset + size as u64).min(s.size);
                if offset >= end {
                    return Ok(ReadFrom::Bytes(Bytes::new()));
                }
                // A file being hashed as it is written: its bytes are in the stream's leaves.
                if s.stream.is_some() {
                    self.unstream(s)?;
                    s.sequential = false;
                }
                let mut out = Vec::with_capacity((end - offset) as usize);
                if offset < s.base_len {
                    self.read_leaves(&s.base, offset, end.min(s.base_len), &mut out)?;
                }
                let from = offset.max(s.base_len);
                if from < end {
                    let mut buf = vec![0u8; (end - from) as usize];
                    let n = s
                        .file
                        .read_at(&mut buf, from - s.base_len)
                        .map_err(DsError::io)?;
                    buf.truncate(n);
                    buf.resize((end - from) as usize, 0); // holes read as zeros
                    out.extend_from_slice(&buf);
                }
                Ok(ReadFrom::Bytes(out.into()))
            }
            Body::Dir { .. } => Err(DsError::IsADirectory),
            Body::Symlink { .. } => Err(DsError::Invalid("symlink".into())),
        }
    }

    // ---- changes ----------------------------------------------------------------------------

    /// Appends an op to the journal and applies it to the closed tree: once this returns, the
    /// change survives a crash of this process.
    fn log(&self, st: &mut State, op: Op) -> Result<(), DsError> {
        if let Err(e) = st.journal.append(&op) {
            let e = DsError::io(e);
            // On a full disk `rm` must still work: the reserve makes room for its record.
            if !(matches!(e, DsError::NoSpace) && self.hooks.free_reserve()) {
                return Err(e);
            }
            st.journal.append(&op).map_err(DsError::io)?;
        }
        st.closed.apply(&op);
        st.touched();
        Ok(())
    }

    fn new_node(
        st: &mut State,
        parent: NodeId,
        name: &[u8],
        body: Body,
        mode: u32,
    ) -> Result<NodeId, DsError> {
        check_name(name)?;
        if !unixfs::is_safe_name(name) {
            return Err(DsError::Invalid("bad name".into()));
        }
        let id = st.next_id;
        let is_dir = matches!(body, Body::Dir { .. });
        let time = now();
        let p = st.nodes.get_mut(&parent).ok_or(DsError::NotFound)?;
        match &mut p.body {
            Body::Dir {
                children,
                keys,
                subdirs,
            } => {
                if children.contains_key(name) {
                    return Err(DsError::Exists);
                }
                if !keys.insert(placement_key(name)) {
                    return Err(collision(name));
                }
                children.insert(name.to_vec(), id);
                *subdirs += u32::from(is_dir);
            }
            _ => return Err(DsError::NotADirectory),
        }
        p.mtime = time;
        p.ctime = time;
        st.next_id += 1;
        st.nodes.insert(
            id,
            WNode {
                parent,
                name: name.to_vec(),
                body,
                mode,
                mtime: time,
                atime: time,
                ctime: time,
            },
        );
        Ok(id)
    }

    /// Creates an empty file and opens it for writing. It enters a version only once closed.
    pub fn create_file(&self, parent: NodeId, name: &[u8], mode: u32) -> Result<NodeId, DsError> {
        let mut st = self.state.lock();
        let mode = mode & 0o7777;
        let staged = Staged {
            dirty: true,
            ..new_staged(Vec::new(), 0)
        };
        let id = Self::new_node(
            &mut st,
            parent,
            name,
            Body::File {
                sealed: None,
                staged: Some(Box::new(staged)),
                writers: 1,
                readers: 0,
                hold: None,
            },
            mode,
        )?;
        tracing::trace!(dataset = %self.name, node = id, name = %String::from_utf8_lossy(name), "create");
        Ok(id)
    }

    pub fn mkdir(&self, parent: NodeId, name: &[u8], mode: u32) -> Result<NodeId, DsError> {
        let mut st = self.state.lock();
        let mode = mode & 0o7777;
        let id = Self::new_node(
            &mut st,
            parent,
            name,
            Body::Dir {
                children: BTreeMap::new(),
                keys: HashSet::new(),
                subdirs: 0,
            },
            mode,
        )?;
        let path = path_components(&st, id).expect("just linked");
        let op = stamped(&st, Op::Mkdir { path }, &[id, parent]);
        if let Err(e) = self.log(&mut st, op) {
            let _ = unlink_live(&mut st, parent, name);
            return Err(e);
        }
        Ok(id)
    }

    pub fn symlink(&self, parent: NodeId, name: &[u8], target: &[u8]) -> Result<NodeId, DsError> {
        let mut meta = UnixFsData::new(DataType::Symlink);
        meta.data = Some(Bytes::copy_from_slice(target));
        let block = dagpb::encode(&PbNode {
            links: Vec::new(),
            data: Some(unixfs::encode_data(&meta).into()),
        });
        let cid = cids::compute(
            self.profile.cid_version,
            codec::DAG_PB,
            self.profile.hash,
            &block,
        )
        .map_err(|e| DsError::Block(e.to_string()))?;
        let tsize = block.len() as u64;
        let temp = self.new_temp()?;
        if let Err(e) = self.blocks.put_temp(temp, &[(cid, block.into())]) {
            self.release_temp(temp);
            return Err(DsError::block(e));
        }
        let mut st = self.state.lock();
        let id = match Self::new_node(
            &mut st,
            parent,
            name,
            Body::Symlink {
                target: target.to_vec(),
                cid,
            },
            0o777,
        ) {
            Ok(id) => id,
            Err(e) => {
                drop(st);
                self.release_temp(temp);
                return Err(e);
            }
        };
        let path = path_components(&st, id).expect("just linked");
        let op = Op::Put {
            path,
            kind: LeafKind::Symlink,
            cid,
            size: 0,
            tsize,
            temp: Some(temp),
            target: target.to_vec(),
            inline: Vec::new(),
        };
        let op = stamped(&st, op, &[id, parent]);
        if let Err(e) = self.log(&mut st, op) {
            let _ = unlink_live(&mut st, parent, name);
            drop(st);
            self.release_temp(temp);
            return Err(e);
        }
        Ok(id)
    }

    pub fn unlink(&self, parent: NodeId, name: &[u8], want_dir: bool) -> Result<(), DsError> {
        check_name(name)?;
        let mut st = self.state.lock();
        let id = match &st.nodes.get(&parent).ok_or(DsError::NotFound)?.body {
            Body::Dir { children, .. } => *children.get(name).ok_or(DsError::NotFound)?,
            _ => return Err(DsError::NotADirectory),
        };
        match (&st.nodes[&id].body, want_dir) {
            (Body::Dir { children, .. }, true) if !children.is_empty() => {
                return Err(DsError::NotEmpty)
            }
            (Body::Dir { .. }, false) => return Err(DsError::IsADirectory),
            (Body::Dir { .. }, true) => {}
            (_, true) => return Err(DsError::NotADirectory),
            _ => {}
        }
        let path = path_components(&st, id).expect("linked");
        // Removing what no version will hold (a file never closed) needs no record: it also
        // works on a full disk, freeing the staged bytes.
        let journaled = st.closed.get(&path).is_some();
        let before = st.nodes[&parent].mtime;
        touch(&mut st, parent);
        if journaled {
            let op = stamped(&st, Op::Remove { path }, &[parent]);
            if let Err(e) = self.log(&mut st, op) {
                st.nodes.get_mut(&parent).expect("parent").mtime = before;
                return Err(e);
            }
        }
        if let Some(orphan) = unlink_live(&mut st, parent, name) {
            self.hold_orphan(&mut st, orphan);
        }
        Ok(())
    }

    pub fn rename(
        &self,
        parent: NodeId,
        name: &[u8],
        new_parent: NodeId,
        new_name: &[u8],
        noreplace: bool,
    ) -> Result<(), DsError> {
        check_name(name)?;
        check_name(new_name)?;
        if !unixfs::is_safe_name(new_name) {
            return Err(DsError::Invalid("bad name".into()));
        }
        let mut st = self.state.lock();
        let id = match &st.nodes.get(&parent).ok_or(DsError::NotFound)?.body {
            Body::Dir { children, .. } => *children.get(name).ok_or(DsError::NotFound)?,
            _ => return Err(DsError::NotADirectory),
        };
        // A directory cannot move below itself.
        let mut up = new_parent;
        loop {
            if up == id {
                return Err(DsError::Invalid(
                    "cannot move a directory into itself".into(),
                ));
            }
            if up == ROOT_NODE || up == 0 {
                break;
            }
            up = st
                .nodes
                .get(&up)
                .map(|n| n.parent)
                .ok_or(DsError::NotFound)?;
        }
        let existing = match &st.nodes.get(&new_parent).ok_or(DsError::NotFound)?.body {
            Body::Dir { children, .. } => children.get(new_name).copied(),
            _ => return Err(DsError::NotADirectory),
        };
        if let Some(target) = existing {
            if target == id {
                return Ok(());
            }
            if noreplace {
                return Err(DsError::Exists);
            }
            let src_is_dir = matches!(st.nodes[&id].body, Body::Dir { .. });
            match &st.nodes[&target].body {
                Body::Dir { children, .. } => {
                    if !src_is_dir {
                        return Err(DsError::IsADirectory);
                    }
                    if !children.is_empty() {
                        return Err(DsError::NotEmpty);
                    }
                }
                _ if src_is_dir => return Err(DsError::NotADirectory),
                _ => {}
            }
        }
        if existing.is_none() {
            if let Body::Dir { keys, .. } = &st.nodes[&new_parent].body {
                if keys.contains(&placement_key(new_name)) {
                    return Err(collision(new_name));
                }
            }
        }
        let from = path_components(&st, id).expect("linked");
        let mut to = path_components_dir(&st, new_parent).ok_or(DsError::NotFound)?;
        to.push(new_name.to_vec());
        let time = now();
        let op = Op::Stamped {
            op: Box::new(Op::Rename { from, to }),
            stamps: dir_stamps(&st, &[parent, new_parent], time),
        };
        self.log(&mut st, op)?;
        if existing.is_some() {
            if let Some(orphan) = unlink_live(&mut st, new_parent, new_name) {
                self.hold_orphan(&mut st, orphan);
            }
        }
        let is_dir = u32::from(matches!(st.nodes[&id].body, Body::Dir { .. }));
        if let Body::Dir {
            children,
            keys,
            subdirs,
        } = &mut st.nodes.get_mut(&parent).expect("parent").body
        {
            children.remove(name);
            keys.remove(&placement_key(name));
            *subdirs -= is_dir;
        }
        if let Body::Dir {
            children,
            keys,
            subdirs,
        } = &mut st.nodes.get_mut(&new_parent).expect("new parent").body
        {
            children.insert(new_name.to_vec(), id);
            keys.insert(placement_key(new_name));
            *subdirs += is_dir;
        }
        let n = st.nodes.get_mut(&id).expect("node");
        n.parent = new_parent;
        n.name = new_name.to_vec();
        n.ctime = time;
        touch_at(&mut st, parent, time);
        touch_at(&mut st, new_parent, time);
        Ok(())
    }

    /// `renameat2(RENAME_EXCHANGE)`: swaps two entries (files, symlinks or directories) in one
    /// step, journaled as one record.
    pub fn exchange(
        &self,
        parent: NodeId,
        name: &[u8],
        new_parent: NodeId,
        new_name: &[u8],
    ) -> Result<(), DsError> {
        check_name(name)?;
        check_name(new_name)?;
        let mut st = self.state.lock();
        let child = |st: &State, dir: NodeId, name: &[u8]| -> Result<NodeId, DsError> {
            match &st.nodes.get(&dir).ok_or(DsError::NotFound)?.body {
                Body::Dir { children, .. } => children.get(name).copied().ok_or(DsError::NotFound),
                _ => Err(DsError::NotADirectory),
            }
        };
        let a = child(&st, parent, name)?;
        let b = child(&st, new_parent, new_name)?;
        if a == b {
            return Ok(());
        }
        // Neither may end up below itself: neither is an ancestor of the other's parent.
        for (moving, into) in [(a, new_parent), (b, parent)] {
            let mut up = into;
            while up != ROOT_NODE && up != 0 {
                if up == moving {
                    return Err(DsError::Invalid(
                        "cannot move a directory into itself".into(),
                    ));
                }
                up = st
                    .nodes
                    .get(&up)
                    .map(|n| n.parent)
                    .ok_or(DsError::NotFound)?;
            }
        }
        let pa = path_components(&st, a).expect("linked");
        let pb = path_components(&st, b).expect("linked");
        let time = now();
        let op = Op::Stamped {
            op: Box::new(Op::Exchange { a: pa, b: pb }),
            stamps: dir_stamps(&st, &[parent, new_parent], time),
        };
        self.log(&mut st, op)?;
        let dir_a = u32::from(matches!(st.nodes[&a].body, Body::Dir { .. }));
        let dir_b = u32::from(matches!(st.nodes[&b].body, Body::Dir { .. }));
        if let Body::Dir {
            children, subdirs, ..
        } = &mut st.nodes.get_mut(&parent).expect("parent").body
        {
            children.insert(name.to_vec(), b);
            *subdirs = *subdirs + dir_b - dir_a;
        }
        if let Body::Dir {
            children, subdirs, ..
        } = &mut st.nodes.get_mut(&new_parent).expect("new parent").body
        {
            children.insert(new_name.to_vec(), a);
            *subdirs = *subdirs + dir_a - dir_b;
        }
        for (id, dir, nm) in [(a, new_parent, new_name), (b, parent, name)] {
            let n = st.nodes.get_mut(&id).expect("node");
            n.parent = dir;
            n.name = nm.to_vec();
            n.ctime = time;
        }
        touch_at(&mut st, parent, time);
        touch_at(&mut st, new_parent, time);
        Ok(())
    }

    /// chmod, utimens and truncate. A truncate of a closed file seals it at once (holes cost
    /// nothing to hash).
    pub fn setattr(
        &self,
        id: NodeId,
        mode: Option<u32>,
        mtime: Option<SystemTime>,
        size: Option<u64>,
    ) -> Result<(), DsError> {
        self.setattr_times(id, mode, None, mtime, size)
    }

    /// [`Dataset::setattr`] with the access time too (utimensat sets both apart). Every change
    /// of attributes also sets the ctime.
    pub fn setattr_times(
        &self,
        id: NodeId,
        mode: Option<u32>,
        atime: Option<SystemTime>,
        mtime: Option<SystemTime>,
        size: Option<u64>,
    ) -> Result<(), DsError> {
        if size.is_some_and(|s| s > MAX_FILE_SIZE) {
            return Err(DsError::TooBig);
        }
        let mut st = self.state.lock();
        let (open, has_closed_state) = {
            let n = st.nodes.get_mut(&id).ok_or(DsError::NotFound)?;
            if size.is_some() && !matches!(n.body, Body::File { .. }) {
                return Err(DsError::IsADirectory);
            }
            if let Some(m) = mode {
                n.mode = m & 0o7777;
            }
            if let Some(t) = mtime {
                n.mtime = t;
            }
            if let Some(t) = atime {
                n.atime = t;
            }
            n.ctime = now();
            let open = matches!(n.body, Body::File { writers, .. } if writers > 0);
            let closed_state = !matches!(n.body, Body::File { sealed: None, .. });
            (open, closed_state)
        };
        tracing::trace!(dataset = %self.name, node = id, ?mode, ?size, "setattr");
        if let Some(size) = size {
            if !matches!(st.nodes[&id].body, Body::File { .. }) {
                return Err(DsError::IsADirectory);
            }
            self.ensure_staged(&mut st, id)?;
            let n = st.nodes.get_mut(&id).expect("node");
            if let Body::File {
                staged: Some(s), ..
            } = &mut n.body
            {
                if let Some(e) = &s.lost {
                    return Err(e.clone());
                }
                // A truncate to the size it has changes no byte: a writer that truncates its
                // new file (DuckDB does) is still sequential.
                if size != s.size {
                    self.unstream(s)?;
                    if size < s.base_len {
                        self.materialize(s, size)?;
                    }
                    s.file
                        .resize(size - s.base_len, &|| self.spill_file())
                        .map_err(DsError::io)?;
                    s.sequential = false;
                    s.size = size;
                    s.dirty = true;
                    s.generation += 1;
                }
            }
            n.mtime = mtime.unwrap_or_else(now);
            n.ctime = now();
            if !open {
                drop(st);
                self.seal(id)?;
                st = self.state.lock();
            }
        }
        if (mode.is_some() || mtime.is_some()) && has_closed_state {
            if let Some(path) = path_components(&st, id) {
                let n = &st.nodes[&id];
                let m = closed::meta_at(n.mode, n.mtime);
                let op = Op::Meta {
                    path,
                    mode: m.mode,
                    mtime: m.mtime,
                    nsec: m.nsec,
                };
                self.log(&mut st, op)?;
            }
        }
        Ok(())
    }

    /// Opens a file for writing; `truncate` drops its content first (in the live tree; the
    /// closed content stays until the file is closed again).
    pub fn open_write(&self, id: NodeId, truncate: bool) -> Result<(), DsError> {
        let mut st = self.state.lock();
        match &st.nodes.get(&id).ok_or(DsError::NotFound)?.body {
            Body::File { .. } => {}
            Body::Dir { .. } => return Err(DsError::IsADirectory),
            Body::Symlink { .. } => return Err(DsError::Invalid("symlink".into())),
        }
        if let Body::File {
            staged, writers, ..
        } = &mut st.nodes.get_mut(&id).expect("node").body
        {
            tracing::trace!(dataset = %self.name, node = id, truncate, writers = *writers + 1, "open for writing");
            if truncate {
                let generation = staged.as_ref().map(|s| s.generation + 1).unwrap_or(0);
                *staged = Some(Box::new(Staged {
                    dirty: true,
                    generation,
                    ..new_staged(Vec::new(), 0)
                }));
            }
            *writers += 1;
        }
        Ok(())
    }

    /// Opens a file for reading: the handle keeps the file (and its content) after an unlink
    /// or a rename over its name, until [`Dataset::release_read`].
    pub fn open_read(&self, id: NodeId) -> Result<(), DsError> {
        let mut st = self.state.lock();
        match &mut st.nodes.get_mut(&id).ok_or(DsError::NotFound)?.body {
            Body::File { readers, .. } => *readers += 1,
            Body::Dir { .. } => return Err(DsError::IsADirectory),
            Body::Symlink { .. } => return Err(DsError::Invalid("symlink".into())),
        }
        Ok(())
    }

    /// The close of a read-only handle: an unlinked file goes with its last handle.
    pub fn release_read(&self, id: NodeId) {
        let mut st = self.state.lock();
        if let Some(Body::File { readers, .. }) = st.nodes.get_mut(&id).map(|n| &mut n.body) {
            *readers = readers.saturating_sub(1);
        }
        self.drop_if_orphan_closed(st, id);
    }

    /// Removes a node that lost its name once no handle has it open, releasing the pin that
    /// kept its content for those handles.
    fn drop_if_orphan_closed(&self, mut st: parking_lot::MutexGuard<'_, State>, id: NodeId) {
        let gone = matches!(
            st.nodes.get(&id),
            Some(WNode {
                parent: 0,
                body: Body::File {
                    writers: 0,
                    readers: 0,
                    ..
                },
                ..
            })
        );
        if !gone {
            return;
        }
        if let Some(WNode {
            body: Body::File { hold: Some(t), .. },
            ..
        }) = st.nodes.remove(&id)
        {
            drop(st);
            self.release_temp(t);
        }
    }

    /// Unmount: files that lost their name while open go, with the pins that held them (a
    /// crash leaves those pins to the next load, which releases every temporary pin).
    pub fn release_orphans(&self) {
        let mut st = self.state.lock();
        let orphans: Vec<NodeId> = st
            .nodes
            .iter()
            .filter(|(_, n)| n.parent == 0)
            .map(|(id, _)| *id)
            .collect();
        let mut temps = Vec::new();
        for id in orphans {
            if let Some(WNode {
                body: Body::File { hold: Some(t), .. },
                ..
            }) = st.nodes.remove(&id)
            {
                temps.push(t);
            }
        }
        drop(st);
        for t in temps {
            self.release_temp(t);
        }
    }

    pub fn write(&self, id: NodeId, offset: u64, data: &[u8]) -> Result<usize, DsError> {
        let mut st = self.state.lock();
        self.ensure_staged(&mut st, id)?;
        let n = st.nodes.get_mut(&id).ok_or(DsError::NotFound)?;
        let Body::File {
            staged: Some(s), ..
        } = &mut n.body
        else {
            return Err(DsError::IsADirectory);
        };
        if let Some(e) = &s.lost {
            return Err(e.clone());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(DsError::TooBig)?;
        let at_end = offset == s.size;
        if let Some(e) = s.stream.as_ref().and_then(|stream| stream.failure()) {
            return Err(self.lose(s, e));
        }
        if s.stream.is_some() && !at_end {
            self.unstream(s)?;
        }
        s.sequential &= at_end;
        if s.sequential && s.stream.is_none() && end - s.base_len > STREAM_FROM {
            if let Err(e) = self.start_stream(s) {
                // Staging works as well, only slower.
                tracing::warn!(dataset = %self.name, "cannot hash a file as it is written: {e}");
                s.sequential = false;
            }
        }
        let feed = match &s.stream {
            Some(stream) => Some(stream.feeder()),
            None => {
                if offset < s.base_len {
                    self.materialize(s, offset)?;
                }
                s.file
                    .write_all_at(data, offset - s.base_len, &|| self.spill_file())
                    .map_err(DsError::io)?;
                None
            }
        };
        s.size = s.size.max(end);
        s.dirty = true;
        s.generation += 1;
        tracing::trace!(dataset = %self.name, node = id, offset, len = data.len(), size = s.size, generation = s.generation, streamed = feed.is_some(), "write");
        n.mtime = now();
        n.ctime = n.mtime;
        drop(st);
        // Hashing happens on the stream's thread; waiting for room is done without the lock.
        if let Some(tx) = feed {
            if tx
                .send(seal::Feed::Bytes(offset, Bytes::copy_from_slice(data)))
                .is_err()
            {
                return Err(DsError::Io("a file's hasher thread stopped".into()));
            }
        }
        Ok(data.len())
    }

    /// `close`: seals the file if it changed and journals its new content. When this returns
    /// Ok, the bytes survive a crash and enter the next version.
    pub fn flush(&self, id: NodeId) -> Result<(), DsError> {
        self.seal(id)
    }

    /// `fsync`: the flush, then everything acknowledged so far made durable against power loss
    /// (blocks, index, journal: one `syncfs`), and a commit soon.
    pub fn sync(&self, id: NodeId) -> Result<(), DsError> {
        self.flush(id)?;
        self.sync_store()?;
        self.state.lock().urgent = true;
        self.hooks.kick();
        Ok(())
    }

    fn sync_store(&self) -> Result<(), DsError> {
        let dir = std::fs::File::open(&self.dir).map_err(DsError::io)?;
        // One syncfs covers the store's block files, its index and the journal (one filesystem).
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
            return Err(DsError::io(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// The last close of a writer: seal, then drop the staging buffer.
    pub fn release_write(&self, id: NodeId) -> Result<(), DsError> {
        let result = self.flush(id);
        tracing::trace!(dataset = %self.name, node = id, ok = result.is_ok(), "release");
        let mut st = self.state.lock();
        if let Some(n) = st.nodes.get_mut(&id) {
            if let Body::File {
                writers, staged, ..
            } = &mut n.body
            {
                *writers = writers.saturating_sub(1);
                // Also when the seal failed: that close reported the error, and the staged
                // bytes (perhaps filling the disk) go; the file shows its last closed content.
                if *writers == 0 {
                    *staged = None;
                }
            }
        }
        self.drop_if_orphan_closed(st, id);
        result
    }

    // ---- sealing ------------------------------------------------------------------------------

    /// An open file just lost its name: pin its content for its handles (no version may).
    fn hold_orphan(&self, st: &mut State, id: NodeId) {
        let Some(Body::File {
            sealed: Some(sealed),
            hold: None,
            ..
        }) = st.nodes.get(&id).map(|n| &n.body)
        else {
            return;
        };
        // A small file's blocks may still wait for the background writer: stored first, so
        // that the walk below finds them all.
        if let Err(e) = self.blocks.flush_deferred() {
            tracing::warn!(dataset = %self.name, "cannot store queued blocks: {e}");
        }
        let cids = file_blocks(&self.blocks, sealed);
        let held = self.new_temp().and_then(|t| {
            self.blocks
                .temp_pin_add(t, &mut cids.into_iter())
                .map(|()| t)
                .map_err(DsError::block)
        });
        match held {
            Ok(t) => {
                if let Some(Body::File { hold, .. }) = st.nodes.get_mut(&id).map(|n| &mut n.body) {
                    *hold = Some(t);
                }
            }
            Err(e) => {
                tracing::warn!(dataset = %self.name, "cannot hold an unlinked open file's blocks: {e}")
            }
        }
    }

    fn new_temp(&self) -> Result<u64, DsError> {
        self.blocks
            .temp_pin(&temp_owner(&self.name))
            .map_err(DsError::block)
    }

    fn release_temp(&self, temp: u64) {
        seal::release_temp(&self.blocks, &self.hooks, &self.name, temp);
    }

    /// After a seal failed for want of space: what it stored goes, and so does the unpinned
    /// cache (written data beats cached data).
    fn win_back_space(&self) {
        match self.blocks.evict_to(0) {
            Ok(freed) if freed.bytes > 0 => {
                tracing::warn!(dataset = %self.name, freed = freed.bytes, "the store's disk is full: evicted the unpinned cache");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(dataset = %self.name, "cannot evict: {e}"),
        }
    }

    /// An unlinked temporary file in the staging directory, for staged bytes that outgrow memory.
    fn spill_file(&self) -> std::io::Result<std::fs::File> {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let path = self
            .staging
            .join(format!("{}-{}-{n}", self.name, std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        // Nobody else needs the name; the file lives as long as the handle.
        let _ = std::fs::remove_file(&path);
        Ok(file)
    }

    /// Makes a closed file writable without copying it: its full leaves stay where they are and
    /// only the last partial chunk is copied into the staging buffer.
    fn ensure_staged(&self, st: &mut State, id: NodeId) -> Result<(), DsError> {
        let sealed = match &st.nodes.get(&id).ok_or(DsError::NotFound)?.body {
            Body::File {
                staged: Some(_), ..
            } => return Ok(()),
            Body::File { sealed, .. } => *sealed,
            Body::Dir { .. } => return Err(DsError::IsADirectory),
            Body::Symlink { .. } => return Err(DsError::Invalid("symlink".into())),
        };
        let mut staged = new_staged(Vec::new(), 0);
        if let Some(sealed) = sealed {
            let (base, base_len) = match reusable_leaves(&self.blocks, &self.profile, &sealed) {
                Some(leaves) => {
                    let len = runs_len(&leaves);
                    (leaves, len)
                }
                None => (Vec::new(), 0),
            };
            staged = new_staged(base, base_len);
            if sealed.size > base_len {
                let tail = read_sealed(
                    &self.blocks,
                    &sealed.cid,
                    sealed.size,
                    base_len,
                    sealed.size,
                )?;
                staged
                    .file
                    .write_all_at(&tail, 0, &|| self.spill_file())
                    .map_err(DsError::io)?;
            }
            staged.size = sealed.size;
        }
        if let Body::File { staged: s, .. } = &mut st.nodes.get_mut(&id).expect("node").body {
            *s = Some(Box::new(staged));
        }
        Ok(())
    }

    /// Bytes `[from, to)` of a staged file's base leaves (full chunks, run-length encoded).
    fn read_leaves(
        &self,
        runs: &LeafRuns,
        from: u64,
        to: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), DsError> {
        let mut pos = 0u64;
        for (leaf, n) in runs {
            let run_end = pos + leaf.size * n;
            if run_end > from && leaf.size > 0 {
                // Only the leaves of this run that overlap the range.
                let first = from.saturating_sub(pos) / leaf.size;
                let last = ((to.min(run_end) - pos).div_ceil(leaf.size)).min(*n);
                for i in first..last {
                    let start = pos + i * leaf.size;
                    let lo = from.max(start) - start;
                    let hi = to.min(start + leaf.size) - start;
                    out.extend_from_slice(&read_sealed(
                        &self.blocks,
                        &leaf.cid,
                        leaf.size,
                        lo,
                        hi,
                    )?);
                }
            }
            pos = run_end;
            if pos >= to {
                break;
            }
        }
        Ok(())
    }

    /// A write or truncate at `from` lands inside the reused leaves: keep the leaves wholly
    /// before `from`'s chunk and stage the bytes from there on (zero leaves stay holes, so a
    /// write into a 1 TiB sparse file costs what it writes, not the file).
    fn materialize(&self, s: &mut Staged, from: u64) -> Result<(), DsError> {
        if from >= s.base_len {
            return Ok(());
        }
        let chunk = self.profile.chunk_size as u64;
        let keep_len = (from / chunk) * chunk;
        let zero = zero_leaf(&self.profile);
        let spill = || self.spill_file();
        let mut kept: LeafRuns = Vec::new();
        let mut file = StageBuf::new();
        let mut pos = 0u64;
        for (leaf, n) in &s.base {
            for _ in 0..*n {
                if pos + leaf.size <= keep_len {
                    // Whole runs at once while below the kept prefix.
                    push_run(&mut kept, *leaf, 1);
                    pos += leaf.size;
                    continue;
                }
                if leaf.cid != zero {
                    let bytes = read_sealed(&self.blocks, &leaf.cid, leaf.size, 0, leaf.size)?;
                    file.write_all_at(&bytes, pos - keep_len, &spill)
                        .map_err(DsError::io)?;
                }
                pos += leaf.size;
            }
        }
        debug_assert_eq!(pos, s.base_len);
        // The staged tail, extent by extent (its holes stay holes).
        let tail_len = s.size.saturating_sub(s.base_len);
        let mut buf = vec![0u8; 1 << 20];
        for (start, end, is_data) in s.file.extents(tail_len).map_err(DsError::io)? {
            if !is_data {
                continue;
            }
            let mut p = start;
            while p < end {
                let want = (buf.len() as u64).min(end - p) as usize;
                let got = s.file.read_at(&mut buf[..want], p).map_err(DsError::io)?;
                if got == 0 {
                    break;
                }
                file.write_all_at(&buf[..got], s.base_len - keep_len + p, &spill)
                    .map_err(DsError::io)?;
                p += got as u64;
            }
        }
        file.resize(s.size - keep_len, &spill)
            .map_err(DsError::io)?;
        s.file = file;
        s.base = kept;
        s.base_len = keep_len;
        Ok(())
    }

    // ---- commits ------------------------------------------------------------------------------

    /// Folds the closed tree into a new version if anything is pending (or `message` asks for
    /// one anyway). Returns the new head commit, if one was made.
    pub fn commit(&self, message: Option<&str>) -> Result<Option<Cid>, DsError> {
        let _one_at_a_time = self.commit_lock.lock();
        let (built, meta, jseq, prev, seq, dropped) = {
            let mut st = self.state.lock();
            let stash = st.stash.take();
            if !st.closed.dirty && stash.is_none() && message.is_none() {
                st.pending_since = None;
                st.urgent = false;
                return Ok(None);
            }
            let mut built = st
                .closed
                .build(&self.profile)
                .map_err(|e| DsError::Invalid(e.to_string()))?;
            if let Some(old) = stash {
                built.blocks.extend(old.blocks);
                built.temps.extend(old.temps);
            }
            let dropped = std::mem::take(&mut st.closed.dropped_temps);
            st.pending_since = None;
            st.urgent = false;
            let attrs = built.attrs;
            (
                built,
                attrs,
                st.journal.last_seq(),
                st.head,
                st.seq,
                dropped,
            )
        };
        let seq = if prev.is_some() { seq + 1 } else { 0 };
        let commit = Commit {
            prev,
            root: built.root,
            seq,
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            attrs: Some(meta),
            meta: BTreeMap::new(),
            message: message.map(str::to_string),
        };
        match self.publish(&commit, &built, jseq) {
            Ok(commit_cid) => {
                {
                    let mut st = self.state.lock();
                    st.head = Some(commit_cid);
                    st.root = Some(built.root);
                    st.seq = seq;
                    if let Err(e) = st.journal.trim(jseq) {
                        // Harmless: a replay skips records HEAD already includes.
                        tracing::warn!(dataset = %self.name, "cannot trim the journal: {e}");
                    }
                }
                for t in dropped {
                    self.release_temp(t);
                }
                tracing::info!(dataset = %self.name, seq, root = %built.root, commit = %commit_cid, "new version");
                self.hooks.committed();
                Ok(Some(commit_cid))
            }
            Err(e) => {
                tracing::error!(dataset = %self.name, "commit failed (retried at the next one): {e}");
                let mut st = self.state.lock();
                st.closed.dropped_temps.extend(dropped);
                st.closed.dirty = true;
                st.stash = Some(built);
                st.touched();
                Err(e)
            }
        }
    }

    /// Stores and pins a version's blocks, makes them durable, then moves HEAD.
    fn publish(&self, commit: &Commit, built: &closed::Built, jseq: u64) -> Result<Cid, DsError> {
        // The files this version takes in may have blocks still queued for the store (small
        // files, see `hash_snapshot`): every one queued before the closed tree was read is
        // stored now, so that the pin below finds them.
        self.blocks.flush_deferred().map_err(DsError::block)?;
        let (commit_cid, commit_bytes) =
            commit.encode().map_err(|e| DsError::Block(e.to_string()))?;
        let temp = self.new_temp()?;
        let stored = self
            .blocks
            .put_temp(temp, &built.blocks)
            .and_then(|()| self.blocks.put_temp(temp, &[(commit_cid, commit_bytes)]));
        if let Err(e) = stored {
            self.release_temp(temp);
            return Err(DsError::block(e));
        }
        // This version's new blocks (the directories just built, the files it takes in);
        // everything it shares with older versions is pinned by them.
        // Temporary pins a crash left absorbed already (their version's pin was made, HEAD was
        // not moved yet) are gone: their blocks are pinned; keep only those still held.
        let held: HashSet<u64> = self
            .blocks
            .temp_pins(&temp_owner(&self.name))
            .map_err(DsError::block)?
            .into_iter()
            .collect();
        let mut temps: Vec<u64> = built
            .temps
            .iter()
            .copied()
            .filter(|t| held.contains(t))
            .collect();
        temps.push(temp);
        if let Err(e) = self.blocks.pin_with_temps(
            &commit_cid,
            &format!("dataset:{}", self.name),
            &mut [commit_cid, built.root].into_iter(),
            &temps,
        ) {
            self.release_temp(temp);
            return Err(DsError::block(e));
        }
        // Blocks, pins and journal durable before HEAD names them.
        self.sync_store()?;
        let text = format!("{commit_cid}\n{jseq}\n");
        super::write_atomic(&self.dir.join("HEAD"), text.as_bytes(), true).map_err(DsError::io)?;
        Ok(commit_cid)
    }
}

fn new_staged(base: LeafRuns, base_len: u64) -> Staged {
    Staged {
        file: StageBuf::new(),
        size: base_len,
        sequential: true,
        base,
        base_len,
        dirty: false,
        generation: 0,
        stream: None,
        base_pin: None,
        lost: None,
    }
}

/// Where a name goes in a HAMT: the first [`dirtree::SEPARATING_BITS`] bits of its murmur3
/// hash. Two names with the same key cannot both be placed, neither by us nor by Kubo or Helia.
fn placement_key(name: &[u8]) -> u64 {
    u64::from_be_bytes(ipfs_mount_ipld::hamt::hash_name(name)) >> (64 - dirtree::SEPARATING_BITS)
}

fn collision(name: &[u8]) -> DsError {
    tracing::warn!(name = %String::from_utf8_lossy(name), "refused: its HAMT hash equals another name's in this directory");
    DsError::Invalid(format!(
        "{:?}: its HAMT hash equals another name's in this directory",
        String::from_utf8_lossy(name)
    ))
}

/// Takes `name` out of the live directory `parent`; an open file lives on unnamed until its
/// last close, as on any filesystem.
/// Returns the node when it lives on (an open file: the caller holds its content).
#[must_use]
fn unlink_live(st: &mut State, parent: NodeId, name: &[u8]) -> Option<NodeId> {
    let id = match &mut st.nodes.get_mut(&parent).map(|n| &mut n.body) {
        Some(Body::Dir { children, keys, .. }) => {
            keys.remove(&placement_key(name));
            children.remove(name)
        }
        _ => None,
    }?;
    if matches!(st.nodes[&id].body, Body::Dir { .. }) {
        if let Some(Body::Dir { subdirs, .. }) = st.nodes.get_mut(&parent).map(|n| &mut n.body) {
            *subdirs = subdirs.saturating_sub(1);
        }
    }
    let open =
        matches!(st.nodes[&id].body, Body::File { writers, readers, .. } if writers + readers > 0);
    if open {
        st.nodes.get_mut(&id).expect("node").parent = 0;
        Some(id)
    } else {
        // A directory is empty here (rmdir checked); drop the node.
        st.nodes.remove(&id);
        None
    }
}

/// A directory's entries changed: its mtime and ctime are now.
fn touch(st: &mut State, dir: NodeId) {
    touch_at(st, dir, now());
}

fn touch_at(st: &mut State, dir: NodeId, t: SystemTime) {
    if let Some(n) = st.nodes.get_mut(&dir) {
        n.mtime = t;
        n.ctime = t;
    }
}

/// The live mode and mtime of linked nodes, by path, for a journal record.
fn node_stamps(st: &State, ids: &[NodeId]) -> Vec<(DsPath, Meta)> {
    ids.iter()
        .filter_map(|id| {
            let n = st.nodes.get(id)?;
            let path = if *id == ROOT_NODE {
                Vec::new()
            } else {
                path_components(st, *id)?
            };
            Some((path, closed::meta_at(n.mode, n.mtime)))
        })
        .collect()
}

/// `op` with the live metas of `ids` (the entry it makes, the directories it changes).
fn stamped(st: &State, op: Op, ids: &[NodeId]) -> Op {
    Op::Stamped {
        op: Box::new(op),
        stamps: node_stamps(st, ids),
    }
}

/// The metas directories `dirs` will have once changed at `time`.
fn dir_stamps(st: &State, dirs: &[NodeId], time: SystemTime) -> Vec<(DsPath, Meta)> {
    let mut out = node_stamps(st, dirs);
    for (_, m) in &mut out {
        let t = closed::meta_at(m.mode, time);
        m.mtime = t.mtime;
        m.nsec = t.nsec;
    }
    out
}

/// Every block of a file's DAG reachable through local nodes (each once), found by the
/// reader's file-range planner: a node that is not local is named but not looked into.
fn file_blocks(blocks: &BlockService, sealed: &Sealed) -> Vec<Cid> {
    use reader::{Planner, Step};
    let mut seen = HashSet::new();
    let mut planner = reader::file::FileRange::new(
        sealed.cid,
        sealed.size,
        0,
        sealed.size,
        reader::Limits::default(),
    );
    loop {
        match planner.next() {
            Ok(Step::Need(cid)) => {
                seen.insert(cid);
                match blocks.get_local(&cid) {
                    Ok(Some(block)) => {
                        if let Err(e) = planner.provide(&cid, block) {
                            tracing::debug!(%cid, "file walk stopped: {e}");
                            break;
                        }
                    }
                    _ => planner.skip(&cid),
                }
            }
            Ok(Step::Item(reader::file::Piece::Leaf { cid, .. })) => {
                seen.insert(cid);
            }
            Ok(Step::Item(reader::file::Piece::Inline(_))) => {}
            Ok(Step::Wait | Step::Done) => break,
            Err(e) => {
                tracing::debug!(cid = %sealed.cid, "file walk stopped: {e}");
                break;
            }
        }
    }
    seen.into_iter().collect()
}

/// The path of a linked node, as components; `None` once unlinked.
fn path_components(st: &State, mut id: NodeId) -> Option<DsPath> {
    let mut parts = Vec::new();
    while id != ROOT_NODE {
        let n = st.nodes.get(&id)?;
        if n.parent == 0 {
            return None;
        }
        parts.push(n.name.clone());
        id = n.parent;
    }
    parts.reverse();
    Some(parts)
}

fn path_components_dir(st: &State, id: NodeId) -> Option<DsPath> {
    path_components(st, id)
}

/// Builds the live nodes from the closed tree (at load, after a replay).
fn live_from_closed(st: &mut State) {
    st.nodes.clear();
    let root_meta = st.closed.root.meta;
    let root_time = closed::meta_time(&root_meta);
    st.nodes.insert(
        ROOT_NODE,
        WNode {
            parent: ROOT_NODE,
            name: Vec::new(),
            body: Body::Dir {
                children: BTreeMap::new(),
                keys: HashSet::new(),
                subdirs: 0,
            },
            mode: root_meta.mode,
            mtime: root_time,
            atime: root_time,
            ctime: root_time,
        },
    );
    let mut next = ROOT_NODE + 1;
    let mut stack: Vec<(NodeId, &ClosedDir)> = vec![(ROOT_NODE, &st.closed.root)];
    let mut made: Vec<(NodeId, NodeId, Vec<u8>, Body, Meta)> = Vec::new();
    while let Some((id, dir)) = stack.pop() {
        for (name, e) in &dir.entries {
            let child = next;
            next += 1;
            let (body, meta) = match e {
                closed::Entry::Dir(d) => {
                    stack.push((child, d));
                    (
                        Body::Dir {
                            children: BTreeMap::new(),
                            keys: HashSet::new(),
                            subdirs: 0,
                        },
                        d.meta,
                    )
                }
                closed::Entry::Leaf(
                    l @ ClosedLeaf {
                        kind: LeafKind::File,
                        ..
                    },
                ) => (
                    Body::File {
                        sealed: Some(Sealed {
                            cid: l.cid,
                            size: l.size,
                            tsize: l.tsize,
                        }),
                        staged: None,
                        writers: 0,
                        readers: 0,
                        hold: None,
                    },
                    l.meta,
                ),
                closed::Entry::Leaf(l) => (
                    Body::Symlink {
                        target: l.target.clone(),
                        cid: l.cid,
                    },
                    l.meta,
                ),
            };
            made.push((id, child, name.clone(), body, meta));
        }
    }
    for (parent, id, name, body, meta) in made {
        let is_dir = u32::from(matches!(body, Body::Dir { .. }));
        if let Some(Body::Dir {
            children,
            keys,
            subdirs,
        }) = st.nodes.get_mut(&parent).map(|n| &mut n.body)
        {
            keys.insert(placement_key(&name));
            children.insert(name.clone(), id);
            *subdirs += is_dir;
        }
        let mtime = closed::meta_time(&meta);
        st.nodes.insert(
            id,
            WNode {
                parent,
                name,
                body,
                mode: meta.mode,
                mtime,
                atime: mtime,
                ctime: mtime,
            },
        );
    }
    st.next_id = next;
}

/// The closed tree of a committed root, from local blocks.
fn load_closed(blocks: &BlockService, root: &Cid, time: SystemTime) -> anyhow::Result<ClosedDir> {
    let loaded = |built: (Cid, u64)| {
        let mut d = ClosedDir::loaded(built);
        d.meta = closed::meta_at(closed::DIR_MODE, time);
        d
    };
    let file_meta = closed::meta_at(closed::FILE_MODE, time);
    let mut top = loaded((*root, 0));
    // Explicit stack of (path from the top, cid) of directories still to read.
    let mut pending: Vec<(Vec<Vec<u8>>, Cid)> = vec![(Vec::new(), *root)];
    while let Some((path, cid)) = pending.pop() {
        let mut entries = BTreeMap::new();
        for (name, child, tsize) in dir_entries(blocks, &cid)? {
            // A raw leaf is a whole file whose size is its Tsize: no need to read it.
            if child.codec() == codec::RAW {
                entries.insert(
                    name,
                    closed::Entry::Leaf(ClosedLeaf {
                        kind: LeafKind::File,
                        cid: child,
                        size: tsize,
                        tsize,
                        target: Vec::new(),
                        temp: None,
                        meta: file_meta,
                    }),
                );
                continue;
            }
            let block = blocks
                .get_local(&child)?
                .ok_or_else(|| anyhow::anyhow!("block {child} missing"))?;
            let entry = match unixfs::decode_node_shared(&child, &block)? {
                Node::Directory(_) | Node::HamtShard(_) => {
                    let mut p = path.clone();
                    p.push(name.clone());
                    pending.push((p, child));
                    closed::Entry::Dir(Box::new(loaded((child, tsize))))
                }
                Node::Symlink(s) => closed::Entry::Leaf(ClosedLeaf {
                    kind: LeafKind::Symlink,
                    cid: child,
                    size: 0,
                    tsize,
                    target: s.target,
                    temp: None,
                    meta: closed::meta_at(closed::SYMLINK_MODE, time),
                }),
                Node::File(f) => closed::Entry::Leaf(ClosedLeaf {
                    kind: LeafKind::File,
                    cid: child,
                    size: f.size,
                    tsize,
                    target: Vec::new(),
                    temp: None,
                    meta: file_meta,
                }),
                Node::Document(d) => closed::Entry::Leaf(ClosedLeaf {
                    kind: LeafKind::File,
                    cid: child,
                    size: d.json.len() as u64,
                    tsize,
                    target: Vec::new(),
                    temp: None,
                    meta: file_meta,
                }),
            };
            entries.insert(name, entry);
        }
        let mut dir = &mut top;
        for c in &path {
            match dir.entries.get_mut(c) {
                Some(closed::Entry::Dir(d)) => dir = d,
                _ => anyhow::bail!("directory walk lost its way"),
            }
        }
        dir.entries = entries;
    }
    Ok(top)
}

/// What a read of a dataset file should serve.
pub enum ReadFrom {
    Bytes(Bytes),
    Sealed { cid: Cid, size: u64 },
}

/// The entries (name, cid, tsize) of a UnixFS directory or HAMT whose blocks are local, through
/// the ipld reader's listing (depth-bounded; names that cannot be files and duplicates are
/// left out, and logged).
fn dir_entries(blocks: &BlockService, cid: &Cid) -> anyhow::Result<Vec<(Vec<u8>, Cid, u64)>> {
    let planner = reader::listing::Listing::new(*cid, reader::Limits::default());
    let listed = reader::drive::collect_local(planner, blocks)
        .map_err(|e| anyhow::anyhow!("directory {cid}: {e}"))?
        .ok_or_else(|| anyhow::anyhow!("directory {cid}: a block is missing from the store"))?;
    let mut out = Vec::with_capacity(listed.len());
    for item in listed {
        match item {
            reader::listing::Listed::Entry(e) => out.push((e.name, e.cid, e.tsize.unwrap_or(0))),
            reader::listing::Listed::Hidden { name, why } => tracing::warn!(
                directory = %cid,
                name = %String::from_utf8_lossy(&name),
                "entry left out of the dataset: {why:?}"
            ),
        }
    }
    Ok(out)
}

/// Runs of equal leaves, in file order: a sparse file's holes are one run.
type LeafRuns = Vec<(Leaf, u64)>;
