//! The reliable channel: sequence numbers, acknowledgements, retransmission and reordering of
//! stream messages (spec §5), as a pure state machine used by our client and by the simulator's agent.
//!
//! [`ReliableChannel`] holds no socket and reads no clock. Its owner (our session task in
//! [`crate::ssm::session`], or the simulator's agent) passes the time in ([`Now::current`] reads
//! both clocks), sends the frames it returns, and arms a timer for
//! [`ReliableChannel::next_retransmit_at`]:
//!
//! * [`send`](ReliableChannel::send) numbers, encodes and buffers an outgoing stream message;
//! * [`on_message`](ReliableChannel::on_message) handles one decoded incoming message and says what
//!   happened ([`Inbound`]): payloads delivered in order, acknowledgements to send, acks received;
//! * [`poll_retransmit`](ReliableChannel::poll_retransmit) returns frames whose acknowledgement is
//!   overdue.
//!
//! # What is sequenced
//!
//! Only the two stream types carry sequence numbers: `input_stream_data` (client → agent) and
//! `output_stream_data` (agent → client), whatever their PayloadType — handshake messages and flags
//! included. Each direction counts from 0. Everything else — `acknowledge`, `channel_closed`,
//! `start_publication`, `pause_publication`, `agent_session_state` — has SequenceNumber 0, is never
//! buffered, retransmitted or acknowledged. An `acknowledge` names exactly one stream message; there
//! are no cumulative acks.
//!
//! # Rules (both ends, spec §5.3–5.5), with what [`Config`] can change
//!
//! * Incoming seq `s`, expected `e`: `s == e` → deliver, acknowledge, then deliver any buffered
//!   successors; `s > e` → acknowledge at once and buffer (if the out-of-order buffer has room,
//!   else drop unacknowledged); `s < e` → a duplicate: acknowledge again (like the agent; the plugin
//!   does not, which makes the agent retransmit forever after a lost ack, spec §5.6).
//! * "Acknowledge only what was consumed": while the owner is not ready
//!   ([`ReliableChannel::set_ready`]), an in-order message is dropped unacknowledged so the peer
//!   retransmits it (the plugin before its session handler exists; the agent's `ErrHandlerNotReady`).
//! * An acknowledge removes the matching entry (by sequence number alone) and feeds one RTT sample
//!   to [`RttEstimator`]: initial SRTT 100 ms, RTTVAR 0, RTO 200 ms; gains 1/8 and 1/4;
//!   RTO = min(SRTT + max(10 ms, 4·RTTVAR), 1 s). Unknown sequence numbers are ignored.
//! * Retransmission resends the stored bytes unchanged (same MessageId, CreatedDate, digest) once
//!   `now − last_sent ≥ RTO`. The agent resends only the head of its buffer, at most once per RTO,
//!   and samples every ack ([`Config::agent`]). Our client resends every overdue message (bounded
//!   per poll), applies Karn's rule (no samples from retransmitted messages) and doubles the RTO after
//!   a timeout, capped at 1 s ([`Config::client`]); the peer cannot tell the difference.
//! * When the unacknowledged buffer is full the client refuses new messages
//!   ([`Error::SendBufferFull`]) so its owner stops reading local sockets — never drops data (the
//!   plugin silently drops the oldest); the agent sends the message once without buffering it
//!   ([`WhenFull::SendUntracked`]).
//! * `pause_publication` sets a paused flag; `start_publication`, any incoming stream message or any
//!   acknowledge clears it. With [`Config::honour_pause`] (the agent) nothing is transmitted or
//!   retransmitted while paused; new messages are buffered and go out through retransmission. The
//!   plugin ignores pausing, and so does our client by default.
//!
//! Giving up (the plugin terminates after ~5 minutes without progress) is the owner's policy: see
//! [`ReliableChannel::oldest_unacked`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::Error;
use super::message::{
    ACKNOWLEDGE_FLAGS, AgentMessage, FLAG_SYN, HEADER_LEN, MAX_PAYLOAD_LEN, MessageId, MessageType,
    PayloadType, SCHEMA_VERSION,
};
use super::payload::{AcknowledgeContent, ChannelClosed};

/// Initial smoothed round-trip time.
pub const INITIAL_SRTT: Duration = Duration::from_millis(100);
/// Initial round-trip time variation.
pub const INITIAL_RTTVAR: Duration = Duration::ZERO;
/// Initial retransmission timeout.
pub const INITIAL_RTO: Duration = Duration::from_millis(200);
/// Weight of a new sample in SRTT.
pub const RTT_GAIN: f64 = 1.0 / 8.0;
/// Weight of a new deviation in RTTVAR.
pub const RTTVAR_GAIN: f64 = 1.0 / 4.0;
/// Floor of the variation term of the RTO.
pub const CLOCK_GRANULARITY: Duration = Duration::from_millis(10);
/// Ceiling of the RTO.
pub const MAX_RTO: Duration = Duration::from_secs(1);
/// Ceiling of our client's RTO (see [`Config::max_rto`]).
pub const CLIENT_MAX_RTO: Duration = Duration::from_secs(5);
/// How often the reference implementations scan for overdue messages; a reasonable timer period
/// for owners that poll instead of using [`ReliableChannel::next_retransmit_at`].
pub const RESEND_SCAN_INTERVAL: Duration = Duration::from_millis(100);

/// Which end of the data channel this is: it fixes the stream MessageType in each direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sends `input_stream_data`, receives `output_stream_data`.
    Client,
    /// Sends `output_stream_data` (SYN flag on sequence 0), receives `input_stream_data`.
    Agent,
}

impl Role {
    /// The MessageType of the stream messages this end sends.
    pub fn outgoing_type(self) -> MessageType {
        match self {
            Role::Client => MessageType::INPUT_STREAM_DATA,
            Role::Agent => MessageType::OUTPUT_STREAM_DATA,
        }
    }

    /// The MessageType of the stream messages this end receives.
    pub fn incoming_type(self) -> MessageType {
        match self {
            Role::Client => MessageType::OUTPUT_STREAM_DATA,
            Role::Agent => MessageType::INPUT_STREAM_DATA,
        }
    }
}

/// Which overdue messages [`ReliableChannel::poll_retransmit`] resends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retransmit {
    /// Only the oldest unacknowledged message, as both reference ends do.
    HeadOnly,
    /// Every overdue message, oldest transmission first, at most `max_per_poll` per call.
    Expired {
        /// Upper bound on frames returned by one poll.
        max_per_poll: usize,
    },
}

/// What [`ReliableChannel::send`] does when the unacknowledged buffer is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuse with [`Error::SendBufferFull`]; no sequence number is used (our client).
    Reject,
    /// Number and send the message but do not buffer it, so it is never retransmitted (the agent).
    /// While publication is paused (with [`Config::honour_pause`]) such a message is not sent at
    /// all and is lost, exactly as in the agent.
    SendUntracked,
}

/// Tunables of a [`ReliableChannel`]; start from [`Config::client`] or [`Config::agent`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Which end this is.
    pub role: Role,
    /// Most unacknowledged messages kept for retransmission.
    pub max_unacked: usize,
    /// Most encoded bytes of unacknowledged messages kept (one message is always accepted into an
    /// empty buffer).
    pub max_unacked_bytes: usize,
    /// Behaviour when either unacknowledged bound is reached.
    pub when_full: WhenFull,
    /// Most out-of-order messages buffered awaiting a gap.
    pub max_out_of_order: usize,
    /// Most encoded bytes of out-of-order messages buffered.
    pub max_out_of_order_bytes: usize,
    /// Which overdue messages to resend.
    pub retransmit: Retransmit,
    /// Karn's rule: take RTT samples only from messages transmitted once, and double the RTO (up to
    /// [`MAX_RTO`]) whenever a poll retransmits.
    pub karn: bool,
    /// Stop transmitting while the service has paused publication.
    pub honour_pause: bool,
    /// Ceiling of the RTO. The reference ends use [`MAX_RTO`] (1 s); our client, which times a
    /// message from when it reached the socket and detects losses from later acknowledgements,
    /// allows more so that a slow uplink's queue is not mistaken for loss.
    pub max_rto: Duration,
}

impl Config {
    /// Our client: backpressure instead of loss, every overdue message resent (64 per poll),
    /// Karn's rule, pause ignored like the plugin. Buffers are sized like the plugin's (10 000
    /// messages) with byte bounds of 16 MiB, well under the agent's 100 000-message incoming buffer.
    pub fn client() -> Self {
        Self {
            role: Role::Client,
            max_unacked: 10_000,
            max_unacked_bytes: 16 << 20,
            when_full: WhenFull::Reject,
            max_out_of_order: 10_000,
            max_out_of_order_bytes: 16 << 20,
            retransmit: Retransmit::Expired { max_per_poll: 64 },
            karn: true,
            honour_pause: false,
            max_rto: CLIENT_MAX_RTO,
        }
    }

    /// The agent, as `aws/amazon-ssm-agent:agent/session/datachannel/datachannel.go` behaves:
    /// 100 000-message buffers (no byte bound), head-only retransmission, every ack sampled, send-once
    /// when full, publication pauses honoured.
    pub fn agent() -> Self {
        Self {
            role: Role::Agent,
            max_unacked: 100_000,
            max_unacked_bytes: usize::MAX,
            when_full: WhenFull::SendUntracked,
            max_out_of_order: 100_000,
            max_out_of_order_bytes: usize::MAX,
            retransmit: Retransmit::HeadOnly,
            karn: false,
            honour_pause: true,
            max_rto: MAX_RTO,
        }
    }
}

/// The current time as the owner's clocks see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time, for RTT and retransmission.
    pub instant: Instant,
    /// Wall-clock Unix milliseconds, for the CreatedDate of new messages (must be non-zero).
    pub unix_ms: u64,
}

impl Now {
    /// Reads both clocks: what an owner passes in for "now" (a clock before 1970 reads as 1 ms, so
    /// CreatedDate stays non-zero).
    pub fn current() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1)
            .max(1);
        Self {
            instant: Instant::now(),
            unix_ms,
        }
    }
}

/// The retransmission-timeout estimator (spec §5.5), computed in f64 nanoseconds like the Go code.
#[derive(Clone, Debug, PartialEq)]
pub struct RttEstimator {
    /// Smoothed RTT, nanoseconds.
    srtt_ns: f64,
    /// RTT variation, nanoseconds.
    rttvar_ns: f64,
    /// Current timeout.
    rto: Duration,
    /// Ceiling of the timeout ([`MAX_RTO`] unless configured otherwise).
    max_rto: Duration,
}

impl Default for RttEstimator {
    fn default() -> Self {
        Self::new()
    }
}

impl RttEstimator {
    /// SRTT 100 ms, RTTVAR 0, RTO 200 ms.
    pub fn new() -> Self {
        Self {
            srtt_ns: INITIAL_SRTT.as_nanos() as f64,
            rttvar_ns: INITIAL_RTTVAR.as_nanos() as f64,
            rto: INITIAL_RTO,
            max_rto: MAX_RTO,
        }
    }

    /// The same estimator with another ceiling for the timeout.
    pub fn with_max_rto(max_rto: Duration) -> Self {
        Self {
            max_rto,
            ..Self::new()
        }
    }

    /// Folds in one round-trip sample:
    /// RTTVAR ← ¾·RTTVAR + ¼·|SRTT − R|, then SRTT ← ⅞·SRTT + ⅛·R, then
    /// RTO ← min(SRTT + max(10 ms, 4·RTTVAR), 1 s).
    pub fn sample(&mut self, rtt: Duration) {
        let r = rtt.as_nanos() as f64;
        self.rttvar_ns =
            (1.0 - RTTVAR_GAIN) * self.rttvar_ns + RTTVAR_GAIN * (self.srtt_ns - r).abs();
        self.srtt_ns = (1.0 - RTT_GAIN) * self.srtt_ns + RTT_GAIN * r;
        let granularity = CLOCK_GRANULARITY.as_nanos() as f64;
        let rto_ns = self.srtt_ns + granularity.max(4.0 * self.rttvar_ns);
        // Go converts with time.Duration(float64), truncating toward zero; do the same.
        self.rto = Duration::from_nanos(rto_ns as u64).min(self.max_rto);
    }

    /// Doubles the RTO after a retransmission timeout (Karn), capped at [`MAX_RTO`]; the next
    /// sample recomputes it.
    pub fn back_off(&mut self) {
        self.rto = (self.rto * 2).min(self.max_rto);
    }

    /// Smoothed RTT.
    pub fn srtt(&self) -> Duration {
        Duration::from_nanos(self.srtt_ns as u64)
    }

    /// RTT variation.
    pub fn rttvar(&self) -> Duration {
        Duration::from_nanos(self.rttvar_ns as u64)
    }

    /// Current retransmission timeout.
    pub fn rto(&self) -> Duration {
        self.rto
    }
}

/// One message awaiting acknowledgement.
#[derive(Debug)]
struct Unacked {
    /// The encoded frame, resent unchanged.
    frame: Bytes,
    /// When it was first buffered.
    first_sent: Instant,
    /// When it was last put on the wire (or buffered, if it has not been yet).
    last_sent: Instant,
    /// How many times it went on the wire.
    transmissions: u32,
    /// Its latest copy waits in the owner's write queue, which will have written it once its
    /// count of written bytes reaches this position ([`ReliableChannel::queued`]); `None` once
    /// written (or when the owner does not report writes).
    queued_until: Option<u64>,
    /// Write-queue position of its latest copy, for loss detection by later acknowledgements.
    position: Option<u64>,
}

/// The oldest unacknowledged message, for the owner's give-up policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outstanding {
    /// Its sequence number.
    pub sequence_number: i64,
    /// How many times it went on the wire.
    pub transmissions: u32,
    /// When it was first buffered.
    pub first_sent: Instant,
}

/// What one incoming message amounted to.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// The expected stream message: it and any buffered successors, in sequence order. Send `ack`.
    Delivered {
        /// Encoded acknowledge for the message that arrived.
        ack: Bytes,
        /// The messages now consumed, in order (the arrived one first).
        messages: Vec<AgentMessage>,
    },
    /// A stream message ahead of a gap, buffered. Send `ack`.
    Buffered {
        /// Encoded acknowledge for it.
        ack: Bytes,
    },
    /// A stream message already consumed or already buffered. Send `ack` again.
    Duplicate {
        /// Encoded acknowledge for it.
        ack: Bytes,
    },
    /// The expected stream message arrived while the owner was not ready: dropped without an
    /// acknowledgement, so the peer will retransmit it.
    NotReady,
    /// A stream message ahead of a gap found the out-of-order buffer full: dropped without an
    /// acknowledgement.
    Overflow,
    /// An acknowledge removed one of our messages.
    Acknowledged {
        /// The sequence number it acknowledged.
        sequence_number: i64,
        /// The RTT sample it produced, if any (none under Karn's rule for a retransmitted message).
        rtt_sample: Option<Duration>,
    },
    /// An acknowledge for a sequence number not awaiting one (already acknowledged, untracked or
    /// never sent); ignored.
    UnknownAcknowledge {
        /// The sequence number it named.
        sequence_number: i64,
    },
    /// The service closed the channel; the payload if it parsed.
    ChannelClosed(Option<ChannelClosed>),
    /// The service paused publication.
    PausePublication,
    /// The service resumed publication.
    StartPublication,
    /// Anything else (`agent_session_state`, our own direction's stream type, unknown types).
    Ignored,
}

/// The reliable-channel state of one end of one data channel; survives WebSocket reconnects.
#[derive(Debug)]
pub struct ReliableChannel {
    /// Tunables.
    config: Config,
    /// Sequence number of the next outgoing stream message.
    next_sequence_number: i64,
    /// Unacknowledged outgoing messages by sequence number.
    unacked: BTreeMap<i64, Unacked>,
    /// Total encoded size of `unacked`.
    unacked_bytes: usize,
    /// `(last_sent, sequence_number)` of every `unacked` entry, oldest transmission first.
    by_last_sent: BTreeSet<(Instant, i64)>,
    /// Sequence number of the next incoming stream message to deliver.
    expected_sequence_number: i64,
    /// Incoming messages received ahead of a gap, by sequence number.
    out_of_order: BTreeMap<i64, AgentMessage>,
    /// Total encoded size of `out_of_order`.
    out_of_order_bytes: usize,
    /// RTO state.
    rtt: RttEstimator,
    /// Whether the owner can consume in-order messages now.
    ready: bool,
    /// Whether the service has paused our publication.
    peer_paused: bool,
    /// `(position, sequence number)` of copies waiting in the owner's write queue, in order.
    in_queue: std::collections::VecDeque<(u64, i64)>,
    /// Stream messages ever resent (a counter for the owner's metrics).
    retransmitted: u64,
    /// Encoded bytes of our messages ever acknowledged.
    acked_bytes: u64,
    /// Messages found lost because a later one was acknowledged, to resend at the next poll.
    lost: BTreeSet<i64>,
}

impl ReliableChannel {
    /// A fresh channel: both counters at 0, empty buffers, initial RTO, ready, not paused.
    pub fn new(config: Config) -> Self {
        let max_rto = config.max_rto;
        Self {
            config,
            next_sequence_number: 0,
            unacked: BTreeMap::new(),
            unacked_bytes: 0,
            by_last_sent: BTreeSet::new(),
            expected_sequence_number: 0,
            out_of_order: BTreeMap::new(),
            out_of_order_bytes: 0,
            rtt: RttEstimator::with_max_rto(max_rto),
            ready: true,
            peer_paused: false,
            in_queue: std::collections::VecDeque::new(),
            retransmitted: 0,
            acked_bytes: 0,
            lost: BTreeSet::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Numbers, encodes and buffers one outgoing stream message.
    ///
    /// Returns the frame to put on the WebSocket now, or `None` when publication is paused (with
    /// [`Config::honour_pause`]): the message is buffered and goes out through
    /// [`Self::poll_retransmit`] once resumed. With [`WhenFull::Reject`] a full buffer is
    /// [`Error::SendBufferFull`] and consumes no sequence number; a payload over
    /// [`MAX_PAYLOAD_LEN`] is [`Error::MessageTooLong`].
    pub fn send(
        &mut self,
        now: Now,
        payload_type: PayloadType,
        payload: Bytes,
    ) -> Result<Option<Bytes>, Error> {
        if payload.len() > MAX_PAYLOAD_LEN {
            return Err(Error::MessageTooLong {
                len: HEADER_LEN + payload.len(),
                max: HEADER_LEN + MAX_PAYLOAD_LEN,
            });
        }
        let len = HEADER_LEN + payload.len();
        let full = self.unacked.len() >= self.config.max_unacked
            || (!self.unacked.is_empty()
                && self.unacked_bytes.saturating_add(len) > self.config.max_unacked_bytes);
        if full && self.config.when_full == WhenFull::Reject {
            return Err(Error::SendBufferFull {
                messages: self.unacked.len(),
                bytes: self.unacked_bytes,
            });
        }

        let sequence_number = self.next_sequence_number;
        let flags = match self.config.role {
            Role::Agent if sequence_number == 0 => FLAG_SYN,
            _ => 0,
        };
        let frame = AgentMessage {
            message_type: self.config.role.outgoing_type(),
            schema_version: SCHEMA_VERSION,
            created_date: now.unix_ms,
            sequence_number,
            flags,
            message_id: MessageId::random(),
            payload_type,
            payload,
        }
        .encode();
        self.next_sequence_number += 1;

        let transmit = !self.paused_for_us();
        if !full {
            self.unacked.insert(
                sequence_number,
                Unacked {
                    frame: frame.clone(),
                    first_sent: now.instant,
                    last_sent: now.instant,
                    transmissions: u32::from(transmit),
                    queued_until: None,
                    position: None,
                },
            );
            self.unacked_bytes += frame.len();
            self.by_last_sent.insert((now.instant, sequence_number));
        }
        Ok(transmit.then_some(frame))
    }

    /// Handles one incoming, already decoded message.
    ///
    /// Errors only when an `acknowledge` payload is not valid JSON; the reference ends log and
    /// drop such a message, and so may the caller.
    pub fn on_message(&mut self, now: Now, message: AgentMessage) -> Result<Inbound, Error> {
        let message_type = message.message_type;
        if message_type == self.config.role.incoming_type() {
            self.peer_paused = false;
            return Ok(self.on_stream_message(now, message));
        }
        Ok(match message_type {
            MessageType::ACKNOWLEDGE => {
                self.peer_paused = false;
                let content = AcknowledgeContent::decode(&message.payload)?;
                self.on_acknowledge(now.instant, content.acknowledged_message_sequence_number)
            }
            MessageType::CHANNEL_CLOSED => {
                Inbound::ChannelClosed(ChannelClosed::decode(&message.payload).ok())
            }
            MessageType::PAUSE_PUBLICATION => {
                self.peer_paused = true;
                Inbound::PausePublication
            }
            MessageType::START_PUBLICATION => {
                self.peer_paused = false;
                Inbound::StartPublication
            }
            _ => Inbound::Ignored,
        })
    }

    fn on_stream_message(&mut self, now: Now, message: AgentMessage) -> Inbound {
        let s = message.sequence_number;
        let e = self.expected_sequence_number;
        if s < e || self.out_of_order.contains_key(&s) {
            return Inbound::Duplicate {
                ack: ack_frame(now, &message),
            };
        }
        if s == e {
            if !self.ready {
                return Inbound::NotReady;
            }
            let ack = ack_frame(now, &message);
            let mut messages = vec![message];
            self.expected_sequence_number += 1;
            while let Some(next) = self.out_of_order.remove(&self.expected_sequence_number) {
                self.out_of_order_bytes -= next.encoded_len();
                messages.push(next);
                self.expected_sequence_number += 1;
            }
            return Inbound::Delivered { ack, messages };
        }
        if !self.ready {
            // Refusing the in-order message while acknowledging later ones would leave a gap the
            // peer repairs one message per timeout (spec §5.6): refuse these too.
            return Inbound::NotReady;
        }
        let len = message.encoded_len();
        if self.out_of_order.len() >= self.config.max_out_of_order
            || self.out_of_order_bytes.saturating_add(len) > self.config.max_out_of_order_bytes
        {
            return Inbound::Overflow;
        }
        let ack = ack_frame(now, &message);
        self.out_of_order_bytes += len;
        self.out_of_order.insert(s, message);
        Inbound::Buffered { ack }
    }

    fn on_acknowledge(&mut self, now: Instant, sequence_number: i64) -> Inbound {
        let Some(entry) = self.unacked.remove(&sequence_number) else {
            return Inbound::UnknownAcknowledge { sequence_number };
        };
        self.by_last_sent
            .remove(&(entry.last_sent, sequence_number));
        self.unacked_bytes -= entry.frame.len();
        self.acked_bytes += entry.frame.len() as u64;
        self.lost.remove(&sequence_number);
        if let Some(acked_at) = entry.position {
            // The socket is ordered: an older message whose latest copy was written before this
            // one and is still unacknowledged was dropped on the way (the peer was not ready, or
            // a fault): resend it now instead of after a timeout.
            for (&seq, e) in self.unacked.range(..sequence_number) {
                if e.queued_until.is_none() && e.position.is_some_and(|p| p < acked_at) {
                    self.lost.insert(seq);
                }
            }
        }
        let sample = now.saturating_duration_since(entry.last_sent);
        let rtt_sample = if self.config.karn {
            (entry.transmissions == 1).then_some(sample)
        } else {
            Some(sample)
        };
        if let Some(r) = rtt_sample {
            self.rtt.sample(r);
        }
        Inbound::Acknowledged {
            sequence_number,
            rtt_sample,
        }
    }

    /// Frames to resend now: unacknowledged messages last sent at least one RTO ago, chosen by
    /// [`Config::retransmit`]. Each is resent byte for byte; its send time and count are updated.
    /// Empty while publication is paused (with [`Config::honour_pause`]).
    pub fn poll_retransmit(&mut self, now: Instant) -> Vec<Bytes> {
        self.poll_retransmit_within(now, usize::MAX)
            .into_iter()
            .map(|(_, f)| f)
            .collect()
    }

    /// [`Self::poll_retransmit`] for an owner that reports writes ([`Self::queued`]): a message
    /// whose previous copy has not been written yet is never resent, messages found lost by a
    /// later acknowledgement come first, and the frames returned add up to at most `max_bytes`
    /// (at least one frame when any is due). Returns `(sequence number, frame)` pairs.
    pub fn poll_retransmit_within(&mut self, now: Instant, max_bytes: usize) -> Vec<(i64, Bytes)> {
        if self.paused_for_us() {
            return Vec::new();
        }
        let rto = self.rtt.rto();
        let unacked = &self.unacked;
        let writable = |seq: &i64| unacked.get(seq).is_some_and(|e| e.queued_until.is_none());
        let mut due: Vec<i64> = std::mem::take(&mut self.lost)
            .into_iter()
            .filter(|seq| writable(seq))
            .collect();
        let timed_out = |(last_sent, seq): &&(Instant, i64)| {
            now.saturating_duration_since(*last_sent) >= rto && writable(seq)
        };
        match self.config.retransmit {
            Retransmit::HeadOnly => {
                if due.is_empty() {
                    due.extend(
                        self.unacked
                            .first_key_value()
                            .filter(|(seq, entry)| {
                                now.saturating_duration_since(entry.last_sent) >= rto
                                    && writable(seq)
                            })
                            .map(|(&seq, _)| seq),
                    );
                }
            }
            Retransmit::Expired { max_per_poll } => {
                let more: Vec<i64> = self
                    .by_last_sent
                    .iter()
                    .filter(timed_out)
                    .map(|&(_, seq)| seq)
                    .filter(|seq| !due.contains(seq))
                    .take(max_per_poll.saturating_sub(due.len()))
                    .collect();
                due.extend(more);
            }
        }
        let timeouts = due.iter().any(|seq| {
            self.unacked
                .get(seq)
                .is_some_and(|e| now.saturating_duration_since(e.last_sent) >= rto)
        });
        let mut frames = Vec::with_capacity(due.len());
        let mut bytes = 0usize;
        for seq in due {
            let len = self.unacked.get(&seq).map_or(0, |e| e.frame.len());
            if !frames.is_empty() && bytes + len > max_bytes {
                // Not sent now: look at it again next time.
                self.lost.insert(seq);
                continue;
            }
            bytes += len;
            let entry = self
                .unacked
                .get_mut(&seq)
                .expect("by_last_sent and unacked hold the same sequence numbers");
            self.by_last_sent.remove(&(entry.last_sent, seq));
            entry.last_sent = now;
            entry.transmissions = entry.transmissions.saturating_add(1);
            self.by_last_sent.insert((now, seq));
            frames.push((seq, entry.frame.clone()));
        }
        self.retransmitted += frames.len() as u64;
        if self.config.karn && timeouts {
            self.rtt.back_off();
        }
        frames
    }

    /// The owner queued the latest copy of `sequence_number` for writing; its writer will have
    /// written it once it has written `until` bytes in all (positions only grow, per socket).
    /// Until [`Self::written`] says so the message is neither timed nor resent.
    pub fn queued(&mut self, sequence_number: i64, until: u64) {
        if let Some(e) = self.unacked.get_mut(&sequence_number) {
            e.queued_until = Some(until);
            e.position = Some(until);
            self.in_queue.push_back((until, sequence_number));
        }
    }

    /// The owner's writer has written `written` bytes in all: copies queued up to there are on
    /// the wire as of `now`, which is when their retransmission clock starts.
    pub fn written(&mut self, now: Instant, written: u64) {
        while let Some(&(until, seq)) = self.in_queue.front() {
            if until > written {
                break;
            }
            self.in_queue.pop_front();
            if let Some(e) = self.unacked.get_mut(&seq)
                && e.queued_until == Some(until)
            {
                e.queued_until = None;
                self.by_last_sent.remove(&(e.last_sent, seq));
                e.last_sent = now;
                self.by_last_sent.insert((now, seq));
            }
        }
    }

    /// The write queue and everything in it are gone (the socket was replaced): queued copies
    /// count as lost and positions start over.
    pub fn forget_queued(&mut self) {
        self.in_queue.clear();
        for e in self.unacked.values_mut() {
            e.queued_until = None;
            e.position = None;
        }
    }

    /// Stream messages resent so far.
    pub fn retransmitted(&self) -> u64 {
        self.retransmitted
    }

    /// Encoded bytes of our messages acknowledged so far.
    pub fn acked_bytes(&self) -> u64 {
        self.acked_bytes
    }

    /// When [`Self::poll_retransmit`] will next have something to resend (assuming no ack arrives
    /// first); `None` when nothing awaits acknowledgement or publication is paused.
    pub fn next_retransmit_at(&self) -> Option<Instant> {
        if self.paused_for_us() {
            return None;
        }
        let writable = |seq: &i64| {
            self.unacked
                .get(seq)
                .is_some_and(|e| e.queued_until.is_none())
        };
        // A message found lost is due at once: its last send time is in the past.
        if let Some(t) = self
            .lost
            .iter()
            .filter(|seq| writable(seq))
            .filter_map(|seq| self.unacked.get(seq))
            .map(|e| e.last_sent)
            .min()
        {
            return Some(t);
        }
        let last_sent = match self.config.retransmit {
            Retransmit::HeadOnly => self
                .unacked
                .first_key_value()
                .filter(|(seq, _)| writable(seq))
                .map(|(_, e)| e.last_sent),
            Retransmit::Expired { .. } => self
                .by_last_sent
                .iter()
                .find(|(_, seq)| writable(seq))
                .map(|&(t, _)| t),
        }?;
        Some(last_sent + self.rtt.rto())
    }

    /// Says whether in-order messages can be consumed now. While not ready they are dropped
    /// unacknowledged ([`Inbound::NotReady`]) and the peer retransmits them.
    pub fn set_ready(&mut self, ready: bool) {
        self.ready = ready;
    }

    /// Whether in-order messages are consumed (see [`Self::set_ready`]).
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Whether the service has paused publication (whether or not this end honours it).
    pub fn is_peer_paused(&self) -> bool {
        self.peer_paused
    }

    /// Whether [`Self::send`] would accept a message of `payload_len` bytes now.
    pub fn can_send(&self, payload_len: usize) -> bool {
        let len = HEADER_LEN + payload_len;
        self.config.when_full == WhenFull::SendUntracked
            || (self.unacked.len() < self.config.max_unacked
                && (self.unacked.is_empty()
                    || self.unacked_bytes.saturating_add(len) <= self.config.max_unacked_bytes))
    }

    /// Sequence number the next [`Self::send`] will use.
    pub fn next_sequence_number(&self) -> i64 {
        self.next_sequence_number
    }

    /// Sequence number of the next incoming stream message to deliver.
    pub fn expected_sequence_number(&self) -> i64 {
        self.expected_sequence_number
    }

    /// Number of unacknowledged outgoing messages.
    pub fn unacked_len(&self) -> usize {
        self.unacked.len()
    }

    /// Encoded bytes of unacknowledged outgoing messages.
    pub fn unacked_bytes(&self) -> usize {
        self.unacked_bytes
    }

    /// Number of incoming messages buffered ahead of a gap.
    pub fn out_of_order_len(&self) -> usize {
        self.out_of_order.len()
    }

    /// The oldest unacknowledged message, if any.
    pub fn oldest_unacked(&self) -> Option<Outstanding> {
        self.unacked
            .first_key_value()
            .map(|(&sequence_number, e)| Outstanding {
                sequence_number,
                transmissions: e.transmissions,
                first_sent: e.first_sent,
            })
    }

    /// The RTO estimator.
    pub fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    fn paused_for_us(&self) -> bool {
        self.config.honour_pause && self.peer_paused
    }
}

/// Builds the `acknowledge` for the stream message `acked` (spec §4.3): SequenceNumber 0, Flags 3,
/// PayloadType 0, JSON payload naming the acknowledged message's type, id and sequence number.
pub fn acknowledge(acked: &AgentMessage, created_date: u64, message_id: MessageId) -> AgentMessage {
    AgentMessage {
        message_type: MessageType::ACKNOWLEDGE,
        schema_version: SCHEMA_VERSION,
        created_date,
        sequence_number: 0,
        flags: ACKNOWLEDGE_FLAGS,
        message_id,
        payload_type: PayloadType::NONE,
        payload: AcknowledgeContent::for_message(acked).encode(),
    }
}

/// The encoded `acknowledge` for `message`, stamped `now`, with a fresh id.
fn ack_frame(now: Now, message: &AgentMessage) -> Bytes {
    acknowledge(message, now.unix_ms, MessageId::random()).encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssm::proto::payload::Flag;
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use std::collections::VecDeque;

    /// Fake time: `ms` milliseconds after a fixed origin.
    struct Clock {
        origin: Instant,
    }

    impl Clock {
        fn new() -> Self {
            Self {
                origin: Instant::now(),
            }
        }
        fn at(&self, ms: u64) -> Now {
            Now {
                instant: self.origin + Duration::from_millis(ms),
                unix_ms: 1_700_000_000_000 + ms,
            }
        }
        fn instant(&self, ms: u64) -> Instant {
            self.origin + Duration::from_millis(ms)
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A stream message as the agent would send it.
    fn output(seq: i64, payload: &'static [u8]) -> AgentMessage {
        AgentMessage {
            message_type: MessageType::OUTPUT_STREAM_DATA,
            schema_version: 1,
            created_date: 1_700_000_000_000,
            sequence_number: seq,
            flags: 0,
            message_id: MessageId::random(),
            payload_type: PayloadType::OUTPUT,
            payload: Bytes::from_static(payload),
        }
    }

    fn ack_for(seq: i64, message_type: MessageType) -> AgentMessage {
        let acked = AgentMessage {
            message_type,
            sequence_number: seq,
            ..output(seq, b"")
        };
        acknowledge(&acked, 1_700_000_000_000, MessageId::random())
    }

    fn decoded_ack_seq(frame: &Bytes) -> i64 {
        let m = AgentMessage::decode(frame).unwrap();
        assert_eq!(m.message_type, MessageType::ACKNOWLEDGE);
        assert_eq!(m.sequence_number, 0);
        assert_eq!(m.flags, 3);
        assert_eq!(m.payload_type, PayloadType::NONE);
        AcknowledgeContent::decode(&m.payload)
            .unwrap()
            .acknowledged_message_sequence_number
    }

    fn payloads(messages: &[AgentMessage]) -> Vec<&[u8]> {
        messages.iter().map(|m| &m.payload[..]).collect()
    }

    #[test]
    fn send_numbers_from_zero_and_buffers() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::client());
        for seq in 0..3 {
            let frame = ch
                .send(
                    clock.at(seq as u64),
                    PayloadType::OUTPUT,
                    Bytes::from_static(b"x"),
                )
                .unwrap()
                .unwrap();
            let m = AgentMessage::decode(&frame).unwrap();
            assert_eq!(m.message_type, MessageType::INPUT_STREAM_DATA);
            assert_eq!(m.sequence_number, seq);
            assert_eq!(m.flags, 0);
            assert_eq!(m.created_date, 1_700_000_000_000 + seq as u64);
            assert_eq!(&m.payload[..], b"x");
        }
        assert_eq!(ch.next_sequence_number(), 3);
        assert_eq!(ch.unacked_len(), 3);
        assert_eq!(ch.unacked_bytes(), 3 * (HEADER_LEN + 1));
        assert_eq!(ch.oldest_unacked().unwrap().sequence_number, 0);
    }

    #[test]
    fn agent_sets_syn_on_sequence_zero_only() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::agent());
        let f0 = ch
            .send(
                clock.at(0),
                PayloadType::HANDSHAKE_REQUEST,
                Bytes::from_static(b"{}"),
            )
            .unwrap()
            .unwrap();
        let f1 = ch
            .send(clock.at(0), PayloadType::OUTPUT, Bytes::from_static(b"y"))
            .unwrap()
            .unwrap();
        let m0 = AgentMessage::decode(&f0).unwrap();
        let m1 = AgentMessage::decode(&f1).unwrap();
        assert_eq!(m0.message_type, MessageType::OUTPUT_STREAM_DATA);
        assert_eq!((m0.flags, m1.flags), (FLAG_SYN, 0));
        assert_ne!(m0.message_id, m1.message_id);
    }

    #[test]
    fn in_order_messages_are_delivered_and_acknowledged() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::client());
        for seq in 0..3 {
            let Inbound::Delivered { ack, messages } =
                ch.on_message(clock.at(0), output(seq, b"d")).unwrap()
            else {
                panic!("expected delivery");
            };
            assert_eq!(decoded_ack_seq(&ack), seq);
            assert_eq!(messages.len(), 1);
            assert_eq!(messages[0].sequence_number, seq);
        }
        assert_eq!(ch.expected_sequence_number(), 3);
    }

    #[test]
    fn reordered_messages_are_acked_at_once_and_delivered_in_order() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::client());
        for (seq, payload) in [(2, &b"c"[..]), (1, b"b")] {
            let m = AgentMessage {
                payload: Bytes::copy_from_slice(payload),
                ..output(seq, b"")
            };
            let Inbound::Buffered { ack } = ch.on_message(clock.at(0), m).unwrap() else {
                panic!("expected buffering");
            };
            assert_eq!(decoded_ack_seq(&ack), seq);
        }
        assert_eq!(ch.out_of_order_len(), 2);
        let Inbound::Delivered { ack, messages } =
            ch.on_message(clock.at(0), output(0, b"a")).unwrap()
        else {
            panic!("expected delivery");
        };
        assert_eq!(decoded_ack_seq(&ack), 0);
        assert_eq!(payloads(&messages), vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(ch.expected_sequence_number(), 3);
        assert_eq!(ch.out_of_order_len(), 0);
        assert_eq!(ch.out_of_order_bytes, 0);
    }

    #[test]
    fn duplicates_and_old_messages_are_acknowledged_again() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::client());
        assert!(matches!(
            ch.on_message(clock.at(0), output(0, b"a")).unwrap(),
            Inbound::Delivered { .. }
        ));
        // An old message (consumed) is re-acked, not re-delivered.
        let Inbound::Duplicate { ack } = ch.on_message(clock.at(0), output(0, b"a")).unwrap()
        else {
            panic!("expected duplicate");
        };
        assert_eq!(decoded_ack_seq(&ack), 0);
        // A duplicate of a buffered message is re-acked and stored once.
        assert!(matches!(
            ch.on_message(clock.at(0), output(5, b"f")).unwrap(),
            Inbound::Buffered { .. }
        ));
        let Inbound::Duplicate { ack } = ch.on_message(clock.at(0), output(5, b"f")).unwrap()
        else {
            panic!("expected duplicate");
        };
        assert_eq!(decoded_ack_seq(&ack), 5);
        assert_eq!(ch.out_of_order_len(), 1);
        // Negative sequence numbers from a confused peer are simply old.
        assert!(matches!(
            ch.on_message(clock.at(0), output(-4, b"?")).unwrap(),
            Inbound::Duplicate { .. }
        ));
        assert_eq!(ch.expected_sequence_number(), 1);
    }

    #[test]
    fn not_ready_refuses_in_order_and_later_messages_alike() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::client());
        ch.set_ready(false);
        assert!(!ch.is_ready());
        assert_eq!(
            ch.on_message(clock.at(0), output(0, b"a")).unwrap(),
            Inbound::NotReady
        );
        assert_eq!(ch.expected_sequence_number(), 0);
        // Acknowledging seq 1 while refusing seq 0 would leave a gap repaired one message per
        // timeout (code review H1): it is refused too.
        assert_eq!(
            ch.on_message(clock.at(0), output(1, b"b")).unwrap(),
            Inbound::NotReady
        );
        assert_eq!(ch.out_of_order_len(), 0);
        ch.set_ready(true);
        // The peer retransmits both: now they are consumed in order.
        let Inbound::Delivered { messages, .. } =
            ch.on_message(clock.at(300), output(0, b"a")).unwrap()
        else {
            panic!("expected delivery");
        };
        assert_eq!(payloads(&messages), vec![&b"a"[..]]);
        assert!(matches!(
            ch.on_message(clock.at(300), output(1, b"b")).unwrap(),
            Inbound::Delivered { .. }
        ));
    }

    #[test]
    fn out_of_order_buffer_is_bounded_by_count_and_bytes() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config {
            max_out_of_order: 2,
            ..Config::client()
        });
        for seq in [3, 4] {
            assert!(matches!(
                ch.on_message(clock.at(0), output(seq, b"x")).unwrap(),
                Inbound::Buffered { .. }
            ));
        }
        assert_eq!(
            ch.on_message(clock.at(0), output(5, b"x")).unwrap(),
            Inbound::Overflow
        );
        // In-order messages never need buffer space.
        assert!(matches!(
            ch.on_message(clock.at(0), output(0, b"x")).unwrap(),
            Inbound::Delivered { .. }
        ));

        let mut ch = ReliableChannel::new(Config {
            max_out_of_order_bytes: 2 * (HEADER_LEN + 1),
            ..Config::client()
        });
        assert!(matches!(
            ch.on_message(clock.at(0), output(1, b"x")).unwrap(),
            Inbound::Buffered { .. }
        ));
        assert_eq!(
            ch.on_message(clock.at(0), output(2, b"xy")).unwrap(),
            Inbound::Overflow
        );
        assert!(matches!(
            ch.on_message(clock.at(0), output(2, b"x")).unwrap(),
            Inbound::Buffered { .. }
        ));
    }

    #[test]
    fn acknowledge_removes_and_samples_rtt() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::client());
        ch.send(clock.at(0), PayloadType::OUTPUT, Bytes::from_static(b"a"))
            .unwrap();
        ch.send(clock.at(10), PayloadType::OUTPUT, Bytes::from_static(b"b"))
            .unwrap();
        // Acks may come out of order; matching is by sequence number alone.
        let r = ch
            .on_message(clock.at(310), ack_for(1, MessageType::INPUT_STREAM_DATA))
            .unwrap();
        assert_eq!(
            r,
            Inbound::Acknowledged {
                sequence_number: 1,
                rtt_sample: Some(ms(300))
            }
        );
        assert_eq!(ch.rtt().rto(), ms(325));
        assert_eq!(ch.unacked_len(), 1);
        assert_eq!(ch.oldest_unacked().unwrap().sequence_number, 0);
        // The echoed MessageType is not checked, like the references.
        let r = ch
            .on_message(clock.at(400), ack_for(0, MessageType::OUTPUT_STREAM_DATA))
            .unwrap();
        assert!(matches!(
            r,
            Inbound::Acknowledged {
                sequence_number: 0,
                ..
            }
        ));
        assert_eq!(ch.unacked_len(), 0);
        assert_eq!(ch.unacked_bytes(), 0);
        assert!(ch.by_last_sent.is_empty());
    }

    #[test]
    fn acknowledge_of_unknown_sequence_is_ignored() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::client());
        ch.send(clock.at(0), PayloadType::OUTPUT, Bytes::from_static(b"a"))
            .unwrap();
        for seq in [7, -1] {
            assert_eq!(
                ch.on_message(clock.at(5), ack_for(seq, MessageType::INPUT_STREAM_DATA))
                    .unwrap(),
                Inbound::UnknownAcknowledge {
                    sequence_number: seq
                }
            );
        }
        assert!(matches!(
            ch.on_message(clock.at(5), ack_for(0, MessageType::INPUT_STREAM_DATA))
                .unwrap(),
            Inbound::Acknowledged { .. }
        ));
        // A second ack for the same message is unknown.
        assert_eq!(
            ch.on_message(clock.at(6), ack_for(0, MessageType::INPUT_STREAM_DATA))
                .unwrap(),
            Inbound::UnknownAcknowledge { sequence_number: 0 }
        );
    }

    #[test]
    fn malformed_acknowledge_is_an_error() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::client());
        let mut ack = ack_for(0, MessageType::INPUT_STREAM_DATA);
        ack.payload = Bytes::from_static(b"{not json");
        assert!(matches!(
            ch.on_message(clock.at(0), ack),
            Err(Error::Json {
                what: "acknowledge",
                ..
            })
        ));
    }

    #[test]
    fn rto_matches_hand_computed_values() {
        let mut e = RttEstimator::new();
        assert_eq!(
            (e.srtt(), e.rttvar(), e.rto()),
            (ms(100), Duration::ZERO, ms(200))
        );
        // R = 300 ms: RTTVAR = ¼·|100 − 300| = 50; SRTT = 87.5 + 37.5 = 125; RTO = 125 + 200 = 325.
        e.sample(ms(300));
        assert_eq!((e.srtt(), e.rttvar(), e.rto()), (ms(125), ms(50), ms(325)));
        // R = 50 ms: RTTVAR = 37.5 + 18.75 = 56.25; SRTT = 109.375 + 6.25 = 115.625;
        // RTO = 115.625 + 225 = 340.625.
        e.sample(ms(50));
        assert_eq!(e.rttvar(), Duration::from_micros(56_250));
        assert_eq!(e.srtt(), Duration::from_micros(115_625));
        assert_eq!(e.rto(), Duration::from_micros(340_625));
        // R = SRTT: RTTVAR = 42.1875; SRTT unchanged; RTO = 115.625 + 168.75 = 284.375.
        e.sample(Duration::from_micros(115_625));
        assert_eq!(e.rttvar(), Duration::from_nanos(42_187_500));
        assert_eq!(e.srtt(), Duration::from_micros(115_625));
        assert_eq!(e.rto(), Duration::from_micros(284_375));
    }

    #[test]
    fn rto_is_capped_at_one_second_and_floored_by_granularity() {
        let mut e = RttEstimator::new();
        // R = 2 s: RTTVAR = 475 ms, SRTT = 337.5 ms → 2.2375 s, capped.
        e.sample(Duration::from_secs(2));
        assert_eq!(e.rto(), MAX_RTO);
        // A steady 20 ms path: RTTVAR decays toward 0 and the 10 ms granularity term takes over.
        let mut e = RttEstimator::new();
        for _ in 0..200 {
            e.sample(ms(20));
        }
        assert!(e.rttvar() < Duration::from_micros(1));
        let rto = e.rto();
        assert!(
            rto >= ms(30) && rto < ms(30) + Duration::from_micros(2),
            "{rto:?}"
        );
        // Back-off doubles up to the cap.
        e.back_off();
        assert!(rto * 2 - e.rto() < Duration::from_micros(1));
        for _ in 0..10 {
            e.back_off();
        }
        assert_eq!(e.rto(), MAX_RTO);
    }

    #[test]
    fn client_retransmits_overdue_messages_with_karn_and_backoff() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::client());
        let f0 = ch
            .send(clock.at(0), PayloadType::OUTPUT, Bytes::from_static(b"a"))
            .unwrap()
            .unwrap();
        let f1 = ch
            .send(clock.at(50), PayloadType::OUTPUT, Bytes::from_static(b"b"))
            .unwrap()
            .unwrap();
        assert_eq!(ch.next_retransmit_at(), Some(clock.instant(200)));
        assert!(ch.poll_retransmit(clock.instant(199)).is_empty());
        // At 200 ms only seq 0 is overdue; it goes out byte for byte (same id, date, digest).
        assert_eq!(ch.poll_retransmit(clock.instant(200)), vec![f0.clone()]);
        assert_eq!(ch.rtt().rto(), ms(400), "Karn back-off");
        // seq 1 is due at 50 + 400.
        assert_eq!(ch.next_retransmit_at(), Some(clock.instant(450)));
        assert_eq!(ch.poll_retransmit(clock.instant(450)), vec![f1]);
        assert_eq!(ch.rtt().rto(), ms(800));
        assert_eq!(ch.poll_retransmit(clock.instant(1000)), vec![f0]);
        assert_eq!(
            ch.rtt().rto(),
            ms(1600),
            "our client's cap is above the spec's 1 s"
        );
        // An ack of a retransmitted message yields no sample and leaves the RTO alone.
        assert_eq!(
            ch.on_message(clock.at(1010), ack_for(0, MessageType::INPUT_STREAM_DATA))
                .unwrap(),
            Inbound::Acknowledged {
                sequence_number: 0,
                rtt_sample: None
            }
        );
        assert_eq!(ch.rtt().rto(), ms(1600));
        let out = ch.oldest_unacked().unwrap();
        assert_eq!((out.sequence_number, out.transmissions), (1, 2));
        assert_eq!(out.first_sent, clock.instant(50));
    }

    #[test]
    fn the_clock_starts_when_written_and_unwritten_copies_are_never_queued_again() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::client());
        let f0 = ch
            .send(clock.at(0), PayloadType::OUTPUT, Bytes::from_static(b"a"))
            .unwrap()
            .unwrap();
        ch.queued(0, 1000);
        // Still in the write queue long after the RTO: not resent, not even due.
        assert_eq!(ch.next_retransmit_at(), None);
        assert!(ch.poll_retransmit(clock.instant(5000)).is_empty());
        // Written at 5 s: the clock starts there.
        ch.written(clock.instant(5000), 1000);
        assert_eq!(ch.next_retransmit_at(), Some(clock.instant(5200)));
        assert_eq!(
            ch.poll_retransmit_within(clock.instant(5200), usize::MAX),
            vec![(0, f0)]
        );
        // The resent copy waits in the queue again: nothing more until it is written.
        ch.queued(0, 2000);
        assert!(ch.poll_retransmit(clock.instant(9000)).is_empty());
        assert_eq!(ch.retransmitted(), 1);
    }

    #[test]
    fn a_later_ack_finds_an_earlier_loss_at_once() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::client());
        for (i, end) in [(0, 100u64), (1, 200), (2, 300)] {
            ch.send(clock.at(i), PayloadType::OUTPUT, Bytes::from_static(b"x"))
                .unwrap();
            ch.queued(i as i64, end);
        }
        ch.written(clock.instant(5), 300);
        // seq 2 acknowledged while 0 and 1, written before it on the same socket, are not: they
        // were dropped on the way and are due now, long before any timeout.
        ch.on_message(clock.at(20), ack_for(2, MessageType::INPUT_STREAM_DATA))
            .unwrap();
        assert_eq!(ch.next_retransmit_at(), Some(clock.instant(5)));
        let seqs: Vec<i64> = ch
            .poll_retransmit_within(clock.instant(21), usize::MAX)
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        assert_eq!(seqs, vec![0, 1]);
        // The RTO was not backed off: nothing timed out.
        assert_eq!(ch.rtt().rto(), INITIAL_RTO.min(ch.rtt().rto()));
    }

    #[test]
    fn retransmits_fit_the_byte_budget_and_a_new_socket_forgets_the_queue() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::client());
        let payload = Bytes::from(vec![7u8; 1000]);
        for i in 0..4 {
            ch.send(clock.at(i), PayloadType::OUTPUT, payload.clone())
                .unwrap();
            ch.queued(i as i64, 1200 * (i + 1));
        }
        ch.written(clock.instant(10), 1200 * 4);
        let due = ch.poll_retransmit_within(clock.instant(1000), 2500);
        assert_eq!(due.len(), 2, "two 1120-byte frames fit in 2500 bytes");
        // The socket is replaced: the queued copies are gone, so they may go out again.
        for (seq, _) in &due {
            ch.queued(*seq, 10_000);
        }
        ch.forget_queued();
        let again = ch.poll_retransmit_within(clock.instant(3000), usize::MAX);
        assert_eq!(again.len(), 4);
    }

    #[test]
    fn expired_policy_is_bounded_per_poll() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config {
            retransmit: Retransmit::Expired { max_per_poll: 2 },
            karn: false,
            ..Config::client()
        });
        for i in 0..5 {
            ch.send(clock.at(i), PayloadType::OUTPUT, Bytes::from_static(b"z"))
                .unwrap();
        }
        let seqs = |frames: Vec<Bytes>| -> Vec<i64> {
            frames
                .iter()
                .map(|f| AgentMessage::decode(f).unwrap().sequence_number)
                .collect()
        };
        assert_eq!(seqs(ch.poll_retransmit(clock.instant(300))), vec![0, 1]);
        assert_eq!(seqs(ch.poll_retransmit(clock.instant(300))), vec![2, 3]);
        assert_eq!(seqs(ch.poll_retransmit(clock.instant(300))), vec![4]);
        assert!(ch.poll_retransmit(clock.instant(300)).is_empty());
        assert_eq!(ch.next_retransmit_at(), Some(clock.instant(500)));
    }

    #[test]
    fn agent_retransmits_head_only_and_samples_every_ack() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::agent());
        let f0 = ch
            .send(clock.at(0), PayloadType::OUTPUT, Bytes::from_static(b"a"))
            .unwrap()
            .unwrap();
        ch.send(clock.at(0), PayloadType::OUTPUT, Bytes::from_static(b"b"))
            .unwrap();
        assert_eq!(ch.poll_retransmit(clock.instant(200)), vec![f0.clone()]);
        assert_eq!(ch.rtt().rto(), ms(200), "no back-off for the agent");
        // The head was just resent: nothing else goes until it is overdue again.
        assert!(ch.poll_retransmit(clock.instant(300)).is_empty());
        assert_eq!(ch.next_retransmit_at(), Some(clock.instant(400)));
        // The agent samples from the last resend: 300 − 200 = 100 ms.
        assert_eq!(
            ch.on_message(clock.at(300), ack_for(0, MessageType::OUTPUT_STREAM_DATA))
                .unwrap(),
            Inbound::Acknowledged {
                sequence_number: 0,
                rtt_sample: Some(ms(100))
            }
        );
        // SRTT stays 100, RTTVAR 0, RTO = 100 + 10.
        assert_eq!(ch.rtt().rto(), ms(110));
    }

    #[test]
    fn client_send_buffer_full_rejects_without_using_a_sequence_number() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config {
            max_unacked: 2,
            ..Config::client()
        });
        for _ in 0..2 {
            ch.send(clock.at(0), PayloadType::OUTPUT, Bytes::from_static(b"a"))
                .unwrap();
        }
        assert!(!ch.can_send(1));
        assert!(matches!(
            ch.send(clock.at(0), PayloadType::OUTPUT, Bytes::from_static(b"c")),
            Err(Error::SendBufferFull { messages: 2, bytes }) if bytes == 2 * (HEADER_LEN + 1)
        ));
        assert_eq!(ch.next_sequence_number(), 2);
        ch.on_message(clock.at(5), ack_for(0, MessageType::INPUT_STREAM_DATA))
            .unwrap();
        assert!(ch.can_send(1));
        let f = ch
            .send(clock.at(6), PayloadType::OUTPUT, Bytes::from_static(b"c"))
            .unwrap()
            .unwrap();
        assert_eq!(AgentMessage::decode(&f).unwrap().sequence_number, 2);
    }

    #[test]
    fn client_send_buffer_byte_bound() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config {
            max_unacked_bytes: 300,
            ..Config::client()
        });
        // One message larger than the bound is accepted into an empty buffer...
        ch.send(clock.at(0), PayloadType::OUTPUT, Bytes::from(vec![0; 400]))
            .unwrap();
        // ...but nothing more until it is acknowledged.
        assert!(!ch.can_send(1));
        assert!(matches!(
            ch.send(clock.at(0), PayloadType::OUTPUT, Bytes::from_static(b"a")),
            Err(Error::SendBufferFull { messages: 1, .. })
        ));
        ch.on_message(clock.at(5), ack_for(0, MessageType::INPUT_STREAM_DATA))
            .unwrap();
        ch.send(clock.at(6), PayloadType::OUTPUT, Bytes::from(vec![0; 30]))
            .unwrap();
        // 150 bytes buffered: one more 150-byte frame (30-byte payload) fits exactly.
        assert!(ch.can_send(30));
        assert!(!ch.can_send(31));
    }

    #[test]
    fn oversized_payload_is_refused() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::client());
        assert!(matches!(
            ch.send(
                clock.at(0),
                PayloadType::OUTPUT,
                Bytes::from(vec![0; MAX_PAYLOAD_LEN + 1])
            ),
            Err(Error::MessageTooLong { .. })
        ));
        assert_eq!(ch.next_sequence_number(), 0);
    }

    #[test]
    fn agent_send_when_full_goes_out_once_untracked() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config {
            max_unacked: 1,
            ..Config::agent()
        });
        ch.send(clock.at(0), PayloadType::OUTPUT, Bytes::from_static(b"a"))
            .unwrap();
        assert!(ch.can_send(1));
        let f = ch
            .send(clock.at(0), PayloadType::OUTPUT, Bytes::from_static(b"b"))
            .unwrap()
            .unwrap();
        assert_eq!(AgentMessage::decode(&f).unwrap().sequence_number, 1);
        assert_eq!(ch.unacked_len(), 1);
        assert_eq!(ch.next_sequence_number(), 2);
        assert_eq!(
            ch.on_message(clock.at(1), ack_for(1, MessageType::OUTPUT_STREAM_DATA))
                .unwrap(),
            Inbound::UnknownAcknowledge { sequence_number: 1 }
        );
    }

    #[test]
    fn agent_honours_pause_and_resumes_through_retransmission() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::agent());
        let pause = AgentMessage {
            message_type: MessageType::PAUSE_PUBLICATION,
            created_date: 0,
            payload: Bytes::new(),
            ..output(0, b"")
        };
        assert_eq!(
            ch.on_message(clock.at(0), pause.clone()).unwrap(),
            Inbound::PausePublication
        );
        assert!(ch.is_peer_paused());
        assert_eq!(
            ch.send(clock.at(0), PayloadType::OUTPUT, Bytes::from_static(b"a"))
                .unwrap(),
            None
        );
        assert_eq!(ch.unacked_len(), 1);
        assert_eq!(ch.oldest_unacked().unwrap().transmissions, 0);
        assert!(ch.poll_retransmit(clock.instant(5_000)).is_empty());
        assert_eq!(ch.next_retransmit_at(), None);
        let start = AgentMessage {
            message_type: MessageType::START_PUBLICATION,
            ..pause.clone()
        };
        assert_eq!(
            ch.on_message(clock.at(5_000), start).unwrap(),
            Inbound::StartPublication
        );
        let frames = ch.poll_retransmit(clock.instant(5_000));
        assert_eq!(frames.len(), 1);
        assert_eq!(&AgentMessage::decode(&frames[0]).unwrap().payload[..], b"a");
        // Incoming stream data and acks also clear a pause.
        ch.on_message(clock.at(5_001), pause.clone()).unwrap();
        let input = AgentMessage {
            message_type: MessageType::INPUT_STREAM_DATA,
            ..output(0, b"x")
        };
        ch.on_message(clock.at(5_002), input).unwrap();
        assert!(!ch.is_peer_paused());
        ch.on_message(clock.at(5_003), pause).unwrap();
        ch.on_message(clock.at(5_004), ack_for(9, MessageType::OUTPUT_STREAM_DATA))
            .unwrap();
        assert!(!ch.is_peer_paused());
    }

    #[test]
    fn client_ignores_pause_for_sending() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::client());
        let pause = AgentMessage {
            message_type: MessageType::PAUSE_PUBLICATION,
            payload: Bytes::new(),
            ..output(0, b"")
        };
        ch.on_message(clock.at(0), pause).unwrap();
        assert!(ch.is_peer_paused());
        assert!(
            ch.send(clock.at(0), PayloadType::OUTPUT, Bytes::from_static(b"a"))
                .unwrap()
                .is_some()
        );
        assert_eq!(ch.poll_retransmit(clock.instant(200)).len(), 1);
    }

    #[test]
    fn control_messages_are_not_sequenced() {
        let clock = Clock::new();
        let mut ch = ReliableChannel::new(Config::client());
        let closed = AgentMessage {
            message_type: MessageType::CHANNEL_CLOSED,
            sequence_number: 0,
            payload: Bytes::from_static(br#"{"SessionId":"s-1","Output":"bye"}"#),
            ..output(0, b"")
        };
        let Inbound::ChannelClosed(Some(c)) = ch.on_message(clock.at(0), closed.clone()).unwrap()
        else {
            panic!("expected channel_closed");
        };
        assert_eq!((c.session_id.as_str(), c.output.as_str()), ("s-1", "bye"));
        let garbled = AgentMessage {
            payload: Bytes::from_static(b"\x00"),
            ..closed
        };
        assert_eq!(
            ch.on_message(clock.at(0), garbled).unwrap(),
            Inbound::ChannelClosed(None)
        );
        for t in [
            MessageType::AGENT_SESSION_STATE,
            MessageType::INPUT_STREAM_DATA, // our own direction
            MessageType::new("agent_job").unwrap(),
        ] {
            let m = AgentMessage {
                message_type: t,
                ..output(0, b"x")
            };
            assert_eq!(ch.on_message(clock.at(0), m).unwrap(), Inbound::Ignored);
        }
        assert_eq!(ch.expected_sequence_number(), 0);
        assert_eq!(ch.next_sequence_number(), 0);
    }

    /// What travels between the two ends in the simulation below.
    struct InFlight {
        deliver_at: u64,
        frame: Bytes,
    }

    /// Client and agent channels joined by a lossy, duplicating, reordering link with fake time:
    /// every payload arrives exactly once, in order, both ways; RTO stays within its bounds.
    #[test]
    fn lossy_link_delivers_everything_once_in_order() {
        for seed in 0..20 {
            run_lossy_link(seed);
        }
    }

    fn run_lossy_link(seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let clock = Clock::new();
        let mut ends = [
            ReliableChannel::new(Config::client()),
            ReliableChannel::new(Config::agent()),
        ];
        // links[i] carries frames *to* end i.
        let mut links: [VecDeque<InFlight>; 2] = [VecDeque::new(), VecDeque::new()];
        let total = 300usize;
        let mut to_send = [0usize; 2];
        let mut received: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        let payload = |from: usize, i: usize| format!("{from}:{i}").into_bytes();
        let loss = 0.2;

        let put = |links: &mut [VecDeque<InFlight>; 2],
                   rng: &mut StdRng,
                   to: usize,
                   now: u64,
                   frame: Bytes| {
            if rng.random_bool(loss) {
                return;
            }
            let copies = if rng.random_bool(0.1) { 2 } else { 1 };
            for _ in 0..copies {
                let deliver_at = now + rng.random_range(5..60);
                links[to].push_back(InFlight {
                    deliver_at,
                    frame: frame.clone(),
                });
            }
        };

        let mut now = 0u64;
        while received[0].len() < total || received[1].len() < total {
            now += 1;
            assert!(now < 600_000, "seed {seed}: no progress");
            for from in 0..2 {
                let to = 1 - from;
                if to_send[from] < total && rng.random_bool(0.3) {
                    let frame = ends[from]
                        .send(
                            clock.at(now),
                            PayloadType::OUTPUT,
                            Bytes::from(payload(from, to_send[from])),
                        )
                        .unwrap()
                        .expect("nobody pauses publication here");
                    put(&mut links, &mut rng, to, now, frame);
                    to_send[from] += 1;
                }
                for frame in ends[from].poll_retransmit(clock.instant(now)) {
                    put(&mut links, &mut rng, to, now, frame);
                }
            }
            for to in 0..2 {
                // Deliver everything due, in arbitrary order (reordering).
                let (due, later): (Vec<_>, Vec<_>) =
                    links[to].drain(..).partition(|f| f.deliver_at <= now);
                links[to] = later.into();
                let mut due = due;
                if due.len() > 1 {
                    let k = rng.random_range(0..due.len());
                    due.swap(0, k);
                }
                for f in due {
                    let message = AgentMessage::decode(&f.frame).unwrap();
                    match ends[to].on_message(clock.at(now), message).unwrap() {
                        Inbound::Delivered { ack, messages } => {
                            received[to].extend(messages.iter().map(|m| m.payload.to_vec()));
                            put(&mut links, &mut rng, 1 - to, now, ack);
                        }
                        Inbound::Buffered { ack } | Inbound::Duplicate { ack } => {
                            put(&mut links, &mut rng, 1 - to, now, ack);
                        }
                        Inbound::Acknowledged { .. } | Inbound::UnknownAcknowledge { .. } => {}
                        other => panic!("seed {seed}: unexpected {other:?}"),
                    }
                }
            }
            for end in &ends {
                let rto = end.rtt().rto();
                assert!(rto >= CLOCK_GRANULARITY && rto <= end.config().max_rto);
            }
        }
        for (to, got) in received.iter().enumerate() {
            let from = 1 - to;
            let expected: Vec<Vec<u8>> = (0..total).map(|i| payload(from, i)).collect();
            assert_eq!(got, &expected, "seed {seed}");
        }
    }

    #[test]
    fn flags_travel_as_sequenced_stream_data() {
        let clock = Clock::new();
        let mut client = ReliableChannel::new(Config::client());
        let mut agent = ReliableChannel::new(Config::agent());
        let frame = client
            .send(
                clock.at(0),
                PayloadType::FLAG,
                Flag::TerminateSession.encode(),
            )
            .unwrap()
            .unwrap();
        let Inbound::Delivered { ack, messages } = agent
            .on_message(clock.at(1), AgentMessage::decode(&frame).unwrap())
            .unwrap()
        else {
            panic!("expected delivery");
        };
        assert_eq!(messages[0].payload_type, PayloadType::FLAG);
        assert_eq!(
            Flag::decode(&messages[0].payload).unwrap(),
            Flag::TerminateSession
        );
        assert!(matches!(
            client
                .on_message(clock.at(2), AgentMessage::decode(&ack).unwrap())
                .unwrap(),
            Inbound::Acknowledged {
                sequence_number: 0,
                ..
            }
        ));
    }
}
