//! The gateway's fault injector: a per-direction delay line that can drop, duplicate, reorder,
//! delay and corrupt AgentMessages, plus the injected one-way latency.
//!
//! Only binary AgentMessage frames pass through here. Corruption flips a byte of the payload
//! digest and is applied only toward the client: the real agent never checks digests, so a
//! corrupted message toward it would be accepted as data (spec §3.4).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// Fault probabilities (0.0 – 1.0), applied per message in both directions.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// Drop a message.
    pub drop: f64,
    /// Deliver a message twice.
    pub duplicate: f64,
    /// Hold a message back a little so later ones overtake it.
    pub reorder: f64,
    /// Delay a message by up to [`Self::delay_max`].
    pub delay: f64,
    /// Largest random extra delay.
    pub delay_max: Duration,
    /// Drop an `acknowledge` (in addition to [`Self::drop`]).
    pub drop_acks: f64,
    /// Corrupt the digest of a message toward the client.
    pub corrupt_digest: f64,
    /// RNG seed (0: random).
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            drop: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            delay: 0.0,
            delay_max: Duration::from_millis(20),
            drop_acks: 0.0,
            corrupt_digest: 0.0,
            seed: 0,
        }
    }
}

impl Faults {
    /// Whether any fault is configured.
    pub fn any(&self) -> bool {
        self.drop > 0.0
            || self.duplicate > 0.0
            || self.reorder > 0.0
            || self.delay > 0.0
            || self.drop_acks > 0.0
            || self.corrupt_digest > 0.0
    }

    /// The same probability `p` of loss, duplication and reordering.
    pub fn lossy(p: f64) -> Self {
        Self {
            drop: p,
            duplicate: p,
            reorder: p,
            ..Self::default()
        }
    }
}

/// What happened to one message, for the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// It was dropped.
    pub dropped: bool,
    /// It was duplicated.
    pub duplicated: bool,
}

/// One direction's delay line.
#[derive(Debug)]
pub struct FaultLine {
    /// Probabilities.
    faults: Faults,
    /// Fixed one-way latency.
    latency: Duration,
    /// Whether this direction goes toward the client (corruption applies).
    toward_client: bool,
    /// Randomness.
    rng: StdRng,
    /// Frames waiting for their release time; the counter keeps equal times in order.
    queue: BTreeMap<(Instant, u64), Bytes>,
    /// Insertion counter.
    counter: u64,
    /// Release time of the last frame scheduled without extra delay (keeps FIFO order).
    last_release: Option<Instant>,
}

impl FaultLine {
    /// A line with `faults` and a fixed `latency`.
    pub fn new(faults: Faults, latency: Duration, toward_client: bool) -> Self {
        let rng = if faults.seed == 0 {
            StdRng::from_rng(&mut rand::rng())
        } else {
            StdRng::seed_from_u64(faults.seed.wrapping_add(u64::from(toward_client)))
        };
        Self {
            faults,
            latency,
            toward_client,
            rng,
            queue: BTreeMap::new(),
            counter: 0,
            last_release: None,
        }
    }

    /// Whether frames pass straight through (no faults, no latency).
    pub fn is_transparent(&self) -> bool {
        !self.faults.any() && self.latency.is_zero()
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    /// Takes a frame in at `now`.
    pub fn push(&mut self, frame: Bytes, now: Instant) -> Verdict {
        let mut verdict = Verdict::default();
        let is_ack = frame.get(4..15) == Some(b"acknowledge".as_slice());
        if frame.get(4..18) == Some(b"channel_closed".as_slice()) {
            // Never retransmitted by anyone: the service delivers it as is.
            let at = self.last_release.unwrap_or(now).max(now + self.latency);
            self.counter += 1;
            self.queue.insert((at, self.counter), frame);
            return verdict;
        }
        if (is_ack && self.chance(self.faults.drop_acks)) || self.chance(self.faults.drop) {
            verdict.dropped = true;
            return verdict;
        }
        let frame =
            if self.toward_client && frame.len() > 120 && self.chance(self.faults.corrupt_digest) {
                let mut b = BytesMut::from(&frame[..]);
                b[80] ^= 0xff;
                b.freeze()
            } else {
                frame
            };
        let copies = if self.chance(self.faults.duplicate) {
            verdict.duplicated = true;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = now + self.latency;
            let mut extra = Duration::ZERO;
            if self.chance(self.faults.reorder) {
                extra += Duration::from_micros(self.rng.random_range(500..5000));
            }
            if self.chance(self.faults.delay) {
                let max = self.faults.delay_max.as_micros().max(1) as u64;
                extra += Duration::from_micros(self.rng.random_range(0..max));
            }
            if extra.is_zero() {
                // FIFO with everything else scheduled without extra delay.
                if let Some(last) = self.last_release
                    && last > at
                {
                    at = last;
                }
                self.last_release = Some(at);
            } else {
                at += extra;
            }
            self.counter += 1;
            self.queue.insert((at, self.counter), frame.clone());
        }
        verdict
    }

    /// When the next frame is due.
    pub fn next_release(&self) -> Option<Instant> {
        self.queue.first_key_value().map(|((t, _), _)| *t)
    }

    /// Frames due at `now`, in release order.
    pub fn pop_due(&mut self, now: Instant) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            out.push(entry.remove());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn transparent_line_is_fifo_and_immediate() {
        let mut line = FaultLine::new(Faults::default(), Duration::ZERO, true);
        let now = Instant::now();
        for i in 0..10u8 {
            line.push(Bytes::from(vec![i]), now);
        }
        let out = line.pop_due(now);
        assert_eq!(out.len(), 10);
        assert!(out.iter().enumerate().all(|(i, b)| b[0] == i as u8));
    }

    #[tokio::test]
    async fn drop_everything() {
        let mut line = FaultLine::new(
            Faults {
                drop: 1.0,
                seed: 7,
                ..Faults::default()
            },
            Duration::ZERO,
            false,
        );
        let now = Instant::now();
        assert!(line.push(Bytes::from_static(b"x"), now).dropped);
        assert!(line.pop_due(now).is_empty());
    }
}
