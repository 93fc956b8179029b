//! The database leg's two halves as the splice sees them, with or without protocol compression
//! (DESIGN.md decision 12): [`UpstreamReader`] yields the ordinary packet stream and
//! [`UpstreamWriter`] takes it. Uncompressed, both pass every call straight to the stream (no
//! copy, no buffer). Compressed, the reader undoes the compressed framing and renumbers the inner
//! packets for the uncompressed client, and the writer wraps what it is given in compressed frames;
//! the codec is [`crate::mysql::proto::compress`], this module only drives it from the socket.
//!
//! The two halves share the connection's compressed sequence id and the client's last packet id
//! ([`Turns`]): the writer is told where a command starts ([`UpstreamWriter::note`]) and takes
//! frame ids from the shared counter; the reader goes on from each frame the server sent.
//!
//! Bounds: one frame at a time. A frame's lengths are checked against the codec's [`Limits`]
//! from its header; at most one frame's compressed payload (≤ 16 MiB) and its inflated bytes
//! (≤ 16 MiB) are held per connection, and buffers grown past 1 MiB by a big frame are given
//! back once it has passed. An idle connection holds no codec state: the decompressor and read
//! buffers go when the database has nothing more to send, the compressor at the end of each
//! burst of client writes. A frame the codec refuses ends the connection with an error naming
//! the hop.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::mysql::proto::compress::{
    Algorithm, Counters, Decoder, Encoder, Limits, Renumber, Sequence,
};
use crate::proxy::shared::Shared;

/// Bytes read from the database per read while compressed.
const WIRE_READ: usize = 64 * 1024;

/// Buffers grown past this by one big frame are given back once it has passed.
const RETAIN_MAX: usize = 1024 * 1024;

/// What the two halves of a compressed leg share: the frame counter, which runs on across both
/// directions within a command, and the ids the client gave its packets.
#[derive(Debug, Default)]
struct Turns {
    seq: Sequence,
    renumber: Renumber,
    /// Frames from the server whose id was not the one expected (logged once).
    out_of_order: u64,
}

/// Locks the shared turns; a poisoned lock (a panic elsewhere) still holds usable counters.
fn lock(turns: &Mutex<Turns>) -> std::sync::MutexGuard<'_, Turns> {
    turns.lock().unwrap_or_else(|p| p.into_inner())
}

/// Splits the database leg into the halves the splice uses. `read_ahead` is what the login read
/// past the server's OK; compressed, it is the start of the first frame.
pub(crate) fn halves<R, W>(
    inner: Arc<Shared>,
    reader: R,
    writer: W,
    algorithm: Option<Algorithm>,
    read_ahead: &[u8],
) -> (UpstreamReader<R>, UpstreamWriter<W>) {
    let Some(algorithm) = algorithm else {
        return (
            UpstreamReader {
                inner: reader,
                zip: None,
            },
            UpstreamWriter {
                inner: writer,
                zip: None,
            },
        );
    };
    let counter = match algorithm {
        Algorithm::Zlib => &inner.stats.compression.zlib_logins,
        Algorithm::Zstd => &inner.stats.compression.zstd_logins,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let turns = Arc::new(Mutex::new(Turns::default()));
    let read = ReadZip {
        decoder: Decoder::new(algorithm, Limits::default()),
        wire: read_ahead.to_vec(),
        wire_pos: 0,
        plain: Vec::new(),
        plain_pos: 0,
        turns: turns.clone(),
        shared: inner.clone(),
        reported: Counters::default(),
        failed: None,
    };
    let write = WriteZip {
        encoder: Encoder::with_default_level(algorithm),
        wire: Vec::new(),
        wire_pos: 0,
        turns,
        shared: inner,
        reported: Counters::default(),
    };
    (
        UpstreamReader {
            inner: reader,
            zip: Some(Box::new(read)),
        },
        UpstreamWriter {
            inner: writer,
            zip: Some(Box::new(write)),
        },
    )
}

/// The reading half of the database leg: the ordinary packet stream, decompressed when the leg
/// is compressed.
pub(crate) struct UpstreamReader<R> {
    inner: R,
    zip: Option<Box<ReadZip>>,
}

struct ReadZip {
    decoder: Decoder,
    /// Bytes read from the database, from `wire_pos` on not yet decoded.
    wire: Vec<u8>,
    wire_pos: usize,
    /// Decoded bytes, from `plain_pos` on not yet handed out.
    plain: Vec<u8>,
    plain_pos: usize,
    turns: Arc<Mutex<Turns>>,
    shared: Arc<Shared>,
    /// Counters already added to the process's stats.
    reported: Counters,
    /// Why the stream was refused: said again on every later read (the codec only remembers
    /// that it failed).
    failed: Option<String>,
}

/// A compressed frame the codec refused, as the I/O error the splice reports for the hop.
fn bad_frame(e: &crate::mysql::proto::compress::Error) -> String {
    format!(
        "bad compressed data from the database ({e}); this connection is closed (if it \
         happens again, run the proxy with --compression off and report it)"
    )
}

impl ReadZip {
    /// The error that ended the stream, as an I/O error (the first one, every time).
    fn fail(&mut self, e: Option<&crate::mysql::proto::compress::Error>) -> io::Error {
        let reason = self
            .failed
            .get_or_insert_with(|| e.map(bad_frame).unwrap_or_default());
        io::Error::new(io::ErrorKind::InvalidData, reason.clone())
    }

    /// Decodes what has been read until some packet-stream bytes are ready or the read bytes are
    /// used up.
    fn decode(&mut self) -> io::Result<()> {
        while self.plain_pos == self.plain.len() && self.wire_pos < self.wire.len() {
            if self.plain.capacity() > RETAIN_MAX {
                self.plain = Vec::new();
            }
            self.plain.clear();
            self.plain_pos = 0;
            let progress = match self
                .decoder
                .decode(&self.wire[self.wire_pos..], &mut self.plain)
            {
                Ok(p) => p,
                Err(e) => return Err(self.fail(Some(&e))),
            };
            self.wire_pos += progress.consumed;
            let mut turns = lock(&self.turns);
            turns.renumber.apply(&mut self.plain);
            if let Some(frame) = progress.frame {
                if !turns.seq.received(frame.seq) {
                    turns.out_of_order += 1;
                    if turns.out_of_order == 1 {
                        tracing::debug!(
                            seq = frame.seq,
                            "a compressed frame from the database had another id than expected"
                        );
                    }
                }
                drop(turns);
                self.report();
            }
        }
        Ok(())
    }

    /// Nothing more to read for now: between frames, give back the decompressor and the buffers
    /// (recreated on the next frame), so that an idle connection costs no codec memory.
    fn idle(&mut self) {
        if self.decoder.at_frame_boundary() && self.plain_pos == self.plain.len() {
            self.decoder.release();
            self.wire = Vec::new();
            self.plain = Vec::new();
            self.plain_pos = 0;
        }
    }

    /// Adds what was decoded since the last report to the process's counters.
    fn report(&mut self) {
        let stats = &self.shared.stats.compression;
        let now = self.decoder.counters();
        publish(
            &mut self.reported,
            now,
            &stats.down_compressed,
            &stats.down_uncompressed,
        );
    }
}

/// Adds the growth of a codec's counters since `reported` to the process's `wire` and `plain`
/// counters.
fn publish(reported: &mut Counters, now: Counters, wire: &AtomicU64, plain: &AtomicU64) {
    wire.fetch_add(now.wire - reported.wire, Ordering::Relaxed);
    plain.fetch_add(now.plain - reported.plain, Ordering::Relaxed);
    *reported = now;
}

impl<R: AsyncRead + Unpin> AsyncRead for UpstreamReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(zip) = this.zip.as_deref_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        };
        if zip.failed.is_some() {
            return Poll::Ready(Err(zip.fail(None)));
        }
        loop {
            if zip.plain_pos < zip.plain.len() {
                let n = (zip.plain.len() - zip.plain_pos).min(out.remaining());
                out.put_slice(&zip.plain[zip.plain_pos..zip.plain_pos + n]);
                zip.plain_pos += n;
                return Poll::Ready(Ok(()));
            }
            if zip.wire_pos < zip.wire.len() {
                zip.decode()?;
                continue;
            }
            if zip.wire.capacity() > RETAIN_MAX {
                zip.wire = Vec::new();
            }
            zip.wire.resize(WIRE_READ, 0);
            zip.wire_pos = 0;
            let mut buf = ReadBuf::new(&mut zip.wire);
            let read = Pin::new(&mut this.inner).poll_read(cx, &mut buf);
            let n = buf.filled().len();
            zip.wire.truncate(n);
            if read.is_pending() {
                zip.idle();
                return Poll::Pending;
            }
            match ready!(read) {
                Ok(()) => {}
                // A TLS peer gone without close_notify has ended its stream too (MySQL servers
                // do that after COM_QUIT): whether that was inside a frame is said below.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if n == 0 {
                // The end of the stream: fine between frames, a failure inside one.
                if let Err(e) = zip.decoder.finish() {
                    return Poll::Ready(Err(zip.fail(Some(&e))));
                }
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// The writing half of the database leg: takes the ordinary packet stream, and sends it in
/// compressed frames when the leg is compressed.
pub(crate) struct UpstreamWriter<W> {
    inner: W,
    zip: Option<Box<WriteZip>>,
}

struct WriteZip {
    encoder: Encoder,
    /// Frames not yet written, from `wire_pos` on.
    wire: Vec<u8>,
    wire_pos: usize,
    turns: Arc<Mutex<Turns>>,
    shared: Arc<Shared>,
    /// Counters already added to the process's stats.
    reported: Counters,
}

impl<W> UpstreamWriter<W> {
    /// The next bytes written hold client packets up to one with id `last_seq`, and a new
    /// command begins with them when `command` is true. Compressed, a command restarts the frame
    /// counter (the server resets its own when it reads one), and the server's answer is
    /// renumbered to follow `last_seq`. Uncompressed, nothing needs doing.
    pub(crate) fn note(&mut self, command: bool, last_seq: u8) {
        if let Some(zip) = &self.zip {
            let mut turns = lock(&zip.turns);
            if command {
                turns.seq.reset();
            }
            turns.renumber.client_sent(last_seq);
        }
    }
}

impl<W: AsyncWrite + Unpin> UpstreamWriter<W> {
    /// Writes out the frames already made; `Ready` when none is left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(zip) = self.zip.as_deref_mut() else {
            return Poll::Ready(Ok(()));
        };
        while zip.wire_pos < zip.wire.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &zip.wire[zip.wire_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            zip.wire_pos += n;
        }
        zip.wire.clear();
        zip.wire_pos = 0;
        if zip.wire.capacity() > RETAIN_MAX {
            zip.wire = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for UpstreamWriter<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.zip.is_none() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        // Frames made earlier go first: at most one write's frames are held.
        ready!(this.poll_drain(cx))?;
        let zip = this.zip.as_deref_mut().expect("compressed");
        {
            let mut turns = lock(&zip.turns);
            zip.encoder
                .encode(buf, &mut turns.seq, &mut zip.wire)
                .map_err(|e| io::Error::other(format!("compressing for the database: {e}")))?;
        }
        let stats = &zip.shared.stats.compression;
        publish(
            &mut zip.reported,
            zip.encoder.counters(),
            &stats.up_compressed,
            &stats.up_uncompressed,
        );
        // Start sending at once; what does not go now goes on the next write or the flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if let Some(zip) = this.zip.as_deref_mut() {
            // The end of a burst (the splice flushes before it waits for the client again):
            // the compressor (hundreds of KiB for zlib) is made again for the next large write.
            zip.encoder.release();
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
