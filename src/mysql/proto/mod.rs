//! The MySQL client/server protocol, as far as a splicing proxy needs it: packet framing, the
//! connection-phase packets (both directions: the proxy parses the upstream's greeting and the
//! client's response, and writes its own greeting and the upstream's response), OK/ERR, and the
//! capability rules. Sans-IO: nothing here touches a socket.
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html>.
//! The proxy does not parse the command phase: after login it copies bytes (see `mysql::splice`).
//! [`command`] holds the little of it that the admin client needs to run SQL text.

pub mod auth;
pub mod buf;
pub mod capabilities;
pub mod command;
pub mod compress;
pub mod handshake;
pub mod packet;
pub mod response;
pub mod scanner;
pub mod scramble;

#[doc(hidden)]
pub mod golden;

pub use capabilities::Capabilities;
pub use handshake::{
    AuthMoreData, AuthSwitchRequest, ComChangeUser, HandshakeResponse41, HandshakeV10, SslRequest,
};
pub use packet::Packet;
pub use response::{ErrPacket, LoginReply, OkPacket};

/// Error codes the proxy uses in the ERR packets it writes.
pub mod codes {
    /// `ER_ACCESS_DENIED_ERROR` (SQLSTATE 28000): a login was refused.
    pub const ACCESS_DENIED: u16 = 1045;
    /// `ER_HANDSHAKE_ERROR` (SQLSTATE 08S01): a malformed or unsupported handshake.
    pub const HANDSHAKE_ERROR: u16 = 1043;
    /// `ER_UNKNOWN_ERROR` (SQLSTATE HY000): the path to the database failed (unreachable, TLS,
    /// stopped answering); the message says which hop. Client-range codes such as 2003 or 2026
    /// cannot be used: libmariadb reports an ERR carrying a 2xxx code as "malformed packet" and
    /// drops its message.
    pub const UPSTREAM_ERROR: u16 = 1105;
    /// `ER_CON_COUNT_ERROR` (SQLSTATE 08004): too many connections.
    pub const TOO_MANY_CONNECTIONS: u16 = 1040;
    /// `ER_NET_WRITE_TIMEOUT`: what a server says to a client that stopped reading its results.
    pub const NET_WRITE_TIMEOUT: u16 = 1161;
    /// `ER_NOT_SUPPORTED_AUTH_MODE` (SQLSTATE 08004): the account does not use IAM authentication.
    pub const NOT_SUPPORTED_AUTH_MODE: u16 = 1251;
}

/// A malformed, oversized or unsupported packet. Every variant names the field or feature.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The payload ended before `field` was complete.
    #[error("truncated packet: {field} is incomplete")]
    Truncated {
        /// The wire field being read.
        field: &'static str,
    },
    /// `field` holds a value the protocol does not allow.
    #[error("malformed packet: {field}: {reason}")]
    Malformed {
        /// The wire field being read.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A packet announced more bytes than the proxy accepts at this point.
    #[error("packet of {len} bytes exceeds the {max}-byte limit for this phase")]
    PacketTooLarge {
        /// Announced payload length.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The peer uses a protocol feature the proxy does not support.
    #[error("not supported: {what}")]
    Unsupported {
        /// The feature.
        what: &'static str,
    },
}
