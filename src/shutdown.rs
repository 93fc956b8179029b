//! Shutdown signals: SIGINT (Ctrl-C) and SIGTERM cancel the token the proxy's accept loop watches.

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Waits for SIGINT or SIGTERM, then cancels `stop`.
pub async fn on_signal(stop: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => info!("SIGINT received, shutting down"),
                    _ = term.recv() => info!("SIGTERM received, shutting down"),
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
                info!("SIGINT received, shutting down");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    stop.cancel();
}
