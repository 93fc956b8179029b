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

use super::change_user::change_user;
use super::compressed::{UpstreamReader, UpstreamWriter, halves};
use super::login::Session;
use super::proto::scanner::{CommandScanner, Step};
use super::write_client;
use crate::mysql::proto::packet::{Boundaries, HEADER_LEN};
use crate::mysql::proto::{ErrPacket, codes};
use crate::proxy::relay::{
    COPY_BUF, DirError, IDLE_BUF, LAST_WORD_GRACE, RelayEnd, deliver_all, next_buf_size, settle,
    spool_err,
};
use crate::proxy::shared::Shared;
use crate::proxy::shared::Side;
use crate::spool::{Spool, SpoolLimits};
use crate::tunnel::BoxStream;

/// A COM_CHANGE_USER handed from the client→upstream half to the upstream→client half, which owns
/// the client's write side and the upstream's read side.
struct ChangeUserJob {
    /// The client's packet payload (without header).
    payload: Bytes,
    /// Signalled when the exchange is over; `Err` ends the connection.
    done: oneshot::Sender<Result<(), String>>,
}

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
pub(crate) async fn run(
    inner: Arc<Shared>,
    client: BoxStream,
    client_read_ahead: BytesMut,
    upstream: BoxStream,
    upstream_read_ahead: BytesMut,
    session: Session,
) -> RelayEnd {
    let (client_r, client_w) = tokio::io::split(client);
    let (upstream_r, upstream_w) = tokio::io::split(upstream);
    // Compressed, what the login read past the OK is the start of the first frame: the reader
    // decodes it, and nothing is handed on as it is.
    let (upstream_r, upstream_w) = halves(
        inner.clone(),
        upstream_r,
        upstream_w,
        session.compression,
        &upstream_read_ahead,
    );
    let upstream_read_ahead = if session.compression.is_some() {
        BytesMut::new()
    } else {
        upstream_read_ahead
    };
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

    let (closed_by, error) = settle(up, down, &client_quit).await;
    RelayEnd {
        closed_by,
        bytes_up: bytes_up.load(Ordering::Relaxed),
        bytes_down: bytes_down.load(Ordering::Relaxed),
        error,
    }
}

#[allow(clippy::too_many_arguments)] // one call site; the halves and counters are distinct roles
async fn client_to_upstream<R, W>(
    inner: &Shared,
    mut client_r: R,
    mut buf: BytesMut,
    upstream_w: Arc<Mutex<UpstreamWriter<W>>>,
    jobs: mpsc::Sender<ChangeUserJob>,
    counter: &AtomicU64,
    client_quit: &AtomicBool,
    awaiting: &Awaiting,
) -> Result<(), DirError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let up_err =
        |e: std::io::Error| DirError::new(Side::Upstream, format!("writing to the database: {e}"));
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
                    let started = std::mem::take(&mut scanner.started) > 0;
                    let mut w = upstream_w.lock().await;
                    w.note(started, scanner.last_seq);
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
                        return Err(DirError::new(Side::Proxy, "the relay task ended".into()));
                    }
                    match wait.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(DirError::new(Side::Upstream, e)),
                        Err(_) => {
                            return Err(DirError::new(Side::Proxy, "the relay task ended".into()));
                        }
                    }
                }
                Ok(Step::NeedMore) => break,
                Err(e) => {
                    return Err(DirError::new(
                        Side::Client,
                        format!("the client sent a bad packet: {e}"),
                    ));
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
            Err(e) => {
                return Err(DirError::new(
                    Side::Client,
                    format!("reading from the client: {e}"),
                ));
            }
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
    inner: &Shared,
    session: &Session,
    mut upstream_r: UpstreamReader<R>,
    read_ahead: BytesMut,
    mut client_w: W,
    upstream_w: Arc<Mutex<UpstreamWriter<U>>>,
    mut jobs: mpsc::Receiver<ChangeUserJob>,
    counter: &AtomicU64,
    awaiting: &Awaiting,
) -> Result<(), DirError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    U: AsyncWrite + Unpin,
{
    let write_err =
        |e: std::io::Error| DirError::new(Side::Client, format!("writing to the client: {e}"));
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
                    let _ = job.done.send(r.map_err(|e| e.reason));
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
                        deliver_all(inner, &mut spool, &mut client_w, counter).await?;
                        answer_link_lost(inner, awaiting, &mut client_w, &e).await;
                        return Err(DirError::new(Side::Upstream, e));
                    }
                };
                if chunk.is_empty() {
                    let e = "the database closed the connection";
                    deliver_all(inner, &mut spool, &mut client_w, counter).await?;
                    let answered = answer_link_lost(inner, awaiting, &mut client_w, e).await;
                    let _ = client_w.shutdown().await;
                    return if answered {
                        Err(DirError::new(Side::Upstream, format!("{e} while a command waited for its answer")))
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

/// The client has read everything up to the last whole packet held for it: tell it why the rest
/// is gone, and end the connection.
async fn finish_stalled<W: AsyncWrite + Unpin>(
    inner: &Shared,
    client_w: &mut W,
    end: StallEnd,
) -> Result<(), DirError> {
    if end.clean {
        let out = stalled_err(&inner.spool.limits, &end.reason).to_packet(end.seq);
        let _ = write_client(client_w, &out).await;
    }
    let _ = client_w.shutdown().await;
    Err(DirError::new(
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

/// When the client waits for an answer of which it has had nothing yet, answers it with an ERR
/// saying the database leg was lost (`detail`: how). Returns whether it did.
async fn answer_link_lost<W: AsyncWrite + Unpin>(
    inner: &Shared,
    awaiting: &Awaiting,
    client_w: &mut W,
    detail: &str,
) -> bool {
    if let Some(err) = awaiting.take_refusal() {
        // The refused COM_CHANGE_USER (seq 0) is the last thing the client waits for: everything
        // before it has been answered by the server and delivered.
        let _ =
            tokio::time::timeout(LAST_WORD_GRACE, write_client(client_w, &err.to_packet(1))).await;
        return true;
    }
    if !awaiting.waiting() {
        return false;
    }
    let out = link_lost(
        &inner.config.endpoint(),
        &inner.connector.describe(),
        detail,
    )
    .to_packet(awaiting.reply_seq());
    tracing::warn!("database leg lost while a command waited; answered the client with an ERR");
    let _ = tokio::time::timeout(LAST_WORD_GRACE, write_client(client_w, &out)).await;
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let out = err.to_packet(1);
        assert_eq!(out[3], 1, "sequence id 1: the answer to the command");
    }
}
