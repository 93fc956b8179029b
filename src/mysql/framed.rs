//! Packet I/O for the login phase: a byte stream plus a read buffer and a write buffer, driven by the
//! sans-IO codec in `proto::packet`. After login, [`PacketStream::into_parts`] hands back the raw
//! stream and any bytes read ahead, and the splice takes over.
//!
//! [`PacketStream::start_tls`] is the client side of the TLS upgrade (SSLRequest, then rustls
//! verified against the endpoint name), shared by the proxy's upstream leg ([`super::login`]) and
//! the standalone client ([`crate::admin::client`]).

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_rustls::TlsConnector;

use crate::mysql::proto::handshake::SSL_REQUEST_LEN;
use crate::mysql::proto::{self, Packet, SslRequest, packet};
use crate::tunnel::BoxStream;

use crate::mysql::proto::packet::MAX_LOGIN_PAYLOAD;

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
    Protocol(#[from] proto::Error),
}

/// Reads one packet of at most `max_payload` bytes from `r`, decoding from `rbuf` (bytes read
/// before, kept there with whatever follows the packet), waiting at most `timeout` for it whole.
pub async fn read_packet_from<R: AsyncRead + Unpin>(
    r: &mut R,
    rbuf: &mut BytesMut,
    timeout: Duration,
    max_payload: usize,
) -> Result<Packet, ReadError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(p) = packet::decode(rbuf, max_payload)? {
            return Ok(p);
        }
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(4096);
        }
        let n = tokio::time::timeout_at(deadline, r.read_buf(rbuf))
            .await
            .map_err(|_| ReadError::Timeout(timeout))??;
        if n == 0 {
            return Err(ReadError::Eof);
        }
    }
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

    /// Reads one packet of the login phase (at most [`MAX_LOGIN_PAYLOAD`] bytes), waiting at most
    /// `timeout` for it to arrive whole.
    pub async fn read_packet(&mut self, timeout: Duration) -> Result<Packet, ReadError> {
        self.read_packet_limit(timeout, MAX_LOGIN_PAYLOAD).await
    }

    /// Reads one packet of at most `max_payload` bytes, waiting at most `timeout` for it.
    pub async fn read_packet_limit(
        &mut self,
        timeout: Duration,
        max_payload: usize,
    ) -> Result<Packet, ReadError> {
        read_packet_from(&mut self.stream, &mut self.rbuf, timeout, max_payload).await
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

    /// Upgrades this leg to TLS as a MySQL client: sends `request` (sequence id `seq`), then runs
    /// the rustls handshake with `name` as SNI and as the name the certificate must carry (the
    /// endpoint name, never the dial address). Bytes the server sent before the handshake are
    /// refused: they would be cleartext packets anyone on the path could have injected.
    pub async fn start_tls(
        mut self,
        request: &SslRequest,
        seq: u8,
        tls: &TlsConnector,
        name: ServerName<'static>,
        timeout: Duration,
    ) -> Result<PacketStream, StartTlsError> {
        let mut payload = BytesMut::with_capacity(SSL_REQUEST_LEN);
        request.encode(&mut payload);
        self.queue(seq, &payload);
        let ssl_request = self.wbuf.split().freeze();
        if self.has_read_ahead() {
            return Err(StartTlsError::DataBeforeTls);
        }
        let (raw, _) = self.into_parts();
        // The SSLRequest goes out in one write with the ClientHello: one message less over a
        // paced tunnel (the server reads the SSLRequest's exact length before its TLS accept).
        let raw = WriteAhead::new(ssl_request, raw);
        let stream = tokio::time::timeout(timeout, tls.connect(name, ReadAhead::new(raw)))
            .await
            .map_err(|_| StartTlsError::Timeout(timeout))?
            .map_err(StartTlsError::Tls)?;
        // Resumed handshakes skip the certificate (a few KiB less over a paced tunnel); a
        // HelloRetryRequest costs a round trip.
        let (_, conn) = stream.get_ref();
        tracing::debug!(
            handshake = ?conn.handshake_kind(),
            version = ?conn.protocol_version(),
            "TLS to the database established"
        );
        Ok(PacketStream::new(Box::new(stream), BytesMut::new()))
    }
}

/// Why [`PacketStream::start_tls`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartTlsError {
    /// Writing the SSLRequest failed.
    #[error("{0}")]
    Io(io::Error),
    /// The server sent bytes after the SSLRequest and before the TLS handshake.
    #[error("the server sent data before the TLS handshake")]
    DataBeforeTls,
    /// The handshake did not finish in time.
    #[error("the TLS handshake did not finish within {}s", .0.as_secs())]
    Timeout(Duration),
    /// The handshake failed (certificate not trusted or not for the name, no common version...);
    /// the rustls error is inside.
    #[error("{0}")]
    Tls(io::Error),
}

/// A stream whose first write carries `head` in front of it (in one write to the transport when
/// it takes it whole); reads pass through. Whatever the transport has not taken yet is held and
/// written before anything else, and on flush.
pub struct WriteAhead<S> {
    /// Bytes still to write before the caller's.
    head: Vec<u8>,
    /// The stream.
    inner: S,
}

impl<S> WriteAhead<S> {
    /// Puts `head` in front of the first write to `inner`.
    pub fn new(head: Bytes, inner: S) -> Self {
        WriteAhead {
            head: head.to_vec(),
            inner,
        }
    }
}

impl<S: AsyncWrite + Unpin> WriteAhead<S> {
    /// Writes out what is held; ready once it is all gone.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.head.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.head))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.head.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.head.is_empty() {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        // Held with the head and written together; the caller's flush finishes the job.
        self.head.extend_from_slice(buf);
        match self.poll_drain(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(buf.len())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
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

/// Buffer size of [`ReadAhead`] while data streams.
const READ_AHEAD_CAP: usize = 64 * 1024;

/// A read buffer under a TLS session. rustls asks its transport for about 4 KiB at a time, which
/// costs four or more reads per 16 KiB record; while data streams this adapter reads 64 KiB per
/// system call instead. An idle stream holds no buffer: reads go straight through until one fills
/// the caller's buffer, and the buffer is freed again once a short read has been handed out.
pub struct ReadAhead<S> {
    /// The transport.
    inner: S,
    /// Read-ahead bytes; empty (no allocation) while in direct mode.
    buf: Vec<u8>,
    /// Next unread byte of `buf`.
    pos: usize,
    /// End of valid bytes in `buf`.
    len: usize,
    /// The last fill was short: free the buffer once it is drained.
    drained: bool,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`, starting in direct mode.
    pub fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buf: Vec::new(),
            pos: 0,
            len: 0,
            drained: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pos == this.len {
            if this.buf.is_empty() {
                // Direct mode: switch to buffering when the caller's buffer comes back full.
                let want = out.remaining();
                let before = out.filled().len();
                std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, out))?;
                if want > 0 && out.filled().len() - before == want {
                    this.buf = vec![0u8; READ_AHEAD_CAP];
                }
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut this.buf);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            this.len = rb.filled().len();
            this.pos = 0;
            this.drained = this.len < READ_AHEAD_CAP / 2;
            if this.len == 0 {
                this.buf = Vec::new();
                return Poll::Ready(Ok(()));
            }
        }
        let n = (this.len - this.pos).min(out.remaining());
        out.put_slice(&this.buf[this.pos..this.pos + n]);
        this.pos += n;
        if this.pos == this.len {
            this.pos = 0;
            this.len = 0;
            if this.drained {
                this.buf = Vec::new();
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

    /// A transport that records each write it takes, taking at most `max` bytes at a time.
    struct Writes {
        seen: Vec<Vec<u8>>,
        max: usize,
    }

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.max);
            self.seen.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn write_ahead_sends_its_head_with_the_first_write_and_loses_nothing() {
        let mut w = WriteAhead::new(
            Bytes::from_static(b"SSLREQ"),
            Writes {
                seen: Vec::new(),
                max: usize::MAX,
            },
        );
        w.write_all(b"hello").await.unwrap();
        w.write_all(b"again").await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(
            w.inner.seen,
            [&b"SSLREQhello"[..], b"again"],
            "one write, then pass-through"
        );
        // A transport that takes little at a time still gets every byte, in order.
        let mut w = WriteAhead::new(
            Bytes::from_static(b"SSLREQ"),
            Writes {
                seen: Vec::new(),
                max: 4,
            },
        );
        w.write_all(b"hello").await.unwrap();
        w.flush().await.unwrap();
        w.write_all(b"!").await.unwrap();
        assert_eq!(w.inner.seen.concat(), b"SSLREQhello!");
    }

    #[tokio::test]
    async fn read_ahead_delivers_every_byte_in_order_and_frees_its_buffer_when_quiet() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (mut w, r) = tokio::io::duplex(8 * 1024);
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&data).await.unwrap();
        });
        let mut ra = ReadAhead::new(r);
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while got.len() < expected.len() {
            let n = ra.read(&mut chunk).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&chunk[..n]);
        }
        writer.await.unwrap();
        assert_eq!(got, expected);
        assert_eq!(ra.read(&mut chunk).await.unwrap(), 0, "EOF");
        assert!(
            ra.buf.is_empty(),
            "no buffer held after the stream went quiet"
        );
    }

    #[tokio::test]
    async fn prefixed_yields_the_prefix_first() {
        let (mut w, r) = tokio::io::duplex(64);
        w.write_all(b" world").await.unwrap();
        drop(w);
        let mut p = Prefixed::new(Bytes::from_static(b"hello"), r);
        let mut s = String::new();
        p.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }
}
