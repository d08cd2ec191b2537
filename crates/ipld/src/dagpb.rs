//! dag-pb: strict decoding and canonical encoding of `PBNode` / `PBLink`.
//!
//! Wire form (ipld/specs dag-pb): `PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }`
//! and `PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }`.
//! Links are encoded before Data; link fields in the order Hash, Name, Tsize. The decoder
//! accepts exactly that form: no unknown fields, no duplicates, no out-of-order fields,
//! every link must carry a Hash that is one valid CID.

use bytes::Bytes;
use cid::Cid;

use crate::pb::{self, PbErr, Reader, WIRE_LEN, WIRE_VARINT};

/// One link of a dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbLink {
    pub cid: Cid,
    /// Link name; `Some(vec![])` (present but empty) is distinct from `None` on the wire.
    pub name: Option<Vec<u8>>,
    pub tsize: Option<u64>,
}

/// A dag-pb node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PbNode {
    pub links: Vec<PbLink>,
    pub data: Option<Bytes>,
}

/// Why a block is not valid dag-pb.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DagPbError {
    #[error("dag-pb: {0} in PBNode")]
    Wire(String),
    #[error("dag-pb: unexpected field {field} (wire type {wire}) in PBNode")]
    UnexpectedField { field: u64, wire: u8 },
    #[error("dag-pb: Links (field 2) after Data (field 1)")]
    LinksAfterData,
    #[error("dag-pb: duplicate Data field")]
    DuplicateData,
    #[error("dag-pb: link {link}: {reason}")]
    Link { link: usize, reason: String },
    #[error("dag-pb: link {0} has no Hash")]
    MissingHash(usize),
    #[error("dag-pb: link {link} has an invalid Hash: {reason}")]
    InvalidHash { link: usize, reason: String },
}

fn wire(e: PbErr) -> DagPbError {
    DagPbError::Wire(e.to_string())
}

/// Decode a dag-pb block strictly. `Data` bytes are copied; see [`decode_shared`] to
/// borrow them from a [`Bytes`] instead.
pub fn decode(block: &[u8]) -> Result<PbNode, DagPbError> {
    decode_with(block, Bytes::copy_from_slice)
}

/// Like [`decode`], but `Data` is a zero-copy slice of `block`.
pub fn decode_shared(block: &Bytes) -> Result<PbNode, DagPbError> {
    decode_with(block, |s| block.slice_ref(s))
}

fn decode_with<'a>(
    block: &'a [u8],
    mut make: impl FnMut(&'a [u8]) -> Bytes,
) -> Result<PbNode, DagPbError> {
    let mut r = Reader::new(block);
    let mut node = PbNode::default();
    while !r.is_empty() {
        let (field, wt) = r.key().map_err(wire)?;
        match (field, wt) {
            (2, WIRE_LEN) => {
                if node.data.is_some() {
                    return Err(DagPbError::LinksAfterData);
                }
                let b = r.bytes().map_err(wire)?;
                let link = decode_link(b, node.links.len())?;
                node.links.push(link);
            }
            (1, WIRE_LEN) => {
                if node.data.is_some() {
                    return Err(DagPbError::DuplicateData);
                }
                let b = r.bytes().map_err(wire)?;
                node.data = Some(make(b));
            }
            (field, wire) => return Err(DagPbError::UnexpectedField { field, wire }),
        }
    }
    Ok(node)
}

fn decode_link(b: &[u8], link: usize) -> Result<PbLink, DagPbError> {
    let err = |reason: String| DagPbError::Link { link, reason };
    let mut r = Reader::new(b);
    let mut last_field = 0u64;
    let mut cid = None;
    let mut name = None;
    let mut tsize = None;
    while !r.is_empty() {
        let (field, wt) = r.key().map_err(|e| err(e.to_string()))?;
        if field <= last_field {
            return Err(err(if field == last_field {
                format!("duplicate field {field}")
            } else {
                format!("field {field} after field {last_field}")
            }));
        }
        last_field = field;
        match (field, wt) {
            (1, WIRE_LEN) => {
                let h = r.bytes().map_err(|e| err(e.to_string()))?;
                let c = crate::cids::from_bytes(h).map_err(|e| DagPbError::InvalidHash {
                    link,
                    reason: e.to_string(),
                })?;
                cid = Some(c);
            }
            (2, WIRE_LEN) => {
                if cid.is_none() {
                    return Err(DagPbError::MissingHash(link));
                }
                name = Some(r.bytes().map_err(|e| err(e.to_string()))?.to_vec());
            }
            (3, WIRE_VARINT) => {
                if cid.is_none() {
                    return Err(DagPbError::MissingHash(link));
                }
                tsize = Some(r.varint().map_err(|e| err(e.to_string()))?);
            }
            (f, w) => return Err(err(format!("unexpected field {f} (wire type {w})"))),
        }
    }
    let cid = cid.ok_or(DagPbError::MissingHash(link))?;
    Ok(PbLink { cid, name, tsize })
}

/// Encode a node in canonical dag-pb form (Links before Data; link fields Hash, Name,
/// Tsize; absent optional fields omitted, present-but-empty ones written). Links are
/// written in the given order: callers that build UnixFS directories sort them by name
/// bytes first, as Kubo does ([`sort_links`]).
pub fn encode(node: &PbNode) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(node));
    let mut link_buf = Vec::new();
    for l in &node.links {
        link_buf.clear();
        encode_link(l, &mut link_buf);
        pb::put_bytes_field(&mut out, 2, &link_buf);
    }
    if let Some(d) = &node.data {
        pb::put_bytes_field(&mut out, 1, d);
    }
    out
}

fn encode_link(l: &PbLink, out: &mut Vec<u8>) {
    let hash = l.cid.to_bytes();
    pb::put_bytes_field(out, 1, &hash);
    if let Some(n) = &l.name {
        pb::put_bytes_field(out, 2, n);
    }
    if let Some(t) = l.tsize {
        pb::put_varint_field(out, 3, t);
    }
}

fn link_len(l: &PbLink) -> usize {
    let h = l.cid.encoded_len();
    let mut n = 1 + pb::varint_len(h as u64) + h;
    if let Some(name) = &l.name {
        n += 1 + pb::varint_len(name.len() as u64) + name.len();
    }
    if let Some(t) = l.tsize {
        n += 1 + pb::varint_len(t);
    }
    n
}

/// Exact length of [`encode`]'s output.
pub fn encoded_len(node: &PbNode) -> usize {
    let mut n = 0;
    for l in &node.links {
        let ll = link_len(l);
        n += 1 + pb::varint_len(ll as u64) + ll;
    }
    if let Some(d) = &node.data {
        n += 1 + pb::varint_len(d.len() as u64) + d.len();
    }
    n
}

/// Sort links the way the dag-pb spec orders them: by name bytes (absent names sort as
/// empty), stable for equal names.
pub fn sort_links(links: &mut [PbLink]) {
    links.sort_by(|a, b| {
        a.name
            .as_deref()
            .unwrap_or_default()
            .cmp(b.name.as_deref().unwrap_or_default())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cids;

    fn cid() -> Cid {
        cids::parse("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n").unwrap()
    }

    #[test]
    fn empty_node() {
        let n = decode(&[]).unwrap();
        assert_eq!(n, PbNode::default());
        assert_eq!(encode(&n), Vec::<u8>::new());
        // CID of the empty dag-pb node, a well-known constant
        let c = cids::compute(
            cid::Version::V0,
            crate::codec::DAG_PB,
            crate::mh::SHA2_256,
            &[],
        )
        .unwrap();
        assert_eq!(
            c.to_string(),
            "QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n"
        );
    }

    #[test]
    fn empty_unixfs_dir_cid() {
        // PBNode{Data: UnixFS{Type: Directory}} => the well-known empty directory CID
        let n = PbNode {
            links: vec![],
            data: Some(Bytes::from_static(&[0x08, 0x01])),
        };
        let b = encode(&n);
        assert_eq!(b, vec![0x0a, 0x02, 0x08, 0x01]);
        let c = cids::compute(
            cid::Version::V0,
            crate::codec::DAG_PB,
            crate::mh::SHA2_256,
            &b,
        )
        .unwrap();
        assert_eq!(
            c.to_string(),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
        );
    }

    #[test]
    fn roundtrip_links() {
        let n = PbNode {
            links: vec![
                PbLink {
                    cid: cid(),
                    name: Some(b"a".to_vec()),
                    tsize: Some(5),
                },
                PbLink {
                    cid: cid(),
                    name: Some(vec![]),
                    tsize: None,
                },
                PbLink {
                    cid: cid(),
                    name: None,
                    tsize: Some(0),
                },
            ],
            data: Some(Bytes::from_static(b"xyz")),
        };
        let b = encode(&n);
        assert_eq!(b.len(), encoded_len(&n));
        assert_eq!(decode(&b).unwrap(), n);
        assert_eq!(decode_shared(&Bytes::from(b)).unwrap(), n);
    }

    #[test]
    fn strictness() {
        let n = PbNode {
            links: vec![PbLink {
                cid: cid(),
                name: Some(b"a".to_vec()),
                tsize: Some(5),
            }],
            data: Some(Bytes::from_static(b"x")),
        };
        let good = encode(&n);
        // Data before Links
        let mut bad = vec![0x0a, 0x01, b'x'];
        bad.extend_from_slice(&good[..good.len() - 3]);
        assert_eq!(decode(&bad), Err(DagPbError::LinksAfterData));
        // duplicate Data
        let mut bad = good.clone();
        bad.extend_from_slice(&[0x0a, 0x00]);
        assert_eq!(decode(&bad), Err(DagPbError::DuplicateData));
        // unknown field
        assert!(matches!(
            decode(&[0x18, 0x01]),
            Err(DagPbError::UnexpectedField { field: 3, wire: 0 })
        ));
        // wrong wire type for Data
        assert!(matches!(
            decode(&[0x08, 0x01]),
            Err(DagPbError::UnexpectedField { field: 1, wire: 0 })
        ));
        // link without Hash
        assert_eq!(
            decode(&[0x12, 0x02, 0x18, 0x01]),
            Err(DagPbError::MissingHash(0))
        );
        assert_eq!(decode(&[0x12, 0x00]), Err(DagPbError::MissingHash(0)));
        assert_eq!(
            decode(&[0x12, 0x00, 0x12, 0x00]).unwrap_err().to_string(),
            "dag-pb: link 0 has no Hash"
        );
        // Name before Hash
        let h = cid().to_bytes();
        let mut link = vec![0x12, 0x00, 0x0a, h.len() as u8];
        link.extend_from_slice(&h);
        let mut bad = vec![0x12, link.len() as u8];
        bad.extend_from_slice(&link);
        assert!(matches!(decode(&bad), Err(DagPbError::MissingHash(0))));
        // invalid hash bytes
        assert!(matches!(
            decode(&[0x12, 0x03, 0x0a, 0x01, 0x00]),
            Err(DagPbError::InvalidHash { link: 0, .. })
        ));
        // truncated
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(DagPbError::Wire(_))
        ));
    }

    #[test]
    fn sort() {
        let mut v = vec![
            PbLink {
                cid: cid(),
                name: Some(b"b".to_vec()),
                tsize: None,
            },
            PbLink {
                cid: cid(),
                name: Some(b"a".to_vec()),
                tsize: None,
            },
            PbLink {
                cid: cid(),
                name: None,
                tsize: None,
            },
        ];
        sort_links(&mut v);
        assert_eq!(v[0].name, None);
        assert_eq!(v[1].name.as_deref(), Some(&b"a"[..]));
    }
}
