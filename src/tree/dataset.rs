//! The writable part of the tree: `/datasets/<name>/…`, delegating to [`crate::datasets`].

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::error::{Error, Result};
use super::{Attr, Entry, Inode, InodeNo, Kind, NodeKind, Tree, DATASETS_INO, DATASET_TTL};
use crate::datasets::{self, Dataset, NodeId, ReadFrom, ROOT_NODE};

pub(super) fn dataset_kind(k: datasets::NodeKind) -> Kind {
    match k {
        datasets::NodeKind::Directory => Kind::Directory,
        datasets::NodeKind::File => Kind::File,
        datasets::NodeKind::Symlink => Kind::Symlink,
    }
}

/// What a change under a directory applies to.
enum Target {
    /// `/datasets` itself: creating or removing datasets.
    DatasetsRoot,
    Dataset(Arc<Dataset>, NodeId),
}

impl Tree {
    /// The inode number of a dataset node, allocated on first sight and kept for the mount.
    pub(super) fn dataset_ino_of(&self, dataset: &str, node: NodeId) -> InodeNo {
        let key = (dataset.to_string(), node);
        if let Some(ino) = self.dataset_inos.read().get(&key) {
            return *ino;
        }
        *self
            .dataset_inos
            .write()
            .entry(key)
            .or_insert_with(|| self.next_dataset_ino.fetch_add(1, Ordering::Relaxed))
    }

    pub(super) fn dataset_attr(&self, ino: InodeNo, ds: &Dataset, node: NodeId) -> Result<Attr> {
        let a = ds.attr(node)?;
        Ok(Attr {
            ino,
            kind: dataset_kind(a.kind),
            size: a.size,
            perm: (a.mode & 0o7777) as u16,
            mtime: a.mtime,
            atime: a.atime,
            ctime: a.ctime,
            nlink: a.nlink,
        })
    }

    /// Registers a dataset node as an inode (one lookup reference) and returns its entry.
    pub(super) fn dataset_entry(
        &self,
        parent: InodeNo,
        name: &[u8],
        ds: Arc<Dataset>,
        node: NodeId,
    ) -> Result<Entry> {
        let ino = self.dataset_ino_of(&ds.name, node);
        let attr = self.dataset_attr(ino, &ds, node)?;
        let mut inodes = self.inodes.write();
        match inodes.get(&ino) {
            Some(inode) => {
                inode.lookups.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                inodes.insert(
                    ino,
                    Arc::new(Inode {
                        parent,
                        name: name.to_vec(),
                        node: NodeKind::Dataset(ds, node),
                        attr: attr.clone(),
                        lookups: AtomicU64::new(1),
                    }),
                );
            }
        }
        Ok(Entry {
            attr,
            ttl: DATASET_TTL,
        })
    }

    fn target(&self, dir: InodeNo) -> Result<Target> {
        match &self.inode(dir)?.node {
            NodeKind::DatasetsRoot if self.datasets.is_some() => Ok(Target::DatasetsRoot),
            NodeKind::Dataset(ds, node) => Ok(Target::Dataset(ds.clone(), *node)),
            _ => Err(self.refuse_write(dir)),
        }
    }

    pub(super) fn read_dataset(
        &self,
        ds: &Dataset,
        node: NodeId,
        offset: u64,
        size: u32,
    ) -> Result<Bytes> {
        match ds.read(node, offset, size)? {
            ReadFrom::Bytes(b) => Ok(b),
            ReadFrom::Sealed {
                cid,
                size: file_size,
            } => {
                let end = (offset + size as u64).min(file_size);
                if offset >= end {
                    return Ok(Bytes::new());
                }
                // Dataset blocks are local (pinned): the local path always completes.
                self.read_range_local(&cid, file_size, offset, end).unwrap_or_else(|| {
                    tracing::warn!(%cid, dataset = %ds.name, "a block of a dataset file is missing from the store");
                    Err(Error::Block(crate::blocks::BlockError::NotFound { cid }))
                })
            }
        }
    }

    pub fn create(
        &self,
        parent: InodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(Entry, u64)> {
        let Target::Dataset(ds, dir) = self.target(parent)? else {
            return Err(Error::NotPermitted(
                "only directories can be made here (datasets)",
            ));
        };
        let exclusive = flags & libc::O_EXCL != 0;
        let node = match ds.create_file(dir, name.as_bytes(), mode) {
            Ok(n) => n,
            Err(datasets::DsError::Exists) if !exclusive => {
                // O_CREAT on an existing file is a plain open.
                let node = ds.lookup(dir, name.as_bytes())?;
                let truncate = flags & libc::O_TRUNC != 0;
                ds.open_write(node, truncate)?;
                let entry = self.dataset_entry(parent, name.as_bytes(), ds.clone(), node)?;
                let fh = self.new_handle(entry.attr.ino, Some((ds, node)));
                return Ok((entry, fh));
            }
            Err(e) => return Err(e.into()),
        };
        let entry = self.dataset_entry(parent, name.as_bytes(), ds.clone(), node)?;
        let fh = self.new_handle(entry.attr.ino, Some((ds, node)));
        Ok((entry, fh))
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8], append: bool) -> Result<u32> {
        let handle = self
            .handles
            .read()
            .get(&fh)
            .cloned()
            .ok_or(Error::BadHandle(fh))?;
        let (ds, node) = handle.writer.clone().ok_or(Error::BadHandle(fh))?;
        let offset = if append { ds.attr(node)?.size } else { offset };
        handle.wrote.store(true, Ordering::Release);
        Ok(ds.write(node, offset, data)? as u32)
    }

    /// Whether the handle may write a dataset file (its close seals).
    pub fn is_writer(&self, fh: u64) -> bool {
        self.handles
            .read()
            .get(&fh)
            .is_some_and(|h| h.writer.is_some())
    }

    /// Whether closing the handle's file is cheap enough to do on the FUSE thread.
    pub fn close_is_light(&self, fh: u64) -> bool {
        let handle = self.handles.read().get(&fh).cloned();
        match handle.and_then(|h| h.writer.clone()) {
            Some((ds, node)) => ds.seal_is_light(node),
            None => true,
        }
    }

    /// `close` (flush) and `fsync`: seal and journal, reporting errors to the caller.
    pub fn flush(&self, fh: u64) -> Result<()> {
        let handle = self.handles.read().get(&fh).cloned();
        if let Some(h) = handle {
            if let Some((ds, node)) = h.writer.clone() {
                let wrote = h.wrote.swap(false, Ordering::AcqRel);
                tracing::trace!(dataset = %ds.name, node, fh, wrote, "flush");
                if wrote {
                    ds.flush(node)?;
                }
            }
        }
        Ok(())
    }

    pub fn fsync(&self, fh: u64) -> Result<()> {
        let handle = self.handles.read().get(&fh).cloned();
        if let Some((ds, node)) = handle.and_then(|h| h.writer.clone()) {
            ds.sync(node)?;
        }
        Ok(())
    }

    pub fn setattr(
        &self,
        ino: InodeNo,
        mode: Option<u32>,
        size: Option<u64>,
        atime: Option<SystemTime>,
        mtime: Option<SystemTime>,
        owner_change: bool,
    ) -> Result<Entry> {
        let inode = self.inode(ino)?;
        let NodeKind::Dataset(ds, node) = &inode.node else {
            return Err(self.refuse_write(inode.parent.max(ino)));
        };
        // chown: accepted and ignored (ownership is the mounting user's), as tar and rsync expect.
        let _ = owner_change;
        ds.setattr_times(*node, mode, atime, mtime, size)?;
        self.getattr(ino)
    }

    /// `mknod`: regular files only (made like `create`, then closed: an empty file in the
    /// next version); device nodes, fifos and sockets have no UnixFS form.
    pub fn mknod(&self, parent: InodeNo, name: &OsStr, mode: u32) -> Result<Entry> {
        let kind = mode & libc::S_IFMT;
        if kind != libc::S_IFREG && kind != 0 {
            return Err(self.refuse_write(parent));
        }
        let Target::Dataset(ds, dir) = self.target(parent)? else {
            return Err(Error::NotPermitted(
                "only directories can be made here (datasets)",
            ));
        };
        let node = ds.create_file(dir, name.as_bytes(), mode & 0o7777)?;
        ds.release_write(node)?;
        self.dataset_entry(parent, name.as_bytes(), ds, node)
    }

    pub fn mkdir(&self, parent: InodeNo, name: &OsStr, mode: u32) -> Result<Entry> {
        match self.target(parent)? {
            Target::DatasetsRoot => {
                if name.len() > datasets::NAME_MAX {
                    return Err(datasets::DsError::NameTooLong.into());
                }
                let sets = self.datasets.as_ref().expect("datasets");
                let ds = sets.create(&name.to_string_lossy(), datasets::DEFAULT_PROFILE)?;
                self.dataset_entry(DATASETS_INO, name.as_bytes(), ds, ROOT_NODE)
            }
            Target::Dataset(ds, dir) => {
                let node = ds.mkdir(dir, name.as_bytes(), mode)?;
                self.dataset_entry(parent, name.as_bytes(), ds, node)
            }
        }
    }

    pub fn symlink(&self, parent: InodeNo, name: &OsStr, target: &[u8]) -> Result<Entry> {
        let Target::Dataset(ds, dir) = self.target(parent)? else {
            return Err(Error::NotPermitted("only datasets can be made here"));
        };
        let node = ds.symlink(dir, name.as_bytes(), target)?;
        self.dataset_entry(parent, name.as_bytes(), ds, node)
    }

    pub fn unlink(&self, parent: InodeNo, name: &OsStr) -> Result<()> {
        match self.target(parent)? {
            Target::DatasetsRoot => Err(Error::Dataset(datasets::DsError::IsADirectory)),
            Target::Dataset(ds, dir) => Ok(ds.unlink(dir, name.as_bytes(), false)?),
        }
    }

    pub fn rmdir(&self, parent: InodeNo, name: &OsStr) -> Result<()> {
        match self.target(parent)? {
            Target::DatasetsRoot if self.is_replica(name.as_bytes()) => Err(Error::ReadOnly(
                "a replica is removed with `ipfs-mount dataset unfollow`",
            )),
            Target::DatasetsRoot => Ok(self
                .datasets
                .as_ref()
                .expect("datasets")
                .remove(&name.to_string_lossy())?),
            Target::Dataset(ds, dir) => Ok(ds.unlink(dir, name.as_bytes(), true)?),
        }
    }

    pub fn rename(
        &self,
        parent: InodeNo,
        name: &OsStr,
        new_parent: InodeNo,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<()> {
        if flags & libc::RENAME_WHITEOUT != 0 {
            return Err(Error::NotSupported("rename whiteout"));
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let (from, to) = (self.target(parent)?, self.target(new_parent)?);
        match (from, to) {
            (Target::Dataset(a, da), Target::Dataset(b, db)) => {
                if !Arc::ptr_eq(&a, &b) {
                    // Different datasets: `mv` falls back to copying.
                    return Err(Error::CrossDevice);
                }
                if exchange {
                    return Ok(a.exchange(da, name.as_bytes(), db, new_name.as_bytes())?);
                }
                let noreplace = flags & libc::RENAME_NOREPLACE != 0;
                Ok(a.rename(da, name.as_bytes(), db, new_name.as_bytes(), noreplace)?)
            }
            (Target::DatasetsRoot, _) | (_, Target::DatasetsRoot) => {
                Err(Error::NotSupported("renaming datasets"))
            }
        }
    }
}
