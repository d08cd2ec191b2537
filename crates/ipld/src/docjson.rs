//! Render dag-cbor, dag-json, cbor and json blocks as dag-json text.

use cid::Cid;
use ipld_core::ipld::Ipld;

use crate::codec;
use crate::unixfs::data::UnixFsError;

/// Deepest CBOR nesting (arrays, maps, tags) accepted; deeper input is an error rather
/// than a risk of stack exhaustion in the recursive decoder. JSON is limited by
/// serde_json's own recursion limit (128).
pub const MAX_NESTING: usize = 64;

/// Render a dag-cbor, dag-json, cbor or json block as dag-json text.
pub fn render(cid: &Cid, block: &[u8]) -> Result<Vec<u8>, UnixFsError> {
    let ipld = decode(cid.codec(), block)?;
    serde_ipld_dagjson::to_vec(&ipld)
        .map_err(|e| UnixFsError::Document(format!("dag-json encoding: {e}")))
}

/// Decode a dag-cbor/cbor/dag-json/json block into the IPLD data model.
pub fn decode(codec: u64, block: &[u8]) -> Result<Ipld, UnixFsError> {
    match codec {
        codec::DAG_CBOR | codec::CBOR => decode_cbor(block).map_err(UnixFsError::Document),
        codec::DAG_JSON | codec::JSON => serde_ipld_dagjson::from_slice(block)
            .map_err(|e| UnixFsError::Document(format!("invalid dag-json: {e}"))),
        other => Err(UnixFsError::UnsupportedCodec(other)),
    }
}

/// Decode dag-cbor after a bounded-depth structural pre-check.
pub(crate) fn decode_cbor(block: &[u8]) -> Result<Ipld, String> {
    let mut pos = 0;
    check_item(block, &mut pos, 0).map_err(|e| format!("invalid dag-cbor: {e}"))?;
    if pos != block.len() {
        return Err(format!(
            "invalid dag-cbor: {} trailing bytes",
            block.len() - pos
        ));
    }
    serde_ipld_dagcbor::from_slice(block).map_err(|e| format!("invalid dag-cbor: {e}"))
}

/// Reads a CBOR head at `pos`: (major type, additional info, argument or None for
/// indefinite length).
fn head(b: &[u8], pos: &mut usize) -> Result<(u8, u8, Option<u64>), &'static str> {
    let ib = *b.get(*pos).ok_or("truncated")?;
    *pos += 1;
    let major = ib >> 5;
    let ai = ib & 0x1f;
    let n = match ai {
        0..=23 => return Ok((major, ai, Some(u64::from(ai)))),
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        31 => return Ok((major, ai, None)),
        _ => return Err("reserved additional info"),
    };
    if b.len() - *pos < n {
        return Err("truncated");
    }
    let mut v = 0u64;
    for &x in &b[*pos..*pos + n] {
        v = (v << 8) | u64::from(x);
    }
    *pos += n;
    Ok((major, ai, Some(v)))
}

fn check_item(b: &[u8], pos: &mut usize, depth: usize) -> Result<(), &'static str> {
    if depth > MAX_NESTING {
        return Err("nesting too deep");
    }
    let (major, _ai, arg) = head(b, pos)?;
    match (major, arg) {
        (0 | 1, Some(_)) => Ok(()),
        (2 | 3, Some(n)) => {
            if n > (b.len() - *pos) as u64 {
                return Err("truncated string");
            }
            *pos += n as usize;
            Ok(())
        }
        (2 | 3, None) => loop {
            if b.get(*pos) == Some(&0xff) {
                *pos += 1;
                return Ok(());
            }
            let (m, _, a) = head(b, pos)?;
            let n = match a {
                Some(n) if m == major => n,
                _ => return Err("bad indefinite string chunk"),
            };
            if n > (b.len() - *pos) as u64 {
                return Err("truncated string");
            }
            *pos += n as usize;
        },
        (4 | 5, Some(n)) => {
            let items = if major == 5 {
                n.checked_mul(2).ok_or("length overflow")?
            } else {
                n
            };
            for _ in 0..items {
                check_item(b, pos, depth + 1)?;
            }
            Ok(())
        }
        (4 | 5, None) => loop {
            if b.get(*pos) == Some(&0xff) {
                *pos += 1;
                return Ok(());
            }
            check_item(b, pos, depth + 1)?;
        },
        (6, Some(_)) => check_item(b, pos, depth + 1),
        (7, Some(_)) => Ok(()),
        _ => Err("unexpected break or indefinite length"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(codec: u64) -> Cid {
        crate::cids::compute(cid::Version::V1, codec, crate::mh::SHA2_256, b"x").unwrap()
    }

    #[test]
    fn renders_cbor_and_json() {
        // {"a": [1, "x"]}
        let cbor = [0xa1, 0x61, b'a', 0x82, 0x01, 0x61, b'x'];
        assert_eq!(
            render(&cid(codec::DAG_CBOR), &cbor).unwrap(),
            br#"{"a":[1,"x"]}"#
        );
        assert_eq!(
            render(&cid(codec::CBOR), &cbor).unwrap(),
            br#"{"a":[1,"x"]}"#
        );
        assert_eq!(
            render(&cid(codec::JSON), br#" {"b" : true} "#).unwrap(),
            br#"{"b":true}"#
        );
        assert!(render(&cid(codec::DAG_JSON), b"{").is_err());
        assert!(render(&cid(codec::DAG_CBOR), &[0xa1]).is_err());
        assert!(render(&cid(codec::DAG_CBOR), &[0x01, 0x02]).is_err());
        assert!(matches!(
            render(&cid(codec::RAW), b""),
            Err(UnixFsError::UnsupportedCodec(0x55))
        ));
    }

    #[test]
    fn deep_nesting_is_an_error() {
        let deep = vec![0x81u8; 100_000];
        assert!(render(&cid(codec::DAG_CBOR), &deep).is_err());
        let mut ok = vec![0x81u8; 10];
        ok.push(0x01);
        assert!(render(&cid(codec::DAG_CBOR), &ok).is_ok());
        let json = "[".repeat(100_000);
        assert!(render(&cid(codec::DAG_JSON), json.as_bytes()).is_err());
        // huge declared lengths do not allocate
        let huge = [0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(render(&cid(codec::DAG_CBOR), &huge).is_err());
        let huge = [0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(render(&cid(codec::DAG_CBOR), &huge).is_err());
    }
}
