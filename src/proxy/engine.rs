//! The engine seam (DESIGN.md decision 14): the one place where the engine-neutral proxy (the
//! listener, limits, [`super::Proxy`], stats, throttle) hands a connection to a wire protocol.
//!
//! [`Engine`] (declared in the leaf [`super::config`], so engines can read the config without
//! importing this file) names the protocol a proxy speaks; each method here is a `match` that
//! dispatches to the engine's own folder. Nothing else in `src/proxy/` names an engine's module.
//! Engines import only the leaves: [`super::config`], [`super::shared`], [`super::listener`].
//!
//! A new engine is one more folder, `src/<engine>/`, plus one variant of [`Engine`] and one arm
//! in each `match` here. The folder provides:
//!
//! - `serve(inner, client, peer, pending, report)`: the whole life of one accepted client —
//!   the login bridge (give `pending` back once the client has authenticated locally), then the
//!   post-login relay — reporting through [`Report`]: [`Report::login_failed`] or
//!   [`Report::logged_in`] followed by [`Report::closed`]. The client has been told why a login
//!   failed, in the engine's own error form, before `serve` returns.
//! - `refusal(message)`: the bytes that refuse one client over `--max-connections` or
//!   `--max-pending-logins` in the engine's own error form, sent instead of any greeting (sans-IO;
//!   [`Engine::refuse`] writes them).
//! - its verifier of the local password, as one more field of [`LocalPassword`](super::config::LocalPassword) derived in
//!   [`LocalPassword::new`](super::config::LocalPassword::new), and the check of a client's proof against it in its own folder.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedSemaphorePermit;

use super::config::Engine;
use super::listener::Peer;
use super::shared::{Report, Shared};
use crate::tunnel::BoxStream;
use crate::{mysql, postgres};

/// How long a refusal may take to write before the connection is dropped anyway.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

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
            Engine::Postgres => postgres::serve(inner, client, peer, pending, report).await,
        }
    }

    /// Refuses one client over a limit with `message`, in the engine's own error form, in place
    /// of a greeting; gives up after a few seconds.
    pub(crate) async fn refuse(self, mut client: BoxStream, message: String) {
        let bytes = match self {
            Engine::Mysql => mysql::refusal(message),
            Engine::Postgres => postgres::refusal(message),
        };
        let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, client.write_all(&bytes)).await;
    }
}
