//! The namespace the mount shows, independent of the kernel.
//!
//! ```text
//! /                 root
//! ├── ipfs/         any CID as a child name (looked up on demand; readdir lists pinned roots)
//! │   └── <cid>/…   UnixFS content, read-only
//! ├── ipns/         names (empty until IPNS lands)
//! └── datasets/     writable datasets (empty until datasets land)
//! ```
//!
//! # Inodes
//! Inode numbers are derived from (parent inode, name) with a fixed hash, so the same path gets
//! the same number across remounts, and two paths to the same CID are distinct inodes (the
//! kernel allows a directory only one parent). The table keeps an entry while the kernel holds
//! a lookup reference on it (`forget` drops it); the fixed roots are never dropped.
//!
//! # Immutability
//! Everything under `/ipfs` is immutable, so attributes and entries carry very long TTLs and
//! open files keep the page cache across opens.

// Errors carry the CID they concern (a CID is ~100 bytes); they are rare, so their size on the
// stack costs nothing worth boxing for.
#![allow(clippy::result_large_err)]

mod account;
mod dataset;
mod dir;
pub mod error;
mod file;
mod prefetch;
mod replica;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cid::Cid;
use ipfs_mount_ipld::unixfs::{self, Node};
use ipfs_mount_ipld::{cids, codec};
use parking_lot::RwLock;

use crate::blocks::{BlockError, BlockService};
use crate::datasets::{Dataset, Datasets, DsError, NodeId, ROOT_NODE};
use dataset::dataset_kind;
pub use dir::Listing;
pub use error::{Error, Result};
use prefetch::HandleReadAhead;

pub type InodeNo = u64;
pub const ROOT_INO: InodeNo = 1;
pub const IPFS_INO: InodeNo = 2;
pub const IPNS_INO: InodeNo = 3;
pub const DATASETS_INO: InodeNo = 4;
const FIRST_DYNAMIC_INO: InodeNo = 16;
/// Dataset nodes get numbers from a counter above this (their paths change with renames).
const FIRST_DATASET_INO: InodeNo = 1 << 62;

/// The extended attribute holding a node's CID.
pub const XATTR_CID: &str = "user.ipfs.cid";
/// On a dataset's root: the CID of its head commit record.
pub const XATTR_COMMIT: &str = "user.ipfs.commit";
/// The IPNS name a dataset is published under.
pub const XATTR_NAME: &str = "user.ipfs.name";
/// Bytes read from a file under /ipfs or /ipns since the mount started (decimal).
pub const XATTR_READ: &str = "user.ipfs.read";
/// Bytes fetched from outside on behalf of that file's readers (decimal).
pub const XATTR_FETCHED: &str = "user.ipfs.fetched";

/// TTL for immutable content: entries and attributes under /ipfs never change.
const IMMUTABLE_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// TTL for the fixed top-level directories, whose contents may change (datasets, pins).
const MUTABLE_TTL: Duration = Duration::from_secs(1);
/// TTL for dataset entries and attributes: every change goes through us, but other processes
/// may look at the same dataset through another path.
const DATASET_TTL: Duration = Duration::from_secs(1);
/// How long a reader waits for a file's stream to bring its next block before fetching it
/// itself. Covers a gateway's time to first byte (some build the whole CAR first).
const STREAM_STALL: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    File,
    Symlink,
}

/// Attributes in plain types; the fuser adapter turns them into `FileAttr`.
#[derive(Debug, Clone)]
pub struct Attr {
    pub ino: InodeNo,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub mtime: SystemTime,
    pub atime: SystemTime,
    pub ctime: SystemTime,
    pub nlink: u32,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct DirEntryOut {
    pub ino: InodeNo,
    /// The offset the kernel passes back to continue after this entry.
    pub next_offset: u64,
    pub kind: Kind,
    pub name: OsString,
}

/// What an inode is.
#[derive(Clone)]
enum NodeKind {
    Root,
    IpfsRoot,
    IpnsRoot,
    DatasetsRoot,
    Content(Arc<Content>),
    /// A node of a writable dataset (its root directory is `ROOT_NODE`).
    Dataset(Arc<Dataset>, NodeId),
}

/// A resolved piece of IPFS content.
pub(crate) struct Content {
    cid: Cid,
    body: Body,
}

enum Body {
    File {
        size: u64,
    },
    /// dag-cbor/dag-json shown as its dag-json text.
    Document {
        json: Bytes,
    },
    Directory {
        listing: Arc<Listing>,
    },
    /// A HAMT-sharded directory: the listing is built on first readdir only.
    Sharded {
        root: Arc<ipfs_mount_ipld::hamt::HamtNode>,
        listing: tokio::sync::OnceCell<Arc<Listing>>,
    },
    Symlink {
        target: Vec<u8>,
    },
}

struct Inode {
    parent: InodeNo,
    name: Vec<u8>,
    node: NodeKind,
    attr: Attr,
    lookups: AtomicU64,
}

struct Handle {
    ino: InodeNo,
    /// Set when the handle may write a dataset file.
    writer: Option<(Arc<Dataset>, NodeId)>,
    /// Set when the handle only reads a dataset file (it keeps the file open in the dataset,
    /// so that it outlives an unlink).
    reader: Option<(Arc<Dataset>, NodeId)>,
    /// Written through since its last flush: a `close` of one of its descriptors seals the file
    /// only then (a shell's `> file` closes a dup before anything is written; the last close
    /// always seals).
    wrote: std::sync::atomic::AtomicBool,
    /// Stopped when the handle goes (its last close).
    read_ahead: HandleReadAhead,
}

/// What the tree needs from the names layer (`crate::names`), kept as a trait so that the
/// tree runs without it (and tests can fake it).
#[async_trait::async_trait]
pub trait NameResolver: Send + Sync + 'static {
    /// `/ipfs/<cid>[/path]` for an IPNS name or DNSLink domain, and how long it may be cached.
    async fn resolve(&self, name: &str) -> std::result::Result<(String, Duration), Error>;
    /// The IPNS name a dataset is published under.
    fn dataset_name(&self, dataset: &str) -> Option<String>;
    /// Names we publish (listed in `/ipns`).
    fn own_names(&self) -> Vec<String>;
}

/// Entry TTL under `/ipns` when the record says nothing shorter.
const IPNS_MAX_TTL: Duration = Duration::from_secs(60);

/// Settings for the tree.
#[derive(Debug, Clone)]
pub struct TreeConfig {
    pub uid: u32,
    pub gid: u32,
    /// Upper bound of the sequential prefetch window, in bytes.
    pub max_prefetch: u64,
    /// Bytes of decoded interior file nodes kept (their links and inline data; see
    /// [`FileNodeWeighter`]).
    pub file_node_cache_bytes: u64,
}

/// The weight of a cached interior file node: the memory it holds, roughly. Its links (a CID
/// and a size each: a node of 174 links weighs ~17 KiB) and its inline bytes (which share
/// the buffer of the block they came from), plus the entry itself. Never zero (quick_cache
/// never evicts weightless items).
#[derive(Clone)]
pub(crate) struct FileNodeWeighter;

impl quick_cache::Weighter<Cid, Arc<unixfs::FileNode>> for FileNodeWeighter {
    fn weight(&self, _cid: &Cid, node: &Arc<unixfs::FileNode>) -> u64 {
        (std::mem::size_of::<Cid>()
            + std::mem::size_of::<unixfs::FileNode>()
            + node.children.len() * std::mem::size_of::<(Cid, u64)>()
            + node.inline.len()
            + 64) as u64
    }
}

/// The tree's cache of decoded interior file nodes, bounded by `bytes` of
/// [`FileNodeWeighter`] weight.
pub(crate) fn file_node_cache(
    bytes: u64,
) -> quick_cache::sync::Cache<Cid, Arc<unixfs::FileNode>, FileNodeWeighter> {
    // the item estimate only sizes the tables: a node of ~100 links
    let estimated_items = (bytes / 8192).clamp(16, 1 << 20) as usize;
    quick_cache::sync::Cache::with_weighter(estimated_items, bytes, FileNodeWeighter)
}

/// The tree's cache of decoded interior nodes, as the reader's file planner sees it.
pub(crate) struct Nodes<'a>(
    pub &'a quick_cache::sync::Cache<Cid, Arc<unixfs::FileNode>, FileNodeWeighter>,
);

impl ipfs_mount_ipld::reader::file::NodeCache for Nodes<'_> {
    fn get(&self, cid: &Cid) -> Option<Arc<unixfs::FileNode>> {
        self.0.get(cid)
    }

    fn insert(&self, cid: Cid, node: Arc<unixfs::FileNode>) {
        self.0.insert(cid, node);
    }
}

impl Default for TreeConfig {
    fn default() -> Self {
        TreeConfig {
            uid: 0,
            gid: 0,
            max_prefetch: 64 << 20,
            file_node_cache_bytes: 32 << 20,
        }
    }
}

/// Entries of one `READDIRPLUS` batch looked up at once (each may fetch its root block).
const LOOKUPS_AT_ONCE: usize = 32;

pub struct Tree {
    blocks: Arc<BlockService>,
    config: TreeConfig,
    inodes: RwLock<HashMap<InodeNo, Arc<Inode>>>,
    children: RwLock<HashMap<(InodeNo, Vec<u8>), InodeNo>>,
    handles: RwLock<HashMap<u64, Arc<Handle>>>,
    next_handle: AtomicU64,
    /// Decoded interior file nodes, so that reads do not decode the same nodes again.
    file_nodes: quick_cache::sync::Cache<Cid, Arc<unixfs::FileNode>, FileNodeWeighter>,
    /// Bytes read and fetched per file.
    accounts: account::Accounts,
    mount_time: SystemTime,
    datasets: Option<Arc<Datasets>>,
    /// Inode numbers of dataset nodes, which keep theirs across renames.
    dataset_inos: RwLock<HashMap<(String, NodeId), InodeNo>>,
    next_dataset_ino: AtomicU64,
    names: std::sync::OnceLock<Arc<dyn NameResolver>>,
}

impl Tree {
    pub fn new(blocks: Arc<BlockService>, config: TreeConfig) -> Arc<Self> {
        Self::with_datasets(blocks, config, None)
    }

    pub fn with_datasets(
        blocks: Arc<BlockService>,
        config: TreeConfig,
        datasets: Option<Arc<Datasets>>,
    ) -> Arc<Self> {
        let mount_time = SystemTime::now();
        let file_nodes = file_node_cache(config.file_node_cache_bytes);
        let tree = Tree {
            blocks,
            config,
            datasets,
            dataset_inos: RwLock::new(HashMap::new()),
            next_dataset_ino: AtomicU64::new(FIRST_DATASET_INO),
            names: std::sync::OnceLock::new(),
            inodes: RwLock::new(HashMap::new()),
            children: RwLock::new(HashMap::new()),
            handles: RwLock::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            file_nodes,
            accounts: account::Accounts::default(),
            mount_time,
        };
        let fixed = [
            (ROOT_INO, ROOT_INO, "", NodeKind::Root),
            (IPFS_INO, ROOT_INO, "ipfs", NodeKind::IpfsRoot),
            (IPNS_INO, ROOT_INO, "ipns", NodeKind::IpnsRoot),
            (DATASETS_INO, ROOT_INO, "datasets", NodeKind::DatasetsRoot),
        ];
        {
            let mut inodes = tree.inodes.write();
            let mut children = tree.children.write();
            for (ino, parent, name, node) in fixed {
                let attr = tree.dir_attr(ino, 0o555, mount_time);
                inodes.insert(
                    ino,
                    Arc::new(Inode {
                        parent,
                        name: name.as_bytes().to_vec(),
                        node,
                        attr,
                        lookups: AtomicU64::new(1),
                    }),
                );
                if ino != ROOT_INO {
                    children.insert((parent, name.as_bytes().to_vec()), ino);
                }
            }
        }
        Arc::new(tree)
    }

    /// Turns on `/ipns` (and the `user.ipfs.name` attribute of datasets).
    pub fn set_names(&self, names: Arc<dyn NameResolver>) {
        let _ = self.names.set(names);
    }

    pub fn blocks(&self) -> &Arc<BlockService> {
        &self.blocks
    }

    fn dir_attr(&self, ino: InodeNo, perm: u16, mtime: SystemTime) -> Attr {
        Attr {
            ino,
            kind: Kind::Directory,
            size: 0,
            perm,
            mtime,
            atime: mtime,
            ctime: mtime,
            nlink: 2,
        }
    }

    fn inode(&self, ino: InodeNo) -> Result<Arc<Inode>> {
        self.inodes
            .read()
            .get(&ino)
            .cloned()
            .ok_or(Error::StaleInode(ino))
    }

    fn ttl_for(node: &NodeKind) -> Duration {
        match node {
            NodeKind::Content(_) => IMMUTABLE_TTL,
            NodeKind::Dataset(..) => DATASET_TTL,
            _ => MUTABLE_TTL,
        }
    }

    // ---- lookup / getattr / forget -------------------------------------------------------

    /// How long the kernel may remember that `parent` has no entry by a name that
    /// [`lookup_cached`](Self::lookup_cached) just answered `err` for: immutable directories
    /// forever-ish, dataset directories as long as their entries (every change to them comes
    /// through the kernel, which drops the negative entry itself). Tools that look a name up
    /// twice before creating it (`cp -t`, rsync) then cost one request, not two.
    pub fn negative_ttl(&self, parent: InodeNo, err: &Error) -> Option<Duration> {
        if !matches!(err, Error::NotFound(_) | Error::Dataset(DsError::NotFound)) {
            return None;
        }
        let inode = self.inodes.read().get(&parent).cloned()?;
        match &inode.node {
            node @ (NodeKind::Content(_) | NodeKind::Dataset(..)) => Some(Self::ttl_for(node)),
            _ => None,
        }
    }

    /// Answers a lookup from what is already known or local, without waiting; `None` means the
    /// async [`Tree::lookup`] has to fetch something. `ls -l` of a big directory is thousands of
    /// lookups in a row: answering them on the FUSE thread saves a thread hand-off each.
    pub fn lookup_cached(&self, parent: InodeNo, name: &OsStr) -> Option<Result<Entry>> {
        if parent == IPNS_INO || parent == DATASETS_INO {
            // names move: always resolve (the resolver caches by TTL); so do replicas
            return None;
        }
        let name_bytes = name.as_bytes();
        let known = self
            .children
            .read()
            .get(&(parent, name_bytes.to_vec()))
            .copied();
        if let Some(inode) = known.and_then(|ino| self.inodes.read().get(&ino).cloned()) {
            inode.lookups.fetch_add(1, Ordering::Relaxed);
            return Some(Ok(Entry {
                attr: inode.attr.clone(),
                ttl: Self::ttl_for(&inode.node),
            }));
        }
        let parent_inode = self.inodes.read().get(&parent).cloned()?;
        let content =
            match &parent_inode.node {
                NodeKind::Content(content) => content,
                // Dataset trees live in memory: answered here, never waits.
                NodeKind::Dataset(ds, node) => {
                    return Some(ds.lookup(*node, name_bytes).map_err(Error::from).and_then(
                        |child| self.dataset_entry(parent, name_bytes, ds.clone(), child),
                    ));
                }
                _ => return None,
            };
        let listing = match &content.body {
            Body::Directory { listing } => listing.clone(),
            Body::Sharded { listing, .. } => listing.get()?.clone(),
            _ => return None,
        };
        if !unixfs::is_safe_name(name_bytes) {
            return None;
        }
        let Some(entry) = listing.find(name_bytes) else {
            return Some(Err(Error::NotFound(format!(
                "{}/{}",
                content.cid,
                name.to_string_lossy()
            ))));
        };
        let resolved = match (entry.tsize, entry.cid.codec()) {
            (Some(size), codec::RAW) if !self.blocks.has_local(&entry.cid) => Ok((
                Arc::new(Content {
                    cid: entry.cid,
                    body: Body::File { size },
                }),
                Meta::default(),
            )),
            _ => match self.blocks.get_local(&entry.cid) {
                Ok(Some(block)) => self.resolve_block(&entry.cid, &block),
                Ok(None) => return None,
                Err(e) => Err(e.into()),
            },
        };
        Some(resolved.map(|(node, meta)| self.insert_child(parent, name_bytes, node, meta)))
    }

    pub async fn lookup(&self, parent: InodeNo, name: &OsStr) -> Result<Entry> {
        let name_bytes = name.as_bytes();
        if parent == IPNS_INO {
            return self.lookup_ipns(name_bytes).await;
        }
        if parent == DATASETS_INO {
            // A replica moves to each version seen, and goes when unfollowed: never answered
            // from the table.
            if self.is_replica(name_bytes) {
                return self.lookup_replica(name_bytes).await;
            }
            self.forget_replica_entry(name_bytes);
        }
        // A kernel-cached child may still be in our table: answer without any work.
        let known = self
            .children
            .read()
            .get(&(parent, name_bytes.to_vec()))
            .copied();
        if let Some(ino) = known {
            if let Some(inode) = self.inodes.read().get(&ino).cloned() {
                inode.lookups.fetch_add(1, Ordering::Relaxed);
                return Ok(Entry {
                    attr: inode.attr.clone(),
                    ttl: Self::ttl_for(&inode.node),
                });
            }
        }
        let parent_inode = self.inode(parent)?;
        let (node, mtime_mode) = match &parent_inode.node {
            NodeKind::Root => return Err(Error::NotFound(format!("/{}", name.to_string_lossy()))),
            NodeKind::IpnsRoot => {
                return Err(Error::NotFound(format!("/ipns/{}", name.to_string_lossy())))
            }
            NodeKind::DatasetsRoot => {
                if name_bytes.len() > crate::datasets::NAME_MAX {
                    return Err(DsError::NameTooLong.into());
                }
                let text = name.to_string_lossy();
                let sets = self.datasets.as_ref();
                if let Some(reason) = sets.and_then(|d| d.damaged(&text)) {
                    // Not shown (ENOENT, so that mkdir reaches us and gets EEXIST: the name is
                    // kept for its history), and said why.
                    tracing::warn!(dataset = %text, "dataset is damaged (see `ipfs-mount dataset list`): {reason}");
                    return Err(Error::NotFound(format!(
                        "/datasets/{text} (damaged: {reason})"
                    )));
                }
                let ds = sets
                    .and_then(|d| d.get(&text))
                    .ok_or_else(|| Error::NotFound(format!("/datasets/{text}")))?;
                return self.dataset_entry(parent, name_bytes, ds, ROOT_NODE);
            }
            NodeKind::Dataset(ds, node) => {
                let child = ds.lookup(*node, name_bytes)?;
                return self.dataset_entry(parent, name_bytes, ds.clone(), child);
            }
            NodeKind::IpfsRoot => {
                let text = std::str::from_utf8(name_bytes).map_err(|_| {
                    Error::NotFound(format!("/ipfs/{}: not UTF-8", name.to_string_lossy()))
                })?;
                // Malformed names are refused here, before any network traffic.
                let cid = cids::parse(text)
                    .map_err(|e| Error::NotFound(format!("/ipfs/{text}: not a CID ({e})")))?;
                match self.resolve(&cid).await {
                    Ok(r) => r,
                    Err(Error::Block(BlockError::NotFound { .. } | BlockError::Offline { .. })) => {
                        return Err(Error::NotFound(format!("/ipfs/{text}: no such content")))
                    }
                    Err(e) => return Err(e),
                }
            }
            NodeKind::Content(content) => {
                let (child, tsize) = self.find_child(content, name_bytes).await?;
                match tsize {
                    // A raw block is a file whose size its link records: no fetch needed to stat
                    // it (`ls -l` of a big directory), and every read checks that size.
                    Some(size) if child.codec() == codec::RAW && !self.blocks.has_local(&child) => {
                        (
                            Arc::new(Content {
                                cid: child,
                                body: Body::File { size },
                            }),
                            Meta::default(),
                        )
                    }
                    _ => self.resolve(&child).await?,
                }
            }
        };
        Ok(self.insert_child(parent, name_bytes, node, mtime_mode))
    }

    /// `/ipns/<name>`: the node the name points to now, with an entry TTL no longer than the
    /// record's. When the name moves to other content, the entry gets a new inode.
    async fn lookup_ipns(&self, name: &[u8]) -> Result<Entry> {
        let text = std::str::from_utf8(name).map_err(|_| {
            Error::NotFound(format!(
                "/ipns/{}: not UTF-8",
                String::from_utf8_lossy(name)
            ))
        })?;
        let Some(names) = self.names.get() else {
            return Err(Error::NotFound(format!("/ipns/{text}: names are off")));
        };
        let (path, ttl) = names.resolve(text).await?;
        let rest = path
            .strip_prefix("/ipfs/")
            .ok_or_else(|| Error::NotFound(format!("/ipns/{text} -> {path}: not an /ipfs path")))?;
        let mut parts = rest.split('/').filter(|p| !p.is_empty());
        let cid_text = parts.next().unwrap_or_default();
        let cid = cids::parse(cid_text)
            .map_err(|e| Error::NotFound(format!("/ipns/{text} -> {path}: bad CID ({e})")))?;
        let (mut content, mut meta) = match self.resolve(&cid).await {
            Ok(r) => r,
            // The name is valid; its content cannot be had: EIO, not ENOENT.
            Err(Error::Block(e @ BlockError::NotFound { .. })) => {
                return Err(Error::Block(BlockError::Unavailable {
                    cid,
                    cause: format!("/ipns/{text} points to content no source has ({e})"),
                }))
            }
            Err(e) => return Err(e),
        };
        for part in parts {
            let (child, _) = self.find_child(&content, part.as_bytes()).await?;
            (content, meta) = self.resolve(&child).await?;
        }
        // Never longer than the record allows (its TTL, and the time left to its EOL).
        let ttl = ttl.min(IPNS_MAX_TTL);
        Ok(self.insert_moving_child(IPNS_INO, name, content, meta, ttl))
    }

    /// Registers `parent/name` as `content` for names whose target moves (`/ipns/<name>`, a
    /// replica's `/datasets/<name>`): the same inode while the target stays, a new one when
    /// it moves (the old one lives until the kernel forgets it).
    fn insert_moving_child(
        &self,
        parent: InodeNo,
        name: &[u8],
        content: Arc<Content>,
        meta: Meta,
        ttl: Duration,
    ) -> Entry {
        let key = (parent, name.to_vec());
        let mut children = self.children.write();
        let mut inodes = self.inodes.write();
        if let Some(inode) = children.get(&key).and_then(|ino| inodes.get(ino)) {
            if let NodeKind::Content(c) = &inode.node {
                if c.cid == content.cid {
                    inode.lookups.fetch_add(1, Ordering::Relaxed);
                    return Entry {
                        attr: inode.attr.clone(),
                        ttl,
                    };
                }
            }
        }
        let mut ino =
            stable_ino(parent, name) ^ stable_ino(parent, content.cid.to_bytes().as_slice());
        ino %= FIRST_DATASET_INO;
        ino = ino.max(FIRST_DYNAMIC_INO);
        while inodes.contains_key(&ino) {
            ino = ((ino + 1) % FIRST_DATASET_INO).max(FIRST_DYNAMIC_INO);
        }
        let attr = self.content_attr(ino, &content, meta);
        inodes.insert(
            ino,
            Arc::new(Inode {
                parent,
                name: name.to_vec(),
                node: NodeKind::Content(content),
                attr: attr.clone(),
                lookups: AtomicU64::new(1),
            }),
        );
        children.insert(key, ino);
        Entry { attr, ttl }
    }

    /// Registers (or re-finds) the inode for `parent/name` and takes one lookup reference.
    fn insert_child(
        &self,
        parent: InodeNo,
        name: &[u8],
        content: Arc<Content>,
        meta: Meta,
    ) -> Entry {
        let key = (parent, name.to_vec());
        let mut children = self.children.write();
        let mut inodes = self.inodes.write();
        if let Some(ino) = children.get(&key) {
            if let Some(inode) = inodes.get(ino) {
                inode.lookups.fetch_add(1, Ordering::Relaxed);
                return Entry {
                    attr: inode.attr.clone(),
                    ttl: Self::ttl_for(&inode.node),
                };
            }
        }
        let mut ino = stable_ino(parent, name);
        while inodes.contains_key(&ino) {
            ino = (ino + 1) % FIRST_DATASET_INO;
            ino = ino.max(FIRST_DYNAMIC_INO);
        }
        let attr = self.content_attr(ino, &content, meta);
        let node = NodeKind::Content(content);
        let ttl = Self::ttl_for(&node);
        inodes.insert(
            ino,
            Arc::new(Inode {
                parent,
                name: name.to_vec(),
                node,
                attr: attr.clone(),
                lookups: AtomicU64::new(1),
            }),
        );
        children.insert(key, ino);
        Entry { attr, ttl }
    }

    fn content_attr(&self, ino: InodeNo, content: &Content, meta: Meta) -> Attr {
        let mtime = meta
            .mtime
            .map(|t| {
                if t.secs >= 0 {
                    UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos.unwrap_or(0).min(999_999_999))
                } else {
                    UNIX_EPOCH
                }
            })
            .unwrap_or(UNIX_EPOCH);
        let (kind, size, default_perm, nlink) = match &content.body {
            Body::File { size } => (Kind::File, *size, 0o444, 1),
            Body::Document { json } => (Kind::File, json.len() as u64, 0o444, 1),
            Body::Directory { .. } | Body::Sharded { .. } => (Kind::Directory, 0, 0o555, 2),
            Body::Symlink { target } => (Kind::Symlink, target.len() as u64, 0o777, 1),
        };
        // Content is read-only whatever its recorded mode says: keep only read and execute bits.
        let perm = meta
            .mode
            .map(|m| (m & 0o7555) as u16)
            .unwrap_or(default_perm);
        Attr {
            ino,
            kind,
            size,
            perm,
            mtime,
            atime: mtime,
            ctime: mtime,
            nlink,
        }
    }

    pub fn forget(&self, ino: InodeNo, nlookup: u64) {
        if ino < FIRST_DYNAMIC_INO {
            return;
        }
        let mut inodes = self.inodes.write();
        let remove = match inodes.get(&ino) {
            Some(inode) => {
                let prev = inode.lookups.fetch_sub(
                    nlookup.min(inode.lookups.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
                prev <= nlookup
            }
            None => false,
        };
        if remove {
            if let Some(inode) = inodes.remove(&ino) {
                let mut children = self.children.write();
                let key = (inode.parent, inode.name.clone());
                if children.get(&key) == Some(&ino) {
                    children.remove(&key);
                }
            }
        }
    }

    pub fn getattr(&self, ino: InodeNo) -> Result<Entry> {
        let inode = self.inode(ino)?;
        if let NodeKind::Dataset(ds, node) = &inode.node {
            return Ok(Entry {
                attr: self.dataset_attr(ino, ds, *node)?,
                ttl: DATASET_TTL,
            });
        }
        Ok(Entry {
            attr: inode.attr.clone(),
            ttl: Self::ttl_for(&inode.node),
        })
    }

    /// Fetches and decodes a CID's root block into what the filesystem needs to show it.
    async fn resolve(&self, cid: &Cid) -> Result<(Arc<Content>, Meta)> {
        let block = self.blocks.get(cid).await?;
        self.resolve_block(cid, &block)
    }

    /// [`Tree::resolve`] for a block already at hand.
    fn resolve_block(&self, cid: &Cid, block: &Bytes) -> Result<(Arc<Content>, Meta)> {
        let node = unixfs::decode_node_shared(cid, block).map_err(|e| {
            tracing::warn!(%cid, "cannot decode block: {e}");
            Error::corrupt(cid, e)
        })?;
        let (body, meta) = match node {
            Node::File(f) => {
                let meta = Meta {
                    mode: f.mode,
                    mtime: f.mtime,
                };
                let size = f.size;
                if !f.children.is_empty() {
                    self.file_nodes.insert(*cid, Arc::new(f));
                }
                (Body::File { size }, meta)
            }
            Node::Document(d) => (Body::Document { json: d.json }, Meta::default()),
            Node::Directory(d) => {
                let meta = Meta {
                    mode: d.mode,
                    mtime: d.mtime,
                };
                (
                    Body::Directory {
                        listing: Arc::new(Listing::from_directory(cid, d)),
                    },
                    meta,
                )
            }
            Node::HamtShard(h) => {
                let meta = Meta {
                    mode: h.mode,
                    mtime: h.mtime,
                };
                (
                    Body::Sharded {
                        root: Arc::new(h),
                        listing: tokio::sync::OnceCell::new(),
                    },
                    meta,
                )
            }
            Node::Symlink(s) => {
                let meta = Meta {
                    mode: s.mode,
                    mtime: s.mtime,
                };
                (Body::Symlink { target: s.target }, meta)
            }
        };
        Ok((Arc::new(Content { cid: *cid, body }), meta))
    }

    /// The CID of a directory entry and its link's Tsize.
    async fn find_child(&self, content: &Content, name: &[u8]) -> Result<(Cid, Option<u64>)> {
        let not_found =
            || Error::NotFound(format!("{}/{}", content.cid, String::from_utf8_lossy(name)));
        if !unixfs::is_safe_name(name) {
            return Err(not_found());
        }
        match &content.body {
            Body::Directory { listing } => listing
                .find(name)
                .map(|e| (e.cid, e.tsize))
                .ok_or_else(not_found),
            Body::Sharded { root, listing } => {
                if let Some(listing) = listing.get() {
                    return listing
                        .find(name)
                        .map(|e| (e.cid, e.tsize))
                        .ok_or_else(not_found);
                }
                dir::hamt_find(&self.blocks, &content.cid, root, name)
                    .await?
                    .ok_or_else(not_found)
            }
            _ => Err(Error::NotADirectory),
        }
    }

    // ---- readdir ---------------------------------------------------------------------------

    /// Entries after `offset` (0 = from the start), at most `max` of them.
    pub async fn readdir(&self, ino: InodeNo, offset: u64, max: usize) -> Result<Vec<DirEntryOut>> {
        let inode = self.inode(ino)?;
        let mut out = Vec::new();
        let mut index = offset;
        let push_dot = |out: &mut Vec<DirEntryOut>, index: &mut u64, name: &str, ino: InodeNo| {
            *index += 1;
            out.push(DirEntryOut {
                ino,
                next_offset: *index,
                kind: Kind::Directory,
                name: name.into(),
            });
        };
        if index == 0 {
            push_dot(&mut out, &mut index, ".", ino);
        }
        if index == 1 {
            push_dot(&mut out, &mut index, "..", inode.parent);
        }
        let skip = (index - 2) as usize;
        let room = max.saturating_sub(out.len());
        match &inode.node {
            NodeKind::Root => {
                for (i, (name, child)) in [
                    ("ipfs", IPFS_INO),
                    ("ipns", IPNS_INO),
                    ("datasets", DATASETS_INO),
                ]
                .iter()
                .enumerate()
                .skip(skip)
                {
                    out.push(DirEntryOut {
                        ino: *child,
                        next_offset: 2 + i as u64 + 1,
                        kind: Kind::Directory,
                        name: (*name).into(),
                    });
                }
            }
            NodeKind::IpfsRoot => {
                // Pinned roots are the natural thing to show here; any other CID still works by name.
                let pins = self.blocks.pins().unwrap_or_default();
                let mut names: Vec<String> = pins.iter().map(|p| p.root.to_string()).collect();
                names.sort();
                names.dedup();
                for (i, name) in names.into_iter().enumerate().skip(skip).take(room) {
                    let cid = cids::parse(&name).ok();
                    let kind = match cid {
                        Some(c) => self.kind_hint(&c).await,
                        None => Kind::File,
                    };
                    out.push(DirEntryOut {
                        ino: stable_ino(IPFS_INO, name.as_bytes()),
                        next_offset: 2 + i as u64 + 1,
                        kind,
                        name: name.into(),
                    });
                }
            }
            NodeKind::IpnsRoot => {
                // Our own names (one per dataset); any other name is found by lookup.
                let mut names = self.names.get().map(|n| n.own_names()).unwrap_or_default();
                names.sort();
                for (i, name) in names.into_iter().enumerate().skip(skip).take(room) {
                    out.push(DirEntryOut {
                        ino: stable_ino(IPNS_INO, name.as_bytes()),
                        next_offset: 2 + i as u64 + 1,
                        kind: Kind::Directory,
                        name: name.into(),
                    });
                }
            }
            NodeKind::DatasetsRoot => {
                let mut names = self
                    .datasets
                    .as_ref()
                    .map(|d| d.names())
                    .unwrap_or_default();
                names.extend(self.replica_names());
                names.sort();
                for (i, name) in names.into_iter().enumerate().skip(skip).take(room) {
                    let ino = self.dataset_ino_of(&name, ROOT_NODE);
                    out.push(DirEntryOut {
                        ino,
                        next_offset: 2 + i as u64 + 1,
                        kind: Kind::Directory,
                        name: name.into(),
                    });
                }
            }
            NodeKind::Dataset(ds, node) => {
                for (i, (name, child, kind)) in ds
                    .children(*node)?
                    .into_iter()
                    .enumerate()
                    .skip(skip)
                    .take(room)
                {
                    out.push(DirEntryOut {
                        ino: self.dataset_ino_of(&ds.name, child),
                        next_offset: 2 + i as u64 + 1,
                        kind: dataset_kind(kind),
                        name: OsString::from_vec(name),
                    });
                }
            }
            NodeKind::Content(content) => {
                let listing = match &content.body {
                    Body::Directory { listing } => listing.clone(),
                    Body::Sharded { root, listing } => listing
                        .get_or_try_init(|| async {
                            dir::hamt_listing(&self.blocks, &content.cid, root)
                                .await
                                .map(Arc::new)
                        })
                        .await?
                        .clone(),
                    _ => return Err(Error::NotADirectory),
                };
                let slice: Vec<_> = listing
                    .entries()
                    .iter()
                    .enumerate()
                    .skip(skip)
                    .take(room)
                    .collect();
                let kinds = self
                    .kind_hints(slice.iter().map(|(_, e)| e.cid).collect())
                    .await;
                for ((i, e), kind) in slice.into_iter().zip(kinds) {
                    out.push(DirEntryOut {
                        ino: self.known_or_stable_ino(ino, &e.name),
                        next_offset: 2 + i as u64 + 1,
                        kind,
                        name: OsString::from_vec(e.name.clone()),
                    });
                }
            }
        }
        Ok(out)
    }

    /// [`Tree::readdir`] with each entry's attributes, for `READDIRPLUS`: the kernel then needs
    /// no `LOOKUP` per entry (`ls -l`, `find -size`). Each entry other than `.` and `..` holds
    /// one lookup reference, as if looked up: the kernel counts it and later forgets it. The
    /// caller must [`forget`](Self::forget) the entries it does not pass on. An entry whose
    /// attributes cannot be had (its block is unavailable) comes without them: the kernel then
    /// looks it up itself and gets the error.
    pub async fn readdirplus(
        &self,
        ino: InodeNo,
        offset: u64,
        max: usize,
    ) -> Result<Vec<(DirEntryOut, Option<Entry>)>> {
        use futures::stream::{self, StreamExt};
        let listed = self.readdir(ino, offset, max).await?;
        // Entries not known yet are looked up in parallel (a cold listing fetches each
        // child's root block), in order.
        let lookups: Vec<_> = listed
            .iter()
            .map(|e| self.plus_entry(ino, e.ino, e.name.clone()))
            .collect();
        let entries: Vec<Option<Entry>> = stream::iter(lookups)
            .buffered(LOOKUPS_AT_ONCE)
            .collect()
            .await;
        Ok(listed.into_iter().zip(entries).collect())
    }

    /// The attributes of one `READDIRPLUS` entry (looked up, so counted), if they can be had.
    async fn plus_entry(&self, dir: InodeNo, ino: InodeNo, name: OsString) -> Option<Entry> {
        if name == "." || name == ".." {
            // Not linked by the kernel, so not counted: attributes for show only.
            return self.getattr(ino).ok();
        }
        let entry = match self.lookup_cached(dir, &name) {
            Some(r) => r,
            None => self.lookup(dir, &name).await,
        };
        entry
            .map_err(|err| {
                tracing::debug!(dir, name = %name.to_string_lossy(), "no attributes for directory entry: {err}");
            })
            .ok()
    }

    fn known_or_stable_ino(&self, parent: InodeNo, name: &[u8]) -> InodeNo {
        self.children
            .read()
            .get(&(parent, name.to_vec()))
            .copied()
            .unwrap_or_else(|| stable_ino(parent, name))
    }

    /// The file type of a child for readdir's `d_type`. fuser cannot say "unknown", and a wrong
    /// type misleads `find` and other tree walkers, so a dag-pb child's root block is looked at;
    /// `kind_hints` fetches those in parallel, never one after another.
    async fn kind_hint(&self, cid: &Cid) -> Kind {
        match cid.codec() {
            codec::DAG_PB => {}
            _ => return Kind::File,
        }
        match self.blocks.get(cid).await {
            Ok(block) => match unixfs::decode_node_shared(cid, &block) {
                Ok(Node::Directory(_) | Node::HamtShard(_)) => Kind::Directory,
                Ok(Node::Symlink(_)) => Kind::Symlink,
                _ => Kind::File,
            },
            Err(e) => {
                tracing::debug!(%cid, "type of directory entry unknown: {e}");
                Kind::File
            }
        }
    }

    async fn kind_hints(&self, cids: Vec<Cid>) -> Vec<Kind> {
        use futures::stream::{self, StreamExt};
        let futures: Vec<_> = cids.into_iter().map(|c| self.kind_hint_owned(c)).collect();
        stream::iter(futures).buffered(32).collect().await
    }

    async fn kind_hint_owned(&self, cid: Cid) -> Kind {
        self.kind_hint(&cid).await
    }

    // ---- files -------------------------------------------------------------------------------

    pub fn open(&self, ino: InodeNo, write: bool) -> Result<u64> {
        self.open_with(ino, write, false)
    }

    /// Opens a file; in a dataset, `write` stages it for writing and `truncate` empties it.
    pub fn open_with(&self, ino: InodeNo, write: bool, truncate: bool) -> Result<u64> {
        let inode = self.inode(ino)?;
        if let NodeKind::Dataset(ds, node) = &inode.node {
            if write || truncate {
                ds.open_write(*node, truncate)?;
                return Ok(self.new_handle(ino, Some((ds.clone(), *node))));
            }
            ds.open_read(*node)?;
            return Ok(self.new_handle_reading(ino, None, Some((ds.clone(), *node))));
        }
        match &inode.node {
            NodeKind::Content(c) => match c.body {
                Body::File { .. } | Body::Document { .. } => {}
                Body::Directory { .. } | Body::Sharded { .. } => return Err(Error::IsADirectory),
                Body::Symlink { .. } => return Err(Error::NotSupported("open of a symlink")),
            },
            _ => return Err(Error::IsADirectory),
        }
        if write {
            return Err(Error::ReadOnly("content under /ipfs is immutable"));
        }
        Ok(self.new_handle(ino, None))
    }

    fn new_handle(&self, ino: InodeNo, writer: Option<(Arc<Dataset>, NodeId)>) -> u64 {
        self.new_handle_reading(ino, writer, None)
    }

    fn new_handle_reading(
        &self,
        ino: InodeNo,
        writer: Option<(Arc<Dataset>, NodeId)>,
        reader: Option<(Arc<Dataset>, NodeId)>,
    ) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.handles.write().insert(
            fh,
            Arc::new(Handle {
                ino,
                writer,
                reader,
                wrote: std::sync::atomic::AtomicBool::new(false),
                read_ahead: HandleReadAhead::new(self.config.max_prefetch),
            }),
        );
        fh
    }

    /// The last close of a handle. A dataset writer's last close seals and commits; the error,
    /// if any, was already reported by `flush`.
    pub fn release(&self, fh: u64) -> Result<()> {
        let handle = self.handles.write().remove(&fh);
        if let Some(h) = handle {
            if let Some((ds, node)) = &h.reader {
                ds.release_read(*node);
            }
            if let Some((ds, node)) = &h.writer {
                ds.release_write(*node)?;
            }
        }
        Ok(())
    }

    /// Serves a read from local blocks only, without waiting: `None` means some block has to
    /// be fetched and [`Tree::read_fetching`] must finish the job. Doing the common, cached case
    /// right on the FUSE thread saves a hand-off to another thread per read.
    pub fn read_cached(
        self: &Arc<Self>,
        ino: InodeNo,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Option<Result<Bytes>> {
        let inode = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return Some(Err(e)),
        };
        let content = match &inode.node {
            NodeKind::Content(c) => c.clone(),
            NodeKind::Dataset(ds, node) => return Some(self.read_dataset(ds, *node, offset, size)),
            _ => return Some(Err(Error::IsADirectory)),
        };
        match &content.body {
            Body::Document { json } => {
                let start = (offset as usize).min(json.len());
                let end = (start + size as usize).min(json.len());
                Some(Ok(json.slice(start..end)))
            }
            Body::File { size: file_size } => {
                let file_size = *file_size;
                if offset >= file_size || size == 0 {
                    return Some(Ok(Bytes::new()));
                }
                let end = (offset + size as u64).min(file_size);
                let handle = self.handles.read().get(&fh).cloned();
                if let Some(handle) = &handle {
                    debug_assert_eq!(handle.ino, ino);
                    let account = self.accounts.of(&content.cid);
                    account.charge_read(end - offset);
                    let stats = &self.blocks.stats.file_read_bytes;
                    stats.fetch_add(end - offset, Ordering::Relaxed);
                    handle.read_ahead.after_read(
                        self,
                        content.cid,
                        file_size,
                        offset,
                        end,
                        &account,
                    );
                }
                self.read_range_local(&content.cid, file_size, offset, end)
            }
            _ => Some(Err(Error::IsADirectory)),
        }
    }

    /// The slow path of a read: fetches what is missing. Call after `read_cached` gave `None`.
    /// If the file's rest is being streamed past this offset, waits for the stream first (as
    /// long as it makes progress) instead of asking for the same blocks again.
    pub async fn read_fetching(
        &self,
        ino: InodeNo,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Bytes> {
        let inode = self.inode(ino)?;
        let NodeKind::Content(content) = &inode.node else {
            return Err(Error::IsADirectory);
        };
        let Body::File { size: file_size } = &content.body else {
            return Err(Error::IsADirectory);
        };
        let end = (offset + size as u64).min(*file_size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let handle = self.handles.read().get(&fh).cloned();
        if let Some(h) = handle {
            while let Some(done) = h.read_ahead.stream_over(offset) {
                let progress = h.read_ahead.progress().notified();
                tokio::pin!(progress);
                progress.as_mut().enable();
                if let Some(r) = self.read_range_local(&content.cid, *file_size, offset, end) {
                    return r;
                }
                if done.load(Ordering::Acquire) {
                    continue;
                }
                if tokio::time::timeout(STREAM_STALL, progress).await.is_err() {
                    tracing::debug!(cid = %content.cid, offset, "stream stalled; fetching the range directly");
                    break;
                }
            }
        }
        let account = self.accounts.of(&content.cid);
        self.read_range(&content.cid, *file_size, offset, end, &account)
            .await
    }

    /// A whole read: the cached path, then fetching if needed.
    pub async fn read(
        self: &Arc<Self>,
        ino: InodeNo,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Bytes> {
        match self.read_cached(ino, fh, offset, size) {
            Some(r) => r,
            None => self.read_fetching(ino, fh, offset, size).await,
        }
    }

    pub fn readlink(&self, ino: InodeNo) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        match &inode.node {
            NodeKind::Content(c) => match &c.body {
                Body::Symlink { target } => Ok(target.clone()),
                _ => Err(Error::NotASymlink),
            },
            NodeKind::Dataset(ds, node) => ds.readlink(*node).map_err(|_| Error::NotASymlink),
            _ => Err(Error::NotASymlink),
        }
    }

    // ---- xattrs ------------------------------------------------------------------------------

    pub fn getxattr(&self, ino: InodeNo, name: &OsStr) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        match (&inode.node, name.as_bytes()) {
            (NodeKind::Content(c), n) if n == XATTR_CID.as_bytes() => {
                Ok(c.cid.to_string().into_bytes())
            }
            (NodeKind::Content(c), n)
                if matches!(c.body, Body::File { .. })
                    && (n == XATTR_READ.as_bytes() || n == XATTR_FETCHED.as_bytes()) =>
            {
                let account = self.accounts.get(&c.cid);
                let count = match account {
                    Some(a) if n == XATTR_READ.as_bytes() => a.read(),
                    Some(a) => a.fetched(),
                    None => 0,
                };
                Ok(count.to_string().into_bytes())
            }
            // A directory's CID is that of what its reader sees: pending changes commit first.
            (NodeKind::Dataset(ds, node), n) if n == XATTR_CID.as_bytes() => ds
                .cid_of(*node)?
                .map(|c| c.to_string().into_bytes())
                .ok_or(Error::NoAttribute),
            (NodeKind::Dataset(ds, ROOT_NODE), n) if n == XATTR_COMMIT.as_bytes() => {
                ds.cid_of(ROOT_NODE)?;
                ds.head()
                    .map(|c| c.to_string().into_bytes())
                    .ok_or(Error::NoAttribute)
            }
            (NodeKind::Dataset(ds, ROOT_NODE), n) if n == XATTR_NAME.as_bytes() => self
                .names
                .get()
                .and_then(|names| names.dataset_name(&ds.name))
                .map(String::into_bytes)
                .ok_or(Error::NoAttribute),
            _ => Err(Error::NoAttribute),
        }
    }

    pub fn listxattr(&self, ino: InodeNo) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        Ok(match inode.node {
            NodeKind::Content(ref c) if matches!(c.body, Body::File { .. }) => {
                format!("{XATTR_CID}\0{XATTR_READ}\0{XATTR_FETCHED}\0").into_bytes()
            }
            NodeKind::Content(_) => format!("{XATTR_CID}\0").into_bytes(),
            NodeKind::Dataset(_, ROOT_NODE) if self.names.get().is_some() => {
                format!("{XATTR_CID}\0{XATTR_COMMIT}\0{XATTR_NAME}\0").into_bytes()
            }
            NodeKind::Dataset(_, ROOT_NODE) => {
                format!("{XATTR_CID}\0{XATTR_COMMIT}\0").into_bytes()
            }
            NodeKind::Dataset(..) => format!("{XATTR_CID}\0").into_bytes(),
            _ => Vec::new(),
        })
    }

    /// Refuses a change below `ino` with the errno that says why.
    pub fn refuse_write(&self, ino: InodeNo) -> Error {
        match self.inodes.read().get(&ino).map(|i| i.node.clone()) {
            Some(NodeKind::DatasetsRoot | NodeKind::Dataset(..)) => {
                Error::NotSupported("not supported in datasets")
            }
            Some(NodeKind::Root) => Error::NotPermitted("the top level is fixed"),
            _ => Error::ReadOnly("content under /ipfs and /ipns is immutable"),
        }
    }

    pub fn mount_time(&self) -> SystemTime {
        self.mount_time
    }

    pub fn owner(&self) -> (u32, u32) {
        (self.config.uid, self.config.gid)
    }
}

/// Mode and mtime recorded in UnixFS metadata, when present.
#[derive(Debug, Default, Clone)]
struct Meta {
    mode: Option<u32>,
    mtime: Option<unixfs::UnixTime>,
}

/// True for the inode numbers of dataset nodes (mutable content).
pub fn is_dataset_ino(ino: InodeNo) -> bool {
    ino >= FIRST_DATASET_INO
}

/// FNV-1a over (parent, name), kept away from the fixed inode numbers.
fn stable_ino(parent: InodeNo, name: &[u8]) -> InodeNo {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parent.to_le_bytes().iter().chain(name) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Finalize (splitmix64) so that similar names spread out.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    // Below the dataset range, so content and dataset inodes can never collide.
    h &= FIRST_DATASET_INO - 1;
    if h < FIRST_DYNAMIC_INO {
        h + FIRST_DYNAMIC_INO
    } else {
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_node_cache_is_bounded_by_bytes() {
        use ipfs_mount_ipld::unixfs::FileNode;
        let cid = |i: u64| {
            ipfs_mount_ipld::cids::compute(
                cid::Version::V1,
                ipfs_mount_ipld::codec::RAW,
                ipfs_mount_ipld::mh::SHA2_256,
                &i.to_le_bytes(),
            )
            .unwrap()
        };
        let node = |links: usize, inline: usize| {
            Arc::new(FileNode {
                inline: bytes::Bytes::from(vec![1u8; inline]),
                children: (0..links as u64).map(|i| (cid(i), 1)).collect(),
                size: links as u64 + inline as u64,
                mode: None,
                mtime: None,
            })
        };
        let cap = 1 << 20;
        let cache = file_node_cache(cap);
        let w = |n: &Arc<FileNode>| quick_cache::Weighter::weight(&FileNodeWeighter, &cid(0), n);
        // 174 links: ~17 KiB each; 1000 of them would be ~17 MiB
        let big = node(174, 0);
        assert!(w(&big) > 174 * 96, "{}", w(&big));
        for i in 0..1000 {
            cache.insert(cid(i), big.clone());
        }
        assert!(cache.weight() <= cap, "{} > {cap}", cache.weight());
        assert!(
            cache.len() <= (cap / w(&big)) as usize + 1,
            "{}",
            cache.len()
        );
        // inline bytes count too: 64 nodes of 256 KiB of inline data
        let fat = node(1, 256 << 10);
        for i in 1000..1064 {
            cache.insert(cid(i), fat.clone());
        }
        assert!(cache.weight() <= cap, "{} > {cap}", cache.weight());
        let fat_held = (1000..1064)
            .filter(|i| cache.peek(&cid(*i)).is_some())
            .count();
        assert!(fat_held <= 4, "{fat_held}");
        // small nodes: many fit in the same bytes
        let small = node(2, 0);
        let cache = file_node_cache(cap);
        for i in 2000..3000 {
            cache.insert(cid(i), small.clone());
        }
        assert!(cache.weight() <= cap);
        assert!(cache.len() > 500, "{}", cache.len());
    }

    #[test]
    fn stable_ino_is_deterministic_and_avoids_fixed_numbers() {
        assert_eq!(stable_ino(2, b"abc"), stable_ino(2, b"abc"));
        assert_ne!(stable_ino(2, b"abc"), stable_ino(3, b"abc"));
        assert_ne!(stable_ino(2, b"abc"), stable_ino(2, b"abd"));
        for i in 0..10_000u64 {
            let ino = stable_ino(i, &i.to_le_bytes());
            assert!(ino >= FIRST_DYNAMIC_INO);
            assert!(
                !is_dataset_ino(ino),
                "content inode {ino:#x} in the dataset range"
            );
        }
    }
}
