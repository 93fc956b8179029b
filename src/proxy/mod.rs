//! The engine-neutral proxy: accepts local clients, applies the connection limits and, for each
//! client, hands the connection to the configured [`Engine`] ([`engine`]: login bridge, then
//! relay; or the engine's own refusal when over a limit).
//!
//! The proxy sees a [`ProxyConfig`] and two injected seams — how to reach the database
//! ([`Connector`]) and where IAM tokens come from ([`TokenSource`]) — so every path runs offline in
//! tests. [`Proxy::serve`] takes an already bound listener and a cancellation token; `main` passes
//! signals, tests pass their own.

pub mod config;
pub mod engine;
pub mod listener;
pub mod password;
pub mod relay;
pub mod shared;
pub mod stats;
pub mod throttle;

/// Client-chosen text made fit for logs and messages (kept here for the callers that name it so).
pub use crate::text::printable;
pub use config::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PENDING_LOGINS, Engine,
    LocalPassword, ProxyConfig,
};
pub use listener::{Listener, Peer};
pub use shared::Side;
pub use stats::Stats;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::iam::TokenSource;
use crate::spool::SpoolBudget;
use crate::tls;
use crate::tunnel::{BoxStream, Connector};
use shared::{Report, Shared};

/// A configured proxy, ready to serve listeners.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Shared>,
}

impl Proxy {
    /// Builds a proxy; fails when the TLS material is unusable (unreadable `--ca-bundle`, an
    /// endpoint that is not a DNS name).
    pub fn new(
        config: ProxyConfig,
        connector: Arc<dyn Connector>,
        tokens: Arc<dyn TokenSource>,
    ) -> Result<Self, tls::Error> {
        Ok(Proxy {
            inner: Arc::new(Shared::new(config, connector, tokens)?),
        })
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// What is held for clients that stopped reading.
    pub fn spool(&self) -> &SpoolBudget {
        &self.inner.spool
    }

    /// Tokens minted so far by the token source.
    pub fn token_mints(&self) -> u64 {
        self.inner.tokens.mints()
    }

    /// The configuration.
    pub fn config(&self) -> &ProxyConfig {
        &self.inner.config
    }

    /// Where connections go, for the start-up line.
    pub fn destination(&self) -> String {
        format!(
            "{} via {}",
            self.inner.config.endpoint(),
            self.inner.connector.describe()
        )
    }

    /// Accepts clients on `listener` (a `TcpListener`, a [`listener::UnixSocket`] or both in a
    /// [`Listener`]) until `shutdown` is cancelled, then closes the listener (removing a Unix
    /// socket file), waits up to `shutdown_grace` for open connections and returns how many were
    /// still open.
    pub async fn serve(&self, listener: impl Into<Listener>, shutdown: CancellationToken) -> usize {
        let listener = listener.into();
        let limit = Arc::new(Semaphore::new(self.inner.config.max_connections));
        let pending = Arc::new(Semaphore::new(self.inner.config.max_pending_logins));
        let tracker = TaskTracker::new();
        let conns = CancellationToken::new();
        let mut next_id: u64 = 0;
        let mut backoff = Duration::from_millis(10);
        self.inner.stats.serving.store(true, Ordering::Relaxed);
        self.inner.stats.started.store(true, Ordering::Relaxed);
        let warming = tokio::spawn(warm_credentials(self.inner.tokens.clone()));
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => r,
            };
            let (stream, peer) = match accepted {
                Ok(x) => {
                    backoff = Duration::from_millis(10);
                    x
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(%e, "accept failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            next_id += 1;
            self.inner.stats.total.fetch_add(1, Ordering::Relaxed);
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                self.inner.stats.refused.fetch_add(1, Ordering::Relaxed);
                tracker.spawn(
                    self.inner
                        .config
                        .engine
                        .refuse(stream, busy_connections(&self.inner.config)),
                );
                continue;
            };
            // Before any database connection is opened for it: a flood of sockets that never
            // log in (probes, scanners, slow clients) holds at most this many.
            let Ok(pending_permit) = pending.clone().try_acquire_owned() else {
                self.inner.stats.refused.fetch_add(1, Ordering::Relaxed);
                self.inner
                    .stats
                    .refused_pending
                    .fetch_add(1, Ordering::Relaxed);
                warn!(%peer, "refused: too many logins in progress (--max-pending-logins)");
                tracker.spawn(
                    self.inner
                        .config
                        .engine
                        .refuse(stream, busy_logins(&self.inner.config)),
                );
                continue;
            };
            let inner = self.inner.clone();
            let stop = conns.child_token();
            let span = info_span!("conn", id = next_id, %peer);
            tracker.spawn(
                async move {
                    let _permit = permit;
                    tokio::select! {
                        _ = stop.cancelled() => info!("connection closed by proxy shutdown"),
                        _ = handle(inner, stream, peer, pending_permit) => {}
                    }
                }
                .instrument(span),
            );
        }
        self.inner.stats.serving.store(false, Ordering::Relaxed);
        warming.abort();
        drop(listener);
        tracker.close();
        let open = self.inner.stats.open.load(Ordering::Relaxed) as usize;
        if open > 0 {
            info!(open, grace = ?self.inner.config.shutdown_grace, "draining connections");
        }
        if tokio::time::timeout(self.inner.config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            let left = self.inner.stats.open.load(Ordering::Relaxed) as usize;
            conns.cancel();
            tracker.wait().await;
            return left;
        }
        0
    }
}

/// Looks AWS credentials up at start-up and again before kept ones expire, so that logins do not
/// wait for STS or SSO while the database's handshake clock runs. Failures are logged (the first
/// login reports them to its client too) and retried a minute later.
async fn warm_credentials(tokens: Arc<dyn crate::iam::TokenSource>) {
    loop {
        let next = match tokens.warm().await {
            Ok(None) => return,
            Ok(Some(at)) => at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default()
                .max(Duration::from_secs(30)),
            Err(e) => {
                warn!(
                    "AWS credentials are not available yet (logins will fail until they are): {e}"
                );
                Duration::from_secs(60)
            }
        };
        tokio::time::sleep(next).await;
    }
}

/// The refusal at `--max-connections`.
fn busy_connections(cfg: &ProxyConfig) -> String {
    format!(
        "rds-iam-proxy: too many connections (limit {}, see --max-connections)",
        cfg.max_connections
    )
}

/// The refusal at `--max-pending-logins`.
fn busy_logins(cfg: &ProxyConfig) -> String {
    format!(
        "rds-iam-proxy: too many logins in progress (limit {}, see --max-pending-logins); try \
         again in a moment. Health checks belong on the proxy's /readiness endpoint \
         (--health-addr), not on this port",
        cfg.max_pending_logins
    )
}

/// Counts a connection as open for as long as it lives, however its task ends (finished,
/// cancelled by shutdown, or panicked).
struct OpenGuard<'a>(&'a Stats);

impl<'a> OpenGuard<'a> {
    fn new(stats: &'a Stats) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(stats)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One client connection: handed to the engine (login, then relay), counted as open meanwhile.
async fn handle(
    inner: Arc<Shared>,
    stream: BoxStream,
    peer: Peer,
    pending: tokio::sync::OwnedSemaphorePermit,
) {
    let _open = OpenGuard::new(&inner.stats);
    let report = Report::new(&inner, Instant::now());
    debug!("accepted");
    inner
        .config
        .engine
        .serve(inner.clone(), stream, &peer, pending, report)
        .await;
}
