//! Zig-zag variable-length integers, as Kafka's `ByteUtils.writeVarint`/`writeVarlong` (the
//! protobuf `sint32`/`sint64` encoding). Every length and delta inside a v2 record uses them.

use super::RecordError;

/// Appends `value` as a zig-zag varint (at most 5 bytes).
#[inline]
pub fn put_varint(buf: &mut Vec<u8>, value: i32) {
    put_unsigned(buf, ((value << 1) ^ (value >> 31)) as u32 as u64);
}

/// Appends `value` as a zig-zag varlong (at most 10 bytes).
#[inline]
pub fn put_varlong(buf: &mut Vec<u8>, value: i64) {
    put_unsigned(buf, ((value << 1) ^ (value >> 63)) as u64);
}

#[inline]
fn put_unsigned(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Number of bytes [`put_varint`] writes for `value`.
#[inline]
pub fn varint_size(value: i32) -> usize {
    unsigned_size(((value << 1) ^ (value >> 31)) as u32 as u64)
}

/// Number of bytes [`put_varlong`] writes for `value`.
#[inline]
pub fn varlong_size(value: i64) -> usize {
    unsigned_size(((value << 1) ^ (value >> 63)) as u64)
}

#[inline]
fn unsigned_size(v: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 still takes a byte.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// A cursor over a byte slice for decoding record fields.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    fn unsigned(&mut self, max_bytes: usize) -> Result<u64, RecordError> {
        let mut result = 0u64;
        for i in 0..max_bytes {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(RecordError::MalformedRecord("varint runs past the end"));
            };
            self.pos += 1;
            result |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(result);
            }
        }
        Err(RecordError::MalformedRecord("varint is too long"))
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> Result<i32, RecordError> {
        let raw = self.unsigned(5)?;
        if raw > u32::MAX as u64 {
            return Err(RecordError::MalformedRecord("varint overflows 32 bits"));
        }
        let raw = raw as u32;
        Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
    }

    #[inline]
    pub(crate) fn varlong(&mut self) -> Result<i64, RecordError> {
        let raw = self.unsigned(10)?;
        Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
    }

    #[inline]
    pub(crate) fn i8(&mut self) -> Result<i8, RecordError> {
        Ok(self.bytes(1)?[0] as i8)
    }

    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.remaining() < n {
            return Err(RecordError::MalformedRecord("field runs past the end of the record"));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// A varint length followed by that many bytes; -1 means null.
    #[inline]
    pub(crate) fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, RecordError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < -1 => Err(RecordError::MalformedRecord("negative field length")),
            n => Ok(Some(self.bytes(n as usize)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trips(v: i32) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            prop_assert_eq!(buf.len(), varint_size(v));
            let mut r = Reader::new(&buf);
            prop_assert_eq!(r.varint().unwrap(), v);
            prop_assert_eq!(r.remaining(), 0);
        }

        #[test]
        fn varlong_round_trips(v: i64) {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            prop_assert_eq!(buf.len(), varlong_size(v));
            let mut r = Reader::new(&buf);
            prop_assert_eq!(r.varlong().unwrap(), v);
        }
    }

    #[test]
    fn known_encodings_match_kafka() {
        // From Kafka's ByteUtilsTest: zig-zag maps 0,-1,1,-2 to 0,1,2,3.
        let cases: [(i32, &[u8]); 5] =
            [(0, &[0x00]), (-1, &[0x01]), (1, &[0x02]), (-64, &[0x7f]), (64, &[0x80, 0x01])];
        for (v, bytes) in cases {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf, bytes, "varint {v}");
        }
    }

    #[test]
    fn truncated_and_overlong_varints_are_errors() {
        assert!(Reader::new(&[0x80]).varint().is_err());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).varint().is_err());
    }
}
