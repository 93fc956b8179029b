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
//! bytes and events, so the same code serves our client and the simulator's agent (the `ssm-sim`
//! crate, `crates/ssm-sim`; DESIGN.md decision 9). The I/O layers are [`websocket`] (dial and
//! sign), [`session`] (one task per session), [`mux`]/[`stream`] (the stream table and the
//! `AsyncRead + AsyncWrite` handles) and [`pool`] (what [`crate::tunnel::ssm::Ssm`] connects
//! through).
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
//! Every decoder here is bounded and returns [`proto::Error`] instead of panicking on peer bytes.

pub mod api;
pub mod mux;
pub mod outbox;
pub mod pool;
pub mod proto;
pub mod session;
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
    /// A frame, payload or state-machine rule of the sans-IO layer ([`proto`]).
    #[error(transparent)]
    Proto(#[from] proto::Error),

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
}
