#![allow(dead_code)]

use std::path::{Path, PathBuf};

use cid::Cid;
use ipfs_mount_store::{DiskStore, StoreConfig};
use multihash::Multihash;
use sha2::{Digest, Sha256};

pub fn mh_of(data: &[u8]) -> Multihash<64> {
    Multihash::wrap(0x12, &Sha256::digest(data)).unwrap()
}

/// CIDv1 raw of `data`.
pub fn cid_of(data: &[u8]) -> Cid {
    Cid::new_v1(0x55, mh_of(data))
}

/// CIDv0 (dag-pb, sha2-256) of the same multihash.
pub fn cid_v0_of(data: &[u8]) -> Cid {
    Cid::new_v0(mh_of(data)).unwrap()
}

pub fn identity_cid(data: &[u8]) -> Cid {
    Cid::new_v1(0x55, Multihash::wrap(0x00, data).unwrap())
}

/// Deterministic content of block `i` with `len` bytes.
pub fn block(i: u64, len: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDEAD_BEEF;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    // Make every block distinct even when the generator state collides.
    if len >= 8 {
        v[..8].copy_from_slice(&i.to_le_bytes());
    }
    v
}

pub fn config(dir: &Path, cap: u64) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        cache_capacity: cap,
        sync_writes: false,
    }
}

pub fn open(dir: &Path, cap: u64) -> DiskStore {
    DiskStore::open(config(dir, cap)).unwrap()
}

/// Expected block file path, computed independently from the layout documentation.
pub fn expected_path(dir: &Path, cid: &Cid) -> PathBuf {
    let name = multibase::Base::Base32Upper.encode(cid.hash().to_bytes());
    let n = name.len();
    dir.join("blocks")
        .join(&name[n - 3..n - 1])
        .join(format!("{name}.data"))
}
