//! Shutdown signals: SIGINT (Ctrl-C) and SIGTERM cancel the token the proxy's accept loop watches.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Installs the SIGINT and SIGTERM handlers now, and returns a future that cancels `stop` when
/// one arrives. The handlers exist as soon as this returns, so a signal sent right after the
/// listening line is printed is never lost (nor does it kill the process without draining).
pub fn on_signal(stop: CancellationToken) -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        match (int, term) {
            (Ok(mut int), Ok(mut term)) => {
                tokio::select! {
                    _ = int.recv() => info!("SIGINT received, shutting down"),
                    _ = term.recv() => info!("SIGTERM received, shutting down"),
                }
            }
            (Ok(mut int), Err(_)) => {
                int.recv().await;
                info!("SIGINT received, shutting down");
            }
            (Err(_), Ok(mut term)) => {
                term.recv().await;
                info!("SIGTERM received, shutting down");
            }
            // No handler could be installed: the default actions stay, and this never fires.
            (Err(_), Err(_)) => std::future::pending().await,
        }
        stop.cancel();
    }
}
