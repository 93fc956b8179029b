//! The stream table of one session: what the session task and the [`SsmStream`] handles share.
//!
//! One mutex guards the whole table. Critical sections are short (append or take a buffer, flip a
//! flag) and wakers are woken after the lock is released, so contention stays negligible next to
//! hashing and socket I/O even with many streams.
//!
//! Flow control, within what smux v1 allows (spec §7.4):
//! * **upstream** (our writes): each stream buffers at most [`STREAM_SEND_BUFFER`] bytes before
//!   `poll_write` returns `Pending`; the session task drains streams round-robin only while the
//!   reliable channel and the socket writer have room, so a slow agent slows every writer instead
//!   of growing memory;
//! * **downstream**: smux v1 has no per-stream window, and pausing the whole session for one slow
//!   reader freezes every other stream on it (and, against the real agent, can wedge the session:
//!   DESIGN.md decision 11). So each stream's reader is expected to drain its stream whatever its
//!   own client does (the proxy spools what its client does not read, see `crate::spool`), and
//!   the session never refuses an in-order message and never stops reading its socket for one
//!   stream. A stream that holds [`Shared::recv_budget`] unread and whose reader has not read for
//!   [`STREAM_STUCK_AFTER`], or that holds four times the budget, is failed alone: its data is
//!   dropped, the agent gets a FIN, its reader an error, and the session and its other streams go
//!   on. (Against the real agent, which paces a session to about 1 MiB/s, a reading stream never
//!   gets near the budget.)
//!
//! In mux mode streams are smux streams (odd ids from 3). In basic mode the session carries one
//! raw stream, id 0, and is used once (see [`super::session`]).
//!
//! [`SsmStream`]: super::stream::SsmStream

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use super::proto::smux::{self, ClientStreamIds, Frame};

/// How long a stream may hold its whole receive budget without being read before it is failed.
pub const STREAM_STUCK_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// Most bytes one stream buffers for sending before its writer waits.
pub const STREAM_SEND_BUFFER: usize = 256 * 1024;

/// Why a stream cannot go on, as an I/O error kind and a message.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The kind reported to readers and writers.
    pub kind: io::ErrorKind,
    /// The message.
    pub message: String,
}

impl Failure {
    /// The failure as an `io::Error`.
    pub fn to_io(&self) -> io::Error {
        io::Error::new(self.kind, self.message.clone())
    }
}

/// One stream's buffers and flags.
#[derive(Debug, Default)]
pub struct StreamState {
    /// Received data not yet read.
    pub recv: VecDeque<Bytes>,
    /// Total bytes in `recv`.
    pub recv_len: usize,
    /// Whether any data has been received (for attributing ConnectToPortError).
    pub received_any: bool,
    /// The agent closed the stream (FIN): reads end after `recv` drains.
    pub remote_fin: bool,
    /// The stream failed (dial refused, session gone).
    pub failure: Option<Failure>,
    /// Reader waiting for data.
    pub read_waker: Option<Waker>,
    /// Data written and not yet taken by the session task.
    pub send: BytesMut,
    /// The handle was shut down or dropped: send a FIN after `send` drains.
    pub local_close: bool,
    /// The FIN has been put on the wire (or the stream needs none).
    pub fin_sent: bool,
    /// The handle is gone; the entry is removed once the FIN is out.
    pub handle_dropped: bool,
    /// Queued in [`Table::ready`].
    pub queued: bool,
    /// Writer waiting for buffer room, flush or shutdown.
    pub write_waker: Option<Waker>,
    /// When the reader last took data (or the stream was opened).
    pub last_read: Option<std::time::Instant>,
}

/// The mutable part of the table.
#[derive(Debug)]
pub struct Table {
    /// Open streams by id.
    pub streams: HashMap<u32, StreamState>,
    /// Stream ids to announce with SYN, in order.
    pub new_streams: VecDeque<u32>,
    /// Streams with data or a close to send, in arrival order.
    pub ready: VecDeque<u32>,
    /// Client stream ids.
    pub ids: ClientStreamIds,
    /// Received bytes buffered across all streams.
    pub recv_buffered: usize,
    /// Set when the session has ended; every stream fails with it.
    pub dead: Option<Failure>,
    /// Streams opened over the session's life.
    pub opened: u64,
}

/// Shared between the session task and its streams.
#[derive(Debug)]
pub struct Shared {
    /// The session id, for messages.
    pub session_id: String,
    /// The stream table.
    table: Mutex<Table>,
    /// Wakes the session task: data to send, a close, room in the receive budget.
    pub wake: Arc<Notify>,
    /// Received-but-unread bytes of one stream above which that stream is failed.
    pub recv_budget: usize,
    /// The session has a WebSocket now (false while it resumes).
    pub connected: std::sync::atomic::AtomicBool,
    /// The session is in a stall episode (no progress in one direction; see the session task).
    pub stalled: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// An empty table.
    pub fn new(session_id: String, recv_budget: usize, wake: Arc<Notify>) -> Self {
        Self {
            session_id,
            table: Mutex::new(Table {
                streams: HashMap::new(),
                new_streams: VecDeque::new(),
                ready: VecDeque::new(),
                ids: ClientStreamIds::new(),
                recv_buffered: 0,
                dead: None,
                opened: 0,
            }),
            wake,
            recv_budget,
            connected: std::sync::atomic::AtomicBool::new(true),
            stalled: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Locks the table. A panic while holding the lock is a bug; the data is still consistent
    /// enough to fail streams, so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the session is connected and making progress: where new streams should go.
    pub fn is_healthy(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.connected.load(Ordering::Relaxed) && !self.stalled.load(Ordering::Relaxed)
    }
}

/// Wakers collected under the lock, woken after it is released.
#[derive(Default)]
pub struct Wakers(Vec<Waker>);

impl Wakers {
    /// Adds a waker if there is one.
    pub fn push(&mut self, w: Option<Waker>) {
        if let Some(w) = w {
            self.0.push(w);
        }
    }

    /// Wakes them all.
    pub fn wake(self) {
        for w in self.0 {
            w.wake();
        }
    }
}

impl Table {
    /// Registers a new stream with `id` (announced with SYN in mux mode).
    pub fn insert(&mut self, id: u32, announce: bool) {
        self.streams.insert(
            id,
            StreamState {
                last_read: Some(std::time::Instant::now()),
                ..StreamState::default()
            },
        );
        if announce {
            self.new_streams.push_back(id);
        }
        self.opened += 1;
    }

    /// Streams currently open.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Delivers data to stream `id`; unknown ids are ignored (smux discards them too). A stream
    /// that would hold more than four times `budget` unread is failed instead; returns its id then.
    pub fn deliver(
        &mut self,
        id: u32,
        data: Bytes,
        budget: usize,
        wakers: &mut Wakers,
    ) -> Option<u32> {
        if data.is_empty() {
            return None;
        }
        if let Some(s) = self.streams.get_mut(&id) {
            if s.handle_dropped || s.failure.is_some() {
                return None;
            }
            if s.recv_len + data.len() > budget.saturating_mul(4) {
                self.fail_stream(id, budget, wakers);
                return Some(id);
            }
            s.received_any = true;
            s.recv_len += data.len();
            self.recv_buffered += data.len();
            s.recv.push_back(data);
            wakers.push(s.read_waker.take());
        }
        None
    }

    /// Fails every stream that holds `budget` or more unread and has not been read since
    /// `stuck_before`: its data is dropped, a FIN is queued, its reader gets the error. Returns
    /// their ids.
    pub fn fail_stuck(
        &mut self,
        budget: usize,
        stuck_before: std::time::Instant,
        wakers: &mut Wakers,
    ) -> Vec<u32> {
        let stuck: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| s.recv_len >= budget && s.last_read.is_none_or(|t| t < stuck_before))
            .map(|(&id, _)| id)
            .collect();
        for &id in &stuck {
            self.fail_stream(id, budget, wakers);
        }
        stuck
    }

    /// Fails stream `id` for holding too much unread (see [`Self::fail_stuck`]).
    fn fail_stream(&mut self, id: u32, budget: usize, wakers: &mut Wakers) {
        if let Some(s) = self.streams.get_mut(&id) {
            let dropped = s.recv_len;
            s.recv.clear();
            s.recv_len = 0;
            s.failure = Some(Failure {
                kind: io::ErrorKind::ConnectionAborted,
                message: format!(
                    "this connection held {} MiB unread on a shared SSM session and its reader \
                     stopped reading; it was closed so that the other connections on the session go on",
                    budget >> 20
                ),
            });
            s.local_close = true;
            wakers.push(s.read_waker.take());
            wakers.push(s.write_waker.take());
            let enqueue = !s.queued;
            s.queued = true;
            self.recv_buffered -= dropped;
            if enqueue {
                self.ready.push_back(id);
            }
        }
    }

    /// The agent closed stream `id`; with `failure`, readers see that error instead of EOF.
    pub fn remote_close(&mut self, id: u32, failure: Option<Failure>, wakers: &mut Wakers) {
        if let Some(s) = self.streams.get_mut(&id) {
            s.remote_fin = true;
            if failure.is_some() && s.failure.is_none() {
                s.failure = failure;
            }
            wakers.push(s.read_waker.take());
            wakers.push(s.write_waker.take());
        }
    }

    /// Fails every stream and the table itself.
    pub fn fail_all(&mut self, failure: Failure, wakers: &mut Wakers) {
        for s in self.streams.values_mut() {
            if s.failure.is_none() {
                s.failure = Some(failure.clone());
            }
            wakers.push(s.read_waker.take());
            wakers.push(s.write_waker.take());
        }
        if self.dead.is_none() {
            self.dead = Some(failure);
        }
    }

    /// Appends pending SYNs, data (as smux frames, at most `quantum` bytes per stream per round)
    /// and FINs to `out` until it holds at least `want` bytes or nothing is left to send.
    pub fn take_mux(
        &mut self,
        out: &mut BytesMut,
        want: usize,
        quantum: usize,
        wakers: &mut Wakers,
    ) {
        while let Some(id) = self.new_streams.pop_front() {
            Frame::syn(id).encode(out);
        }
        while out.len() < want {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(s) = self.streams.get_mut(&id) else {
                continue;
            };
            let n = s.send.len().min(quantum);
            if n > 0 {
                let data = s.send.split_to(n);
                smux::encode_data(id, &data, smux::DEFAULT_MAX_FRAME_SIZE, out);
                wakers.push(s.write_waker.take());
            }
            if !s.send.is_empty() {
                self.ready.push_back(id);
                continue;
            }
            if s.local_close && !s.fin_sent {
                Frame::fin(id).encode(out);
                s.fin_sent = true;
                wakers.push(s.write_waker.take());
            }
            s.queued = false;
            if s.fin_sent && s.handle_dropped {
                self.remove(id);
            }
        }
    }

    /// Basic mode: takes up to `want` raw bytes of stream 0; `Some(true)` in the second field when
    /// the stream has been closed locally and everything is taken.
    pub fn take_basic(&mut self, want: usize, wakers: &mut Wakers) -> (Bytes, bool) {
        self.ready.retain(|&id| id != 0);
        let Some(s) = self.streams.get_mut(&0) else {
            return (Bytes::new(), false);
        };
        s.queued = false;
        let n = s.send.len().min(want);
        let data = s.send.split_to(n).freeze();
        if n > 0 {
            wakers.push(s.write_waker.take());
        }
        if !s.send.is_empty() {
            s.queued = true;
            self.ready.push_back(0);
        }
        let closing = s.send.is_empty() && s.local_close && !s.fin_sent;
        if closing {
            s.fin_sent = true;
            wakers.push(s.write_waker.take());
        }
        (data, closing)
    }

    /// Whether any stream has something to send.
    pub fn has_pending_send(&self) -> bool {
        !self.new_streams.is_empty() || !self.ready.is_empty()
    }

    /// Removes a stream, releasing its share of the receive budget.
    pub fn remove(&mut self, id: u32) {
        if let Some(s) = self.streams.remove(&id) {
            self.recv_buffered -= s.recv_len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssm::proto::smux::{Cmd, Decoded, FrameDecoder};

    fn frames(mut out: BytesMut) -> Vec<Frame> {
        let d = FrameDecoder::default();
        let mut v = Vec::new();
        while let Decoded::Frame(f) = d.decode(&mut out).unwrap() {
            v.push(f);
        }
        assert!(out.is_empty());
        v
    }

    fn queue(t: &mut Table, id: u32, data: &[u8]) {
        let s = t.streams.get_mut(&id).unwrap();
        s.send.extend_from_slice(data);
        if !s.queued {
            s.queued = true;
            t.ready.push_back(id);
        }
    }

    #[test]
    fn syn_before_data_and_round_robin_between_streams() {
        let shared = Shared::new("s".into(), 1 << 20, Arc::new(Notify::new()));
        let mut t = shared.lock();
        t.insert(3, true);
        t.insert(5, true);
        queue(&mut t, 3, &[1; 10]);
        queue(&mut t, 5, &[2; 10]);
        let mut out = BytesMut::new();
        let mut w = Wakers::default();
        t.take_mux(&mut out, 1 << 20, 4, &mut w);
        let got: Vec<(Cmd, u32, usize)> = frames(out)
            .into_iter()
            .map(|f| (f.cmd, f.stream_id, f.data.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Cmd::Syn, 3, 0),
                (Cmd::Syn, 5, 0),
                (Cmd::Psh, 3, 4),
                (Cmd::Psh, 5, 4),
                (Cmd::Psh, 3, 4),
                (Cmd::Psh, 5, 4),
                (Cmd::Psh, 3, 2),
                (Cmd::Psh, 5, 2),
            ]
        );
        assert!(!t.has_pending_send());
    }

    #[test]
    fn close_sends_remaining_data_then_fin_and_drops_the_entry() {
        let shared = Shared::new("s".into(), 1 << 20, Arc::new(Notify::new()));
        let mut t = shared.lock();
        t.insert(3, true);
        queue(&mut t, 3, b"bye");
        let s = t.streams.get_mut(&3).unwrap();
        s.local_close = true;
        s.handle_dropped = true;
        let mut out = BytesMut::new();
        t.take_mux(&mut out, 1 << 20, 1024, &mut Wakers::default());
        let got: Vec<Cmd> = frames(out).into_iter().map(|f| f.cmd).collect();
        assert_eq!(got, vec![Cmd::Syn, Cmd::Psh, Cmd::Fin]);
        assert!(t.streams.is_empty());
    }

    #[test]
    fn receive_budget_is_accounted_and_released() {
        let shared = Shared::new("s".into(), 1000, Arc::new(Notify::new()));
        let mut t = shared.lock();
        t.insert(3, true);
        t.deliver(3, Bytes::from(vec![0; 150]), 1000, &mut Wakers::default());
        // Unknown streams are ignored, as smux does.
        t.deliver(99, Bytes::from(vec![0; 150]), 1000, &mut Wakers::default());
        assert_eq!(t.recv_buffered, 150);
        t.remove(3);
        assert_eq!(t.recv_buffered, 0);
    }

    #[test]
    fn a_stream_stuck_past_its_budget_fails_alone_and_sends_a_fin() {
        let shared = Shared::new("s".into(), 1000, Arc::new(Notify::new()));
        let mut t = shared.lock();
        t.insert(3, true);
        t.insert(5, true);
        let mut w = Wakers::default();
        assert_eq!(t.deliver(3, Bytes::from(vec![0; 900]), 1000, &mut w), None);
        assert_eq!(t.deliver(5, Bytes::from(vec![0; 900]), 1000, &mut w), None);
        assert_eq!(t.deliver(3, Bytes::from(vec![0; 200]), 1000, &mut w), None);
        // Over the budget: failed only once it was not read for long.
        let opened = std::time::Instant::now();
        assert!(
            t.fail_stuck(1000, opened - std::time::Duration::from_secs(1), &mut w)
                .is_empty()
        );
        assert_eq!(
            t.fail_stuck(1000, opened + std::time::Duration::from_secs(1), &mut w),
            vec![3]
        );
        assert!(t.streams[&3].failure.is_some());
        assert!(t.streams[&5].failure.is_none());
        assert_eq!(t.recv_buffered, 900);
        let mut out = BytesMut::new();
        t.take_mux(&mut out, 1 << 20, 1024, &mut w);
        let got: Vec<(Cmd, u32)> = frames(out)
            .into_iter()
            .map(|f| (f.cmd, f.stream_id))
            .collect();
        assert_eq!(got, vec![(Cmd::Syn, 3), (Cmd::Syn, 5), (Cmd::Fin, 3)]);
        assert!(t.dead.is_none());
        // Four times the budget fails a stream at once, read or not.
        assert_eq!(
            t.deliver(5, Bytes::from(vec![0; 3200]), 1000, &mut w),
            Some(5)
        );
        assert!(t.streams[&5].failure.is_some());
    }

    #[test]
    fn fail_all_fails_every_stream() {
        let shared = Shared::new("s".into(), 100, Arc::new(Notify::new()));
        let mut t = shared.lock();
        t.insert(3, true);
        t.insert(5, true);
        let f = Failure {
            kind: io::ErrorKind::ConnectionAborted,
            message: "gone".into(),
        };
        t.fail_all(f, &mut Wakers::default());
        assert!(t.dead.is_some());
        assert!(t.streams.values().all(|s| s.failure.is_some()));
    }
}
