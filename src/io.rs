//! Byte streams as every layer holds them, and the socket options they get.
//!
//! [`BoxStream`] is the one type-erased stream of the crate: what the listener accepts (TCP or Unix
//! socket), what a [`crate::tunnel::Connector`] returns (TCP or an SSM stream), and what the SSM
//! WebSocket and the AWS API client dial over (TCP, TLS, or through an HTTP proxy).
//! [`set_keepalive`] is the TCP keepalive every long-lived TCP socket gets, on both legs of the
//! proxy. [`RoundTrips`] counts the round trips a conversation over a stream takes (what a login
//! costs over a tunnel, DESIGN.md decision 13).
//!
//! This is a leaf: it imports nothing from the crate.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

/// A stream that counts round trips: each read that brings bytes after something was written since
/// the last such read is one, and so is the first read of all (the stream's opening went out).
/// The count is read through the [`RoundTripCount`] handle while the stream lives on, wrapped in
/// TLS or not. What it costs per read or write is one branch.
pub struct RoundTrips<S> {
    inner: S,
    count: RoundTripCount,
    /// Written since the last counted read (true at first: the opening).
    waiting: bool,
}

/// The number of round trips a [`RoundTrips`] stream has counted.
#[derive(Clone, Debug, Default)]
pub struct RoundTripCount(Arc<AtomicU32>);

impl RoundTripCount {
    /// Round trips so far.
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

impl<S> RoundTrips<S> {
    /// Wraps `inner`; the handle reads the count.
    pub fn new(inner: S) -> (Self, RoundTripCount) {
        let count = RoundTripCount::default();
        let stream = RoundTrips {
            inner,
            count: count.clone(),
            waiting: true,
        };
        (stream, count)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RoundTrips<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.waiting && buf.filled().len() > before {
            self.waiting = false;
            self.count.0.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RoundTrips<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.waiting = true;
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.waiting = true;
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
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

    #[tokio::test]
    async fn round_trips_count_the_turns_of_a_conversation() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (near, mut far) = tokio::io::duplex(64);
        let (mut near, count) = RoundTrips::new(near);
        // The far side speaks first: the opening's round trip.
        far.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        near.read_exact(&mut buf).await.unwrap();
        assert_eq!(count.get(), 1);
        // Two writes, then the answer in two reads: one round trip.
        near.write_all(b"a").await.unwrap();
        near.write_all(b"b").await.unwrap();
        far.read_exact(&mut [0u8; 2]).await.unwrap();
        far.write_all(b"x").await.unwrap();
        near.read_exact(&mut [0u8; 1]).await.unwrap();
        far.write_all(b"y").await.unwrap();
        near.read_exact(&mut [0u8; 1]).await.unwrap();
        assert_eq!(count.get(), 2);
        near.write_all(b"c").await.unwrap();
        far.write_all(b"z").await.unwrap();
        near.read_exact(&mut [0u8; 1]).await.unwrap();
        assert_eq!(count.get(), 3);
    }
}
