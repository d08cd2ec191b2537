//! The closed tree of a dataset: the state that the next version will hold.
//!
//! It is changed only by journal [`Op`]s, in journal order, both while the mount runs and when
//! a journal is replayed after a crash; so what a version holds is, by construction, what the
//! journal says was acknowledged: files as they were last closed or fsynced (never a file that
//! was only created, never a half-written one), renames with their source's closed content.
//!
//! Each directory keeps the CID it was last built with; an op clears it on the directories
//! along its path only, and a build re-encodes just those, each one incrementally (see
//! [`ipfs_mount_ipld::dirtree`]): a commit costs the changed paths, not the dataset.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cid::Cid;
use ipfs_mount_ipld::builder::ImportProfile;
use ipfs_mount_ipld::dirtree::{DirBuilder, DirError};

use super::attrs::{self, Value};
use super::commit::Meta;
use super::journal::{DsPath, LeafKind, Op};

/// Default modes of entries nothing was said about (an old journal record, an old version).
pub const FILE_MODE: u32 = 0o644;
pub const DIR_MODE: u32 = 0o755;
pub const SYMLINK_MODE: u32 = 0o777;

/// A mode and `time` as a [`Meta`].
pub fn meta_at(mode: u32, time: SystemTime) -> Meta {
    let (mtime, nsec) = match time.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            if d.subsec_nanos() == 0 {
                (-(d.as_secs() as i64), 0)
            } else {
                (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
            }
        }
    };
    Meta { mode, mtime, nsec }
}

/// The time a [`Meta`] says.
pub fn meta_time(m: &Meta) -> SystemTime {
    let nsec = std::time::Duration::from_nanos(u64::from(m.nsec.min(999_999_999)));
    if m.mtime >= 0 {
        UNIX_EPOCH + std::time::Duration::from_secs(m.mtime as u64) + nsec
    } else {
        UNIX_EPOCH - std::time::Duration::from_secs(m.mtime.unsigned_abs()) + nsec
    }
}

/// A file or symlink as its last closed state.
#[derive(Debug, Clone)]
pub struct ClosedLeaf {
    pub kind: LeafKind,
    pub cid: Cid,
    pub size: u64,
    pub tsize: u64,
    pub target: Vec<u8>,
    /// The temporary pin that protects its blocks until a version pins them.
    pub temp: Option<u64>,
    pub meta: Meta,
}

pub enum Entry {
    /// Boxed: a directory's builder state is large, and a BTreeMap moves its values around on
    /// every insert into a directory of thousands of leaves.
    Dir(Box<ClosedDir>),
    Leaf(ClosedLeaf),
}

pub struct ClosedDir {
    pub entries: BTreeMap<Vec<u8>, Entry>,
    pub meta: Meta,
    /// The CID of its attributes node (`attrs.rs`) as last built; `None` when a meta below
    /// changed since.
    attrs_built: Option<Cid>,
    /// A split directory's buckets as last built (`None` until built split).
    attrs_buckets: Option<Vec<Option<Cid>>>,
    /// Names whose meta (or whose subdirectory's attributes) changed since the last build.
    attrs_changed: BTreeSet<Vec<u8>>,
    /// Built (or loaded from a version's attributes) at least once: from then on only the
    /// changed names are looked at.
    attrs_known: bool,
    /// CID and Tsize as last built; `None` when something below changed since.
    built: Option<(Cid, u64)>,
    /// The incremental builder; created on the directory's first change after a load.
    /// Boxed: it is large, and most directories never need one, while every `Entry`
    /// (leaves included) is as big as its largest variant.
    builder: Option<Box<DirBuilder>>,
    /// Names changed since the last build.
    changed: BTreeSet<Vec<u8>>,
}

impl Default for ClosedDir {
    fn default() -> Self {
        ClosedDir {
            entries: BTreeMap::new(),
            meta: meta_at(DIR_MODE, SystemTime::now()),
            attrs_built: None,
            attrs_buckets: None,
            attrs_changed: BTreeSet::new(),
            attrs_known: false,
            built: None,
            builder: None,
            changed: BTreeSet::new(),
        }
    }
}

impl ClosedDir {
    pub fn loaded(built: (Cid, u64)) -> Self {
        ClosedDir {
            built: Some(built),
            ..Default::default()
        }
    }

    /// `name` changed: both its UnixFS link and its attributes are rebuilt.
    fn mark(&mut self, name: &[u8]) {
        self.changed.insert(name.to_vec());
        self.attrs_changed.insert(name.to_vec());
        self.attrs_built = None;
    }

    pub fn built(&self) -> Option<(Cid, u64)> {
        self.built
    }
}

/// What one build produced.
pub struct Built {
    pub root: Cid,
    /// The root's attributes node.
    pub attrs: Cid,
    pub blocks: Vec<(Cid, Bytes)>,
    /// Temporary pins of the files this version takes in: the version's pin absorbs them.
    pub temps: Vec<u64>,
}

#[derive(Default)]
pub struct ClosedTree {
    pub root: ClosedDir,
    /// Temporary pins of contents replaced or removed before any version took them in:
    /// released once the next version is durable.
    pub dropped_temps: Vec<u64>,
    /// Whether any op arrived since the last build.
    pub dirty: bool,
}

pub fn meta_key(path: &DsPath) -> String {
    path.iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn collect_temps(e: &Entry, out: &mut Vec<u64>) {
    match e {
        Entry::Leaf(l) => out.extend(l.temp),
        Entry::Dir(d) => {
            // An explicit stack: trees may be deep.
            let mut stack = vec![d];
            while let Some(d) = stack.pop() {
                for e in d.entries.values() {
                    match e {
                        Entry::Leaf(l) => out.extend(l.temp),
                        Entry::Dir(sub) => stack.push(sub),
                    }
                }
            }
        }
    }
}

impl ClosedTree {
    pub fn new(root: ClosedDir) -> Self {
        ClosedTree {
            root,
            ..Default::default()
        }
    }

    /// The directory at `path`, clearing `built` on it and every directory above it; missing
    /// directories are made (a journal never names a file below a directory it did not make,
    /// but a replay stays lenient).
    fn dir_mut(&mut self, path: &[Vec<u8>]) -> Option<&mut ClosedDir> {
        let mut dir = &mut self.root;
        dir.built = None;
        dir.attrs_built = None;
        for name in path {
            dir.mark(name);
            let e = dir
                .entries
                .entry(name.clone())
                .or_insert_with(|| Entry::Dir(Box::default()));
            match e {
                Entry::Dir(d) => {
                    dir = d;
                    dir.built = None;
                    dir.attrs_built = None;
                }
                Entry::Leaf(_) => return None,
            }
        }
        Some(dir)
    }

    /// The meta of the entry at `path` (the root: empty), for a change of it alone: only the
    /// attributes on its path are rebuilt, never the UnixFS directories.
    fn meta_mut(&mut self, path: &[Vec<u8>]) -> Option<&mut Meta> {
        self.root.attrs_built = None;
        let Some((last, parents)) = path.split_last() else {
            return Some(&mut self.root.meta);
        };
        let mut dir = &mut self.root;
        for name in parents {
            dir.attrs_changed.insert(name.clone());
            match dir.entries.get_mut(name)? {
                Entry::Dir(d) => {
                    dir = d;
                    dir.attrs_built = None;
                }
                Entry::Leaf(_) => return None,
            }
        }
        dir.attrs_changed.insert(last.clone());
        match dir.entries.get_mut(last)? {
            Entry::Dir(d) => {
                d.attrs_built = None;
                Some(&mut d.meta)
            }
            Entry::Leaf(l) => Some(&mut l.meta),
        }
    }

    /// Applies the metas a record carries for entries it touched (the entry, its parents).
    fn stamp(&mut self, stamps: &[(DsPath, Meta)]) {
        for (path, meta) in stamps {
            if let Some(m) = self.meta_mut(path) {
                *m = *meta;
            }
        }
    }

    fn take(&mut self, path: &DsPath) -> Option<Entry> {
        let (name, parent) = path.split_last()?;
        // Only touch the path when there is something to take.
        self.get(path)?;
        let dir = self.dir_mut(parent)?;
        dir.mark(name);
        dir.entries.remove(name)
    }

    pub fn get(&self, path: &[Vec<u8>]) -> Option<&Entry> {
        let mut dir = &self.root;
        let (last, parents) = path.split_last()?;
        for name in parents {
            match dir.entries.get(name)? {
                Entry::Dir(d) => dir = d,
                Entry::Leaf(_) => return None,
            }
        }
        dir.entries.get(last)
    }

    /// Applies one journal op. Ops are lenient: a replay may meet states the live tree never
    /// showed (a rename whose source was never closed only removes the target).
    pub fn apply(&mut self, op: &Op) {
        self.dirty = true;
        match op {
            Op::Stamped { op, stamps } => {
                self.apply(op);
                self.stamp(stamps);
            }
            Op::Put {
                path,
                kind,
                cid,
                size,
                tsize,
                temp,
                target,
                ..
            } => {
                let Some((name, parent)) = path.split_last() else {
                    return;
                };
                let mut dropped = Vec::new();
                // A record without a meta (an older journal) keeps the entry's, or a default.
                let meta = match self.get(path) {
                    Some(Entry::Leaf(l)) => l.meta,
                    _ => meta_at(
                        if *kind == LeafKind::Symlink {
                            SYMLINK_MODE
                        } else {
                            FILE_MODE
                        },
                        SystemTime::now(),
                    ),
                };
                if let Some(old) = self.get(path) {
                    collect_temps(old, &mut dropped);
                }
                let Some(dir) = self.dir_mut(parent) else {
                    tracing::warn!(path = %meta_key(path), "journal: a file below a file; skipped");
                    dropped.extend(*temp);
                    self.dropped_temps.extend(dropped);
                    return;
                };
                dir.mark(name);
                dir.entries.insert(
                    name.clone(),
                    Entry::Leaf(ClosedLeaf {
                        kind: *kind,
                        cid: *cid,
                        size: *size,
                        tsize: *tsize,
                        target: target.clone(),
                        temp: *temp,
                        meta,
                    }),
                );
                self.dropped_temps.extend(dropped);
            }
            Op::Mkdir { path } => {
                if let Some(Entry::Dir(_)) = self.get(path) {
                    return;
                }
                let mut dropped = Vec::new();
                if let Some(old) = self.take(path) {
                    collect_temps(&old, &mut dropped);
                }
                self.dropped_temps.extend(dropped);
                let _ = self.dir_mut(path);
            }
            Op::Remove { path } => {
                if let Some(old) = self.take(path) {
                    collect_temps(&old, &mut self.dropped_temps);
                }
            }
            Op::Rename { from, to } => {
                if from == to {
                    return;
                }
                let moving = self.take(from);
                if let Some(old) = self.take(to) {
                    collect_temps(&old, &mut self.dropped_temps);
                }
                let Some(entry) = moving else { return };
                let Some((name, parent)) = to.split_last() else {
                    return;
                };
                match self.dir_mut(parent) {
                    Some(dir) => {
                        dir.mark(name);
                        dir.entries.insert(name.clone(), entry);
                    }
                    None => collect_temps(&entry, &mut self.dropped_temps),
                }
            }
            Op::Exchange { a, b } => {
                if a == b || a.starts_with(b) || b.starts_with(a) {
                    return;
                }
                let ea = self.take(a);
                let eb = self.take(b);
                for (entry, path) in [(ea, b), (eb, a)] {
                    let Some(entry) = entry else { continue };
                    let Some((name, parent)) = path.split_last() else {
                        continue;
                    };
                    match self.dir_mut(parent) {
                        Some(dir) => {
                            dir.mark(name);
                            dir.entries.insert(name.clone(), entry);
                        }
                        None => collect_temps(&entry, &mut self.dropped_temps),
                    }
                }
            }
            Op::Meta {
                path,
                mode,
                mtime,
                nsec,
            } => {
                // The empty path is the dataset's root directory.
                if path.is_empty() || self.get(path).is_some() {
                    if let Some(m) = self.meta_mut(path) {
                        *m = Meta {
                            mode: *mode,
                            mtime: *mtime,
                            nsec: *nsec,
                        };
                    }
                }
            }
        }
    }

    /// Applies the metas of an older version's commit record (explicit chmod and utimens
    /// only, by path `a/b/c`) to a tree loaded from it.
    pub fn apply_legacy_meta(&mut self, meta: &BTreeMap<String, Meta>) {
        for (key, m) in meta {
            let path: DsPath = key.split('/').map(|c| c.as_bytes().to_vec()).collect();
            if let Some(slot) = self.meta_mut(&path) {
                *slot = *m;
            }
        }
    }

    /// Sets every meta an attributes tree holds on a tree loaded from the same version, and
    /// keeps its nodes as built: the next commit re-encodes only changed paths.
    pub fn apply_attrs(&mut self, read: attrs::ReadAttrs) {
        for (path, m) in read.metas {
            if path.is_empty() || self.get(&path).is_some() {
                if let Some(slot) = self.meta_mut(&path) {
                    *slot = m;
                }
            }
        }
        for (path, cid, buckets) in read.dirs {
            let dir = if path.is_empty() {
                Some(&mut self.root)
            } else {
                match self.get_mut(&path) {
                    Some(Entry::Dir(d)) => Some(&mut **d),
                    _ => None,
                }
            };
            if let Some(d) = dir {
                d.attrs_built = Some(cid);
                d.attrs_buckets = buckets;
                d.attrs_changed.clear();
                d.attrs_known = true;
            }
        }
    }

    fn get_mut(&mut self, path: &[Vec<u8>]) -> Option<&mut Entry> {
        let mut dir = &mut self.root;
        let (last, parents) = path.split_last()?;
        for name in parents {
            match dir.entries.get_mut(name)? {
                Entry::Dir(d) => dir = d,
                Entry::Leaf(_) => return None,
            }
        }
        dir.entries.get_mut(last)
    }

    /// Builds every directory changed since the last build; returns the root and the new blocks.
    pub fn build(&mut self, profile: &ImportProfile) -> Result<Built, DirError> {
        let mut out = Built {
            root: Cid::default(),
            attrs: Cid::default(),
            blocks: Vec::new(),
            temps: Vec::new(),
        };
        let (root, _) = build_dir(&mut self.root, profile, &mut out)?;
        out.root = root;
        out.attrs = build_attrs(&mut self.root, &mut out.blocks);
        self.dirty = false;
        Ok(out)
    }
}

fn entry_value(e: &Entry) -> Value {
    match e {
        Entry::Leaf(l) => Value::Leaf(l.meta),
        Entry::Dir(d) => Value::Dir(d.attrs_built.expect("subdirectories are built first")),
    }
}

/// Encodes the attributes of every directory changed since its last build (`attrs.rs`): in a
/// split directory, only the buckets of changed names.
fn build_attrs(dir: &mut ClosedDir, out: &mut Vec<(Cid, Bytes)>) -> Cid {
    if let Some(c) = dir.attrs_built {
        return c;
    }
    // A directory never built (new, or loaded from a version without attributes): every
    // subdirectory and bucket; else only the changed names' (a subdirectory that changed is
    // one of them: `mark` and `meta_mut` name it).
    let known = dir.attrs_known;
    let fresh = !known || (dir.attrs_buckets.is_none() && dir.entries.len() > attrs::SPLIT_ABOVE);
    let changed = std::mem::take(&mut dir.attrs_changed);
    if known {
        for name in &changed {
            if let Some(Entry::Dir(d)) = dir.entries.get_mut(name) {
                if d.attrs_built.is_none() {
                    build_attrs(d, out);
                }
            }
        }
    } else {
        for e in dir.entries.values_mut() {
            if let Entry::Dir(d) = e {
                if d.attrs_built.is_none() {
                    build_attrs(d, out);
                }
            }
        }
    }
    let (cid, block) = if dir.entries.len() <= attrs::SPLIT_ABOVE {
        dir.attrs_buckets = None;
        attrs::encode_plain(
            &dir.meta,
            dir.entries
                .iter()
                .map(|(n, e)| (n.as_slice(), entry_value(e))),
        )
    } else {
        let dirty: BTreeSet<usize> = if fresh {
            (0..attrs::BUCKETS).collect()
        } else {
            changed.iter().map(|n| attrs::bucket_of(n)).collect()
        };
        let mut buckets = dir
            .attrs_buckets
            .take()
            .unwrap_or_else(|| vec![None; attrs::BUCKETS]);
        let mut members: BTreeMap<usize, Vec<(&[u8], Value)>> = BTreeMap::new();
        if !dirty.is_empty() {
            for (n, e) in &dir.entries {
                let b = attrs::bucket_of(n);
                if dirty.contains(&b) {
                    members
                        .entry(b)
                        .or_default()
                        .push((n.as_slice(), entry_value(e)));
                }
            }
        }
        for b in dirty {
            buckets[b] = match members.remove(&b) {
                Some(items) => {
                    let (c, block) = attrs::encode_bucket(items.into_iter());
                    out.push((c, block));
                    Some(c)
                }
                None => None,
            };
        }
        let node = attrs::encode_split(&dir.meta, &buckets);
        dir.attrs_buckets = Some(buckets);
        node
    };
    out.push((cid, block));
    dir.attrs_built = Some(cid);
    dir.attrs_known = true;
    cid
}

fn build_dir(
    dir: &mut ClosedDir,
    profile: &ImportProfile,
    out: &mut Built,
) -> Result<(Cid, u64), DirError> {
    if let Some(b) = dir.built {
        return Ok(b);
    }
    let builder = match &mut dir.builder {
        Some(b) => b,
        None => {
            // First change since the load: every entry goes in (one full build), then only the
            // changed names from now on.
            dir.changed = dir.entries.keys().cloned().collect();
            dir.builder.insert(Box::new(DirBuilder::new()))
        }
    };
    for name in std::mem::take(&mut dir.changed) {
        match dir.entries.get_mut(&name) {
            None => {
                builder.remove(&name);
            }
            Some(Entry::Leaf(l)) => {
                out.temps.extend(l.temp.take());
                if let Err(e) = builder.insert(name.clone(), l.cid, l.tsize) {
                    // The live tree refuses such names; a replayed journal may still hold one.
                    tracing::error!(name = %String::from_utf8_lossy(&name), "left out of the version: {e}");
                }
            }
            Some(Entry::Dir(d)) => {
                let (cid, tsize) = build_dir(d, profile, out)?;
                if let Err(e) = builder.insert(name.clone(), cid, tsize) {
                    tracing::error!(name = %String::from_utf8_lossy(&name), "left out of the version: {e}");
                }
            }
        }
    }
    let root = builder.build(profile, &mut out.blocks);
    dir.built = Some((root.cid, root.tsize));
    Ok((root.cid, root.tsize))
}
