//! The UnixFS `Data` protobuf message carried in dag-pb nodes: decoding (strict: wire types,
//! duplicates, required fields, mode and mtime ranges) and canonical encoding, and
//! [`UnixFsError`], the error of every UnixFS and HAMT decode. It knows nothing of nodes,
//! shards or documents, so [`crate::hamt`] and [`crate::docjson`] can build on it while
//! [`super`] builds on them.

use bytes::Bytes;

use crate::dagpb::DagPbError;
use crate::pb::{self, PbErr, Reader, WIRE_FIXED32, WIRE_LEN, WIRE_VARINT};

/// UnixFS node type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Raw,
    Directory,
    File,
    Metadata,
    Symlink,
    HamtShard,
}

impl DataType {
    /// Protobuf enum value.
    pub fn code(self) -> u64 {
        match self {
            DataType::Raw => 0,
            DataType::Directory => 1,
            DataType::File => 2,
            DataType::Metadata => 3,
            DataType::Symlink => 4,
            DataType::HamtShard => 5,
        }
    }

    /// From the protobuf enum value.
    pub fn from_code(c: u64) -> Option<Self> {
        Some(match c {
            0 => DataType::Raw,
            1 => DataType::Directory,
            2 => DataType::File,
            3 => DataType::Metadata,
            4 => DataType::Symlink,
            5 => DataType::HamtShard,
            _ => return None,
        })
    }
}

/// Modification time: seconds relative to the Unix epoch and optional nanoseconds
/// (`1..=999_999_999` when present; 0 is tolerated on decode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UnixTime {
    pub secs: i64,
    pub nanos: Option<u32>,
}

/// The decoded UnixFS `Data` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixFsData {
    pub data_type: DataType,
    pub data: Option<Bytes>,
    pub filesize: Option<u64>,
    pub blocksizes: Vec<u64>,
    pub hash_type: Option<u64>,
    pub fanout: Option<u64>,
    pub mode: Option<u32>,
    pub mtime: Option<UnixTime>,
}

impl UnixFsData {
    /// A message of the given type with every optional field absent.
    pub fn new(data_type: DataType) -> Self {
        UnixFsData {
            data_type,
            data: None,
            filesize: None,
            blocksizes: Vec::new(),
            hash_type: None,
            fanout: None,
            mode: None,
            mtime: None,
        }
    }
}

/// Why a block could not be interpreted as UnixFS (or as a filesystem node at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnixFsError {
    #[error(transparent)]
    DagPb(#[from] DagPbError),
    #[error("unixfs: {what}: {err}")]
    Wire { what: &'static str, err: String },
    #[error("unixfs: field {field} has wire type {wire}")]
    WireType { field: u64, wire: u8 },
    #[error("unixfs: duplicate field {0}")]
    DuplicateField(u64),
    #[error("unixfs: missing required field {0}")]
    MissingField(&'static str),
    #[error("unixfs: unknown data type {0}")]
    UnknownType(u64),
    #[error("unixfs: mode 0x{0:x} does not fit in 32 bits")]
    ModeOverflow(u64),
    #[error("unixfs: mtime: {0}")]
    Mtime(String),
    #[error("unixfs: mtime nanoseconds {0} out of range")]
    BadNanos(u32),
    #[error("unixfs: dag-pb node has no Data field")]
    NoData,
    #[error("unixfs: blocksizes ({blocksizes}) != links ({links})")]
    BlocksizesMismatch { blocksizes: usize, links: usize },
    #[error("unixfs: filesize {filesize} != data + blocksizes ({computed})")]
    FilesizeMismatch { filesize: u64, computed: u64 },
    #[error("unixfs: file size overflows 64 bits")]
    SizeOverflow,
    #[error("unixfs: {0:?} nodes are not supported")]
    UnsupportedType(DataType),
    #[error("unixfs: unsupported codec 0x{0:x}")]
    UnsupportedCodec(u64),
    #[error("unixfs: {0:?} node must not have links")]
    UnexpectedLinks(DataType),
    #[error("hamt: unsupported hash type 0x{0:x}")]
    HamtHashType(u64),
    #[error("hamt: invalid fanout {0} (must be a power of two in 8..=1024)")]
    HamtFanout(u64),
    #[error("hamt: bitfield of {len} bytes too long for fanout {fanout}")]
    HamtBitfield { len: usize, fanout: u32 },
    #[error("hamt: link {link} has an invalid name prefix {name:?}")]
    HamtPrefix { link: usize, name: String },
    #[error("hamt: link {link} index {index} is out of order or not set in the bitfield")]
    HamtIndex { link: usize, index: u32 },
    #[error("hamt: bitfield has {bits} bits set but the node has {links} links")]
    HamtLinkCount { bits: usize, links: usize },
    #[error("hamt: shard depth {0} exceeds the 64-bit hash")]
    HamtTooDeep(u32),
    #[error("document: {0}")]
    Document(String),
}

fn wire(what: &'static str) -> impl Fn(PbErr) -> UnixFsError {
    move |e| UnixFsError::Wire {
        what,
        err: e.to_string(),
    }
}

/// Decode a UnixFS `Data` message (the `Data` field of a dag-pb node). Copies `Data`
/// bytes; see [`decode_data_shared`].
pub fn decode_data(bytes: &[u8]) -> Result<UnixFsData, UnixFsError> {
    decode_data_with(bytes, Bytes::copy_from_slice)
}

/// Like [`decode_data`], with the `Data` field a zero-copy slice of `bytes`.
pub fn decode_data_shared(bytes: &Bytes) -> Result<UnixFsData, UnixFsError> {
    decode_data_with(bytes, |s| bytes.slice_ref(s))
}

fn decode_data_with<'a>(
    bytes: &'a [u8],
    mut make: impl FnMut(&'a [u8]) -> Bytes,
) -> Result<UnixFsData, UnixFsError> {
    let mut r = Reader::new(bytes);
    let mut data_type = None;
    let mut d = UnixFsData::new(DataType::Raw);
    let mut seen = 0u16;
    while !r.is_empty() {
        let (field, wt) = r.key().map_err(wire("Data message"))?;
        if (1..=8).contains(&field) && field != 4 {
            let bit = 1u16 << field;
            if seen & bit != 0 {
                return Err(UnixFsError::DuplicateField(field));
            }
            seen |= bit;
        }
        let expect = |w: u8| {
            if wt == w {
                Ok(())
            } else {
                Err(UnixFsError::WireType { field, wire: wt })
            }
        };
        match field {
            1 => {
                expect(WIRE_VARINT)?;
                let t = r.varint().map_err(wire("Type"))?;
                data_type = Some(DataType::from_code(t).ok_or(UnixFsError::UnknownType(t))?);
            }
            2 => {
                expect(WIRE_LEN)?;
                d.data = Some(make(r.bytes().map_err(wire("Data"))?));
            }
            3 => {
                expect(WIRE_VARINT)?;
                d.filesize = Some(r.varint().map_err(wire("filesize"))?);
            }
            4 => match wt {
                WIRE_VARINT => d.blocksizes.push(r.varint().map_err(wire("blocksizes"))?),
                WIRE_LEN => {
                    // packed encoding, accepted for robustness
                    let packed = r.bytes().map_err(wire("blocksizes"))?;
                    let mut pr = Reader::new(packed);
                    while !pr.is_empty() {
                        d.blocksizes.push(pr.varint().map_err(wire("blocksizes"))?);
                    }
                }
                _ => return Err(UnixFsError::WireType { field, wire: wt }),
            },
            5 => {
                expect(WIRE_VARINT)?;
                d.hash_type = Some(r.varint().map_err(wire("hashType"))?);
            }
            6 => {
                expect(WIRE_VARINT)?;
                d.fanout = Some(r.varint().map_err(wire("fanout"))?);
            }
            7 => {
                expect(WIRE_VARINT)?;
                let m = r.varint().map_err(wire("mode"))?;
                d.mode = Some(u32::try_from(m).map_err(|_| UnixFsError::ModeOverflow(m))?);
            }
            8 => {
                expect(WIRE_LEN)?;
                d.mtime = Some(decode_time(r.bytes().map_err(wire("mtime"))?)?);
            }
            _ => r.skip(wt).map_err(wire("unknown field"))?,
        }
    }
    d.data_type = data_type.ok_or(UnixFsError::MissingField("Type"))?;
    Ok(d)
}

fn decode_time(b: &[u8]) -> Result<UnixTime, UnixFsError> {
    let mut r = Reader::new(b);
    let mut secs = None;
    let mut nanos = None;
    while !r.is_empty() {
        let (field, wt) = r.key().map_err(wire("mtime"))?;
        match (field, wt) {
            (1, WIRE_VARINT) => {
                if secs.is_some() {
                    return Err(UnixFsError::Mtime("duplicate Seconds".into()));
                }
                secs = Some(r.varint().map_err(wire("mtime Seconds"))? as i64);
            }
            (2, WIRE_FIXED32) => {
                if nanos.is_some() {
                    return Err(UnixFsError::Mtime("duplicate FractionalNanoseconds".into()));
                }
                let n = r.fixed32().map_err(wire("mtime FractionalNanoseconds"))?;
                if n > 999_999_999 {
                    return Err(UnixFsError::BadNanos(n));
                }
                nanos = Some(n);
            }
            (1 | 2, w) => {
                return Err(UnixFsError::Mtime(format!(
                    "field {field} has wire type {w}"
                )))
            }
            _ => r.skip(wt).map_err(wire("mtime"))?,
        }
    }
    Ok(UnixTime {
        secs: secs.ok_or(UnixFsError::MissingField("mtime Seconds"))?,
        nanos,
    })
}

/// Encode a UnixFS `Data` message, fields in field-number order, blocksizes unpacked:
/// byte-identical to go-unixfs / js-unixfs for the same fields.
pub fn encode_data(d: &UnixFsData) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + d.data.as_ref().map_or(0, |b| b.len()) + d.blocksizes.len() * 5);
    pb::put_varint_field(&mut out, 1, d.data_type.code());
    if let Some(b) = &d.data {
        pb::put_bytes_field(&mut out, 2, b);
    }
    if let Some(s) = d.filesize {
        pb::put_varint_field(&mut out, 3, s);
    }
    for &b in &d.blocksizes {
        pb::put_varint_field(&mut out, 4, b);
    }
    if let Some(h) = d.hash_type {
        pb::put_varint_field(&mut out, 5, h);
    }
    if let Some(f) = d.fanout {
        pb::put_varint_field(&mut out, 6, f);
    }
    if let Some(m) = d.mode {
        pb::put_varint_field(&mut out, 7, u64::from(m));
    }
    if let Some(t) = d.mtime {
        let mut tb = Vec::with_capacity(16);
        pb::put_varint_field(&mut tb, 1, t.secs as u64);
        if let Some(n) = t.nanos {
            pb::put_key(&mut tb, 2, WIRE_FIXED32);
            tb.extend_from_slice(&n.to_le_bytes());
        }
        pb::put_bytes_field(&mut out, 8, &tb);
    }
    out
}
