//! The filesystem's error type and the only place where errors become errnos.
//!
//! Lower layers return their own error enums that never mention libc; here each variant gets
//! an errno and a log level, so an expected `ENOENT` logs at DEBUG while a failed block logs
//! at WARN with the CID and the cause.

use crate::blocks::BlockError;
use crate::datasets::DsError;
use ipfs_mount_ipld::reader::{DriveError, ReadError};
use ipfs_mount_ipld::unixfs::UnixFsError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no such entry: {0}")]
    NotFound(String),
    #[error("read-only: {0}")]
    ReadOnly(&'static str),
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("not a symlink")]
    NotASymlink,
    #[error("no such inode {0}")]
    StaleInode(u64),
    #[error("no such handle {0}")]
    BadHandle(u64),
    #[error("no such attribute")]
    NoAttribute,
    #[error("attribute buffer too small")]
    AttributeRange,
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    /// An ioctl we do not implement (`cp` tries FICLONE first and falls back).
    #[error("no such ioctl")]
    NoIoctl,
    #[error("{0}")]
    Block(#[from] BlockError),
    #[error("block {cid} is malformed: {cause}")]
    Corrupt { cid: cid::Cid, cause: String },
    #[error("dataset: {0}")]
    Dataset(#[from] DsError),
    #[error("rename across datasets")]
    CrossDevice,
    #[error("not permitted: {0}")]
    NotPermitted(&'static str),
    /// A name could not be resolved because its sources failed (not because it has no record).
    #[error("name resolution failed: {0}")]
    Names(String),
}

impl From<ReadError> for Error {
    fn from(e: ReadError) -> Self {
        Error::Corrupt {
            cid: *e.cid(),
            cause: e.to_string(),
        }
    }
}

impl From<DriveError<BlockError>> for Error {
    fn from(e: DriveError<BlockError>) -> Self {
        match e {
            DriveError::Read(e) => e.into(),
            DriveError::Get(e) => Error::Block(e),
            DriveError::Stalled => Error::NotSupported("a UnixFS walk stalled"),
        }
    }
}

impl Error {
    pub fn corrupt(cid: &cid::Cid, e: UnixFsError) -> Self {
        Error::Corrupt {
            cid: *cid,
            cause: e.to_string(),
        }
    }

    pub fn to_errno(&self) -> i32 {
        match self {
            Error::NotFound(_) => libc::ENOENT,
            Error::ReadOnly(_) => libc::EROFS,
            Error::NotADirectory => libc::ENOTDIR,
            Error::IsADirectory => libc::EISDIR,
            Error::NotASymlink => libc::EINVAL,
            Error::StaleInode(_) => libc::ESTALE,
            Error::BadHandle(_) => libc::EBADF,
            Error::NoAttribute => libc::ENODATA,
            Error::AttributeRange => libc::ERANGE,
            Error::NotSupported(_) => libc::ENOTSUP,
            Error::NoIoctl => libc::ENOTTY,
            // Whatever went wrong with a block, the reader gets EIO: never wrong or short data.
            Error::Block(_) | Error::Corrupt { .. } => libc::EIO,
            Error::CrossDevice => libc::EXDEV,
            Error::NotPermitted(_) => libc::EPERM,
            Error::Names(_) => libc::EIO,
            Error::Dataset(e) => match e {
                DsError::NotFound => libc::ENOENT,
                DsError::Exists => libc::EEXIST,
                DsError::NotEmpty => libc::ENOTEMPTY,
                DsError::NotADirectory => libc::ENOTDIR,
                DsError::IsADirectory => libc::EISDIR,
                DsError::Invalid(_) => libc::EINVAL,
                DsError::NoSpace => libc::ENOSPC,
                DsError::NameTooLong => libc::ENAMETOOLONG,
                DsError::TooBig => libc::EFBIG,
                DsError::Io(_) | DsError::Block(_) => libc::EIO,
            },
        }
    }

    /// Expected outcomes (a probe for a name that does not exist) are not worth a warning.
    pub fn is_expected(&self) -> bool {
        matches!(
            self,
            Error::NotFound(_)
                | Error::ReadOnly(_)
                | Error::NoAttribute
                | Error::AttributeRange
                | Error::NotADirectory
                | Error::IsADirectory
                | Error::NotASymlink
                | Error::NotSupported(_)
                | Error::NoIoctl
                | Error::CrossDevice
                | Error::NotPermitted(_)
                | Error::Dataset(
                    DsError::NotFound
                        | DsError::Exists
                        | DsError::NotEmpty
                        | DsError::NotADirectory
                        | DsError::IsADirectory
                        | DsError::Invalid(_)
                        | DsError::NameTooLong
                        | DsError::TooBig
                )
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
