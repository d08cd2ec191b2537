//! The single place where this crate touches `ipfs-mount-ipld`.
//!
//! TEMPORARY: `ipfs-mount-ipld` is being written in parallel. Until its `car` and `cids` modules
//! land, this file holds a minimal stand-in with the same API (CARv1 streaming decoder, header and
//! section encoders, hash verification). When the real crate is ready, replace the body of this
//! file by:
//!
//! ```ignore
//! pub(crate) use ipfs_mount_ipld::car::{CarDecoder, CarError};
//! pub(crate) use ipfs_mount_ipld::cids::verify;
//! #[cfg(any(test, feature = "mock"))]
//! pub(crate) use ipfs_mount_ipld::car::{encode_header_v1, encode_section};
//! ```
#![allow(dead_code)]

use bytes::Bytes;
use cid::Cid;

/// Largest CAR section accepted by the stand-in decoder (a block plus its CID).
const MAX_SECTION: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CarError {
    #[error("varint: {0}")]
    Varint(&'static str),
    #[error("section of {0} bytes exceeds the limit")]
    TooLarge(u64),
    #[error("bad CID in section: {0}")]
    Cid(String),
    #[error("truncated CAR stream ({0} bytes left over)")]
    Truncated(usize),
    #[error("missing CAR header")]
    NoHeader,
}

#[derive(Debug, thiserror::Error)]
#[error("hash mismatch or unsupported hash: {0}")]
pub struct VerifyError(String);

#[derive(Default)]
pub struct CarDecoder {
    buf: Vec<u8>,
    pos: usize,
    header_seen: bool,
}

fn read_varint(b: &[u8]) -> Result<Option<(u64, usize)>, CarError> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate() {
        if i >= 9 {
            return Err(CarError::Varint("too long"));
        }
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((v, i + 1)));
        }
    }
    Ok(None)
}

impl CarDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Returns the next complete section's payload, or None when more bytes are needed.
    fn next_section(&mut self) -> Result<Option<&[u8]>, CarError> {
        let rest = &self.buf[self.pos..];
        let Some((len, n)) = read_varint(rest)? else {
            return Ok(None);
        };
        if len > MAX_SECTION {
            return Err(CarError::TooLarge(len));
        }
        let len = len as usize;
        if rest.len() < n + len {
            return Ok(None);
        }
        let start = self.pos + n;
        self.pos = start + len;
        Ok(Some(&self.buf[start..start + len]))
    }

    pub fn next_block(&mut self) -> Result<Option<(Cid, Bytes)>, CarError> {
        if !self.header_seen {
            if self.next_section()?.is_none() {
                return Ok(None);
            }
            self.header_seen = true;
        }
        let Some(section) = self.next_section()? else {
            return Ok(None);
        };
        let mut cursor = std::io::Cursor::new(section);
        let cid = Cid::read_bytes(&mut cursor).map_err(|e| CarError::Cid(e.to_string()))?;
        let data = Bytes::copy_from_slice(&section[cursor.position() as usize..]);
        Ok(Some((cid, data)))
    }

    pub fn finish(&self) -> Result<(), CarError> {
        if !self.header_seen {
            return Err(CarError::NoHeader);
        }
        let left = self.buf.len() - self.pos;
        if left != 0 {
            return Err(CarError::Truncated(left));
        }
        Ok(())
    }
}

fn uvarint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn encode_header_v1(roots: &[Cid]) -> Vec<u8> {
    // dag-cbor {"roots": [tag42(0x00 ++ cid)...], "version": 1}
    let mut h = vec![0xa2, 0x65];
    h.extend_from_slice(b"roots");
    assert!(roots.len() < 24);
    h.push(0x80 + roots.len() as u8);
    for r in roots {
        let b = r.to_bytes();
        h.extend_from_slice(&[0xd8, 0x2a, 0x58, (b.len() + 1) as u8, 0x00]);
        h.extend_from_slice(&b);
    }
    h.push(0x67);
    h.extend_from_slice(b"version");
    h.push(0x01);
    let mut out = Vec::new();
    uvarint(h.len() as u64, &mut out);
    out.extend_from_slice(&h);
    out
}

pub fn encode_section(cid: &Cid, data: &[u8]) -> Vec<u8> {
    let c = cid.to_bytes();
    let mut out = Vec::new();
    uvarint((c.len() + data.len()) as u64, &mut out);
    out.extend_from_slice(&c);
    out.extend_from_slice(data);
    out
}

pub fn verify(cid: &Cid, data: &[u8]) -> Result<(), VerifyError> {
    use multihash_codetable::{Code, MultihashDigest};
    let mh = cid.hash();
    let code = Code::try_from(mh.code()).map_err(|e| VerifyError(e.to_string()))?;
    let got = code.digest(data);
    if got.digest() == mh.digest() {
        Ok(())
    } else {
        Err(VerifyError(format!("digest mismatch for {cid}")))
    }
}
