//! UnixFS HAMT-sharded directories (`HAMTShard` nodes).
//!
//! A shard node carries a bitfield (the UnixFS `Data` bytes, a big-endian integer whose
//! bit *i* says bucket *i* is occupied), a `fanout` (power of two) and `hashType`
//! murmur3-x64-64 (0x22). Its links are the occupied buckets in ascending order; each
//! link name starts with the bucket index as uppercase hex, zero-padded to the width of
//! `fanout - 1` in hex. A name that is exactly the prefix points at a child shard; a
//! longer name is a directory entry whose real name follows the prefix.
//!
//! Names are placed by the murmur3 x64 128 hash (seed 0) of the name, keeping the first
//! 64-bit half as a big-endian byte string; at depth *d* the bucket index is the
//! `log2(fanout)` bits starting at bit `d * log2(fanout)`, most significant bit first.

use cid::Cid;

use crate::dagpb::PbLink;
use crate::mh;
use crate::unixfs::data::{UnixFsData, UnixFsError, UnixTime};

/// Smallest fanout accepted (boxo's bitfield works in whole bytes).
pub const MIN_FANOUT: u32 = 8;
/// Largest fanout accepted (Kubo's limit).
pub const MAX_FANOUT: u32 = 1024;

/// A decoded HAMT shard node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HamtNode {
    pub fanout: u32,
    /// Bitfield bytes as stored (big-endian integer, possibly shorter than `fanout / 8`).
    pub bitfield: Vec<u8>,
    /// Links in bucket order (ascending index).
    pub links: Vec<HamtLink>,
    pub mode: Option<u32>,
    pub mtime: Option<UnixTime>,
}

/// One link of a shard node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HamtLink {
    /// A child shard occupying bucket `index`.
    Shard { index: u32, cid: Cid },
    /// A directory entry occupying bucket `index`; `name` is the real entry name (prefix
    /// removed).
    Entry {
        index: u32,
        name: Vec<u8>,
        cid: Cid,
        tsize: Option<u64>,
    },
}

impl HamtLink {
    /// Bucket index of this link.
    pub fn index(&self) -> u32 {
        match self {
            HamtLink::Shard { index, .. } | HamtLink::Entry { index, .. } => *index,
        }
    }

    /// CID the link points to.
    pub fn cid(&self) -> &Cid {
        match self {
            HamtLink::Shard { cid, .. } | HamtLink::Entry { cid, .. } => cid,
        }
    }
}

/// Result of one lookup step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The name is an entry of this node.
    Found { cid: Cid, tsize: Option<u64> },
    /// Continue at the child shard `cid`, with `depth + 1`.
    Descend { cid: Cid },
    /// The name is not in the directory.
    NotFound,
}

/// Number of uppercase hex digits of `fanout - 1` (the link name prefix width).
pub fn prefix_width(fanout: u32) -> usize {
    let mut v = fanout.saturating_sub(1);
    let mut n = 1;
    while v >= 16 {
        v >>= 4;
        n += 1;
    }
    n
}

/// Bits of hash consumed per level.
pub fn bits_per_level(fanout: u32) -> u32 {
    fanout.trailing_zeros()
}

/// The 64-bit hash used for HAMT placement: murmur3 x64 128 (seed 0), first 64-bit half,
/// big-endian (what boxo and js-ipfs use).
pub fn hash_name(name: &[u8]) -> [u8; 8] {
    let mut r = name;
    let h = murmur3::murmur3_x64_128(&mut r, 0).unwrap_or(0);
    (h as u64).to_be_bytes()
}

/// The function placing names in the HAMT (murmur3 in production; tests force collisions).
pub(crate) type NameHash = fn(&[u8]) -> u64;

/// The HAMT name hash as an integer: [`hash_name`] read big-endian.
pub(crate) fn murmur_hash(name: &[u8]) -> u64 {
    u64::from_be_bytes(hash_name(name))
}

/// Bucket of a name with hash `hash` at `depth` in a HAMT of `2^bits` fanout, or `None`
/// when the hash has no `bits` bits left at that depth.
pub(crate) fn bucket_at(hash: u64, depth: u32, bits: u32) -> Option<u32> {
    let start = depth.checked_mul(bits)?;
    if bits == 0 || start.checked_add(bits)? > 64 {
        return None;
    }
    Some(((hash << start) >> (64 - bits)) as u32)
}

/// Bucket index of `name` at `depth` for a shard of `fanout`.
pub fn bucket_index(name: &[u8], depth: u32, fanout: u32) -> Result<u32, UnixFsError> {
    let bits = bits_per_level(fanout);
    let start = depth
        .checked_mul(bits)
        .filter(|s| s + bits <= 64)
        .ok_or(UnixFsError::HamtTooDeep(depth))?;
    let h = u64::from_be_bytes(hash_name(name));
    Ok(((h << start) >> (64 - bits)) as u32)
}

fn bit_set(bitfield: &[u8], i: u32) -> bool {
    let byte = (i / 8) as usize;
    if byte >= bitfield.len() {
        return false;
    }
    bitfield[bitfield.len() - 1 - byte] & (1 << (i % 8)) != 0
}

fn parse_hex_prefix(p: &[u8]) -> Option<u32> {
    let mut v: u32 = 0;
    for &c in p {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = v.checked_mul(16)?.checked_add(u32::from(d))?;
    }
    Some(v)
}

impl HamtNode {
    /// Build from a dag-pb node's links and its decoded UnixFS data (type HAMTShard),
    /// validating hash type, fanout, bitfield and every link prefix.
    pub fn from_parts(links: &[PbLink], d: &UnixFsData) -> Result<Self, UnixFsError> {
        let hash_type = d.hash_type.ok_or(UnixFsError::MissingField("hashType"))?;
        if hash_type != mh::MURMUR3_X64_64 {
            return Err(UnixFsError::HamtHashType(hash_type));
        }
        let fanout64 = d.fanout.ok_or(UnixFsError::MissingField("fanout"))?;
        if !(u64::from(MIN_FANOUT)..=u64::from(MAX_FANOUT)).contains(&fanout64)
            || !fanout64.is_power_of_two()
        {
            return Err(UnixFsError::HamtFanout(fanout64));
        }
        let fanout = fanout64 as u32;
        let bitfield = d.data.as_deref().unwrap_or_default();
        // tolerate leading zero bytes beyond fanout/8 (big-int encodings), nothing else
        let max = (fanout / 8) as usize;
        let significant = bitfield.iter().skip_while(|&&b| b == 0).count();
        if significant > max {
            return Err(UnixFsError::HamtBitfield {
                len: bitfield.len(),
                fanout,
            });
        }
        let bitfield = bitfield[bitfield.len() - significant..].to_vec();
        let bits: usize = bitfield.iter().map(|b| b.count_ones() as usize).sum();
        if bits != links.len() {
            return Err(UnixFsError::HamtLinkCount {
                bits,
                links: links.len(),
            });
        }
        let width = prefix_width(fanout);
        let mut out = Vec::with_capacity(links.len());
        let mut prev: Option<u32> = None;
        for (i, l) in links.iter().enumerate() {
            let name = l.name.as_deref().unwrap_or_default();
            let bad = || UnixFsError::HamtPrefix {
                link: i,
                name: String::from_utf8_lossy(&name[..name.len().min(64)]).into_owned(),
            };
            if name.len() < width {
                return Err(bad());
            }
            let index = parse_hex_prefix(&name[..width]).ok_or_else(bad)?;
            if index >= fanout || prev.is_some_and(|p| index <= p) || !bit_set(&bitfield, index) {
                return Err(UnixFsError::HamtIndex { link: i, index });
            }
            prev = Some(index);
            out.push(if name.len() == width {
                HamtLink::Shard { index, cid: l.cid }
            } else {
                HamtLink::Entry {
                    index,
                    name: name[width..].to_vec(),
                    cid: l.cid,
                    tsize: l.tsize,
                }
            });
        }
        Ok(HamtNode {
            fanout,
            bitfield,
            links: out,
            mode: d.mode,
            mtime: d.mtime,
        })
    }

    /// Whether bucket `index` is marked occupied in the bitfield.
    pub fn is_set(&self, index: u32) -> bool {
        bit_set(&self.bitfield, index)
    }

    /// Directory entries held directly by this node (child shards are skipped).
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &Cid, Option<u64>)> {
        self.links.iter().filter_map(|l| match l {
            HamtLink::Entry {
                name, cid, tsize, ..
            } => Some((name.as_slice(), cid, *tsize)),
            HamtLink::Shard { .. } => None,
        })
    }

    /// Child shards of this node.
    pub fn shards(&self) -> impl Iterator<Item = &Cid> {
        self.links.iter().filter_map(|l| match l {
            HamtLink::Shard { cid, .. } => Some(cid),
            HamtLink::Entry { .. } => None,
        })
    }
}

/// One lookup step at `depth` (0 for the root shard).
pub fn lookup_step(node: &HamtNode, name: &[u8], depth: u32) -> Result<Step, UnixFsError> {
    let index = bucket_index(name, depth, node.fanout)?;
    if !node.is_set(index) {
        return Ok(Step::NotFound);
    }
    let Ok(pos) = node.links.binary_search_by_key(&index, HamtLink::index) else {
        return Ok(Step::NotFound);
    };
    Ok(match &node.links[pos] {
        HamtLink::Shard { cid, .. } => Step::Descend { cid: *cid },
        HamtLink::Entry {
            name: n,
            cid,
            tsize,
            ..
        } if n.as_slice() == name => Step::Found {
            cid: *cid,
            tsize: *tsize,
        },
        HamtLink::Entry { .. } => Step::NotFound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unixfs::data::DataType;
    use bytes::Bytes;

    fn cid() -> Cid {
        crate::cids::parse("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n").unwrap()
    }

    #[test]
    fn widths() {
        assert_eq!(prefix_width(8), 1);
        assert_eq!(prefix_width(16), 1);
        assert_eq!(prefix_width(32), 2);
        assert_eq!(prefix_width(256), 2);
        assert_eq!(prefix_width(512), 3);
        assert_eq!(prefix_width(1024), 3);
    }

    #[test]
    fn murmur_known() {
        // murmur3 x64 128 of "" with seed 0 is all zeros.
        assert_eq!(hash_name(b""), [0; 8]);
        // Deterministic and distinct.
        assert_ne!(hash_name(b"a"), hash_name(b"b"));
    }

    fn shard(links: Vec<PbLink>, bitfield: Vec<u8>, fanout: u64) -> Result<HamtNode, UnixFsError> {
        let mut d = UnixFsData::new(DataType::HamtShard);
        d.hash_type = Some(0x22);
        d.fanout = Some(fanout);
        d.data = Some(Bytes::from(bitfield));
        HamtNode::from_parts(&links, &d)
    }

    #[test]
    fn build_and_lookup() {
        let name = b"hello.txt";
        let idx = bucket_index(name, 0, 256).unwrap();
        let mut bf = vec![0u8; 32];
        bf[31 - (idx / 8) as usize] |= 1 << (idx % 8);
        let lname = format!("{idx:02X}hello.txt").into_bytes();
        let node = shard(
            vec![PbLink {
                cid: cid(),
                name: Some(lname),
                tsize: Some(3),
            }],
            bf.clone(),
            256,
        )
        .unwrap();
        assert_eq!(
            lookup_step(&node, name, 0).unwrap(),
            Step::Found {
                cid: cid(),
                tsize: Some(3)
            }
        );
        // a name in a different bucket or same bucket different name
        let mut other = None;
        for i in 0..1000 {
            let n = format!("n{i}");
            if bucket_index(n.as_bytes(), 0, 256).unwrap() == idx {
                other = Some(n);
                break;
            }
        }
        if let Some(o) = other {
            assert_eq!(lookup_step(&node, o.as_bytes(), 0).unwrap(), Step::NotFound);
        }
        assert_eq!(
            lookup_step(&node, b"zzz-not-here", 0).unwrap_or(Step::NotFound),
            Step::NotFound
        );
        // shard link
        let node = shard(
            vec![PbLink {
                cid: cid(),
                name: Some(format!("{idx:02X}").into_bytes()),
                tsize: None,
            }],
            bf.clone(),
            256,
        )
        .unwrap();
        assert_eq!(
            lookup_step(&node, name, 0).unwrap(),
            Step::Descend { cid: cid() }
        );
        // lowercase prefix rejected
        let lname = format!("{idx:02x}hello.txt").into_bytes();
        let lower = shard(
            vec![PbLink {
                cid: cid(),
                name: Some(lname),
                tsize: None,
            }],
            bf.clone(),
            256,
        );
        if format!("{idx:02x}") != format!("{idx:02X}") {
            assert!(matches!(lower, Err(UnixFsError::HamtPrefix { .. })));
        }
        // bit not set
        assert!(matches!(
            shard(
                vec![PbLink {
                    cid: cid(),
                    name: Some(format!("{:02X}x", (idx + 1) % 256).into_bytes()),
                    tsize: None
                }],
                bf.clone(),
                256
            ),
            Err(UnixFsError::HamtIndex { .. })
        ));
        // count mismatch
        assert!(matches!(
            shard(vec![], bf, 256),
            Err(UnixFsError::HamtLinkCount { bits: 1, links: 0 })
        ));
        // too deep: 64 bits / 8 = 8 levels
        let node = shard(vec![], vec![], 256).unwrap();
        assert!(lookup_step(&node, name, 7).is_ok());
        assert_eq!(
            lookup_step(&node, name, 8),
            Err(UnixFsError::HamtTooDeep(8))
        );
        assert_eq!(
            lookup_step(&node, name, u32::MAX),
            Err(UnixFsError::HamtTooDeep(u32::MAX))
        );
    }

    #[test]
    fn params() {
        assert!(matches!(
            shard(vec![], vec![], 100),
            Err(UnixFsError::HamtFanout(100))
        ));
        assert!(matches!(
            shard(vec![], vec![], 2048),
            Err(UnixFsError::HamtFanout(2048))
        ));
        assert!(matches!(
            shard(vec![], vec![], 4),
            Err(UnixFsError::HamtFanout(4))
        ));
        assert!(matches!(
            shard(vec![], vec![1; 33], 256),
            Err(UnixFsError::HamtBitfield { .. })
        ));
        assert!(shard(vec![], vec![0; 40], 256).is_ok());
        let mut d = UnixFsData::new(DataType::HamtShard);
        d.hash_type = Some(0x12);
        d.fanout = Some(256);
        assert_eq!(
            HamtNode::from_parts(&[], &d).unwrap_err().to_string(),
            "hamt: unsupported hash type 0x12"
        );
    }
}
