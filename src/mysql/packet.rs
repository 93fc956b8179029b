//! MySQL packet framing, sans-IO: the 4-byte header (`int<3>` payload length, `int<1>` sequence id)
//! and the 16 MiB split rule.
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_packets.html>.
//! Decoding works on a `BytesMut` the caller fills from a socket; it returns `Ok(None)` until a whole
//! packet is buffered and rejects payloads larger than the caller's bound before buffering them, so a
//! peer cannot make the proxy allocate what it announces.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::Error;

/// Largest payload of one physical packet; a longer logical payload continues in the next packet.
pub const MAX_PAYLOAD_LEN: usize = 0xFF_FFFF;

/// Size of the packet header.
pub const HEADER_LEN: usize = 4;

/// One physical packet of the connection phase.
#[derive(Clone, PartialEq, Eq)]
pub struct Packet {
    /// `int<1>` sequence id.
    pub seq: u8,
    /// The payload (`string<var>`), without the header.
    pub payload: Bytes,
}

impl std::fmt::Debug for Packet {
    // Payloads may carry tokens or passwords: print only their shape.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packet")
            .field("seq", &self.seq)
            .field("len", &self.payload.len())
            .field("first_byte", &self.payload.first())
            .finish()
    }
}

/// Reads the header at the start of `buf`, if four bytes are there.
pub fn peek_header(buf: &[u8]) -> Option<(usize, u8)> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], 0]) as usize;
    Some((len, buf[3]))
}

/// Takes one whole physical packet off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. A payload of `max_payload` or more bytes (which
/// includes the 16 MiB continuation case) is [`Error::PacketTooLarge`]: connection-phase packets are
/// small, and a continuation there is a protocol violation.
pub fn decode(buf: &mut BytesMut, max_payload: usize) -> Result<Option<Packet>, Error> {
    let Some((len, seq)) = peek_header(buf) else {
        return Ok(None);
    };
    if len > max_payload || len == MAX_PAYLOAD_LEN {
        return Err(Error::PacketTooLarge {
            len,
            max: max_payload.min(MAX_PAYLOAD_LEN - 1),
        });
    }
    if buf.len() < HEADER_LEN + len {
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(len).freeze();
    Ok(Some(Packet { seq, payload }))
}

/// Appends `payload` as one logical packet starting at sequence id `seq`, split into 16 MiB physical
/// packets (with a trailing empty packet when the length is an exact multiple). Returns the sequence
/// id that follows.
pub fn encode(seq: u8, payload: &[u8], dst: &mut BytesMut) -> u8 {
    let mut seq = seq;
    let mut rest = payload;
    dst.reserve(payload.len() + HEADER_LEN * (payload.len() / MAX_PAYLOAD_LEN + 1));
    loop {
        let n = rest.len().min(MAX_PAYLOAD_LEN);
        dst.put_uint_le(n as u64, 3);
        dst.put_u8(seq);
        dst.put_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_PAYLOAD_LEN {
            return seq;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_only_whole_packets() {
        let mut b = BytesMut::from(&[3u8, 0, 0, 7, b'a', b'b'][..]);
        assert_eq!(decode(&mut b, 1024).unwrap(), None);
        b.put_u8(b'c');
        b.put_u8(0xAA);
        let p = decode(&mut b, 1024).unwrap().unwrap();
        assert_eq!((p.seq, &p.payload[..]), (7, &b"abc"[..]));
        assert_eq!(&b[..], &[0xAA]);
    }

    #[test]
    fn zero_length_packet() {
        let mut b = BytesMut::from(&[0u8, 0, 0, 9][..]);
        let p = decode(&mut b, 16).unwrap().unwrap();
        assert_eq!((p.seq, p.payload.len()), (9, 0));
    }

    #[test]
    fn oversized_announcement_is_rejected_before_buffering() {
        let mut b = BytesMut::from(&[0xFFu8, 0xFF, 0x0F, 0][..]);
        assert!(matches!(
            decode(&mut b, 64 * 1024),
            Err(Error::PacketTooLarge { len: 0x0F_FFFF, .. })
        ));
        assert!(b.capacity() < 1024 * 1024);
    }

    #[test]
    fn encode_splits_at_16_mib_with_trailing_empty_packet() {
        for (len, packets) in [
            (0, 1),
            (10, 1),
            (MAX_PAYLOAD_LEN - 1, 1),
            (MAX_PAYLOAD_LEN, 2),
            (MAX_PAYLOAD_LEN + 1, 2),
            (2 * MAX_PAYLOAD_LEN, 3),
        ] {
            let payload = vec![0x5Au8; len];
            let mut out = BytesMut::new();
            let next = encode(250, &payload, &mut out);
            assert_eq!(next, 250u8.wrapping_add(packets as u8), "len {len}");
            // Walk the headers back.
            let (mut off, mut seen, mut total) = (0, 0, 0);
            while off < out.len() {
                let (l, s) = peek_header(&out[off..]).unwrap();
                assert_eq!(s, 250u8.wrapping_add(seen as u8));
                total += l;
                off += HEADER_LEN + l;
                seen += 1;
            }
            assert_eq!((seen, total), (packets, len));
        }
    }
}
