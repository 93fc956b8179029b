//! After login: copy bytes both ways until both sides are done (DESIGN.md decision 6).
//!
//! Upstream → client is a raw copy. Client → upstream is framed only far enough to find packets
//! with sequence id 0 (a new command); a `COM_CHANGE_USER` there is taken out of the stream and
//! replayed upstream as an IAM login for the new user, and the server's answer is relayed back.
//! Everything else passes untouched. Half-close is kept: EOF from one side shuts down writing to
//! the other, and the connection ends when both directions have ended.
//!
//! When the database leg breaks (the tunnel dropped, the session was terminated, the server went
//! away) while the client waits for the answer to a command of which no byte has reached it yet,
//! the proxy answers that command itself with an ERR packet saying the link was lost, then closes:
//! the client sees a MySQL error that names the hop instead of a bare "lost connection". It never
//! writes into an answer already under way, and not at all once a client pipelines commands (see
//! `Awaiting`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::login::{Session, Side};
use crate::mysql::proto::auth::{self, Credential, Exchange, IamLogin, Next, Phase};
use crate::mysql::proto::packet::{self, Boundaries, HEADER_LEN, MAX_PAYLOAD_LEN, peek_header};
use crate::mysql::proto::{Capabilities, ComChangeUser, ErrPacket, codes};
use crate::proxy::Inner;
use crate::spool::{Spool, SpoolLimits};
use crate::tunnel::BoxStream;

/// Largest read buffer of each direction, reached while data streams.
const COPY_BUF: usize = 64 * 1024;

/// Read buffer of an idle direction: idle connections cost little memory, busy ones grow to
/// [`COPY_BUF`] after a few full reads.
const IDLE_BUF: usize = 4 * 1024;

/// The next buffer size after a read of `n` bytes into a buffer of `cap`: grow when the read
/// filled it, fall back to [`IDLE_BUF`] when the stream went quiet.
fn next_buf_size(cap: usize, n: usize) -> usize {
    if n == cap {
        (cap * 4).min(COPY_BUF)
    } else if n < IDLE_BUF {
        IDLE_BUF
    } else {
        cap
    }
}

/// `COM_QUIT`: the client ends the session.
const COM_QUIT: u8 = 0x01;

/// `COM_STMT_SEND_LONG_DATA`: parameter data; the server never answers it.
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;

/// `COM_STMT_CLOSE`: frees a prepared statement; the server never answers it.
const COM_STMT_CLOSE: u8 = 0x19;

/// Whether the server answers `command` (the first payload byte of a command packet).
fn expects_answer(command: u8) -> bool {
    !matches!(
        command,
        COM_QUIT | COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE | ComChangeUser::COMMAND
    )
}

/// Largest COM_CHANGE_USER accepted (user, auth data, database, attributes).
const MAX_CHANGE_USER: usize = 128 * 1024;

/// How a spliced connection ended.
#[derive(Debug)]
pub struct SpliceEnd {
    /// Who ended it first.
    pub closed_by: Side,
    /// Bytes from the client to the upstream.
    pub bytes_up: u64,
    /// Bytes from the upstream to the client.
    pub bytes_down: u64,
    /// The error that ended it, if it was not a clean close.
    pub error: Option<String>,
}

/// What to do with the front of the client's unforwarded bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Forward this many bytes as they are.
    Forward(usize),
    /// Nothing can be decided until more bytes arrive.
    NeedMore,
    /// A complete COM_CHANGE_USER packet of this many bytes (header included) is at the front.
    ChangeUser(usize),
}

/// Sans-IO scanner of the client → server byte stream that finds command boundaries.
#[derive(Debug, Default)]
pub struct CommandScanner {
    /// Bytes of the current packet (header included) still to pass.
    remaining: usize,
    /// The previous packet was 16 MiB − 1 bytes, so the next one continues it whatever its seq id.
    continuation: bool,
    /// Inside the file data of a `LOAD DATA LOCAL` (packets with seq != 0 until an empty one):
    /// sequence ids wrap there, so a seq 0 packet is data, not a command.
    in_file_data: bool,
    /// The client has sent COM_QUIT: whatever closes next, the client ended the session.
    pub quit: bool,
    /// Commands the server will answer, passed since the caller last reset this count (a command
    /// counts once its first bytes are forwarded; the empty packet that ends a `LOAD DATA LOCAL`
    /// file counts too, since the server answers it with the statement's OK or ERR).
    pub commands: usize,
    /// Sequence id of the last packet header passed: an answer the proxy writes for the server
    /// takes the next one (a 16 MiB command spans several packets; a `LOAD DATA LOCAL` file ends
    /// at whatever id its empty packet had).
    pub last_seq: u8,
}

impl CommandScanner {
    /// Looks at `buf` (client bytes not yet forwarded) and says what to do with its front.
    pub fn step(&mut self, buf: &[u8]) -> Result<Step, crate::mysql::proto::Error> {
        let mut pos = 0;
        loop {
            if self.remaining > 0 {
                let n = self.remaining.min(buf.len() - pos);
                pos += n;
                self.remaining -= n;
                if self.remaining > 0 {
                    break;
                }
                continue;
            }
            let rest = &buf[pos..];
            let Some((len, seq)) = peek_header(rest) else {
                break;
            };
            let is_command = seq == 0 && !self.continuation && !self.in_file_data;
            let mut answered = false;
            if is_command && len > 0 {
                let Some(&command) = rest.get(HEADER_LEN) else {
                    break;
                };
                answered = expects_answer(command);
                if command == COM_QUIT {
                    self.quit = true;
                }
                if command == ComChangeUser::COMMAND {
                    if pos > 0 {
                        break;
                    }
                    if len > MAX_CHANGE_USER {
                        return Err(crate::mysql::proto::Error::PacketTooLarge {
                            len,
                            max: MAX_CHANGE_USER,
                        });
                    }
                    if rest.len() < HEADER_LEN + len {
                        return Ok(Step::NeedMore);
                    }
                    return Ok(Step::ChangeUser(HEADER_LEN + len));
                }
            }
            if !self.continuation {
                // Outside a command's first packet the client only sends LOAD DATA LOCAL file
                // contents (seq 2, 3, …), ended by an empty packet.
                if self.in_file_data {
                    self.in_file_data = len != 0;
                    // The empty packet ends the file: the server now answers the statement.
                    answered = len == 0;
                } else if seq != 0 && len != 0 {
                    self.in_file_data = true;
                } else if seq != 0 {
                    // An empty file (the first data packet is the terminator).
                    answered = true;
                }
            }
            self.last_seq = seq;
            self.continuation = len == MAX_PAYLOAD_LEN;
            self.remaining = HEADER_LEN + len;
            if answered {
                self.commands += 1;
            }
        }
        Ok(if pos > 0 {
            Step::Forward(pos)
        } else {
            Step::NeedMore
        })
    }
}

/// A COM_CHANGE_USER handed from the client→upstream half to the upstream→client half, which owns
/// the client's write side and the upstream's read side.
struct ChangeUserJob {
    /// The client's packet payload (without header).
    payload: Bytes,
    /// Signalled when the exchange is over; `Err` ends the connection.
    done: oneshot::Sender<Result<(), String>>,
}

/// How long the second direction may run on after the first ended cleanly (half-close).
const HALF_CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(300);

/// How long the reading half may take to notice a database leg that failed under a write, so that
/// it can answer a waiting client before the connection closes.
const UPSTREAM_GONE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// A direction's failure: whose side failed and why.
type DirError = (Side, String);

/// Whether the client waits for an answer of which it has had no byte yet: the one moment when an
/// ERR from the proxy (at the sequence id after the command's last packet) is a well-formed answer
/// rather than bytes inside another.
///
/// The client→database half marks a command before forwarding it; the database→client half clears
/// the mark before it forwards any byte. MySQL clients send a command only after the previous
/// answer is complete, so "marked and nothing forwarded since" means nothing of the answer exists
/// on the client's side. A client that pipelines (a second command while the first still waits)
/// breaks that reasoning, so the state becomes `UNSURE` for good and the proxy never answers for
/// the server on that connection.
///
/// It also carries the answer the proxy owes for a `COM_CHANGE_USER` it refused because it came
/// behind an unanswered command: that ERR can only be written once the server has finished its
/// answers and closed (see `client_to_upstream`).
#[derive(Debug, Default)]
struct Awaiting {
    /// `IDLE`, `WAITING` or `UNSURE`.
    state: AtomicU8,
    /// The sequence id an answer to the latest command starts at.
    reply_seq: AtomicU8,
    /// The ERR owed to a refused, pipelined `COM_CHANGE_USER`, written after the server's last
    /// byte instead of a link-lost ERR.
    refusal: std::sync::Mutex<Option<ErrPacket>>,
}

impl Awaiting {
    /// No command waits, or its answer has started.
    const IDLE: u8 = 0;
    /// A command was sent and no byte has been forwarded to the client since.
    const WAITING: u8 = 1;
    /// The client pipelines: the proxy cannot tell where answers begin.
    const UNSURE: u8 = 2;

    /// `commands` commands that the server answers are about to go upstream; the answer to the
    /// last of them starts at sequence id `reply_seq`.
    fn sent(&self, commands: usize, reply_seq: u8) {
        if commands == 0 {
            return;
        }
        self.reply_seq.store(reply_seq, Ordering::Release);
        let next = |s: u8| match s {
            Self::IDLE if commands == 1 => Some(Self::WAITING),
            Self::UNSURE => None,
            _ => Some(Self::UNSURE),
        };
        let _ = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, next);
    }

    /// More packets of the same command went (a 16 MiB command, a LOAD DATA file): its answer
    /// starts after them.
    fn continued(&self, reply_seq: u8) {
        self.reply_seq.store(reply_seq, Ordering::Release);
    }

    /// Bytes from the database are about to go to the client.
    fn answered(&self) {
        let _ = self.state.compare_exchange(
            Self::WAITING,
            Self::IDLE,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Whether an ERR written now would be the complete answer to the client's command.
    fn waiting(&self) -> bool {
        self.state.load(Ordering::Acquire) == Self::WAITING
    }

    /// Whether no command is known to wait for its answer (its answer may still be under way).
    fn idle(&self) -> bool {
        self.state.load(Ordering::Acquire) == Self::IDLE
    }

    /// The sequence id of the proxy's ERR answering the latest command.
    fn reply_seq(&self) -> u8 {
        self.reply_seq.load(Ordering::Acquire)
    }

    /// Owes `err` to a refused `COM_CHANGE_USER`, to be written once the server is done.
    fn refuse(&self, err: ErrPacket) {
        *self.refusal.lock().unwrap_or_else(|p| p.into_inner()) = Some(err);
    }

    /// The ERR owed to a refused `COM_CHANGE_USER`, if any (taken once).
    fn take_refusal(&self) -> Option<ErrPacket> {
        self.refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// Splices two established legs until both directions end.
pub async fn run(
    inner: Arc<Inner>,
    client: BoxStream,
    client_read_ahead: BytesMut,
    upstream: BoxStream,
    upstream_read_ahead: BytesMut,
    session: Session,
) -> SpliceEnd {
    let (client_r, client_w) = tokio::io::split(client);
    let (upstream_r, upstream_w) = tokio::io::split(upstream);
    let upstream_w = Arc::new(Mutex::new(upstream_w));
    let (jobs_tx, jobs_rx) = mpsc::channel::<ChangeUserJob>(1);
    let bytes_up = AtomicU64::new(0);
    let bytes_down = AtomicU64::new(0);
    let client_quit = AtomicBool::new(false);
    let awaiting = Awaiting::default();

    let up = client_to_upstream(
        &inner,
        client_r,
        client_read_ahead,
        upstream_w.clone(),
        jobs_tx,
        &bytes_up,
        &client_quit,
        &awaiting,
    );
    let down = upstream_to_client(
        &inner,
        &session,
        upstream_r,
        upstream_read_ahead,
        client_w,
        upstream_w,
        jobs_rx,
        &bytes_down,
        &awaiting,
    );
    tokio::pin!(up);
    tokio::pin!(down);

    // The first direction to end decides who closed. A clean EOF lets the other direction finish
    // (half-close); an error ends both.
    let (closed_by, error) = tokio::select! {
        r = &mut up => match r {
            Ok(()) => (Side::Client, linger(&mut down).await),
            Err((Side::Upstream, e)) => {
                // The database leg broke under a write; the reading half meets the same failure
                // and answers a waiting client before closing.
                let _ = tokio::time::timeout(UPSTREAM_GONE_GRACE, &mut down).await;
                (Side::Upstream, Some(e))
            }
            Err((side, e)) => (side, Some(e)),
        },
        r = &mut down => match r {
            // After COM_QUIT the server closing is the client's doing.
            Ok(()) if client_quit.load(Ordering::Relaxed) => (Side::Client, linger(&mut up).await),
            Ok(()) => (Side::Upstream, linger(&mut up).await),
            Err((side, e)) => (side, Some(e)),
        },
    };
    SpliceEnd {
        closed_by,
        bytes_up: bytes_up.load(Ordering::Relaxed),
        bytes_down: bytes_down.load(Ordering::Relaxed),
        error,
    }
}

/// Lets the remaining direction finish, for at most [`HALF_CLOSE_LINGER`].
async fn linger<F>(rest: &mut std::pin::Pin<&mut F>) -> Option<String>
where
    F: std::future::Future<Output = Result<(), DirError>>,
{
    match tokio::time::timeout(HALF_CLOSE_LINGER, rest.as_mut()).await {
        Ok(Ok(())) => None,
        Ok(Err((_, e))) => Some(e),
        Err(_) => Some(format!(
            "the other side stayed open {}s after a half-close",
            HALF_CLOSE_LINGER.as_secs()
        )),
    }
}

#[allow(clippy::too_many_arguments)] // one call site; the halves and counters are distinct roles
async fn client_to_upstream<R, W>(
    inner: &Inner,
    mut client_r: R,
    mut buf: BytesMut,
    upstream_w: Arc<Mutex<W>>,
    jobs: mpsc::Sender<ChangeUserJob>,
    counter: &AtomicU64,
    client_quit: &AtomicBool,
    awaiting: &Awaiting,
) -> Result<(), DirError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let up_err = |e: std::io::Error| (Side::Upstream, format!("writing to the database: {e}"));
    let mut scanner = CommandScanner::default();
    let mut want = IDLE_BUF;
    loop {
        loop {
            match scanner.step(&buf) {
                Ok(Step::Forward(n)) => {
                    if scanner.quit {
                        client_quit.store(true, Ordering::Relaxed);
                    }
                    // Marked before it goes, so that the answer cannot come back first.
                    let commands = std::mem::take(&mut scanner.commands);
                    let reply_seq = scanner.last_seq.wrapping_add(1);
                    if commands > 0 {
                        awaiting.sent(commands, reply_seq);
                    } else {
                        awaiting.continued(reply_seq);
                    }
                    let mut w = upstream_w.lock().await;
                    w.write_all(&buf[..n]).await.map_err(up_err)?;
                    // Before waiting for the client again, everything must be on its way: a TLS
                    // writer whose transport said "not now" (an SSM stream's full send buffer)
                    // still holds records that only a flush pushes out.
                    w.flush().await.map_err(up_err)?;
                    drop(w);
                    buf.advance(n);
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                    inner.stats.bytes_up.fetch_add(n as u64, Ordering::Relaxed);
                }
                Ok(Step::ChangeUser(n)) => {
                    if !awaiting.idle() {
                        // Behind a command the server has not answered yet, the server's reply
                        // to the change could not be told from that answer. Send nothing more,
                        // let the server finish and close (it closes when it reads the end of
                        // the stream), then answer the change with an ERR (`answer_link_lost`).
                        tracing::warn!(
                            "the client sent COM_CHANGE_USER before the answer to its previous \
                             command; refusing it and ending the connection once that answer \
                             is through"
                        );
                        awaiting.refuse(pipelined_change_user());
                        let mut w = upstream_w.lock().await;
                        let _ = w.shutdown().await;
                        return Ok(());
                    }
                    let packet = buf.split_to(n).freeze();
                    let (done, wait) = oneshot::channel();
                    let job = ChangeUserJob {
                        payload: packet.slice(HEADER_LEN..),
                        done,
                    };
                    if jobs.send(job).await.is_err() {
                        return Err((Side::Proxy, "the relay task ended".into()));
                    }
                    match wait.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err((Side::Upstream, e)),
                        Err(_) => return Err((Side::Proxy, "the relay task ended".into())),
                    }
                }
                Ok(Step::NeedMore) => break,
                Err(e) => {
                    return Err((Side::Client, format!("the client sent a bad packet: {e}")));
                }
            }
        }
        if buf.is_empty() && buf.capacity() > want {
            // Give back a grown buffer once the stream is quiet.
            buf = BytesMut::with_capacity(want);
        } else if buf.capacity() - buf.len() < want / 2 {
            buf.reserve(want);
        }
        let spare = buf.capacity() - buf.len();
        let n = match client_r.read_buf(&mut buf).await {
            Ok(n) => n,
            // A TLS client that closes without close_notify has still ended its stream.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err((Side::Client, format!("reading from the client: {e}"))),
        };
        if n == 0 {
            let mut w = upstream_w.lock().await;
            if !buf.is_empty() {
                // A packet cut short by the client's close: pass on what there is.
                let _ = w.write_all(&buf).await;
            }
            let _ = w.shutdown().await;
            return Ok(());
        }
        want = next_buf_size(want.max(spare.min(COPY_BUF)), n);
    }
}

#[allow(clippy::too_many_arguments)] // one call site; the halves and counters are distinct roles
async fn upstream_to_client<R, W, U>(
    inner: &Inner,
    session: &Session,
    mut upstream_r: R,
    read_ahead: BytesMut,
    mut client_w: W,
    upstream_w: Arc<Mutex<U>>,
    mut jobs: mpsc::Receiver<ChangeUserJob>,
    counter: &AtomicU64,
    awaiting: &Awaiting,
) -> Result<(), DirError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    U: AsyncWrite + Unpin,
{
    let write_err = |e: std::io::Error| (Side::Client, format!("writing to the client: {e}"));
    let mut spool = Spool::new(inner.spool.clone());
    // Over a transport shared with other connections the database leg is drained whatever this
    // client does (DESIGN.md decision 11); otherwise its own back-pressure is the right brake and
    // at most one read is held.
    let shared = inner.connector.shared();
    let hold = if shared { u64::MAX } else { COPY_BUF as u64 };
    let mut frames = Boundaries::default();
    let mut stalled: Option<StallEnd> = None;
    if !read_ahead.is_empty() {
        awaiting.answered();
        frames.feed(&read_ahead);
        let _ = spool.push(read_ahead.freeze());
    }
    let mut want = IDLE_BUF;
    let mut upstream_open = true;
    let mut jobs_open = true;
    let mut spilled = false;
    loop {
        let front = spool.front().map_err(spool_err)?;
        if front.is_empty() {
            if let Some(end) = stalled.take() {
                return finish_stalled(inner, &mut client_w, end).await;
            }
            if !upstream_open {
                return Ok(());
            }
        }
        let read = upstream_open && stalled.is_none() && spool.len() < hold;
        tokio::select! {
            biased;
            job = jobs.recv(), if jobs_open && front.is_empty() => match job {
                Some(job) => {
                    let r = change_user(
                        inner, session, &mut upstream_r, &mut client_w, &upstream_w, job.payload,
                    )
                    .await;
                    let fatal = r.as_ref().err().cloned();
                    let _ = job.done.send(r.map_err(|(_, e)| e));
                    if let Some(e) = fatal {
                        return Err(e);
                    }
                }
                None => jobs_open = false,
            },
            w = client_w.write(&front), if !front.is_empty() => {
                let n = w.map_err(write_err)?;
                if n == 0 {
                    return Err(write_err(std::io::ErrorKind::WriteZero.into()));
                }
                spool.consume(n);
                counter.fetch_add(n as u64, Ordering::Relaxed);
                inner.stats.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
                if spool.is_empty() {
                    // A local TLS writer may hold records back until flushed.
                    client_w.flush().await.map_err(write_err)?;
                }
            }
            n = read_some(&mut upstream_r, &mut want), if read => {
                let chunk = match n {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        let e = format!("reading from the database: {e}");
                        deliver_all(&mut spool, &mut client_w, counter, inner).await?;
                        answer_link_lost(inner, awaiting, &mut client_w, &e).await;
                        return Err((Side::Upstream, e));
                    }
                };
                if chunk.is_empty() {
                    let e = "the database closed the connection";
                    deliver_all(&mut spool, &mut client_w, counter, inner).await?;
                    let answered = answer_link_lost(inner, awaiting, &mut client_w, e).await;
                    let _ = client_w.shutdown().await;
                    return if answered {
                        Err((Side::Upstream, format!("{e} while a command waited for its answer")))
                    } else {
                        Ok(())
                    };
                }
                awaiting.answered();
                let boundary_before = frames.boundary();
                let seq_before = frames.next_seq();
                frames.feed(&chunk);
                match spool.push(chunk) {
                    Ok(()) => {
                        if !spilled && spool.on_disk() > 0 {
                            spilled = true;
                            tracing::info!(
                                held = spool.len(),
                                "the client is not reading its results; holding them encrypted on disk so the other connections on the tunnel go on"
                            );
                        }
                    }
                    Err(e) => {
                        // Keep what is held up to the last whole packet before this chunk, close
                        // the database leg, and end with an ERR once the client has read that far.
                        inner.stats.stalled_ends.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            error = %e,
                            "the client stopped reading for too long; ending this connection"
                        );
                        // The spool and the tracker both count from the start of the splice, and
                        // the refused chunk was not kept.
                        let clean = boundary_before >= spool.delivered();
                        spool.cap_delivery(boundary_before);
                        stalled = Some(StallEnd {
                            reason: e.to_string(),
                            boundary: boundary_before,
                            seq: seq_before,
                            clean,
                        });
                        upstream_open = false;
                        let mut w = upstream_w.lock().await;
                        let _ = w.shutdown().await;
                    }
                }
            }
        }
    }
}

/// Why and where a connection whose client stopped reading is ended.
#[derive(Debug)]
struct StallEnd {
    /// What bound was reached.
    reason: String,
    /// Stream offset of the last whole packet delivered.
    boundary: u64,
    /// Sequence id the ERR takes there.
    seq: u8,
    /// Whether the client had not yet been given bytes past that packet (a single packet larger
    /// than the whole spool): only then is an ERR there well-formed.
    clean: bool,
}

/// Reads what is available from `r` (one read, then whatever else is already buffered) into a
/// fresh buffer sized by the recent reads; an empty result is the end of the stream. MySQL servers
/// close without a TLS close_notify after COM_QUIT: that is an end too, not a failure.
async fn read_some<R: AsyncRead + Unpin>(r: &mut R, want: &mut usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(*want);
    let n = match r.read_buf(&mut buf).await {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
        Err(e) => return Err(e),
    };
    if n == 0 {
        return Ok(Bytes::new());
    }
    // Take whatever else is already there (more TLS records decrypted or buffered) so a result
    // set goes to the client in few large writes. An end of stream or error met here shows up
    // again on the next read and is handled there.
    while buf.len() < buf.capacity() {
        match r.read_buf(&mut buf).now_or_never() {
            Some(Ok(more)) if more > 0 => {}
            _ => break,
        }
    }
    *want = next_buf_size(*want, buf.len());
    Ok(buf.freeze())
}

/// A spool that cannot give back what it holds (an I/O error, a tampered file) ends the connection.
fn spool_err(e: crate::spool::Error) -> DirError {
    (
        Side::Proxy,
        format!("reading back what was held for the client: {e}"),
    )
}

/// Writes everything still held to the client (before the proxy speaks for the server).
async fn deliver_all<W: AsyncWrite + Unpin>(
    spool: &mut Spool,
    client_w: &mut W,
    counter: &AtomicU64,
    inner: &Inner,
) -> Result<(), DirError> {
    let write_err = |e: std::io::Error| (Side::Client, format!("writing to the client: {e}"));
    loop {
        let front = spool.front().map_err(spool_err)?;
        if front.is_empty() {
            return client_w.flush().await.map_err(write_err);
        }
        client_w.write_all(&front).await.map_err(write_err)?;
        spool.consume(front.len());
        counter.fetch_add(front.len() as u64, Ordering::Relaxed);
        inner
            .stats
            .bytes_down
            .fetch_add(front.len() as u64, Ordering::Relaxed);
    }
}

/// The client has read everything up to the last whole packet held for it: tell it why the rest
/// is gone, and end the connection.
async fn finish_stalled<W: AsyncWrite + Unpin>(
    inner: &Inner,
    client_w: &mut W,
    end: StallEnd,
) -> Result<(), DirError> {
    if end.clean {
        let err = stalled_err(&inner.spool.limits, &end.reason);
        let mut payload = BytesMut::new();
        err.encode(&mut payload);
        let mut out = BytesMut::new();
        packet::encode(end.seq, &payload, &mut out);
        let _ = write_client(client_w, &out).await;
    }
    let _ = client_w.shutdown().await;
    Err((
        Side::Client,
        format!(
            "the client stopped reading; {} (ended at stream offset {})",
            end.reason, end.boundary
        ),
    ))
}

/// The ERR for a client that stopped reading past the spool's bounds: what happened, which bound,
/// and what the person at the client can do.
fn stalled_err(limits: &SpoolLimits, reason: &str) -> ErrPacket {
    ErrPacket::new(
        codes::NET_WRITE_TIMEOUT,
        b"08S01",
        format!(
            "rds-iam-proxy: this connection stopped reading its results while the database kept \
             sending them, and the room the proxy keeps for a paused client ran out ({reason}; \
             --stall-spool-memory {}, --stall-spool-disk {}). The rest of the answer was \
             discarded and this connection is closed. Read results as they arrive or use a \
             buffered (client-side) cursor, or raise those limits.",
            human_bytes(limits.memory as u64),
            human_bytes(limits.disk),
        ),
    )
}

/// `n` bytes as a short human figure (`8 MiB`, `1 GiB`, `1536 B`).
fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} B")
}

/// Replays a client's COM_CHANGE_USER upstream as an IAM login for the new user and relays the
/// outcome. `Ok` means the change succeeded and the session goes on as the new user. Any failure
/// (a malformed packet, no token, the server's refusal, a reply out of turn) sends the client an
/// ERR and returns `Err`, which ends the connection: like MySQL, which disconnects after a failed
/// change, the proxy never lets a session go on as the previous user after a change was asked for.
async fn change_user<R, W, U>(
    inner: &Inner,
    session: &Session,
    upstream_r: &mut R,
    client_w: &mut W,
    upstream_w: &Mutex<U>,
    payload: Bytes,
) -> Result<(), DirError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    U: AsyncWrite + Unpin,
{
    let cfg = &inner.config;
    let endpoint = cfg.endpoint();
    // Tells the client why (its COM_CHANGE_USER was seq 0, so the answer is seq 1), then ends.
    async fn fail<W: AsyncWrite + Unpin>(
        client_w: &mut W,
        side: Side,
        err: ErrPacket,
        rest: &[u8],
    ) -> Result<(), DirError> {
        let detail = err.message_str();
        let mut out = err_reply(1, err);
        out.extend_from_slice(rest);
        let _ = write_client(client_w, &out).await;
        let _ = client_w.shutdown().await;
        Err((
            side,
            format!("change user failed, connection closed: {detail}"),
        ))
    }
    let request = match ComChangeUser::decode(&payload, session.client_caps) {
        Ok(r) => r,
        Err(e) => {
            let err = ErrPacket::new(
                codes::HANDSHAKE_ERROR,
                b"08S01",
                format!(
                    "rds-iam-proxy: malformed COM_CHANGE_USER ({e}); the connection is closed \
                     (a failed change user always ends the session, as in MySQL)"
                ),
            );
            return fail(client_w, Side::Client, err, &[]).await;
        }
    };
    if let Some(passwords) = &cfg.upstream_password {
        let err = ErrPacket::new(
            codes::NOT_SUPPORTED_AUTH_MODE,
            b"08004",
            format!(
                "rds-iam-proxy: COM_CHANGE_USER is not available when the proxy logs in with a \
                 password from {} (--secret): it logs in as that secret's user only. The \
                 connection is closed; open a new one instead.",
                passwords.describe()
            ),
        );
        return fail(client_w, Side::Client, err, &[]).await;
    }
    let db_user = cfg
        .db_user
        .clone()
        .unwrap_or_else(|| String::from_utf8_lossy(&request.username).into_owned());
    let iam = IamLogin {
        endpoint: &endpoint,
        user: &db_user,
        region: &cfg.region,
        phase: Phase::ChangeUser,
    };
    let token_request = cfg.token_request(&db_user);
    let token = match inner.tokens.token(&token_request).await {
        Ok(t) => t,
        Err(e) => return fail(client_w, Side::Proxy, iam.no_token(&e).reply, &[]).await,
    };
    tracing::info!(user = %crate::proxy::printable(&db_user), "change user");
    let upstream_caps = session.upstream_caps;
    let (mut exchange, first) = match Exchange::start(
        Credential::IamToken(token.expose()),
        Some(&session.upstream_plugin),
        &[],
        false,
        true,
    ) {
        Ok(x) => x,
        Err(e) => return fail(client_w, Side::Upstream, iam.refusal(e).reply, &[]).await,
    };
    let replay = ComChangeUser {
        username: Bytes::from(db_user.clone()),
        auth_response: Bytes::copy_from_slice(first.auth_response.bytes()),
        database: request.database.clone(),
        character_set: Some(
            request
                .character_set
                .unwrap_or(u16::from(session.character_set)),
        ),
        auth_plugin_name: Some(first.plugin),
        connect_attrs: request
            .connect_attrs
            .clone()
            .filter(|_| upstream_caps.contains(Capabilities::CONNECT_ATTRS)),
    };
    let mut up = upstream_w.lock().await;
    let mut p = BytesMut::new();
    replay.encode(&mut p, upstream_caps);
    let mut out = BytesMut::new();
    packet::encode(0, &p, &mut out);
    let up_err = |e: std::io::Error| (Side::Upstream, format!("writing to the database: {e}"));
    up.write_all(&out).await.map_err(up_err)?;
    up.flush().await.map_err(up_err)?;

    let mut rbuf = BytesMut::with_capacity(1024);
    let mut expected_seq = 1u8;
    loop {
        let p = read_packet(upstream_r, &mut rbuf, cfg.handshake_timeout).await?;
        if p.seq != expected_seq {
            // Not the reply to this COM_CHANGE_USER: the tail of an earlier answer (a client that
            // sent the change while a result was still arriving). Nothing can be relayed safely.
            let msg = format!(
                "the database's reply to COM_CHANGE_USER came with sequence id {} instead of \
                 {expected_seq}: the client changed user before reading the whole answer to its \
                 previous command",
                p.seq
            );
            let _ = client_w.shutdown().await;
            return Err((Side::Client, msg));
        }
        expected_seq = p.seq.wrapping_add(2);
        match exchange.next(p.payload) {
            Next::Send(answer) => {
                let mut out = BytesMut::new();
                packet::encode(p.seq.wrapping_add(1), answer.bytes(), &mut out);
                up.write_all(&out).await.map_err(up_err)?;
                up.flush().await.map_err(up_err)?;
            }
            Next::Wait => expected_seq = p.seq.wrapping_add(1),
            Next::Done(ok) => {
                let mut out = BytesMut::new();
                let mut seq = 1u8;
                for payload in auth::local_success(
                    request.auth_plugin_name.as_deref(),
                    &request.auth_response,
                    ok,
                ) {
                    seq = packet::encode(seq, &payload, &mut out);
                }
                out.extend_from_slice(&rbuf);
                return write_client(client_w, &out).await;
            }
            Next::Failed(auth::Error::Malformed(e)) => {
                return Err((
                    Side::Upstream,
                    format!("malformed reply to COM_CHANGE_USER: {e}"),
                ));
            }
            Next::Failed(e) => {
                if e.rejects_credential() {
                    // A cached token may be the problem: the next login mints.
                    inner.tokens.invalidate(&token_request);
                }
                // The server's own words, or the proxy's: what it said after is passed on too.
                let rest = if matches!(e, auth::Error::Refused(_)) {
                    &rbuf[..]
                } else {
                    &[]
                };
                let reply = iam.refusal(e).reply;
                return fail(client_w, Side::Upstream, reply, rest).await;
            }
        }
    }
}

/// When the client waits for an answer of which it has had nothing yet, answers it with an ERR
/// saying the database leg was lost (`detail`: how). Returns whether it did.
async fn answer_link_lost<W: AsyncWrite + Unpin>(
    inner: &Inner,
    awaiting: &Awaiting,
    client_w: &mut W,
    detail: &str,
) -> bool {
    if let Some(err) = awaiting.take_refusal() {
        // The refused COM_CHANGE_USER (seq 0) is the last thing the client waits for: everything
        // before it has been answered by the server and delivered.
        let _ = tokio::time::timeout(
            UPSTREAM_GONE_GRACE,
            write_client(client_w, &err_reply(1, err)),
        )
        .await;
        return true;
    }
    if !awaiting.waiting() {
        return false;
    }
    let out = err_reply(
        awaiting.reply_seq(),
        link_lost(
            &inner.config.endpoint(),
            &inner.connector.describe(),
            detail,
        ),
    );
    tracing::warn!("database leg lost while a command waited; answered the client with an ERR");
    let _ = tokio::time::timeout(UPSTREAM_GONE_GRACE, write_client(client_w, &out)).await;
    true
}

/// The ERR for a command whose answer was lost with the database leg: which hop, what happened,
/// and what the person at the client should do.
fn link_lost(endpoint: &str, via: &str, detail: &str) -> ErrPacket {
    ErrPacket::new(
        codes::UPSTREAM_ERROR,
        b"08S01",
        format!(
            "rds-iam-proxy: lost the link to the database {endpoint} via {via} while this command \
             waited for its answer ({detail}). The command may or may not have run; this \
             connection is closed: reconnect, and check before retrying a change."
        ),
    )
}

/// The ERR for a `COM_CHANGE_USER` sent before the previous command was answered.
fn pipelined_change_user() -> ErrPacket {
    ErrPacket::new(
        codes::HANDSHAKE_ERROR,
        b"08S01",
        "rds-iam-proxy: COM_CHANGE_USER arrived before the answer to the previous command, so \
         its reply could not be told apart from that answer; the change was not made and this \
         connection is closed. Read each answer before changing user (or open a new connection \
         for the other user).",
    )
}

/// An ERR packet answering the client's command; `seq` is the sequence id after the command's
/// last packet (1 for a single-packet command).
fn err_reply(seq: u8, err: ErrPacket) -> BytesMut {
    let mut payload = BytesMut::new();
    err.encode(&mut payload);
    let mut out = BytesMut::new();
    packet::encode(seq, &payload, &mut out);
    out
}

async fn write_client<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), DirError> {
    let e = |e: std::io::Error| (Side::Client, format!("writing to the client: {e}"));
    w.write_all(bytes).await.map_err(e)?;
    w.flush().await.map_err(e)
}

async fn read_packet<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    timeout: std::time::Duration,
) -> Result<packet::Packet, DirError> {
    loop {
        match packet::decode(buf, super::framed::MAX_LOGIN_PAYLOAD) {
            Ok(Some(p)) => return Ok(p),
            Ok(None) => {}
            Err(e) => return Err((Side::Upstream, format!("bad packet from the database: {e}"))),
        }
        buf.reserve(4096);
        let n = tokio::time::timeout(timeout, r.read_buf(buf))
            .await
            .map_err(|_| {
                (
                    Side::Upstream,
                    "the database did not answer COM_CHANGE_USER".to_owned(),
                )
            })?
            .map_err(|e| (Side::Upstream, format!("reading from the database: {e}")))?;
        if n == 0 {
            return Err((
                Side::Upstream,
                "the database closed the connection".to_owned(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        packet::encode(seq, payload, &mut b);
        b.to_vec()
    }

    /// Feeds `stream` to a scanner in chunks of `chunk` bytes, as reads would deliver it; returns
    /// the forwarded bytes and the change-user packets found.
    fn drive(stream: &[u8], chunk: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let mut sc = CommandScanner::default();
        let mut buf = BytesMut::new();
        let (mut fwd, mut cu) = (Vec::new(), Vec::new());
        for part in stream.chunks(chunk) {
            buf.extend_from_slice(part);
            loop {
                match sc.step(&buf).unwrap() {
                    Step::Forward(n) => fwd.extend_from_slice(&buf.split_to(n)),
                    Step::ChangeUser(n) => cu.push(buf.split_to(n).to_vec()),
                    Step::NeedMore => break,
                }
            }
        }
        fwd.extend_from_slice(&buf);
        (fwd, cu)
    }

    #[test]
    fn finds_change_user_between_commands_at_any_chunking() {
        let query = pkt(0, b"\x03SELECT 1");
        let load_data = [pkt(2, b"\x11looks like change user but seq 2"), pkt(3, b"")].concat();
        let change = pkt(0, b"\x11iamuser2\0\0proxytest\0");
        let quit = pkt(0, b"\x01");
        let stream = [
            query.clone(),
            load_data.clone(),
            change.clone(),
            quit.clone(),
        ]
        .concat();
        for chunk in 1..=stream.len() {
            let (fwd, cu) = drive(&stream, chunk);
            assert_eq!(cu, vec![change.clone()], "chunk {chunk}");
            assert_eq!(
                fwd,
                [query.clone(), load_data.clone(), quit.clone()].concat()
            );
        }
    }

    #[test]
    fn load_data_file_packets_are_data_even_after_the_sequence_id_wraps() {
        let query = pkt(0, b"\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t");
        // seq 2..=255, then 0 (starting with 0x11), 1, then the empty terminator.
        let mut file = Vec::new();
        for i in 0..257u32 {
            let seq = (2 + i) as u8;
            let body: &[u8] = if seq == 0 { b"\x11data" } else { b"row\n" };
            file.extend_from_slice(&pkt(seq, body));
        }
        file.extend_from_slice(&pkt(3, b""));
        let change = pkt(0, b"\x11iamuser2\0\0\0");
        let stream = [query.clone(), file.clone(), change.clone()].concat();
        for chunk in [1, 7, 4096, stream.len()] {
            let (fwd, cu) = drive(&stream, chunk);
            assert_eq!(cu, vec![change.clone()], "chunk {chunk}");
            assert_eq!(fwd, [query.clone(), file.clone()].concat());
        }
    }

    #[test]
    fn sixteen_mib_continuation_with_seq_zero_is_not_a_command() {
        // A 256-packet command wraps the sequence id to 0; the continuation must not be taken for
        // a new command even if it starts with 0x11.
        let mut sc = CommandScanner::default();
        let mut head = vec![0xFF, 0xFF, 0xFF, 255];
        head.push(0x03);
        assert_eq!(sc.step(&head).unwrap(), Step::Forward(5));
        sc.remaining = 0; // pretend the rest of the 16 MiB payload passed
        let cont = pkt(0, b"\x11not a command");
        assert_eq!(sc.step(&cont).unwrap(), Step::Forward(cont.len()));
    }

    #[test]
    fn buffers_grow_while_streaming_and_shrink_when_idle() {
        assert_eq!(next_buf_size(IDLE_BUF, IDLE_BUF), 16 * 1024);
        assert_eq!(next_buf_size(16 * 1024, 16 * 1024), COPY_BUF);
        assert_eq!(next_buf_size(COPY_BUF, COPY_BUF), COPY_BUF);
        assert_eq!(next_buf_size(COPY_BUF, 20_000), COPY_BUF);
        assert_eq!(next_buf_size(COPY_BUF, 11), IDLE_BUF);
    }

    #[test]
    fn counts_each_answered_command_once_at_any_chunking() {
        let stream = [
            pkt(0, b"\x03SELECT 1"),
            pkt(0, b"\x19\x01\x00\x00\x00"), // COM_STMT_CLOSE: no answer
            pkt(0, b"\x18\x01\x00\x00\x00\x00\x00data"), // COM_STMT_SEND_LONG_DATA: none
            pkt(0, b"\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t"),
            pkt(2, b"\x03file data that looks like a query"),
            pkt(3, b""),
            pkt(0, b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00"), // COM_STMT_EXECUTE
            pkt(0, b"\x11iamuser2\0\0\0"), // COM_CHANGE_USER: answered by the proxy's replay
            pkt(0, b"\x01"),               // COM_QUIT
        ]
        .concat();
        for chunk in 1..=stream.len() {
            let mut sc = CommandScanner::default();
            let mut buf = BytesMut::new();
            let mut total = 0;
            for part in stream.chunks(chunk) {
                buf.extend_from_slice(part);
                loop {
                    let step = sc.step(&buf).unwrap();
                    total += std::mem::take(&mut sc.commands);
                    match step {
                        Step::Forward(n) | Step::ChangeUser(n) => {
                            let _ = buf.split_to(n);
                        }
                        Step::NeedMore => break,
                    }
                }
            }
            // SELECT, the LOAD DATA statement and its file's end, STMT_EXECUTE.
            assert_eq!(total, 4, "chunk {chunk}");
        }
    }

    #[test]
    fn awaiting_holds_only_between_one_command_and_its_first_byte() {
        let a = Awaiting::default();
        assert!(!a.waiting());
        a.sent(0, 1);
        assert!(!a.waiting());
        a.sent(1, 1);
        assert!(a.waiting());
        a.answered();
        assert!(!a.waiting());
        a.answered();
        a.sent(1, 1);
        assert!(a.waiting(), "the next command after a complete answer");
        a.answered();

        // Two commands in one go, or a second while the first waits: in doubt for good.
        for pipelined in [&[2][..], &[1, 1][..]] {
            let a = Awaiting::default();
            for n in pipelined {
                a.sent(*n, 1);
            }
            assert!(!a.waiting());
            a.answered();
            a.sent(1, 1);
            assert!(!a.waiting(), "{pipelined:?}");
        }
    }

    #[test]
    fn link_lost_err_names_the_hop_and_what_to_do() {
        let err = link_lost(
            "db.example:3306",
            "ssm i-0123 (session s-1)",
            "reading from the database: session s-1 terminated",
        );
        assert_eq!(err.code, codes::UPSTREAM_ERROR);
        assert!(
            err.code < 2000,
            "client-range codes are mangled by libmariadb"
        );
        assert_eq!(err.sql_state, Some(*b"08S01"));
        let msg = err.message_str();
        for part in [
            "db.example:3306",
            "via ssm i-0123",
            "terminated",
            "may or may not have run",
            "reconnect",
        ] {
            assert!(msg.contains(part), "{part:?} missing: {msg}");
        }
        let out = err_reply(1, err);
        assert_eq!(out[3], 1, "sequence id 1: the answer to the command");
    }

    /// The proxy's ERR for a command follows the command's last packet: seq 1 after a one-packet
    /// command, N after an N-packet (16 MiB+) one, and after a LOAD DATA file's empty packet.
    #[test]
    fn the_reply_sequence_id_follows_the_commands_last_packet() {
        let mut sc = CommandScanner::default();
        let q = pkt(0, b"\x03SELECT 1");
        assert_eq!(sc.step(&q).unwrap(), Step::Forward(q.len()));
        assert_eq!(sc.last_seq.wrapping_add(1), 1);

        // A 3-packet command: two full 16 MiB − 1 packets (seq 0, 1), then the rest (seq 2).
        let mut sc = CommandScanner::default();
        let full = [0xFF, 0xFF, 0xFF];
        let mut head = full.to_vec();
        head.extend_from_slice(&[0, 0x03]);
        assert_eq!(sc.step(&head).unwrap(), Step::Forward(5));
        sc.remaining = 0;
        let mut second = full.to_vec();
        second.push(1);
        assert_eq!(sc.step(&second).unwrap(), Step::Forward(4));
        sc.remaining = 0;
        let last = pkt(2, b"tail");
        assert_eq!(sc.step(&last).unwrap(), Step::Forward(last.len()));
        assert_eq!(sc.commands, 1);
        assert_eq!(
            sc.last_seq.wrapping_add(1),
            3,
            "the answer to a 3-packet command is seq 3"
        );

        // LOAD DATA LOCAL: the statement (seq 0), file packets 2 and 3, the empty packet at 4;
        // the server's OK is seq 5, and the end of the file counts as a command to answer.
        let mut sc = CommandScanner::default();
        let stream = [
            pkt(0, b"\x03LOAD DATA LOCAL INFILE 'f' INTO TABLE t"),
            pkt(2, b"a\n"),
            pkt(3, b"b\n"),
            pkt(4, b""),
        ]
        .concat();
        assert_eq!(sc.step(&stream).unwrap(), Step::Forward(stream.len()));
        assert_eq!(sc.commands, 2);
        assert_eq!(sc.last_seq.wrapping_add(1), 5);
    }

    #[test]
    fn oversized_change_user_is_refused() {
        let mut sc = CommandScanner::default();
        let head = [0x00, 0x00, 0x10, 0x00, 0x11];
        assert!(sc.step(&head).is_err());
    }
}
