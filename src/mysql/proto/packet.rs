//! MySQL packet framing, sans-IO: the 4-byte header (`int<3>` payload length, `int<1>` sequence id)
//! and the 16 MiB split rule.
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_packets.html>.
//! Decoding works on a `BytesMut` the caller fills from a socket; it returns `Ok(None)` until a whole
//! packet is buffered and rejects payloads larger than the caller's bound before buffering them, so a
//! peer cannot make the proxy allocate what it announces.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::Error;

/// Largest payload accepted during login. Handshake responses carry at most 64 KiB of connection
/// attributes; anything larger is hostile.
pub const MAX_LOGIN_PAYLOAD: usize = 128 * 1024;

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

/// Follows packet boundaries in a stream it is not otherwise parsing (the server's answers after
/// login), so that the proxy can tell where a packet of its own may be put: after the last complete
/// logical packet, with the sequence id that follows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Boundaries {
    /// Header bytes of the packet being read, when fewer than four have arrived.
    header: [u8; HEADER_LEN],
    /// How many of `header` are filled.
    header_len: usize,
    /// Payload bytes of the current packet still to come.
    payload_left: usize,
    /// The packet being read is a 16 MiB one, so another packet continues it.
    continued: bool,
    /// Bytes seen.
    offset: u64,
    /// Offset just after the last complete logical packet.
    boundary: u64,
    /// Sequence id of the last physical packet whose header was read.
    last_seq: Option<u8>,
    /// Sequence id of the last complete logical packet.
    boundary_seq: Option<u8>,
}

impl Boundaries {
    /// Accounts for the next `data` of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                self.offset += n as u64;
                data = &data[n..];
            } else {
                let n = (HEADER_LEN - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
                self.header_len += n;
                self.offset += n as u64;
                data = &data[n..];
                if self.header_len < HEADER_LEN {
                    break;
                }
                self.header_len = 0;
                let (len, seq) = peek_header(&self.header).expect("four header bytes");
                self.last_seq = Some(seq);
                self.payload_left = len;
                self.continued = len == MAX_PAYLOAD_LEN;
            }
            if self.payload_left == 0 && self.header_len == 0 && !self.continued {
                self.boundary = self.offset;
                self.boundary_seq = self.last_seq;
            }
        }
    }

    /// Offset (bytes since the start) just after the last complete logical packet.
    pub fn boundary(&self) -> u64 {
        self.boundary
    }

    /// The sequence id a packet placed at [`Self::boundary`] takes (the answer's next one).
    pub fn next_seq(&self) -> u8 {
        self.boundary_seq.map_or(0, |s| s.wrapping_add(1))
    }
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

    #[test]
    fn boundaries_follow_packets_across_any_chunking() {
        let mut stream = BytesMut::new();
        encode(1, b"column count", &mut stream);
        encode(2, &vec![7u8; 300], &mut stream);
        let big_end = stream.len();
        encode(3, &vec![9u8; MAX_PAYLOAD_LEN + 10], &mut stream);
        let total = stream.len();
        for step in [1, 3, 4, 5, 1000, 1 << 20, total] {
            let mut b = Boundaries::default();
            let mut seen = Vec::new();
            for chunk in stream.chunks(step) {
                b.feed(chunk);
                seen.push((b.boundary(), b.next_seq()));
            }
            assert_eq!(b.boundary(), total as u64, "step {step}");
            // Two physical packets made the last logical one: seq 3 and 4.
            assert_eq!(b.next_seq(), 5);
            // Inside the split packet the boundary never moved past its start.
            assert!(
                seen.iter()
                    .all(|&(o, _)| o == total as u64 || o <= big_end as u64)
            );
        }
    }
}
