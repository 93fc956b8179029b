//! What every connection of one proxy shares ([`Shared`]: configuration, seams, TLS material,
//! counters, budgets) and how an engine reports a connection's outcome ([`Report`], [`Side`]).
//! Engines take these from here; the dispatch to an engine ([`super::engine`]) and the accept loop
//! ([`super::Proxy`]) sit above, so no engine imports the file that names it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::{info, warn};

use super::config::ProxyConfig;
use super::stats::Stats;
use super::throttle;
use crate::iam::TokenSource;
use crate::spool::SpoolBudget;
use crate::text::printable;
use crate::tls;
use crate::tunnel::Connector;

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
    /// The endpoint asked for a token it had been sent in the first login packet: later logins
    /// wait for its switch to `mysql_clear_password` (one round trip more).
    token_first_declined: std::sync::atomic::AtomicBool,
    /// The throwaway TLS server that answers clients asking for TLS when `--local-tls` is off
    /// (made on first use; `None` inside when it could not be made).
    refusal_tls: std::sync::OnceLock<Option<TlsAcceptor>>,
    /// What the engine keeps for the whole proxy, beyond one connection (PostgreSQL: the cancel
    /// keys it handed out), made on first use; see [`Shared::engine_state`].
    engine_state: std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>,
}

impl Shared {
    /// Builds what one proxy's connections share; fails when the TLS material is unusable
    /// (unreadable `--ca-bundle`, an endpoint that is not a DNS name).
    pub(crate) fn new(
        config: ProxyConfig,
        connector: Arc<dyn Connector>,
        tokens: Arc<dyn TokenSource>,
    ) -> Result<Self, tls::Error> {
        let upstream_tls = TlsConnector::from(tls::upstream_client_config(&config.ca_source)?);
        let local_tls = if config.local_tls {
            let mut server = (*tls::local_server_config()?).clone();
            server.alpn_protocols = config.engine.alpn().iter().map(|p| p.to_vec()).collect();
            Some(TlsAcceptor::from(Arc::new(server)))
        } else {
            None
        };
        let server_name = tls::server_name(&config.endpoint_host)?;
        let spool = Arc::new(SpoolBudget::new(
            config.spool,
            config.spool_dir.clone().unwrap_or_else(std::env::temp_dir),
        ));
        Ok(Shared {
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
            engine_state: std::sync::OnceLock::new(),
            token_first_declined: Default::default(),
        })
    }

    /// Whether the endpoint declined the token in the first login packet.
    pub(crate) fn token_first_declined(&self) -> bool {
        self.token_first_declined.load(Ordering::Relaxed)
    }

    /// Remembers that the endpoint declined the token in the first login packet (logged once).
    pub(crate) fn decline_token_first(&self) {
        if !self.token_first_declined.swap(true, Ordering::Relaxed) {
            info!(
                endpoint = %self.config.endpoint(),
                "the database asked again for the token sent in the first login packet; later \
                 logins wait for its request instead (one round trip more)"
            );
        }
    }

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

impl Shared {
    /// The proxy-wide state of this proxy's engine, of the engine's own type `T`, made on first
    /// use. A proxy speaks one engine, so one type only is ever asked for; should another be, the
    /// answer is `None` (no state is shared by mistake).
    pub(crate) fn engine_state<T: Default + Send + Sync + 'static>(&self) -> Option<&T> {
        self.engine_state
            .get_or_init(|| Box::new(T::default()))
            .downcast_ref::<T>()
    }
}

/// Where an engine reports how one connection went: counters and the connection's log lines,
/// the same for every engine.
pub(crate) struct Report<'a> {
    /// The counters.
    shared: &'a Shared,
    /// When the connection was accepted.
    started: Instant,
}

impl<'a> Report<'a> {
    /// A report for a connection accepted at `started`.
    pub(crate) fn new(shared: &'a Shared, started: Instant) -> Self {
        Report { shared, started }
    }

    /// The login failed: `side` is to blame, `reason` is the metrics label, `detail` the log text.
    pub(crate) fn login_failed(&self, side: Side, reason: &'static str, detail: &str) {
        self.shared.stats.login_failed(reason);
        warn!(
            side = %side,
            reason = reason,
            "login failed: {}",
            printable(detail)
        );
    }

    /// The login succeeded as `db_user` on the database connection (thread, backend)
    /// `upstream_id`, after `round_trips` round trips to the database.
    pub(crate) fn logged_in(&self, db_user: &str, upstream_id: u32, round_trips: u32) {
        self.shared.stats.logins.fetch_add(1, Ordering::Relaxed);
        self.shared
            .stats
            .login_round_trips
            .fetch_add(u64::from(round_trips), Ordering::Relaxed);
        self.shared
            .stats
            .login_latency
            .observe(self.started.elapsed());
        info!(
            user = %printable(db_user),
            upstream_conn_id = upstream_id,
            login_ms = self.started.elapsed().as_millis() as u64,
            round_trips,
            "logged in"
        );
    }

    /// The relay ended: who closed first, bytes each way, and the error if it was not clean.
    pub(crate) fn closed(
        &self,
        closed_by: Side,
        bytes_up: u64,
        bytes_down: u64,
        error: Option<&str>,
    ) {
        let secs = self.started.elapsed().as_secs();
        match error {
            None => info!(
                closed_by = %closed_by,
                bytes_up,
                bytes_down,
                secs,
                "connection closed"
            ),
            Some(e) => warn!(
                closed_by = %closed_by,
                bytes_up,
                bytes_down,
                secs,
                "connection ended with error: {e}"
            ),
        }
    }
}
