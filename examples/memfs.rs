//! The baseline for read and listing benchmarks: the smallest useful fuser filesystem, serving
//! one file of pseudo-random bytes and optionally a directory of many small files from memory,
//! built with the same fuser version and FUSE settings as ipfs-mount. `scripts/bench.sh`
//! compares our reads and `ls -l` against it in the same run.
//!
//! usage: memfs <MOUNTPOINT> <SIZE_BYTES> [ENTRIES] [xattrs]
//!   serves <MOUNTPOINT>/file, and with ENTRIES <MOUNTPOINT>/dir/file-NNNNNN.txt (entry i is
//!   1 + i % 7 lines of "entry i\n", as the bench's HAMT directory); unmount with fusermount3 -u.
//!   Without `xattrs` it has no extended attributes (getxattr is ENOSYS, so the kernel stops
//!   asking); with it, getxattr answers ENODATA, as every filesystem with extended attributes
//!   does for a name it lacks: then the kernel asks once per `ls -l` entry (`security.selinux`).

use std::ffi::OsStr;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

const TTL: Duration = Duration::from_secs(3600);
const PATTERN_LEN: usize = 1 << 20;

/// Inode numbers: 1 the root, 2 `file`, 3 `dir`, then the entries of `dir`.
const FILE_INO: u64 = 2;
const DIR_INO: u64 = 3;
const FIRST_ENTRY_INO: u64 = 4;

struct MemFs {
    size: u64,
    pattern: Vec<u8>,
    /// Names and sizes of the entries of `dir` (none: no `dir`).
    entries: Vec<(String, u64)>,
    /// Answer getxattr (ENODATA) instead of leaving it unimplemented.
    xattrs: bool,
}

impl MemFs {
    fn entry_ino(&self, name: &OsStr) -> Option<u64> {
        // file-NNNNNN.txt
        let n: usize = name
            .to_str()?
            .strip_prefix("file-")?
            .strip_suffix(".txt")?
            .parse()
            .ok()?;
        (self.entries.get(n)?.0.as_str() == name).then_some(FIRST_ENTRY_INO + n as u64)
    }

    /// The entries of a directory from `offset` on: (ino, kind, name).
    fn listing(&self, ino: u64) -> Vec<(u64, FileType, String)> {
        let mut out = vec![
            (ino, FileType::Directory, ".".to_string()),
            (1, FileType::Directory, "..".to_string()),
        ];
        if ino == 1 {
            out.push((FILE_INO, FileType::RegularFile, "file".into()));
            if !self.entries.is_empty() {
                out.push((DIR_INO, FileType::Directory, "dir".into()));
            }
        } else {
            out.extend(self.entries.iter().enumerate().map(|(i, (name, _))| {
                (
                    FIRST_ENTRY_INO + i as u64,
                    FileType::RegularFile,
                    name.clone(),
                )
            }));
        }
        out
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, size, perm) = match ino {
            1 | DIR_INO => (FileType::Directory, 0, 0o555),
            FILE_INO => (FileType::RegularFile, self.size, 0o444),
            _ => {
                let i = (ino - FIRST_ENTRY_INO) as usize;
                let size = self.entries.get(i).map(|e| e.1).unwrap_or(0);
                (FileType::RegularFile, size, 0o444)
            }
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 1 << 20,
            flags: 0,
        }
    }
}

impl Filesystem for MemFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_POSIX_ACL;
        let _ = config.add_capabilities(wanted & config.capabilities());
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(if self.xattrs {
            Errno::ENODATA
        } else {
            Errno::ENOSYS
        });
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = match parent.0 {
            1 if name == "file" => Some(FILE_INO),
            1 if name == "dir" && !self.entries.is_empty() => Some(DIR_INO),
            DIR_INO => self.entry_ino(name),
            _ => None,
        };
        if let Some(ino) = ino {
            reply.entry(&TTL, &self.attr(ino), Generation(0));
        } else {
            reply.error(Errno::from_i32(libc::ENOENT));
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&TTL, &self.attr(ino.0));
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(
            FileHandle(0),
            FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
        );
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let end = (offset + size as u64).min(self.size);
        if offset >= end {
            return reply.data(&[]);
        }
        let start = (offset % PATTERN_LEN as u64) as usize;
        let len = (end - offset) as usize;
        if start + len <= PATTERN_LEN {
            return reply.data(&self.pattern[start..start + len]);
        }
        // A read across the pattern's end: a short answer would make the kernel take it for
        // the end of the file (and shrink the file), so the pattern is repeated.
        let mut out = Vec::with_capacity(len);
        let mut at = start;
        while out.len() < len {
            let n = (len - out.len()).min(PATTERN_LEN - at);
            out.extend_from_slice(&self.pattern[at..at + n]);
            at = 0;
        }
        reply.data(&out);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino.0 != 1 && ino.0 != DIR_INO {
            return reply.error(Errno::from_i32(libc::ENOTDIR));
        }
        let entries = self.listing(ino.0);
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    /// Entries with their attributes; the kernel counts each (but `.` and `..`) as a lookup,
    /// which memfs need not track: its inodes never go away.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        if ino.0 != 1 && ino.0 != DIR_INO {
            return reply.error(Errno::from_i32(libc::ENOTDIR));
        }
        let entries = self.listing(ino.0);
        for (i, (ino, _, name)) in entries.iter().enumerate().skip(offset as usize) {
            let attr = self.attr(*ino);
            if reply.add(
                INodeNo(*ino),
                i as u64 + 1,
                name,
                &TTL,
                &attr,
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let xattrs = args.last().is_some_and(|a| a == "xattrs");
    let args: Vec<String> = args.into_iter().filter(|a| a != "xattrs").collect();
    if args.len() != 3 && args.len() != 4 {
        eprintln!("usage: memfs <MOUNTPOINT> <SIZE_BYTES> [ENTRIES] [xattrs]");
        std::process::exit(2);
    }
    let size: u64 = args[2].parse().expect("size in bytes");
    let n: usize = args
        .get(3)
        .map(|a| a.parse().expect("entries"))
        .unwrap_or(0);
    let entries = (0..n)
        .map(|i| {
            let line = format!("entry {i}\n");
            (
                format!("file-{i:06}.txt"),
                (line.len() * (1 + i % 7)) as u64,
            )
        })
        .collect();
    let mut x: u32 = 12345;
    let pattern = (0..PATTERN_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("memfs".into()),
        fuser::MountOption::RO,
    ];
    config.n_threads = Some(2);
    let fs = MemFs {
        size,
        pattern,
        entries,
        xattrs,
    };
    fuser::mount(fs, &args[1], &config).expect("mount");
}
