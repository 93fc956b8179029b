//! The SSM data channel's sans-IO layer: codecs and state machines that take bytes and the time and
//! return bytes and events. Nothing here owns a socket or spawns a task, and no state machine reads
//! a clock: the owner passes the time in ([`reliable::Now::current`] reads it for them).
//!
//! Our client's session task ([`super::session`]) and the simulator's agent both run on these, one
//! from each end. Failures are this layer's own [`Error`], which [`super::Error::Proto`] carries
//! upward.

pub mod handshake;
pub mod message;
pub mod payload;
pub mod reliable;
pub mod smux;
pub mod version;

/// What the sans-IO layer refuses, named by the layer that noticed it: a frame, a payload, a smux
/// frame, or the reliable channel's send buffer.
///
/// Peer-caused variants describe what the bytes contained; the reference implementations log such
/// messages and drop them, and so may a caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An AgentMessage frame is shorter than its fixed 120-byte header.
    #[error("agent message: frame of {len} bytes is shorter than the 120-byte header")]
    MessageTooShort {
        /// Length of the frame received.
        len: usize,
    },

    /// An AgentMessage frame is longer than [`message::MAX_FRAME_LEN`].
    #[error("agent message: frame of {len} bytes exceeds the limit of {max} bytes")]
    MessageTooLong {
        /// Length of the frame received.
        len: usize,
        /// The limit it exceeded.
        max: usize,
    },

    /// The HeaderLength field is not 116.
    #[error("agent message: HeaderLength is {found}, expected 116")]
    HeaderLength {
        /// The value found in the first four bytes.
        found: u32,
    },

    /// The PayloadLength field disagrees with the number of bytes after the header.
    #[error("agent message: PayloadLength says {declared} bytes but {actual} follow the header")]
    PayloadLength {
        /// The PayloadLength field.
        declared: u32,
        /// Bytes actually present after the 120-byte header.
        actual: usize,
    },

    /// The MessageType field is empty, not printable ASCII, or too long to encode.
    #[error("agent message: invalid MessageType ({reason})")]
    MessageType {
        /// What was wrong with it.
        reason: &'static str,
    },

    /// CreatedDate is zero, which both reference endpoints reject.
    #[error("agent message: CreatedDate is zero on a {message_type} message")]
    CreatedDateMissing {
        /// The MessageType of the offending message.
        message_type: String,
    },

    /// The PayloadDigest is not the SHA-256 of the payload.
    #[error("agent message: PayloadDigest does not match the SHA-256 of the {len}-byte payload")]
    PayloadDigest {
        /// Length of the payload whose digest was checked.
        len: usize,
    },

    /// A message id in text form is not a UUID.
    #[error("message id: {0:?} is not a UUID")]
    InvalidUuid(String),

    /// A JSON payload is larger than [`payload::MAX_JSON_PAYLOAD_LEN`].
    #[error("{what} payload: {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// Which payload (e.g. "HandshakeRequest").
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit it exceeded.
        max: usize,
    },

    /// A JSON payload did not parse into the expected shape.
    #[error("{what} payload: invalid JSON")]
    Json {
        /// Which payload (e.g. "acknowledge").
        what: &'static str,
        /// What serde_json reported.
        #[source]
        source: serde_json::Error,
    },

    /// A flag payload (PayloadType 10) is not exactly four bytes.
    #[error("flag payload: {len} bytes, expected 4")]
    FlagLength {
        /// Length of the payload received.
        len: usize,
    },

    /// A flag payload carries a value the protocol does not define.
    #[error("flag payload: unknown flag value {0}")]
    UnknownFlag(u32),

    /// A smux frame carries a version other than 1.
    #[error("smux: frame version {0}, expected 1")]
    SmuxVersion(u8),

    /// A smux frame carries a command byte this implementation does not speak (UPD is v2-only).
    #[error("smux: unsupported command {cmd} ({reason})")]
    SmuxCommand {
        /// The command byte.
        cmd: u8,
        /// Why it is refused.
        reason: &'static str,
    },

    /// A smux PSH frame announces more data than the configured maximum frame size.
    #[error("smux: frame of {len} data bytes exceeds the maximum of {max}")]
    SmuxFrameTooLarge {
        /// The length field.
        len: usize,
        /// The configured maximum.
        max: usize,
    },

    /// A smux SYN, FIN or NOP frame has a non-zero length; a Go peer would desynchronise on it.
    #[error("smux: {cmd} frame carries a non-zero length {len}")]
    SmuxControlLength {
        /// The command name (SYN, FIN, NOP).
        cmd: &'static str,
        /// The length field.
        len: u16,
    },

    /// The client has used every odd stream id up to `u32::MAX`; a new session is needed.
    #[error("smux: stream ids exhausted, open a new session")]
    SmuxStreamIdsExhausted,

    /// The reliable channel's unacknowledged buffer is full; stop reading local sockets until acks
    /// arrive.
    #[error(
        "reliable channel: {messages} messages ({bytes} bytes) await acknowledgement, the send buffer is full"
    )]
    SendBufferFull {
        /// Unacknowledged messages buffered.
        messages: usize,
        /// Their total encoded size.
        bytes: usize,
    },
}
