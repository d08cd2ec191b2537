//! Minimal protobuf wire-format reader/writer used by the dag-pb and UnixFS codecs.

/// Low-level protobuf decoding failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PbErr {
    /// Input ended inside a varint, a length-delimited field or a fixed-width field.
    Truncated,
    /// A varint longer than 10 bytes or not fitting in 64 bits.
    VarintOverflow,
    /// Wire type 3, 4, 6 or 7 (groups or reserved).
    BadWireType(u8),
    /// Field number 0 or beyond the protobuf maximum.
    BadFieldNumber,
}

impl std::fmt::Display for PbErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PbErr::Truncated => f.write_str("truncated input"),
            PbErr::VarintOverflow => f.write_str("varint overflows 64 bits"),
            PbErr::BadWireType(w) => write!(f, "unsupported wire type {w}"),
            PbErr::BadFieldNumber => f.write_str("invalid field number"),
        }
    }
}

pub(crate) const WIRE_VARINT: u8 = 0;
pub(crate) const WIRE_FIXED64: u8 = 1;
pub(crate) const WIRE_LEN: u8 = 2;
pub(crate) const WIRE_FIXED32: u8 = 5;

/// Cursor over a protobuf-encoded buffer.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn varint(&mut self) -> Result<u64, PbErr> {
        let (v, n) = read_varint(&self.buf[self.pos.min(self.buf.len())..])?;
        self.pos += n;
        Ok(v)
    }

    /// Reads a field key, returning (field number, wire type).
    pub(crate) fn key(&mut self) -> Result<(u64, u8), PbErr> {
        let k = self.varint()?;
        let field = k >> 3;
        if field == 0 || field > (1 << 29) - 1 {
            return Err(PbErr::BadFieldNumber);
        }
        Ok((field, (k & 7) as u8))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], PbErr> {
        let n = self.varint()?;
        if n > self.remaining() as u64 {
            return Err(PbErr::Truncated);
        }
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn fixed32(&mut self) -> Result<u32, PbErr> {
        if self.remaining() < 4 {
            return Err(PbErr::Truncated);
        }
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.buf[self.pos..self.pos + 4]);
        self.pos += 4;
        Ok(u32::from_le_bytes(b))
    }

    fn fixed64(&mut self) -> Result<u64, PbErr> {
        if self.remaining() < 8 {
            return Err(PbErr::Truncated);
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buf[self.pos..self.pos + 8]);
        self.pos += 8;
        Ok(u64::from_le_bytes(b))
    }

    /// Skips the value of a field with the given wire type.
    pub(crate) fn skip(&mut self, wire: u8) -> Result<(), PbErr> {
        match wire {
            WIRE_VARINT => self.varint().map(|_| ()),
            WIRE_FIXED64 => self.fixed64().map(|_| ()),
            WIRE_LEN => self.bytes().map(|_| ()),
            WIRE_FIXED32 => self.fixed32().map(|_| ()),
            w => Err(PbErr::BadWireType(w)),
        }
    }
}

/// Reads a (protobuf / multiformats) unsigned varint from the start of `buf`, returning
/// the value and the number of bytes used.
pub(crate) fn read_varint(buf: &[u8]) -> Result<(u64, usize), PbErr> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let b = *buf.get(i).ok_or(PbErr::Truncated)?;
        if i == 9 && b > 1 {
            return Err(PbErr::VarintOverflow);
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(PbErr::VarintOverflow)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

pub(crate) fn put_key(out: &mut Vec<u8>, field: u64, wire: u8) {
    put_varint(out, (field << 3) | u64::from(wire));
}

pub(crate) fn put_bytes_field(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    put_key(out, field, WIRE_LEN);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

pub(crate) fn put_varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
    put_key(out, field, WIRE_VARINT);
    put_varint(out, v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_roundtrip_and_len() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            assert_eq!(read_varint(&out).unwrap(), (v, out.len()));
        }
    }

    #[test]
    fn varint_errors() {
        assert_eq!(read_varint(&[]), Err(PbErr::Truncated));
        assert_eq!(read_varint(&[0x80]), Err(PbErr::Truncated));
        assert_eq!(read_varint(&[0xff; 10]), Err(PbErr::VarintOverflow));
        let mut ten = [0xffu8; 10];
        ten[9] = 0x02;
        assert_eq!(read_varint(&ten), Err(PbErr::VarintOverflow));
    }

    #[test]
    fn reader_bytes_bounds() {
        let mut r = Reader::new(&[0x05, 1, 2]);
        assert_eq!(r.bytes(), Err(PbErr::Truncated));
        let mut r = Reader::new(&[0x08]);
        assert_eq!(r.key(), Ok((1, 0)));
        let mut r = Reader::new(&[0x00]);
        assert_eq!(r.key(), Err(PbErr::BadFieldNumber));
        let mut r = Reader::new(&[0x0b]);
        let (_, w) = r.key().unwrap();
        assert_eq!(r.skip(w), Err(PbErr::BadWireType(3)));
    }
}
