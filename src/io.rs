//! Byte streams as every layer holds them, and the socket options they get.
//!
//! [`BoxStream`] is the one type-erased stream of the crate: what the listener accepts (TCP or Unix
//! socket), what a [`crate::tunnel::Connector`] returns (TCP or an SSM stream), and what the SSM
//! WebSocket and the AWS API client dial over (TCP, TLS, or through an HTTP proxy).
//! [`set_keepalive`] is the TCP keepalive every long-lived TCP socket gets, on both legs of the
//! proxy.
//!
//! This is a leaf: it imports nothing from the crate.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream (to the database, from a client, or under a WebSocket).
pub trait AsyncStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncStream for T {}

/// An owned, type-erased stream.
pub type BoxStream = Box<dyn AsyncStream>;

/// First keepalive probe after this much silence on a TCP socket.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Time between unanswered keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// Unanswered probes before the kernel declares the peer gone.
pub const KEEPALIVE_RETRIES: u32 = 4;

/// Turns on TCP keepalive (first probe after [`KEEPALIVE_IDLE`], then every
/// [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_RETRIES`] times): a client that vanished, or a database
/// dropped by a NAT or VPN, is noticed in about two minutes instead of pinning its other leg until
/// the server's `wait_timeout` or a retransmission timeout. Best effort: a failure is ignored.
pub fn set_keepalive(stream: &tokio::net::TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keepalive_timings_are_set() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        set_keepalive(&client);
        let sock = socket2::SockRef::from(&client);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), KEEPALIVE_RETRIES);
    }
}
