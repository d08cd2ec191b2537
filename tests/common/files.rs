//! Reading files and their attributes directly: [`lgetxattr`], errno assertions ([`assert_errno`], [`errno_name`]),
//! [`pread`], [`pread_direct`] (`O_DIRECT`), and [`read_timeout`].

use super::*;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// lgetxattr(2) directly: the value, or the errno.
pub fn lgetxattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// The errno of an io::Result (None when it succeeded).
pub fn errno_of<T>(r: &io::Result<T>) -> Option<i32> {
    r.as_ref().err().map(|e| e.raw_os_error().unwrap_or(-1))
}

pub fn errno_name(e: i32) -> String {
    let n = match e {
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EROFS => "EROFS",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::ENOTSUP => "ENOTSUP",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOTCONN => "ENOTCONN",
        libc::ENODATA => "ENODATA",
        libc::ENOSYS => "ENOSYS",
        libc::EXDEV => "EXDEV",
        libc::ETIMEDOUT => "ETIMEDOUT",
        _ => "",
    };
    format!("{n}({e})")
}

/// Asserts that `r` failed with `want`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, want: i32, what: &str) {
    match r {
        Ok(v) => panic!("{what}: succeeded ({v:?}), expected {}", errno_name(want)),
        Err(e) => {
            let got = e.raw_os_error().unwrap_or(-1);
            assert_eq!(
                got,
                want,
                "{what}: got {} ({e}), expected {}",
                errno_name(got),
                errno_name(want)
            );
        }
    }
}

/// Reads a whole file on a helper thread, failing the test if it takes longer than `secs`.
pub fn read_timeout(path: &Path, secs: u64) -> io::Result<Vec<u8>> {
    let p = path.to_path_buf();
    with_timeout(secs, &format!("read {}", path.display()), move || {
        fs::read(p)
    })
}

/// `pread` of `len` bytes at `off` (short only at EOF).
pub fn pread(path: &Path, off: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = File::open(path)?;
    let mut buf = vec![0u8; len];
    let mut n = 0;
    while n < len {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// `pread` through an `O_DIRECT` descriptor: bypasses the page cache, so FUSE sees this exact offset and length.
pub fn pread_direct(path: &Path, off: u64, len: usize) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    let mut buf = vec![0u8; len];
    let mut n = 0;
    while n < len {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf)
}
