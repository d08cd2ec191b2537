//! Links fuser's kernel requests to [`crate::tree`], and nothing more.
//!
//! Every handler has the same shape: hand the work to the tokio runtime, call the tree, then
//! reply with the result or with the error's errno (logged once, here, at the error's level).
//! Replying from a task lets many requests (several `pread`s on one file, lookups in parallel)
//! proceed at once on a single FUSE thread.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;

use crate::tree::{Attr, DirEntryOut, Entry, Error, Kind, Tree};

/// Entries asked of the tree per readdir call; the kernel's buffer usually holds fewer.
const READDIR_BATCH: usize = 256;

/// On the mount's root: the process id of the daemon serving it (for `ipfs-mount unmount`).
pub const XATTR_DAEMON_PID: &str = "user.ipfs-mount.pid";

/// On the mount's root: how many requests of each kind the daemon has answered, as
/// `op=count` words (`lookup=12 readdirplus=3 …`), so tests and users can see what a
/// command cost in kernel round trips.
pub const XATTR_OPS: &str = "user.ipfs-mount.ops";

/// Requests counted for [`XATTR_OPS`]: the ones a directory listing costs.
#[derive(Default)]
struct OpCounts {
    lookup: AtomicU64,
    getattr: AtomicU64,
    readdir: AtomicU64,
    readdirplus: AtomicU64,
    getxattr: AtomicU64,
    listxattr: AtomicU64,
    forget: AtomicU64,
}

impl OpCounts {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn text(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "lookup={} getattr={} readdir={} readdirplus={} getxattr={} listxattr={} forget={}",
            get(&self.lookup),
            get(&self.getattr),
            get(&self.readdir),
            get(&self.readdirplus),
            get(&self.getxattr),
            get(&self.listxattr),
            get(&self.forget),
        )
    }
}

/// Dataset requests that may hash or commit (close, fsync, truncate, the CID of a directory)
/// run at most this many at a time, off the FUSE threads: those keep answering `stat`,
/// `readdir` and reads while a big file seals.
const HEAVY_AT_ONCE: usize = 4;

pub struct IpfsFs {
    tree: Arc<Tree>,
    rt: Handle,
    heavy: Arc<tokio::sync::Semaphore>,
    /// Set when the session ends (unmount): the kernel takes no more replies.
    gone: Arc<AtomicBool>,
    ops: OpCounts,
}

impl IpfsFs {
    pub fn new(tree: Arc<Tree>, rt: Handle) -> Self {
        IpfsFs {
            tree,
            rt,
            heavy: Arc::new(tokio::sync::Semaphore::new(HEAVY_AT_ONCE)),
            gone: Arc::new(AtomicBool::new(false)),
            ops: OpCounts::default(),
        }
    }

    /// `reply`, to be sent later by a task.
    fn later<R>(&self, reply: R) -> Later<R> {
        Later {
            reply: Some(reply),
            gone: self.gone.clone(),
        }
    }

    /// Runs `work` on the blocking pool, bounded by [`HEAVY_AT_ONCE`]; it replies itself
    /// through the [`Later`] it is given. The work runs also when the mount is gone meanwhile
    /// (a close still seals what was written).
    fn offload<R: Send + 'static>(
        &self,
        reply: R,
        work: impl FnOnce(&Tree, Later<R>) + Send + 'static,
    ) {
        let tree = self.tree.clone();
        let permits = self.heavy.clone();
        let reply = self.later(reply);
        self.rt.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let _ = tokio::task::spawn_blocking(move || work(&tree, reply)).await;
        });
    }
}

/// A reply that a task sends once its work is done. After the unmount the kernel takes no
/// replies: one still pending then (a read waiting for a block the prefetcher asked for, a
/// lookup waiting for a gateway) is dropped without a word. Sending it would fail, and fuser
/// logs that failure as an error (and a reply dropped unsent as a warning) although nothing
/// went wrong: whoever asked is gone with the mount.
struct Later<R> {
    reply: Option<R>,
    gone: Arc<AtomicBool>,
}

impl<R> Later<R> {
    /// Calls `send` with the reply, unless the mount is gone.
    fn send(mut self, send: impl FnOnce(R)) {
        if let Some(reply) = self.reply.take() {
            if self.gone.load(Ordering::Acquire) {
                std::mem::forget(reply);
            } else {
                send(reply);
            }
        }
    }
}

impl<R> Drop for Later<R> {
    /// A task dropped unfinished (the runtime shuts down after the unmount): no reply at all.
    /// While mounted, fuser's own drop answers EIO.
    fn drop(&mut self) {
        if let Some(reply) = self.reply.take() {
            if self.gone.load(Ordering::Acquire) {
                std::mem::forget(reply);
            }
        }
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
        atime: attr.atime,
        mtime: attr.mtime,
        ctime: attr.ctime,
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

/// fuser 0.18 reads a time before the epoch, `(secs < 0, nsecs)`, as `epoch - (|secs| + nsecs)`
/// where the kernel means `epoch - |secs| + nsecs` (see its `system_time_from_time`): put the
/// nanoseconds back on the right side. Times from the epoch on are read right.
fn before_epoch_fixed(t: SystemTime) -> SystemTime {
    match SystemTime::UNIX_EPOCH.duration_since(t) {
        Ok(d) if d.subsec_nanos() > 0 => {
            SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(d.as_secs())
                + std::time::Duration::from_nanos(u64::from(d.subsec_nanos()))
        }
        _ => t,
    }
}

fn kind_of(kind: Kind) -> FileType {
    match kind {
        Kind::Directory => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

fn reply_entry(reply: ReplyEntry, entry: &Entry, owner: (u32, u32)) {
    reply.entry(&entry.ttl, &file_attr(&entry.attr, owner), Generation(0));
}

impl Filesystem for IpfsFs {
    fn destroy(&mut self) {
        self.gone.store(true, Ordering::Release);
    }

    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Not HANDLE_KILLPRIV(_V2): the kernel clears set-user-ID and set-group-ID bits itself
        // when a process without CAP_FSETID writes or truncates (a SETATTR of the mode), with
        // its own capability check. Handling V2 here would need FATTR_KILL_SUIDGID and
        // FUSE_OPEN_KILL_SUIDGID, which fuser does not pass on. The price is one getxattr of
        // `security.capability` per write, answered on the FUSE thread.
        let wanted = InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_PARALLEL_DIROPS
            // Every listing carries its entries' attributes: `ls -l` of a big directory then
            // needs no LOOKUP per entry. Not READDIRPLUS_AUTO: that uses plain READDIR after the
            // first batch unless a LOOKUP came in between, which is the cost we avoid. Listing
            // entries resolves each one anyway (readdir reports its type).
            | InitFlags::FUSE_DO_READDIRPLUS
            // The kernel then caches "no ACL" per inode instead of asking on every `ls -l`.
            | InitFlags::FUSE_POSIX_ACL;
        let _ = config.add_capabilities(wanted & config.capabilities());
        let _ = config.set_max_readahead(1 << 20);
        // Large writes: fewer round trips when tools copy into a dataset.
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        OpCounts::count(&self.ops.lookup);
        match self.tree.lookup_cached(parent.0, name) {
            Some(Ok(entry)) => return reply_entry(reply, &entry, self.tree.owner()),
            Some(Err(e)) => {
                if let Some(ttl) = self.tree.negative_ttl(parent.0, &e) {
                    // Node id 0: the kernel caches "no such entry" for `ttl`.
                    let none = Attr {
                        ino: 0,
                        kind: Kind::File,
                        size: 0,
                        perm: 0,
                        mtime: SystemTime::UNIX_EPOCH,
                        atime: SystemTime::UNIX_EPOCH,
                        ctime: SystemTime::UNIX_EPOCH,
                        nlink: 0,
                    };
                    return reply.entry(&ttl, &file_attr(&none, (0, 0)), Generation(0));
                }
                return reply.error(errno("lookup", &e));
            }
            None => {}
        }
        let tree = self.tree.clone();
        let name = name.to_owned();
        let reply = self.later(reply);
        self.rt.spawn(async move {
            let result = tree.lookup(parent.0, &name).await;
            reply.send(|reply| match result {
                Ok(entry) => reply_entry(reply, &entry, tree.owner()),
                Err(e) => reply.error(errno("lookup", &e)),
            });
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        OpCounts::count(&self.ops.forget);
        self.tree.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        OpCounts::count(&self.ops.getattr);
        match self.tree.getattr(ino.0) {
            Ok(entry) => reply.attr(&entry.ttl, &file_attr(&entry.attr, self.tree.owner())),
            Err(e) => reply.error(errno("getattr", &e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let time = |t: TimeOrNow| match t {
            TimeOrNow::SpecificTime(t) => before_epoch_fixed(t),
            TimeOrNow::Now => SystemTime::now(),
        };
        let (atime, mtime) = (atime.map(time), mtime.map(time));
        let owner_change = uid.is_some() || gid.is_some();
        self.offload(reply, move |tree, reply| {
            let result = tree.setattr(ino.0, mode, size, atime, mtime, owner_change);
            reply.send(|reply| match result {
                Ok(entry) => reply.attr(&entry.ttl, &file_attr(&entry.attr, tree.owner())),
                Err(e) => reply.error(errno("setattr", &e)),
            });
        });
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
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        match self.tree.mknod(parent.0, name, mode & !umask) {
            Ok(entry) => reply_entry(reply, &entry, self.tree.owner()),
            Err(e) => reply.error(errno("mknod", &e)),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.tree.mkdir(parent.0, name, mode & !umask) {
            Ok(entry) => reply_entry(reply, &entry, self.tree.owner()),
            Err(e) => reply.error(errno("mkdir", &e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.tree.unlink(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("unlink", &e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.tree.rmdir(parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rmdir", &e)),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self
            .tree
            .symlink(parent.0, name, target.as_os_str().as_bytes())
        {
            Ok(entry) => reply_entry(reply, &entry, self.tree.owner()),
            Err(e) => reply.error(errno("symlink", &e)),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self
            .tree
            .rename(parent.0, name, newparent.0, newname, flags.bits())
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno("rename", &e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let e = Error::NotPermitted("content-addressed trees have no hard links");
        reply.error(errno("link", &e));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY);
        let truncate = flags.0 & libc::O_TRUNC != 0;
        match self.tree.open_with(ino.0, write, truncate) {
            // Immutable content keeps the page cache across opens; dataset files may change.
            Ok(fh) if !crate::tree::is_dataset_ino(ino.0) => {
                reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
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
                let reply = self.later(reply);
                self.rt.spawn(async move {
                    let result = tree.read_fetching(ino.0, fh.0, offset, size).await;
                    reply.send(|reply| match result {
                        Ok(data) => reply.data(&data),
                        Err(e) => reply.error(errno("read", &e)),
                    });
                });
            }
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.tree.write(fh.0, offset, data, false) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno("write", &e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) of a written dataset file: seal and journal here, so the writer sees errors.
        if !self.tree.is_writer(fh.0) {
            return reply.ok();
        }
        if self.tree.close_is_light(fh.0) {
            return match self.tree.flush(fh.0) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("flush", &e)),
            };
        }
        self.offload(reply, move |tree, reply| {
            let result = tree.flush(fh.0);
            reply.send(|reply| match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("flush", &e)),
            });
        });
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
        if !self.tree.is_writer(fh.0) || self.tree.close_is_light(fh.0) {
            return match self.tree.release(fh.0) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("release", &e)),
            };
        }
        self.offload(reply, move |tree, reply| {
            let result = tree.release(fh.0);
            reply.send(|reply| match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("release", &e)),
            });
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.offload(reply, move |tree, reply| {
            let result = tree.fsync(fh.0);
            reply.send(|reply| match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("fsync", &e)),
            });
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree.getattr(ino.0) {
            Ok(e) if e.attr.kind == Kind::Directory => {
                // Immutable listings may stay in the kernel's cache (FOPEN_CACHE_DIR). A dataset
                // directory's may not: a cached listing is served without attributes, so once
                // its entries' short TTL has passed `ls -l` would cost a LOOKUP per entry, where
                // a fresh READDIRPLUS brings them all, current, in a few requests.
                let immutable =
                    ino.0 > crate::tree::DATASETS_INO && !crate::tree::is_dataset_ino(ino.0);
                let flags = if immutable {
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(0), flags)
            }
            Ok(_) => reply.error(errno("opendir", &Error::NotADirectory)),
            Err(e) => reply.error(errno("opendir", &e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        OpCounts::count(&self.ops.readdir);
        let tree = self.tree.clone();
        let reply = self.later(reply);
        self.rt.spawn(async move {
            let result = tree.readdir(ino.0, offset, READDIR_BATCH).await;
            reply.send(|mut reply| match result {
                Ok(entries) => {
                    for e in entries {
                        if reply.add(INodeNo(e.ino), e.next_offset, kind_of(e.kind), &e.name) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(errno("readdir", &e)),
            });
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        OpCounts::count(&self.ops.readdirplus);
        let tree = self.tree.clone();
        let reply = self.later(reply);
        self.rt.spawn(async move {
            let result = tree.readdirplus(ino.0, offset, READDIR_BATCH).await;
            let owner = tree.owner();
            // Entries that do not reach the kernel give back the lookup reference they hold.
            let unsent = |entries: &[(DirEntryOut, Option<Entry>)]| {
                for (e, entry) in entries {
                    if let Some(entry) = entry.as_ref().filter(|_| !is_dot(&e.name)) {
                        tree.forget(entry.attr.ino, 1);
                    }
                }
            };
            let mut result = Some(result);
            reply.send(|mut reply| match result.take() {
                Some(Ok(entries)) => {
                    let mut sent = 0;
                    for (e, entry) in &entries {
                        let full = match entry {
                            Some(entry) => reply.add(
                                INodeNo(entry.attr.ino),
                                e.next_offset,
                                &e.name,
                                &entry.ttl,
                                &file_attr(&entry.attr, owner),
                                Generation(0),
                            ),
                            // No attributes: node id 0 tells the kernel to link nothing; it
                            // looks the name up when it needs it (and gets the error).
                            None => reply.add(
                                INodeNo(0),
                                e.next_offset,
                                &e.name,
                                &Duration::ZERO,
                                &file_attr(&placeholder_attr(e.kind), (0, 0)),
                                Generation(0),
                            ),
                        };
                        if full {
                            break;
                        }
                        sent += 1;
                    }
                    unsent(&entries[sent..]);
                    reply.ok();
                }
                Some(Err(e)) => reply.error(errno("readdirplus", &e)),
                None => {}
            });
            // The mount went away before the reply: nothing reached the kernel.
            if let Some(Ok(entries)) = result {
                unsent(&entries);
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
        let stats = self.tree.blocks().stats().ok();
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
        OpCounts::count(&self.ops.getxattr);
        // `ipfs-mount unmount` asks which process serves the mount, to wait for its exit.
        if ino.0 == crate::tree::ROOT_INO && name.as_bytes() == XATTR_DAEMON_PID.as_bytes() {
            return reply_xattr(reply, std::process::id().to_string().as_bytes(), size);
        }
        if ino.0 == crate::tree::ROOT_INO && name.as_bytes() == XATTR_OPS.as_bytes() {
            return reply_xattr(reply, self.ops.text().as_bytes(), size);
        }
        // The kernel asks for `security.capability` before a file's first write: such names
        // are answered here; only ours may need a commit first (the CID of a dataset directory).
        if crate::tree::is_dataset_ino(ino.0) && name.as_bytes().starts_with(b"user.ipfs.") {
            let name = name.to_owned();
            return self.offload(reply, move |tree, reply| {
                let result = tree.getxattr(ino.0, &name);
                reply.send(|reply| match result {
                    Ok(value) => reply_xattr(reply, &value, size),
                    Err(e) => reply.error(errno("getxattr", &e)),
                });
            });
        }
        match self.tree.getxattr(ino.0, name) {
            Ok(value) => reply_xattr(reply, &value, size),
            Err(e) => reply.error(errno("getxattr", &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        OpCounts::count(&self.ops.listxattr);
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
        if mask.contains(AccessFlags::W_OK)
            && !crate::tree::is_dataset_ino(ino.0)
            && ino.0 != crate::tree::DATASETS_INO
        {
            reply.error(errno("access", &self.tree.refuse_write(ino.0)));
        } else {
            reply.ok();
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.tree.create(parent.0, name, mode & !umask, flags) {
            Ok((entry, fh)) => reply.created(
                &entry.ttl,
                &file_attr(&entry.attr, self.tree.owner()),
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno("create", &e)),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(errno("ioctl", &Error::NoIoctl));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(errno("fallocate", &Error::NotSupported("fallocate")));
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // Tools fall back to read and write.
        let e = Error::NotSupported("copy_file_range");
        reply.error(errno("copy_file_range", &e));
    }
}

fn is_dot(name: &OsStr) -> bool {
    name == "." || name == ".."
}

/// Attributes sent with node id 0, which the kernel does not look at beyond the type.
fn placeholder_attr(kind: Kind) -> Attr {
    Attr {
        ino: 0,
        kind,
        size: 0,
        perm: 0,
        mtime: SystemTime::UNIX_EPOCH,
        atime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        nlink: 0,
    }
}

fn reply_xattr(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(errno("getxattr", &Error::AttributeRange));
    } else {
        reply.data(value);
    }
}
