//! Framing, sans-IO, and the checked reader every decoder uses.
//!
//! Two shapes share the stream: a client's first packets (`SSLRequest`, `GSSENCRequest`,
//! `StartupMessage`, `CancelRequest`) are `int32 length` + body, with no type byte; every other
//! message, in both directions, is `Byte1 type` + `int32 length` + body. Lengths are big-endian
//! and count themselves but not the type byte. [`take_startup`] and [`take_message`] work on a
//! `BytesMut` the caller fills from a socket: they return `Ok(None)` until a whole packet is
//! buffered, and reject a length above the caller's bound, negative, or below its own size before
//! reserving anything, so a peer cannot make the proxy allocate what it announces.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::Error;

/// PostgreSQL's own bound on a startup packet (`MAX_STARTUP_PACKET_LENGTH`), length word included.
pub const MAX_STARTUP_LEN: usize = 10_000;

/// A sensible bound on one connection-phase message body in either direction: SASL messages,
/// error texts and IAM tokens (under 2 KiB) all fit many times over.
pub const MAX_LOGIN_MESSAGE_LEN: usize = 64 * 1024;

/// True when `buf` starts like a TLS handshake record (content type 22, version 3.x): a
/// PostgreSQL 17 client with `sslnegotiation=direct` starts TLS at once instead of sending
/// `SSLRequest`. Read as a length word, those bytes would announce some 370 MB.
pub fn looks_like_tls_client_hello(buf: &[u8]) -> bool {
    matches!(buf, [0x16, 0x03, ..])
}

/// One typed message: the type byte and the body (after the length word).
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// `Byte1`: the message type.
    pub tag: u8,
    /// The body, without the type byte and the length word.
    pub body: Bytes,
}

impl std::fmt::Debug for Message {
    // Bodies may carry passwords, tokens or SASL proofs: print only their shape.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("tag", &char::from(self.tag))
            .field("len", &self.body.len())
            .finish()
    }
}

/// Reads a length word at `at`, checks it against `min` and `max`, returns the body length.
/// `counted` says what [`Error::TooLong`] reports: the whole packet (startup packets, whose
/// bound PostgreSQL states that way) or the body.
fn checked_len(
    buf: &[u8],
    at: usize,
    min: usize,
    max: usize,
    counted: Counted,
) -> Result<Option<usize>, Error> {
    let Some(word) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([word[0], word[1], word[2], word[3]]);
    if len < 0 || (len as usize) < min {
        return Err(Error::TooShort {
            len: i64::from(len),
            min,
        });
    }
    let body = len as usize - 4;
    let reported = match counted {
        Counted::Packet => len as usize,
        Counted::Body => body,
    };
    if reported > max {
        return Err(Error::TooLong {
            len: reported as u64,
            max,
        });
    }
    Ok(Some(body))
}

/// What a length bound counts.
#[derive(Clone, Copy)]
enum Counted {
    /// The whole packet, length word included.
    Packet,
    /// The body only.
    Body,
}

/// Takes one untyped startup packet off the front of `buf` and returns its body (starting with
/// the `int32` request code or protocol version). `max_len` bounds the whole packet, length word
/// included; PostgreSQL uses [`MAX_STARTUP_LEN`].
pub fn take_startup(buf: &mut BytesMut, max_len: usize) -> Result<Option<Bytes>, Error> {
    let Some(body) = checked_len(buf, 0, 8, max_len, Counted::Packet)? else {
        return Ok(None);
    };
    if buf.len() < 4 + body {
        buf.reserve(4 + body - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(body).freeze()))
}

/// Takes one typed message off the front of `buf`; `max_body` bounds its body.
pub fn take_message(buf: &mut BytesMut, max_body: usize) -> Result<Option<Message>, Error> {
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    let Some(body) = checked_len(buf, 1, 4, max_body, Counted::Body)? else {
        return Ok(None);
    };
    if buf.len() < 5 + body {
        buf.reserve(5 + body - buf.len());
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(Message {
        tag,
        body: buf.split_to(body).freeze(),
    }))
}

/// Appends a typed message. Bodies are built by this codec and stay far below 2 GiB.
pub fn put_message(tag: u8, body: &[u8], dst: &mut BytesMut) {
    dst.reserve(5 + body.len());
    dst.put_u8(tag);
    dst.put_u32(len_word(body.len()));
    dst.put_slice(body);
}

/// Appends an untyped startup packet.
pub fn put_startup(body: &[u8], dst: &mut BytesMut) {
    dst.reserve(4 + body.len());
    dst.put_u32(len_word(body.len()));
    dst.put_slice(body);
}

fn len_word(body: usize) -> u32 {
    u32::try_from(body + 4)
        .ok()
        .filter(|l| *l <= i32::MAX as u32)
        .expect("message bodies the codec builds stay below 2 GiB")
}

/// A cursor over one message body. Reads never panic: a short body is an [`Error::Truncated`].
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    /// The body being read.
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

    /// `Byten`: the next `n` bytes.
    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Error> {
        if self.remaining() < n {
            return Err(Error::Truncated { field });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// `Byte1`.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, Error> {
        Ok(self.bytes(1, field)?[0])
    }

    /// `Int32`, big-endian, unsigned reading.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, Error> {
        let b = self.bytes(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `Int32`, big-endian, signed reading.
    pub fn i32(&mut self, field: &'static str) -> Result<i32, Error> {
        Ok(self.u32(field)? as i32)
    }

    /// `String`: bytes up to a NUL, which is consumed and not returned.
    pub fn cstr(&mut self, field: &'static str) -> Result<&'a [u8], Error> {
        let rest = &self.buf[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == 0) else {
            return Err(Error::Truncated { field });
        };
        self.pos += end + 1;
        Ok(&rest[..end])
    }

    /// `String` that must be UTF-8.
    pub fn cstr_utf8(&mut self, field: &'static str) -> Result<&'a str, Error> {
        std::str::from_utf8(self.cstr(field)?).map_err(|_| Error::Malformed {
            field,
            reason: "not UTF-8",
        })
    }

    /// Fails unless every byte has been read.
    pub fn finish(&self, field: &'static str) -> Result<(), Error> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error::Malformed {
                field,
                reason: "trailing bytes after the last field",
            })
        }
    }
}

/// Appends a `String` (the bytes and a NUL). The caller has checked there is no NUL inside.
pub fn put_cstr(dst: &mut BytesMut, s: &[u8]) {
    dst.put_slice(s);
    dst.put_u8(0);
}

/// Fails if `s` holds a NUL, which a `String` field cannot carry.
pub fn check_no_nul(s: &[u8], field: &'static str) -> Result<(), Error> {
    if s.contains(&0) {
        Err(Error::Malformed {
            field,
            reason: "contains a NUL byte",
        })
    } else {
        Ok(())
    }
}

/// Where typed messages begin and end in a stream the caller copies without parsing (the relay
/// after login): it reads only each message's type byte and length word, so it costs nothing per
/// body byte. A length word below 4 (a corrupt stream) makes the stream unknown for good:
/// [`Boundaries::at_boundary`] is false from then on, so nothing is ever inserted there.
#[derive(Debug, Default, Clone)]
pub struct Boundaries {
    /// Bytes fed so far.
    seen: u64,
    /// Stream offset of the next message's type byte.
    next: u64,
    /// Stream offset where the message being read began.
    start: u64,
    /// The header of the message being read, as far as it has come.
    header: [u8; 5],
    /// How many header bytes have come.
    have: usize,
    /// The type byte of the last message whose header was read whole.
    last_tag: Option<u8>,
    /// A length word below 4 was seen.
    broken: bool,
}

impl Boundaries {
    /// Takes note of the next `data` of the stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.broken {
            if self.seen < self.next {
                let skip = (self.next - self.seen).min(data.len() as u64) as usize;
                self.seen += skip as u64;
                data = &data[skip..];
                continue;
            }
            if self.have == 0 {
                self.start = self.seen;
            }
            let take = (5 - self.have).min(data.len());
            self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            self.seen += take as u64;
            data = &data[take..];
            if self.have == 5 {
                let h = self.header;
                let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
                if len < 4 {
                    self.broken = true;
                    return;
                }
                self.next = self.seen + u64::from(len - 4);
                self.last_tag = Some(h[0]);
                self.have = 0;
            }
        }
    }

    /// Bytes fed so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// True when the bytes fed so far end exactly after a whole message.
    pub fn at_boundary(&self) -> bool {
        !self.broken && self.have == 0 && self.seen == self.next
    }

    /// The stream offset of the last boundary at or before what was fed: where the message not
    /// yet complete began, or the end when every message is whole.
    pub fn boundary(&self) -> u64 {
        if self.at_boundary() {
            self.seen
        } else {
            self.start
        }
    }

    /// The type byte of the last message whose header has been read.
    pub fn last_tag(&self) -> Option<u8> {
        self.last_tag
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_messages_come_whole_across_any_chunking() {
        let mut stream = BytesMut::new();
        put_message(b'R', &[0, 0, 0, 3], &mut stream);
        put_message(b'Z', b"I", &mut stream);
        put_message(b'X', b"", &mut stream);
        for step in 1..=stream.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(step) {
                buf.extend_from_slice(chunk);
                while let Some(m) = take_message(&mut buf, 1024).unwrap() {
                    got.push((m.tag, m.body.to_vec()));
                }
            }
            assert_eq!(
                got,
                vec![
                    (b'R', vec![0, 0, 0, 3]),
                    (b'Z', b"I".to_vec()),
                    (b'X', vec![])
                ],
                "step {step}"
            );
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn startup_packets_come_whole() {
        let mut stream = BytesMut::new();
        put_startup(&[0x04, 0xd2, 0x16, 0x2f], &mut stream);
        let mut buf = BytesMut::new();
        for (i, b) in stream.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let got = take_startup(&mut buf, MAX_STARTUP_LEN).unwrap();
            assert_eq!(got.is_some(), i == stream.len() - 1);
        }
    }

    #[test]
    fn bad_lengths_are_typed_errors_before_any_buffering() {
        // Oversized typed message: 1 GiB announced.
        let mut b = BytesMut::from(&[b'D', 0x40, 0, 0, 0][..]);
        assert!(matches!(
            take_message(&mut b, MAX_LOGIN_MESSAGE_LEN),
            Err(Error::TooLong { .. })
        ));
        assert!(b.capacity() < 1024);
        // Negative.
        let mut b = BytesMut::from(&[b'R', 0xff, 0xff, 0xff, 0xf0][..]);
        assert!(matches!(
            take_message(&mut b, 1024),
            Err(Error::TooShort { len: -16, min: 4 })
        ));
        // Shorter than itself.
        let mut b = BytesMut::from(&[b'R', 0, 0, 0, 3][..]);
        assert!(matches!(
            take_message(&mut b, 1024),
            Err(Error::TooShort { len: 3, .. })
        ));
        // Startup: below 8, above the PostgreSQL bound, a TLS ClientHello.
        let mut b = BytesMut::from(&[0, 0, 0, 7, 0, 3, 0][..]);
        assert!(matches!(
            take_startup(&mut b, MAX_STARTUP_LEN),
            Err(Error::TooShort { len: 7, min: 8 })
        ));
        let mut b = BytesMut::from(&[0, 0, 0x27, 0x11][..]);
        assert!(matches!(
            take_startup(&mut b, MAX_STARTUP_LEN),
            Err(Error::TooLong { len: 10_001, .. })
        ));
        let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
        assert!(looks_like_tls_client_hello(&hello));
        let mut b = BytesMut::from(&hello[..]);
        assert!(take_startup(&mut b, MAX_STARTUP_LEN).is_err());
        assert!(b.capacity() < 1024);
    }

    #[test]
    fn boundaries_follow_messages_across_any_chunking() {
        let mut stream = BytesMut::new();
        put_message(b'D', &[1; 300], &mut stream);
        put_message(b'C', b"SELECT 1\0", &mut stream);
        put_message(b'Z', b"I", &mut stream);
        let ends = [305u64, 305 + 14, 305 + 14 + 6];
        for step in 1..=stream.len() {
            let mut b = Boundaries::default();
            for chunk in stream.chunks(step) {
                b.feed(chunk);
                let at = ends.contains(&b.seen());
                assert_eq!(b.at_boundary(), at, "step {step} at {}", b.seen());
                let expect = ends
                    .iter()
                    .rev()
                    .find(|e| **e <= b.seen())
                    .copied()
                    .unwrap_or(0);
                assert_eq!(b.boundary(), expect, "step {step} at {}", b.seen());
            }
            assert_eq!(b.last_tag(), Some(b'Z'));
        }
        // A length word below 4: never a boundary again.
        let mut b = Boundaries::default();
        b.feed(&[b'Z', 0, 0, 0, 3, b'Z', 0, 0, 0, 5, b'I']);
        assert!(!b.at_boundary());
    }

    #[test]
    fn reader_never_reads_past_the_end() {
        let mut r = Reader::new(b"ab\0c");
        assert_eq!(r.cstr("s").unwrap(), b"ab");
        assert!(matches!(r.cstr("t"), Err(Error::Truncated { field: "t" })));
        assert!(matches!(r.u32("n"), Err(Error::Truncated { field: "n" })));
        assert_eq!(r.u8("c").unwrap(), b'c');
        r.finish("end").unwrap();
    }
}
