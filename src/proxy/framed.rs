//! Packet I/O for the login phase: a byte stream plus a read buffer and a write buffer, driven by the
//! sans-IO codec in `mysql::packet`. After login, [`PacketStream::into_parts`] hands back the raw
//! stream and any bytes read ahead, and the splice takes over.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::mysql::{self, Packet, packet};
use crate::tunnel::BoxStream;

/// Largest payload accepted during login. Handshake responses carry at most 64 KiB of connection
/// attributes; anything larger is hostile.
pub const MAX_LOGIN_PAYLOAD: usize = 128 * 1024;

/// Why a packet could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Eof,
    /// Nothing (or not enough) arrived in time.
    #[error("no complete packet within {}s", .0.as_secs())]
    Timeout(Duration),
    /// A socket error.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The bytes are not a valid packet.
    #[error("{0}")]
    Protocol(#[from] mysql::Error),
}

/// A stream read and written in whole MySQL packets.
pub struct PacketStream {
    /// The transport (plain TCP, TLS, or a tunnel stream).
    stream: BoxStream,
    /// Bytes read but not yet decoded.
    rbuf: BytesMut,
    /// Encoded packets not yet written.
    wbuf: BytesMut,
}

impl PacketStream {
    /// Wraps a stream, with bytes already read from it (if any).
    pub fn new(stream: BoxStream, read_ahead: BytesMut) -> Self {
        PacketStream {
            stream,
            rbuf: read_ahead,
            wbuf: BytesMut::with_capacity(1024),
        }
    }

    /// Reads one packet, waiting at most `timeout` for it to arrive whole.
    pub async fn read_packet(&mut self, timeout: Duration) -> Result<Packet, ReadError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(p) = packet::decode(&mut self.rbuf, MAX_LOGIN_PAYLOAD)? {
                return Ok(p);
            }
            if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                self.rbuf.reserve(4096);
            }
            let n = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf))
                .await
                .map_err(|_| ReadError::Timeout(timeout))??;
            if n == 0 {
                return Err(ReadError::Eof);
            }
        }
    }

    /// Queues one packet for writing; returns the next sequence id.
    pub fn queue(&mut self, seq: u8, payload: &[u8]) -> u8 {
        packet::encode(seq, payload, &mut self.wbuf)
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.wbuf.is_empty() {
            self.stream.write_all(&self.wbuf).await?;
            self.wbuf.clear();
        }
        self.stream.flush().await
    }

    /// True when bytes beyond the packets decoded so far have been read.
    pub fn has_read_ahead(&self) -> bool {
        !self.rbuf.is_empty()
    }

    /// The raw stream and the bytes read ahead. Queued but unflushed packets are dropped, so flush
    /// first.
    pub fn into_parts(self) -> (BoxStream, BytesMut) {
        debug_assert!(self.wbuf.is_empty(), "flush before into_parts");
        (self.stream, self.rbuf)
    }
}

/// A stream that first yields bytes already read from it, then reads on; writes pass through.
pub struct Prefixed<S> {
    /// Bytes to return before reading from `inner`.
    prefix: Bytes,
    /// The stream.
    inner: S,
}

impl<S> Prefixed<S> {
    /// Puts `prefix` back in front of `inner`.
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
