//! The queue between a data-channel task and the task that writes its WebSocket.
//!
//! Frames are queued without blocking the producer (so a slow socket never stops the producer
//! from reading acknowledgements), and the queued bytes are counted so the producer can stop
//! *generating new data* above a high-water mark ([`Outbox::has_room`]). What is queued beyond it
//! is bounded by what the reliable channel keeps unacknowledged plus one acknowledge per message
//! received, both bounded elsewhere. A frame lost with a dropped WebSocket is harmless: stream
//! messages are retransmitted and acknowledgements are re-sent for duplicates.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

/// Queued bytes above which [`Outbox::has_room`] says no.
pub const DEFAULT_HIGH_WATER: usize = 1 << 20;

/// What the writer task receives.
#[derive(Debug)]
pub enum Outgoing {
    /// One encoded AgentMessage, sent as a binary frame.
    Frame(Bytes),
    /// Close the WebSocket with this code and reason, then stop.
    Close(u16, String),
}

/// The producer's end.
#[derive(Debug, Clone)]
pub struct Outbox {
    /// Frames to the writer.
    tx: mpsc::UnboundedSender<Outgoing>,
    /// Bytes queued and not yet written.
    queued: Arc<AtomicUsize>,
    /// High-water mark for [`Self::has_room`] (the producer may move it, see
    /// [`Self::set_high_water`]).
    high_water: Arc<AtomicUsize>,
    /// Bytes ever queued: the position at which each frame ends.
    enqueued: Arc<AtomicU64>,
    /// Bytes ever written.
    written: Arc<AtomicU64>,
}

/// The writer task's end.
#[derive(Debug)]
pub struct OutboxReceiver {
    /// Frames from the producer.
    rx: mpsc::UnboundedReceiver<Outgoing>,
    /// Shared with [`Outbox`].
    queued: Arc<AtomicUsize>,
    /// Woken when the queue drains below half the high-water mark.
    drained: Arc<Notify>,
    /// High-water mark.
    high_water: Arc<AtomicUsize>,
    /// Bytes ever written.
    written: Arc<AtomicU64>,
}

/// A queue whose writer wakes `drained` when it has written enough for the producer to go on.
pub fn outbox(high_water: usize, drained: Arc<Notify>) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let high_water = Arc::new(AtomicUsize::new(high_water));
    let written = Arc::new(AtomicU64::new(0));
    (
        Outbox {
            tx,
            queued: queued.clone(),
            high_water: high_water.clone(),
            enqueued: Arc::new(AtomicU64::new(0)),
            written: written.clone(),
        },
        OutboxReceiver {
            rx,
            queued,
            drained,
            high_water,
            written,
        },
    )
}

impl Outbox {
    /// Queues a frame; returns false when the writer is gone (the frame is dropped).
    pub fn send(&self, frame: Bytes) -> bool {
        self.send_at(frame).is_some()
    }

    /// Queues a frame and returns its end position: the frame is on the wire once
    /// [`Self::written`] reaches it. `None` when the writer is gone (the frame is dropped).
    pub fn send_at(&self, frame: Bytes) -> Option<u64> {
        let len = frame.len();
        self.queued.fetch_add(len, Ordering::AcqRel);
        let end = self.enqueued.fetch_add(len as u64, Ordering::AcqRel) + len as u64;
        if self.tx.send(Outgoing::Frame(frame)).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return None;
        }
        Some(end)
    }

    /// Bytes the writer has put on the socket so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Moves the high-water mark (e.g. to follow the link's bandwidth-delay product).
    pub fn set_high_water(&self, high_water: usize) {
        self.high_water.store(high_water.max(1), Ordering::Release);
    }

    /// The high-water mark now.
    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Acquire)
    }

    /// Asks the writer to close the socket after what is queued.
    pub fn close(&self, code: u16, reason: &str) {
        let _ = self.tx.send(Outgoing::Close(code, reason.to_owned()));
    }

    /// Whether the producer may generate more data now.
    pub fn has_room(&self) -> bool {
        self.queued.load(Ordering::Acquire) < self.high_water()
    }

    /// Whether the writer has gone away.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

impl OutboxReceiver {
    /// The next thing to write; `None` when every producer is gone.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        self.rx.recv().await
    }

    /// Takes the next item if one is ready.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        self.rx.try_recv().ok()
    }

    /// Records that a frame of `len` bytes was written, waking the producer when the queue fell
    /// below half the high-water mark.
    pub fn written(&self, len: usize) {
        self.written.fetch_add(len as u64, Ordering::AcqRel);
        let before = self.queued.fetch_sub(len, Ordering::AcqRel);
        let after = before.saturating_sub(len);
        let half = self.high_water.load(Ordering::Acquire) / 2;
        if before >= half && after < half || after == 0 {
            self.drained.notify_one();
        }
    }
}
