//! Pure codecs for ipfs-mount: CIDs, dag-pb, UnixFS, HAMT shards, CAR streams and
//! dag-cbor/dag-json rendering.
//!
//! Modules layer without cycles: `pb`, `cids`, `dagpb` < `unixfs::data` < `hamt`, `docjson`
//! < `unixfs` < `car`, `builder` (with `filewriter`) < `dirtree`, `reader`.
//!
//! Everything here is a function over bytes: no I/O, no global state (the one async function,
//! [`reader::drive::run`], only awaits futures its caller supplies).
//! Malformed input is always reported as an error value (never a panic), and no
//! allocation is sized from an untrusted length before that length has been checked
//! against the input actually present.
//!
//! # Layout
//!
//! - [`codec`], [`mh`]: multicodec and multihash code constants.
//! - [`cids`]: parse CID strings, verify block bytes against a CID, compute CIDs,
//!   identity CIDs, block-store keys; [`VerifiedBlock`]: bytes hashed against their CID, the
//!   only form in which block sources hand blocks over.
//! - [`dagpb`]: strict dag-pb decoding and canonical encoding (`PBNode`/`PBLink`).
//! - [`unixfs::data`]: the UnixFS `Data` message (decode/encode, including mode and mtime)
//!   and [`unixfs::UnixFsError`]; [`unixfs`] itself: [`unixfs::decode_node`], which turns any
//!   block into a filesystem [`unixfs::Node`] (using [`hamt`] and [`docjson`]).
//! - [`hamt`]: UnixFS HAMT shard nodes, the murmur3 name hash, bucket placement and one-step
//!   lookup.
//! - [`builder`]: UnixFS import (files, directories, HAMTs) with Kubo's and Helia's CIDs;
//!   [`dirtree`]: one directory kept across changes, re-encoding only the changed shards
//!   (built on [`builder`], never the other way).
//! - [`reader`]: I/O-free UnixFS walks (file ranges, a file's leaves, directory/HAMT listings,
//!   path walks, whole-DAG walks) as state machines the caller feeds with blocks, with the safety checks
//!   (depth, sizes, safe names, each distinct block once) in one place; the [`reader::BlockGetter`]
//!   trait and sync/async drivers. The module itself does no I/O; its async driver only
//!   awaits the getter's futures.
//! - [`car`]: incremental CARv1/CARv2 reader and CARv1 writer helpers.
//! - [`docjson`]: render dag-cbor/dag-json/cbor/json blocks as dag-json text.

pub use cid;
pub use cid::Cid;
pub use verified::VerifiedBlock;

pub mod builder;
pub mod car;
pub mod cids;
pub mod dagpb;
pub mod dirtree;
pub mod docjson;
pub mod hamt;
mod pb;
pub mod reader;
pub mod unixfs;
pub mod verified;

/// Multicodec codes for block codecs.
pub mod codec {
    /// Raw bytes.
    pub const RAW: u64 = 0x55;
    /// dag-pb (UnixFS).
    pub const DAG_PB: u64 = 0x70;
    /// dag-cbor.
    pub const DAG_CBOR: u64 = 0x71;
    /// dag-json.
    pub const DAG_JSON: u64 = 0x0129;
    /// Plain CBOR.
    pub const CBOR: u64 = 0x51;
    /// Plain JSON.
    pub const JSON: u64 = 0x0200;
    /// libp2p public key (IPNS names).
    pub const LIBP2P_KEY: u64 = 0x72;
}

/// Multihash function codes.
pub mod mh {
    /// Identity: the digest is the data itself.
    pub const IDENTITY: u64 = 0x00;
    /// SHA2-256.
    pub const SHA2_256: u64 = 0x12;
    /// SHA2-512.
    pub const SHA2_512: u64 = 0x13;
    /// BLAKE3 (32-byte default output).
    pub const BLAKE3: u64 = 0x1e;
    /// murmur3-x64-64, the UnixFS HAMT hash function (not a CID hash).
    pub const MURMUR3_X64_64: u64 = 0x22;
}
