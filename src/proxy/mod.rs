//! The engine-neutral proxy: accepts local clients, applies the connection limits and, for each
//! client, hands the connection to the configured [`Engine`] ([`engine`]: login bridge, then
//! relay; or the engine's own refusal when over a limit).
//!
//! The proxy sees a [`ProxyConfig`] and two injected seams — how to reach the database
//! ([`Connector`]) and where IAM tokens come from ([`TokenSource`]) — so every path runs offline in
//! tests. [`Proxy::serve`] takes an already bound listener and a cancellation token; `main` passes
//! signals, tests pass their own.

pub mod engine;
pub mod listener;
pub mod password;
pub mod stats;
pub mod throttle;

/// Client-chosen text made fit for logs and messages (kept here for the callers that name it so).
pub use crate::text::printable;
pub use engine::{Engine, LocalPassword};
pub use listener::{Listener, Peer};
pub use stats::Stats;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::sync::Semaphore;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::iam::{TokenRequest, TokenSource};
use crate::spool::{SpoolBudget, SpoolLimits};
use crate::tls::{self, CaSource};
use crate::tunnel::{BoxStream, Connector};

/// Which party a failure is attributed to, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The local MySQL client.
    Client,
    /// The database or the path to it.
    Upstream,
    /// The proxy itself or its AWS credentials.
    Proxy,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
            Side::Proxy => "proxy",
        })
    }
}

/// Default time allowed for each step of a login (a packet from either side, a TLS handshake).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Default cap on simultaneous client connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Default cap on logins in progress that have not yet authenticated locally (each holds a
/// database connection that has greeted but not logged in).
pub const DEFAULT_MAX_PENDING_LOGINS: usize = 32;

/// What the engine needs to know; built from the command line by `config`.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// The wire protocol spoken to clients and the database.
    pub engine: Engine,
    /// The RDS endpoint host: the name the token is signed for and TLS verifies.
    pub endpoint_host: String,
    /// The RDS endpoint port (signed into the token).
    pub endpoint_port: u16,
    /// The region the token is signed for.
    pub region: String,
    /// Log every client in as this database user instead of the name it sent.
    pub db_user: Option<String>,
    /// The CAs trusted for the upstream TLS leg.
    pub ca_source: CaSource,
    /// Offer TLS to local clients with an ephemeral self-signed certificate.
    pub local_tls: bool,
    /// Send the token in the first upstream packet instead of answering the auth switch.
    pub direct_auth: bool,
    /// Time allowed for each login step.
    pub handshake_timeout: Duration,
    /// Cap on simultaneous client connections; more are refused (MySQL: ERR 1040).
    pub max_connections: usize,
    /// Cap on logins not yet authenticated locally; more are refused at once (MySQL: ERR 1040),
    /// before any database connection is opened for them.
    pub max_pending_logins: usize,
    /// How long open connections may finish after shutdown is requested.
    pub shutdown_grace: Duration,
    /// Require this local password from clients (checked from its scramble, never in clear).
    pub local_password: Option<LocalPassword>,
    /// Bounds on what is held for clients that stop reading over a shared transport.
    pub spool: SpoolLimits,
    /// Where spool files go (the system's temporary directory when `None`).
    pub spool_dir: Option<std::path::PathBuf>,
    /// Log in upstream with this user name and password (`--secret`) instead of IAM tokens.
    pub upstream_password: Option<Arc<dyn password::PasswordSource>>,
}

impl ProxyConfig {
    /// A config with defaults for everything but the endpoint and region.
    pub fn new(
        endpoint_host: impl Into<String>,
        endpoint_port: u16,
        region: impl Into<String>,
    ) -> Self {
        ProxyConfig {
            engine: Engine::default(),
            endpoint_host: endpoint_host.into(),
            endpoint_port,
            region: region.into(),
            db_user: None,
            ca_source: CaSource::Embedded,
            local_tls: false,
            direct_auth: false,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_pending_logins: DEFAULT_MAX_PENDING_LOGINS,
            shutdown_grace: Duration::ZERO,
            local_password: None,
            spool: SpoolLimits::DEFAULT,
            spool_dir: None,
            upstream_password: None,
        }
    }

    /// What to ask the token source for to log `user` in.
    pub fn token_request(&self, user: &str) -> TokenRequest {
        TokenRequest {
            host: self.endpoint_host.clone(),
            port: self.endpoint_port,
            user: user.to_owned(),
            region: self.region.clone(),
        }
    }

    /// `host:port` of the endpoint, for messages.
    pub fn endpoint(&self) -> String {
        format!("{}:{}", self.endpoint_host, self.endpoint_port)
    }
}

/// What every connection of one proxy shares: its configuration, seams, TLS material, counters
/// and budgets. Handed to the engine for each accepted connection.
pub(crate) struct Shared {
    /// The configuration.
    pub config: ProxyConfig,
    /// How to reach the database.
    pub connector: Arc<dyn Connector>,
    /// Where tokens come from.
    pub tokens: Arc<dyn TokenSource>,
    /// TLS client for the upstream leg.
    pub upstream_tls: TlsConnector,
    /// TLS server for local clients, when enabled.
    pub local_tls: Option<TlsAcceptor>,
    /// The endpoint name as rustls sees it.
    pub server_name: ServerName<'static>,
    /// Counters.
    pub stats: Stats,
    /// What connections whose clients stopped reading may hold, across the process.
    pub spool: Arc<SpoolBudget>,
    /// Wrong local passwords per peer, and their lockouts.
    pub password_throttle: throttle::PasswordThrottle,
    /// The throwaway TLS server that answers clients asking for TLS when `--local-tls` is off
    /// (made on first use; `None` inside when it could not be made).
    refusal_tls: std::sync::OnceLock<Option<TlsAcceptor>>,
}

impl Shared {
    /// The TLS server used only to deliver an ERR to a client that asked for TLS although none
    /// was offered (see `login`).
    pub(crate) fn refusal_tls(&self) -> Option<&TlsAcceptor> {
        self.refusal_tls
            .get_or_init(|| match tls::local_server_config() {
                Ok(config) => Some(TlsAcceptor::from(config)),
                Err(e) => {
                    warn!(%e, "cannot make the certificate used to answer TLS clients");
                    None
                }
            })
            .as_ref()
    }
}

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
        let upstream_tls = TlsConnector::from(tls::upstream_client_config(&config.ca_source)?);
        let local_tls = if config.local_tls {
            Some(TlsAcceptor::from(tls::local_server_config()?))
        } else {
            None
        };
        let server_name = tls::server_name(&config.endpoint_host)?;
        let spool = Arc::new(SpoolBudget::new(
            config.spool,
            config.spool_dir.clone().unwrap_or_else(std::env::temp_dir),
        ));
        Ok(Proxy {
            inner: Arc::new(Shared {
                config,
                connector,
                tokens,
                upstream_tls,
                local_tls,
                server_name,
                stats: Stats::default(),
                spool,
                password_throttle: throttle::PasswordThrottle::default(),
                refusal_tls: std::sync::OnceLock::new(),
            }),
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
    let report = engine::Report::new(&inner, Instant::now());
    debug!("accepted");
    inner
        .config
        .engine
        .serve(inner.clone(), stream, &peer, pending, report)
        .await;
}
