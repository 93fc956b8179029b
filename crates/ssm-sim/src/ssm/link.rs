//! A slow client → agent link for the gateway ([`crate::SimConfig::uplink_rate`]): frames are
//! serialised at a fixed rate in arrival order, nothing is dropped, and the gateway stops reading
//! the client's WebSocket while more than [`Uplink::buffer`] bytes wait, so the client's socket
//! writes block as they would on a slow TCP path.
//!
//! Pure: the owner passes the time in and arms a timer for [`Uplink::next_release`].

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// Smallest backlog the link holds before the gateway stops reading the WebSocket.
pub const MIN_LINK_BUFFER: usize = 64 * 1024;

/// How much link time the backlog may hold (beyond [`MIN_LINK_BUFFER`]): a router's queue.
pub const LINK_BUFFER_TIME: Duration = Duration::from_millis(100);

/// One direction of a rate-limited link.
#[derive(Debug)]
pub struct Uplink {
    /// Bytes per second.
    rate: u64,
    /// Frames and the instant their last byte has crossed the link.
    queue: VecDeque<(Instant, Bytes)>,
    /// Bytes in `queue`.
    queued: usize,
    /// When the link finishes what it already carries.
    busy_until: Option<Instant>,
}

impl Uplink {
    /// A link carrying `rate` bytes per second (at least 1).
    pub fn new(rate: u64) -> Self {
        Self {
            rate: rate.max(1),
            queue: VecDeque::new(),
            queued: 0,
            busy_until: None,
        }
    }

    /// The rate in bytes per second.
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The backlog above which [`Self::has_room`] says no.
    pub fn buffer(&self) -> usize {
        let time_worth = (u128::from(self.rate) * LINK_BUFFER_TIME.as_millis() / 1000) as usize;
        time_worth.max(MIN_LINK_BUFFER)
    }

    /// How long `len` bytes occupy the link.
    pub fn transfer_time(&self, len: usize) -> Duration {
        Duration::from_nanos((len as u128 * 1_000_000_000 / u128::from(self.rate)) as u64)
    }

    /// Whether the owner should take another frame from the client now.
    pub fn has_room(&self) -> bool {
        self.queued < self.buffer()
    }

    /// Bytes waiting.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Takes a frame in at `now`; it comes out once all earlier frames and its own bytes have
    /// crossed the link.
    pub fn push(&mut self, frame: Bytes, now: Instant) {
        let start = self.busy_until.filter(|b| *b > now).unwrap_or(now);
        let done = start + self.transfer_time(frame.len());
        self.busy_until = Some(done);
        self.queued += frame.len();
        self.queue.push_back((done, frame));
    }

    /// When the next frame is due.
    pub fn next_release(&self) -> Option<Instant> {
        self.queue.front().map(|(t, _)| *t)
    }

    /// Frames that have crossed the link by `now`, in order.
    pub fn pop_due(&mut self, now: Instant) -> Vec<Bytes> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|(t, _)| *t <= now) {
            if let Some((_, f)) = self.queue.pop_front() {
                self.queued -= f.len();
                out.push(f);
            }
        }
        out
    }
}

/// Parses a byte count or rate: `1048576`, `512KiB`, `4MiB`, `1GiB` (binary), `500kB`, `10MB`,
/// `1GB` (decimal), optionally followed by `/s`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let s = s.strip_suffix("/s").unwrap_or(s).trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a number of bytes such as 4MiB or 1048576"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (B, KiB, MiB, GiB, kB, MB, GB)"
            ));
        }
    };
    n.checked_mul(scale)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{text:?}: must be between 1 byte and 2^64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![7u8; len])
    }

    #[tokio::test]
    async fn frames_leave_at_the_link_rate_in_order() {
        // 1 MiB/s: 1024 bytes take ~977 µs.
        let mut link = Uplink::new(1 << 20);
        let t0 = Instant::now();
        link.push(frame(1024), t0);
        link.push(frame(2048), t0);
        assert_eq!(link.queued(), 3072);
        let first = link.next_release().unwrap();
        assert_eq!(first - t0, link.transfer_time(1024));
        assert!(link.pop_due(t0).is_empty());
        let out = link.pop_due(first);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), 1024);
        let second = link.next_release().unwrap();
        assert_eq!(second - t0, link.transfer_time(3072));
        assert_eq!(link.pop_due(second)[0].len(), 2048);
        assert_eq!(link.queued(), 0);
        assert!(link.next_release().is_none());
    }

    #[tokio::test]
    async fn an_idle_link_does_not_bank_time() {
        let mut link = Uplink::new(1000);
        let t0 = Instant::now();
        link.push(frame(10), t0);
        let _ = link.pop_due(t0 + Duration::from_secs(5));
        // Five seconds later the link is idle: the next frame starts now, not at t0 + 10 ms.
        let t1 = t0 + Duration::from_secs(5);
        link.push(frame(10), t1);
        assert_eq!(link.next_release().unwrap() - t1, Duration::from_millis(10));
    }

    #[tokio::test]
    async fn the_backlog_bound_stops_reading_and_nothing_is_dropped() {
        let mut link = Uplink::new(1 << 20);
        assert_eq!(link.buffer(), 104_857);
        let t0 = Instant::now();
        let mut pushed = 0;
        while link.has_room() {
            link.push(frame(32 * 1024), t0);
            pushed += 1;
        }
        assert_eq!(pushed, 4);
        let out = link.pop_due(t0 + Duration::from_secs(1));
        assert_eq!(out.len(), pushed);
        assert!(link.has_room());
        // Slow links still buffer a few frames.
        assert_eq!(Uplink::new(1000).buffer(), MIN_LINK_BUFFER);
    }

    #[test]
    fn byte_counts_parse_with_units() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("4MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("4MiB/s"), Ok(4 << 20));
        assert_eq!(parse_bytes("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("fast").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
        assert!(parse_bytes("99999999999GiB").is_err());
    }
}
