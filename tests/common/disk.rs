//! A size-limited filesystem for full-disk tests ([`Tmpfs`]) and the free space of a filesystem ([`free_bytes`]).

use super::*;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a fixed size mounted on a fresh temporary directory (needs root); unmounted (lazily) on drop. Declare
/// it before any [`Mount`] whose store lives on it, so that the mount is stopped first.
pub struct Tmpfs {
    tmp: Option<TempDir>,
    /// Where the tmpfs is mounted.
    pub dir: PathBuf,
}

impl Tmpfs {
    /// `mount -t tmpfs -o size=<size> tmpfs <dir>`; Err says why it cannot (not root, no mount(8), ...).
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting a tmpfs needs root".into());
        }
        let tmp = tempdir("tmpfs");
        let dir = tmp.path().join("fs");
        fs::create_dir_all(&dir).unwrap();
        let out = run(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&dir));
        if !out.status.success() || mount_fstype(&dir).as_deref() != Some("tmpfs") {
            return Err(format!(
                "mount -t tmpfs -o size={size} tmpfs {}: {}: {}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Tmpfs {
            tmp: Some(tmp),
            dir,
        })
    }

    /// Bytes an unprivileged writer could still write (statvfs `f_bavail * f_frsize`).
    pub fn free_bytes(&self) -> u64 {
        free_bytes(&self.dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if mount_fstype(&self.dir).as_deref() == Some("tmpfs") {
            let out = run(Command::new("umount").arg("-l").arg(&self.dir));
            if !out.status.success() {
                eprintln!(
                    "umount -l {}: {}",
                    self.dir.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        if let Some(t) = self.tmp.take() {
            keep_tmp(t);
        }
    }
}

/// Free bytes on the filesystem holding `path` (statvfs `f_bavail * f_frsize`; 0 if statvfs fails).
pub fn free_bytes(path: &Path) -> u64 {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path and a zeroed statvfs buffer for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    st.f_bavail as u64 * st.f_frsize as u64
}
