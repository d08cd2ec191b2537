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
    /// The SQLite index failed.
    #[error("store index (SQLite) error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Another process (or another handle in this process) holds the store's lock.
    #[error("store {} is locked by {}", path.display(), match pid { Some(p) => format!("process {p}"), None => "another process".to_string() })]
    Locked { path: PathBuf, pid: Option<u32> },
    /// The store's contents are inconsistent in a way it cannot repair by itself.
    #[error("store corrupt: {0}")]
    Corrupt(String),
    /// The store directory has a layout version this build does not know.
    #[error("store {} has layout version {found:?}, this build supports {expected}", path.display())]
    UnsupportedVersion { path: PathBuf, found: String, expected: u32 },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io { path: path.into(), source }
    }
}
