//! The bitswap wire format: one protobuf `Message` per varint-length-prefixed frame, shared by
//! `/ipfs/bitswap/1.0.0`, `1.1.0` and `1.2.0`.
//!
//! The schema (boxo `bitswap/message/pb/message.proto`, proto3):
//!
//! ```text
//! Message {
//!   Wantlist wantlist = 1 { repeated Entry entries = 1 { bytes block = 1; int32 priority = 2;
//!                             bool cancel = 3; WantType wantType = 4 {Block = 0, Have = 1};
//!                             bool sendDontHave = 5 }
//!                           bool full = 2 }
//!   repeated bytes blocks = 2;                // 1.0.0: block data, CID implied (v0, dag-pb, sha2-256)
//!   repeated Block payload = 3 { bytes prefix = 1; bytes data = 2 }   // 1.1.0+
//!   repeated BlockPresence blockPresences = 4 { bytes cid = 1; BlockPresenceType type = 2 {Have = 0, DontHave = 1} }
//!   int32 pendingBytes = 5;
//! }
//! ```
//!
//! Block CIDs are never taken from the peer: a block only travels with its CID *prefix*
//! (version, codec, hash function, digest length), and the receiver hashes the data into its
//! CID ([`VerifiedBlock::from_prefix`](ipfs_mount_ipld::VerifiedBlock::from_prefix), once, when
//! the block is matched to a want). A block whose bytes were tampered with therefore simply
//! shows up under another CID, one nobody asked for. Everything else that comes from the peer
//! (want and presence CIDs, enum values, prefixes) is validated entry by entry: a bad entry is
//! dropped with a debug log, the rest of the message is kept, and nothing here panics on input.

use bytes::Bytes;
use cid::{Cid, Version};
use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use ipfs_mount_ipld::cids::{self, Prefix};
use ipfs_mount_ipld::{codec, mh};
use prost::Message as _;

/// Largest message we read. Kubo (boxo) reads frames of at most go-libp2p's
/// `network.MessageSizeMax` (4 MiB), so no conforming peer sends more; the extra 64 KiB is
/// slack for framing around a full 4 MiB of blocks.
pub const MAX_MESSAGE_BYTES: usize = (4 << 20) + (64 << 10);

/// Senders pack blocks into a message up to about this size (a single larger block still
/// goes alone in its message).
pub const TARGET_MESSAGE_BYTES: usize = 1 << 20;

/// What a want asks for: the block itself, or only whether the peer has it (1.2.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WantType {
    Block,
    Have,
}

/// One wantlist entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantEntry {
    pub cid: Cid,
    pub priority: i32,
    /// Revokes an earlier want for `cid`.
    pub cancel: bool,
    pub want_type: WantType,
    /// Ask the peer to answer `DontHave` when it lacks the block (1.2.0).
    pub send_dont_have: bool,
}

/// A block presence answer (1.2.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Presence {
    Have,
    DontHave,
}

/// A decoded bitswap message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// The wantlist replaces everything the sender asked for before (not an update).
    pub full_wantlist: bool,
    pub wants: Vec<WantEntry>,
    /// Blocks with their CID prefix, as on the wire: received data is not hashed here, the
    /// engine does it once when matching the block to a want. Decoded blocks are slices of the
    /// message buffer (no copy), so a kept block keeps that buffer alive.
    pub blocks: Vec<(Prefix, Bytes)>,
    pub presences: Vec<(Cid, Presence)>,
    /// How many bytes of wanted blocks the sender still has queued for us.
    pub pending_bytes: i32,
}

/// Why a message could not be read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("bitswap: message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("bitswap: invalid length prefix: {0}")]
    LengthPrefix(String),
    #[error("bitswap: stream ended in the middle of a message")]
    Truncated,
    #[error("bitswap: invalid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("bitswap: {0}")]
    Io(#[from] std::io::Error),
}

/// Hand-written prost types matching boxo's `message.proto` field for field.
mod pb {
    use bytes::Bytes;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Message {
        #[prost(message, optional, tag = "1")]
        pub wantlist: Option<Wantlist>,
        #[prost(bytes = "bytes", repeated, tag = "2")]
        pub blocks: Vec<Bytes>,
        #[prost(message, repeated, tag = "3")]
        pub payload: Vec<Block>,
        #[prost(message, repeated, tag = "4")]
        pub block_presences: Vec<BlockPresence>,
        #[prost(int32, tag = "5")]
        pub pending_bytes: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Wantlist {
        #[prost(message, repeated, tag = "1")]
        pub entries: Vec<Entry>,
        #[prost(bool, tag = "2")]
        pub full: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(bytes = "bytes", tag = "1")]
        pub block: Bytes,
        #[prost(int32, tag = "2")]
        pub priority: i32,
        #[prost(bool, tag = "3")]
        pub cancel: bool,
        #[prost(enumeration = "WantType", tag = "4")]
        pub want_type: i32,
        #[prost(bool, tag = "5")]
        pub send_dont_have: bool,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum WantType {
        Block = 0,
        Have = 1,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Block {
        #[prost(bytes = "bytes", tag = "1")]
        pub prefix: Bytes,
        #[prost(bytes = "bytes", tag = "2")]
        pub data: Bytes,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum BlockPresenceType {
        Have = 0,
        DontHave = 1,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BlockPresence {
        #[prost(bytes = "bytes", tag = "1")]
        pub cid: Bytes,
        #[prost(enumeration = "BlockPresenceType", tag = "2")]
        pub r#type: i32,
    }
}

impl Message {
    /// Nothing worth sending: no wants, blocks or presences, and not a (possibly empty) full
    /// wantlist, which would tell the peer to forget every earlier want. `pending_bytes`
    /// alone is only a hint and does not count.
    pub fn is_empty(&self) -> bool {
        !self.full_wantlist
            && self.wants.is_empty()
            && self.blocks.is_empty()
            && self.presences.is_empty()
    }

    /// Protobuf bytes, without the length prefix. Blocks go in `payload` with their CID
    /// prefix (the 1.1.0+ form, which every current peer speaks).
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Length of [`Message::encode`]'s output (no block data is copied to compute it).
    pub fn encoded_len(&self) -> usize {
        self.to_proto().encoded_len()
    }

    /// Decode protobuf bytes (no length prefix). Copies `buf` once; see
    /// [`Message::decode_bytes`] to decode without that copy.
    pub fn decode(buf: &[u8]) -> Result<Message, MessageError> {
        check_size(buf.len(), MAX_MESSAGE_BYTES)?;
        decode_unchecked(Bytes::copy_from_slice(buf))
    }

    /// Like [`Message::decode`], but blocks are slices of `buf` itself.
    pub fn decode_bytes(buf: Bytes) -> Result<Message, MessageError> {
        check_size(buf.len(), MAX_MESSAGE_BYTES)?;
        decode_unchecked(buf)
    }

    fn to_proto(&self) -> pb::Message {
        // Omit the wantlist field entirely when there is nothing to say about wants, as boxo does.
        let wantlist = (self.full_wantlist || !self.wants.is_empty()).then(|| pb::Wantlist {
            entries: self
                .wants
                .iter()
                .map(|w| pb::Entry {
                    block: Bytes::from(w.cid.to_bytes()),
                    priority: w.priority,
                    cancel: w.cancel,
                    want_type: match w.want_type {
                        WantType::Block => pb::WantType::Block,
                        WantType::Have => pb::WantType::Have,
                    } as i32,
                    send_dont_have: w.send_dont_have,
                })
                .collect(),
            full: self.full_wantlist,
        });
        pb::Message {
            wantlist,
            blocks: Vec::new(),
            payload: self
                .blocks
                .iter()
                .map(|(prefix, data)| pb::Block {
                    prefix: Bytes::from(prefix_bytes(prefix)),
                    // A reference-count bump, not a copy.
                    data: data.clone(),
                })
                .collect(),
            block_presences: self
                .presences
                .iter()
                .map(|(cid, p)| pb::BlockPresence {
                    cid: Bytes::from(cid.to_bytes()),
                    r#type: match p {
                        Presence::Have => pb::BlockPresenceType::Have,
                        Presence::DontHave => pb::BlockPresenceType::DontHave,
                    } as i32,
                })
                .collect(),
            pending_bytes: self.pending_bytes,
        }
    }
}

fn check_size(len: usize, max: usize) -> Result<(), MessageError> {
    if len > max {
        Err(MessageError::TooLarge { len, max })
    } else {
        Ok(())
    }
}

/// Decode without the size check (callers have applied their own limit). prost slices
/// `bytes`-typed fields out of `buf` instead of copying them.
fn decode_unchecked(buf: Bytes) -> Result<Message, MessageError> {
    let m = pb::Message::decode(buf)?;
    let mut out = Message {
        pending_bytes: m.pending_bytes,
        ..Message::default()
    };

    if let Some(wl) = m.wantlist {
        out.full_wantlist = wl.full;
        out.wants.reserve(wl.entries.len());
        for e in wl.entries {
            let cid = match cids::from_bytes(&e.block) {
                Ok(cid) => cid,
                Err(err) => {
                    tracing::debug!("bitswap: skipping want with an invalid CID: {err}");
                    continue;
                }
            };
            let want_type = match pb::WantType::try_from(e.want_type) {
                Ok(pb::WantType::Block) => WantType::Block,
                Ok(pb::WantType::Have) => WantType::Have,
                Err(_) => {
                    tracing::debug!(
                        "bitswap: skipping want for {cid} with unknown want type {}",
                        e.want_type
                    );
                    continue;
                }
            };
            out.wants.push(WantEntry {
                cid,
                priority: e.priority,
                cancel: e.cancel,
                want_type,
                send_dont_have: e.send_dont_have,
            });
        }
    }

    out.blocks.reserve(m.blocks.len() + m.payload.len());
    // Bitswap 1.0.0: bare data, always CIDv0 (dag-pb, sha2-256).
    let v0 = Prefix {
        version: Version::V0,
        codec: codec::DAG_PB,
        hash: mh::SHA2_256,
        digest_len: 32,
    };
    out.blocks
        .extend(m.blocks.into_iter().map(|data| (v0, data)));
    for b in m.payload {
        match parse_prefix(&b.prefix) {
            Ok(prefix) => out.blocks.push((prefix, b.data)),
            Err(why) => tracing::debug!(
                "bitswap: skipping block of {} bytes with prefix {:02x?}: {why}",
                b.data.len(),
                &b.prefix[..b.prefix.len().min(32)]
            ),
        }
    }

    out.presences.reserve(m.block_presences.len());
    for p in m.block_presences {
        let cid = match cids::from_bytes(&p.cid) {
            Ok(cid) => cid,
            Err(err) => {
                tracing::debug!("bitswap: skipping presence with an invalid CID: {err}");
                continue;
            }
        };
        let presence = match pb::BlockPresenceType::try_from(p.r#type) {
            Ok(pb::BlockPresenceType::Have) => Presence::Have,
            Ok(pb::BlockPresenceType::DontHave) => Presence::DontHave,
            Err(_) => {
                tracing::debug!(
                    "bitswap: skipping presence for {cid} with unknown type {}",
                    p.r#type
                );
                continue;
            }
        };
        out.presences.push((cid, presence));
    }
    Ok(out)
}

/// The CID prefix bitswap 1.1.0+ sends with each block: varints of the CID version, codec,
/// multihash code and digest length (go-cid's `Prefix.Bytes()`). For a CIDv0 that is
/// `00 70 12 20`.
pub fn cid_prefix(cid: &Cid) -> Vec<u8> {
    prefix_bytes(&Prefix::of(cid))
}

/// [`cid_prefix`] of a [`Prefix`].
pub fn prefix_bytes(p: &Prefix) -> Vec<u8> {
    let version: u64 = match p.version {
        Version::V0 => 0,
        Version::V1 => 1,
    };
    let mut out = Vec::with_capacity(16);
    let mut buf = unsigned_varint::encode::u64_buffer();
    for v in [version, p.codec, p.hash, p.digest_len] {
        out.extend_from_slice(unsigned_varint::encode::u64(v, &mut buf));
    }
    out
}

/// Parse the prefix of a 1.1.0+ payload block. Whether its hash can be verified is decided
/// when the data is hashed. The error is a description for the debug log (the block is
/// dropped, not the message).
fn parse_prefix(prefix: &[u8]) -> Result<Prefix, String> {
    let mut rest = prefix;
    let mut fields = [0u64; 4];
    for f in &mut fields {
        let (v, r) =
            unsigned_varint::decode::u64(rest).map_err(|e| format!("bad prefix varint: {e}"))?;
        *f = v;
        rest = r;
    }
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes in prefix", rest.len()));
    }
    let [version, codec, hash, len] = fields;
    let version = match version {
        0 => Version::V0,
        1 => Version::V1,
        v => return Err(format!("unknown CID version {v}")),
    };
    Ok(Prefix {
        version,
        codec,
        hash,
        digest_len: len,
    })
}

/// Read one varint-length-prefixed message. `Ok(None)` when the stream ends cleanly before a
/// length prefix; an error when it ends anywhere else or the length exceeds `max` (checked
/// before the body is allocated or read).
pub async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Message>, MessageError> {
    let Some(len) = read_length(r).await? else {
        return Ok(None);
    };
    check_size(len, max)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(eof_is_truncated)?;
    decode_unchecked(Bytes::from(body)).map(Some)
}

/// Write `msg` with its varint length prefix, then flush.
pub async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &Message,
) -> Result<(), MessageError> {
    let proto = msg.to_proto();
    let len = proto.encoded_len();
    let mut lenbuf = unsigned_varint::encode::usize_buffer();
    let prefix = unsigned_varint::encode::usize(len, &mut lenbuf);
    // One buffer and one write: the frame is not split into a tiny prefix write and the body.
    let mut frame = Vec::with_capacity(prefix.len() + len);
    frame.extend_from_slice(prefix);
    proto
        .encode(&mut frame)
        .map_err(|e| std::io::Error::other(format!("bitswap: protobuf encode: {e}")))?;
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Read the varint length prefix one byte at a time (never reading past it), telling a
/// clean end of stream (no byte at all) from one inside the prefix.
async fn read_length<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<usize>, MessageError> {
    let mut buf = unsigned_varint::encode::usize_buffer();
    for i in 0..buf.len() {
        let mut byte = [0u8; 1];
        let n = loop {
            match r.read(&mut byte).await {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(MessageError::Truncated)
            };
        }
        buf[i] = byte[0];
        if unsigned_varint::decode::is_last(byte[0]) {
            let (len, _) = unsigned_varint::decode::usize(&buf[..=i])
                .map_err(|e| MessageError::LengthPrefix(e.to_string()))?;
            return Ok(Some(len));
        }
    }
    Err(MessageError::LengthPrefix("varint too long".into()))
}

fn eof_is_truncated(e: std::io::Error) -> MessageError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        MessageError::Truncated
    } else {
        MessageError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use ipfs_mount_ipld::VerifiedBlock;
    use multihash::Multihash;
    use proptest::prelude::*;

    fn raw(data: &[u8]) -> Cid {
        cids::compute(Version::V1, codec::RAW, mh::SHA2_256, data).unwrap()
    }

    fn v0(data: &[u8]) -> Cid {
        cids::compute(Version::V0, codec::DAG_PB, mh::SHA2_256, data).unwrap()
    }

    fn block(data: &'static [u8]) -> (Prefix, Bytes) {
        (Prefix::of(&raw(data)), Bytes::from_static(data))
    }

    /// The CID the receiving engine computes for a decoded block.
    fn hashed((prefix, data): &(Prefix, Bytes)) -> Result<Cid, cids::VerifyError> {
        VerifiedBlock::from_prefix(*prefix, data.clone()).map(|b| *b.cid())
    }

    fn sample() -> Message {
        Message {
            full_wantlist: true,
            wants: vec![
                WantEntry {
                    cid: v0(b"a"),
                    priority: 7,
                    cancel: false,
                    want_type: WantType::Have,
                    send_dont_have: true,
                },
                WantEntry {
                    cid: raw(b"b"),
                    priority: -3,
                    cancel: true,
                    want_type: WantType::Block,
                    send_dont_have: false,
                },
            ],
            blocks: vec![
                block(b"hello"),
                (Prefix::of(&v0(b"x")), Bytes::from_static(b"x")),
            ],
            presences: vec![(raw(b"c"), Presence::DontHave), (v0(b"d"), Presence::Have)],
            pending_bytes: 1234,
        }
    }

    fn pb_block(prefix: Vec<u8>, data: &[u8]) -> pb::Block {
        pb::Block {
            prefix: prefix.into(),
            data: Bytes::copy_from_slice(data),
        }
    }

    fn with_payload(payload: Vec<pb::Block>) -> Vec<u8> {
        pb::Message {
            payload,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn round_trip_sample() {
        let m = sample();
        let enc = m.encode();
        assert_eq!(enc.len(), m.encoded_len());
        assert_eq!(Message::decode(&enc).unwrap(), m);
        assert_eq!(Message::decode_bytes(enc.into()).unwrap(), m);
    }

    #[test]
    fn empty_message() {
        let m = Message::default();
        assert!(m.is_empty());
        assert!(m.encode().is_empty());
        assert_eq!(Message::decode(&[]).unwrap(), m);
        // A full wantlist with no entries means "forget everything": worth sending, and it
        // survives the round trip.
        let full = Message {
            full_wantlist: true,
            ..Default::default()
        };
        assert!(!full.is_empty());
        assert_eq!(Message::decode(&full.encode()).unwrap(), full);
        let hint = Message {
            pending_bytes: 5,
            ..Default::default()
        };
        assert!(hint.is_empty());
    }

    #[test]
    fn field_numbers_match_boxo() {
        // Hand-assembled protobuf of a message with one want, one payload block, one presence
        // and pendingBytes, using the tags of boxo's message.proto.
        let want = raw(b"w").to_bytes();
        let pres = raw(b"p").to_bytes();
        let prefix = [0x01, 0x55, 0x12, 0x20];
        let mut entry = vec![0x0a, want.len() as u8];
        entry.extend_from_slice(&want);
        entry.extend_from_slice(&[0x10, 0x05]); // priority = 5
        entry.extend_from_slice(&[0x18, 0x01]); // cancel = true
        entry.extend_from_slice(&[0x20, 0x01]); // wantType = Have
        entry.extend_from_slice(&[0x28, 0x01]); // sendDontHave = true
        let mut wantlist = vec![0x0a, entry.len() as u8];
        wantlist.extend_from_slice(&entry);
        wantlist.extend_from_slice(&[0x10, 0x01]); // full = true
        let mut blk = vec![0x0a, 4];
        blk.extend_from_slice(&prefix);
        blk.extend_from_slice(&[0x12, 2, b'h', b'i']);
        let mut presence = vec![0x0a, pres.len() as u8];
        presence.extend_from_slice(&pres);
        presence.extend_from_slice(&[0x10, 0x01]); // DontHave

        let mut msg = vec![0x0a, wantlist.len() as u8];
        msg.extend_from_slice(&wantlist);
        msg.extend_from_slice(&[0x1a, blk.len() as u8]);
        msg.extend_from_slice(&blk);
        msg.extend_from_slice(&[0x22, presence.len() as u8]);
        msg.extend_from_slice(&presence);
        msg.extend_from_slice(&[0x28, 0x07]); // pendingBytes = 7

        let expected = Message {
            full_wantlist: true,
            wants: vec![WantEntry {
                cid: raw(b"w"),
                priority: 5,
                cancel: true,
                want_type: WantType::Have,
                send_dont_have: true,
            }],
            blocks: vec![block(b"hi")],
            presences: vec![(raw(b"p"), Presence::DontHave)],
            pending_bytes: 7,
        };
        assert_eq!(Message::decode(&msg).unwrap(), expected);
        // prost writes fields in tag order, as we assembled them.
        assert_eq!(expected.encode(), msg);
    }

    #[test]
    fn decode_bitswap_1_0_0() {
        // Field 2 (`blocks`), repeated bytes: data only, CIDv0 implied.
        let mut msg = Vec::new();
        for data in [&b"first"[..], &b"second block"[..]] {
            msg.push(0x12);
            msg.push(data.len() as u8);
            msg.extend_from_slice(data);
        }
        // And a CIDv0 want (34 bytes of multihash, no version or codec).
        let want = v0(b"wanted");
        let wb = want.to_bytes();
        assert_eq!(wb.len(), 34);
        let mut entry = vec![0x0a, wb.len() as u8];
        entry.extend_from_slice(&wb);
        entry.extend_from_slice(&[0x10, 0x01]);
        let mut wantlist = vec![0x0a, entry.len() as u8];
        wantlist.extend_from_slice(&entry);
        msg.push(0x0a);
        msg.push(wantlist.len() as u8);
        msg.extend_from_slice(&wantlist);

        let m = Message::decode(&msg).unwrap();
        let got: Vec<_> = m
            .blocks
            .iter()
            .map(|b| (hashed(b).unwrap(), &b.1))
            .collect();
        assert_eq!(
            got,
            vec![
                (v0(b"first"), &Bytes::from_static(b"first")),
                (v0(b"second block"), &Bytes::from_static(b"second block")),
            ]
        );
        assert_eq!(m.wants.len(), 1);
        assert_eq!(m.wants[0].cid, want);
        assert_eq!(m.wants[0].want_type, WantType::Block);
        assert!(!m.full_wantlist);
    }

    #[test]
    fn prefixes_are_what_boxo_sends() {
        assert_eq!(cid_prefix(&v0(b"x")), vec![0x00, 0x70, 0x12, 0x20]);
        assert_eq!(cid_prefix(&raw(b"x")), vec![0x01, 0x55, 0x12, 0x20]);
        let cbor = cids::compute(Version::V1, codec::DAG_CBOR, mh::BLAKE3, b"x").unwrap();
        assert_eq!(cid_prefix(&cbor), vec![0x01, 0x71, 0x1e, 0x20]);
        // Multi-byte varints: dag-json is 0x0129.
        let json = cids::compute(Version::V1, codec::DAG_JSON, mh::SHA2_512, b"x").unwrap();
        assert_eq!(cid_prefix(&json), vec![0x01, 0xa9, 0x02, 0x13, 0x40]);
    }

    #[test]
    fn tampered_block_gets_another_cid() {
        let good = b"the real bytes";
        let bad = b"the real bytez";
        let prefix = cid_prefix(&raw(good));
        let m = Message::decode(&with_payload(vec![pb_block(prefix, bad)])).unwrap();
        assert_eq!(m.blocks.len(), 1);
        assert_ne!(hashed(&m.blocks[0]), Ok(raw(good)));
        assert_eq!(hashed(&m.blocks[0]), Ok(raw(bad)));
    }

    #[test]
    fn every_supported_hash_and_version() {
        let data = b"some block";
        let mut cids_in = Vec::new();
        for h in [mh::SHA2_256, mh::SHA2_512, mh::BLAKE3, mh::IDENTITY] {
            cids_in.push(cids::compute(Version::V1, codec::RAW, h, data).unwrap());
        }
        cids_in.push(v0(data));
        let payload = cids_in
            .iter()
            .map(|c| pb_block(cid_prefix(c), data))
            .collect();
        let m = Message::decode(&with_payload(payload)).unwrap();
        let got: Vec<Cid> = m.blocks.iter().map(|b| hashed(b).unwrap()).collect();
        assert_eq!(got, cids_in);
    }

    /// The receive path refuses a truncated digest exactly as the gateway path does
    /// (`VerifiedBlock::check` of the truncated CID): the same error, so it can never be wanted
    /// from one source and accepted from another.
    #[test]
    fn truncated_digest_is_refused() {
        let data = b"truncate me";
        let full = raw(data);
        // sha2-256 truncated to 20 bytes: the right bytes for this CID, were truncation allowed.
        let short = Cid::new_v1(
            codec::RAW,
            Multihash::wrap(mh::SHA2_256, &full.hash().digest()[..20]).unwrap(),
        );
        assert_eq!(cid_prefix(&short), vec![1, 0x55, 0x12, 20]);
        let m =
            Message::decode(&with_payload(vec![pb_block(vec![1, 0x55, 0x12, 20], data)])).unwrap();
        let why = cids::VerifyError::BadDigestLength {
            code: mh::SHA2_256,
            len: 20,
            expected: 32,
        };
        assert_eq!(hashed(&m.blocks[0]), Err(why.clone()));
        assert_eq!(
            VerifiedBlock::check(short, Bytes::from_static(data)),
            Err(why)
        );
    }

    #[test]
    fn bad_blocks_are_dropped_not_fatal() {
        let data = b"x";
        let good = pb_block(cid_prefix(&raw(data)), data);
        let bad = vec![
            pb_block(vec![1, 0x55, 0x12, 33], data), // longer than sha2-256
            pb_block(vec![1, 0x55, 0x12, 0], data),  // empty digest
            pb_block(vec![1, 0x55, 0x14, 0x20], data), // sha3-512: unsupported
            pb_block(vec![1, 0x55, 0x12], data),     // missing length
            pb_block(vec![], data),                  // no prefix
            pb_block(vec![1, 0x55, 0x12, 0x20, 0], data), // trailing byte
            pb_block(vec![2, 0x55, 0x12, 0x20], data), // unknown version
            pb_block(vec![0, 0x55, 0x12, 0x20], data), // v0 must be dag-pb
            pb_block(vec![0, 0x70, 0x12, 0x10], data), // v0 cannot be truncated
            pb_block(
                vec![
                    1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
                data,
            ),
            pb_block(vec![1, 0x55, 0x00, 0x20], &[7u8; 65]), // identity over 64 bytes
        ];
        let mut payload = bad.clone();
        payload.insert(3, good.clone());
        // Dropped when decoding (a malformed prefix) or when hashing (a prefix we cannot
        // verify): either way only the good block ever becomes a verified one.
        let m = Message::decode(&with_payload(payload)).unwrap();
        let verified: Vec<Cid> = m.blocks.iter().filter_map(|b| hashed(b).ok()).collect();
        assert_eq!(verified, vec![raw(data)]);
        assert!(m.blocks.len() < bad.len());
    }

    #[test]
    fn bad_wants_and_presences_are_dropped() {
        let good = raw(b"g");
        let wl = pb::Wantlist {
            entries: vec![
                pb::Entry {
                    block: Bytes::from_static(b"\x01\x55garbage"),
                    ..Default::default()
                },
                pb::Entry {
                    block: good.to_bytes().into(),
                    want_type: 9,
                    ..Default::default()
                },
                pb::Entry {
                    block: good.to_bytes().into(),
                    priority: 1,
                    ..Default::default()
                },
                pb::Entry::default(), // empty CID
            ],
            full: false,
        };
        let mut trailing = good.to_bytes();
        trailing.push(0);
        let msg = pb::Message {
            wantlist: Some(wl),
            block_presences: vec![
                pb::BlockPresence {
                    cid: trailing.into(),
                    r#type: 0,
                },
                pb::BlockPresence {
                    cid: good.to_bytes().into(),
                    r#type: 5,
                },
                pb::BlockPresence {
                    cid: good.to_bytes().into(),
                    r#type: 1,
                },
            ],
            ..Default::default()
        }
        .encode_to_vec();
        let m = Message::decode(&msg).unwrap();
        assert_eq!(
            m.wants,
            vec![WantEntry {
                cid: good,
                priority: 1,
                cancel: false,
                want_type: WantType::Block,
                send_dont_have: false,
            }]
        );
        assert_eq!(m.presences, vec![(good, Presence::DontHave)]);
    }

    #[test]
    fn malformed_and_oversized_input() {
        let enc = sample().encode();
        // Every strict prefix of a valid message either fails or decodes to something else;
        // what matters is that none panics. Cutting inside the last field must fail.
        for cut in 0..enc.len() {
            let _ = Message::decode(&enc[..cut]);
        }
        assert!(matches!(
            Message::decode(&enc[..enc.len() - 1]),
            Err(MessageError::Protobuf(_))
        ));
        // A length-delimited field claiming more bytes than there are.
        assert!(matches!(
            Message::decode(&[0x1a, 0x7f, 0x00]),
            Err(MessageError::Protobuf(_))
        ));
        // Wire type 7 does not exist.
        assert!(Message::decode(&[0x0f]).is_err());
        let big = vec![0u8; MAX_MESSAGE_BYTES + 1];
        assert!(matches!(
            Message::decode(&big),
            Err(MessageError::TooLarge { len, max }) if len == MAX_MESSAGE_BYTES + 1 && max == MAX_MESSAGE_BYTES
        ));
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn stream_round_trip_and_eof() {
        let a = sample();
        let b = Message {
            blocks: vec![block(b"second")],
            ..Default::default()
        };
        let mut out = Cursor::new(Vec::new());
        block_on(async {
            write_message(&mut out, &a).await.unwrap();
            write_message(&mut out, &Message::default()).await.unwrap();
            write_message(&mut out, &b).await.unwrap();
        });
        let bytes = out.into_inner();
        // The frame is the varint length followed by exactly `encode()`.
        let enc = a.encode();
        let mut lb = unsigned_varint::encode::usize_buffer();
        let prefix = unsigned_varint::encode::usize(enc.len(), &mut lb);
        assert_eq!(&bytes[..prefix.len()], prefix);
        assert_eq!(&bytes[prefix.len()..prefix.len() + enc.len()], &enc[..]);

        let mut r = Cursor::new(bytes.clone());
        block_on(async {
            assert_eq!(
                read_message(&mut r, MAX_MESSAGE_BYTES).await.unwrap(),
                Some(a)
            );
            assert_eq!(
                read_message(&mut r, MAX_MESSAGE_BYTES).await.unwrap(),
                Some(Message::default())
            );
            assert_eq!(
                read_message(&mut r, MAX_MESSAGE_BYTES).await.unwrap(),
                Some(b)
            );
            assert_eq!(read_message(&mut r, MAX_MESSAGE_BYTES).await.unwrap(), None);
            // Still None when asked again.
            assert_eq!(read_message(&mut r, MAX_MESSAGE_BYTES).await.unwrap(), None);
        });

        // Ending inside the body, or inside the length prefix, is an error.
        block_on(async {
            let mut r = Cursor::new(bytes[..prefix.len() + 3].to_vec());
            assert!(matches!(
                read_message(&mut r, MAX_MESSAGE_BYTES).await,
                Err(MessageError::Truncated)
            ));
            let mut r = Cursor::new(vec![0x80u8]);
            assert!(matches!(
                read_message(&mut r, MAX_MESSAGE_BYTES).await,
                Err(MessageError::Truncated)
            ));
        });
    }

    #[test]
    fn stream_length_limits() {
        block_on(async {
            // A 1 GiB length prefix is refused before anything is allocated or read.
            let mut lb = unsigned_varint::encode::usize_buffer();
            let prefix = unsigned_varint::encode::usize(1 << 30, &mut lb).to_vec();
            let mut r = Cursor::new(prefix);
            assert!(matches!(
                read_message(&mut r, MAX_MESSAGE_BYTES).await,
                Err(MessageError::TooLarge { len, .. }) if len == 1 << 30
            ));
            // The limit is the caller's.
            let enc = sample().encode();
            let mut framed = Vec::new();
            framed.extend_from_slice(unsigned_varint::encode::usize(enc.len(), &mut lb));
            framed.extend_from_slice(&enc);
            let mut r = Cursor::new(framed.clone());
            assert!(matches!(
                read_message(&mut r, enc.len() - 1).await,
                Err(MessageError::TooLarge { .. })
            ));
            let mut r = Cursor::new(framed);
            assert!(read_message(&mut r, enc.len()).await.unwrap().is_some());
            // A varint that never ends.
            let mut r = Cursor::new(vec![0xffu8; 20]);
            assert!(matches!(
                read_message(&mut r, MAX_MESSAGE_BYTES).await,
                Err(MessageError::LengthPrefix(_))
            ));
            // A body that is not protobuf.
            let mut r = Cursor::new(vec![0x01, 0x0f]);
            assert!(matches!(
                read_message(&mut r, MAX_MESSAGE_BYTES).await,
                Err(MessageError::Protobuf(_))
            ));
        });
    }

    #[test]
    fn decoded_blocks_share_the_buffer() {
        let data = vec![42u8; 4096];
        let cid = raw(&data);
        let enc = Message {
            blocks: vec![(Prefix::of(&cid), Bytes::from(data.clone()))],
            ..Default::default()
        }
        .encode();
        let buf = Bytes::from(enc);
        let range = buf.as_ptr_range();
        let m = Message::decode_bytes(buf.clone()).unwrap();
        let got = m.blocks[0].1.as_ptr_range();
        assert!(
            range.start <= got.start && got.end <= range.end,
            "block was copied"
        );
        assert_eq!(m.blocks[0].1, data);
    }

    // ---- property tests ----

    fn arb_cid() -> impl Strategy<Value = Cid> {
        (
            any::<bool>(),
            prop::sample::select(vec![
                codec::RAW,
                codec::DAG_PB,
                codec::DAG_CBOR,
                0x0129,
                0x1_0000,
            ]),
            prop::sample::select(vec![mh::SHA2_256, mh::SHA2_512, mh::BLAKE3, 0x14, 0xb220]),
            prop::collection::vec(any::<u8>(), 1..=64),
        )
            .prop_map(|(v0, codec, hash, digest)| {
                if v0 {
                    let d: Vec<u8> = digest.iter().cycle().take(32).copied().collect();
                    Cid::new_v0(Multihash::wrap(mh::SHA2_256, &d).unwrap()).unwrap()
                } else {
                    Cid::new_v1(codec, Multihash::wrap(hash, &digest).unwrap())
                }
            })
    }

    fn arb_block() -> impl Strategy<Value = (Prefix, Bytes)> {
        (
            0u8..5,
            prop::sample::select(vec![codec::RAW, codec::DAG_PB, codec::DAG_CBOR, 0x0129]),
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(kind, codec, data)| {
                let (version, codec, hash) = match kind {
                    0 => (Version::V0, codec::DAG_PB, mh::SHA2_256),
                    1 => (Version::V1, codec, mh::SHA2_256),
                    2 => (Version::V1, codec, mh::SHA2_512),
                    3 => (Version::V1, codec, mh::BLAKE3),
                    _ => (Version::V1, codec, mh::IDENTITY),
                };
                let data = if hash == mh::IDENTITY {
                    data[..data.len().min(64)].to_vec()
                } else {
                    data
                };
                let cid = cids::compute(version, codec, hash, &data).unwrap();
                (Prefix::of(&cid), Bytes::from(data))
            })
    }

    fn arb_want() -> impl Strategy<Value = WantEntry> {
        (
            arb_cid(),
            any::<i32>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(cid, priority, cancel, have, send_dont_have)| WantEntry {
                cid,
                priority,
                cancel,
                want_type: if have {
                    WantType::Have
                } else {
                    WantType::Block
                },
                send_dont_have,
            })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        (
            any::<bool>(),
            prop::collection::vec(arb_want(), 0..8),
            prop::collection::vec(arb_block(), 0..6),
            prop::collection::vec(
                (arb_cid(), any::<bool>()).prop_map(|(c, h)| {
                    (
                        c,
                        if h {
                            Presence::Have
                        } else {
                            Presence::DontHave
                        },
                    )
                }),
                0..8,
            ),
            any::<i32>(),
        )
            .prop_map(
                |(full_wantlist, wants, blocks, presences, pending_bytes)| Message {
                    full_wantlist,
                    wants,
                    blocks,
                    presences,
                    pending_bytes,
                },
            )
    }

    proptest! {
        #[test]
        fn prop_round_trip(m in arb_message()) {
            let enc = m.encode();
            prop_assert_eq!(enc.len(), m.encoded_len());
            let dec = Message::decode(&enc).unwrap();
            prop_assert_eq!(&dec, &m);
            let mut out = Cursor::new(Vec::new());
            block_on(write_message(&mut out, &m)).unwrap();
            let mut r = Cursor::new(out.into_inner());
            let read = block_on(read_message(&mut r, MAX_MESSAGE_BYTES)).unwrap();
            prop_assert_eq!(read, Some(m));
        }

        #[test]
        fn prop_decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode(&bytes);
            let mut r = Cursor::new(bytes);
            let _ = block_on(read_message(&mut r, MAX_MESSAGE_BYTES));
        }
    }
}
