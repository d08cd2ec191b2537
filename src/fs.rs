//! Links fuser's kernel requests to [`crate::tree`], and nothing more.
//!
//! Every handler has the same shape: hand the work to the tokio runtime, call the tree, then
//! reply with the result or with the error's errno (logged once, here, at the error's level).
//! Replying from a task lets many requests (several `pread`s on one file, lookups in parallel)
//! proceed at once on a single FUSE thread.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;

use crate::tree::{Attr, Entry, Error, Kind, Tree};

/// Entries asked of the tree per readdir call; the kernel's buffer usually holds fewer.
const READDIR_BATCH: usize = 256;

pub struct IpfsFs {
    tree: Arc<Tree>,
    rt: Handle,
}

impl IpfsFs {
    pub fn new(tree: Arc<Tree>, rt: Handle) -> Self {
        IpfsFs { tree, rt }
    }
}

fn errno(op: &str, e: &Error) -> Errno {
    if e.is_expected() {
        tracing::debug!(op, "{e}");
    } else {
        tracing::warn!(op, "{e}");
    }
    Errno::from_i32(e.to_errno())
}

fn file_attr(attr: &Attr, owner: (u32, u32)) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.mtime,
        kind: match attr.kind {
            Kind::Directory => FileType::Directory,
            Kind::File => FileType::RegularFile,
            Kind::Symlink => FileType::Symlink,
        },
        perm: attr.perm,
        nlink: attr.nlink,
        uid: owner.0,
        gid: owner.1,
        rdev: 0,
        // Tells `cp` and friends to read in large chunks.
        blksize: 1 << 20,
        flags: 0,
    }
}

fn reply_entry(reply: ReplyEntry, entry: &Entry, owner: (u32, u32)) {
    reply.entry(&entry.ttl, &file_attr(&entry.attr, owner), Generation(0));
}

impl Filesystem for IpfsFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_CACHE_SYMLINKS | InitFlags::FUSE_PARALLEL_DIROPS;
        let _ = config.add_capabilities(wanted & config.capabilities());
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let tree = self.tree.clone();
        let name = name.to_owned();
        self.rt.spawn(async move {
            match tree.lookup(parent.0, &name).await {
                Ok(entry) => reply_entry(reply, &entry, tree.owner()),
                Err(e) => reply.error(errno("lookup", &e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.tree.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree.getattr(ino.0) {
            Ok(entry) => reply.attr(&entry.ttl, &file_attr(&entry.attr, self.tree.owner())),
            Err(e) => reply.error(errno("getattr", &e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(errno("setattr", &self.tree.refuse_write(ino.0)));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.tree.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno("readlink", &e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(errno("mknod", &self.tree.refuse_write(parent.0)));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(errno("mkdir", &self.tree.refuse_write(parent.0)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno("unlink", &self.tree.refuse_write(parent.0)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno("rmdir", &self.tree.refuse_write(parent.0)));
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(errno("symlink", &self.tree.refuse_write(parent.0)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(errno("rename", &self.tree.refuse_write(parent.0)));
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(errno("link", &self.tree.refuse_write(newparent.0)));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write =
            !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY) || flags.0 & libc::O_TRUNC != 0;
        match self.tree.open(ino.0, write) {
            // Content never changes: the page cache stays valid across opens.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(errno("open", &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Local data is answered on this FUSE thread: handing each read to another thread costs
        // a cross-CPU wake-up per request. Only reads that must fetch go to the runtime.
        let _runtime = self.rt.enter();
        match self.tree.read_cached(ino.0, fh.0, offset, size) {
            Some(Ok(data)) => reply.data(&data),
            Some(Err(e)) => reply.error(errno("read", &e)),
            None => {
                let tree = self.tree.clone();
                self.rt.spawn(async move {
                    match tree.read_fetching(ino.0, fh.0, offset, size).await {
                        Ok(data) => reply.data(&data),
                        Err(e) => reply.error(errno("read", &e)),
                    }
                });
            }
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(errno("write", &self.tree.refuse_write(ino.0)));
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.tree.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever dirty under /ipfs.
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree.getattr(ino.0) {
            Ok(e) if e.attr.kind == Kind::Directory => {
                // Immutable listings may stay in the kernel's cache (FOPEN_CACHE_DIR).
                let flags = if ino.0 > crate::tree::DATASETS_INO {
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(0), flags)
            }
            Ok(_) => reply.error(Errno::from_i32(libc::ENOTDIR)),
            Err(e) => reply.error(errno("opendir", &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let tree = self.tree.clone();
        self.rt.spawn(async move {
            match tree.readdir(ino.0, offset, READDIR_BATCH).await {
                Ok(entries) => {
                    for e in entries {
                        let kind = match e.kind {
                            Kind::Directory => FileType::Directory,
                            Kind::File => FileType::RegularFile,
                            Kind::Symlink => FileType::Symlink,
                        };
                        if reply.add(INodeNo(e.ino), e.next_offset, kind, &e.name) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(errno("readdir", &e)),
            }
        });
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let stats = self.tree.blocks().store().stats().ok();
        let bsize = 4096u64;
        let used = stats.as_ref().map(|s| s.bytes).unwrap_or(0) / bsize;
        let capacity = stats
            .as_ref()
            .map(|s| s.cache_capacity + s.pinned_bytes)
            .unwrap_or(0)
            / bsize;
        let total = capacity.max(used);
        let free = total - used;
        reply.statfs(total, free, free, 0, 0, bsize as u32, 255, bsize as u32);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(errno(
            "setxattr",
            &Error::NotSupported("extended attributes are read-only"),
        ));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.tree.getxattr(ino.0, name) {
            Ok(value) => reply_xattr(reply, &value, size),
            Err(e) => reply.error(errno("getxattr", &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.tree.listxattr(ino.0) {
            Ok(value) => reply_xattr(reply, &value, size),
            Err(e) => reply.error(errno("listxattr", &e)),
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(errno(
            "removexattr",
            &Error::NotSupported("extended attributes are read-only"),
        ));
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        if mask.contains(AccessFlags::W_OK) {
            reply.error(errno("access", &self.tree.refuse_write(ino.0)));
        } else {
            reply.ok();
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(errno("create", &self.tree.refuse_write(parent.0)));
    }
}

fn reply_xattr(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(value);
    }
}
