//! The transport seam: how the proxy reaches the database's TCP port. [`Connector`] hides whether the
//! bytes go straight over TCP ([`Direct`]) or through an SSM Session Manager tunnel; the login code
//! above it only sees a byte stream.
//!
//! The endpoint name used for TLS verification and for signing the IAM token is not the connector's
//! business: a connector only moves bytes to wherever the database listens.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpStream;

pub use crate::io::{AsyncStream, BoxStream};

pub mod ssm;

/// A boxed future returned by [`Connector::connect`].
pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = Result<BoxStream, Error>> + Send + 'a>>;

/// Opens one stream to the database per call.
pub trait Connector: Send + Sync + 'static {
    /// Opens a new stream.
    fn connect(&self) -> ConnectFuture<'_>;
    /// Says where streams go, for log lines and error messages (e.g. `tcp 127.0.0.1:3306`).
    fn describe(&self) -> String;
    /// Whether streams share one transport with no per-stream flow control (SSM's smux v1), so a
    /// client that stops reading must not be allowed to hold the transport up: the proxy then
    /// drains its database leg into a spool ([`crate::spool`]) instead of pausing it.
    fn shared(&self) -> bool {
        false
    }
}

/// A transport failure, worded for the person who has to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection was refused or failed.
    #[error("cannot connect to {addr}: {source}")]
    Dial {
        /// The dial address.
        addr: String,
        /// Why (shown in the message, so not chained as a source too).
        source: io::Error,
    },
    /// The SSM session pool could not open a stream; the cause stays typed (e.g.
    /// [`crate::ssm::Error::TargetNotConnected`]).
    #[error("cannot connect to {addr}: {source}")]
    Ssm {
        /// What the connector dials (the target and the destination).
        addr: String,
        /// Why.
        source: crate::ssm::Error,
    },
    /// The connection did not complete in time.
    #[error("connecting to {addr} timed out after {}s", .after.as_secs())]
    Timeout {
        /// The dial address.
        addr: String,
        /// How long we waited.
        after: Duration,
    },
}

/// How long [`Direct`] waits for a TCP connection.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Plain TCP to a dial address: the endpoint itself, or the local end of an existing tunnel.
#[derive(Debug, Clone)]
pub struct Direct {
    /// `host:port` to dial.
    addr: String,
    /// Connect timeout.
    timeout: Duration,
}

impl Direct {
    /// A connector dialing `addr` (`host:port`).
    pub fn new(addr: impl Into<String>) -> Self {
        Direct {
            addr: addr.into(),
            timeout: DIAL_TIMEOUT,
        }
    }

    /// Overrides the connect timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl Connector for Direct {
    fn connect(&self) -> ConnectFuture<'_> {
        Box::pin(async move {
            let stream = tokio::time::timeout(self.timeout, TcpStream::connect(&self.addr))
                .await
                .map_err(|_| Error::Timeout {
                    addr: self.addr.clone(),
                    after: self.timeout,
                })?
                .map_err(|source| Error::Dial {
                    addr: self.addr.clone(),
                    source,
                })?;
            // Login packets are small and latency-bound.
            let _ = stream.set_nodelay(true);
            // A database dropped by a NAT or VPN is noticed by keepalive, not after ~15 min of
            // retransmissions behind the next write.
            crate::io::set_keepalive(&stream);
            Ok(Box::new(stream) as BoxStream)
        })
    }

    fn describe(&self) -> String {
        format!("tcp {}", self.addr)
    }
}
