//! The single place where this crate touches `ipfs-mount-ipld`.

pub(crate) use ipfs_mount_ipld::car::CarDecoder;
pub(crate) use ipfs_mount_ipld::cids::{identity_data, VerifyError};
pub use ipfs_mount_ipld::VerifiedBlock;
