//! CID helpers: parsing, verification, computation, identity CIDs and store keys.

use cid::{Cid, Version};
use multihash::Multihash;
use sha2::Digest as _;

use crate::{codec, mh};

/// Longest CID string accepted by [`parse`].
pub const MAX_CID_STR_LEN: usize = 512;

/// Why a CID string or CID bytes could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidError {
    #[error("cid: empty string")]
    Empty,
    #[error("cid: string too long ({0} > {MAX_CID_STR_LEN} chars)")]
    TooLong(usize),
    #[error("cid: invalid character in {0:?}")]
    InvalidChar(String),
    #[error("cid: invalid multibase encoding: {0}")]
    Multibase(String),
    #[error("cid: CIDv0 must be a 46-char base58btc string starting with \"Qm\"")]
    BadV0,
    #[error("cid: CIDv0 bytes inside a multibase string are not allowed")]
    MultibaseV0,
    #[error("cid: invalid CID bytes: {0}")]
    Bytes(String),
    #[error("cid: {0} trailing bytes after the CID")]
    TrailingBytes(usize),
}

/// Why a block failed verification or a CID could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("verify: unsupported multihash function 0x{0:x}")]
    UnsupportedHash(u64),
    #[error("verify: multihash 0x{code:x} has a {len}-byte digest, expected {expected}")]
    BadDigestLength {
        code: u64,
        len: usize,
        expected: usize,
    },
    #[error("verify: block does not match its CID {0}")]
    Mismatch(Cid),
    #[error("verify: CIDv0 requires dag-pb and sha2-256 (got codec 0x{codec:x}, hash 0x{hash:x})")]
    InvalidV0 { codec: u64, hash: u64 },
    #[error("verify: identity digest of {0} bytes exceeds the 64-byte multihash limit")]
    IdentityTooLong(usize),
}

/// Parse a CID string: CIDv0 (base58btc `Qm…`, 46 chars) or CIDv1 in any multibase.
pub fn parse(s: &str) -> Result<Cid, CidError> {
    if s.is_empty() {
        return Err(CidError::Empty);
    }
    if s.len() > MAX_CID_STR_LEN {
        return Err(CidError::TooLong(s.len()));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CidError::InvalidChar(s.chars().take(64).collect()));
    }
    if s.len() == 46 && s.starts_with("Qm") {
        let bytes = multibase::Base::Base58Btc
            .decode(s)
            .map_err(|e| CidError::Multibase(e.to_string()))?;
        if bytes.len() != 34 || bytes[0] != 0x12 || bytes[1] != 0x20 {
            return Err(CidError::BadV0);
        }
        return from_bytes(&bytes);
    }
    if s.starts_with("Qm") || s.starts_with('1') {
        return Err(CidError::BadV0);
    }
    let (_, bytes) = multibase::decode(s).map_err(|e| CidError::Multibase(e.to_string()))?;
    let cid = from_bytes(&bytes)?;
    if cid.version() == Version::V0 {
        return Err(CidError::MultibaseV0);
    }
    Ok(cid)
}

/// Parse CID bytes that must be exactly one CID (no trailing bytes).
pub fn from_bytes(bytes: &[u8]) -> Result<Cid, CidError> {
    let (cid, used) = read_prefix(bytes)?;
    if used != bytes.len() {
        return Err(CidError::TrailingBytes(bytes.len() - used));
    }
    Ok(cid)
}

/// Parse one CID from the start of `bytes`, returning it and the number of bytes used.
pub fn read_prefix(bytes: &[u8]) -> Result<(Cid, usize), CidError> {
    let mut cur = std::io::Cursor::new(bytes);
    let cid = Cid::read_bytes(&mut cur).map_err(|e| CidError::Bytes(e.to_string()))?;
    Ok((cid, cur.position() as usize))
}

/// Hash `data` with the CID's multihash function and compare with its digest.
/// Supported: identity (digest must equal data), sha2-256, sha2-512 and blake3 (full-length
/// digests only, see [`check_hash`]); anything else is [`VerifyError::UnsupportedHash`].
pub fn verify(cid: &Cid, data: &[u8]) -> Result<(), VerifyError> {
    check_hash(cid)?;
    let hash = cid.hash();
    let digest = hash.digest();
    let ok = match hash.code() {
        mh::IDENTITY => digest == data,
        mh::SHA2_256 => sha2::Sha256::digest(data).as_slice() == digest,
        mh::SHA2_512 => sha2::Sha512::digest(data).as_slice() == digest,
        mh::BLAKE3 => blake3::hash(data).as_bytes() == digest,
        other => return Err(VerifyError::UnsupportedHash(other)),
    };
    if ok {
        Ok(())
    } else {
        Err(VerifyError::Mismatch(*cid))
    }
}

/// Whether any bytes could be verified against `cid`: a supported hash function with a
/// full-length digest. Truncated digests are refused, so that every source judges a CID alike.
pub fn check_hash(cid: &Cid) -> Result<(), VerifyError> {
    check_digest(cid.hash().code(), usize::from(cid.hash().size()))
}

/// [`check_hash`] for a multihash code and digest length (identity: any length).
pub fn check_digest(code: u64, len: usize) -> Result<(), VerifyError> {
    let expected = match code {
        mh::IDENTITY => return Ok(()),
        mh::SHA2_256 | mh::BLAKE3 => 32,
        mh::SHA2_512 => 64,
        other => return Err(VerifyError::UnsupportedHash(other)),
    };
    if len == expected {
        Ok(())
    } else {
        Err(VerifyError::BadDigestLength {
            code,
            len,
            expected,
        })
    }
}

/// A CID without its digest: what bitswap sends along with a block, so that the receiver
/// computes the CID from the bytes instead of trusting one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    pub version: Version,
    pub codec: u64,
    /// Multihash function code.
    pub hash: u64,
    pub digest_len: u64,
}

impl Prefix {
    pub fn of(cid: &Cid) -> Prefix {
        Prefix {
            version: cid.version(),
            codec: cid.codec(),
            hash: cid.hash().code(),
            digest_len: u64::from(cid.hash().size()),
        }
    }
}

/// For identity CIDs, the inline data; `None` otherwise.
pub fn identity_data(cid: &Cid) -> Option<&[u8]> {
    if cid.hash().code() == mh::IDENTITY {
        Some(cid.hash().digest())
    } else {
        None
    }
}

/// Build the CID of `data`: version 0 (only dag-pb + sha2-256) or 1, with `codec` and
/// multihash `hash` (sha2-256, sha2-512, blake3, or identity for data of at most 64 bytes).
pub fn compute(version: Version, codec: u64, hash: u64, data: &[u8]) -> Result<Cid, VerifyError> {
    if version == Version::V0 && (codec != codec::DAG_PB || hash != mh::SHA2_256) {
        return Err(VerifyError::InvalidV0 { codec, hash });
    }
    let mh = match hash {
        mh::SHA2_256 => wrap(hash, sha2::Sha256::digest(data).as_slice())?,
        mh::SHA2_512 => wrap(hash, sha2::Sha512::digest(data).as_slice())?,
        mh::BLAKE3 => wrap(hash, blake3::hash(data).as_bytes())?,
        mh::IDENTITY => {
            if data.len() > 64 {
                return Err(VerifyError::IdentityTooLong(data.len()));
            }
            wrap(hash, data)?
        }
        other => return Err(VerifyError::UnsupportedHash(other)),
    };
    match version {
        Version::V0 => Cid::new_v0(mh).map_err(|_| VerifyError::InvalidV0 { codec, hash }),
        Version::V1 => Ok(Cid::new_v1(codec, mh)),
    }
}

fn wrap(code: u64, digest: &[u8]) -> Result<Multihash<64>, VerifyError> {
    Multihash::wrap(code, digest).map_err(|_| VerifyError::IdentityTooLong(digest.len()))
}

/// Bytes of the multihash: the key a block store uses (CIDv0 and CIDv1 of the same
/// bytes share it, whatever the codec).
pub fn multihash_key(cid: &Cid) -> Vec<u8> {
    cid.hash().to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V0: &str = "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n";

    #[test]
    fn parse_v0_and_v1_bases() {
        let c0 = parse(V0).unwrap();
        assert_eq!(c0.version(), Version::V0);
        assert_eq!(c0.to_string(), V0);
        let c1 = Cid::new_v1(codec::DAG_PB, *c0.hash());
        for base in [
            multibase::Base::Base32Lower,
            multibase::Base::Base58Btc,
            multibase::Base::Base36Lower,
            multibase::Base::Base16Lower,
            multibase::Base::Base64,
            multibase::Base::Base32Upper,
        ] {
            let s = c1.to_string_of_base(base).unwrap();
            assert_eq!(parse(&s).unwrap(), c1, "{s}");
        }
        assert_eq!(multihash_key(&c0), multihash_key(&c1));
    }

    #[test]
    fn parse_rejects() {
        assert_eq!(parse(""), Err(CidError::Empty));
        assert!(matches!(
            parse(&"b".repeat(600)),
            Err(CidError::TooLong(600))
        ));
        assert!(parse("Qmfoo").is_err());
        assert!(parse(" bafy").is_err());
        assert!(parse("bafy!").is_err());
        assert!(parse("x1234").is_err());
        assert!(parse("é").is_err());
        // multibase-wrapped CIDv0 bytes
        let c0 = parse(V0).unwrap();
        let wrapped = multibase::encode(multibase::Base::Base32Lower, c0.to_bytes());
        assert_eq!(parse(&wrapped), Err(CidError::MultibaseV0));
        // trailing bytes
        let mut b = Cid::new_v1(codec::RAW, *c0.hash()).to_bytes();
        b.push(0);
        let s = multibase::encode(multibase::Base::Base32Lower, b);
        assert!(matches!(parse(&s), Err(CidError::TrailingBytes(1))));
        // v0 that decodes but is not sha2-256/32
        let s = multibase::Base::Base58Btc.encode([0x12u8; 34]);
        assert!(parse(&s).is_err());
    }

    #[test]
    fn verify_and_compute() {
        let data = b"hello world";
        for h in [mh::SHA2_256, mh::SHA2_512, mh::BLAKE3, mh::IDENTITY] {
            let c = compute(Version::V1, codec::RAW, h, data).unwrap();
            verify(&c, data).unwrap();
            assert!(matches!(
                verify(&c, b"hello worle"),
                Err(VerifyError::Mismatch(_))
            ));
        }
        let c = compute(Version::V1, codec::RAW, mh::SHA2_256, data).unwrap();
        assert_eq!(
            c.to_string(),
            "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
        );
        let b = compute(Version::V1, codec::RAW, mh::BLAKE3, data).unwrap();
        assert_eq!(
            hex(b.hash().digest()),
            "d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24"
        );
        assert!(matches!(
            compute(Version::V0, codec::RAW, mh::SHA2_256, data),
            Err(VerifyError::InvalidV0 { .. })
        ));
        assert!(matches!(
            compute(Version::V1, codec::RAW, 0x14, data),
            Err(VerifyError::UnsupportedHash(0x14))
        ));
        let id = compute(Version::V1, codec::RAW, mh::IDENTITY, data).unwrap();
        assert_eq!(identity_data(&id), Some(&data[..]));
        assert_eq!(identity_data(&c), None);
        assert!(compute(Version::V1, codec::RAW, mh::IDENTITY, &[0; 65]).is_err());
        let odd = Cid::new_v1(codec::RAW, Multihash::wrap(0x14, &[0; 64]).unwrap());
        assert_eq!(verify(&odd, data), Err(VerifyError::UnsupportedHash(0x14)));
        let short = Cid::new_v1(codec::RAW, Multihash::wrap(mh::SHA2_256, &[0; 20]).unwrap());
        assert!(matches!(
            verify(&short, data),
            Err(VerifyError::BadDigestLength { .. })
        ));
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
