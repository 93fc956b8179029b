//! The engine seam (DESIGN.md decision 14): the one place where the engine-neutral proxy (the
//! listener, limits, [`super::Proxy`], stats, throttle) hands a connection to a wire protocol.
//!
//! [`Engine`] names the protocol a proxy speaks ([`super::ProxyConfig::engine`]); each of its
//! methods is a `match` that dispatches to the engine's own folder. Nothing else in `src/proxy/`
//! names an engine's module.
//!
//! A new engine is one more folder, `src/<engine>/`, plus one variant here. The folder provides:
//!
//! - `serve(inner, client, peer, pending, report)`: the whole life of one accepted client —
//!   the login bridge (give `pending` back once the client has authenticated locally), then the
//!   post-login relay — reporting through [`Report`]: [`Report::login_failed`] or
//!   [`Report::logged_in`] followed by [`Report::closed`]. The client has been told why a login
//!   failed, in the engine's own error form, before `serve` returns.
//! - `refusal(message)`: the bytes that refuse one client over `--max-connections` or
//!   `--max-pending-logins` in the engine's own error form, sent instead of any greeting (sans-IO;
//!   [`Engine::refuse`] writes them).
//! - its verifier of the local password, as one more field of [`LocalPassword`] derived in
//!   [`LocalPassword::new`], and the check of a client's proof against it in its own folder.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{info, warn};

use super::{Peer, Shared, Side, printable};
use crate::mysql;
use crate::mysql::proto::scramble::PasswordVerifier;
use crate::tunnel::BoxStream;

/// How long a refusal may take to write before the connection is dropped anyway.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The database wire protocol a proxy speaks to its clients and to the database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Engine {
    /// MySQL and MariaDB (RDS and Aurora MySQL), in [`crate::mysql`].
    #[default]
    Mysql,
}

impl Engine {
    /// Serves one accepted client: login, then relay, reported through `report`.
    pub(crate) async fn serve(
        self,
        inner: Arc<Shared>,
        client: BoxStream,
        peer: &Peer,
        pending: OwnedSemaphorePermit,
        report: Report<'_>,
    ) {
        match self {
            Engine::Mysql => mysql::serve(inner, client, peer, pending, report).await,
        }
    }

    /// Refuses one client over a limit with `message`, in the engine's own error form, in place
    /// of a greeting; gives up after a few seconds.
    pub(crate) async fn refuse(self, mut client: BoxStream, message: String) {
        let bytes = match self {
            Engine::Mysql => mysql::refusal(message),
        };
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, client.write_all(&bytes)).await;
    }
}

/// The optional local password (`--local-password`), kept only as each engine's verifier so the
/// clear password is never held. Redacted in Debug.
#[derive(Clone)]
pub struct LocalPassword {
    /// MySQL's stored double hashes; checked by the MySQL engine ([`crate::mysql`]).
    pub(crate) mysql: PasswordVerifier,
}

impl LocalPassword {
    /// Derives every engine's verifier from `password`; the password itself is not kept.
    pub fn new(password: &str) -> Self {
        LocalPassword {
            mysql: PasswordVerifier::new(password),
        }
    }
}

impl std::fmt::Debug for LocalPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalPassword(<redacted>)")
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

    /// The login succeeded as `db_user` on the database connection (thread, backend) `upstream_id`.
    pub(crate) fn logged_in(&self, db_user: &str, upstream_id: u32) {
        self.shared.stats.logins.fetch_add(1, Ordering::Relaxed);
        self.shared
            .stats
            .login_latency
            .observe(self.started.elapsed());
        info!(
            user = %printable(db_user),
            upstream_conn_id = upstream_id,
            login_ms = self.started.elapsed().as_millis() as u64,
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
