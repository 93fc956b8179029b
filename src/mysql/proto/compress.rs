//! MySQL protocol compression, sans-IO: the 7-byte compressed-frame header, a bounded streaming
//! [`Decoder`] (zlib or zstd frames in, the ordinary packet stream out), an [`Encoder`] (packet
//! bytes in, compressed frames out) and the compressed sequence id ([`Sequence`]). Nothing here
//! touches a socket; the proxy uses it only on the tunnel leg (DESIGN.md decision 12). [`Renumber`]
//! gives the decompressed server stream the inner sequence ids an uncompressed client expects.
//!
//! Spec: <https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_compression_packet.html>.
//! What the servers really do was read in their sources and checked against MariaDB 10.11 (the
//! details, with references, are in `docs/compression.md`):
//!
//! * **Framing.** A frame is `int<3>` compressed length, `int<1>` compressed sequence id, `int<3>`
//!   uncompressed length, then the payload. Uncompressed length 0 means the payload is stored as
//!   is. Otherwise the payload is one complete, independent zlib stream (RFC 1950, from
//!   `compress2`) or one zstd frame (`ZSTD_compressCCtx`) that inflates to exactly that length;
//!   no dictionary or window carries over between frames (mysql-server `mysys/my_compress.cc`:
//!   `zlib_compress_alloc`, `zstd_compress_alloc`, `my_uncompress`). The payload is any run of the
//!   packet stream: several packets, or a piece of one. Readers reassemble packets across frames
//!   (`sql-common/net_serv.cc` `my_net_read`, compressed branch), and the servers do cut packets at
//!   their 16 KiB write buffer (observed) and, since a frame carries at most 2^24 − 1 bytes, must
//!   cut every 16 MiB packet.
//! * **Small and incompressible payloads.** Writers store payloads under `MIN_COMPRESS_LENGTH`
//!   (50) bytes, and any payload whose compressed form is not smaller (`my_compress`).
//! * **Sequence ids.** The compressed sequence id is its own counter, reset to 0 at every command
//!   like the packet sequence id (`net_clear`), incremented per frame sent (`compress_packet`).
//!   A reader checks each frame's id against its counter and then continues from it (MySQL 8
//!   `net_read_packet_header`; MariaDB `my_real_read`); after a writer's flush the counter goes on
//!   from the last frame id (`net_flush`: `pkt_nr = compress_pkt_nr`). So, within one command,
//!   frame ids run on across both directions. Servers answer a wrong id with ERR 1156 "Got packets
//!   out of order" and close. MySQL 8 and MariaDB servers follow the same rule, so [`Sequence`]
//!   needs no variant per server.
//! * **Inner sequence ids are not checked** in compressed mode by either server or either client
//!   library, and the servers number their inner packets from the *frame* counter: a query sent in
//!   two frames is answered from inner id 2, the second result of a multi-statement restarts at 2,
//!   a LOAD DATA LOCAL file sent in one frame is answered with a lower id than an uncompressed
//!   client expects. A proxy that hands the decompressed stream to an uncompressed client must
//!   renumber the inner packets: [`Renumber`].
//!
//! Bounds: a frame's compressed and uncompressed lengths are checked against [`Limits`] from the
//! header alone; compressed bytes are buffered as they arrive (never reserved from the header);
//! inflating stops one byte past the announced length, so a frame that would inflate further (a
//! "zip bomb") costs at most the announced length plus one; the zstd window is capped at 16 MiB.

use std::fmt;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use zstd::stream::raw::{InBuffer, Operation, OutBuffer};

/// Size of a compressed frame's header.
pub const HEADER_LEN: usize = 7;

/// Largest compressed or uncompressed length a frame header can carry (`int<3>`).
pub const MAX_FRAME_LEN: usize = 0xFF_FFFF;

/// Payloads shorter than this are stored, not compressed (`MIN_COMPRESS_LENGTH` in both servers).
pub const MIN_COMPRESS_LENGTH: usize = 50;

/// zlib level the proxy compresses with. `docs/compression.md` has the measurement: on ordinary
/// rows over a ~1 MiB/s link, level 3 is the lowest that compresses rows 3× even in 16 KiB
/// frames and is never the bottleneck on a loaded 2-core machine (≥ 6 MB/s); level 6 gains 6 %
/// of ratio for 2–3× the CPU and becomes the bottleneck there.
pub const DEFAULT_ZLIB_LEVEL: i32 = 3;

/// zstd level the proxy compresses with, and asks of the server in the HandshakeResponse41's
/// `zstd_compression_level` byte. 3 is libzstd's and MySQL's default: the best ratio per CPU on
/// 16 KiB frames, and levels above it cost the server several times the CPU for a few percent.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Largest zstd window the decoder accepts: log2 of 16 MiB, enough for any frame (whose content
/// is at most [`MAX_FRAME_LEN`] bytes), so a hostile frame cannot make the decoder reserve more.
const ZSTD_WINDOW_LOG_MAX: u32 = 24;

/// Output is produced in steps of at most this much, so memory follows what a frame really
/// inflates to, not what its header claims.
const INFLATE_STEP: usize = 64 * 1024;

/// Buffers and zstd contexts grown past this by one big frame are freed after it.
const RETAIN_MAX: usize = 1024 * 1024;

/// zlib payloads at least this long are first tried on a [`PROBE_LEN`] prefix; when that does
/// not shrink, the payload is stored without compressing the rest (random blobs cost little).
const PROBE_MIN: usize = 64 * 1024;

/// Length of the prefix tried (see [`PROBE_MIN`]).
const PROBE_LEN: usize = 8 * 1024;

/// The compression algorithm of a connection: `CLIENT_COMPRESS` or
/// `CLIENT_ZSTD_COMPRESSION_ALGORITHM`, fixed at login for both directions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// zlib streams (RFC 1950), `CLIENT_COMPRESS`.
    Zlib,
    /// zstd frames, `CLIENT_ZSTD_COMPRESSION_ALGORITHM` (MySQL 8.0.18+).
    Zstd,
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Algorithm::Zlib => "zlib",
            Algorithm::Zstd => "zstd",
        })
    }
}

/// Why compressed input was refused. Each ends the connection it came from: the stream cannot be
/// resynchronised.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The header announces more compressed bytes than the limit.
    #[error("compressed frame announces {len} bytes, over the {max}-byte limit")]
    FrameTooLong {
        /// Announced compressed length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The header announces more uncompressed bytes than the limit.
    #[error("compressed frame announces {len} uncompressed bytes, over the {max}-byte limit")]
    UncompressedTooLong {
        /// Announced uncompressed length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload inflated to another length than the header announced. `actual` is `None` when
    /// it inflated past the announced length (decompression stopped there).
    #[error("wrong uncompressed length: the frame announces {announced} bytes and inflates to {}",
        .actual.map_or_else(|| "more".to_owned(), |n| n.to_string()))]
    WrongUncompressedLength {
        /// Uncompressed length from the header.
        announced: usize,
        /// What the payload inflated to, if not more than announced.
        actual: Option<usize>,
    },
    /// The payload is not valid data of the connection's algorithm (or ends before its stream
    /// does, or has bytes after it).
    #[error("corrupt {algorithm} data in a compressed frame: {detail}")]
    Corrupt {
        /// The connection's algorithm.
        algorithm: Algorithm,
        /// What the decompressor said.
        detail: String,
    },
    /// The stream ended inside a frame.
    #[error("the compressed stream ended inside a frame ({have} of {need} bytes)")]
    Truncated {
        /// Bytes of the frame (header included) that arrived.
        have: usize,
        /// Bytes the frame needed.
        need: usize,
    },
    /// The decoder was used after it had failed.
    #[error("compressed stream used after an earlier error")]
    Failed,
    /// The compressor itself failed (never expected; reported rather than panicking).
    #[error("{algorithm} compressor failed: {detail}")]
    Compressor {
        /// The connection's algorithm.
        algorithm: Algorithm,
        /// What the compressor said.
        detail: String,
    },
}

/// A compressed frame's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// `int<3>` length of the payload on the wire.
    pub compressed_len: usize,
    /// `int<1>` compressed sequence id.
    pub seq: u8,
    /// `int<3>` length before compression; 0 when the payload is stored.
    pub uncompressed_len: usize,
}

impl FrameHeader {
    /// Reads a header.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Self {
        Self {
            compressed_len: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], 0]) as usize,
            seq: bytes[3],
            uncompressed_len: u32::from_le_bytes([bytes[4], bytes[5], bytes[6], 0]) as usize,
        }
    }

    /// Writes the header. Lengths must fit in `int<3>` (the encoder guarantees it).
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        debug_assert!(self.compressed_len <= MAX_FRAME_LEN);
        debug_assert!(self.uncompressed_len <= MAX_FRAME_LEN);
        let c = (self.compressed_len as u32).to_le_bytes();
        let u = (self.uncompressed_len as u32).to_le_bytes();
        [c[0], c[1], c[2], self.seq, u[0], u[1], u[2]]
    }

    /// The payload is stored, not compressed.
    pub fn is_stored(self) -> bool {
        self.uncompressed_len == 0
    }

    /// Bytes the payload stands for in the packet stream.
    pub fn plain_len(self) -> usize {
        if self.is_stored() {
            self.compressed_len
        } else {
            self.uncompressed_len
        }
    }
}

/// The compressed sequence id of one connection: one counter per command, shared by both
/// directions (module doc). The caller owns it and hands it to the [`Encoder`] for each write and
/// reports the frames the [`Decoder`] finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sequence {
    /// Id of the next frame.
    next: u8,
}

impl Sequence {
    /// A new command begins: frame ids start again at 0 (`net_clear`).
    pub fn reset(&mut self) {
        self.next = 0;
    }

    /// The id the next frame, sent or received, should carry.
    pub fn expected(self) -> u8 {
        self.next
    }

    /// Takes the id for a frame being sent.
    pub fn take(&mut self) -> u8 {
        let seq = self.next;
        self.next = seq.wrapping_add(1);
        seq
    }

    /// A frame with id `seq` was received: ids go on from it. Returns whether it was the id
    /// expected (servers close the connection when it is not; a client may only log it).
    pub fn received(&mut self, seq: u8) -> bool {
        let expected = seq == self.next;
        self.next = seq.wrapping_add(1);
        expected
    }
}

/// Bounds on one frame, checked from its header before any of its payload is buffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest compressed (wire) payload accepted.
    pub max_compressed: usize,
    /// Largest uncompressed length accepted (a stored payload counts here too).
    pub max_uncompressed: usize,
}

impl Default for Limits {
    /// What the header can express: 16 MiB − 1 each.
    fn default() -> Self {
        Self {
            max_compressed: MAX_FRAME_LEN,
            max_uncompressed: MAX_FRAME_LEN,
        }
    }
}

/// Bytes a codec has carried, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes on the compressed side (headers included).
    pub wire: u64,
    /// Bytes of the packet stream.
    pub plain: u64,
    /// Frames carried.
    pub frames: u64,
    /// Of those, frames whose payload was stored uncompressed.
    pub stored_frames: u64,
}

/// What one [`Decoder::decode`] call did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes used; the caller keeps the rest for the next call.
    pub consumed: usize,
    /// The frame that ended in this call, if one did (the call stops there, so that each frame's
    /// sequence id is seen).
    pub frame: Option<FrameHeader>,
}

/// Where the decoder is in the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading a header (`header_len` bytes of it so far).
    Header,
    /// Passing a stored payload through; `left` bytes to come.
    Stored { frame: FrameHeader, left: usize },
    /// Buffering a compressed payload; it is inflated once whole.
    Compressed { frame: FrameHeader },
    /// An error was returned; nothing more is read.
    Failed,
}

/// Compressed frames in, the packet stream out. Feed it whatever the socket delivered; it keeps
/// partial headers and payloads between calls.
pub struct Decoder {
    algorithm: Algorithm,
    limits: Limits,
    state: State,
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// The compressed payload being buffered (reused from frame to frame).
    payload: Vec<u8>,
    zlib: Option<Decompress>,
    zstd: Option<zstd::stream::raw::Decoder<'static>>,
    counters: Counters,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("algorithm", &self.algorithm)
            .field("state", &self.state)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder for a connection using `algorithm`.
    pub fn new(algorithm: Algorithm, limits: Limits) -> Self {
        Self {
            algorithm,
            limits,
            state: State::Header,
            header: [0; HEADER_LEN],
            header_len: 0,
            payload: Vec::new(),
            zlib: None,
            zstd: None,
            counters: Counters::default(),
        }
    }

    /// Bytes and frames decoded so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Frees the decompressor and buffers (recreated when next needed): for a connection gone
    /// idle, since a zstd context and the payload buffer keep what their largest frame needed.
    pub fn release(&mut self) {
        if self.at_frame_boundary() {
            self.payload = Vec::new();
            self.zlib = None;
            self.zstd = None;
        }
    }

    /// True between frames: the stream may end here.
    pub fn at_frame_boundary(&self) -> bool {
        self.state == State::Header && self.header_len == 0
    }

    /// The peer closed: fine between frames, an error inside one.
    pub fn finish(&self) -> Result<(), Error> {
        match self.state {
            State::Header if self.header_len == 0 => Ok(()),
            State::Header => Err(Error::Truncated {
                have: self.header_len,
                need: HEADER_LEN,
            }),
            State::Stored { frame, left } => Err(Error::Truncated {
                have: HEADER_LEN + frame.compressed_len - left,
                need: HEADER_LEN + frame.compressed_len,
            }),
            State::Compressed { frame } => Err(Error::Truncated {
                have: HEADER_LEN + self.payload.len(),
                need: HEADER_LEN + frame.compressed_len,
            }),
            State::Failed => Err(Error::Failed),
        }
    }

    /// Reads `input`, appending the packet-stream bytes it yields to `out`, until the input is
    /// used up or a frame ends. On error the decoder refuses everything after.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, Error> {
        let result = self.step(input, out);
        if result.is_err() {
            self.state = State::Failed;
            self.payload = Vec::new();
        }
        result
    }

    fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Progress, Error> {
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            match self.state {
                State::Failed => return Err(Error::Failed),
                State::Header => {
                    let n = (HEADER_LEN - self.header_len).min(rest.len());
                    self.header[self.header_len..self.header_len + n].copy_from_slice(&rest[..n]);
                    self.header_len += n;
                    consumed += n;
                    if self.header_len < HEADER_LEN {
                        return Ok(Progress {
                            consumed,
                            frame: None,
                        });
                    }
                    self.header_len = 0;
                    let frame = FrameHeader::parse(&self.header);
                    self.check(frame)?;
                    self.state = if frame.is_stored() {
                        State::Stored {
                            frame,
                            left: frame.compressed_len,
                        }
                    } else {
                        self.payload.clear();
                        State::Compressed { frame }
                    };
                }
                State::Stored { frame, left } => {
                    let n = left.min(rest.len());
                    out.extend_from_slice(&rest[..n]);
                    consumed += n;
                    if n < left {
                        self.state = State::Stored {
                            frame,
                            left: left - n,
                        };
                        return Ok(Progress {
                            consumed,
                            frame: None,
                        });
                    }
                    return Ok(self.frame_done(frame, consumed));
                }
                State::Compressed { frame } => {
                    let n = (frame.compressed_len - self.payload.len()).min(rest.len());
                    self.payload.extend_from_slice(&rest[..n]);
                    consumed += n;
                    if self.payload.len() < frame.compressed_len {
                        return Ok(Progress {
                            consumed,
                            frame: None,
                        });
                    }
                    self.inflate(frame.uncompressed_len, out)?;
                    if frame.compressed_len > RETAIN_MAX || frame.uncompressed_len > RETAIN_MAX {
                        // Do not keep a big frame's buffers for the rest of the connection.
                        self.payload = Vec::new();
                        self.zstd = None;
                    }
                    return Ok(self.frame_done(frame, consumed));
                }
            }
        }
    }

    fn check(&self, frame: FrameHeader) -> Result<(), Error> {
        if frame.compressed_len > self.limits.max_compressed {
            return Err(Error::FrameTooLong {
                len: frame.compressed_len,
                max: self.limits.max_compressed,
            });
        }
        if frame.plain_len() > self.limits.max_uncompressed {
            return Err(Error::UncompressedTooLong {
                len: frame.plain_len(),
                max: self.limits.max_uncompressed,
            });
        }
        Ok(())
    }

    fn frame_done(&mut self, frame: FrameHeader, consumed: usize) -> Progress {
        self.state = State::Header;
        self.counters.wire += (HEADER_LEN + frame.compressed_len) as u64;
        self.counters.plain += frame.plain_len() as u64;
        self.counters.frames += 1;
        self.counters.stored_frames += u64::from(frame.is_stored());
        Progress {
            consumed,
            frame: Some(frame),
        }
    }

    /// Inflates the buffered payload, which must yield exactly `announced` bytes.
    fn inflate(&mut self, announced: usize, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        let result = match self.algorithm {
            Algorithm::Zlib => inflate_zlib(
                self.zlib.get_or_insert_with(|| Decompress::new(true)),
                &self.payload,
                announced,
                out,
            ),
            Algorithm::Zstd => {
                if self.zstd.is_none() {
                    self.zstd = Some(new_zstd_decoder()?);
                }
                let decoder = self.zstd.as_mut().expect("set just above");
                inflate_zstd(decoder, &self.payload, announced, out)
            }
        };
        if result.is_err() {
            out.truncate(start);
        }
        result
    }
}

fn new_zstd_decoder() -> Result<zstd::stream::raw::Decoder<'static>, Error> {
    let corrupt = |e: std::io::Error| Error::Corrupt {
        algorithm: Algorithm::Zstd,
        detail: e.to_string(),
    };
    let mut decoder = zstd::stream::raw::Decoder::new().map_err(corrupt)?;
    decoder
        .set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(
            ZSTD_WINDOW_LOG_MAX,
        ))
        .map_err(corrupt)?;
    Ok(decoder)
}

/// Makes room for the next inflate step: at most [`INFLATE_STEP`] bytes and never more than one
/// past `announced` in all, so overflow is seen without producing more. Returns the step's start.
fn grow(out: &mut Vec<u8>, start: usize, announced: usize) -> usize {
    let produced = out.len() - start;
    let room = (announced + 1 - produced).min(INFLATE_STEP);
    let at = out.len();
    out.resize(at + room, 0);
    at
}

fn wrong_length(announced: usize, produced: usize) -> Error {
    Error::WrongUncompressedLength {
        announced,
        actual: (produced <= announced).then_some(produced),
    }
}

fn inflate_zlib(
    z: &mut Decompress,
    mut input: &[u8],
    announced: usize,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let corrupt = |detail: String| Error::Corrupt {
        algorithm: Algorithm::Zlib,
        detail,
    };
    z.reset(true);
    let start = out.len();
    loop {
        let at = grow(out, start, announced);
        let (in0, out0) = (z.total_in(), z.total_out());
        let status = z
            // Not `Finish`: miniz takes a first `Finish` call as one-shot, needing all the room.
            .decompress(input, &mut out[at..], FlushDecompress::None)
            .map_err(|e| corrupt(e.to_string()))?;
        let used = (z.total_in() - in0) as usize;
        let made = (z.total_out() - out0) as usize;
        out.truncate(at + made);
        input = &input[used..];
        let produced = out.len() - start;
        if produced > announced {
            return Err(wrong_length(announced, produced));
        }
        match status {
            Status::StreamEnd if !input.is_empty() => {
                return Err(corrupt(format!(
                    "{} bytes after the end of the stream",
                    input.len()
                )));
            }
            Status::StreamEnd if produced == announced => return Ok(()),
            Status::StreamEnd => return Err(wrong_length(announced, produced)),
            Status::Ok | Status::BufError if used == 0 && made == 0 => {
                // No progress with output room left: the input ended inside the stream.
                return Err(corrupt("the stream is cut short".to_owned()));
            }
            Status::Ok | Status::BufError => {}
        }
    }
}

fn inflate_zstd(
    z: &mut zstd::stream::raw::Decoder<'static>,
    input: &[u8],
    announced: usize,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    let corrupt = |detail: String| Error::Corrupt {
        algorithm: Algorithm::Zstd,
        detail,
    };
    z.reinit().map_err(|e| corrupt(e.to_string()))?;
    let start = out.len();
    let mut pos = 0;
    loop {
        let at = grow(out, start, announced);
        let mut src = InBuffer::around(&input[pos..]);
        let mut dst = OutBuffer::around(&mut out[at..]);
        let hint = z
            .run(&mut src, &mut dst)
            .map_err(|e| corrupt(e.to_string()))?;
        let (used, made) = (src.pos(), dst.pos());
        out.truncate(at + made);
        pos += used;
        let produced = out.len() - start;
        if produced > announced {
            return Err(wrong_length(announced, produced));
        }
        // `hint == 0`: a zstd frame ended and everything of it was written out.
        if hint == 0 && pos == input.len() {
            return if produced == announced {
                Ok(())
            } else {
                Err(wrong_length(announced, produced))
            };
        }
        if used == 0 && made == 0 {
            return Err(corrupt("the stream is cut short".to_owned()));
        }
    }
}

/// The packet stream in, compressed frames out. Keeps its compressor between calls.
pub struct Encoder {
    algorithm: Algorithm,
    /// Largest payload per frame.
    max_frame: usize,
    zlib: Option<Compress>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    level: i32,
    probe: Vec<u8>,
    counters: Counters,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("algorithm", &self.algorithm)
            .field("level", &self.level)
            .field("max_frame", &self.max_frame)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// An encoder at `level` (zlib 0..=9, zstd 1..=22; out-of-range values are clamped).
    pub fn new(algorithm: Algorithm, level: i32) -> Self {
        let level = match algorithm {
            Algorithm::Zlib => level.clamp(0, 9),
            Algorithm::Zstd => level.clamp(1, 22),
        };
        Self {
            algorithm,
            max_frame: MAX_FRAME_LEN,
            zlib: None,
            zstd: None,
            level,
            probe: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// An encoder at the proxy's default level for `algorithm`.
    pub fn with_default_level(algorithm: Algorithm) -> Self {
        Self::new(
            algorithm,
            match algorithm {
                Algorithm::Zlib => DEFAULT_ZLIB_LEVEL,
                Algorithm::Zstd => DEFAULT_ZSTD_LEVEL,
            },
        )
    }

    /// Caps the payload per frame (1..=[`MAX_FRAME_LEN`]); longer writes become several frames.
    pub fn max_frame(mut self, len: usize) -> Self {
        self.max_frame = len.clamp(1, MAX_FRAME_LEN);
        self
    }

    /// Bytes and frames encoded so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Frees the compressor (recreated when next needed): for a connection gone idle, since a
    /// compressor's state is hundreds of KiB.
    pub fn release(&mut self) {
        self.zlib = None;
        self.zstd = None;
        self.probe = Vec::new();
    }

    /// Appends `data` (any run of the packet stream: whole packets or pieces) to `out` as frames
    /// of at most the frame cap each, taking their ids from `seq`. Returns how many frames.
    pub fn encode(
        &mut self,
        data: &[u8],
        seq: &mut Sequence,
        out: &mut Vec<u8>,
    ) -> Result<usize, Error> {
        let mut frames = 0;
        for chunk in data.chunks(self.max_frame) {
            self.frame(chunk, seq.take(), out)?;
            frames += 1;
        }
        Ok(frames)
    }

    fn frame(&mut self, chunk: &[u8], seq: u8, out: &mut Vec<u8>) -> Result<(), Error> {
        let at = out.len();
        let body = at + HEADER_LEN;
        out.extend_from_slice(&[0; HEADER_LEN]);
        let mut header = FrameHeader {
            compressed_len: chunk.len(),
            seq,
            uncompressed_len: 0,
        };
        let mut compressed = None;
        if chunk.len() >= MIN_COMPRESS_LENGTH && self.worth_trying(chunk)? {
            // Room for a result shorter than the input and no more: what does not fit is stored.
            out.resize(body + chunk.len() - 1, 0);
            compressed = self.compress_into(chunk, &mut out[body..])?;
        }
        match compressed {
            Some(len) => {
                out.truncate(body + len);
                header.compressed_len = len;
                header.uncompressed_len = chunk.len();
            }
            None => {
                out.truncate(body);
                out.extend_from_slice(chunk);
            }
        }
        out[at..body].copy_from_slice(&header.to_bytes());
        self.counters.wire += (HEADER_LEN + header.compressed_len) as u64;
        self.counters.plain += chunk.len() as u64;
        self.counters.frames += 1;
        self.counters.stored_frames += u64::from(header.is_stored());
        Ok(())
    }

    /// For long zlib payloads, compresses a prefix first: when that does not shrink by a
    /// sixteenth, the payload is taken as incompressible (random blobs, compressed files) and
    /// stored without paying for the rest. zstd detects incompressible blocks itself, cheaply.
    fn worth_trying(&mut self, chunk: &[u8]) -> Result<bool, Error> {
        if self.algorithm != Algorithm::Zlib || chunk.len() < PROBE_MIN {
            return Ok(true);
        }
        let sample = &chunk[..PROBE_LEN];
        let mut probe = std::mem::take(&mut self.probe);
        probe.resize(PROBE_LEN - PROBE_LEN / 16, 0);
        let fits = self.compress_into(sample, &mut probe)?.is_some();
        self.probe = probe;
        Ok(fits)
    }

    /// Compresses `chunk` into `dst`; `None` when the result does not fit there.
    fn compress_into(&mut self, chunk: &[u8], dst: &mut [u8]) -> Result<Option<usize>, Error> {
        let algorithm = self.algorithm;
        let failed = |detail: String| Error::Compressor { algorithm, detail };
        match algorithm {
            Algorithm::Zlib => {
                let level = self.level as u32;
                let z = self
                    .zlib
                    .get_or_insert_with(|| Compress::new(Compression::new(level), true));
                z.reset();
                let status = z
                    .compress(chunk, dst, FlushCompress::Finish)
                    .map_err(|e| failed(e.to_string()))?;
                let written = z.total_out() as usize;
                Ok((status == Status::StreamEnd).then_some(written))
            }
            Algorithm::Zstd => {
                if self.zstd.is_none() {
                    let compressor = zstd::bulk::Compressor::new(self.level)
                        .map_err(|e| failed(e.to_string()))?;
                    self.zstd = Some(compressor);
                }
                let z = self.zstd.as_mut().expect("set just above");
                // A destination too small is zstd's way of saying "not smaller": store.
                Ok(z.compress_to_buffer(chunk, dst).ok())
            }
        }
    }
}

/// Renumbers the inner packets of the decompressed server stream for an uncompressed client.
///
/// Servers number their inner packets from the frame counter (module doc), so the ids in the
/// decompressed stream are not the ones an uncompressed client checks for. The client's rule is
/// simple: within a command, each packet, whoever sends it, takes the next id. [`Self::client_sent`]
/// records the id of each packet the client sends (a command's first is 0, a LOAD DATA LOCAL file
/// goes on), and [`Self::apply`] rewrites the id byte of each inner packet header passing toward
/// the client, continuing from it. Only the 4-byte headers are read; payloads are skipped. With
/// pipelined commands the caller must record a command's packets only once the previous
/// command's answer has passed (the ids of that answer would restart otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Renumber {
    /// Id the next server packet gets.
    next: u8,
    /// Bytes of the current header seen (0..4); 4 while in a payload.
    header_seen: usize,
    /// Length bytes of the current header.
    len: [u8; 3],
    /// Payload bytes of the current packet still to pass.
    payload_left: usize,
}

impl Renumber {
    /// The client sent a packet with id `seq`: the server's next packet answers with `seq + 1`.
    pub fn client_sent(&mut self, seq: u8) {
        self.next = seq.wrapping_add(1);
    }

    /// Rewrites, in place, the ids of the inner packet headers in `data`, the next piece of the
    /// decompressed server stream.
    pub fn apply(&mut self, mut data: &mut [u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                data = &mut data[n..];
                continue;
            }
            match self.header_seen {
                0..=2 => self.len[self.header_seen] = data[0],
                _ => {
                    data[0] = self.next;
                    self.next = self.next.wrapping_add(1);
                    self.payload_left =
                        u32::from_le_bytes([self.len[0], self.len[1], self.len[2], 0]) as usize;
                }
            }
            self.header_seen = (self.header_seen + 1) % 4;
            data = &mut data[1..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// MySQL's documented stored frame for `SELECT 1` (page_protocol_basic_compression_packet).
    const DOC_STORED_SELECT_1: &[u8] = &[
        0x0d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x03, 0x53, 0x45, 0x4c,
        0x45, 0x43, 0x54, 0x20, 0x31,
    ];

    /// MySQL's documented zlib frame for a 46-byte COM_QUERY (same page).
    const DOC_COMPRESSED_QUERY: &[u8] = &[
        0x22, 0x00, 0x00, 0x00, 0x32, 0x00, 0x00, 0x78, 0x9c, 0xd3, 0x63, 0x60, 0x60, 0x60, 0x2e,
        0x4e, 0xcd, 0x49, 0x4d, 0x2e, 0x51, 0x50, 0x32, 0x30, 0x34, 0x32, 0x36, 0x31, 0x35, 0x33,
        0xb7, 0xb0, 0xc4, 0xcd, 0x52, 0x02, 0x00, 0x0c, 0xd1, 0x0a, 0x6c,
    ];

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        p.push(seq);
        p.extend_from_slice(payload);
        p
    }

    /// Result-set rows of the kind the benchmark uses: ids, dates, e-mails, statuses, amounts.
    fn rows(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 200);
        let mut i = 0u64;
        while out.len() < len {
            let row = format!(
                "\x07{:07}\x132024-{:02}-{:02} 10:{:02}:00\x18user{:04}@mail.example.com\x07shipped\x06{:03}.{:02}",
                1_000_000 + i,
                1 + i % 12,
                1 + i % 28,
                i % 60,
                i % 977,
                i % 1000,
                i % 100
            );
            out.extend_from_slice(&packet(i as u8, row.as_bytes()));
            i += 1;
        }
        out
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn encode(algorithm: Algorithm, data: &[u8]) -> (Vec<u8>, Encoder) {
        let mut encoder = Encoder::with_default_level(algorithm);
        let mut out = Vec::new();
        encoder
            .encode(data, &mut Sequence::default(), &mut out)
            .unwrap();
        (out, encoder)
    }

    /// Decodes `wire` fed in `reads`; returns the stream, the frames, and the error if any.
    fn decode_in<'a>(
        algorithm: Algorithm,
        limits: Limits,
        reads: impl IntoIterator<Item = &'a [u8]>,
    ) -> (Vec<u8>, Vec<FrameHeader>, Result<(), Error>) {
        let mut decoder = Decoder::new(algorithm, limits);
        let mut out = Vec::new();
        let mut frames = Vec::new();
        for mut read in reads {
            while !read.is_empty() {
                match decoder.decode(read, &mut out) {
                    Ok(p) => {
                        assert!(p.consumed > 0 || p.frame.is_some(), "no progress");
                        read = &read[p.consumed..];
                        frames.extend(p.frame);
                    }
                    Err(e) => return (out, frames, Err(e)),
                }
            }
        }
        let end = decoder.finish();
        (out, frames, end)
    }

    fn decode(algorithm: Algorithm, wire: &[u8]) -> Result<Vec<u8>, Error> {
        let (out, _, end) = decode_in(algorithm, Limits::default(), [wire]);
        end.map(|()| out)
    }

    fn frame_bytes(header: FrameHeader, payload: &[u8]) -> Vec<u8> {
        let mut f = header.to_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut z = Compress::new(Compression::new(6), true);
        let mut out = vec![0; data.len() + 1024];
        assert_eq!(
            z.compress(data, &mut out, FlushCompress::Finish).unwrap(),
            Status::StreamEnd
        );
        out.truncate(z.total_out() as usize);
        out
    }

    #[test]
    fn header_round_trips() {
        let h = FrameHeader {
            compressed_len: 0x12_3456,
            seq: 0xab,
            uncompressed_len: MAX_FRAME_LEN,
        };
        assert_eq!(FrameHeader::parse(&h.to_bytes()), h);
        assert_eq!(h.to_bytes(), [0x56, 0x34, 0x12, 0xab, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn a_short_packet_is_stored_exactly_as_the_spec_shows() {
        let (wire, encoder) = encode(Algorithm::Zlib, &packet(0, b"\x03SELECT 1"));
        assert_eq!(wire, DOC_STORED_SELECT_1);
        assert_eq!(encoder.counters().stored_frames, 1);
        assert_eq!(
            decode(Algorithm::Zlib, DOC_STORED_SELECT_1).unwrap(),
            packet(0, b"\x03SELECT 1")
        );
    }

    #[test]
    fn the_specs_compressed_example_decodes() {
        let query = format!("\x03select \"{}\"", "012345678901234567890123456789012345");
        assert_eq!(
            decode(Algorithm::Zlib, DOC_COMPRESSED_QUERY).unwrap(),
            packet(0, query.as_bytes())
        );
    }

    #[test]
    fn rows_round_trip_compressed_with_both_algorithms() {
        let data = rows(300_000);
        for algorithm in [Algorithm::Zlib, Algorithm::Zstd] {
            let (wire, encoder) = encode(algorithm, &data);
            assert!(
                wire.len() * 3 < data.len(),
                "{algorithm}: {} of {}",
                wire.len(),
                data.len()
            );
            assert_eq!(encoder.counters().stored_frames, 0);
            assert_eq!(decode(algorithm, &wire).unwrap(), data, "{algorithm}");
        }
    }

    #[test]
    fn incompressible_data_is_stored_and_frames_are_numbered() {
        for algorithm in [Algorithm::Zlib, Algorithm::Zstd] {
            // One probe-sized frame and one short frame: both stored, ids 0 and 1.
            let data = noise(200_000, 7);
            let mut encoder = Encoder::with_default_level(algorithm).max_frame(150_000);
            let mut seq = Sequence::default();
            let mut wire = Vec::new();
            assert_eq!(encoder.encode(&data, &mut seq, &mut wire).unwrap(), 2);
            assert_eq!(seq.expected(), 2);
            assert_eq!(wire.len(), data.len() + 2 * HEADER_LEN);
            let (out, frames, end) = decode_in(algorithm, Limits::default(), [&wire[..]]);
            end.unwrap();
            assert_eq!(out, data);
            assert_eq!(
                frames
                    .iter()
                    .map(|f| (f.seq, f.is_stored()))
                    .collect::<Vec<_>>(),
                [(0, true), (1, true)]
            );
        }
    }

    #[test]
    fn a_compressible_tail_after_an_incompressible_prefix_is_stored_not_lost() {
        // The probe sees only noise; the frame is stored whole and decodes to the same bytes.
        let mut data = noise(PROBE_LEN, 3);
        data.extend(rows(PROBE_MIN));
        let (wire, encoder) = encode(Algorithm::Zlib, &data);
        assert_eq!(encoder.counters().stored_frames, 1);
        assert_eq!(decode(Algorithm::Zlib, &wire).unwrap(), data);
    }

    #[test]
    fn sixteen_mib_packets_are_split_across_frames_and_reassembled() {
        // A 16 MiB − 1 payload (continued by an empty packet) is 16 MiB + 7 bytes of stream: it
        // cannot fit one frame, so the second frame starts inside the first packet's payload.
        let mut payload = rows(MAX_FRAME_LEN);
        payload.truncate(MAX_FRAME_LEN);
        let mut data = packet(0, &payload);
        data.extend(packet(1, b""));
        for algorithm in [Algorithm::Zlib, Algorithm::Zstd] {
            let mut seq = Sequence::default();
            let mut wire = Vec::new();
            let mut encoder = Encoder::with_default_level(algorithm);
            assert_eq!(encoder.encode(&data, &mut seq, &mut wire).unwrap(), 2);
            let (out, frames, end) = decode_in(algorithm, Limits::default(), wire.chunks(65_536));
            end.unwrap();
            assert!(out == data, "{algorithm}: the stream differs");
            assert_eq!(frames[0].uncompressed_len, MAX_FRAME_LEN);
            assert_eq!(frames[1].plain_len(), 8);
        }
    }

    #[test]
    fn a_header_split_across_reads_decodes() {
        let (wire, _) = encode(Algorithm::Zstd, &rows(10_000));
        let (out, frames, end) = decode_in(Algorithm::Zstd, Limits::default(), wire.chunks(1));
        end.unwrap();
        assert_eq!(out, rows(10_000));
        assert_eq!(frames.len(), 1);
    }

    #[test]
    fn an_empty_stored_frame_is_accepted() {
        let empty = FrameHeader {
            compressed_len: 0,
            seq: 4,
            uncompressed_len: 0,
        };
        let (out, frames, end) =
            decode_in(Algorithm::Zlib, Limits::default(), [&empty.to_bytes()[..]]);
        end.unwrap();
        assert!(out.is_empty());
        assert_eq!(frames, [empty]);
    }

    #[test]
    fn sequence_follows_the_servers_rules() {
        let mut seq = Sequence::default();
        // The proxy sends a command in two frames, the server answers from the next id on.
        assert_eq!((seq.take(), seq.take()), (0, 1));
        assert!(seq.received(2));
        assert!(seq.received(3));
        // LOAD DATA LOCAL: the file goes on after the server's last frame.
        assert_eq!(seq.take(), 4);
        // A wrong id is reported, and the count goes on from it.
        assert!(!seq.received(9));
        assert_eq!(seq.expected(), 10);
        seq.reset();
        assert_eq!(seq.take(), 0);
        // Ids wrap like packet sequence ids.
        let mut seq = Sequence { next: 255 };
        assert_eq!((seq.take(), seq.take()), (255, 0));
    }

    #[test]
    fn oversized_frames_are_refused_from_the_header_alone() {
        let limits = Limits {
            max_compressed: 1000,
            max_uncompressed: 4000,
        };
        let long = FrameHeader {
            compressed_len: 1001,
            seq: 0,
            uncompressed_len: 2000,
        };
        let (_, _, end) = decode_in(Algorithm::Zlib, limits, [&long.to_bytes()[..]]);
        assert_eq!(
            end,
            Err(Error::FrameTooLong {
                len: 1001,
                max: 1000
            })
        );
        let inflating = FrameHeader {
            compressed_len: 10,
            seq: 0,
            uncompressed_len: 4001,
        };
        let (_, _, end) = decode_in(Algorithm::Zstd, limits, [&inflating.to_bytes()[..]]);
        assert_eq!(
            end,
            Err(Error::UncompressedTooLong {
                len: 4001,
                max: 4000
            })
        );
        // A stored payload counts against the uncompressed bound too.
        let limits = Limits {
            max_compressed: 5000,
            max_uncompressed: 4000,
        };
        let stored = FrameHeader {
            compressed_len: 4001,
            seq: 0,
            uncompressed_len: 0,
        };
        let (_, _, end) = decode_in(Algorithm::Zlib, limits, [&stored.to_bytes()[..]]);
        assert!(matches!(end, Err(Error::UncompressedTooLong { .. })));
    }

    #[test]
    fn a_frame_inflating_past_its_announced_length_stops_there() {
        // 16 MiB of zeros compress to ~16 KiB; the header claims 1000 bytes.
        let bomb = zlib(&vec![0; MAX_FRAME_LEN]);
        let wire = frame_bytes(
            FrameHeader {
                compressed_len: bomb.len(),
                seq: 0,
                uncompressed_len: 1000,
            },
            &bomb,
        );
        let mut decoder = Decoder::new(Algorithm::Zlib, Limits::default());
        let mut out = Vec::new();
        assert_eq!(
            decoder.decode(&wire, &mut out),
            Err(Error::WrongUncompressedLength {
                announced: 1000,
                actual: None
            })
        );
        assert!(out.is_empty());
        assert!(out.capacity() <= 64 * 1024, "grew to {}", out.capacity());
        assert_eq!(decoder.decode(&wire, &mut out), Err(Error::Failed));

        let bomb = zstd::bulk::compress(&vec![0; MAX_FRAME_LEN], 3).unwrap();
        let wire = frame_bytes(
            FrameHeader {
                compressed_len: bomb.len(),
                seq: 0,
                uncompressed_len: 1000,
            },
            &bomb,
        );
        let mut out = Vec::new();
        let mut decoder = Decoder::new(Algorithm::Zstd, Limits::default());
        assert!(matches!(
            decoder.decode(&wire, &mut out),
            Err(Error::WrongUncompressedLength { actual: None, .. })
        ));
        assert!(out.capacity() <= 64 * 1024, "grew to {}", out.capacity());
    }

    #[test]
    fn a_frame_inflating_short_of_its_announced_length_is_refused() {
        let data = rows(5000);
        for (algorithm, payload) in [
            (Algorithm::Zlib, zlib(&data)),
            (Algorithm::Zstd, zstd::bulk::compress(&data, 3).unwrap()),
        ] {
            let wire = frame_bytes(
                FrameHeader {
                    compressed_len: payload.len(),
                    seq: 0,
                    uncompressed_len: data.len() + 1,
                },
                &payload,
            );
            assert_eq!(
                decode(algorithm, &wire),
                Err(Error::WrongUncompressedLength {
                    announced: data.len() + 1,
                    actual: Some(data.len())
                }),
                "{algorithm}"
            );
        }
    }

    #[test]
    fn garbage_cut_and_trailing_payloads_are_corrupt() {
        let data = rows(5000);
        for (algorithm, good) in [
            (Algorithm::Zlib, zlib(&data)),
            (Algorithm::Zstd, zstd::bulk::compress(&data, 3).unwrap()),
        ] {
            let noise = noise(good.len(), 11);
            let mut cut = good.clone();
            cut.truncate(good.len() - 3);
            let mut trailing = good.clone();
            trailing.extend_from_slice(b"xyz");
            for (what, payload) in [("noise", noise), ("cut", cut), ("trailing", trailing)] {
                let wire = frame_bytes(
                    FrameHeader {
                        compressed_len: payload.len(),
                        seq: 0,
                        uncompressed_len: data.len(),
                    },
                    &payload,
                );
                let err = decode(algorithm, &wire).unwrap_err();
                assert!(
                    matches!(err, Error::Corrupt { .. }),
                    "{algorithm} {what}: {err}"
                );
            }
            // A zlib connection does not take zstd data, and the other way round.
            let other = match algorithm {
                Algorithm::Zlib => Algorithm::Zstd,
                Algorithm::Zstd => Algorithm::Zlib,
            };
            let wire = frame_bytes(
                FrameHeader {
                    compressed_len: good.len(),
                    seq: 0,
                    uncompressed_len: data.len(),
                },
                &good,
            );
            assert!(matches!(decode(other, &wire), Err(Error::Corrupt { .. })));
        }
    }

    #[test]
    fn a_zstd_frame_asking_for_a_window_over_16_mib_is_refused() {
        // Frame header: magic, descriptor 0 (no content size, not single-segment), window
        // descriptor 0x70 (2^(10+14) · 2 = 32 MiB), then an empty last raw block.
        let payload = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x78, 0x01, 0x00, 0x00];
        let wire = frame_bytes(
            FrameHeader {
                compressed_len: payload.len(),
                seq: 0,
                uncompressed_len: 1,
            },
            &payload,
        );
        let err = decode(Algorithm::Zstd, &wire).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_truncated() {
        let (wire, _) = encode(Algorithm::Zlib, &rows(5000));
        for cut in [3, HEADER_LEN, wire.len() - 1] {
            let (_, _, end) = decode_in(Algorithm::Zlib, Limits::default(), [&wire[..cut]]);
            assert_eq!(
                end,
                Err(Error::Truncated {
                    have: cut,
                    need: if cut < HEADER_LEN {
                        HEADER_LEN
                    } else {
                        wire.len()
                    }
                })
            );
        }
        let stored = DOC_STORED_SELECT_1;
        let (out, _, end) = decode_in(Algorithm::Zlib, Limits::default(), [&stored[..10]]);
        assert_eq!(
            out,
            &stored[HEADER_LEN..10],
            "stored bytes pass through at once"
        );
        assert!(matches!(end, Err(Error::Truncated { have: 10, need: 20 })));
    }

    #[test]
    fn released_codecs_go_on_working() {
        let data = rows(20_000);
        for algorithm in [Algorithm::Zlib, Algorithm::Zstd] {
            let mut encoder = Encoder::with_default_level(algorithm);
            let mut decoder = Decoder::new(algorithm, Limits::default());
            let mut seq = Sequence::default();
            for _ in 0..2 {
                let mut wire = Vec::new();
                encoder.encode(&data, &mut seq, &mut wire).unwrap();
                let mut out = Vec::new();
                let progress = decoder.decode(&wire, &mut out).unwrap();
                assert_eq!((progress.consumed, out.len()), (wire.len(), data.len()));
                encoder.release();
                decoder.release();
                assert!(encoder.zlib.is_none() && decoder.payload.capacity() == 0);
            }
            assert_eq!(encoder.counters().stored_frames, 0);
        }
    }

    #[test]
    fn encoder_levels_are_clamped_and_zero_stores_everything() {
        let data = rows(10_000);
        let mut encoder = Encoder::new(Algorithm::Zlib, 0);
        let mut wire = Vec::new();
        encoder
            .encode(&data, &mut Sequence::default(), &mut wire)
            .unwrap();
        assert_eq!(encoder.counters().stored_frames, 1);
        assert_eq!(decode(Algorithm::Zlib, &wire).unwrap(), data);
        assert_eq!(Encoder::new(Algorithm::Zstd, 99).level, 22);
    }

    /// The decompressed answer MariaDB 10.11 sent to `SELECT 1; SELECT 2` (docs/compression.md):
    /// inner ids 1 … 5, then 2 … 6 again after its flush.
    fn multi_statement_answer(ids: [u8; 10]) -> Vec<u8> {
        let payloads: [&[u8]; 5] = [
            b"\x01",
            b"\x03def\0\0\0\x011\0\x0c?\0\x01\0\0\0\x08\x81\0\0\0\0",
            b"\xfe\0\0\x0a\0",
            b"\x011",
            b"\xfe\0\0\x02\0",
        ];
        ids.iter()
            .zip(payloads.iter().cycle())
            .flat_map(|(&id, p)| packet(id, p))
            .collect()
    }

    #[test]
    fn renumber_gives_the_client_the_ids_it_expects() {
        let mut stream = multi_statement_answer([1, 2, 3, 4, 5, 2, 3, 4, 5, 6]);
        let mut renumber = Renumber::default();
        renumber.client_sent(0);
        renumber.apply(&mut stream);
        assert_eq!(
            stream,
            multi_statement_answer([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        );
        // LOAD DATA LOCAL: the client's file packets 2 … 5, then the server's OK takes 6.
        let mut ok = packet(3, b"\0\x03\0\x02\0\0\0");
        renumber.client_sent(5);
        renumber.apply(&mut ok);
        assert_eq!(ok[3], 6);
    }

    proptest! {
        #[test]
        fn renumber_is_the_same_in_any_pieces(
            lens in proptest::collection::vec(0usize..600, 1..20),
            cut in 1usize..700,
            first in any::<u8>(),
        ) {
            let stream: Vec<u8> = lens.iter().flat_map(|&n| packet(0xee, &vec![0xee; n])).collect();
            let mut whole = stream.clone();
            let mut renumber = Renumber::default();
            renumber.client_sent(first);
            renumber.apply(&mut whole);
            let mut pieces = stream.clone();
            let mut renumber = Renumber::default();
            renumber.client_sent(first);
            for piece in pieces.chunks_mut(cut) {
                renumber.apply(piece);
            }
            prop_assert!(pieces == whole);
            let mut at = 0;
            for (i, &n) in lens.iter().enumerate() {
                prop_assert_eq!(whole[at + 3], first.wrapping_add(1).wrapping_add(i as u8));
                prop_assert!(whole[at + 4..at + 4 + n].iter().all(|&b| b == 0xee));
                at += 4 + n;
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_stream_round_trips_in_any_reads(
            zstd in any::<bool>(),
            repeat in 1usize..300,
            seed in any::<u64>(),
            tail in proptest::collection::vec(any::<u8>(), 0..3000),
            max_frame in 1usize..5000,
            cuts in proptest::collection::vec(1usize..400, 1..8),
        ) {
            let algorithm = if zstd { Algorithm::Zstd } else { Algorithm::Zlib };
            // Compressible and incompressible parts, frames of any size.
            let mut data = rows(repeat * 20);
            data.extend(noise(repeat, seed));
            data.extend(&tail);
            let mut encoder = Encoder::with_default_level(algorithm).max_frame(max_frame);
            let mut seq = Sequence::default();
            let mut wire = Vec::new();
            let frames = encoder.encode(&data, &mut seq, &mut wire).unwrap();
            prop_assert_eq!(frames, data.len().div_ceil(max_frame));
            let counters = encoder.counters();
            prop_assert_eq!(counters.wire, wire.len() as u64);
            prop_assert_eq!(counters.plain, data.len() as u64);

            let mut reads = Vec::new();
            let mut rest = &wire[..];
            for cut in cuts.iter().cycle() {
                if rest.is_empty() { break; }
                let (read, after) = rest.split_at((*cut).min(rest.len()));
                reads.push(read);
                rest = after;
            }
            let (out, headers, end) = decode_in(algorithm, Limits::default(), reads);
            prop_assert_eq!(end, Ok(()));
            prop_assert!(out == data);
            prop_assert_eq!(headers.len(), frames);
            for (i, h) in headers.iter().enumerate() {
                prop_assert_eq!(usize::from(h.seq), i % 256);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            zstd in any::<bool>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        ) {
            let algorithm = if zstd { Algorithm::Zstd } else { Algorithm::Zlib };
            let limits = Limits { max_compressed: 1500, max_uncompressed: 100_000 };
            let (out, _, _) = decode_in(algorithm, limits, [&bytes[..]]);
            prop_assert!(out.len() <= bytes.len().max(1) * 100_000);
        }
    }
}
