//! The SSM transport: MySQL bytes carried over an AWS Systems Manager Session Manager data channel,
//! spoken natively (no `session-manager-plugin` binary).
//!
//! The byte-level reference is `shared/research/ssm-protocol.md` (cited below as "spec §n"); it was
//! written from `aws/session-manager-plugin` (the client), `aws/amazon-ssm-agent` (the far end) and the
//! `xtaci/smux` copies both vendor.
//!
//! # Layers, bottom to top
//!
//! ```text
//!  SSM API        StartSession / ResumeSession / TerminateSession → StreamUrl + TokenValue  api.rs
//!  WebSocket      SigV4-signed upgrade, text OpenDataChannel, then one binary frame per
//!                 AgentMessage                                                              websocket.rs
//!  AgentMessage   120-byte big-endian header + SHA-256 digest + payload                     proto/message.rs
//!  payloads       JSON bodies (acknowledge, handshake, channel_closed) and flag words       proto/payload.rs
//!  reliability    sequence numbers, acks, RTO retransmission, reorder buffer, re-acks       proto/reliable.rs
//!  session task   owns socket + reliable channel: handshake, acks, retransmit timer,
//!                 pings, ResumeSession on socket loss, smux demultiplexing                  session.rs, outbox.rs
//!  smux v1        little-endian 8-byte frames, one stream per MySQL connection               proto/smux.rs (codec), mux.rs (table)
//!                 or basic mode (one raw connection per session) for old agents
//!  streams        AsyncRead + AsyncWrite per MySQL connection                               stream.rs
//!  pool           N warm sessions, least-loaded placement, replacement with backoff          pool.rs
//! ```
//!
//! The codecs and state machines in [`proto`] ([`message`](proto::message),
//! [`payload`](proto::payload), [`smux`](proto::smux), [`reliable`](proto::reliable),
//! [`version`](proto::version)) are sans-IO: they take bytes and the current time and return
//! bytes and events, so the same code serves our client and the simulator's agent (`sim`, feature
//! `sim`; DESIGN.md decision 9). The I/O layers are [`websocket`] (dial and sign), [`session`] (one task per session),
//! [`mux`]/[`stream`] (the stream table and the `AsyncRead + AsyncWrite` handles) and [`pool`]
//! (what [`crate::tunnel::ssm::Ssm`] connects through).
//!
//! # Choices
//!
//! * **smux is our own** ([`proto::smux`] + [`mux`]): the session task feeds frames straight into
//!   the reliable channel (no socket pair, no second copy), upstream backpressure is tied to the
//!   reliable channel's unacknowledged budget, and downstream follows smux v1's session-wide
//!   receive budget. The crates of spec §11 either hide the frame boundary we need, run their own
//!   I/O task over an `AsyncRead + AsyncWrite`, or are young; the wire protocol is 8 bytes.
//! * **No artificial sleeps, acks at once, every overdue message resent** (Karn's rule, 1 s RTO
//!   cap), duplicates re-acknowledged, never data dropped on overflow: spec §5.7.
//! * **Client version 1.2.764.0** (spec §6.5): signed upgrade, smux, no smux keep-alive; NOPs are
//!   sent only to agents ≤ 3.1.1511.0, which expect them.
//! * **Basic mode** sessions carry exactly one connection and end with it: the agent only redials
//!   after the client speaks, which a server-speaks-first protocol like MySQL never does.
//!
//! Every decoder here is bounded and returns [`Error`] instead of panicking on peer bytes.

pub mod api;
pub mod mux;
pub mod outbox;
pub mod pool;
pub mod proto;
pub mod session;
#[cfg(feature = "sim")]
pub mod sim;
pub mod stall;
pub mod stream;
pub mod websocket;

pub use pool::{Pool, PoolStats, SsmConfig, TargetResolver};
pub use stream::SsmStream;

/// Everything that can go wrong in the SSM layers, named by the layer that noticed it.
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

    /// An AgentMessage frame is longer than [`proto::message::MAX_FRAME_LEN`].
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

    /// A JSON payload is larger than [`proto::payload::MAX_JSON_PAYLOAD_LEN`].
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

    /// An SSM API call failed for a reason not listed below.
    #[error("SSM {operation} failed: {message}")]
    Api {
        /// The operation (`StartSession`, `ResumeSession`, `TerminateSession`).
        operation: &'static str,
        /// The service's error code and message, or the transport failure.
        message: String,
    },

    /// StartSession was refused because the target's SSM agent is not connected.
    #[error(
        "SSM StartSession refused: target {target} is not connected (TargetNotConnected: {message}); \
         check that the ECS task or instance is running and its SSM agent is online"
    )]
    TargetNotConnected {
        /// The target.
        target: String,
        /// The service's message.
        message: String,
    },

    /// StartSession was refused for lack of permission.
    #[error(
        "SSM StartSession refused: access denied for target {target} ({code}: {message}); the caller needs \
         ssm:StartSession on the target and on the document {document}"
    )]
    AccessDenied {
        /// The target.
        target: String,
        /// The document the session was started with.
        document: String,
        /// The error code (`AccessDeniedException`, ..).
        code: String,
        /// The service's message.
        message: String,
    },

    /// The credentials for signing could not be obtained.
    #[error("AWS credentials for the SSM WebSocket: {0}")]
    Credentials(String),

    /// The StreamUrl, the dial or the WebSocket upgrade failed, or the socket broke.
    #[error("SSM WebSocket {url}: {message}")]
    WebSocket {
        /// The stream URL without its query (it carries no secret, but is long).
        url: String,
        /// What went wrong.
        message: String,
    },

    /// The agent's handshake was not what a port-forwarding client accepts.
    #[error("SSM handshake with target {target}: {message}")]
    Handshake {
        /// The target.
        target: String,
        /// What went wrong.
        message: String,
    },

    /// No HandshakeRequest/HandshakeComplete arrived in time.
    #[error("SSM handshake with target {target}: no handshake from the agent within {}s", .after.as_secs())]
    HandshakeTimeout {
        /// The target.
        target: String,
        /// How long we waited.
        after: std::time::Duration,
    },

    /// The agent could not connect to the destination (smux ConnectToPortError + FIN).
    #[error(
        "the SSM agent on target {target} could not connect to {host}:{port} (ConnectToPortError); \
         check that the database endpoint is reachable from the target"
    )]
    ConnectToPort {
        /// The target.
        target: String,
        /// Destination host.
        host: String,
        /// Destination port.
        port: u16,
    },

    /// The session ended (channel_closed, TerminateSession, idle timeout, resume refused).
    #[error("SSM session {session_id} to target {target} ended: {reason}")]
    SessionClosed {
        /// The session.
        session_id: String,
        /// The target.
        target: String,
        /// Why, as far as we know.
        reason: String,
    },

    /// The session stopped making progress and a resume did not help.
    #[error(
        "SSM session {session_id} to target {target} made no progress ({what}) even after a resume; it is replaced and its connections were closed"
    )]
    Stalled {
        /// The session.
        session_id: String,
        /// The target.
        target: String,
        /// What was stuck.
        what: String,
    },

    /// The peer broke the smux or data-channel protocol.
    #[error("SSM session {session_id}: protocol error: {message}")]
    Protocol {
        /// The session.
        session_id: String,
        /// What went wrong.
        message: String,
    },

    /// No session became usable within the connect timeout.
    #[error("no SSM session to target {target} became ready within {}s{}", .after.as_secs(), .last_error.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default())]
    NoSession {
        /// The target.
        target: String,
        /// How long we waited.
        after: std::time::Duration,
        /// The most recent failure opening a session, if any.
        last_error: Option<String>,
    },

    /// The connector has been shut down.
    #[error("the SSM connector is shut down")]
    Shutdown,

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
