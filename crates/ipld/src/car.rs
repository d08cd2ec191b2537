//! CAR (Content Addressable aRchive) streams: an incremental CARv1/CARv2 reader and
//! CARv1 writer helpers.
//!
//! CARv1: `varint(len) dag-cbor{roots, version: 1}` then sections
//! `varint(len) CID bytes`. CARv2: the 11-byte pragma (a v1-style header
//! `{version: 2}`), a 40-byte header (16 bytes characteristics, then little-endian u64
//! data offset, data size, index offset), and a complete CARv1 payload at the data
//! offset. The reader stops at the end of the v2 data payload and ignores the index.

use bytes::{Bytes, BytesMut};
use cid::Cid;
use ipld_core::ipld::Ipld;

use crate::pb::{self, PbErr};

/// Largest header or section accepted: 4 MiB of block plus slack for the CID and
/// framing. Larger lengths are rejected before anything is buffered for them.
pub const MAX_SECTION_LEN: u64 = 4 * 1024 * 1024 + 4096;

/// The CARv2 pragma: the v1-style header `{"version": 2}` with its length prefix.
pub const CARV2_PRAGMA: [u8; 11] = [
    0x0a, 0xa1, 0x67, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x02,
];
const V2_HEADER_LEN: usize = 40;

/// A CAR header. For CARv2 streams `version` is 2 and `roots` come from the inner
/// CARv1 header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarHeader {
    pub version: u64,
    pub roots: Vec<Cid>,
}

/// Why a CAR stream is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarError {
    #[error("car: invalid length varint at offset {0}")]
    Varint(u64),
    #[error("car: header of {0} bytes is too large")]
    HeaderTooLarge(u64),
    #[error("car: section of {len} bytes at offset {offset} is too large")]
    SectionTooLarge { len: u64, offset: u64 },
    #[error("car: zero-length {0} at offset {1}")]
    Empty(&'static str, u64),
    #[error("car: invalid header: {0}")]
    InvalidHeader(String),
    #[error("car: unsupported version {0}")]
    UnsupportedVersion(u64),
    #[error("car: invalid CARv2 header: {0}")]
    InvalidV2Header(String),
    #[error("car: section at offset {offset} has an invalid CID: {reason}")]
    InvalidCid { offset: u64, reason: String },
    #[error("car: section at offset {offset} extends past the CARv2 data payload")]
    PastPayload { offset: u64 },
    #[error("car: stream ended before the header was complete")]
    NoHeader,
    #[error("car: stream truncated inside {what} at offset {offset}")]
    Truncated { what: &'static str, offset: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the outer header (v1 header or v2 pragma).
    Header,
    /// Reading the 40-byte v2 header.
    V2Header,
    /// Discarding bytes up to the v2 data offset.
    Skip,
    /// Reading the inner CARv1 header of a v2 file.
    InnerHeader,
    /// Reading sections.
    Sections,
    /// v2 payload fully read; everything else is ignored.
    Done,
}

/// Incremental CAR reader. Feed bytes with [`push`](Self::push) as they arrive and pull
/// blocks with [`next_block`](Self::next_block); call [`finish`](Self::finish) at end
/// of input. Hashes are not verified (use [`crate::cids::verify`]).
#[derive(Debug)]
pub struct CarDecoder {
    buf: BytesMut,
    /// Absolute stream offset of `buf[0]`.
    offset: u64,
    state: State,
    header: Option<CarHeader>,
    /// Absolute [start, end) of the v2 data payload.
    payload: Option<(u64, u64)>,
    max_section: u64,
}

impl Default for CarDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl CarDecoder {
    pub fn new() -> Self {
        CarDecoder {
            buf: BytesMut::new(),
            offset: 0,
            state: State::Header,
            header: None,
            payload: None,
            max_section: MAX_SECTION_LEN,
        }
    }

    /// Use a different header/section size limit (bytes).
    pub fn with_max_section(mut self, max: u64) -> Self {
        self.max_section = max;
        self
    }

    /// Append input bytes.
    pub fn push(&mut self, data: &[u8]) {
        let mut data = data;
        match self.state {
            State::Done => return,
            State::Skip if self.buf.is_empty() => {
                if let Some((start, _)) = self.payload {
                    let skip = (start - self.offset).min(data.len() as u64) as usize;
                    self.offset += skip as u64;
                    data = &data[skip..];
                }
            }
            _ => {}
        }
        self.buf.extend_from_slice(data);
    }

    /// The header, once it has been read (for CARv2, once the inner v1 header is read).
    pub fn header(&self) -> Option<&CarHeader> {
        if matches!(self.state, State::Sections | State::Done) {
            self.header.as_ref()
        } else {
            None
        }
    }

    /// True once a CARv2 payload has been read entirely (CARv1 has no end marker).
    pub fn is_complete(&self) -> bool {
        self.state == State::Done
    }

    /// Absolute number of input bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.offset
    }

    fn consume(&mut self, n: usize) -> Bytes {
        self.offset += n as u64;
        self.buf.split_to(n).freeze()
    }

    /// Reads a length varint at the start of the buffer: Ok(None) if incomplete.
    fn length(&self) -> Result<Option<(u64, usize)>, CarError> {
        match pb::read_varint(&self.buf) {
            Ok(v) => Ok(Some(v)),
            Err(PbErr::Truncated) => Ok(None),
            Err(_) => Err(CarError::Varint(self.offset)),
        }
    }

    fn check_payload(&self, end: u64) -> Result<(), CarError> {
        match self.payload {
            Some((_, pend)) if end > pend => Err(CarError::PastPayload {
                offset: self.offset,
            }),
            _ => Ok(()),
        }
    }

    /// Reads a length-prefixed header frame; Ok(None) if more input is needed.
    fn header_frame(&mut self) -> Result<Option<Bytes>, CarError> {
        let Some((len, n)) = self.length()? else {
            return Ok(None);
        };
        if len > self.max_section {
            return Err(CarError::HeaderTooLarge(len));
        }
        if len == 0 {
            return Err(CarError::Empty("header", self.offset));
        }
        self.check_payload(self.offset + n as u64 + len)?;
        if (self.buf.len() as u64) < n as u64 + len {
            return Ok(None);
        }
        self.consume(n);
        Ok(Some(self.consume(len as usize)))
    }

    /// Next complete block, or `Ok(None)` if more input is needed (or a CARv2 payload
    /// has ended).
    pub fn next_block(&mut self) -> Result<Option<(Cid, Bytes)>, CarError> {
        loop {
            match self.state {
                State::Header => {
                    let start = self.offset;
                    let Some(h) = self.header_frame()? else {
                        return Ok(None);
                    };
                    let (version, roots) = parse_header(&h)?;
                    match version {
                        1 => {
                            self.header = Some(CarHeader {
                                version: 1,
                                roots: roots.unwrap_or_default(),
                            });
                            self.state = State::Sections;
                        }
                        2 if start == 0 && h[..] == CARV2_PRAGMA[1..] => {
                            self.state = State::V2Header
                        }
                        2 => return Err(CarError::InvalidHeader("malformed CARv2 pragma".into())),
                        v => return Err(CarError::UnsupportedVersion(v)),
                    }
                }
                State::V2Header => {
                    if self.buf.len() < V2_HEADER_LEN {
                        return Ok(None);
                    }
                    let h = self.consume(V2_HEADER_LEN);
                    let le = |i: usize| {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&h[i..i + 8]);
                        u64::from_le_bytes(b)
                    };
                    let (data_offset, data_size) = (le(16), le(24));
                    if data_offset < self.offset {
                        return Err(CarError::InvalidV2Header(format!(
                            "data offset {data_offset} overlaps the header"
                        )));
                    }
                    let end = data_offset.checked_add(data_size).ok_or_else(|| {
                        CarError::InvalidV2Header("data offset + size overflows".into())
                    })?;
                    self.payload = Some((data_offset, end));
                    self.state = State::Skip;
                }
                State::Skip => {
                    let (start, _) = self.payload.unwrap_or((self.offset, self.offset));
                    let skip = (start - self.offset).min(self.buf.len() as u64) as usize;
                    self.consume(skip);
                    if self.offset < start {
                        return Ok(None);
                    }
                    self.state = State::InnerHeader;
                }
                State::InnerHeader => {
                    let Some(h) = self.header_frame()? else {
                        return Ok(None);
                    };
                    let (version, roots) = parse_header(&h)?;
                    if version != 1 {
                        return Err(CarError::InvalidV2Header(format!(
                            "inner CAR has version {version}"
                        )));
                    }
                    self.header = Some(CarHeader {
                        version: 2,
                        roots: roots.unwrap_or_default(),
                    });
                    self.state = State::Sections;
                }
                State::Sections => {
                    if let Some((_, end)) = self.payload {
                        if self.offset >= end {
                            self.state = State::Done;
                            self.buf = BytesMut::new();
                            return Ok(None);
                        }
                    }
                    let Some((len, n)) = self.length()? else {
                        return Ok(None);
                    };
                    let at = self.offset;
                    if len == 0 {
                        return Err(CarError::Empty("section", at));
                    }
                    if len > self.max_section {
                        return Err(CarError::SectionTooLarge { len, offset: at });
                    }
                    self.check_payload(at + n as u64 + len)?;
                    if (self.buf.len() as u64) < n as u64 + len {
                        return Ok(None);
                    }
                    let (cid, used) = crate::cids::read_prefix(&self.buf[n..n + len as usize])
                        .map_err(|e| CarError::InvalidCid {
                            offset: at,
                            reason: e.to_string(),
                        })?;
                    self.consume(n + used);
                    let data = self.consume(len as usize - used);
                    return Ok(Some((cid, data)));
                }
                State::Done => return Ok(None),
            }
        }
    }

    /// Call at end of input (after draining [`next_block`](Self::next_block)): error if
    /// no header was read or a partial header/section remains (a truncated stream).
    pub fn finish(&self) -> Result<(), CarError> {
        match self.state {
            State::Done => Ok(()),
            State::Sections => {
                if let Some((_, end)) = self.payload {
                    // complete only if everything up to the payload end is buffered
                    if self.offset + (self.buf.len() as u64) < end {
                        return Err(CarError::Truncated {
                            what: "CARv2 payload",
                            offset: self.offset + self.buf.len() as u64,
                        });
                    }
                }
                // every buffered byte must belong to complete sections
                let mut rest = &self.buf[..];
                let mut at = self.offset;
                if let Some((_, end)) = self.payload {
                    rest = &rest[..(end - self.offset).min(rest.len() as u64) as usize];
                }
                while !rest.is_empty() {
                    match pb::read_varint(rest) {
                        Ok((len, n)) if (rest.len() - n) as u64 >= len => {
                            rest = &rest[n + len as usize..];
                            at += (n as u64) + len;
                        }
                        _ => {
                            return Err(CarError::Truncated {
                                what: "section",
                                offset: at,
                            })
                        }
                    }
                }
                Ok(())
            }
            _ if self.header.is_none() && self.offset == 0 && self.buf.is_empty() => {
                Err(CarError::NoHeader)
            }
            State::Header | State::InnerHeader => Err(CarError::NoHeader),
            State::V2Header | State::Skip => Err(CarError::Truncated {
                what: "CARv2 header",
                offset: self.offset + self.buf.len() as u64,
            }),
        }
    }
}

/// Parses a dag-cbor CAR header map into (version, roots).
fn parse_header(h: &[u8]) -> Result<(u64, Option<Vec<Cid>>), CarError> {
    let ipld = crate::docjson::decode_cbor(h).map_err(CarError::InvalidHeader)?;
    let Ipld::Map(map) = ipld else {
        return Err(CarError::InvalidHeader("not a map".into()));
    };
    let version = match map.get("version") {
        Some(Ipld::Integer(v)) => u64::try_from(*v).map_err(|_| CarError::UnsupportedVersion(0))?,
        Some(_) => return Err(CarError::InvalidHeader("version is not an integer".into())),
        None => return Err(CarError::InvalidHeader("missing version".into())),
    };
    let roots = match map.get("roots") {
        None => None,
        Some(Ipld::List(l)) => Some(
            l.iter()
                .map(|r| match r {
                    Ipld::Link(c) => Ok(*c),
                    _ => Err(CarError::InvalidHeader("root is not a CID".into())),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(CarError::InvalidHeader("roots is not a list".into())),
    };
    if version == 1 && roots.is_none() {
        return Err(CarError::InvalidHeader("missing roots".into()));
    }
    Ok((version, roots))
}

fn cbor_head(out: &mut Vec<u8>, major: u8, v: u64) {
    let m = major << 5;
    if v < 24 {
        out.push(m | v as u8);
    } else if v <= 0xff {
        out.extend_from_slice(&[m | 24, v as u8]);
    } else if v <= 0xffff {
        out.push(m | 25);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        out.push(m | 26);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Encode a length-prefixed CARv1 header `{"roots": [...], "version": 1}` in canonical
/// dag-cbor, as go-car and js-car write it.
pub fn encode_header_v1(roots: &[Cid]) -> Vec<u8> {
    let mut body = Vec::with_capacity(24 + roots.len() * 42);
    cbor_head(&mut body, 5, 2);
    cbor_head(&mut body, 3, 5);
    body.extend_from_slice(b"roots");
    cbor_head(&mut body, 4, roots.len() as u64);
    for r in roots {
        let b = r.to_bytes();
        cbor_head(&mut body, 6, 42);
        cbor_head(&mut body, 2, b.len() as u64 + 1);
        body.push(0);
        body.extend_from_slice(&b);
    }
    cbor_head(&mut body, 3, 7);
    body.extend_from_slice(b"version");
    cbor_head(&mut body, 0, 1);
    let mut out = Vec::with_capacity(body.len() + 4);
    pb::put_varint(&mut out, body.len() as u64);
    out.extend_from_slice(&body);
    out
}

/// Encode one CARv1 section: `varint(len) CID bytes data`.
pub fn encode_section(cid: &Cid, data: &[u8]) -> Vec<u8> {
    let c = cid.to_bytes();
    let mut out = Vec::with_capacity(10 + c.len() + data.len());
    pb::put_varint(&mut out, (c.len() + data.len()) as u64);
    out.extend_from_slice(&c);
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cids, codec, mh};

    fn block(i: u32) -> (Cid, Vec<u8>) {
        let data = format!("block number {i}").into_bytes();
        (
            cids::compute(cid::Version::V1, codec::RAW, mh::SHA2_256, &data).unwrap(),
            data,
        )
    }

    fn car(n: u32) -> (Vec<u8>, Vec<(Cid, Vec<u8>)>) {
        let blocks: Vec<_> = (0..n).map(block).collect();
        let mut out = encode_header_v1(&[blocks[0].0]);
        for (c, d) in &blocks {
            out.extend_from_slice(&encode_section(c, d));
        }
        (out, blocks)
    }

    fn drain(d: &mut CarDecoder) -> Vec<(Cid, Vec<u8>)> {
        let mut v = Vec::new();
        while let Some((c, b)) = d.next_block().unwrap() {
            v.push((c, b.to_vec()));
        }
        v
    }

    #[test]
    fn header_bytes_match_go_car() {
        // header parses back through the generic dag-cbor decoder
        let (c, _) = block(0);
        let h = encode_header_v1(&[c]);
        let (len, n) = pb::read_varint(&h).unwrap();
        assert_eq!(len as usize + n, h.len());
        assert_eq!(parse_header(&h[n..]).unwrap(), (1, Some(vec![c])));
        assert_eq!(&h[n..n + 7], &[0xa2, 0x65, b'r', b'o', b'o', b't', b's']);
    }

    #[test]
    fn v1_whole_and_bytewise() {
        let (bytes, blocks) = car(5);
        let mut d = CarDecoder::new();
        d.push(&bytes);
        assert_eq!(drain(&mut d), blocks);
        assert_eq!(d.header().unwrap().roots, vec![blocks[0].0]);
        d.finish().unwrap();
        let mut d = CarDecoder::new();
        let mut got = Vec::new();
        for b in &bytes {
            d.push(std::slice::from_ref(b));
            got.extend(drain(&mut d));
        }
        assert_eq!(got, blocks);
        d.finish().unwrap();
    }

    #[test]
    fn truncated() {
        let (bytes, _) = car(3);
        for cut in [0, 1, 5, bytes.len() - 1] {
            let mut d = CarDecoder::new();
            d.push(&bytes[..cut]);
            while let Ok(Some(_)) = d.next_block() {}
            assert!(d.finish().is_err(), "cut {cut}");
        }
        // undrained but complete input is fine
        let mut d = CarDecoder::new();
        d.push(&bytes);
        d.next_block().unwrap();
        d.finish().unwrap();
    }

    #[test]
    fn limits_and_errors() {
        let mut d = CarDecoder::new();
        d.push(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(d.next_block(), Err(CarError::HeaderTooLarge(_))));
        let (c, _) = block(0);
        let mut bytes = encode_header_v1(&[c]);
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0x0f]);
        let mut d = CarDecoder::new();
        d.push(&bytes);
        assert!(matches!(
            d.next_block(),
            Err(CarError::SectionTooLarge { .. })
        ));
        let mut bytes = encode_header_v1(&[c]);
        bytes.push(0);
        let mut d = CarDecoder::new();
        d.push(&bytes);
        assert!(matches!(d.next_block(), Err(CarError::Empty("section", _))));
        let mut bytes = encode_header_v1(&[c]);
        bytes.extend_from_slice(&[0x03, 0x01, 0x55, 0x12]);
        let mut d = CarDecoder::new();
        d.push(&bytes);
        assert!(matches!(d.next_block(), Err(CarError::InvalidCid { .. })));
        // version 3
        let mut d = CarDecoder::new();
        d.push(&[
            0x0a, 0xa1, 0x67, b'v', b'e', b'r', b's', b'i', b'o', b'n', 0x03,
        ]);
        assert_eq!(d.next_block(), Err(CarError::UnsupportedVersion(3)));
        let d = CarDecoder::new();
        assert_eq!(d.finish(), Err(CarError::NoHeader));
    }

    pub(crate) fn wrap_v2(v1: &[u8], pad: usize, trailing: &[u8]) -> Vec<u8> {
        let mut out = CARV2_PRAGMA.to_vec();
        let data_offset = (CARV2_PRAGMA.len() + V2_HEADER_LEN + pad) as u64;
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&data_offset.to_le_bytes());
        out.extend_from_slice(&(v1.len() as u64).to_le_bytes());
        out.extend_from_slice(&(data_offset + v1.len() as u64).to_le_bytes());
        out.extend(std::iter::repeat_n(0u8, pad));
        out.extend_from_slice(v1);
        out.extend_from_slice(trailing);
        out
    }

    #[test]
    fn v2() {
        let (v1, blocks) = car(4);
        let v2 = wrap_v2(&v1, 7, b"\x01\x02index-garbage-that-is-not-a-section");
        for chunk in [1, 3, 64, v2.len()] {
            let mut d = CarDecoder::new();
            let mut got = Vec::new();
            for c in v2.chunks(chunk) {
                d.push(c);
                got.extend(drain(&mut d));
            }
            assert_eq!(got, blocks);
            assert_eq!(d.header().unwrap().version, 2);
            assert!(d.is_complete());
            d.finish().unwrap();
        }
        // truncated payload
        let mut d = CarDecoder::new();
        d.push(&v2[..v2.len() - 40]);
        drain(&mut d);
        assert!(d.finish().is_err());
        // section running past the payload
        let bad = wrap_v2(&v1[..v1.len() - 2], 0, &[]);
        let mut d = CarDecoder::new();
        d.push(&bad);
        let mut r = Ok(None);
        for _ in 0..10 {
            r = d.next_block();
            if !matches!(r, Ok(Some(_))) {
                break;
            }
        }
        assert!(matches!(r, Err(CarError::PastPayload { .. })));
        // overlapping data offset
        let mut bad = wrap_v2(&v1, 0, &[]);
        bad[11 + 16..11 + 24].copy_from_slice(&3u64.to_le_bytes());
        let mut d = CarDecoder::new();
        d.push(&bad);
        assert!(matches!(d.next_block(), Err(CarError::InvalidV2Header(_))));
    }
}
