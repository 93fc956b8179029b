//! Counters the proxy keeps about itself, read by logs, the health endpoints and `/metrics`.
//! Lock-free on the data path; the per-reason failure map is touched only when a login fails.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the login latency histogram buckets.
pub const LOGIN_LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus-style cumulative histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or under each bound of [`LOGIN_LATENCY_BUCKETS`].
    buckets: [AtomicU64; LOGIN_LATENCY_BUCKETS.len()],
    /// Number of observations.
    count: AtomicU64,
    /// Sum of observations, in microseconds.
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in LOGIN_LATENCY_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// `(upper bound, cumulative count)` per bucket, then the total count and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let buckets = LOGIN_LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| (*b, c.load(Ordering::Relaxed)))
            .collect();
        (
            buckets,
            self.count.load(Ordering::Relaxed),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

/// Bytes through the compressed database leg: what crossed it (frames, headers included) and
/// what that stood for (the ordinary packet stream), each way; and the logins that used it.
#[derive(Debug, Default)]
pub struct CompressionStats {
    /// Client → database: packet-stream bytes that went into compressed frames.
    pub up_uncompressed: AtomicU64,
    /// Client → database: compressed frames sent.
    pub up_compressed: AtomicU64,
    /// Database → client: compressed frames received.
    pub down_compressed: AtomicU64,
    /// Database → client: packet-stream bytes they held.
    pub down_uncompressed: AtomicU64,
    /// Logins whose database leg used zlib.
    pub zlib_logins: AtomicU64,
    /// Logins whose database leg used zstd.
    pub zstd_logins: AtomicU64,
}

/// Counters for logs, health and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections accepted since start.
    pub total: AtomicU64,
    /// Connections refused at `--max-connections` or `--max-pending-logins`.
    pub refused: AtomicU64,
    /// Of those, refused at `--max-pending-logins`.
    pub refused_pending: AtomicU64,
    /// Upstream handshakes the proxy completed itself (an access denied for the unused-connection
    /// user) because the client failed before its login went upstream.
    pub upstream_completed: AtomicU64,
    /// Logins completed.
    pub logins: AtomicU64,
    /// Logins that failed.
    pub login_failures: AtomicU64,
    /// Round trips to the database the completed logins took, added up (÷ `logins` = the mean;
    /// DESIGN.md decision 13).
    pub login_round_trips: AtomicU64,
    /// Bytes from clients to the database.
    pub bytes_up: AtomicU64,
    /// Bytes from the database to clients.
    pub bytes_down: AtomicU64,
    /// Connections ended because their client stopped reading past the spool's bounds.
    pub stalled_ends: AtomicU64,
    /// Protocol compression on the database leg (DESIGN.md decision 12), both directions.
    pub compression: CompressionStats,
    /// Time from accept to the client's login OK.
    pub login_latency: Histogram,
    /// Failed logins by reason label.
    failures_by_reason: Mutex<BTreeMap<&'static str, u64>>,
    /// The listener is accepting (false before start and while draining).
    pub serving: AtomicBool,
    /// The listener has started accepting at least once.
    pub started: AtomicBool,
}

impl Stats {
    /// Counts a failed login under `reason`.
    pub fn login_failed(&self, reason: &'static str) {
        self.login_failures.fetch_add(1, Ordering::Relaxed);
        // A poisoned lock only means a panic elsewhere mid-increment; the map is still usable.
        let mut map = self
            .failures_by_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *map.entry(reason).or_default() += 1;
    }

    /// Failed logins by reason.
    pub fn failures_by_reason(&self) -> BTreeMap<&'static str, u64> {
        self.failures_by_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
