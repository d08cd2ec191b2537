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

use bytes::Bytes;
use cid::Cid;
use ipfs_mount_ipld::builder::ImportProfile;
use ipfs_mount_ipld::dirtree::{DirBuilder, DirError};

use super::commit::Meta;
use super::journal::{DsPath, LeafKind, Op};

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
}

pub enum Entry {
    Dir(ClosedDir),
    Leaf(ClosedLeaf),
}

#[derive(Default)]
pub struct ClosedDir {
    pub entries: BTreeMap<Vec<u8>, Entry>,
    /// CID and Tsize as last built; `None` when something below changed since.
    built: Option<(Cid, u64)>,
    /// The incremental builder; created on the directory's first change after a load.
    /// Boxed: it is large, and most directories never need one, while every `Entry`
    /// (leaves included) is as big as its largest variant.
    builder: Option<Box<DirBuilder>>,
    /// Names changed since the last build.
    changed: BTreeSet<Vec<u8>>,
}

impl ClosedDir {
    pub fn loaded(built: (Cid, u64)) -> Self {
        ClosedDir {
            built: Some(built),
            ..Default::default()
        }
    }

    pub fn built(&self) -> Option<(Cid, u64)> {
        self.built
    }
}

/// What one build produced.
pub struct Built {
    pub root: Cid,
    pub blocks: Vec<(Cid, Bytes)>,
    /// Temporary pins of the files this version takes in: the version's pin absorbs them.
    pub temps: Vec<u64>,
}

#[derive(Default)]
pub struct ClosedTree {
    pub root: ClosedDir,
    /// Modes and times users set, by path (`a/b/c`), as the commit record keeps them.
    pub meta: BTreeMap<String, Meta>,
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
        for name in path {
            dir.changed.insert(name.clone());
            let e = dir
                .entries
                .entry(name.clone())
                .or_insert_with(|| Entry::Dir(ClosedDir::default()));
            match e {
                Entry::Dir(d) => {
                    dir = d;
                    dir.built = None;
                }
                Entry::Leaf(_) => return None,
            }
        }
        Some(dir)
    }

    fn take(&mut self, path: &DsPath) -> Option<Entry> {
        let (name, parent) = path.split_last()?;
        // Only touch the path when there is something to take.
        self.get(path)?;
        let dir = self.dir_mut(parent)?;
        dir.changed.insert(name.clone());
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

    fn drop_meta_under(&mut self, key: &str) {
        let doomed: Vec<String> = self
            .meta
            .range(key.to_string()..)
            .take_while(|(k, _)| k.starts_with(key))
            .filter(|(k, _)| k.len() == key.len() || k.as_bytes()[key.len()] == b'/')
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.meta.remove(&k);
        }
    }

    fn move_meta(&mut self, from: &str, to: &str) {
        let moved: Vec<(String, Meta)> = self
            .meta
            .range(from.to_string()..)
            .take_while(|(k, _)| k.starts_with(from))
            .filter(|(k, _)| k.len() == from.len() || k.as_bytes()[from.len()] == b'/')
            .map(|(k, m)| (k.clone(), *m))
            .collect();
        for (k, m) in moved {
            self.meta.remove(&k);
            self.meta.insert(format!("{to}{}", &k[from.len()..]), m);
        }
    }

    /// Applies one journal op. Ops are lenient: a replay may meet states the live tree never
    /// showed (a rename whose source was never closed only removes the target).
    pub fn apply(&mut self, op: &Op) {
        self.dirty = true;
        match op {
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
                if let Some(old) = self.get(path) {
                    collect_temps(old, &mut dropped);
                }
                if let Some(Entry::Dir(_)) = self.get(path) {
                    self.drop_meta_under(&meta_key(path));
                }
                let Some(dir) = self.dir_mut(parent) else {
                    tracing::warn!(path = %meta_key(path), "journal: a file below a file; skipped");
                    dropped.extend(*temp);
                    self.dropped_temps.extend(dropped);
                    return;
                };
                dir.changed.insert(name.clone());
                dir.entries.insert(
                    name.clone(),
                    Entry::Leaf(ClosedLeaf {
                        kind: *kind,
                        cid: *cid,
                        size: *size,
                        tsize: *tsize,
                        target: target.clone(),
                        temp: *temp,
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
                self.drop_meta_under(&meta_key(path));
            }
            Op::Rename { from, to } => {
                if from == to {
                    return;
                }
                let moving = self.take(from);
                if let Some(old) = self.take(to) {
                    collect_temps(&old, &mut self.dropped_temps);
                }
                self.drop_meta_under(&meta_key(to));
                let Some(entry) = moving else { return };
                let Some((name, parent)) = to.split_last() else {
                    return;
                };
                match self.dir_mut(parent) {
                    Some(dir) => {
                        dir.changed.insert(name.clone());
                        dir.entries.insert(name.clone(), entry);
                        self.move_meta(&meta_key(from), &meta_key(to));
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
                // Metadata follows its entry: park `a`'s under a key no path can have.
                let (ka, kb) = (meta_key(a), meta_key(b));
                let parked = "\0exchange";
                self.move_meta(&ka, parked);
                self.move_meta(&kb, &ka);
                self.move_meta(parked, &kb);
                for (entry, path) in [(ea, b), (eb, a)] {
                    let Some(entry) = entry else { continue };
                    let Some((name, parent)) = path.split_last() else {
                        continue;
                    };
                    match self.dir_mut(parent) {
                        Some(dir) => {
                            dir.changed.insert(name.clone());
                            dir.entries.insert(name.clone(), entry);
                        }
                        None => collect_temps(&entry, &mut self.dropped_temps),
                    }
                }
            }
            Op::Meta { path, mode, mtime } => {
                if self.get(path).is_some() {
                    self.meta.insert(
                        meta_key(path),
                        Meta {
                            mode: *mode,
                            mtime: *mtime,
                        },
                    );
                }
            }
        }
    }

    /// Builds every directory changed since the last build; returns the root and the new blocks.
    pub fn build(&mut self, profile: &ImportProfile) -> Result<Built, DirError> {
        let mut out = Built {
            root: Cid::default(),
            blocks: Vec::new(),
            temps: Vec::new(),
        };
        let (root, _) = build_dir(&mut self.root, profile, &mut out)?;
        out.root = root;
        self.dirty = false;
        Ok(out)
    }
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
