//! [`VerifiedBlock`]: bytes that were hashed against their CID.
//!
//! Every block source (gateway, bitswap, test fetchers) hands its blocks over as this type, so
//! "was it verified?" is answered by the compiler rather than by each source's word: the only
//! constructors hash, and the block service stores such blocks without hashing them again.

use bytes::Bytes;
use cid::Cid;

use crate::cids::{self, Prefix, VerifyError};

/// A block whose bytes hash to its CID. Fields are private: holding one is the proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBlock {
    cid: Cid,
    data: Bytes,
}

impl VerifiedBlock {
    /// Hash `data` and compare with the digest of `cid` ([`cids::verify`]).
    pub fn check(cid: Cid, data: Bytes) -> Result<Self, VerifyError> {
        cids::verify(&cid, &data)?;
        Ok(VerifiedBlock { cid, data })
    }

    /// Hash `data` into the CID `prefix` describes (bitswap sends no digest, only a prefix).
    /// The same digest rules as [`VerifiedBlock::check`]: a truncated or unsupported hash is
    /// refused. For identity the stated length is ignored, as go-cid does: the digest is the
    /// data.
    pub fn from_prefix(prefix: Prefix, data: Bytes) -> Result<Self, VerifyError> {
        let len = usize::try_from(prefix.digest_len).unwrap_or(usize::MAX);
        cids::check_digest(prefix.hash, len)?;
        let cid = cids::compute(prefix.version, prefix.codec, prefix.hash, &data)?;
        Ok(VerifiedBlock { cid, data })
    }

    /// Whether any bytes could pass [`VerifiedBlock::check`] for `cid` ([`cids::check_hash`]):
    /// lets a source refuse before asking the network.
    pub fn checkable(cid: &Cid) -> Result<(), VerifyError> {
        cids::check_hash(cid)
    }

    /// The same block under `cid` when it has the same multihash (another codec or CID
    /// version): the hash covers the multihash only, so nothing needs hashing again.
    /// `None` when the multihash differs.
    pub fn relabel(self, cid: Cid) -> Option<Self> {
        self.is_for(&cid).then_some(VerifiedBlock {
            cid,
            data: self.data,
        })
    }

    /// True when this block is the one `cid` names (same multihash).
    pub fn is_for(&self, cid: &Cid) -> bool {
        self.cid.hash() == cid.hash()
    }

    pub fn cid(&self) -> &Cid {
        &self.cid
    }

    pub fn data(&self) -> &Bytes {
        &self.data
    }

    pub fn into_parts(self) -> (Cid, Bytes) {
        (self.cid, self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{codec, mh};
    use cid::Version;
    use multihash::Multihash;

    fn data() -> Bytes {
        Bytes::from_static(b"a block of bytes")
    }

    #[test]
    fn good_blocks_pass() {
        for h in [mh::SHA2_256, mh::SHA2_512, mh::BLAKE3, mh::IDENTITY] {
            let cid = cids::compute(Version::V1, codec::RAW, h, &data()).unwrap();
            let b = VerifiedBlock::check(cid, data()).unwrap();
            assert_eq!((b.cid(), b.data()), (&cid, &data()));
            let from_prefix = VerifiedBlock::from_prefix(Prefix::of(&cid), data()).unwrap();
            assert_eq!(from_prefix, b);
            assert_eq!(b.into_parts(), (cid, data()));
        }
        let v0 = cids::compute(Version::V0, codec::DAG_PB, mh::SHA2_256, &data()).unwrap();
        assert_eq!(
            VerifiedBlock::from_prefix(Prefix::of(&v0), data())
                .unwrap()
                .cid(),
            &v0
        );
    }

    #[test]
    fn wrong_bytes_are_refused() {
        let cid = cids::compute(Version::V1, codec::RAW, mh::SHA2_256, &data()).unwrap();
        let wrong = Bytes::from_static(b"a block of bytez");
        assert_eq!(
            VerifiedBlock::check(cid, wrong.clone()),
            Err(VerifyError::Mismatch(cid))
        );
        // From a prefix, wrong bytes are simply another block, not the one wanted.
        let other = VerifiedBlock::from_prefix(Prefix::of(&cid), wrong).unwrap();
        assert!(!other.is_for(&cid));
    }

    #[test]
    fn unsupported_hash_is_refused() {
        let cid = Cid::new_v1(codec::RAW, Multihash::wrap(0x14, &[7; 64]).unwrap());
        let err = VerifyError::UnsupportedHash(0x14);
        assert_eq!(VerifiedBlock::check(cid, data()), Err(err.clone()));
        assert_eq!(VerifiedBlock::checkable(&cid), Err(err.clone()));
        assert_eq!(
            VerifiedBlock::from_prefix(Prefix::of(&cid), data()),
            Err(err)
        );
    }

    #[test]
    fn truncated_digest_is_refused_by_both_constructors() {
        let full = cids::compute(Version::V1, codec::RAW, mh::SHA2_256, &data()).unwrap();
        // The right bytes, and a CID whose digest is their hash cut to 20 bytes.
        let short = Multihash::wrap(mh::SHA2_256, &full.hash().digest()[..20]).unwrap();
        let cid = Cid::new_v1(codec::RAW, short);
        let expected = VerifyError::BadDigestLength {
            code: mh::SHA2_256,
            len: 20,
            expected: 32,
        };
        assert_eq!(VerifiedBlock::check(cid, data()), Err(expected.clone()));
        assert_eq!(VerifiedBlock::checkable(&cid), Err(expected.clone()));
        assert_eq!(
            VerifiedBlock::from_prefix(Prefix::of(&cid), data()),
            Err(expected)
        );
        // Longer than the hash, or absurd, is no better.
        for len in [33, 0, u64::MAX] {
            let p = Prefix {
                digest_len: len,
                ..Prefix::of(&full)
            };
            assert!(matches!(
                VerifiedBlock::from_prefix(p, data()),
                Err(VerifyError::BadDigestLength { .. })
            ));
        }
    }

    #[test]
    fn relabel_keeps_the_multihash() {
        let raw = cids::compute(Version::V1, codec::RAW, mh::SHA2_256, &data()).unwrap();
        let pb = Cid::new_v1(codec::DAG_PB, *raw.hash());
        let b = VerifiedBlock::check(raw, data()).unwrap();
        assert!(b.is_for(&pb));
        assert_eq!(b.clone().relabel(pb).unwrap().cid(), &pb);
        let other = cids::compute(Version::V1, codec::RAW, mh::SHA2_256, b"other").unwrap();
        assert_eq!(b.relabel(other), None);
    }
}
