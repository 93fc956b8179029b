//! smux protocol version 1 frames: the multiplexing both reference ends run over the concatenated
//! Output (PayloadType 1) payloads of a port session in mux mode (spec §7.4).
//!
//! This file owns the 8-byte little-endian frame header, a sans-IO decoder over [`BytesMut`], the
//! encoder, and the client's stream-id allocation. The session itself (stream table, accept queue,
//! the 4 MiB session-wide receive budget, FIN handling) is a later layer.
//!
//! Semantics follow `xtaci/smux` v1.5.16 as vendored by `aws/session-manager-plugin`
//! (`vendor/src/github.com/xtaci/smux/{frame,session,mux}.go`; the agent vendors v1.5.15, identical on
//! the wire):
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 1 | version = 1 |
//! | 1 | 1 | cmd: 0 SYN, 1 FIN, 2 PSH, 3 NOP (4 UPD exists only in v2) |
//! | 2 | 2 | length of the data that follows, u16 LE (PSH only) |
//! | 4 | 4 | stream id, u32 LE |
//!
//! Where the Go receiver is looser, this decoder refuses, with an error, what no v1 sender produces:
//! a UPD frame (Go v1 would read its 8-byte body), a non-zero length on SYN/FIN/NOP (Go ignores the
//! field and would then misread the following bytes as a header), and PSH frames above the
//! configured maximum (Go accepts up to 65535; every sender splits at `MaxFrameSize` = 32768).
//!
//! Stream ids: the client (the plugin; us) opens odd ids 3, 5, 7, … — the Go session's counter
//! starts at 1 and is advanced by 2 *before* use — up to `u32::MAX`, after which it refuses to open
//! more streams (`ErrGoAway`). The agent is the server: it never opens streams and accepts a SYN for
//! any id, ignoring a duplicate SYN. NOP frames carry stream id 0.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::Error;

/// The only protocol version spoken here (and the only one the agent accepts).
pub const VERSION: u8 = 1;

/// Size of a frame header.
pub const HEADER_LEN: usize = 8;

/// `MaxFrameSize` of smux `DefaultConfig`, used by both reference ends: the most data one PSH frame
/// carries.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 32768;

/// `MaxReceiveBuffer` of smux `DefaultConfig`: the session-wide budget of received-but-unread data
/// after which a Go receiver stops reading (for the session layer).
pub const MAX_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

/// The first stream id a client opens.
pub const FIRST_CLIENT_STREAM_ID: u32 = 3;

/// A frame command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cmd {
    /// Open a stream.
    Syn = 0,
    /// Close a stream (there is no half-close and no reset).
    Fin = 1,
    /// Data for a stream.
    Psh = 2,
    /// Keep-alive, stream id 0, no data.
    Nop = 3,
}

impl Cmd {
    /// The command's name as smux writes it.
    pub fn name(self) -> &'static str {
        match self {
            Cmd::Syn => "SYN",
            Cmd::Fin => "FIN",
            Cmd::Psh => "PSH",
            Cmd::Nop => "NOP",
        }
    }
}

/// One smux frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame does.
    pub cmd: Cmd,
    /// The stream it belongs to (0 for NOP).
    pub stream_id: u32,
    /// PSH data; empty for every other command.
    pub data: Bytes,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("cmd", &self.cmd)
            .field("stream_id", &self.stream_id)
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl Frame {
    /// SYN: open `stream_id`.
    pub fn syn(stream_id: u32) -> Self {
        Self::control(Cmd::Syn, stream_id)
    }

    /// FIN: close `stream_id`.
    pub fn fin(stream_id: u32) -> Self {
        Self::control(Cmd::Fin, stream_id)
    }

    /// NOP keep-alive.
    pub fn nop() -> Self {
        Self::control(Cmd::Nop, 0)
    }

    /// PSH: `data` for `stream_id`; see [`encode_data`] to split large writes.
    pub fn psh(stream_id: u32, data: Bytes) -> Self {
        Self {
            cmd: Cmd::Psh,
            stream_id,
            data,
        }
    }

    fn control(cmd: Cmd, stream_id: u32) -> Self {
        Self {
            cmd,
            stream_id,
            data: Bytes::new(),
        }
    }

    /// Bytes [`Self::encode`] appends.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.data.len()
    }

    /// Appends the frame to `dst`.
    ///
    /// # Panics
    /// If a non-PSH frame carries data, or PSH data exceeds 65535 bytes (the u16 length field):
    /// both are caller bugs. [`encode_data`] never produces either.
    pub fn encode(&self, dst: &mut BytesMut) {
        assert!(
            self.cmd == Cmd::Psh || self.data.is_empty(),
            "smux {} frame must not carry data",
            self.cmd.name()
        );
        let len = u16::try_from(self.data.len())
            .expect("smux PSH data exceeds the u16 length field; split with encode_data");
        dst.reserve(self.encoded_len());
        dst.put_u8(VERSION);
        dst.put_u8(self.cmd as u8);
        dst.put_u16_le(len);
        dst.put_u32_le(self.stream_id);
        dst.put_slice(&self.data);
    }
}

/// Appends `data` for `stream_id` as PSH frames of at most `max_frame_size` bytes each, as smux's
/// `Stream.Write` splits. Empty `data` appends nothing.
///
/// # Panics
/// If `max_frame_size` is 0 or above 65535.
pub fn encode_data(stream_id: u32, data: &[u8], max_frame_size: usize, dst: &mut BytesMut) {
    assert!(
        (1..=u16::MAX as usize).contains(&max_frame_size),
        "smux max frame size must be 1..=65535"
    );
    dst.reserve(data.len() + data.len().div_ceil(max_frame_size) * HEADER_LEN);
    for chunk in data.chunks(max_frame_size) {
        dst.put_u8(VERSION);
        dst.put_u8(Cmd::Psh as u8);
        // Cannot truncate: chunks are at most max_frame_size <= 65535 (asserted above).
        dst.put_u16_le(chunk.len() as u16);
        dst.put_u32_le(stream_id);
        dst.put_slice(chunk);
    }
}

/// What one [`FrameDecoder::decode`] call found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A complete frame, removed from the buffer.
    Frame(Frame),
    /// Not enough bytes yet; nothing was consumed. At least `needed` more bytes are required.
    Incomplete {
        /// Minimum number of further bytes before a frame can complete.
        needed: usize,
    },
}

/// A sans-IO smux v1 frame decoder: feed it a buffer, get frames out.
///
/// Header fields are checked as soon as their bytes arrive, so a bad version or command fails
/// without waiting for a whole header, and an oversized PSH fails before its data is buffered.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    /// Largest PSH data length accepted.
    max_frame_size: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_SIZE)
    }
}

impl FrameDecoder {
    /// A decoder accepting PSH frames up to `max_frame_size` data bytes (clamped to 65535, the most
    /// the length field can say).
    pub fn new(max_frame_size: usize) -> Self {
        Self {
            max_frame_size: max_frame_size.min(u16::MAX as usize),
        }
    }

    /// The largest PSH data length this decoder accepts.
    pub fn max_frame_size(&self) -> usize {
        self.max_frame_size
    }

    /// Takes one frame off the front of `src`, or says how many more bytes are needed.
    ///
    /// On error the buffer is left as it was; the stream cannot be resynchronised and the smux
    /// session must end (as smux does on `ErrInvalidProtocol`).
    pub fn decode(&self, src: &mut BytesMut) -> Result<Decoded, Error> {
        if let Some(&version) = src.first()
            && version != VERSION
        {
            return Err(Error::SmuxVersion(version));
        }
        let cmd = match src.get(1) {
            None => None,
            Some(0) => Some(Cmd::Syn),
            Some(1) => Some(Cmd::Fin),
            Some(2) => Some(Cmd::Psh),
            Some(3) => Some(Cmd::Nop),
            Some(4) => {
                return Err(Error::SmuxCommand {
                    cmd: 4,
                    reason: "UPD belongs to smux v2",
                });
            }
            Some(&cmd) => {
                return Err(Error::SmuxCommand {
                    cmd,
                    reason: "unknown command",
                });
            }
        };
        if src.len() < HEADER_LEN {
            return Ok(Decoded::Incomplete {
                needed: HEADER_LEN - src.len(),
            });
        }
        let cmd = cmd.expect("header has 8 bytes, so byte 1 was read");
        let len = u16::from_le_bytes([src[2], src[3]]);
        let stream_id = u32::from_le_bytes([src[4], src[5], src[6], src[7]]);
        if cmd != Cmd::Psh {
            if len != 0 {
                return Err(Error::SmuxControlLength {
                    cmd: cmd.name(),
                    len,
                });
            }
            src.advance(HEADER_LEN);
            return Ok(Decoded::Frame(Frame::control(cmd, stream_id)));
        }
        let len = len as usize;
        if len > self.max_frame_size {
            return Err(Error::SmuxFrameTooLarge {
                len,
                max: self.max_frame_size,
            });
        }
        if src.len() < HEADER_LEN + len {
            return Ok(Decoded::Incomplete {
                needed: HEADER_LEN + len - src.len(),
            });
        }
        src.advance(HEADER_LEN);
        let data = src.split_to(len).freeze();
        Ok(Decoded::Frame(Frame::psh(stream_id, data)))
    }
}

/// Allocates the client's stream ids: 3, 5, 7, … up to `u32::MAX`, then refuses.
#[derive(Clone, Debug)]
pub struct ClientStreamIds {
    /// The next id to hand out; `None` once exhausted.
    next: Option<u32>,
}

impl Default for ClientStreamIds {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientStreamIds {
    /// Starts at [`FIRST_CLIENT_STREAM_ID`].
    pub fn new() -> Self {
        Self {
            next: Some(FIRST_CLIENT_STREAM_ID),
        }
    }

    /// The id for the next stream to open.
    pub fn next_id(&mut self) -> Result<u32, Error> {
        let id = self.next.ok_or(Error::SmuxStreamIdsExhausted)?;
        self.next = id.checked_add(2);
        Ok(id)
    }
}

/// Whether a stream id is one a client opens (odd). The agent does not check this; a session layer
/// acting as the server may.
pub fn is_client_stream_id(stream_id: u32) -> bool {
    stream_id % 2 == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// Spec §7.4 examples.
    const SYN_3: &[u8] = &[0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00];
    const PSH_3_HI: &[u8] = &[0x01, 0x02, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00, 0x68, 0x69];
    const FIN_3: &[u8] = &[0x01, 0x01, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00];
    const NOP: &[u8] = &[0x01, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];

    fn encode(frame: &Frame) -> Vec<u8> {
        let mut b = BytesMut::new();
        frame.encode(&mut b);
        b.to_vec()
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, Error> {
        let d = FrameDecoder::default();
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf)? {
                Decoded::Frame(f) => out.push(f),
                Decoded::Incomplete { .. } => {
                    assert!(buf.len() < HEADER_LEN || buf[1] == Cmd::Psh as u8);
                    return Ok(out);
                }
            }
        }
    }

    #[test]
    fn golden_frames_encode() {
        assert_eq!(encode(&Frame::syn(3)), SYN_3);
        assert_eq!(encode(&Frame::psh(3, Bytes::from_static(b"hi"))), PSH_3_HI);
        assert_eq!(encode(&Frame::fin(3)), FIN_3);
        assert_eq!(encode(&Frame::nop()), NOP);
    }

    #[test]
    fn golden_frames_decode_from_one_stream() {
        let stream = [SYN_3, PSH_3_HI, FIN_3, NOP].concat();
        let frames = decode_all(&stream).unwrap();
        assert_eq!(
            frames,
            vec![
                Frame::syn(3),
                Frame::psh(3, Bytes::from_static(b"hi")),
                Frame::fin(3),
                Frame::nop()
            ]
        );
    }

    #[test]
    fn little_endian_length_and_stream_id() {
        let data = vec![0xabu8; 0x0102];
        let mut b = BytesMut::new();
        Frame::psh(0x0403_0201, Bytes::from(data.clone())).encode(&mut b);
        assert_eq!(&b[..8], &[0x01, 0x02, 0x02, 0x01, 0x01, 0x02, 0x03, 0x04]);
        let Decoded::Frame(f) = FrameDecoder::default().decode(&mut b).unwrap() else {
            panic!("expected a frame");
        };
        assert_eq!(f.stream_id, 0x0403_0201);
        assert_eq!(&f.data[..], &data[..]);
        assert!(b.is_empty());
    }

    #[test]
    fn byte_by_byte_feeding_reports_incomplete_then_the_frame() {
        let d = FrameDecoder::default();
        let mut buf = BytesMut::new();
        for (i, &byte) in PSH_3_HI.iter().enumerate() {
            assert_eq!(
                d.decode(&mut buf).unwrap(),
                Decoded::Incomplete {
                    needed: if i < HEADER_LEN {
                        HEADER_LEN - i
                    } else {
                        PSH_3_HI.len() - i
                    }
                }
            );
            assert_eq!(buf.len(), i, "incomplete consumes nothing");
            buf.put_u8(byte);
        }
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Decoded::Frame(Frame::psh(3, Bytes::from_static(b"hi")))
        );
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            Decoded::Incomplete { needed: HEADER_LEN }
        );
    }

    #[test]
    fn empty_psh_is_a_frame() {
        let frames = decode_all(&[0x01, 0x02, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00]).unwrap();
        assert_eq!(frames, vec![Frame::psh(5, Bytes::new())]);
    }

    #[test]
    fn rejects_other_versions_at_the_first_byte() {
        for v in [0u8, 2, 0xff] {
            let d = FrameDecoder::default();
            let mut buf = BytesMut::from(&[v][..]);
            assert!(matches!(d.decode(&mut buf), Err(Error::SmuxVersion(x)) if x == v));
            assert_eq!(buf.len(), 1, "errors consume nothing");
        }
    }

    #[test]
    fn rejects_upd_and_unknown_commands_at_the_second_byte() {
        let d = FrameDecoder::default();
        let mut buf = BytesMut::from(&[0x01, 0x04][..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(Error::SmuxCommand { cmd: 4, .. })
        ));
        for cmd in [5u8, 0x10, 0xff] {
            let mut buf = BytesMut::from(&[0x01, cmd, 0, 0, 0, 0, 0, 0][..]);
            assert!(
                matches!(d.decode(&mut buf), Err(Error::SmuxCommand { cmd: c, .. }) if c == cmd)
            );
        }
    }

    #[test]
    fn rejects_length_on_control_frames() {
        for (cmd, name) in [(0u8, "SYN"), (1, "FIN"), (3, "NOP")] {
            let mut buf = BytesMut::from(&[0x01, cmd, 0x01, 0x00, 0x03, 0, 0, 0, 0xaa][..]);
            assert!(matches!(
                FrameDecoder::default().decode(&mut buf),
                Err(Error::SmuxControlLength { cmd: c, len: 1 }) if c == name
            ));
        }
    }

    #[test]
    fn rejects_oversized_psh_before_its_data_arrives() {
        let d = FrameDecoder::default();
        let len = (DEFAULT_MAX_FRAME_SIZE + 1) as u16;
        let mut buf = BytesMut::new();
        buf.put_slice(&[0x01, 0x02]);
        buf.put_u16_le(len);
        buf.put_u32_le(3);
        assert!(matches!(
            d.decode(&mut buf),
            Err(Error::SmuxFrameTooLarge {
                len: 32769,
                max: DEFAULT_MAX_FRAME_SIZE
            })
        ));
        // Exactly the maximum is fine.
        let mut buf = BytesMut::new();
        encode_data(
            3,
            &vec![1; DEFAULT_MAX_FRAME_SIZE],
            DEFAULT_MAX_FRAME_SIZE,
            &mut buf,
        );
        assert!(
            matches!(d.decode(&mut buf).unwrap(), Decoded::Frame(f) if f.data.len() == DEFAULT_MAX_FRAME_SIZE)
        );
        // A tolerant decoder takes what the u16 field can say.
        let tolerant = FrameDecoder::new(usize::MAX);
        assert_eq!(tolerant.max_frame_size(), 65535);
        let mut buf = BytesMut::new();
        Frame::psh(3, Bytes::from(vec![2; 65535])).encode(&mut buf);
        assert!(
            matches!(tolerant.decode(&mut buf).unwrap(), Decoded::Frame(f) if f.data.len() == 65535)
        );
        let small = FrameDecoder::new(4);
        let mut buf = BytesMut::from(PSH_3_HI);
        assert!(small.decode(&mut buf).is_ok());
        let mut buf = BytesMut::new();
        Frame::psh(3, Bytes::from_static(b"hello")).encode(&mut buf);
        assert!(matches!(
            small.decode(&mut buf),
            Err(Error::SmuxFrameTooLarge { len: 5, max: 4 })
        ));
    }

    #[test]
    fn encode_data_splits_like_smux_stream_write() {
        let data: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let mut buf = BytesMut::new();
        encode_data(7, &data, DEFAULT_MAX_FRAME_SIZE, &mut buf);
        let frames = decode_all(&buf).unwrap();
        let sizes: Vec<usize> = frames.iter().map(|f| f.data.len()).collect();
        assert_eq!(sizes, vec![32768, 32768, 4464]);
        assert!(frames.iter().all(|f| f.cmd == Cmd::Psh && f.stream_id == 7));
        let joined: Vec<u8> = frames.iter().flat_map(|f| f.data.to_vec()).collect();
        assert_eq!(joined, data);

        let mut empty = BytesMut::new();
        encode_data(7, &[], DEFAULT_MAX_FRAME_SIZE, &mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    #[should_panic(expected = "must not carry data")]
    fn encode_refuses_data_on_syn() {
        let f = Frame {
            data: Bytes::from_static(b"x"),
            ..Frame::syn(3)
        };
        f.encode(&mut BytesMut::new());
    }

    #[test]
    #[should_panic(expected = "u16 length field")]
    fn encode_refuses_psh_over_u16() {
        Frame::psh(3, Bytes::from(vec![0; 65536])).encode(&mut BytesMut::new());
    }

    #[test]
    fn client_stream_ids_are_odd_from_three() {
        let mut ids = ClientStreamIds::new();
        assert_eq!(ids.next_id().unwrap(), 3);
        assert_eq!(ids.next_id().unwrap(), 5);
        assert_eq!(ids.next_id().unwrap(), 7);
        assert!(is_client_stream_id(3));
        assert!(!is_client_stream_id(0));
        assert!(!is_client_stream_id(2));
    }

    #[test]
    fn client_stream_ids_end_at_u32_max() {
        let mut ids = ClientStreamIds {
            next: Some(u32::MAX - 2),
        };
        assert_eq!(ids.next_id().unwrap(), u32::MAX - 2);
        assert_eq!(ids.next_id().unwrap(), u32::MAX);
        assert!(matches!(ids.next_id(), Err(Error::SmuxStreamIdsExhausted)));
        assert!(matches!(ids.next_id(), Err(Error::SmuxStreamIdsExhausted)));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = StdRng::seed_from_u64(0x5e_ed);
        let d = FrameDecoder::default();
        for _ in 0..20_000 {
            let len = rng.random_range(0..64);
            let mut bytes = vec![0u8; len];
            rng.fill(&mut bytes[..]);
            if len > 1 && rng.random_bool(0.7) {
                bytes[0] = VERSION;
                bytes[1] = rng.random_range(0..5);
            }
            let mut buf = BytesMut::from(&bytes[..]);
            loop {
                let before = buf.len();
                match d.decode(&mut buf) {
                    Ok(Decoded::Frame(f)) => {
                        assert_eq!(before - buf.len(), f.encoded_len());
                        assert_eq!(encode(&f), bytes[len - before..len - buf.len()]);
                    }
                    Ok(Decoded::Incomplete { needed }) => {
                        assert!(needed > 0);
                        assert_eq!(buf.len(), before);
                        break;
                    }
                    Err(_) => {
                        assert_eq!(buf.len(), before);
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn valid_streams_split_at_random_points_decode_identically() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..200 {
            let mut expected = Vec::new();
            let mut wire = BytesMut::new();
            for _ in 0..rng.random_range(1..20) {
                let id = rng.random_range(0..10) * 2 + 1;
                let f = match rng.random_range(0..4) {
                    0 => Frame::syn(id),
                    1 => Frame::fin(id),
                    2 => Frame::nop(),
                    _ => {
                        let mut data = vec![0u8; rng.random_range(0..3000)];
                        rng.fill(&mut data[..]);
                        Frame::psh(id, Bytes::from(data))
                    }
                };
                f.encode(&mut wire);
                expected.push(f);
            }
            let d = FrameDecoder::default();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut rest = &wire[..];
            while !rest.is_empty() {
                let n = rng.random_range(1..=rest.len().min(700));
                buf.put_slice(&rest[..n]);
                rest = &rest[n..];
                while let Decoded::Frame(f) = d.decode(&mut buf).unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, expected);
            assert!(buf.is_empty());
        }
    }
}
