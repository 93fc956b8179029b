//! The agent side of one simulated session: reliability as the real agent does it, the handshake,
//! and port forwarding (smux server, or basic mode) to the routed destination.
//!
//! The task owns a [`ReliableChannel`] with [`Config::agent`]: head-only retransmission, every ack
//! sampled, re-acknowledged duplicates, no give-up. It survives client reconnects (the gateway
//! attaches and detaches connections); what it sends while no client is attached is lost and
//! retransmitted later, which is one possible MGS behaviour (spec §13).
//!
//! Where flow control is concerned it behaves like the real agent (spec §5.2–5.5, §7.4, §9):
//!
//! * retransmission looks at the head of the unacknowledged buffer only, on a
//!   [`RESEND_SCAN_INTERVAL`] tick, and resends it at most once per RTO: a run of gaps in the
//!   client's receive sequence is repaired about ten messages a second;
//! * there is no send window: the only brake is the WebSocket (the gateway's outbox standing in for
//!   a blocking socket write). Past [`SimConfig::agent_max_unacked`](crate::SimConfig) tracked
//!   messages (100 000) new ones are sent once, untracked, and never retransmitted;
//! * the smux side has one receive budget for the whole session ([`AGENT_RECV_BUDGET`], smux's
//!   `MaxReceiveBuffer`): while that many bytes wait for destinations that do not read, the agent
//!   takes no client message in at all — no data, no acknowledgement, not even the client's acks
//!   — as the real agent's single WebSocket reader blocks on its smux pipe. The messages wait in
//!   order and are processed once the destination drains. [`SimServer::set_acks`] and
//!   [`SimConfig::stop_acks_after`](crate::SimConfig) stop the input the same way.
//!
//! [`SimConfig::fast_agent`](crate::SimConfig) keeps the gentler agent this simulator had before:
//! a [`FAST_AGENT_WINDOW`] send window, the head resent as soon as its RTO expires, and in-order
//! client messages dropped unacknowledged while destinations are backed up.
//!
//! [`SimServer::set_acks`]: crate::SimServer::set_acks

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;
use tracing::{Instrument, debug, info, info_span};

use crate::{HandshakeBehaviour, SimSession, SimState};
use rds_iam_proxy::ssm::outbox::Outbox;
use rds_iam_proxy::ssm::proto::handshake::{self, Mode};
use rds_iam_proxy::ssm::proto::message::{
    AgentMessage, MessageId, MessageType, PayloadType, SCHEMA_VERSION,
};
use rds_iam_proxy::ssm::proto::payload::{
    ChannelClosed, Flag, HandshakeComplete, HandshakeResponse, PORT_TYPE_LOCAL_PORT_FORWARDING,
    PortProperties,
};
use rds_iam_proxy::ssm::proto::reliable::{
    Config, Inbound, Now, RESEND_SCAN_INTERVAL, ReliableChannel,
};
use rds_iam_proxy::ssm::proto::smux::{Cmd, Decoded, Frame, FrameDecoder};

/// With [`crate::SimConfig::fast_agent`]: unacknowledged bytes above which the agent stops sending
/// new data. The real agent has no such window.
pub const FAST_AGENT_WINDOW: usize = 8 << 20;

/// Messages the agent keeps for retransmission (spec §5.2); later ones go out once, untracked.
pub const AGENT_MAX_UNACKED: usize = 100_000;

/// Bytes queued toward destinations above which the agent stops taking client messages (smux's
/// session-wide `MaxReceiveBuffer`, spec §7.4).
pub const AGENT_RECV_BUDGET: usize = 4 << 20;

/// Pending outgoing bytes above which the agent stops taking destination data: the buffer between
/// the agent's smux session and its 1 KiB WebSocket pump (a local socket pair in the agent).
const OUT_HIGH_WATER: usize = 128 * 1024;

/// Bytes per destination socket read.
const TCP_READ: usize = 32 * 1024;

/// Realistic pump: bytes per message (spec §9).
pub const REALISTIC_CHUNK: usize = 1024;

/// Realistic pump: the agent's `time.Sleep(1 ms)` after each message, as long as Go really sleeps
/// it (1.13 ms on average, spec §9). Messages are scheduled on this cadence rather than "1 ms after
/// each wake-up", which Tokio's millisecond timer would stretch to about 2 ms.
pub const REALISTIC_PAUSE: Duration = Duration::from_micros(1130);

/// smux keep-alive (when the client's version asks for it): NOP period and silence limit.
const SMUX_KEEPALIVE: Duration = Duration::from_secs(10);
const SMUX_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the resolved document says about the destination.
#[derive(Clone, Debug)]
pub struct Destination {
    /// The document name.
    pub document: String,
    /// `host` (or `localhost`).
    pub host: String,
    /// `portNumber`.
    pub port: u16,
    /// `localPortNumber` as sent.
    pub local_port: String,
    /// Where the agent really dials (`None`: dialling fails).
    pub dial: Option<String>,
}

/// Events for the agent task.
#[derive(Debug)]
pub enum AgentEvent {
    /// A client connection attached; frames toward it go to `outbox`.
    Attach {
        /// The gateway connection id.
        conn_id: u64,
        /// Toward the client.
        outbox: Outbox,
        /// ClientVersion from OpenDataChannel.
        client_version: String,
    },
    /// That connection went away.
    Detach(u64),
    /// A frame from the client (after faults).
    Frame(u64, Bytes),
    /// End the session (TerminateSession); the text becomes channel_closed's Output.
    Terminate(String),
}

/// Events from destination sockets.
enum TcpEvent {
    /// Dial succeeded.
    Connected(u32, TcpStream),
    /// Dial failed.
    DialFailed(u32, String),
    /// Data read.
    Data(u32, Bytes),
    /// The destination closed (or failed).
    Closed(u32),
}

/// A destination connection.
struct Dest {
    /// Data toward the socket (None while dialling).
    writer: Option<mpsc::UnboundedSender<Bytes>>,
    /// Data received before the dial completed.
    pending: Vec<Bytes>,
    /// The read pump.
    reader: Option<AbortHandle>,
    /// Lets the read pump read one more chunk: like a smux stream's blocking `Write`, each
    /// destination has at most one chunk on its way to the pump, so a stream's backlog never
    /// queues ahead of another stream's data.
    credit: Arc<tokio::sync::Semaphore>,
    /// The stream was closed while dialling: deliver `pending`, then close.
    closing: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the first client connection.
    AwaitClient,
    /// HandshakeRequest sent at this time.
    Handshaking(Instant),
    /// Forwarding.
    Ready { mux: bool, keepalive: bool },
}

struct Agent {
    state: Arc<SimState>,
    session: Arc<SimSession>,
    dest: Destination,
    reliable: ReliableChannel,
    client: Option<(u64, Outbox)>,
    phase: Phase,
    /// Basic mode: the one destination connection, id 0.
    dests: HashMap<u32, Dest>,
    tcp_tx: mpsc::Sender<TcpEvent>,
    tcp_rx: mpsc::Receiver<TcpEvent>,
    /// Bytes queued toward destination sockets.
    queued_to_dest: Arc<AtomicUsize>,
    /// Woken when destination writers drain or the gateway drains.
    wake: Arc<Notify>,
    mux_in: BytesMut,
    decoder: FrameDecoder,
    /// Bytes to send (smux frames or raw).
    out: BytesMut,
    /// Realistic pacing: no message before this.
    next_send: tokio::time::Instant,
    last_activity: Instant,
    last_client_frame: Instant,
    handshake_started: Option<Instant>,
    /// Client frames received but not yet taken in (the input is stopped), oldest first.
    held: VecDeque<Bytes>,
    /// Whether the input was stopped at the last look (for [`crate::Stats::ingress_stalls`]).
    input_stopped: bool,
    /// When the session started (for [`crate::SimConfig::stop_acks_after`]).
    started: Instant,
}

/// Runs the agent of `session` until it is terminated or the simulator stops.
pub async fn run(
    state: Arc<SimState>,
    session: Arc<SimSession>,
    dest: Destination,
    rx: mpsc::UnboundedReceiver<AgentEvent>,
) {
    let span = info_span!("sim_agent", session_id = %session.id);
    let (tcp_tx, tcp_rx) = mpsc::channel(64);
    let max_unacked = state.config.agent_max_unacked.max(1);
    let agent = Agent {
        state,
        session: session.clone(),
        dest,
        reliable: ReliableChannel::new(Config {
            max_unacked,
            ..Config::agent()
        }),
        client: None,
        phase: Phase::AwaitClient,
        dests: HashMap::new(),
        tcp_tx,
        tcp_rx,
        queued_to_dest: Arc::new(AtomicUsize::new(0)),
        wake: session.agent_wake.clone(),
        mux_in: BytesMut::new(),
        decoder: FrameDecoder::new(u16::MAX as usize),
        out: BytesMut::new(),
        next_send: tokio::time::Instant::now(),
        last_activity: Instant::now(),
        last_client_frame: Instant::now(),
        handshake_started: None,
        held: VecDeque::new(),
        input_stopped: false,
        started: Instant::now(),
    };
    agent.main(rx).instrument(span).await;
}

impl Agent {
    async fn main(mut self, mut rx: mpsc::UnboundedReceiver<AgentEvent>) {
        let fast = self.state.config.fast_agent;
        let mut retransmit = std::pin::pin!(tokio::time::sleep(Duration::from_secs(3600)));
        // The agent's resend scheduler: every 100 ms, look at the head (spec §5.5).
        let mut resend_scan = tokio::time::interval(RESEND_SCAN_INTERVAL);
        resend_scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(
            Duration::from_millis(250).min(self.state.config.idle_timeout / 2),
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut nop = tokio::time::interval(SMUX_KEEPALIVE);
        let reason = loop {
            if let Some(why) = self.take_input() {
                break Some(why);
            }
            self.pump();
            match self.reliable.next_retransmit_at().filter(|_| fast) {
                Some(at) => retransmit
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(at)),
                None => retransmit
                    .as_mut()
                    .reset(tokio::time::Instant::now() + Duration::from_secs(3600)),
            }
            // Input that waits is re-examined on every wake-up and on the resend scan.
            let input_waits = !self.held.is_empty();
            let take_tcp = self.out.len() < OUT_HIGH_WATER;
            let pacing = self.state.config.realistic && !self.out.is_empty() && self.can_pump();
            let keepalive = matches!(
                self.phase,
                Phase::Ready {
                    mux: true,
                    keepalive: true
                }
            );
            tokio::select! {
                biased;
                _ = self.state.cancel.cancelled() => break None,
                ev = rx.recv() => match ev {
                    None => break None,
                    Some(AgentEvent::Terminate(why)) => break Some(why),
                    Some(AgentEvent::Attach { conn_id, outbox, client_version }) => {
                        self.client = Some((conn_id, outbox));
                        self.on_attach(&client_version);
                    }
                    Some(AgentEvent::Detach(conn_id)) => {
                        if self.client.as_ref().is_some_and(|(id, _)| *id == conn_id) {
                            self.client = None;
                        }
                    }
                    Some(AgentEvent::Frame(conn_id, frame)) => {
                        // Taken in at the top of the loop, unless the input is stopped; then it
                        // waits, in order, whichever connection it came from.
                        if self.client.as_ref().is_some_and(|(id, _)| *id == conn_id) {
                            self.held.push_back(frame);
                        }
                    }
                },
                ev = self.tcp_rx.recv(), if take_tcp => {
                    if let Some(ev) = ev {
                        self.on_tcp(ev);
                    }
                }
                _ = &mut retransmit, if fast => self.retransmit(),
                _ = resend_scan.tick(), if !fast || input_waits => {
                    if !fast {
                        self.retransmit();
                    }
                }
                _ = tokio::time::sleep_until(self.next_send), if pacing => {}
                _ = self.wake.notified() => {}
                _ = nop.tick(), if keepalive => {
                    Frame::nop().encode(&mut self.out);
                    if self.last_client_frame.elapsed() > SMUX_KEEPALIVE_TIMEOUT {
                        break Some("smux keep-alive timed out".to_owned());
                    }
                }
                _ = tick.tick() => {
                    if let Some(why) = self.on_tick() {
                        break Some(why);
                    }
                }
            }
        };
        if let Some(why) = reason {
            self.close_channel(&why);
        }
        self.session.terminated.cancel();
        for d in self.dests.values() {
            if let Some(r) = &d.reader {
                r.abort();
            }
        }
        info!("sim session ended");
    }

    fn retransmit(&mut self) {
        let frames = self.reliable.poll_retransmit(Instant::now());
        if !frames.is_empty() {
            debug!(
                rto_ms = self.reliable.rtt().rto().as_millis() as u64,
                unacked = self.reliable.unacked_len(),
                "agent retransmitting"
            );
            self.state
                .stats
                .agent_retransmits
                .fetch_add(frames.len() as u64, Ordering::Relaxed);
        }
        for f in frames {
            self.to_client(f);
        }
    }

    /// Whether the agent takes client messages in now: not while acknowledgements are switched
    /// off, and (faithful agent) not while its smux receive budget is spent.
    fn input_open(&self) -> bool {
        let cfg = &self.state.config;
        let acks = self.state.acks.load(Ordering::Acquire)
            && self.session.acks.load(Ordering::Acquire)
            && cfg
                .stop_acks_after
                .is_none_or(|d| self.started.elapsed() < d);
        acks && (cfg.fast_agent || self.queued_to_dest.load(Ordering::Acquire) < AGENT_RECV_BUDGET)
    }

    /// Takes waiting client frames in, in order, while the input is open; `Some(reason)` ends
    /// the session.
    fn take_input(&mut self) -> Option<String> {
        while !self.held.is_empty() {
            if !self.input_open() {
                if !self.input_stopped {
                    self.input_stopped = true;
                    self.state
                        .stats
                        .ingress_stalls
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(
                        waiting = self.held.len(),
                        "agent input stopped (destination not reading, or acks off)"
                    );
                }
                return None;
            }
            self.input_stopped = false;
            let frame = self.held.pop_front()?;
            if let Some(why) = self.on_frame(frame) {
                return Some(why);
            }
        }
        None
    }

    fn to_client(&self, frame: Bytes) {
        if let Some((_, outbox)) = &self.client {
            outbox.send(frame);
        }
    }

    fn can_pump(&self) -> bool {
        (!self.state.config.fast_agent || self.reliable.unacked_bytes() < FAST_AGENT_WINDOW)
            && self.client.as_ref().is_none_or(|(_, o)| o.has_room())
    }

    /// Sends pending bytes as Output messages (paced in realistic mode).
    fn pump(&mut self) {
        let realistic = self.state.config.realistic;
        let chunk = if realistic {
            REALISTIC_CHUNK
        } else {
            self.state
                .config
                .agent_chunk
                .clamp(1, rds_iam_proxy::ssm::proto::message::MAX_PAYLOAD_LEN)
        };
        while !self.out.is_empty() && self.can_pump() {
            if realistic {
                let t = tokio::time::Instant::now();
                if t < self.next_send {
                    return;
                }
                // Keep the cadence, but never bank more than one period of lateness.
                self.next_send = if self.next_send + REALISTIC_PAUSE < t {
                    t
                } else {
                    self.next_send + REALISTIC_PAUSE
                };
            }
            let n = self.out.len().min(chunk);
            let data = self.out.split_to(n).freeze();
            self.send(PayloadType::OUTPUT, data);
            self.last_activity = Instant::now();
            if realistic {
                return;
            }
        }
    }

    fn send(&mut self, payload_type: PayloadType, payload: Bytes) {
        if self.reliable.unacked_len() >= self.reliable.config().max_unacked {
            self.state
                .stats
                .agent_untracked
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(Some(frame)) = self.reliable.send(Now::current(), payload_type, payload) {
            self.to_client(frame);
        }
    }

    fn on_attach(&mut self, client_version: &str) {
        debug!(%client_version, "client attached");
        if self.phase == Phase::AwaitClient
            && self.state.config.handshake == HandshakeBehaviour::Normal
        {
            let props = PortProperties {
                host: (self.dest.document == rds_iam_proxy::ssm::api::DOCUMENT_REMOTE_HOST)
                    .then(|| self.dest.host.clone()),
                local_connection_type: None,
                local_port_number: Some(self.dest.local_port.clone()),
                local_unix_socket: None,
                port_number: Some(self.dest.port.to_string()),
                r#type: Some(PORT_TYPE_LOCAL_PORT_FORWARDING.to_owned()),
            };
            let request = handshake::port_request(&self.state.config.agent_version, &props);
            self.handshake_started = Some(Instant::now());
            self.phase = Phase::Handshaking(Instant::now());
            self.send(PayloadType::HANDSHAKE_REQUEST, request.encode());
        }
    }

    /// Handles one client frame; `Some(reason)` ends the session.
    fn on_frame(&mut self, frame: Bytes) -> Option<String> {
        self.last_client_frame = Instant::now();
        // The real agent does not verify digests; ours decodes strictly and drops what fails.
        let message = match AgentMessage::decode_bytes(frame) {
            Ok(m) => m,
            Err(e) => {
                debug!(error = %e, "agent dropping invalid message");
                return None;
            }
        };
        // The fast agent only: while destinations are backed up, in-order data is dropped
        // unacknowledged (and retransmitted later) while later messages are buffered and acked.
        // The faithful agent never gets here with its budget spent: its input stops instead.
        let ready = !self.state.config.fast_agent
            || self.queued_to_dest.load(Ordering::Acquire) < AGENT_RECV_BUDGET;
        self.reliable.set_ready(ready);
        if message.message_type == MessageType::INPUT_STREAM_DATA {
            let stats = &self.state.stats;
            stats.input_messages.fetch_add(1, Ordering::Relaxed);
            stats
                .input_bytes
                .fetch_add(message.payload.len() as u64, Ordering::Relaxed);
        }
        let payload_len = message.payload.len() as u64;
        match self.reliable.on_message(Now::current(), message) {
            Ok(Inbound::Delivered { ack, messages }) => {
                self.to_client(ack);
                for m in messages {
                    if let Some(why) = self.on_stream_message(m) {
                        return Some(why);
                    }
                }
            }
            Ok(Inbound::Buffered { ack }) => self.to_client(ack),
            Ok(Inbound::Duplicate { ack }) => {
                let stats = &self.state.stats;
                stats.input_duplicates.fetch_add(1, Ordering::Relaxed);
                stats
                    .input_duplicate_bytes
                    .fetch_add(payload_len, Ordering::Relaxed);
                self.to_client(ack);
            }
            Ok(Inbound::NotReady) => {
                self.state
                    .stats
                    .input_dropped
                    .fetch_add(1, Ordering::Relaxed);
                debug!("agent: destinations backed up, message left for retransmission")
            }
            Ok(Inbound::Overflow) => {
                self.state
                    .stats
                    .input_dropped
                    .fetch_add(1, Ordering::Relaxed);
                debug!("agent: out-of-order buffer full, message dropped unacknowledged")
            }
            Ok(_) => {}
            Err(e) => debug!(error = %e, "agent dropping bad acknowledge"),
        }
        None
    }

    fn on_stream_message(&mut self, m: AgentMessage) -> Option<String> {
        if m.payload_type == PayloadType::OUTPUT || m.payload_type == PayloadType::FLAG {
            self.last_activity = Instant::now();
        }
        match (self.phase, m.payload_type) {
            (Phase::Handshaking(_), PayloadType::HANDSHAKE_RESPONSE) => {
                self.on_handshake_response(&m.payload)
            }
            (Phase::Ready { mux, .. }, PayloadType::OUTPUT) => {
                if mux {
                    self.on_mux_bytes(&m.payload)
                } else {
                    self.basic_write(m.payload);
                    None
                }
            }
            (_, PayloadType::FLAG) => match Flag::decode(&m.payload) {
                Ok(Flag::TerminateSession) => Some(String::new()),
                Ok(Flag::DisconnectToPort) => {
                    self.close_dest(0);
                    None
                }
                _ => None,
            },
            // Before the handshake completes, stream data is acknowledged and dropped.
            _ => None,
        }
    }

    fn on_handshake_response(&mut self, payload: &[u8]) -> Option<String> {
        let response = match HandshakeResponse::decode(payload) {
            Ok(r) => r,
            Err(e) => return Some(format!("invalid HandshakeResponse: {e}")),
        };
        let terms = match handshake::agent_accepts(&response, &self.state.config.agent_version) {
            Ok(t) => t,
            Err(why) => return Some(why),
        };
        let (mux, keepalive) = (terms.mode == Mode::Mux, terms.keepalive);
        let took = self
            .handshake_started
            .map(|t| t.elapsed())
            .unwrap_or_default();
        self.send(
            PayloadType::HANDSHAKE_COMPLETE,
            HandshakeComplete {
                handshake_time_to_complete: took.as_nanos() as i64,
                customer_message: String::new(),
            }
            .encode(),
        );
        self.phase = Phase::Ready { mux, keepalive };
        let counter = if mux {
            &self.state.stats.mux_sessions
        } else {
            &self.state.stats.basic_sessions
        };
        counter.fetch_add(1, Ordering::Relaxed);
        info!(client_version = %response.client_version, mux, "sim handshake complete");
        if !mux {
            // Basic mode dials at session start.
            self.dial(0);
        }
        None
    }

    fn on_mux_bytes(&mut self, data: &[u8]) -> Option<String> {
        self.mux_in.extend_from_slice(data);
        loop {
            match self.decoder.decode(&mut self.mux_in) {
                Ok(Decoded::Frame(frame)) => match frame.cmd {
                    Cmd::Syn => {
                        if !self.dests.contains_key(&frame.stream_id) {
                            self.state.stats.streams.fetch_add(1, Ordering::Relaxed);
                            self.dial(frame.stream_id);
                        }
                    }
                    Cmd::Psh => self.write_dest(frame.stream_id, frame.data),
                    Cmd::Fin => {
                        if self.dests.contains_key(&frame.stream_id) {
                            self.close_dest(frame.stream_id);
                            // Go's stream.Close answers with a FIN of its own.
                            Frame::fin(frame.stream_id).encode(&mut self.out);
                        }
                    }
                    Cmd::Nop => {}
                },
                Ok(Decoded::Incomplete { .. }) => return None,
                Err(e) => return Some(format!("smux protocol error: {e}")),
            }
        }
    }

    fn dial(&mut self, id: u32) {
        self.dests.insert(
            id,
            Dest {
                writer: None,
                pending: Vec::new(),
                reader: None,
                credit: Arc::new(tokio::sync::Semaphore::new(1)),
                closing: false,
            },
        );
        let tx = self.tcp_tx.clone();
        let target = self.dest.dial.clone();
        self.state.tracker.spawn(async move {
            let result = match target {
                None => Err("no route to the destination".to_owned()),
                Some(addr) => {
                    match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&addr))
                        .await
                    {
                        Ok(Ok(s)) => Ok(s),
                        Ok(Err(e)) => Err(format!("dial {addr}: {e}")),
                        Err(_) => Err(format!("dial {addr}: timed out")),
                    }
                }
            };
            let _ = tx
                .send(match result {
                    Ok(s) => TcpEvent::Connected(id, s),
                    Err(e) => TcpEvent::DialFailed(id, e),
                })
                .await;
        });
    }

    fn write_dest(&mut self, id: u32, data: Bytes) {
        let Some(d) = self.dests.get_mut(&id) else {
            return;
        };
        self.queued_to_dest.fetch_add(data.len(), Ordering::AcqRel);
        match &d.writer {
            Some(w) => {
                let len = data.len();
                if w.send(data).is_err() {
                    self.queued_to_dest.fetch_sub(len, Ordering::AcqRel);
                }
            }
            None => d.pending.push(data),
        }
    }

    fn basic_write(&mut self, data: Bytes) {
        if !self.dests.contains_key(&0) {
            // After DisconnectToPort the agent redials on the next data.
            self.dial(0);
        }
        self.write_dest(0, data);
    }

    /// Closes a destination connection: what was written to it is delivered first, then the
    /// socket is closed (the reader stops with it). While still dialling, the close waits for the
    /// dial so buffered data is not lost.
    fn close_dest(&mut self, id: u32) {
        let Some(d) = self.dests.get_mut(&id) else {
            return;
        };
        if d.writer.is_none() {
            d.closing = true;
            return;
        }
        // Dropping the writer lets it drain and close the socket; the reader stops with it.
        self.dests.remove(&id);
    }

    /// Forgets a destination whose dial failed.
    fn forget_dest(&mut self, id: u32) {
        if let Some(d) = self.dests.remove(&id) {
            for p in &d.pending {
                self.queued_to_dest.fetch_sub(p.len(), Ordering::AcqRel);
            }
        }
    }

    fn on_tcp(&mut self, ev: TcpEvent) {
        match ev {
            TcpEvent::Connected(id, stream) => {
                let Some(d) = self.dests.get_mut(&id) else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let (mut rd, mut wr) = stream.into_split();
                let tx = self.tcp_tx.clone();
                let credit = d.credit.clone();
                let reader = self.state.tracker.spawn(async move {
                    let mut buf = vec![0u8; TCP_READ];
                    loop {
                        match credit.acquire().await {
                            Ok(permit) => permit.forget(),
                            Err(_) => return,
                        }
                        match rd.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let chunk = Bytes::copy_from_slice(&buf[..n]);
                                if tx.send(TcpEvent::Data(id, chunk)).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = tx.send(TcpEvent::Closed(id)).await;
                });
                let abort = reader.abort_handle();
                let (wtx, mut wrx) = mpsc::unbounded_channel::<Bytes>();
                let queued = self.queued_to_dest.clone();
                let wake = self.wake.clone();
                let reader_abort = abort.clone();
                self.state.tracker.spawn(async move {
                    while let Some(b) = wrx.recv().await {
                        let r = wr.write_all(&b).await;
                        let before = queued.fetch_sub(b.len(), Ordering::AcqRel);
                        if before >= AGENT_RECV_BUDGET && before - b.len() < AGENT_RECV_BUDGET {
                            wake.notify_one();
                        }
                        if r.is_err() {
                            break;
                        }
                    }
                    // Full close, as the agent: the stream ended, so the socket goes.
                    while let Ok(b) = wrx.try_recv() {
                        queued.fetch_sub(b.len(), Ordering::AcqRel);
                    }
                    let _ = wr.shutdown().await;
                    reader_abort.abort();
                });
                for p in d.pending.drain(..) {
                    let _ = wtx.send(p);
                }
                if d.closing {
                    // Closed while dialling: the writer delivers what was sent, then closes.
                    self.dests.remove(&id);
                } else {
                    d.writer = Some(wtx);
                    d.reader = Some(abort);
                }
            }
            TcpEvent::DialFailed(id, why) => {
                self.state
                    .stats
                    .dial_failures
                    .fetch_add(1, Ordering::Relaxed);
                debug!(stream = id, reason = %why, "dial failed");
                let Some(closing) = self.dests.get(&id).map(|d| d.closing) else {
                    return;
                };
                self.forget_dest(id);
                if !closing && matches!(self.phase, Phase::Ready { mux: true, .. }) {
                    // Whatever is pending goes first, then the flag and the FIN.
                    let pending = self.out.split().freeze();
                    if !pending.is_empty() {
                        self.send(PayloadType::OUTPUT, pending);
                    }
                    self.send(PayloadType::FLAG, Flag::ConnectToPortError.encode());
                    Frame::fin(id).encode(&mut self.out);
                }
            }
            TcpEvent::Data(id, data) => {
                let Some(d) = self.dests.get(&id) else {
                    return;
                };
                d.credit.add_permits(1);
                match self.phase {
                    Phase::Ready { mux: true, .. } => rds_iam_proxy::ssm::proto::smux::encode_data(
                        id,
                        &data,
                        rds_iam_proxy::ssm::proto::smux::DEFAULT_MAX_FRAME_SIZE,
                        &mut self.out,
                    ),
                    _ => self.out.extend_from_slice(&data),
                }
            }
            TcpEvent::Closed(id) => {
                if self.dests.contains_key(&id) {
                    self.close_dest(id);
                    if matches!(self.phase, Phase::Ready { mux: true, .. }) {
                        Frame::fin(id).encode(&mut self.out);
                    }
                }
            }
        }
    }

    fn on_tick(&mut self) -> Option<String> {
        let cfg = &self.state.config;
        if let Phase::Handshaking(since) = self.phase
            && since.elapsed() > cfg.handshake_timeout
        {
            return Some("Handshake timed out. Please ensure that you are using the latest session manager plugin version.".to_owned());
        }
        if self.last_activity.elapsed() > cfg.idle_timeout {
            return Some(format!(
                "Your session timed out due to inactivity ({}s).",
                cfg.idle_timeout.as_secs()
            ));
        }
        None
    }

    /// Sends channel_closed to the attached client and asks the gateway to close the socket.
    fn close_channel(&mut self, output: &str) {
        let Some((_, outbox)) = &self.client else {
            return;
        };
        let payload = ChannelClosed {
            message_id: MessageId::random().to_string(),
            created_date: Now::current().unix_ms.to_string(),
            destination_id: self.session.target.clone(),
            session_id: self.session.id.clone(),
            message_type: "channel_closed".to_owned(),
            schema_version: 1,
            output: output.to_owned(),
        };
        let msg = AgentMessage {
            message_type: MessageType::CHANNEL_CLOSED,
            schema_version: SCHEMA_VERSION,
            created_date: Now::current().unix_ms,
            sequence_number: 0,
            flags: 0,
            message_id: MessageId::random(),
            payload_type: PayloadType::NONE,
            payload: payload.encode(),
        };
        outbox.send(msg.encode());
        outbox.close(1000, "");
    }
}
