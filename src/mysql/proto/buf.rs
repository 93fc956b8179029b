//! Checked readers and writers for the MySQL wire types (`int<n>`, `int<lenenc>`, `string<NUL>`,
//! `string<lenenc>`, `string<EOF>`).
//!
//! Every read checks the remaining length first and fails with [`Error::Truncated`] naming the field,
//! so no peer byte sequence can make a decoder panic or over-allocate.

use bytes::{BufMut, BytesMut};

use super::Error;

/// A cursor over one packet payload. Reads never panic: a short payload is an [`Error::Truncated`].
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    /// The payload being read.
    buf: &'a [u8],
    /// Offset of the next unread byte.
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf` at offset 0.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next byte, without consuming it.
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// `string<fix>`: the next `n` bytes.
    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Error> {
        if self.remaining() < n {
            return Err(Error::Truncated { field });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// `string<EOF>`: everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// `int<1>`.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, Error> {
        Ok(self.bytes(1, field)?[0])
    }

    /// `int<2>`, little-endian.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, Error> {
        let b = self.bytes(2, field)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// `int<3>`, little-endian.
    pub fn u24(&mut self, field: &'static str) -> Result<u32, Error> {
        let b = self.bytes(3, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    /// `int<4>`, little-endian.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, Error> {
        let b = self.bytes(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `int<8>`, little-endian.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, Error> {
        let b = self.bytes(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// `int<lenenc>`. `0xFB` (NULL) and `0xFF` (ERR marker) are not valid integers here.
    pub fn lenenc_int(&mut self, field: &'static str) -> Result<u64, Error> {
        match self.u8(field)? {
            n @ 0..=0xFA => Ok(u64::from(n)),
            0xFC => Ok(u64::from(self.u16(field)?)),
            0xFD => Ok(u64::from(self.u24(field)?)),
            0xFE => self.u64(field),
            _ => Err(Error::Malformed {
                field,
                reason: "invalid length-encoded integer prefix",
            }),
        }
    }

    /// `string<lenenc>`: a length-encoded integer, then that many bytes (bounded by the payload).
    pub fn lenenc_bytes(&mut self, field: &'static str) -> Result<&'a [u8], Error> {
        let len = self.lenenc_int(field)?;
        let len = usize::try_from(len).map_err(|_| Error::Truncated { field })?;
        self.bytes(len, field)
    }

    /// `string<NUL>`: bytes up to (not including) the next NUL, which is consumed.
    pub fn nul_bytes(&mut self, field: &'static str) -> Result<&'a [u8], Error> {
        let rest = &self.buf[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(Error::Truncated { field })?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    /// `string<NUL>` when the terminator may be missing at the very end of the packet (some servers
    /// and clients omit the last NUL).
    pub fn nul_bytes_or_rest(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos..];
        match rest.iter().position(|&b| b == 0) {
            Some(end) => {
                self.pos += end + 1;
                &rest[..end]
            }
            None => self.rest(),
        }
    }
}

/// Writes `int<lenenc>`.
pub fn put_lenenc_int(dst: &mut BytesMut, n: u64) {
    match n {
        0..=0xFA => dst.put_u8(n as u8),
        0xFB..=0xFFFF => {
            dst.put_u8(0xFC);
            dst.put_u16_le(n as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            dst.put_u8(0xFD);
            dst.put_uint_le(n, 3);
        }
        _ => {
            dst.put_u8(0xFE);
            dst.put_u64_le(n);
        }
    }
}

/// Writes `string<lenenc>`.
pub fn put_lenenc_bytes(dst: &mut BytesMut, b: &[u8]) {
    put_lenenc_int(dst, b.len() as u64);
    dst.put_slice(b);
}

/// Writes `string<NUL>`. The caller guarantees `b` has no NUL (decoders only produce such values).
pub fn put_nul_bytes(dst: &mut BytesMut, b: &[u8]) {
    dst.put_slice(b);
    dst.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_round_trips_at_every_width_boundary() {
        for n in [
            0u64,
            1,
            0xFA,
            0xFB,
            0xFC,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut b = BytesMut::new();
            put_lenenc_int(&mut b, n);
            let mut r = Reader::new(&b);
            assert_eq!(r.lenenc_int("n").unwrap(), n, "value {n:#x}");
            assert!(r.is_empty());
        }
    }

    #[test]
    fn lenenc_rejects_null_and_err_prefixes() {
        for p in [0xFBu8, 0xFF] {
            assert!(matches!(
                Reader::new(&[p]).lenenc_int("n"),
                Err(Error::Malformed { .. })
            ));
        }
    }

    #[test]
    fn short_reads_are_errors_not_panics() {
        let mut r = Reader::new(&[0xFE, 1, 2]);
        assert!(matches!(
            r.lenenc_int("x"),
            Err(Error::Truncated { field: "x" })
        ));
        let mut r = Reader::new(&[5, b'a']);
        assert!(r.lenenc_bytes("s").is_err());
        let mut r = Reader::new(b"abc");
        assert!(r.nul_bytes("s").is_err());
        // A huge declared length never allocates: it is checked against what is there.
        let mut r = Reader::new(&[0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]);
        assert!(r.lenenc_bytes("s").is_err());
    }

    #[test]
    fn nul_strings() {
        let mut r = Reader::new(b"root\0db");
        assert_eq!(r.nul_bytes("u").unwrap(), b"root");
        assert_eq!(r.nul_bytes_or_rest(), b"db");
        assert!(r.is_empty());
    }
}
