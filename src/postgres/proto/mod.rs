//! The PostgreSQL frontend/backend protocol, as far as a proxy that logs in for its client needs
//! it: the connection phase, both directions, encode and decode. Sans-IO: nothing here touches a
//! socket or a clock, and randomness (SCRAM nonces and salts) comes from the caller.
//!
//! What it owns:
//! - [`frame`]: the framing. The first packets a client sends have no type byte (`int32` length,
//!   then an `int32` request code); every later message in both directions is a type byte and an
//!   `int32` length. Both framers take a bound and reject a longer, negative or too-short length
//!   before buffering anything.
//! - [`startup`]: what a client sends untyped: `SSLRequest`, `GSSENCRequest`, `StartupMessage`
//!   (protocol 3.0, and 3.2 of PostgreSQL 18) and `CancelRequest` (3.2's key is 4 to 256 bytes).
//! - [`backend`]: the server's answers during login: the single-byte answer to `SSLRequest` /
//!   `GSSENCRequest`, the `Authentication*` family, `ParameterStatus`, `BackendKeyData`,
//!   `ReadyForQuery`, `ErrorResponse` / `NoticeResponse` (with a builder for the proxy's own
//!   errors) and `NegotiateProtocolVersion`.
//! - [`frontend`]: the client's `'p'` messages: `PasswordMessage`, `SASLInitialResponse`,
//!   `SASLResponse`.
//! - [`scram`]: a SCRAM-SHA-256 server (RFC 5802, RFC 7677) for the proxy's optional local
//!   password, so that password never crosses the local leg in clear.
//!
//! Spec: <https://www.postgresql.org/docs/current/protocol-flow.html> and
//! <https://www.postgresql.org/docs/current/protocol-message-formats.html>. After `ReadyForQuery`
//! the proxy relays bytes; the query protocol is not parsed here.
//!
//! Secrets (passwords, tokens, SASL proofs, cancel keys) never appear in `Debug` output or errors.

pub mod backend;
pub mod frame;
pub mod frontend;
pub mod scram;
pub mod startup;

#[doc(hidden)]
pub mod golden;

pub use backend::{
    Authentication, BackendKeyData, BackendMessage, EncryptionResponse, ErrorResponse, Field,
    NegotiateProtocolVersion, NoticeResponse, ParameterStatus, ReadyForQuery, TransactionStatus,
};
pub use frame::Message;
pub use frontend::{PasswordMessage, SaslInitialResponse, SaslResponse};
pub use startup::{
    CancelRequest, GssEncRequest, ProtocolVersion, SslRequest, StartupMessage, StartupPacket,
};

/// SQLSTATE codes the proxy uses in the `ErrorResponse`s it writes (Appendix A of the manual).
pub mod sqlstate {
    /// `28000 invalid_authorization_specification`: a login was refused.
    pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
    /// `28P01 invalid_password`: a password (or the local password) did not match.
    pub const INVALID_PASSWORD: &str = "28P01";
    /// `08P01 protocol_violation`: a malformed or unexpected message.
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// `08006 connection_failure`: the path to the database failed.
    pub const CONNECTION_FAILURE: &str = "08006";
    /// `08001 sqlclient_unable_to_establish_sqlconnection`: the upstream could not be reached.
    pub const UNABLE_TO_ESTABLISH: &str = "08001";
    /// `0A000 feature_not_supported`: e.g. GSSAPI encryption, protocol 2.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// `53300 too_many_connections`.
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// `57P01 admin_shutdown`: the proxy is draining.
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// `57014 query_canceled`.
    pub const QUERY_CANCELED: &str = "57014";
}

/// A malformed, oversized or unsupported message. Every variant names the field or feature; none
/// carries message bytes, so no secret can leak through an error.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The message ended before `field` was complete.
    #[error("truncated message: {field} is incomplete")]
    Truncated {
        /// The wire field being read.
        field: &'static str,
    },
    /// `field` holds a value the protocol does not allow.
    #[error("malformed message: {field}: {reason}")]
    Malformed {
        /// The wire field being read.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A length word announced a message longer than the bound in force.
    #[error("message of {len} bytes exceeds the {max}-byte limit for this phase")]
    TooLong {
        /// The announced length (of the body, without type byte and length word).
        len: u64,
        /// The bound in force.
        max: usize,
    },
    /// A length word below its own four bytes (or, for startup packets, below eight).
    #[error("message length {len} is below the minimum of {min}")]
    TooShort {
        /// The announced length, as a signed `int32` reads it.
        len: i64,
        /// The smallest valid value.
        min: usize,
    },
    /// A message type the current phase does not allow.
    #[error("unexpected message type {} ({tag:#04x}) where {expected} was expected", char::from(*.tag).escape_default())]
    UnexpectedTag {
        /// The type byte.
        tag: u8,
        /// What the phase allows.
        expected: &'static str,
    },
    /// A startup packet with a protocol version the codec does not speak (only 3.x).
    #[error("unsupported frontend protocol {major}.{minor}: only 3.x is supported")]
    UnsupportedProtocol {
        /// Major version (2 is the pre-7.4 protocol).
        major: u16,
        /// Minor version.
        minor: u16,
    },
    /// The peer uses a protocol feature the codec does not support.
    #[error("not supported: {what}")]
    Unsupported {
        /// The feature.
        what: &'static str,
    },
    /// A SCRAM exchange failed; the reason never includes the proof or the password.
    #[error("SCRAM-SHA-256: {reason}")]
    Scram {
        /// What went wrong.
        reason: &'static str,
    },
}
