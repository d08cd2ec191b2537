use std::io;
use std::path::PathBuf;

/// Errors of the block store. Messages name the path or CID involved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file system operation failed.
    #[error("store I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file system holding the store is full (`ENOSPC`, `EDQUOT`, or SQLite's "database or disk is full").
    /// The operation stored nothing: no partial block file is left behind. Callers map it to `ENOSPC`
    /// (see [`StoreError::errno`]).
    #[error("no space left on device for the block store ({})", match path {
        Some(p) => p.display().to_string(),
        None => "its index".to_string(),
    })]
    NoSpace { path: Option<PathBuf> },
    /// The SQLite index failed.
    #[error("store index (SQLite) error: {0}")]
    Sqlite(rusqlite::Error),
    /// Another process (or another handle in this process) holds the store's lock.
    #[error("store {} is locked by {}", path.display(), match pid { Some(p) => format!("process {p}"), None => "another process".to_string() })]
    Locked { path: PathBuf, pid: Option<u32> },
    /// The store's contents are inconsistent in a way it cannot repair by itself.
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// The store directory has a layout version this build does not know.
    #[error("store {} has layout version {found:?}, this build supports {expected}", path.display())]
    UnsupportedVersion {
        path: PathBuf,
        found: String,
        expected: u32,
    },
    /// A temporary pin id that does not exist: never created, or already released.
    #[error("unknown temporary pin {0} (never created, or already released)")]
    UnknownTempPin(u64),
}

impl StoreError {
    /// An I/O error on `path`; `ENOSPC` and `EDQUOT` become [`StoreError::NoSpace`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StoreError::NoSpace {
                path: Some(path.into()),
            },
            _ => StoreError::Io {
                path: path.into(),
                source,
            },
        }
    }

    /// Whether the store ran out of space.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::NoSpace { .. })
    }

    /// The errno that best describes this error to a file system caller: `ENOSPC` for [`StoreError::NoSpace`],
    /// the OS error of an I/O error, `EIO` otherwise.
    pub fn errno(&self) -> i32 {
        match self {
            StoreError::NoSpace { .. } => libc::ENOSPC,
            StoreError::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
                StoreError::NoSpace { path: None }
            }
            _ => StoreError::Sqlite(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_disk_errors_become_no_space() {
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let e = StoreError::io(
                "/s/blocks/AB/X.data.tmp",
                io::Error::from_raw_os_error(errno),
            );
            assert!(e.is_no_space(), "{e:?}");
            assert_eq!(e.errno(), libc::ENOSPC);
            assert!(e.to_string().contains("/s/blocks/AB/X.data.tmp"), "{e}");
        }
        let e = StoreError::io("/s/x", io::Error::from_raw_os_error(libc::EACCES));
        assert!(!e.is_no_space());
        assert_eq!(e.errno(), libc::EACCES);
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        let e = StoreError::from(full);
        assert!(e.is_no_space(), "{e:?}");
        assert_eq!(e.errno(), libc::ENOSPC);
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(matches!(StoreError::from(busy), StoreError::Sqlite(_)));
        assert_eq!(StoreError::UnknownTempPin(3).errno(), libc::EIO);
    }
}
