//! The binary AgentMessage: the unit every WebSocket binary frame of the data channel carries
//! (spec §3).
//!
//! This file owns the fixed 120-byte header, the MessageId byte order, the payload digest and the
//! vocabulary of MessageType and PayloadType values. It does not interpret payloads (see
//! [`super::payload`]) nor sequence numbers (see [`super::reliable`]).
//!
//! Layout, all integers big-endian (`aws/session-manager-plugin:src/message/messageparser.go`,
//! identical in `aws/amazon-ssm-agent:agent/session/contracts/agentmessage.go`):
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 4 | HeaderLength, u32 = 116 (the header without PayloadLength) |
//! | 4 | 32 | MessageType, ASCII padded with spaces |
//! | 36 | 4 | SchemaVersion, u32 = 1 |
//! | 40 | 8 | CreatedDate, u64 Unix milliseconds |
//! | 48 | 8 | SequenceNumber, i64 |
//! | 56 | 8 | Flags, u64 (bit 0 SYN, bit 1 FIN) |
//! | 64 | 16 | MessageId, UUID with its two 8-byte halves swapped |
//! | 80 | 32 | PayloadDigest, SHA-256 of the payload |
//! | 112 | 4 | PayloadType, u32 |
//! | 116 | 4 | PayloadLength, u32 |
//! | 120 | n | Payload |
//!
//! [`AgentMessage::decode`] is stricter than the reference parsers, which locate the payload at
//! `HeaderLength + 4` and never compare PayloadLength with the frame: we require HeaderLength 116
//! and an exact PayloadLength, which every known sender satisfies.

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

use super::Error;

/// Size of the fixed header, PayloadLength included.
pub const HEADER_LEN: usize = 120;

/// Value of the HeaderLength field: the header size without the 4-byte PayloadLength.
pub const HEADER_LENGTH_FIELD: u32 = 116;

/// SchemaVersion every sender writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Largest payload [`AgentMessage::decode`] accepts (1 MiB).
///
/// Both reference ends send at most 1024 bytes of stream data per message and a few hundred bytes of
/// JSON; the agent accepts larger data payloads (spec §7.5). The WebSocket layer should cap its
/// message size at [`MAX_FRAME_LEN`].
pub const MAX_PAYLOAD_LEN: usize = 1 << 20;

/// Largest frame [`AgentMessage::decode`] accepts: header plus [`MAX_PAYLOAD_LEN`].
pub const MAX_FRAME_LEN: usize = HEADER_LEN + MAX_PAYLOAD_LEN;

/// Flags bit 0: set by the agent on its stream message with sequence number 0.
pub const FLAG_SYN: u64 = 1;

/// Flags bit 1.
pub const FLAG_FIN: u64 = 2;

/// Flags value on every `acknowledge` (SYN | FIN, as both reference ends write it).
pub const ACKNOWLEDGE_FLAGS: u64 = FLAG_SYN | FLAG_FIN;

// Field offsets (spec §3.1).
const OFF_HEADER_LENGTH: usize = 0;
const OFF_MESSAGE_TYPE: usize = 4;
const OFF_SCHEMA_VERSION: usize = 36;
const OFF_CREATED_DATE: usize = 40;
const OFF_SEQUENCE_NUMBER: usize = 48;
const OFF_FLAGS: usize = 56;
const OFF_MESSAGE_ID: usize = 64;
const OFF_PAYLOAD_DIGEST: usize = 80;
const OFF_PAYLOAD_TYPE: usize = 112;
const OFF_PAYLOAD_LENGTH: usize = 116;

/// Width of the space-padded MessageType field.
pub const MESSAGE_TYPE_LEN: usize = 32;

/// The MessageType header field: 1 to 32 printable ASCII characters (spec §4.1).
///
/// Stored inline so it is `Copy` and usable in `match` patterns:
/// `match m.message_type { MessageType::ACKNOWLEDGE => .., _ => .. }`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// Number of meaningful bytes in `bytes`.
    len: u8,
    /// The characters, zero-filled after `len`.
    bytes: [u8; MESSAGE_TYPE_LEN],
}

impl MessageType {
    /// Stream data from the client to the agent; sequenced and acknowledged.
    pub const INPUT_STREAM_DATA: Self = Self::from_static("input_stream_data");
    /// Stream data from the agent to the client; sequenced and acknowledged.
    pub const OUTPUT_STREAM_DATA: Self = Self::from_static("output_stream_data");
    /// Acknowledgement of one stream message; never sequenced, never acknowledged.
    pub const ACKNOWLEDGE: Self = Self::from_static("acknowledge");
    /// The service closed the session; never sequenced, never acknowledged.
    pub const CHANNEL_CLOSED: Self = Self::from_static("channel_closed");
    /// The service asks the receiver to resume sending (the agent honours it, the plugin ignores it).
    pub const START_PUBLICATION: Self = Self::from_static("start_publication");
    /// The service asks the receiver to stop sending (the agent honours it, the plugin ignores it).
    pub const PAUSE_PUBLICATION: Self = Self::from_static("pause_publication");
    /// Agent → service status report (`{"SchemaVersion":1,"SessionState":"Connected",..}`).
    pub const AGENT_SESSION_STATE: Self = Self::from_static("agent_session_state");

    /// Builds a MessageType from a literal; an invalid literal fails at compile time in a `const`.
    ///
    /// # Panics
    /// If `s` is empty, longer than 32 bytes or not printable ASCII.
    pub const fn from_static(s: &'static str) -> Self {
        match Self::from_ascii(s.as_bytes()) {
            Ok(t) => t,
            Err(_) => panic!("invalid MessageType literal"),
        }
    }

    /// Builds a MessageType, checking that it is 1 to 32 printable ASCII characters.
    pub fn new(s: &str) -> Result<Self, Error> {
        Self::from_ascii(s.as_bytes()).map_err(|reason| Error::MessageType { reason })
    }

    /// Shared validation for [`Self::new`], [`Self::from_static`] and the decoder.
    const fn from_ascii(b: &[u8]) -> Result<Self, &'static str> {
        if b.is_empty() {
            return Err("empty");
        }
        if b.len() > MESSAGE_TYPE_LEN {
            return Err("longer than 32 bytes");
        }
        let mut bytes = [0u8; MESSAGE_TYPE_LEN];
        let mut i = 0;
        while i < b.len() {
            if !b[i].is_ascii_graphic() {
                return Err("not printable ASCII");
            }
            bytes[i] = b[i];
            i += 1;
        }
        // Cannot truncate: b.len() <= 32 was checked above.
        Ok(Self {
            len: b.len() as u8,
            bytes,
        })
    }

    /// Parses the 32-byte wire field the way both reference ends do: NUL bytes trimmed from both
    /// ends, then surrounding whitespace.
    fn decode(field: &[u8]) -> Result<Self, Error> {
        let trimmed = trim_nul(field).trim_ascii();
        Self::from_ascii(trimmed).map_err(|reason| Error::MessageType { reason })
    }

    /// The type as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize])
            .expect("MessageType holds printable ASCII only (checked in from_ascii)")
    }

    /// Whether this is one of the two sequenced, acknowledged stream types.
    pub fn is_stream_data(&self) -> bool {
        *self == Self::INPUT_STREAM_DATA || *self == Self::OUTPUT_STREAM_DATA
    }
}

impl fmt::Debug for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn trim_nul(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&c| c != 0).unwrap_or(b.len());
    let end = b.iter().rposition(|&c| c != 0).map_or(start, |i| i + 1);
    &b[start..end]
}

/// The PayloadType header field (spec §4.2). Unknown values are kept, not rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PayloadType(pub u32);

impl PayloadType {
    /// 0: what `acknowledge`, `channel_closed` and the publication messages carry.
    pub const NONE: Self = Self(0);
    /// 1: raw bytes (port and smux data, both directions).
    pub const OUTPUT: Self = Self(1);
    /// 2: shell error text (unused by port sessions).
    pub const ERROR: Self = Self(2);
    /// 3: terminal size JSON (shell only).
    pub const SIZE: Self = Self(3);
    /// 4: parameters (unused by port sessions).
    pub const PARAMETER: Self = Self(4);
    /// 5: agent → client HandshakeRequest JSON.
    pub const HANDSHAKE_REQUEST: Self = Self(5);
    /// 6: client → agent HandshakeResponse JSON.
    pub const HANDSHAKE_RESPONSE: Self = Self(6);
    /// 7: agent → client HandshakeComplete JSON.
    pub const HANDSHAKE_COMPLETE: Self = Self(7);
    /// 8: agent → client KMS challenge (never for port sessions).
    pub const ENC_CHALLENGE_REQUEST: Self = Self(8);
    /// 9: client → agent KMS challenge answer (never for port sessions).
    pub const ENC_CHALLENGE_RESPONSE: Self = Self(9);
    /// 10: a 4-byte big-endian flag word (see [`super::payload::Flag`]).
    pub const FLAG: Self = Self(10);
    /// 11: shell stderr (unused by port sessions).
    pub const STD_ERR: Self = Self(11);
    /// 12: shell exit code (unused by port sessions).
    pub const EXIT_CODE: Self = Self(12);

    /// The spec's name for a known value (`"Output"`, `"HandshakeRequest"`, ..).
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "None",
            1 => "Output",
            2 => "Error",
            3 => "Size",
            4 => "Parameter",
            5 => "HandshakeRequest",
            6 => "HandshakeResponse",
            7 => "HandshakeComplete",
            8 => "EncChallengeRequest",
            9 => "EncChallengeResponse",
            10 => "Flag",
            11 => "StdErr",
            12 => "ExitCode",
            _ => return None,
        })
    }
}

impl fmt::Debug for PayloadType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name}({})", self.0),
            None => write!(f, "PayloadType({})", self.0),
        }
    }
}

/// A message id: a UUID kept in RFC 4122 byte order (`bytes[0]` is the first hex pair of the text).
///
/// On the wire the two 8-byte halves are swapped (spec §3.3): `11111111-2222-3333-4444-555555555555`
/// travels as `44 44 55 55 55 55 55 55 11 11 11 11 22 22 33 33`. In JSON it is lowercase hyphenated
/// text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MessageId(pub [u8; 16]);

impl MessageId {
    /// A fresh random (version 4) id.
    pub fn random() -> Self {
        Self::from_random_bytes(rand::random())
    }

    /// A version 4 id from 16 random bytes (version and variant bits are overwritten).
    pub fn from_random_bytes(mut b: [u8; 16]) -> Self {
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Self(b)
    }

    /// Reads the wire form (least-significant half first).
    pub fn from_wire(w: [u8; 16]) -> Self {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&w[8..]);
        b[8..].copy_from_slice(&w[..8]);
        Self(b)
    }

    /// The wire form (least-significant half first).
    pub fn to_wire(self) -> [u8; 16] {
        let mut w = [0u8; 16];
        w[..8].copy_from_slice(&self.0[8..]);
        w[8..].copy_from_slice(&self.0[..8]);
        w
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl FromStr for MessageId {
    type Err = Error;

    /// Accepts the hyphenated form (`8-4-4-4-12`, any case) and 32 bare hex digits.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidUuid(s.chars().take(64).collect());
        let b = s.as_bytes();
        let hex: Vec<u8> = match b.len() {
            36 => {
                if [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
                    return Err(bad());
                }
                b.iter().copied().filter(|&c| c != b'-').collect()
            }
            32 => b.to_vec(),
            _ => return Err(bad()),
        };
        if hex.len() != 32 {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(bad)?;
            let lo = hex_value(pair[1]).ok_or_else(bad)?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// One AgentMessage (spec §3). HeaderLength, PayloadLength and PayloadDigest are not stored: they
/// are derived from the payload on encode and checked on decode.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentMessage {
    /// What kind of message this is (`input_stream_data`, `acknowledge`, ..).
    pub message_type: MessageType,
    /// Always 1 on send; nobody checks it on receive.
    pub schema_version: u32,
    /// Creation time, Unix epoch milliseconds; must be non-zero (both reference ends reject 0).
    pub created_date: u64,
    /// Position in its direction's stream (0, 1, 2, ..) for stream data; 0 on everything else.
    pub sequence_number: i64,
    /// Informational flags: [`FLAG_SYN`], [`FLAG_FIN`], [`ACKNOWLEDGE_FLAGS`]; never checked.
    pub flags: u64,
    /// A fresh random UUID per message (a retransmission repeats it).
    pub message_id: MessageId,
    /// How to interpret the payload.
    pub payload_type: PayloadType,
    /// The payload bytes, at most [`MAX_PAYLOAD_LEN`].
    pub payload: Bytes,
}

impl fmt::Debug for AgentMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Payloads can be large and carry customer data: log their size only.
        f.debug_struct("AgentMessage")
            .field("message_type", &self.message_type)
            .field("sequence_number", &self.sequence_number)
            .field("flags", &self.flags)
            .field("message_id", &self.message_id)
            .field("created_date", &self.created_date)
            .field("payload_type", &self.payload_type)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl AgentMessage {
    /// Length of the encoded frame.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    /// Encodes the frame: 120-byte header (with the payload's SHA-256) followed by the payload.
    ///
    /// # Panics
    /// If the payload is longer than [`MAX_PAYLOAD_LEN`]: that is a caller bug (peers' bytes never
    /// reach here unchecked), and the peer would reject the frame anyway.
    pub fn encode(&self) -> Bytes {
        assert!(
            self.payload.len() <= MAX_PAYLOAD_LEN,
            "AgentMessage payload of {} bytes exceeds MAX_PAYLOAD_LEN",
            self.payload.len()
        );
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        buf.put_u32(HEADER_LENGTH_FIELD);
        let mut message_type = [b' '; MESSAGE_TYPE_LEN];
        let name = self.message_type.as_str().as_bytes();
        message_type[..name.len()].copy_from_slice(name);
        buf.put_slice(&message_type);
        buf.put_u32(self.schema_version);
        buf.put_u64(self.created_date);
        buf.put_i64(self.sequence_number);
        buf.put_u64(self.flags);
        buf.put_slice(&self.message_id.to_wire());
        buf.put_slice(&Sha256::digest(&self.payload));
        buf.put_u32(self.payload_type.0);
        // Cannot truncate: the payload is at most MAX_PAYLOAD_LEN (asserted above).
        buf.put_u32(self.payload.len() as u32);
        buf.put_slice(&self.payload);
        buf.freeze()
    }

    /// Decodes and validates one frame, copying the payload out of `frame`.
    ///
    /// Checks, in order: frame length within 120..=[`MAX_FRAME_LEN`], HeaderLength 116, PayloadLength
    /// equal to the bytes present, MessageType (NUL/space padding trimmed) non-empty printable ASCII,
    /// then — except for `start_publication`/`pause_publication`, which the plugin exempts because
    /// the service sends them with a zeroed digest — CreatedDate non-zero and, for a non-empty
    /// payload, the SHA-256 digest.
    pub fn decode(frame: &[u8]) -> Result<Self, Error> {
        let header = Header::parse(frame)?;
        Ok(header.with_payload(Bytes::copy_from_slice(&frame[HEADER_LEN..])))
    }

    /// Like [`Self::decode`], but the payload shares `frame`'s buffer instead of being copied.
    pub fn decode_bytes(frame: Bytes) -> Result<Self, Error> {
        let header = Header::parse(&frame)?;
        Ok(header.with_payload(frame.slice(HEADER_LEN..)))
    }
}

/// The validated header fields, before the payload is attached.
struct Header {
    message_type: MessageType,
    schema_version: u32,
    created_date: u64,
    sequence_number: i64,
    flags: u64,
    message_id: MessageId,
    payload_type: PayloadType,
}

impl Header {
    fn parse(frame: &[u8]) -> Result<Self, Error> {
        if frame.len() < HEADER_LEN {
            return Err(Error::MessageTooShort { len: frame.len() });
        }
        if frame.len() > MAX_FRAME_LEN {
            return Err(Error::MessageTooLong {
                len: frame.len(),
                max: MAX_FRAME_LEN,
            });
        }
        let header_length = be_u32(frame, OFF_HEADER_LENGTH);
        if header_length != HEADER_LENGTH_FIELD {
            return Err(Error::HeaderLength {
                found: header_length,
            });
        }
        let declared = be_u32(frame, OFF_PAYLOAD_LENGTH);
        let actual = frame.len() - HEADER_LEN;
        if declared as usize != actual {
            return Err(Error::PayloadLength { declared, actual });
        }
        let message_type =
            MessageType::decode(&frame[OFF_MESSAGE_TYPE..OFF_MESSAGE_TYPE + MESSAGE_TYPE_LEN])?;
        let header = Header {
            message_type,
            schema_version: be_u32(frame, OFF_SCHEMA_VERSION),
            created_date: be_u64(frame, OFF_CREATED_DATE),
            sequence_number: be_u64(frame, OFF_SEQUENCE_NUMBER) as i64,
            flags: be_u64(frame, OFF_FLAGS),
            message_id: MessageId::from_wire(array(frame, OFF_MESSAGE_ID)),
            payload_type: PayloadType(be_u32(frame, OFF_PAYLOAD_TYPE)),
        };
        let exempt = message_type == MessageType::START_PUBLICATION
            || message_type == MessageType::PAUSE_PUBLICATION;
        if !exempt {
            if header.created_date == 0 {
                return Err(Error::CreatedDateMissing {
                    message_type: message_type.to_string(),
                });
            }
            let payload = &frame[HEADER_LEN..];
            if !payload.is_empty() {
                let digest: [u8; 32] = array(frame, OFF_PAYLOAD_DIGEST);
                if Sha256::digest(payload).as_slice() != digest {
                    return Err(Error::PayloadDigest { len: payload.len() });
                }
            }
        }
        Ok(header)
    }

    fn with_payload(self, payload: Bytes) -> AgentMessage {
        AgentMessage {
            message_type: self.message_type,
            schema_version: self.schema_version,
            created_date: self.created_date,
            sequence_number: self.sequence_number,
            flags: self.flags,
            message_id: self.message_id,
            payload_type: self.payload_type,
            payload,
        }
    }
}

/// Copies `N` bytes at `off`; callers only pass offsets inside the checked 120-byte header.
fn array<const N: usize>(frame: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&frame[off..off + N]);
    out
}

fn be_u32(frame: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(array(frame, off))
}

fn be_u64(frame: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(array(frame, off))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssm::proto::payload::{
        ActionParameters, HandshakeRequest, PortProperties, RequestedClientAction,
        SessionTypeRequest,
    };
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// Spec §3.5 vector 1: `input_stream_data`, seq 7, flags 0, MessageId
    /// dd01e56b-ff48-483e-a508-b5f073f31b16, CreatedDate 1503434274948, PayloadType 1, payload
    /// `hello`. Produced by the plugin's own serializer.
    const INPUT_HELLO: &[u8] = &[
        0x00, 0x00, 0x00, 0x74, 0x69, 0x6e, 0x70, 0x75, 0x74, 0x5f, 0x73, 0x74, 0x72, 0x65, 0x61,
        0x6d, 0x5f, 0x64, 0x61, 0x74, 0x61, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
        0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x5e, 0x0b,
        0xaa, 0x78, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xa5, 0x08, 0xb5, 0xf0, 0x73, 0xf3, 0x1b, 0x16, 0xdd, 0x01, 0xe5,
        0x6b, 0xff, 0x48, 0x48, 0x3e, 0x2c, 0xf2, 0x4d, 0xba, 0x5f, 0xb0, 0xa3, 0x0e, 0x26, 0xe8,
        0x3b, 0x2a, 0xc5, 0xb9, 0xe2, 0x9e, 0x1b, 0x16, 0x1e, 0x5c, 0x1f, 0xa7, 0x42, 0x5e, 0x73,
        0x04, 0x33, 0x62, 0x93, 0x8b, 0x98, 0x24, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05,
        0x68, 0x65, 0x6c, 0x6c, 0x6f,
    ];

    /// Spec §3.5 vector 2: Flag TerminateSession, seq 8, same id and date, PayloadType 10, payload
    /// `00 00 00 02`.
    const INPUT_FLAG_TERMINATE: &[u8] = &[
        0x00, 0x00, 0x00, 0x74, 0x69, 0x6e, 0x70, 0x75, 0x74, 0x5f, 0x73, 0x74, 0x72, 0x65, 0x61,
        0x6d, 0x5f, 0x64, 0x61, 0x74, 0x61, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
        0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x5e, 0x0b,
        0xaa, 0x78, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0xa5, 0x08, 0xb5, 0xf0, 0x73, 0xf3, 0x1b, 0x16, 0xdd, 0x01, 0xe5,
        0x6b, 0xff, 0x48, 0x48, 0x3e, 0x43, 0x3e, 0xbf, 0x5b, 0xc0, 0x3d, 0xff, 0xa3, 0x85, 0x36,
        0x67, 0x32, 0x07, 0xa2, 0x12, 0x81, 0x61, 0x2c, 0xef, 0x5f, 0xaa, 0x9b, 0xc7, 0xa4, 0xd5,
        0xb9, 0xbe, 0x2f, 0xdb, 0x12, 0xcf, 0x1a, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x04,
        0x00, 0x00, 0x00, 0x02,
    ];

    /// Spec §3.5 vector 3: `acknowledge`, flags 3, MessageId 11111111-2222-3333-4444-555555555555,
    /// CreatedDate 1700000000000, PayloadType 0, acknowledging `output_stream_data` seq 0 whose id is
    /// dd01e56b-ff48-483e-a508-b5f073f31b16.
    const ACKNOWLEDGE: &[u8] = &[
        0x00, 0x00, 0x00, 0x74, 0x61, 0x63, 0x6b, 0x6e, 0x6f, 0x77, 0x6c, 0x65, 0x64, 0x67, 0x65,
        0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
        0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x8b, 0xcf,
        0xe5, 0x68, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x03, 0x44, 0x44, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x11, 0x11, 0x11,
        0x11, 0x22, 0x22, 0x33, 0x33, 0x71, 0x3a, 0x0a, 0x17, 0x05, 0x7d, 0xe6, 0x30, 0x21, 0x3f,
        0x72, 0x92, 0x90, 0x7c, 0xe3, 0x84, 0x62, 0x81, 0x2e, 0xa2, 0x13, 0xa2, 0x93, 0x66, 0xf5,
        0x37, 0xf6, 0x8c, 0x6a, 0xb6, 0x0e, 0x85, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xb0,
        0x7b, 0x22, 0x41, 0x63, 0x6b, 0x6e, 0x6f, 0x77, 0x6c, 0x65, 0x64, 0x67, 0x65, 0x64, 0x4d,
        0x65, 0x73, 0x73, 0x61, 0x67, 0x65, 0x54, 0x79, 0x70, 0x65, 0x22, 0x3a, 0x22, 0x6f, 0x75,
        0x74, 0x70, 0x75, 0x74, 0x5f, 0x73, 0x74, 0x72, 0x65, 0x61, 0x6d, 0x5f, 0x64, 0x61, 0x74,
        0x61, 0x22, 0x2c, 0x22, 0x41, 0x63, 0x6b, 0x6e, 0x6f, 0x77, 0x6c, 0x65, 0x64, 0x67, 0x65,
        0x64, 0x4d, 0x65, 0x73, 0x73, 0x61, 0x67, 0x65, 0x49, 0x64, 0x22, 0x3a, 0x22, 0x64, 0x64,
        0x30, 0x31, 0x65, 0x35, 0x36, 0x62, 0x2d, 0x66, 0x66, 0x34, 0x38, 0x2d, 0x34, 0x38, 0x33,
        0x65, 0x2d, 0x61, 0x35, 0x30, 0x38, 0x2d, 0x62, 0x35, 0x66, 0x30, 0x37, 0x33, 0x66, 0x33,
        0x31, 0x62, 0x31, 0x36, 0x22, 0x2c, 0x22, 0x41, 0x63, 0x6b, 0x6e, 0x6f, 0x77, 0x6c, 0x65,
        0x64, 0x67, 0x65, 0x64, 0x4d, 0x65, 0x73, 0x73, 0x61, 0x67, 0x65, 0x53, 0x65, 0x71, 0x75,
        0x65, 0x6e, 0x63, 0x65, 0x4e, 0x75, 0x6d, 0x62, 0x65, 0x72, 0x22, 0x3a, 0x30, 0x2c, 0x22,
        0x49, 0x73, 0x53, 0x65, 0x71, 0x75, 0x65, 0x6e, 0x74, 0x69, 0x61, 0x6c, 0x4d, 0x65, 0x73,
        0x73, 0x61, 0x67, 0x65, 0x22, 0x3a, 0x74, 0x72, 0x75, 0x65, 0x7d,
    ];

    /// Spec §3.5 vector 4: the header of an agent-style HandshakeRequest (`output_stream_data`, seq
    /// 0, flags 1, PayloadType 5, 233-byte payload = the spec §6.2 example JSON).
    const HANDSHAKE_REQUEST_HEADER: &[u8] = &[
        0x00, 0x00, 0x00, 0x74, 0x6f, 0x75, 0x74, 0x70, 0x75, 0x74, 0x5f, 0x73, 0x74, 0x72, 0x65,
        0x61, 0x6d, 0x5f, 0x64, 0x61, 0x74, 0x61, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20,
        0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x8b, 0xcf,
        0xe5, 0x68, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x44, 0x44, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x11, 0x11, 0x11,
        0x11, 0x22, 0x22, 0x33, 0x33, 0xe1, 0xb6, 0xb9, 0x03, 0xf8, 0x74, 0x41, 0x4c, 0x12, 0x58,
        0x06, 0x9c, 0xff, 0xf5, 0xc5, 0x3e, 0x4d, 0xec, 0x5a, 0x25, 0x40, 0xa4, 0xe1, 0xfd, 0xda,
        0xc6, 0xfb, 0x76, 0x5c, 0xb0, 0x6c, 0xc4, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0xe9,
    ];

    const ID_DD01: MessageId = MessageId([
        0xdd, 0x01, 0xe5, 0x6b, 0xff, 0x48, 0x48, 0x3e, 0xa5, 0x08, 0xb5, 0xf0, 0x73, 0xf3, 0x1b,
        0x16,
    ]);
    const ID_1111: MessageId = MessageId([
        0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x44, 0x44, 0x55, 0x55, 0x55, 0x55, 0x55,
        0x55,
    ]);

    fn input(seq: i64, payload_type: PayloadType, payload: &'static [u8]) -> AgentMessage {
        AgentMessage {
            message_type: MessageType::INPUT_STREAM_DATA,
            schema_version: 1,
            created_date: 1_503_434_274_948,
            sequence_number: seq,
            flags: 0,
            message_id: ID_DD01,
            payload_type,
            payload: Bytes::from_static(payload),
        }
    }

    /// A valid frame with a payload of `len` bytes, for the validation tests to break.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut m = input(1, PayloadType::OUTPUT, b"");
        m.payload = Bytes::copy_from_slice(payload);
        m.encode().to_vec()
    }

    /// A 32-byte MessageType field: `prefix` then spaces.
    fn pad(prefix: &[u8]) -> [u8; MESSAGE_TYPE_LEN] {
        let mut field = [b' '; MESSAGE_TYPE_LEN];
        field[..prefix.len()].copy_from_slice(prefix);
        field
    }

    #[test]
    fn golden_input_stream_data_decodes() {
        let m = AgentMessage::decode(INPUT_HELLO).unwrap();
        assert_eq!(m, input(7, PayloadType::OUTPUT, b"hello"));
        assert_eq!(
            m.message_id.to_string(),
            "dd01e56b-ff48-483e-a508-b5f073f31b16"
        );
    }

    #[test]
    fn golden_vectors_encode_byte_for_byte() {
        assert_eq!(
            &input(7, PayloadType::OUTPUT, b"hello").encode()[..],
            INPUT_HELLO
        );
        assert_eq!(
            &input(8, PayloadType::FLAG, &[0, 0, 0, 2]).encode()[..],
            INPUT_FLAG_TERMINATE
        );
    }

    #[test]
    fn golden_vectors_round_trip() {
        for golden in [INPUT_HELLO, INPUT_FLAG_TERMINATE, ACKNOWLEDGE] {
            let m = AgentMessage::decode(golden).unwrap();
            assert_eq!(&m.encode()[..], golden);
            assert_eq!(m.encoded_len(), golden.len());
        }
    }

    #[test]
    fn golden_acknowledge_is_what_acknowledge_builds() {
        let acked = AgentMessage {
            message_type: MessageType::OUTPUT_STREAM_DATA,
            schema_version: 1,
            created_date: 1_503_434_274_948,
            sequence_number: 0,
            flags: FLAG_SYN,
            message_id: ID_DD01,
            payload_type: PayloadType::HANDSHAKE_REQUEST,
            payload: Bytes::from_static(b"{}"),
        };
        let ack = crate::ssm::proto::reliable::acknowledge(&acked, 1_700_000_000_000, ID_1111);
        assert_eq!(&ack.encode()[..], ACKNOWLEDGE);

        let decoded = AgentMessage::decode(ACKNOWLEDGE).unwrap();
        assert_eq!(decoded.message_type, MessageType::ACKNOWLEDGE);
        assert_eq!(decoded.flags, ACKNOWLEDGE_FLAGS);
        assert_eq!(decoded.sequence_number, 0);
        assert_eq!(decoded.payload_type, PayloadType::NONE);
        assert_eq!(decoded.payload.len(), 176);
    }

    #[test]
    fn golden_handshake_request_header_and_payload_digest() {
        // Rebuilding the spec's payload with our serde types must give the exact bytes the agent
        // (Go encoding/json) produced: the golden header carries their SHA-256.
        let request = HandshakeRequest {
            agent_version: "3.3.987.0".into(),
            requested_client_actions: vec![RequestedClientAction {
                action_type: "SessionType".into(),
                action_parameters: ActionParameters::SessionType(SessionTypeRequest {
                    session_type: "Port".into(),
                    properties: PortProperties {
                        host: Some("db.internal".into()),
                        local_port_number: Some("0".into()),
                        port_number: Some("5432".into()),
                        r#type: Some("LocalPortForwarding".into()),
                        ..PortProperties::default()
                    }
                    .to_value(),
                }),
            }],
        };
        let payload = request.encode();
        assert_eq!(payload.len(), 233);
        let m = AgentMessage {
            message_type: MessageType::OUTPUT_STREAM_DATA,
            schema_version: 1,
            created_date: 1_700_000_000_000,
            sequence_number: 0,
            flags: FLAG_SYN,
            message_id: ID_1111,
            payload_type: PayloadType::HANDSHAKE_REQUEST,
            payload,
        };
        let encoded = m.encode();
        assert_eq!(&encoded[..HEADER_LEN], HANDSHAKE_REQUEST_HEADER);
        assert_eq!(AgentMessage::decode(&encoded).unwrap(), m);
    }

    #[test]
    fn message_id_wire_order_swaps_halves() {
        let wire = ID_1111.to_wire();
        assert_eq!(
            wire,
            [
                0x44, 0x44, 0x55, 0x55, 0x55, 0x55, 0x55, 0x55, 0x11, 0x11, 0x11, 0x11, 0x22, 0x22,
                0x33, 0x33
            ]
        );
        assert_eq!(MessageId::from_wire(wire), ID_1111);
        assert_eq!(&ACKNOWLEDGE[OFF_MESSAGE_ID..OFF_MESSAGE_ID + 16], &wire);
    }

    #[test]
    fn message_id_text_round_trip_and_errors() {
        let text = "11111111-2222-3333-4444-555555555555";
        assert_eq!(ID_1111.to_string(), text);
        assert_eq!(text.parse::<MessageId>().unwrap(), ID_1111);
        assert_eq!(
            "DD01E56B-FF48-483E-A508-B5F073F31B16"
                .parse::<MessageId>()
                .unwrap(),
            ID_DD01
        );
        assert_eq!(
            "dd01e56bff48483ea508b5f073f31b16"
                .parse::<MessageId>()
                .unwrap(),
            ID_DD01
        );
        for bad in [
            "",
            "dd01e56b-ff48-483e-a508-b5f073f31b1",
            "dd01e56b-ff48-483e-a508-b5f073f31b16a",
            "dd01e56bxff48-483e-a508-b5f073f31b16",
            "gd01e56b-ff48-483e-a508-b5f073f31b16",
            "dd01e56b-ff48-483e-a508-b5f073f31b1g",
            "dd01e56bff48483ea508b5f073f31b1-",
            "ééééééééééééééé-ab",
        ] {
            assert!(
                matches!(bad.parse::<MessageId>(), Err(Error::InvalidUuid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn random_message_ids_are_version_4() {
        let a = MessageId::random();
        let b = MessageId::random();
        assert_ne!(a, b);
        for id in [a, b, MessageId::from_random_bytes([0xff; 16])] {
            let s = id.to_string();
            assert_eq!(&s[14..15], "4", "{s}");
            assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
            assert_eq!(s.parse::<MessageId>().unwrap(), id);
        }
    }

    #[test]
    fn message_type_rules() {
        assert_eq!(MessageType::ACKNOWLEDGE.as_str(), "acknowledge");
        assert_eq!(
            MessageType::new("agent_session_state").unwrap(),
            MessageType::AGENT_SESSION_STATE
        );
        assert!(MessageType::new(&"x".repeat(32)).is_ok());
        for bad in ["", "has space", "naïve", &"x".repeat(33)] {
            assert!(
                matches!(MessageType::new(bad), Err(Error::MessageType { .. })),
                "{bad:?}"
            );
        }
        assert!(MessageType::INPUT_STREAM_DATA.is_stream_data());
        assert!(MessageType::OUTPUT_STREAM_DATA.is_stream_data());
        assert!(!MessageType::ACKNOWLEDGE.is_stream_data());
        assert_eq!(format!("{:?}", MessageType::ACKNOWLEDGE), "\"acknowledge\"");
        // Constants work as patterns.
        let t = MessageType::CHANNEL_CLOSED;
        assert!(matches!(t, MessageType::CHANNEL_CLOSED));
    }

    #[test]
    fn payload_type_names() {
        let all = [
            (PayloadType::OUTPUT, "Output"),
            (PayloadType::ERROR, "Error"),
            (PayloadType::SIZE, "Size"),
            (PayloadType::PARAMETER, "Parameter"),
            (PayloadType::HANDSHAKE_REQUEST, "HandshakeRequest"),
            (PayloadType::HANDSHAKE_RESPONSE, "HandshakeResponse"),
            (PayloadType::HANDSHAKE_COMPLETE, "HandshakeComplete"),
            (PayloadType::ENC_CHALLENGE_REQUEST, "EncChallengeRequest"),
            (PayloadType::ENC_CHALLENGE_RESPONSE, "EncChallengeResponse"),
            (PayloadType::FLAG, "Flag"),
            (PayloadType::STD_ERR, "StdErr"),
            (PayloadType::EXIT_CODE, "ExitCode"),
        ];
        for (i, (t, name)) in all.into_iter().enumerate() {
            assert_eq!(t.0 as usize, i + 1);
            assert_eq!(t.name(), Some(name));
        }
        assert_eq!(PayloadType(13).name(), None);
        assert_eq!(format!("{:?}", PayloadType::FLAG), "Flag(10)");
        assert_eq!(format!("{:?}", PayloadType(99)), "PayloadType(99)");
    }

    #[test]
    fn rejects_short_frames() {
        for len in [0, 1, 4, 36, 119] {
            assert!(matches!(
                AgentMessage::decode(&INPUT_HELLO[..len.min(INPUT_HELLO.len())]),
                Err(Error::MessageTooShort { len: l }) if l == len
            ));
        }
    }

    #[test]
    fn rejects_frames_over_the_limit() {
        let mut big = frame(b"x");
        big.resize(MAX_FRAME_LEN + 1, 0);
        assert!(matches!(
            AgentMessage::decode(&big),
            Err(Error::MessageTooLong { len, max: MAX_FRAME_LEN }) if len == MAX_FRAME_LEN + 1
        ));
        // Exactly at the limit is fine.
        let payload = vec![7u8; MAX_PAYLOAD_LEN];
        let at_limit = frame(&payload);
        assert_eq!(at_limit.len(), MAX_FRAME_LEN);
        assert_eq!(
            AgentMessage::decode(&at_limit).unwrap().payload.len(),
            MAX_PAYLOAD_LEN
        );
    }

    #[test]
    #[should_panic(expected = "exceeds MAX_PAYLOAD_LEN")]
    fn encode_refuses_oversized_payload() {
        let mut m = input(0, PayloadType::OUTPUT, b"");
        m.payload = Bytes::from(vec![0u8; MAX_PAYLOAD_LEN + 1]);
        let _ = m.encode();
    }

    #[test]
    fn rejects_wrong_header_length() {
        for hl in [0u32, 115, 117, 120, u32::MAX] {
            let mut f = frame(b"abc");
            f[0..4].copy_from_slice(&hl.to_be_bytes());
            assert!(matches!(
                AgentMessage::decode(&f),
                Err(Error::HeaderLength { found }) if found == hl
            ));
        }
    }

    #[test]
    fn rejects_payload_length_mismatch() {
        for declared in [0u32, 2, 4, 1 << 20, u32::MAX] {
            let mut f = frame(b"abc");
            f[OFF_PAYLOAD_LENGTH..HEADER_LEN].copy_from_slice(&declared.to_be_bytes());
            assert!(matches!(
                AgentMessage::decode(&f),
                Err(Error::PayloadLength { declared: d, actual: 3 }) if d == declared
            ));
        }
    }

    #[test]
    fn rejects_bad_message_type_fields() {
        let cases: [&[u8]; 6] = [
            // A NUL inside the padding survives trimming in Go too (an unknown type there).
            b"input_stream_data\0",
            b"",
            b"\0\0\0",
            b"input stream_data",
            b"\xffnput_stream_data",
            b"\0\0 \t \0",
        ];
        for field in cases {
            let mut f = frame(b"abc");
            f[OFF_MESSAGE_TYPE..OFF_SCHEMA_VERSION].copy_from_slice(&pad(field));
            assert!(
                matches!(AgentMessage::decode(&f), Err(Error::MessageType { .. })),
                "{field:?}"
            );
        }
    }

    #[test]
    fn accepts_nul_and_whitespace_padding() {
        let cases: [&[u8]; 3] = [
            b"input_stream_data\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
            b"\0\0 input_stream_data\t \0\0\0\0\0\0\0\0\0\0",
            b"   input_stream_data",
        ];
        for field in cases {
            let mut f = frame(b"abc");
            f[OFF_MESSAGE_TYPE..OFF_SCHEMA_VERSION].copy_from_slice(&pad(field));
            let m = AgentMessage::decode(&f).unwrap();
            assert_eq!(m.message_type, MessageType::INPUT_STREAM_DATA);
        }
    }

    #[test]
    fn rejects_zero_created_date() {
        let mut f = frame(b"abc");
        f[OFF_CREATED_DATE..OFF_SEQUENCE_NUMBER].fill(0);
        assert!(matches!(
            AgentMessage::decode(&f),
            Err(Error::CreatedDateMissing { message_type }) if message_type == "input_stream_data"
        ));
    }

    #[test]
    fn rejects_digest_mismatch() {
        let mut f = frame(b"abc");
        f[HEADER_LEN] ^= 1;
        assert!(matches!(
            AgentMessage::decode(&f),
            Err(Error::PayloadDigest { len: 3 })
        ));
        let mut f = frame(b"abc");
        f[OFF_PAYLOAD_DIGEST + 31] ^= 0x80;
        assert!(matches!(
            AgentMessage::decode(&f),
            Err(Error::PayloadDigest { len: 3 })
        ));
    }

    #[test]
    fn empty_payload_skips_the_digest() {
        let mut f = frame(b"");
        f[OFF_PAYLOAD_DIGEST..OFF_PAYLOAD_TYPE].fill(0);
        let m = AgentMessage::decode(&f).unwrap();
        assert!(m.payload.is_empty());
        // Our encoder writes the SHA-256 of nothing, as the reference serializers would.
        let e = m.encode();
        assert_eq!(
            &e[OFF_PAYLOAD_DIGEST..OFF_PAYLOAD_DIGEST + 4],
            &[0xe3, 0xb0, 0xc4, 0x42]
        );
    }

    #[test]
    fn publication_messages_are_exempt_from_date_and_digest() {
        for t in [
            MessageType::START_PUBLICATION,
            MessageType::PAUSE_PUBLICATION,
        ] {
            let m = AgentMessage {
                message_type: t,
                created_date: 0,
                ..input(0, PayloadType::NONE, b"{}")
            };
            let mut f = m.encode().to_vec();
            f[OFF_PAYLOAD_DIGEST..OFF_PAYLOAD_TYPE].fill(0);
            let d = AgentMessage::decode(&f).unwrap();
            assert_eq!(d.message_type, t);
            assert_eq!(d.created_date, 0);
        }
    }

    #[test]
    fn decode_bytes_shares_the_frame() {
        let frame = Bytes::from_static(INPUT_HELLO);
        let m = AgentMessage::decode_bytes(frame.clone()).unwrap();
        assert_eq!(&m.payload[..], b"hello");
        assert_eq!(m.payload.as_ptr(), frame[HEADER_LEN..].as_ptr());
        assert!(AgentMessage::decode_bytes(frame.slice(..100)).is_err());
    }

    #[test]
    fn debug_hides_payload() {
        let s = format!("{:?}", input(7, PayloadType::OUTPUT, b"secret"));
        assert!(!s.contains("secret"), "{s}");
        assert!(s.contains("payload_len: 6"), "{s}");
    }

    #[test]
    fn truncated_prefixes_never_panic() {
        for golden in [INPUT_HELLO, INPUT_FLAG_TERMINATE, ACKNOWLEDGE] {
            for len in 0..golden.len() {
                assert!(AgentMessage::decode(&golden[..len]).is_err(), "len {len}");
            }
            // Extra trailing bytes break the PayloadLength match too.
            let mut longer = golden.to_vec();
            longer.push(0);
            assert!(matches!(
                AgentMessage::decode(&longer),
                Err(Error::PayloadLength { .. })
            ));
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = StdRng::seed_from_u64(0x55_4d_00);
        for _ in 0..20_000 {
            let len = rng.random_range(0..400);
            let mut buf = vec![0u8; len];
            rng.fill(&mut buf[..]);
            if len >= HEADER_LEN && rng.random_bool(0.5) {
                // Make the framing fields plausible so the deeper checks run too.
                buf[0..4].copy_from_slice(&HEADER_LENGTH_FIELD.to_be_bytes());
                let pl = (len - HEADER_LEN) as u32;
                buf[OFF_PAYLOAD_LENGTH..HEADER_LEN].copy_from_slice(&pl.to_be_bytes());
            }
            if let Ok(m) = AgentMessage::decode(&buf) {
                let _ = m.encode();
            }
        }
    }

    #[test]
    fn mutated_golden_vectors_never_panic_and_re_encode() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let golden = [INPUT_HELLO, INPUT_FLAG_TERMINATE, ACKNOWLEDGE][rng.random_range(0..3)];
            let mut f = golden.to_vec();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..f.len());
                f[i] = rng.random();
            }
            if let Ok(m) = AgentMessage::decode(&f) {
                // Whatever decodes re-encodes to a frame that decodes to the same message.
                assert_eq!(AgentMessage::decode(&m.encode()).unwrap(), m);
            }
        }
    }
}
