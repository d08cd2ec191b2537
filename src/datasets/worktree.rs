//! One dataset's working tree: nodes, staged files, sealing and commits.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cid::Cid;
use ipfs_mount_ipld::builder::{build_directory_auto, ImportProfile};
use ipfs_mount_ipld::dagpb::{self, PbNode};
use ipfs_mount_ipld::hamt::HamtLink;
use ipfs_mount_ipld::unixfs::{self, DataType, Node, UnixFsData};
use ipfs_mount_ipld::{cids, codec};
use parking_lot::Mutex;

use super::chunker::{FileWriter, Leaf};
use super::commit::{Commit, Meta};
use super::stagebuf::StageBuf;
use crate::blocks::BlockService;

pub type NodeId = u64;
pub const ROOT_NODE: NodeId = 1;

/// Errors of dataset operations, mapped to errnos by the tree.
#[derive(Debug, thiserror::Error)]
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
    #[error("no space left on the staging disk")]
    NoSpace,
    #[error("I/O error: {0}")]
    Io(String),
    #[error("block error: {0}")]
    Block(String),
}

impl DsError {
    fn io(e: std::io::Error) -> Self {
        if e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT) {
            DsError::NoSpace
        } else {
            DsError::Io(e.to_string())
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
    /// The node's CID in the last built version (files: last sealed content).
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
    base: Vec<Leaf>,
    base_len: u64,
    dirty: bool,
    /// Bumped by every change, so a seal done without the lock knows if it is still current.
    generation: u64,
}

enum Body {
    Dir {
        children: BTreeMap<Vec<u8>, NodeId>,
        built: Option<Sealed>,
    },
    File {
        sealed: Sealed,
        staged: Option<Staged>,
        writers: u32,
    },
    Symlink {
        target: Vec<u8>,
        built: Sealed,
    },
}

struct WNode {
    parent: NodeId,
    name: Vec<u8>,
    body: Body,
    mode: u32,
    mtime: SystemTime,
    /// Set by chmod/utimens (or a non-default mode at creation): recorded in the commit.
    explicit_meta: bool,
}

struct State {
    nodes: HashMap<NodeId, WNode>,
    next_id: NodeId,
    head: Option<Cid>,
    root: Option<Sealed>,
    seq: u64,
    /// Blocks stored since the last commit; the next commit pins them. Older versions' pins
    /// cover everything else, so each commit pins only what is new.
    unpinned: Vec<Cid>,
}

pub struct Dataset {
    pub name: String,
    pub profile_name: String,
    profile: ImportProfile,
    dir: PathBuf,
    staging: PathBuf,
    blocks: Arc<BlockService>,
    state: Mutex<State>,
    tmp_counter: AtomicU64,
}

fn now() -> SystemTime {
    SystemTime::now()
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Dataset {
    pub(super) fn new_empty(
        name: &str,
        profile_name: &str,
        profile: ImportProfile,
        dir: PathBuf,
        staging: PathBuf,
        blocks: Arc<BlockService>,
    ) -> Result<Arc<Self>, DsError> {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT_NODE,
            WNode {
                parent: ROOT_NODE,
                name: Vec::new(),
                body: Body::Dir {
                    children: BTreeMap::new(),
                    built: None,
                },
                mode: 0o755,
                mtime: now(),
                explicit_meta: false,
            },
        );
        let ds = Arc::new(Dataset {
            name: name.to_string(),
            profile_name: profile_name.to_string(),
            profile,
            dir,
            staging,
            blocks,
            state: Mutex::new(State {
                nodes,
                next_id: ROOT_NODE + 1,
                head: None,
                root: None,
                seq: 0,
                unpinned: Vec::new(),
            }),
            tmp_counter: AtomicU64::new(0),
        });
        // Version 0: the empty directory, so that a new dataset has a root CID at once.
        ds.commit(&mut ds.state.lock())?;
        Ok(ds)
    }

    /// Rebuilds the working tree of a committed version from its (local, pinned) blocks.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn load(
        name: &str,
        profile_name: &str,
        profile: ImportProfile,
        dir: PathBuf,
        staging: PathBuf,
        blocks: Arc<BlockService>,
        head: Cid,
        commit: Commit,
    ) -> anyhow::Result<Arc<Self>> {
        let time = UNIX_EPOCH + std::time::Duration::from_millis(commit.time_ms.max(0) as u64);
        let mut st = State {
            nodes: HashMap::new(),
            next_id: ROOT_NODE + 1,
            head: Some(head),
            root: None,
            seq: commit.seq,
            unpinned: Vec::new(),
        };
        // Iterative walk: (node id, cid, tsize) of directories still to read.
        let root_tsize = 0;
        st.nodes.insert(
            ROOT_NODE,
            WNode {
                parent: ROOT_NODE,
                name: Vec::new(),
                body: Body::Dir {
                    children: BTreeMap::new(),
                    built: Some(Sealed {
                        cid: commit.root,
                        size: 0,
                        tsize: root_tsize,
                    }),
                },
                mode: 0o755,
                mtime: time,
                explicit_meta: false,
            },
        );
        let mut pending = vec![(ROOT_NODE, commit.root)];
        while let Some((id, cid)) = pending.pop() {
            for (child_name, child_cid, tsize) in dir_entries(&blocks, &cid)? {
                let block = blocks
                    .get_local(&child_cid)?
                    .ok_or_else(|| anyhow::anyhow!("block {child_cid} missing"))?;
                let node = unixfs::decode_node_shared(&child_cid, &block)?;
                let child_id = st.next_id;
                st.next_id += 1;
                let (body, mode) = match node {
                    Node::File(f) => (
                        Body::File {
                            sealed: Sealed {
                                cid: child_cid,
                                size: f.size,
                                tsize,
                            },
                            staged: None,
                            writers: 0,
                        },
                        0o644,
                    ),
                    Node::Document(d) => (
                        Body::File {
                            sealed: Sealed {
                                cid: child_cid,
                                size: d.json.len() as u64,
                                tsize,
                            },
                            staged: None,
                            writers: 0,
                        },
                        0o444,
                    ),
                    Node::Symlink(s) => (
                        Body::Symlink {
                            target: s.target,
                            built: Sealed {
                                cid: child_cid,
                                size: 0,
                                tsize,
                            },
                        },
                        0o777,
                    ),
                    Node::Directory(_) | Node::HamtShard(_) => {
                        pending.push((child_id, child_cid));
                        (
                            Body::Dir {
                                children: BTreeMap::new(),
                                built: Some(Sealed {
                                    cid: child_cid,
                                    size: 0,
                                    tsize,
                                }),
                            },
                            0o755,
                        )
                    }
                };
                st.nodes.insert(
                    child_id,
                    WNode {
                        parent: id,
                        name: child_name.clone(),
                        body,
                        mode,
                        mtime: time,
                        explicit_meta: false,
                    },
                );
                if let Some(WNode {
                    body: Body::Dir { children, .. },
                    ..
                }) = st.nodes.get_mut(&id)
                {
                    children.insert(child_name, child_id);
                }
            }
        }
        // Modes and times set by users, kept beside the DAG.
        let paths: Vec<(NodeId, String)> =
            st.nodes.keys().map(|&id| (id, path_of(&st, id))).collect();
        for (id, path) in paths {
            if let Some(m) = commit.meta.get(&path) {
                if let Some(n) = st.nodes.get_mut(&id) {
                    n.mode = m.mode;
                    n.mtime = UNIX_EPOCH + std::time::Duration::from_secs(m.mtime.max(0) as u64);
                    n.explicit_meta = true;
                }
            }
        }
        let root_built = match &st.nodes[&ROOT_NODE].body {
            Body::Dir { built, .. } => *built,
            _ => None,
        };
        st.root = root_built;
        Ok(Arc::new(Dataset {
            name: name.to_string(),
            profile_name: profile_name.to_string(),
            profile,
            dir,
            staging,
            blocks,
            state: Mutex::new(st),
            tmp_counter: AtomicU64::new(0),
        }))
    }

    pub fn head(&self) -> Option<Cid> {
        self.state.lock().head
    }

    pub fn root_cid(&self) -> Option<Cid> {
        self.state.lock().root.map(|r| r.cid)
    }

    pub fn version(&self) -> u64 {
        self.state.lock().seq
    }

    pub fn is_empty(&self) -> bool {
        matches!(&self.state.lock().nodes[&ROOT_NODE].body, Body::Dir { children, .. } if children.is_empty())
    }

    // ---- queries ----------------------------------------------------------------------------

    pub fn lookup(&self, parent: NodeId, name: &[u8]) -> Result<NodeId, DsError> {
        let st = self.state.lock();
        match &st.nodes.get(&parent).ok_or(DsError::NotFound)?.body {
            Body::Dir { children, .. } => children.get(name).copied().ok_or(DsError::NotFound),
            _ => Err(DsError::NotADirectory),
        }
    }

    pub fn attr(&self, id: NodeId) -> Result<NodeAttr, DsError> {
        let st = self.state.lock();
        let n = st.nodes.get(&id).ok_or(DsError::NotFound)?;
        Ok(match &n.body {
            Body::Dir { built, .. } => NodeAttr {
                kind: NodeKind::Directory,
                size: 0,
                mode: n.mode,
                mtime: n.mtime,
                cid: built.map(|b| b.cid),
            },
            Body::File { sealed, staged, .. } => NodeAttr {
                kind: NodeKind::File,
                size: staged.as_ref().map(|s| s.size).unwrap_or(sealed.size),
                mode: n.mode,
                mtime: n.mtime,
                cid: Some(sealed.cid),
            },
            Body::Symlink { target, built } => NodeAttr {
                kind: NodeKind::Symlink,
                size: target.len() as u64,
                mode: 0o777,
                mtime: n.mtime,
                cid: Some(built.cid),
            },
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
        let st = self.state.lock();
        match &st.nodes.get(&id).ok_or(DsError::NotFound)?.body {
            Body::File {
                sealed,
                staged: None,
                ..
            } => Ok(ReadFrom::Sealed {
                cid: sealed.cid,
                size: sealed.size,
            }),
            Body::File {
                staged: Some(s),
                sealed,
                ..
            } => {
                let end = (offset + size as u64).min(s.size);
                if offset >= end {
                    return Ok(ReadFrom::Bytes(Bytes::new()));
                }
                let mut out = Vec::with_capacity((end - offset) as usize);
                if offset < s.base_len {
                    let upto = end.min(s.base_len);
                    out.extend_from_slice(&read_sealed(&self.blocks, &sealed.cid, offset, upto)?);
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

    fn new_node(
        st: &mut State,
        parent: NodeId,
        name: &[u8],
        body: Body,
        mode: u32,
        explicit: bool,
    ) -> Result<NodeId, DsError> {
        if !unixfs::is_safe_name(name) {
            return Err(DsError::Invalid("bad name".into()));
        }
        let id = st.next_id;
        st.next_id += 1;
        match &mut st.nodes.get_mut(&parent).ok_or(DsError::NotFound)?.body {
            Body::Dir { children, .. } => {
                if children.contains_key(name) {
                    return Err(DsError::Exists);
                }
                children.insert(name.to_vec(), id);
            }
            _ => return Err(DsError::NotADirectory),
        }
        st.nodes.insert(
            id,
            WNode {
                parent,
                name: name.to_vec(),
                body,
                mode,
                mtime: now(),
                explicit_meta: explicit,
            },
        );
        invalidate(st, parent);
        Ok(id)
    }

    /// Creates an empty file (staged, so that the creator's writes need no copy) and opens it.
    pub fn create_file(&self, parent: NodeId, name: &[u8], mode: u32) -> Result<NodeId, DsError> {
        let mut st = self.state.lock();
        let empty = self.empty_file(&mut st)?;
        let staged = self.new_staged(Vec::new(), 0)?;
        let mode = mode & 0o7777;
        let id = Self::new_node(
            &mut st,
            parent,
            name,
            Body::File {
                sealed: empty,
                staged: Some(Staged {
                    dirty: true,
                    ..staged
                }),
                writers: 1,
            },
            mode,
            mode != 0o644,
        )?;
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
                built: None,
            },
            mode,
            mode != 0o755,
        )?;
        self.commit(&mut st)?;
        Ok(id)
    }

    pub fn symlink(&self, parent: NodeId, name: &[u8], target: &[u8]) -> Result<NodeId, DsError> {
        let mut st = self.state.lock();
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
        self.store_new(&mut st, vec![(cid, block.into())])?;
        let id = Self::new_node(
            &mut st,
            parent,
            name,
            Body::Symlink {
                target: target.to_vec(),
                built: Sealed {
                    cid,
                    size: 0,
                    tsize,
                },
            },
            0o777,
            false,
        )?;
        self.commit(&mut st)?;
        Ok(id)
    }

    pub fn unlink(&self, parent: NodeId, name: &[u8], want_dir: bool) -> Result<(), DsError> {
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
        if let Body::Dir { children, .. } = &mut st.nodes.get_mut(&parent).expect("parent").body {
            children.remove(name);
        }
        // An open file lives on (unnamed) until its last close, as on any filesystem.
        let open = matches!(st.nodes[&id].body, Body::File { writers, .. } if writers > 0);
        if open {
            st.nodes.get_mut(&id).expect("node").parent = 0;
        } else {
            st.nodes.remove(&id);
        }
        invalidate(&mut st, parent);
        self.commit(&mut st)?;
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
            let open = matches!(st.nodes[&target].body, Body::File { writers, .. } if writers > 0);
            if open {
                st.nodes.get_mut(&target).expect("node").parent = 0;
            } else {
                st.nodes.remove(&target);
            }
        }
        if let Body::Dir { children, .. } = &mut st.nodes.get_mut(&parent).expect("parent").body {
            children.remove(name);
        }
        if let Body::Dir { children, .. } =
            &mut st.nodes.get_mut(&new_parent).expect("new parent").body
        {
            children.insert(new_name.to_vec(), id);
        }
        let n = st.nodes.get_mut(&id).expect("node");
        n.parent = new_parent;
        n.name = new_name.to_vec();
        invalidate(&mut st, parent);
        invalidate(&mut st, new_parent);
        self.commit(&mut st)?;
        Ok(())
    }

    /// chmod, utimens and truncate. Metadata changes of a closed file commit at once.
    pub fn setattr(
        &self,
        id: NodeId,
        mode: Option<u32>,
        mtime: Option<SystemTime>,
        size: Option<u64>,
    ) -> Result<(), DsError> {
        let mut st = self.state.lock();
        let open = {
            let n = st.nodes.get_mut(&id).ok_or(DsError::NotFound)?;
            if let Some(m) = mode {
                n.mode = m & 0o7777;
                n.explicit_meta = true;
            }
            if let Some(t) = mtime {
                n.mtime = t;
                n.explicit_meta = true;
            }
            matches!(n.body, Body::File { writers, .. } if writers > 0)
        };
        if let Some(size) = size {
            if !matches!(st.nodes[&id].body, Body::File { .. }) {
                return Err(DsError::IsADirectory);
            }
            self.ensure_staged(&mut st, id)?;
            let n = st.nodes.get_mut(&id).expect("node");
            if let Body::File {
                staged: Some(s),
                sealed,
                ..
            } = &mut n.body
            {
                if size < s.base_len {
                    materialize(&self.blocks, sealed, s, &|| self.spill_file())?;
                }
                s.file
                    .resize(size - s.base_len, &|| self.spill_file())
                    .map_err(DsError::io)?;
                s.size = size;
                s.dirty = true;
                s.generation += 1;
            }
            n.mtime = mtime.unwrap_or_else(now);
            if !open {
                self.seal(&mut st, id)?;
            }
        }
        if !open {
            let parent = st.nodes[&id].parent;
            invalidate(&mut st, parent);
            self.commit(&mut st)?;
        }
        Ok(())
    }

    /// Opens a file for writing; `truncate` drops its content first.
    pub fn open_write(&self, id: NodeId, truncate: bool) -> Result<(), DsError> {
        let mut st = self.state.lock();
        match &st.nodes.get(&id).ok_or(DsError::NotFound)?.body {
            Body::File { .. } => {}
            Body::Dir { .. } => return Err(DsError::IsADirectory),
            Body::Symlink { .. } => return Err(DsError::Invalid("symlink".into())),
        }
        if truncate {
            let staged = self.new_staged(Vec::new(), 0)?;
            if let Body::File { staged: s, .. } = &mut st.nodes.get_mut(&id).expect("node").body {
                *s = Some(Staged {
                    dirty: true,
                    ..staged
                });
            }
        }
        if let Body::File { writers, .. } = &mut st.nodes.get_mut(&id).expect("node").body {
            *writers += 1;
        }
        Ok(())
    }

    pub fn write(&self, id: NodeId, offset: u64, data: &[u8]) -> Result<usize, DsError> {
        let mut st = self.state.lock();
        self.ensure_staged(&mut st, id)?;
        let n = st.nodes.get_mut(&id).ok_or(DsError::NotFound)?;
        if let Body::File {
            staged: Some(s),
            sealed,
            ..
        } = &mut n.body
        {
            if offset < s.base_len {
                materialize(&self.blocks, sealed, s, &|| self.spill_file())?;
            }
            s.file
                .write_all_at(data, offset - s.base_len, &|| self.spill_file())
                .map_err(DsError::io)?;
            s.size = s.size.max(offset + data.len() as u64);
            s.dirty = true;
            s.generation += 1;
            n.mtime = now();
            return Ok(data.len());
        }
        Err(DsError::IsADirectory)
    }

    /// Seals the file if it changed and commits a version: what `fsync` and `close` promise.
    /// Hashing runs without the dataset's lock, so other files stay usable meanwhile.
    pub fn flush(&self, id: NodeId) -> Result<(), DsError> {
        let snapshot = {
            let st = self.state.lock();
            match &st.nodes.get(&id).map(|n| &n.body) {
                Some(Body::File {
                    staged: Some(s), ..
                }) if s.dirty => Snapshot::of(s)?,
                _ => return Ok(()),
            }
        };
        let (sealed, stored) = self.hash_snapshot(&snapshot)?;
        let mut st = self.state.lock();
        st.unpinned.extend(stored);
        if !self.install(&mut st, id, sealed, snapshot.generation)? {
            // Written again meanwhile: the next flush or close seals the newer bytes.
            return Ok(());
        }
        if st.nodes.get(&id).map(|n| n.parent) != Some(0) {
            let parent = st.nodes[&id].parent;
            invalidate(&mut st, parent);
            self.commit(&mut st)?;
        }
        Ok(())
    }

    /// `fsync`: the flush, then everything written so far (blocks, index, HEAD) made durable
    /// against power loss, not only against a crash of this process.
    pub fn sync(&self, id: NodeId) -> Result<(), DsError> {
        self.flush(id)?;
        let dir = std::fs::File::open(&self.dir).map_err(DsError::io)?;
        // One syncfs covers the store's block files, its index and HEAD (one filesystem).
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
            return Err(DsError::io(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// The last close of a writer: seal, commit, drop the staging file.
    pub fn release_write(&self, id: NodeId) -> Result<(), DsError> {
        let result = self.flush(id);
        let mut st = self.state.lock();
        let mut remove = false;
        if let Some(n) = st.nodes.get_mut(&id) {
            if let Body::File {
                writers, staged, ..
            } = &mut n.body
            {
                *writers = writers.saturating_sub(1);
                if *writers == 0 {
                    *staged = None;
                    remove = n.parent == 0;
                }
            }
        }
        if remove {
            st.nodes.remove(&id);
        }
        result
    }

    // ---- internals ----------------------------------------------------------------------------

    /// Stores new blocks and remembers them for the next commit's pin.
    fn store_new(&self, st: &mut State, blocks: Vec<(Cid, Bytes)>) -> Result<(), DsError> {
        if blocks.is_empty() {
            return Ok(());
        }
        self.blocks
            .store()
            .put_many(&blocks)
            .map_err(|e| DsError::Block(e.to_string()))?;
        st.unpinned.extend(blocks.into_iter().map(|(c, _)| c));
        Ok(())
    }

    fn empty_file(&self, st: &mut State) -> Result<Sealed, DsError> {
        let mut w = FileWriter::new(&self.profile);
        let leaf = w.finish();
        self.store_new(st, w.take_blocks())?;
        Ok(Sealed {
            cid: leaf.cid,
            size: 0,
            tsize: leaf.tsize,
        })
    }

    fn new_staged(&self, base: Vec<Leaf>, base_len: u64) -> Result<Staged, DsError> {
        Ok(Staged {
            file: StageBuf::new(),
            size: base_len,
            base,
            base_len,
            dirty: false,
            generation: 0,
        })
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
    /// only the last partial chunk is copied into the staging file.
    fn ensure_staged(&self, st: &mut State, id: NodeId) -> Result<(), DsError> {
        let sealed = match &st.nodes.get(&id).ok_or(DsError::NotFound)?.body {
            Body::File {
                staged: Some(_), ..
            } => return Ok(()),
            Body::File { sealed, .. } => *sealed,
            Body::Dir { .. } => return Err(DsError::IsADirectory),
            Body::Symlink { .. } => return Err(DsError::Invalid("symlink".into())),
        };
        let (base, base_len) = match reusable_leaves(&self.blocks, &self.profile, &sealed) {
            Some(leaves) => {
                let len = leaves.iter().map(|l| l.size).sum();
                (leaves, len)
            }
            None => (Vec::new(), 0),
        };
        let mut staged = self.new_staged(base, base_len)?;
        if sealed.size > base_len {
            let tail = read_sealed(&self.blocks, &sealed.cid, base_len, sealed.size)?;
            staged
                .file
                .write_all_at(&tail, 0, &|| self.spill_file())
                .map_err(DsError::io)?;
        }
        staged.size = sealed.size;
        if let Body::File { staged: s, .. } = &mut st.nodes.get_mut(&id).expect("node").body {
            *s = Some(staged);
        }
        Ok(())
    }

    /// Seals a staged file while holding the lock (truncate of a closed file).
    fn seal(&self, st: &mut State, id: NodeId) -> Result<(), DsError> {
        let snapshot = match &st.nodes.get(&id).map(|n| &n.body) {
            Some(Body::File {
                staged: Some(s), ..
            }) => Snapshot::of(s)?,
            _ => return Ok(()),
        };
        let (sealed, stored) = self.hash_snapshot(&snapshot)?;
        st.unpinned.extend(stored);
        self.install(st, id, sealed, snapshot.generation)?;
        Ok(())
    }

    /// Chunks, hashes and stores a staged file's bytes: the new content and the blocks stored.
    fn hash_snapshot(&self, snap: &Snapshot) -> Result<(Sealed, Vec<Cid>), DsError> {
        // Two stages on two threads: this one reads, chunks and hashes; the other stores the
        // blocks, so hashing and disk writes overlap.
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(Cid, Bytes)>>(4);
            let store = scope.spawn(move || -> Result<Vec<Cid>, DsError> {
                let mut stored = Vec::new();
                for blocks in rx {
                    self.blocks
                        .store()
                        .put_many(&blocks)
                        .map_err(|e| DsError::Block(e.to_string()))?;
                    stored.extend(blocks.iter().map(|(c, _)| *c));
                }
                Ok(stored)
            });
            let hashed = (|| -> Result<Sealed, DsError> {
                let mut w = FileWriter::new(&self.profile);
                for leaf in &snap.base {
                    w.push_leaf(*leaf);
                }
                let total = snap.size - snap.base_len;
                let mut pos = 0u64;
                let mut buf = vec![0u8; self.profile.chunk_size.max(1 << 20)];
                while pos < total {
                    let want = (buf.len() as u64).min(total - pos) as usize;
                    let got = snap
                        .file
                        .read_at(&mut buf[..want], pos)
                        .map_err(DsError::io)?;
                    // Bytes past the staging file's end (a truncate that grew the file) are zeros.
                    buf[got..want].fill(0);
                    w.write(&buf[..want]);
                    pos += want as u64;
                    let blocks = w.take_blocks();
                    if !blocks.is_empty() && tx.send(blocks).is_err() {
                        break; // the store stage failed; its error is reported below
                    }
                }
                let root = w.finish();
                let _ = tx.send(w.take_blocks());
                Ok(Sealed {
                    cid: root.cid,
                    size: root.size,
                    tsize: root.tsize,
                })
            })();
            drop(tx);
            let stored = store
                .join()
                .map_err(|_| DsError::Io("block store thread panicked".into()))??;
            Ok((hashed?, stored))
        })
    }

    /// Makes `sealed` the file's content if nothing was written since the snapshot; the staging
    /// file then keeps only the last partial chunk, so the next append reuses every full leaf.
    fn install(
        &self,
        st: &mut State,
        id: NodeId,
        new: Sealed,
        generation: u64,
    ) -> Result<bool, DsError> {
        let Some(n) = st.nodes.get_mut(&id) else {
            return Ok(false);
        };
        let Body::File {
            sealed,
            staged: Some(s),
            ..
        } = &mut n.body
        else {
            return Ok(false);
        };
        if s.generation != generation {
            return Ok(false);
        }
        *sealed = new;
        let leaves = reusable_leaves(&self.blocks, &self.profile, sealed).unwrap_or_default();
        let base_len: u64 = leaves.iter().map(|l| l.size).sum();
        let tail = if sealed.size > base_len {
            read_sealed(&self.blocks, &sealed.cid, base_len, sealed.size)?
        } else {
            Vec::new()
        };
        s.file = StageBuf::new();
        s.file
            .write_all_at(&tail, 0, &|| self.spill_file())
            .map_err(DsError::io)?;
        s.base = leaves;
        s.base_len = base_len;
        s.dirty = false;
        Ok(true)
    }

    /// Moves HEAD. A commit CID has a fixed length, so the new one overwrites the old in one
    /// `pwrite` (atomic for a crashing process, and no new inode per commit); anything else
    /// goes through a temporary file and a rename.
    fn write_head(&self, commit: &Cid) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let path = self.dir.join("HEAD");
        let text = commit.to_string();
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == text.len() as u64 => std::fs::OpenOptions::new()
                .write(true)
                .open(&path)?
                .write_all_at(text.as_bytes(), 0),
            _ => super::write_atomic(&path, text.as_bytes(), false),
        }
    }

    /// Builds the changed directories and records a new version.
    fn commit(&self, st: &mut State) -> Result<(), DsError> {
        let mut new_blocks: Vec<(Cid, Bytes)> = Vec::new();
        let root = build_dir(st, ROOT_NODE, &self.profile, &mut new_blocks)?;
        self.store_new(st, new_blocks)?;
        let meta: BTreeMap<String, Meta> = st
            .nodes
            .iter()
            .filter(|(_, n)| n.explicit_meta && n.parent != 0)
            .map(|(id, n)| {
                (
                    path_of(st, *id),
                    Meta {
                        mode: n.mode,
                        mtime: secs(n.mtime),
                    },
                )
            })
            .collect();
        let commit = Commit {
            prev: st.head,
            root: root.cid,
            seq: if st.head.is_some() { st.seq + 1 } else { 0 },
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            meta,
        };
        let (commit_cid, commit_bytes) =
            commit.encode().map_err(|e| DsError::Block(e.to_string()))?;
        self.blocks
            .put_verified(&commit_cid, commit_bytes)
            .map_err(|e| DsError::Block(e.to_string()))?;
        // This version's new blocks; everything it shares with older versions is pinned by them.
        let mut pinned = std::mem::take(&mut st.unpinned);
        pinned.push(commit_cid);
        pinned.push(root.cid);
        self.blocks
            .store()
            .pin(
                &commit_cid,
                &format!("dataset:{}", self.name),
                &mut pinned.into_iter(),
            )
            .map_err(|e| DsError::Block(e.to_string()))?;
        self.write_head(&commit_cid).map_err(DsError::io)?;
        tracing::info!(dataset = %self.name, seq = commit.seq, root = %root.cid, commit = %commit_cid, "new version");
        st.head = Some(commit_cid);
        st.root = Some(root);
        st.seq = commit.seq;
        super::COMMITTED.notify_one();
        Ok(())
    }
}

/// A staged file's state at the start of a seal.
struct Snapshot {
    file: StageBuf,
    size: u64,
    base: Vec<Leaf>,
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
}

/// What a read of a dataset file should serve.
pub enum ReadFrom {
    Bytes(Bytes),
    Sealed { cid: Cid, size: u64 },
}

fn path_of(st: &State, mut id: NodeId) -> String {
    let mut parts = Vec::new();
    while id != ROOT_NODE {
        let Some(n) = st.nodes.get(&id) else { break };
        parts.push(String::from_utf8_lossy(&n.name).into_owned());
        if n.parent == id || n.parent == 0 {
            break;
        }
        id = n.parent;
    }
    parts.reverse();
    parts.join("/")
}

/// Marks a directory and its ancestors as needing a rebuild.
fn invalidate(st: &mut State, mut id: NodeId) {
    loop {
        let Some(n) = st.nodes.get_mut(&id) else {
            return;
        };
        if let Body::Dir { built, .. } = &mut n.body {
            *built = None;
        }
        if id == ROOT_NODE || n.parent == 0 {
            return;
        }
        id = n.parent;
    }
}

/// Builds `id` and every unbuilt directory below it, children first (explicit stack).
fn build_dir(
    st: &mut State,
    id: NodeId,
    profile: &ImportProfile,
    out: &mut Vec<(Cid, Bytes)>,
) -> Result<Sealed, DsError> {
    let mut stack = vec![(id, false)];
    while let Some((dir, expanded)) = stack.pop() {
        let Body::Dir { children, built } = &st.nodes[&dir].body else {
            continue;
        };
        if built.is_some() {
            continue;
        }
        if !expanded {
            stack.push((dir, true));
            for child in children.values() {
                if matches!(st.nodes[child].body, Body::Dir { built: None, .. }) {
                    stack.push((*child, false));
                }
            }
            continue;
        }
        let entries: Vec<(Vec<u8>, Cid, u64)> = children
            .iter()
            .map(|(name, child)| {
                let s = match &st.nodes[child].body {
                    Body::Dir { built, .. } => built.expect("children built first"),
                    Body::File { sealed, .. } => *sealed,
                    Body::Symlink { built, .. } => *built,
                };
                (name.clone(), s.cid, s.tsize)
            })
            .collect();
        let b = build_directory_auto(&entries, profile);
        out.extend(b.blocks);
        if let Body::Dir { built, .. } = &mut st.nodes.get_mut(&dir).expect("dir").body {
            *built = Some(Sealed {
                cid: b.root,
                size: 0,
                tsize: b.tsize,
            });
        }
    }
    match &st.nodes[&id].body {
        Body::Dir { built: Some(b), .. } => Ok(*b),
        _ => Err(DsError::Io("directory build failed".into())),
    }
}

/// The entries (name, cid, tsize) of a UnixFS directory or HAMT whose blocks are local.
fn dir_entries(blocks: &BlockService, cid: &Cid) -> anyhow::Result<Vec<(Vec<u8>, Cid, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![*cid];
    while let Some(c) = stack.pop() {
        let block = blocks
            .get_local(&c)?
            .ok_or_else(|| anyhow::anyhow!("block {c} missing"))?;
        match unixfs::decode_node_shared(&c, &block)? {
            Node::Directory(d) => {
                out.extend(
                    d.entries
                        .into_iter()
                        .map(|e| (e.name, e.cid, e.tsize.unwrap_or(0))),
                );
            }
            Node::HamtShard(h) => {
                for l in h.links {
                    match l {
                        HamtLink::Entry {
                            name, cid, tsize, ..
                        } => out.push((name, cid, tsize.unwrap_or(0))),
                        HamtLink::Shard { cid, .. } => stack.push(cid),
                    }
                }
            }
            _ => anyhow::bail!("{c} is not a directory"),
        }
    }
    Ok(out)
}

/// The leaves of a sealed file that an append can keep: every leading full chunk, when the file
/// was built with this profile's chunker (same leaf codec, full-size leaves).
fn reusable_leaves(
    blocks: &BlockService,
    profile: &ImportProfile,
    sealed: &Sealed,
) -> Option<Vec<Leaf>> {
    let chunk = profile.chunk_size as u64;
    if sealed.size < chunk {
        return Some(Vec::new());
    }
    // Walk interior nodes (cached or local) down to the leaves, in order.
    let mut leaves = Vec::new();
    let mut stack = vec![Leaf {
        cid: sealed.cid,
        size: sealed.size,
        tsize: sealed.tsize,
    }];
    while let Some(node) = stack.pop() {
        let leaf_codec = if profile.raw_leaves {
            codec::RAW
        } else {
            codec::DAG_PB
        };
        if node.cid.codec() == codec::RAW {
            leaves.push(node);
            continue;
        }
        let block = blocks.get_local(&node.cid).ok()??;
        let f = match unixfs::decode_node_shared(&node.cid, &block).ok()? {
            Node::File(f) => f,
            _ => return None,
        };
        if f.children.is_empty() {
            if leaf_codec != codec::DAG_PB {
                return None;
            }
            leaves.push(node);
            continue;
        }
        let links = dagpb::decode_shared(&block).ok()?.links;
        for (i, (c, size)) in f.children.iter().enumerate().rev() {
            let tsize = links.get(i).and_then(|l| l.tsize).unwrap_or(0);
            stack.push(Leaf {
                cid: *c,
                size: *size,
                tsize,
            });
        }
    }
    // Keep the leading full chunks (all but a partial last one).
    let full = leaves.iter().take_while(|l| l.size == chunk).count();
    let keep = if full == leaves.len() {
        full
    } else {
        full.min(leaves.len() - 1)
    };
    let expected_codec = if profile.raw_leaves {
        codec::RAW
    } else {
        codec::DAG_PB
    };
    if leaves
        .iter()
        .take(keep)
        .any(|l| l.cid.codec() != expected_codec)
    {
        return None;
    }
    leaves.truncate(keep);
    Some(leaves)
}

/// Bytes `[from, to)` of a sealed file from local blocks.
fn read_sealed(blocks: &BlockService, root: &Cid, from: u64, to: u64) -> Result<Vec<u8>, DsError> {
    let mut out = Vec::with_capacity((to - from) as usize);
    let mut stack = vec![(*root, 0u64)];
    while let Some((cid, start)) = stack.pop() {
        let block = blocks
            .get_local(&cid)
            .map_err(|e| DsError::Block(e.to_string()))?
            .ok_or_else(|| DsError::Block(format!("block {cid} missing")))?;
        let f = match unixfs::decode_node_shared(&cid, &block)
            .map_err(|e| DsError::Block(e.to_string()))?
        {
            Node::File(f) => f,
            _ => return Err(DsError::Block(format!("{cid} is not a file"))),
        };
        let inline_end = start + f.inline.len() as u64;
        if from < inline_end && to > start {
            let s = (from.max(start) - start) as usize;
            let e = (to.min(inline_end) - start) as usize;
            out.extend_from_slice(&f.inline[s..e]);
        }
        let mut child_start = inline_end;
        let mut next = Vec::new();
        for (c, size) in &f.children {
            if child_start >= to {
                break;
            }
            if child_start + size > from {
                next.push((*c, child_start));
            }
            child_start += size;
        }
        stack.extend(next.into_iter().rev());
    }
    Ok(out)
}

/// Turns a tail-only staged file into a whole one (a write or truncate before the tail).
fn materialize(
    blocks: &BlockService,
    sealed: &Sealed,
    s: &mut Staged,
    spill: &dyn Fn() -> std::io::Result<std::fs::File>,
) -> Result<(), DsError> {
    if s.base_len == 0 {
        return Ok(());
    }
    let head = read_sealed(blocks, &sealed.cid, 0, s.base_len)?;
    let tail = s.file.read_all().map_err(DsError::io)?;
    s.file = StageBuf::new();
    s.file.write_all_at(&head, 0, spill).map_err(DsError::io)?;
    s.file
        .write_all_at(&tail, head.len() as u64, spill)
        .map_err(DsError::io)?;
    s.base.clear();
    s.base_len = 0;
    Ok(())
}
