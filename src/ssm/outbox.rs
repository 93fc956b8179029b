//! The queue between a data-channel task and the task that writes its WebSocket.
//!
//! Frames are queued without blocking the producer (so a slow socket never stops the producer
//! from reading acknowledgements), and the queued bytes are counted so the producer can stop
//! *generating new data* above a high-water mark ([`Outbox::has_room`]). What is queued beyond it
//! is bounded by what the reliable channel keeps unacknowledged plus one acknowledge per message
//! received, both bounded elsewhere. A frame lost with a dropped WebSocket is harmless: stream
//! messages are retransmitted and acknowledgements are re-sent for duplicates.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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
    /// High-water mark for [`Self::has_room`].
    high_water: usize,
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
    high_water: usize,
}

/// A queue whose writer wakes `drained` when it has written enough for the producer to go on.
pub fn outbox(high_water: usize, drained: Arc<Notify>) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Outbox {
            tx,
            queued: queued.clone(),
            high_water,
        },
        OutboxReceiver {
            rx,
            queued,
            drained,
            high_water,
        },
    )
}

impl Outbox {
    /// Queues a frame; returns false when the writer is gone (the frame is dropped).
    pub fn send(&self, frame: Bytes) -> bool {
        let len = frame.len();
        self.queued.fetch_add(len, Ordering::AcqRel);
        if self.tx.send(Outgoing::Frame(frame)).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Asks the writer to close the socket after what is queued.
    pub fn close(&self, code: u16, reason: &str) {
        let _ = self.tx.send(Outgoing::Close(code, reason.to_owned()));
    }

    /// Whether the producer may generate more data now.
    pub fn has_room(&self) -> bool {
        self.queued.load(Ordering::Acquire) < self.high_water
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
        let before = self.queued.fetch_sub(len, Ordering::AcqRel);
        let after = before.saturating_sub(len);
        if before >= self.high_water / 2 && after < self.high_water / 2 || after == 0 {
            self.drained.notify_one();
        }
    }
}
