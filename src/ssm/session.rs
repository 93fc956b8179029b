//! One SSM session: the task that owns its WebSocket, its [`ReliableChannel`], the handshake and
//! the stream table, and heals the socket with ResumeSession when the service drops it.
//!
//! ```text
//!  SsmStream ──write──▶ Table ──take──▶ session task ──reliable.send──▶ Outbox ──▶ writer task ──▶ WebSocket
//!  SsmStream ◀──read─── Table ◀─deliver─ session task ◀──on_message──── reader task ◀────────────── WebSocket
//! ```
//!
//! The session task is the only place that touches the reliable channel, so sequence numbers,
//! acknowledgements and retransmissions need no locking. The reader and writer tasks belong to one
//! WebSocket connection; when it breaks they end, and the session task dials again with a fresh
//! token from ResumeSession (spec §8.2). Counters and buffers carry over: unacknowledged messages
//! go out again through retransmission, duplicates are re-acknowledged, so no byte of an open
//! stream is lost or duplicated. When the session is gone (channel_closed, ResumeSession without a
//! token, a broken smux stream) every stream fails with the reason and the pool opens a new session.
//!
//! Acknowledgements are sent as soon as a message is processed; there are no per-message sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::Error;
use super::api::{Api, SessionGrant, SessionRequest, strip_query};
use super::mux::{Failure, Shared, Wakers};
use super::outbox::{Outbox, OutboxReceiver, Outgoing, outbox};
use super::proto::handshake::{self, HandshakeInfo, Mode};
use super::proto::message::{AgentMessage, PayloadType};
use super::proto::payload::{Flag, HandshakeComplete, HandshakeRequest};
use super::proto::reliable::{Config as ReliableConfig, Inbound, Now, ReliableChannel};
use super::proto::smux::{Cmd, Decoded, Frame, FrameDecoder};
use super::stream::SsmStream;
use super::websocket::{self, DialConfig, WsStream};

/// Decoded messages queued between the reader task and the session task. With frames capped at
/// about 1 MiB by the WebSocket layer, this bounds what a misbehaving service can make us hold.
const READER_QUEUE: usize = 32;

/// Messages handled in one go before the session task pumps outgoing data again.
const READER_BATCH: usize = 64;

/// Default of [`SessionParams::stall_timeout`].
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// On sessions with open streams, a smux NOP this often even when the agent wants no keep-alive,
/// so that connections idle in a pool are not ended by the service's idle timeout (code review
/// L14); sessions with no stream stay quiet and may idle out, by the organisation's settings.
const STREAM_NOP_INTERVAL: Duration = Duration::from_secs(240);

/// Outbox high-water bounds: the mark follows twice the bandwidth-delay product in between.
const HIGH_WATER_MIN: usize = 64 * 1024;
const HIGH_WATER_MAX: usize = 1 << 20;

/// Knobs of one session; [`SessionParams::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct SessionParams {
    /// Target and destination.
    pub request: SessionRequest,
    /// How to dial and sign the WebSocket.
    pub dial: DialConfig,
    /// Time from StartSession to HandshakeComplete.
    pub handshake_timeout: Duration,
    /// Largest Output payload we send (the plugin sends 1024).
    pub max_payload: usize,
    /// WebSocket ping period.
    pub ping_interval: Duration,
    /// A connection with no frame at all (pongs included) for this long is considered dead.
    pub dead_after: Duration,
    /// Unread bytes one stream may hold for [`super::mux::STREAM_STUCK_AFTER`] without being
    /// read before it is failed alone (four times as much fails it at once).
    pub recv_budget: usize,
    /// How long to keep trying ResumeSession after the socket dropped before giving the session up.
    pub resume_for: Duration,
    /// How long the session may make no progress (see [`super::stall`]) before it is resumed
    /// once, and then, if that did not help, replaced.
    pub stall_timeout: Duration,
    /// Send smux NOPs every this often when the agent wants keep-alive (spec §7.4).
    pub smux_keepalive: Duration,
    /// Counts WebSocket reconnects that resumed the session (shared with the pool's metrics).
    pub resumes: Arc<AtomicU64>,
    /// Counts sessions given up for stalling (shared with the pool's metrics).
    pub stalls: Arc<AtomicU64>,
    /// Counts stream messages resent (shared with the pool's metrics).
    pub retransmits: Arc<AtomicU64>,
}

impl SessionParams {
    /// Defaults for `request`.
    pub fn new(request: SessionRequest, dial: DialConfig) -> Self {
        Self {
            request,
            dial,
            handshake_timeout: Duration::from_secs(30),
            max_payload: 1024,
            ping_interval: Duration::from_secs(30),
            dead_after: Duration::from_secs(90),
            recv_budget: 64 << 20,
            resume_for: Duration::from_secs(120),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            smux_keepalive: Duration::from_secs(10),
            resumes: Arc::new(AtomicU64::new(0)),
            stalls: Arc::new(AtomicU64::new(0)),
            retransmits: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// A running session: open streams on it, watch it end, shut it down.
#[derive(Debug)]
pub struct SessionHandle {
    /// The stream table.
    shared: Arc<Shared>,
    /// What the handshake settled.
    info: HandshakeInfo,
    /// Stops the session task (it then sends TerminateSession).
    cancel: CancellationToken,
    /// Cancelled by the session task when it has finished (TerminateSession included).
    ended: CancellationToken,
    /// Target, for messages.
    target: String,
}

impl SessionHandle {
    /// The session id.
    pub fn session_id(&self) -> &str {
        &self.shared.session_id
    }

    /// What the handshake settled.
    pub fn info(&self) -> &HandshakeInfo {
        &self.info
    }

    /// Whether the session still works.
    pub fn is_alive(&self) -> bool {
        self.shared.lock().dead.is_none() && !self.ended.is_cancelled()
    }

    /// Why the session ended, if it has.
    pub fn failure(&self) -> Option<String> {
        self.shared.lock().dead.as_ref().map(|f| f.message.clone())
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.shared.lock().open_streams()
    }

    /// Streams opened over the session's life.
    pub fn opened_streams(&self) -> u64 {
        self.shared.lock().opened
    }

    /// Whether the session has a WebSocket and is making progress: where new streams belong.
    pub fn is_healthy(&self) -> bool {
        self.shared.is_healthy()
    }

    /// Whether the session is in a stall episode.
    pub fn is_stalled(&self) -> bool {
        self.shared.stalled.load(Ordering::Relaxed)
    }

    /// Whether a stream can be opened now (basic-mode sessions carry exactly one).
    pub fn can_open(&self) -> bool {
        let t = self.shared.lock();
        t.dead.is_none() && (self.info.mode == Mode::Mux || t.opened == 0)
    }

    /// Opens a stream: a smux SYN in mux mode, the session's only stream in basic mode.
    pub fn open_stream(&self) -> Result<SsmStream, Error> {
        let mut t = self.shared.lock();
        if let Some(f) = &t.dead {
            return Err(Error::SessionClosed {
                session_id: self.shared.session_id.clone(),
                target: self.target.clone(),
                reason: f.message.clone(),
            });
        }
        let id = match self.info.mode {
            Mode::Mux => t.ids.next_id()?,
            Mode::Basic => {
                if t.opened > 0 {
                    return Err(Error::SessionClosed {
                        session_id: self.shared.session_id.clone(),
                        target: self.target.clone(),
                        reason: "a basic-mode session carries one connection".to_owned(),
                    });
                }
                0
            }
        };
        t.insert(id, self.info.mode == Mode::Mux);
        drop(t);
        self.shared.wake.notify_one();
        Ok(SsmStream::new(self.shared.clone(), id))
    }

    /// Waits until the session task has ended.
    pub async fn closed(&self) {
        self.ended.cancelled().await;
    }

    /// Ends the session: TerminateSession flag and API call, streams fail. Waits for the task.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.closed().await;
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts a session: StartSession, WebSocket, handshake. Returns when the handshake is complete.
pub async fn open(api: Api, params: Arc<SessionParams>) -> Result<SessionHandle, Error> {
    let grant = api.start_session(&params.request).await?;
    info!(session_id = %grant.session_id, target = %params.request.target, "ssm session started");
    match connect_and_handshake(api.clone(), params.clone(), grant.clone()).await {
        Ok(handle) => Ok(handle),
        Err(e) => {
            // Do not leave a half-open session behind on the service.
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                api.terminate_session(&grant.session_id),
            )
            .await;
            Err(e)
        }
    }
}

async fn connect_and_handshake(
    api: Api,
    params: Arc<SessionParams>,
    grant: SessionGrant,
) -> Result<SessionHandle, Error> {
    let deadline = tokio::time::Instant::now() + params.handshake_timeout;
    let ws = tokio::time::timeout_at(
        deadline,
        websocket::connect(&grant.stream_url, &grant.token, &params.dial),
    )
    .await
    .map_err(|_| Error::HandshakeTimeout {
        target: params.request.target.clone(),
        after: params.handshake_timeout,
    })??;
    let wake = Arc::new(Notify::new());
    let shared = Arc::new(Shared::new(
        grant.session_id.clone(),
        params.recv_budget,
        wake.clone(),
    ));
    let cancel = CancellationToken::new();
    // If this future is dropped before the handshake completes (a pool slot cancelled), the task
    // must not live on as an orphan session (code review L7).
    let orphan_guard = cancel.clone().drop_guard();
    let ended = CancellationToken::new();
    let (handshake_tx, handshake_rx) = oneshot::channel();
    let span = info_span!("ssm_session", session_id = %grant.session_id);
    let mut actor = Actor {
        api,
        params: params.clone(),
        shared: shared.clone(),
        grant,
        reliable: ReliableChannel::new(ReliableConfig::client()),
        conn: None,
        cancel: cancel.clone(),
        handshake_tx: Some(handshake_tx),
        info: None,
        mux_in: BytesMut::new(),
        decoder: FrameDecoder::default(),
        out: BytesMut::new(),
        connect_errors: 0,
        basic_closing: false,
        stall: super::stall::StallWatch::new(params.stall_timeout, Instant::now()),
        acked_mark: (Instant::now(), 0),
        last_nop: Instant::now(),
        overflow_logged: None,
    };
    actor.attach(ws);
    let ended_by_task = ended.clone();
    let shared_by_task = shared.clone();
    tokio::spawn(
        async move {
            // Even if the task panics, its streams fail and the pool sees it end (review L6).
            let _ended = ended_by_task.drop_guard();
            let _fail = FailOnDrop(shared_by_task);
            actor.run().await;
        }
        .instrument(span),
    );
    let info = match tokio::time::timeout_at(deadline, handshake_rx).await {
        Ok(Ok(Ok(info))) => info,
        Ok(Ok(Err(e))) => {
            cancel.cancel();
            return Err(e);
        }
        Ok(Err(_)) => {
            cancel.cancel();
            let reason = shared
                .lock()
                .dead
                .clone()
                .map(|f| f.message)
                .unwrap_or_else(|| "ended during the handshake".to_owned());
            return Err(Error::Handshake {
                target: params.request.target.clone(),
                message: reason,
            });
        }
        Err(_) => {
            cancel.cancel();
            return Err(Error::HandshakeTimeout {
                target: params.request.target.clone(),
                after: params.handshake_timeout,
            });
        }
    };
    orphan_guard.disarm();
    Ok(SessionHandle {
        shared,
        info,
        cancel,
        ended,
        target: params.request.target.clone(),
    })
}

/// Fails every stream of a session whose task ended without doing so (a panic).
struct FailOnDrop(Arc<Shared>);

impl Drop for FailOnDrop {
    fn drop(&mut self) {
        let mut wakers = Wakers::default();
        let mut t = self.0.lock();
        if t.dead.is_none() {
            t.fail_all(
                Failure {
                    kind: std::io::ErrorKind::ConnectionAborted,
                    message: "the SSM session task ended unexpectedly".to_owned(),
                },
                &mut wakers,
            );
        }
        drop(t);
        wakers.wake();
    }
}

/// What the reader task reports.
enum ConnEvent {
    /// A decoded AgentMessage.
    Message(AgentMessage),
    /// The socket ended.
    Closed(String),
}

/// One WebSocket connection's tasks and queues.
struct Conn {
    /// Messages from the reader task.
    rx: mpsc::Receiver<ConnEvent>,
    /// Frames to the writer task.
    outbox: Outbox,
    /// The reader task.
    reader: JoinHandle<()>,
    /// The writer task.
    writer: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// How the session task ended.
enum End {
    /// We were asked to stop: tell the agent and the API.
    Shutdown,
    /// The session is over.
    Failed(Error),
}

/// The session task's state.
struct Actor {
    /// For ResumeSession and TerminateSession.
    api: Api,
    /// Knobs.
    params: Arc<SessionParams>,
    /// The stream table.
    shared: Arc<Shared>,
    /// The current StreamUrl and token.
    grant: SessionGrant,
    /// Sequence numbers, acks, retransmission.
    reliable: ReliableChannel,
    /// The current WebSocket, if connected.
    conn: Option<Conn>,
    /// Stop request.
    cancel: CancellationToken,
    /// Reports the handshake outcome to [`open`].
    handshake_tx: Option<oneshot::Sender<Result<HandshakeInfo, Error>>>,
    /// Set once the handshake completed.
    info: Option<HandshakeInfo>,
    /// smux bytes received and not yet decoded.
    mux_in: BytesMut,
    /// smux frame decoder.
    decoder: FrameDecoder,
    /// Bytes to send not yet cut into messages (smux frames, or raw in basic mode).
    out: BytesMut,
    /// ConnectToPortError flags not yet matched with a FIN.
    connect_errors: u32,
    /// Basic mode: the stream closed, the session is ending.
    basic_closing: bool,
    /// Finds stall episodes.
    stall: super::stall::StallWatch,
    /// When the outbox mark was last set, and the acknowledged-bytes count then.
    acked_mark: (Instant, u64),
    /// When a smux NOP last went out for open streams.
    last_nop: Instant,
    /// The gap (expected sequence number) an out-of-order overflow was last logged for.
    overflow_logged: Option<i64>,
}

impl Actor {
    /// Installs a freshly dialled WebSocket: spawns its reader and writer tasks.
    fn attach(&mut self, ws: WsStream) {
        let (sink, stream) = ws.split();
        let (tx, rx) = mpsc::channel(READER_QUEUE);
        let (ob, ob_rx) = outbox(super::outbox::DEFAULT_HIGH_WATER, self.shared.wake.clone());
        let reader = tokio::spawn(read_loop(stream, tx, self.params.dead_after).in_current_span());
        let writer =
            tokio::spawn(write_loop(sink, ob_rx, self.params.ping_interval).in_current_span());
        // What waited in the old socket's queue is gone with it.
        self.reliable.forget_queued();
        self.shared.connected.store(true, Ordering::Relaxed);
        self.conn = Some(Conn {
            rx,
            outbox: ob,
            reader,
            writer,
        });
    }

    async fn run(mut self) {
        let end = self.run_inner().await;
        let (failure, terminate) = match end {
            End::Shutdown => (
                Failure {
                    kind: std::io::ErrorKind::ConnectionAborted,
                    message: "the SSM connector is shutting down".to_owned(),
                },
                true,
            ),
            End::Failed(e) => {
                warn!(error = %e, "ssm session ended");
                let terminate = !matches!(e, Error::SessionClosed { .. });
                let f = Failure {
                    kind: std::io::ErrorKind::ConnectionAborted,
                    message: e.to_string(),
                };
                if let Some(tx) = self.handshake_tx.take() {
                    let _ = tx.send(Err(e));
                }
                (f, terminate)
            }
        };
        let mut wakers = Wakers::default();
        self.shared.lock().fail_all(failure, &mut wakers);
        wakers.wake();
        if terminate {
            // Best effort: tell the agent, then the API.
            if let Ok(Some(frame)) = self.reliable.send(
                Now::current(),
                PayloadType::FLAG,
                Flag::TerminateSession.encode(),
            ) && let Some(conn) = self.conn.as_mut()
            {
                conn.outbox.send(frame);
                conn.outbox.close(1000, "");
                // Give the writer a moment to put the flag on the wire and close the socket.
                let _ = tokio::time::timeout(Duration::from_millis(200), &mut conn.writer).await;
            }
            match tokio::time::timeout(
                Duration::from_secs(5),
                self.api.terminate_session(&self.grant.session_id),
            )
            .await
            {
                Ok(Ok(())) => debug!("TerminateSession done"),
                Ok(Err(e)) => debug!(error = %e, "TerminateSession failed"),
                Err(_) => debug!("TerminateSession timed out"),
            }
        }
        self.conn = None;
        info!("ssm session closed");
    }

    async fn run_inner(&mut self) -> End {
        let mut retransmit = std::pin::pin!(tokio::time::sleep(Duration::from_secs(3600)));
        let mut keepalive = tokio::time::interval(self.params.smux_keepalive);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let handshake_deadline = tokio::time::Instant::now() + self.params.handshake_timeout;
        let mut health = tokio::time::interval(
            (self.params.stall_timeout / 4)
                .clamp(Duration::from_millis(250), Duration::from_secs(5)),
        );
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.sync_written();
            if let Err(e) = self.pump() {
                return End::Failed(e);
            }
            if let Some(at) = self.reliable.next_retransmit_at() {
                retransmit
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(at));
            } else {
                retransmit
                    .as_mut()
                    .reset(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
            let keepalive_on = self
                .info
                .as_ref()
                .is_some_and(|i| i.keepalive && i.mode == Mode::Mux);
            let handshaking = self.info.is_none();
            let Some(conn) = self.conn.as_mut() else {
                if let Err(end) = self.reconnect("not connected".to_owned()).await {
                    return end;
                }
                continue;
            };
            let event = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return End::Shutdown,
                ev = conn.rx.recv() => ev.unwrap_or(ConnEvent::Closed("reader ended".to_owned())),
                _ = &mut retransmit => {
                    self.retransmit();
                    continue;
                }
                _ = health.tick() => match self.check_health() {
                    Ok(None) => continue,
                    Ok(Some(why)) => ConnEvent::Closed(why),
                    Err(end) => return end,
                },
                _ = self.shared.wake.notified() => continue,
                _ = keepalive.tick(), if keepalive_on => {
                    Frame::nop().encode(&mut self.out);
                    continue;
                }
                _ = tokio::time::sleep_until(handshake_deadline), if handshaking => {
                    return End::Failed(Error::HandshakeTimeout {
                        target: self.params.request.target.clone(),
                        after: self.params.handshake_timeout,
                    });
                }
            };
            let mut event = Some(event);
            // Process a batch of what is already queued before pumping again. An event is taken
            // off the queue only when it will be processed: taking a 65th and then leaving the
            // batch dropped a received message, a gap the agent repairs one timeout later (and,
            // once its unacknowledged buffer is full, never).
            let mut batch = 0;
            while let Some(ev) = event.take() {
                batch += 1;
                match ev {
                    ConnEvent::Message(m) => {
                        if let Err(end) = self.on_message(m) {
                            return end;
                        }
                    }
                    ConnEvent::Closed(why) => {
                        if let Err(end) = self.reconnect(why).await {
                            return end;
                        }
                        break;
                    }
                }
                if batch < READER_BATCH {
                    event = self.conn.as_mut().and_then(|c| c.rx.try_recv().ok());
                }
            }
        }
    }

    /// Tells the reliable channel how far the writer has got, which starts the retransmission
    /// clock of what it wrote.
    fn sync_written(&mut self) {
        if let Some(conn) = &self.conn {
            self.reliable.written(Instant::now(), conn.outbox.written());
        }
    }

    /// Resends what is overdue or found lost, within the outbox's room, never a message whose
    /// previous copy is still unwritten (code review M1).
    fn retransmit(&mut self) {
        self.sync_written();
        let Some(conn) = &self.conn else { return };
        let room = conn
            .outbox
            .high_water()
            .saturating_sub(conn.outbox.queued());
        let frames = self.reliable.poll_retransmit_within(Instant::now(), room);
        if frames.is_empty() {
            return;
        }
        debug!(
            count = frames.len(),
            rto_ms = self.reliable.rtt().rto().as_millis() as u64,
            unacked = self.reliable.unacked_len(),
            "retransmitting"
        );
        self.params
            .retransmits
            .fetch_add(frames.len() as u64, Ordering::Relaxed);
        for (seq, f) in frames {
            if let Some(end) = conn.outbox.send_at(f) {
                self.reliable.queued(seq, end);
            }
        }
    }

    /// The periodic look at the session: stall episodes (resume once, then give up), the outbox
    /// mark, and NOPs for open streams. `Ok(Some(why))` asks for a resume.
    fn check_health(&mut self) -> Result<Option<String>, End> {
        use super::stall::Verdict;
        let now = Instant::now();
        // Outbox mark: twice what the link acknowledged in one smoothed RTT.
        let (then, acked_then) = self.acked_mark;
        let elapsed = now.saturating_duration_since(then);
        if elapsed >= Duration::from_millis(200) {
            let acked = self.reliable.acked_bytes();
            if let Some(conn) = &self.conn
                && self.reliable.unacked_len() > 0
            {
                let rate = (acked - acked_then) as f64 / elapsed.as_secs_f64();
                let bdp = rate * self.reliable.rtt().srtt().as_secs_f64();
                conn.outbox
                    .set_high_water(((2.0 * bdp) as usize).clamp(HIGH_WATER_MIN, HIGH_WATER_MAX));
            }
            self.acked_mark = (now, acked);
        }
        let mut wakers = Wakers::default();
        let stuck = self.shared.lock().fail_stuck(
            self.shared.recv_budget,
            now - super::mux::STREAM_STUCK_AFTER,
            &mut wakers,
        );
        wakers.wake();
        for id in stuck {
            warn!(
                stream = id,
                "a connection held its whole receive budget unread and its reader stopped; closed that connection alone"
            );
        }
        if let Some(info) = &self.info
            && info.mode == Mode::Mux
            && !info.keepalive
            && now.saturating_duration_since(self.last_nop) > STREAM_NOP_INTERVAL
        {
            self.last_nop = now;
            if self.shared.lock().open_streams() > 0 {
                Frame::nop().encode(&mut self.out);
            }
        }
        if self.info.is_none() || self.conn.is_none() {
            return Ok(None);
        }
        let oldest = self.reliable.oldest_unacked().map(|o| o.first_sent);
        match self.stall.check(now, oldest) {
            Verdict::Fine => {
                if self.shared.stalled.swap(false, Ordering::Relaxed) {
                    info!("ssm session making progress again");
                }
                Ok(None)
            }
            Verdict::Waiting => Ok(None),
            Verdict::Resume(what) => {
                self.shared.stalled.store(true, Ordering::Relaxed);
                warn!(stalled = %what, "ssm session stalled; resuming it once");
                Ok(Some(format!("stalled: {what}")))
            }
            Verdict::GiveUp(what) => {
                self.params.stalls.fetch_add(1, Ordering::Relaxed);
                Err(End::Failed(Error::Stalled {
                    session_id: self.grant.session_id.clone(),
                    target: self.params.request.target.clone(),
                    what,
                }))
            }
        }
    }

    /// Cuts pending stream data into Output messages while the reliable channel and the writer
    /// have room.
    fn pump(&mut self) -> Result<(), Error> {
        let Some(info) = self.info.clone() else {
            return Ok(());
        };
        let Some(conn) = self.conn.as_ref() else {
            return Ok(());
        };
        let max = self.params.max_payload;
        loop {
            if !conn.outbox.has_room() || !self.reliable.can_send(max) {
                return Ok(());
            }
            let mut wakers = Wakers::default();
            match info.mode {
                Mode::Mux => {
                    if self.out.len() < max {
                        let mut t = self.shared.lock();
                        if t.has_pending_send() {
                            t.take_mux(&mut self.out, max, max.max(16 * 1024), &mut wakers);
                        }
                    }
                }
                Mode::Basic => {
                    if self.out.is_empty() && !self.basic_closing {
                        let (data, closing) = self.shared.lock().take_basic(max, &mut wakers);
                        self.out.extend_from_slice(&data);
                        if closing {
                            self.basic_closing = true;
                        }
                    }
                }
            }
            wakers.wake();
            if self.out.is_empty() {
                if self.basic_closing {
                    // Basic sessions carry one connection: tell the agent, then end the session
                    // (the session task's end sends TerminateSession).
                    if let Some(frame) = self.reliable.send(
                        Now::current(),
                        PayloadType::FLAG,
                        Flag::DisconnectToPort.encode(),
                    )? {
                        conn.outbox.send(frame);
                    }
                    self.basic_closing = false;
                    self.cancel.cancel();
                }
                return Ok(());
            }
            let n = self.out.len().min(max);
            let chunk = self.out.split_to(n).freeze();
            let seq = self.reliable.next_sequence_number();
            if let Some(frame) = self
                .reliable
                .send(Now::current(), PayloadType::OUTPUT, chunk)?
                && let Some(end) = conn.outbox.send_at(frame)
            {
                self.reliable.queued(seq, end);
            }
        }
    }

    /// Handles one message from the socket.
    fn on_message(&mut self, m: AgentMessage) -> Result<(), End> {
        // The session always consumes what arrives (streams whose readers lag are spooled above
        // or failed alone, see `mux`), so in-order data is never refused: refusing it while the
        // agent goes on sending is what turns one slow reader into a wedged session (H1).
        self.sync_written();
        let inbound = match self.reliable.on_message(Now::current(), m) {
            Ok(i) => i,
            Err(e) => {
                debug!(error = %e, "dropping undecodable message");
                return Ok(());
            }
        };
        match &inbound {
            Inbound::Delivered { .. } => self.stall.delivered(Instant::now()),
            Inbound::Buffered { .. }
            | Inbound::Duplicate { .. }
            | Inbound::NotReady
            | Inbound::Overflow => self.stall.arrived_stuck(Instant::now()),
            _ => {}
        }
        match inbound {
            Inbound::Delivered { ack, messages } => {
                self.send_frame(ack);
                for m in messages {
                    self.on_stream_message(m)?;
                }
            }
            Inbound::Buffered { ack } => {
                if self.reliable.out_of_order_len() == 1 {
                    debug!(
                        expected = self.reliable.expected_sequence_number(),
                        "a gap in the agent's messages: later ones are buffered until it is filled"
                    );
                }
                self.send_frame(ack);
            }
            Inbound::Duplicate { ack } => self.send_frame(ack),
            Inbound::NotReady => debug!("not ready, message left for retransmission"),
            Inbound::Overflow
                if self.overflow_logged != Some(self.reliable.expected_sequence_number()) =>
            {
                self.overflow_logged = Some(self.reliable.expected_sequence_number());
                warn!(
                    expected = self.reliable.expected_sequence_number(),
                    buffered = self.reliable.out_of_order_len(),
                    "out-of-order buffer full: messages ahead of a gap are dropped unacknowledged until it is repaired"
                );
            }
            Inbound::Acknowledged { .. } => self.stall.acked(Instant::now()),
            Inbound::ChannelClosed(closed) => {
                let reason = closed
                    .map(|c| c.output)
                    .filter(|o| !o.is_empty())
                    .unwrap_or_else(|| {
                        "the service closed the channel (channel_closed)".to_owned()
                    });
                return Err(End::Failed(self.closed(reason)));
            }
            _ => {}
        }
        Ok(())
    }

    fn send_frame(&self, frame: Bytes) {
        if let Some(conn) = &self.conn {
            conn.outbox.send(frame);
        }
    }

    fn closed(&self, reason: String) -> Error {
        Error::SessionClosed {
            session_id: self.grant.session_id.clone(),
            target: self.params.request.target.clone(),
            reason,
        }
    }

    fn protocol(&self, message: String) -> End {
        End::Failed(Error::Protocol {
            session_id: self.grant.session_id.clone(),
            message,
        })
    }

    /// Handles one in-order stream message from the agent.
    fn on_stream_message(&mut self, m: AgentMessage) -> Result<(), End> {
        match m.payload_type {
            PayloadType::HANDSHAKE_REQUEST => self.on_handshake_request(&m.payload),
            PayloadType::HANDSHAKE_COMPLETE => {
                let complete = HandshakeComplete::decode(&m.payload).unwrap_or_default();
                let Some(info) = self.info.clone() else {
                    return Err(self
                        .handshake_error("HandshakeComplete before HandshakeRequest".to_owned()));
                };
                if !complete.customer_message.is_empty() {
                    info!(message = %complete.customer_message, "agent message");
                }
                info!(agent_version = %info.agent_version, mode = ?info.mode, "ssm handshake complete");
                if let Some(tx) = self.handshake_tx.take() {
                    let _ = tx.send(Ok(info));
                }
                Ok(())
            }
            PayloadType::OUTPUT => {
                if self.handshake_tx.is_some() {
                    debug!("dropping Output before HandshakeComplete");
                    return Ok(());
                }
                match self.info.as_ref().map(|i| i.mode) {
                    Some(Mode::Mux) => self.on_mux_bytes(&m.payload),
                    Some(Mode::Basic) => {
                        let mut wakers = Wakers::default();
                        let budget = self.shared.recv_budget;
                        if self
                            .shared
                            .lock()
                            .deliver(0, m.payload, budget, &mut wakers)
                            .is_some()
                        {
                            warn!("the connection's reader fell far behind; closed it");
                        }
                        wakers.wake();
                        Ok(())
                    }
                    None => Ok(()),
                }
            }
            PayloadType::FLAG => {
                match Flag::decode(&m.payload) {
                    Ok(Flag::ConnectToPortError) => self.connect_errors += 1,
                    Ok(flag) => debug!(?flag, "flag from agent"),
                    Err(e) => debug!(error = %e, "bad flag payload"),
                }
                Ok(())
            }
            PayloadType::ENC_CHALLENGE_REQUEST => Err(self.handshake_error(
                "the agent asked for KMS encryption, which port sessions never use".to_owned(),
            )),
            other => {
                debug!(payload_type = ?other, "ignoring payload");
                Ok(())
            }
        }
    }

    fn handshake_error(&self, message: String) -> End {
        End::Failed(Error::Handshake {
            target: self.params.request.target.clone(),
            message,
        })
    }

    /// Answers the agent's HandshakeRequest (the decision is [`handshake::respond`]); the
    /// response goes out even when the session cannot be used, so the agent ends it cleanly.
    fn on_handshake_request(&mut self, payload: &[u8]) -> Result<(), End> {
        let request = HandshakeRequest::decode(payload)
            .map_err(|e| self.handshake_error(format!("unreadable HandshakeRequest: {e}")))?;
        let (response, settled) = handshake::respond(request, &self.params.dial.client_version);
        match self.reliable.send(
            Now::current(),
            PayloadType::HANDSHAKE_RESPONSE,
            response.encode(),
        ) {
            Ok(Some(frame)) => self.send_frame(frame),
            Ok(None) => {}
            Err(e) => return Err(End::Failed(e.into())),
        }
        self.info = Some(settled.map_err(|why| self.handshake_error(why))?);
        Ok(())
    }

    /// Feeds Output bytes to the smux decoder and dispatches complete frames.
    fn on_mux_bytes(&mut self, data: &[u8]) -> Result<(), End> {
        self.mux_in.extend_from_slice(data);
        let mut wakers = Wakers::default();
        let mut t = self.shared.lock();
        let result = loop {
            match self.decoder.decode(&mut self.mux_in) {
                Ok(Decoded::Frame(frame)) => match frame.cmd {
                    Cmd::Psh => {
                        let budget = self.shared.recv_budget;
                        if let Some(id) =
                            t.deliver(frame.stream_id, frame.data, budget, &mut wakers)
                        {
                            warn!(
                                stream = id,
                                "a connection's reader fell far behind on a shared session; closed that connection alone"
                            );
                        }
                    }
                    Cmd::Fin => {
                        let failure = match t.streams.get(&frame.stream_id) {
                            Some(s) if !s.received_any && self.connect_errors > 0 => {
                                self.connect_errors -= 1;
                                let e = Error::ConnectToPort {
                                    target: self.params.request.target.clone(),
                                    host: self.params.request.host.clone(),
                                    port: self.params.request.port,
                                };
                                Some(Failure {
                                    kind: std::io::ErrorKind::ConnectionRefused,
                                    message: e.to_string(),
                                })
                            }
                            _ => None,
                        };
                        t.remote_close(frame.stream_id, failure, &mut wakers);
                    }
                    Cmd::Syn | Cmd::Nop => {}
                },
                Ok(Decoded::Incomplete { .. }) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        drop(t);
        wakers.wake();
        result.map_err(|e| self.protocol(format!("smux: {e}")))
    }

    /// The socket is gone: ResumeSession and dial again, with capped backoff, for up to
    /// [`SessionParams::resume_for`].
    async fn reconnect(&mut self, why: String) -> Result<(), End> {
        self.conn = None;
        self.shared.connected.store(false, Ordering::Relaxed);
        if self.cancel.is_cancelled() {
            return Err(End::Shutdown);
        }
        info!(reason = %why, "ssm websocket lost, resuming");
        let started = Instant::now();
        let mut delay = Duration::from_millis(100);
        let mut last = why;
        loop {
            match self.api.resume_session(&self.grant.session_id).await {
                Ok(Some(grant)) => {
                    self.grant.token = grant.token;
                    if !grant.stream_url.is_empty() {
                        self.grant.stream_url = grant.stream_url;
                    }
                    match websocket::connect(
                        &self.grant.stream_url,
                        &self.grant.token,
                        &self.params.dial,
                    )
                    .await
                    {
                        Ok(ws) => {
                            self.attach(ws);
                            self.params.resumes.fetch_add(1, Ordering::Relaxed);
                            info!(url = %strip_query(&self.grant.stream_url), "ssm websocket resumed");
                            return Ok(());
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                Ok(None) => {
                    return Err(End::Failed(self.closed(format!(
                        "ResumeSession returned no token: the session is gone (after: {last})"
                    ))));
                }
                Err(e) => last = e.to_string(),
            }
            if started.elapsed() > self.params.resume_for {
                return Err(End::Failed(self.closed(format!(
                    "could not resume for {}s: {last}",
                    self.params.resume_for.as_secs()
                ))));
            }
            debug!(error = %last, delay_ms = delay.as_millis() as u64, "resume failed, retrying");
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(End::Shutdown),
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// Reads frames, decodes AgentMessages and hands them to the session task. Undecodable frames are
/// logged and dropped, as both reference ends do; the sender retransmits.
async fn read_loop(
    mut stream: futures_util::stream::SplitStream<WsStream>,
    tx: mpsc::Sender<ConnEvent>,
    dead_after: Duration,
) {
    let why = loop {
        let next = match tokio::time::timeout(dead_after, stream.next()).await {
            Ok(n) => n,
            Err(_) => break format!("no frame for {}s", dead_after.as_secs()),
        };
        let msg = match next {
            None => break "the server closed the connection".to_owned(),
            Some(Err(e)) => break format!("read error: {e}"),
            Some(Ok(m)) => m,
        };
        let data = match msg {
            Message::Binary(b) => b,
            // The plugin feeds text frames to the binary parser too; nothing is known to send any.
            Message::Text(t) => Bytes::from(t),
            Message::Close(frame) => {
                break match frame {
                    Some(f) => format!("closed by the server ({} {})", u16::from(f.code), f.reason),
                    None => "closed by the server".to_owned(),
                };
            }
            _ => continue,
        };
        match AgentMessage::decode_bytes(data) {
            Ok(m) => {
                if tx.send(ConnEvent::Message(m)).await.is_err() {
                    return;
                }
            }
            Err(e) => warn!(error = %e, "dropping invalid agent message"),
        }
    };
    let _ = tx.send(ConnEvent::Closed(why)).await;
}

/// Writes queued frames (batched, one flush per batch) and pings every `ping_interval`.
async fn write_loop(
    mut sink: futures_util::stream::SplitSink<WsStream, Message>,
    mut rx: OutboxReceiver,
    ping_interval: Duration,
) {
    let mut ping = tokio::time::interval(ping_interval);
    loop {
        tokio::select! {
            item = rx.recv() => {
                let Some(mut item) = item else { return };
                let mut batch = 0;
                loop {
                    match item {
                        Outgoing::Frame(f) => {
                            let len = f.len();
                            let r = sink.feed(Message::Binary(f)).await;
                            rx.written(len);
                            if r.is_err() {
                                return;
                            }
                        }
                        Outgoing::Close(code, reason) => {
                            let _ = sink.flush().await;
                            let _ = sink
                                .send(Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                                    code: code.into(),
                                    reason: reason.into(),
                                })))
                                .await;
                            return;
                        }
                    }
                    batch += 1;
                    match (batch < 256).then(|| rx.try_recv()).flatten() {
                        Some(next) => item = next,
                        None => break,
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Bytes::from_static(b"keepalive"))).await.is_err() {
                    return;
                }
            }
        }
    }
}
