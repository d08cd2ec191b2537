//! UnixFS: the interpretation of any block as a filesystem [`Node`], over the `Data`
//! protobuf message carried in dag-pb nodes ([`data`], re-exported here).
//!
//! ```text
//! message Data {
//!   enum DataType { Raw = 0; Directory = 1; File = 2; Metadata = 3; Symlink = 4; HAMTShard = 5; }
//!   required DataType Type = 1;  optional bytes Data = 2;  optional uint64 filesize = 3;
//!   repeated uint64 blocksizes = 4;  optional uint64 hashType = 5;  optional uint64 fanout = 6;
//!   optional uint32 mode = 7;  optional UnixTime mtime = 8;
//! }
//! message UnixTime { required int64 Seconds = 1; optional fixed32 FractionalNanoseconds = 2; }
//! ```

use bytes::Bytes;
use cid::Cid;

use crate::dagpb::{self, PbNode};
use crate::hamt::HamtNode;
use crate::{codec, docjson};

pub mod data;
pub use data::{
    decode_data, decode_data_shared, encode_data, DataType, UnixFsData, UnixFsError, UnixTime,
};

/// A block interpreted for the filesystem (dispatch on the CID codec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A file: raw block (codec raw) or UnixFS File/Raw node. `inline` = data bytes held
    /// in this node (they come first), then `children` in order, each with the number of
    /// file bytes it holds (from blocksizes). `size` = inline.len() + sum(children sizes),
    /// checked against `filesize` when present.
    File(FileNode),
    /// Plain UnixFS directory: entries in link order.
    Directory(DirNode),
    /// HAMT-sharded directory node (see [`crate::hamt`]).
    HamtShard(HamtNode),
    /// Symbolic link.
    Symlink(SymlinkNode),
    /// dag-cbor/dag-json/cbor/json block, shown as a file whose content is dag-json text.
    Document(DocumentNode),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNode {
    pub inline: Bytes,
    pub children: Vec<(Cid, u64)>,
    pub size: u64,
    pub mode: Option<u32>,
    pub mtime: Option<UnixTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Link name (empty when the link had none); check with [`is_safe_name`] before use.
    pub name: Vec<u8>,
    pub cid: Cid,
    pub tsize: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirNode {
    pub entries: Vec<DirEntry>,
    pub mode: Option<u32>,
    pub mtime: Option<UnixTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymlinkNode {
    pub target: Vec<u8>,
    pub mode: Option<u32>,
    pub mtime: Option<UnixTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentNode {
    /// dag-json text.
    pub json: Bytes,
}

/// Interpret `block` (whose CID is `cid`; for identity CIDs pass the inline data) as a
/// filesystem node. Does not verify the hash. Copies inline bytes; see
/// [`decode_node_shared`] for zero-copy.
pub fn decode_node(cid: &Cid, block: &[u8]) -> Result<Node, UnixFsError> {
    match cid.codec() {
        codec::RAW => Ok(raw_file(Bytes::copy_from_slice(block))),
        codec::DAG_PB => from_pb(dagpb::decode(block)?),
        _ => decode_other(cid, block),
    }
}

/// Like [`decode_node`], with `inline` data sharing `block`'s buffer.
pub fn decode_node_shared(cid: &Cid, block: &Bytes) -> Result<Node, UnixFsError> {
    match cid.codec() {
        codec::RAW => Ok(raw_file(block.clone())),
        codec::DAG_PB => from_pb(dagpb::decode_shared(block)?),
        _ => decode_other(cid, block),
    }
}

fn raw_file(b: Bytes) -> Node {
    Node::File(FileNode {
        size: b.len() as u64,
        inline: b,
        children: Vec::new(),
        mode: None,
        mtime: None,
    })
}

fn decode_other(cid: &Cid, block: &[u8]) -> Result<Node, UnixFsError> {
    match cid.codec() {
        codec::DAG_CBOR | codec::DAG_JSON | codec::CBOR | codec::JSON => {
            let json = docjson::render(cid, block)?;
            Ok(Node::Document(DocumentNode {
                json: Bytes::from(json),
            }))
        }
        other => Err(UnixFsError::UnsupportedCodec(other)),
    }
}

/// Interpret an already-decoded dag-pb node as UnixFS.
pub fn from_pb(node: PbNode) -> Result<Node, UnixFsError> {
    let raw = node.data.as_ref().ok_or(UnixFsError::NoData)?;
    let d = decode_data_shared(raw)?;
    match d.data_type {
        DataType::File | DataType::Raw => {
            if d.blocksizes.len() != node.links.len() {
                return Err(UnixFsError::BlocksizesMismatch {
                    blocksizes: d.blocksizes.len(),
                    links: node.links.len(),
                });
            }
            let inline = d.data.unwrap_or_default();
            let mut size = inline.len() as u64;
            let mut children = Vec::with_capacity(node.links.len());
            for (l, &bs) in node.links.iter().zip(&d.blocksizes) {
                size = size.checked_add(bs).ok_or(UnixFsError::SizeOverflow)?;
                children.push((l.cid, bs));
            }
            if let Some(fs) = d.filesize {
                if fs != size {
                    return Err(UnixFsError::FilesizeMismatch {
                        filesize: fs,
                        computed: size,
                    });
                }
            }
            Ok(Node::File(FileNode {
                inline,
                children,
                size,
                mode: d.mode,
                mtime: d.mtime,
            }))
        }
        DataType::Directory => {
            let entries = node
                .links
                .into_iter()
                .map(|l| DirEntry {
                    name: l.name.unwrap_or_default(),
                    cid: l.cid,
                    tsize: l.tsize,
                })
                .collect();
            Ok(Node::Directory(DirNode {
                entries,
                mode: d.mode,
                mtime: d.mtime,
            }))
        }
        DataType::Symlink => {
            if !node.links.is_empty() {
                return Err(UnixFsError::UnexpectedLinks(DataType::Symlink));
            }
            Ok(Node::Symlink(SymlinkNode {
                target: d.data.map(|b| b.to_vec()).unwrap_or_default(),
                mode: d.mode,
                mtime: d.mtime,
            }))
        }
        DataType::HamtShard => Ok(Node::HamtShard(HamtNode::from_parts(&node.links, &d)?)),
        DataType::Metadata => Err(UnixFsError::UnsupportedType(DataType::Metadata)),
    }
}

/// True when a directory entry name is safe to expose: non-empty, not `.` or `..`,
/// no `/`, no NUL.
pub fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.iter().any(|&b| b == b'/' || b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dagpb::PbLink;

    fn cid() -> Cid {
        crate::cids::parse("QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n").unwrap()
    }

    fn pbcid() -> Cid {
        Cid::new_v0(*cid().hash()).unwrap()
    }

    #[test]
    fn data_roundtrip_known_bytes() {
        let mut d = UnixFsData::new(DataType::File);
        d.filesize = Some(300);
        d.blocksizes = vec![256, 44];
        let b = encode_data(&d);
        assert_eq!(
            b,
            vec![0x08, 0x02, 0x18, 0xac, 0x02, 0x20, 0x80, 0x02, 0x20, 0x2c]
        );
        assert_eq!(decode_data(&b).unwrap(), d);
        let mut t = UnixFsData::new(DataType::Directory);
        t.mode = Some(0o755);
        t.mtime = Some(UnixTime {
            secs: -1,
            nanos: Some(5),
        });
        let b = encode_data(&t);
        assert_eq!(decode_data(&b).unwrap(), t);
    }

    #[test]
    fn data_errors() {
        assert_eq!(decode_data(&[]), Err(UnixFsError::MissingField("Type")));
        assert_eq!(decode_data(&[0x08, 0x09]), Err(UnixFsError::UnknownType(9)));
        assert_eq!(
            decode_data(&[0x08, 0x01, 0x08, 0x01]),
            Err(UnixFsError::DuplicateField(1))
        );
        assert!(matches!(
            decode_data(&[0x0a, 0x00]),
            Err(UnixFsError::WireType { field: 1, wire: 2 })
        ));
        assert!(matches!(
            decode_data(&[0x08, 0x02, 0x12, 0x05]),
            Err(UnixFsError::Wire { .. })
        ));
        // mode > u32
        assert!(matches!(
            decode_data(&[0x08, 0x02, 0x38, 0x80, 0x80, 0x80, 0x80, 0x10]),
            Err(UnixFsError::ModeOverflow(_))
        ));
        // bad nanos
        let mut d = UnixFsData::new(DataType::File);
        d.mtime = Some(UnixTime {
            secs: 1,
            nanos: Some(1_000_000_000),
        });
        assert_eq!(
            decode_data(&encode_data(&d)),
            Err(UnixFsError::BadNanos(1_000_000_000))
        );
        // unknown field skipped
        assert!(decode_data(&[0x08, 0x02, 0x48, 0x01]).is_ok());
        // packed blocksizes accepted
        assert_eq!(
            decode_data(&[0x08, 0x02, 0x22, 0x02, 0x01, 0x02])
                .unwrap()
                .blocksizes,
            vec![1, 2]
        );
    }

    fn pb_with(d: &UnixFsData, links: Vec<PbLink>) -> Vec<u8> {
        dagpb::encode(&PbNode {
            links,
            data: Some(Bytes::from(encode_data(d))),
        })
    }

    #[test]
    fn file_nodes() {
        let mut d = UnixFsData::new(DataType::File);
        d.data = Some(Bytes::from_static(b"abc"));
        d.blocksizes = vec![10, 20];
        d.filesize = Some(33);
        let links = vec![
            PbLink {
                cid: cid(),
                name: Some(vec![]),
                tsize: Some(12),
            },
            PbLink {
                cid: cid(),
                name: Some(vec![]),
                tsize: Some(22),
            },
        ];
        let b = pb_with(&d, links.clone());
        match decode_node(&pbcid(), &b).unwrap() {
            Node::File(f) => {
                assert_eq!(f.size, 33);
                assert_eq!(&f.inline[..], b"abc");
                assert_eq!(f.children, vec![(cid(), 10), (cid(), 20)]);
            }
            n => panic!("{n:?}"),
        }
        d.filesize = Some(34);
        let e = decode_node(&pbcid(), &pb_with(&d, links.clone())).unwrap_err();
        assert_eq!(
            e,
            UnixFsError::FilesizeMismatch {
                filesize: 34,
                computed: 33
            }
        );
        d.filesize = None;
        d.blocksizes = vec![1, 2, 3];
        let e = decode_node(&pbcid(), &pb_with(&d, links)).unwrap_err();
        assert_eq!(e.to_string(), "unixfs: blocksizes (3) != links (2)");
        // raw codec
        let raw = Cid::new_v1(codec::RAW, *cid().hash());
        match decode_node_shared(&raw, &Bytes::from_static(b"hello")).unwrap() {
            Node::File(f) => assert_eq!(f.size, 5),
            n => panic!("{n:?}"),
        }
        // overflow
        let mut d = UnixFsData::new(DataType::File);
        d.blocksizes = vec![u64::MAX, 1];
        let links = vec![
            PbLink {
                cid: cid(),
                name: None,
                tsize: None,
            },
            PbLink {
                cid: cid(),
                name: None,
                tsize: None,
            },
        ];
        assert_eq!(
            decode_node(&pbcid(), &pb_with(&d, links)),
            Err(UnixFsError::SizeOverflow)
        );
    }

    #[test]
    fn dir_symlink_other() {
        let mut d = UnixFsData::new(DataType::Directory);
        d.mode = Some(0o700);
        let b = pb_with(
            &d,
            vec![PbLink {
                cid: cid(),
                name: Some(b"x".to_vec()),
                tsize: Some(1),
            }],
        );
        match decode_node(&pbcid(), &b).unwrap() {
            Node::Directory(dir) => {
                assert_eq!(dir.mode, Some(0o700));
                assert_eq!(dir.entries[0].name, b"x");
            }
            n => panic!("{n:?}"),
        }
        let mut s = UnixFsData::new(DataType::Symlink);
        s.data = Some(Bytes::from_static(b"../a"));
        match decode_node(&pbcid(), &pb_with(&s, vec![])).unwrap() {
            Node::Symlink(l) => assert_eq!(l.target, b"../a"),
            n => panic!("{n:?}"),
        }
        let m = UnixFsData::new(DataType::Metadata);
        assert!(matches!(
            decode_node(&pbcid(), &pb_with(&m, vec![])),
            Err(UnixFsError::UnsupportedType(_))
        ));
        assert_eq!(decode_node(&pbcid(), &[]), Err(UnixFsError::NoData));
        let other = Cid::new_v1(0x300, *cid().hash());
        assert_eq!(
            decode_node(&other, &[]),
            Err(UnixFsError::UnsupportedCodec(0x300))
        );
        let dj = Cid::new_v1(codec::DAG_JSON, *cid().hash());
        match decode_node(&dj, br#"{"a":1}"#).unwrap() {
            Node::Document(doc) => assert_eq!(&doc.json[..], br#"{"a":1}"#),
            n => panic!("{n:?}"),
        }
    }

    #[test]
    fn safe_names() {
        assert!(is_safe_name(b"a"));
        assert!(is_safe_name(b"..."));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            assert!(!is_safe_name(bad));
        }
    }
}
