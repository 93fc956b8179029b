//! Shutdown: SIGINT (Ctrl-C) and SIGTERM, `POST /quitquitquit` on the health address, and the
//! `shutdown` subcommand that sends it, all cancel the token the proxy's accept loop watches; the
//! proxy then drains (`--max-sigterm-delay`) and exits 0.
//!
//! `--min-sigterm-delay` keeps accepting new connections for a while after SIGTERM, for pods whose
//! application still connects while it shuts down after its sidecar; a second signal, or
//! `/quitquitquit`, ends that wait. `/quitquitquit` itself never waits: it is how a finished Job
//! or CI step says the work is done.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The token `/quitquitquit` cancels, once the serving process has registered it.
static QUIT: Mutex<Option<CancellationToken>> = Mutex::new(None);

/// Lets `POST /quitquitquit` on the health address cancel `stop` (the serving process calls this;
/// an embedding program that does not answers 404).
pub fn allow_quit_request(stop: CancellationToken) {
    *QUIT.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop);
}

/// Handles `POST /quitquitquit`: the HTTP status and body to answer.
pub fn quit_request() -> (u16, String) {
    let token = QUIT.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match token {
        Some(stop) => {
            stop.cancel();
            info!("POST /quitquitquit received, shutting down");
            (
                200,
                "stopping: draining connections, then exiting\n".to_owned(),
            )
        }
        None => (404, "this process does not stop on request\n".to_owned()),
    }
}

/// Installs the SIGINT and SIGTERM handlers now, and returns a future that cancels `stop` when
/// one arrives. The handlers exist as soon as this returns, so a signal sent right after the
/// listening line is printed is never lost (nor does it kill the process without draining).
pub fn on_signal(stop: CancellationToken) -> impl Future<Output = ()> + Send + 'static {
    on_signal_after(stop, Duration::ZERO)
}

/// [`on_signal`], but after SIGTERM keeps serving for `min_delay` first (`--min-sigterm-delay`);
/// SIGINT, a second SIGTERM, or `stop` being cancelled otherwise (e.g. `/quitquitquit`) ends the
/// wait.
pub fn on_signal_after(
    stop: CancellationToken,
    min_delay: Duration,
) -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt());
    let term = signal(SignalKind::terminate());
    async move {
        let (Ok(mut int), Ok(mut term)) = (int, term) else {
            // No handler could be installed: the default actions stay, and this never fires.
            return std::future::pending().await;
        };
        let got_term = tokio::select! {
            _ = int.recv() => false,
            _ = term.recv() => true,
            _ = stop.cancelled() => return,
        };
        // The token is cancelled before each line is logged, so nothing in logging can keep the
        // proxy from stopping.
        let why = if !got_term {
            "SIGINT received, shutting down"
        } else if min_delay.is_zero() {
            "SIGTERM received, shutting down"
        } else {
            info!(
                "SIGTERM received; still accepting new connections for {} (--min-sigterm-delay), \
                 then shutting down",
                humantime::format_duration(min_delay)
            );
            tokio::select! {
                _ = tokio::time::sleep(min_delay) => "--min-sigterm-delay over, shutting down",
                _ = int.recv() => "SIGINT received, shutting down now",
                _ = term.recv() => "second SIGTERM received, shutting down now",
                _ = stop.cancelled() => return,
            }
        };
        stop.cancel();
        info!("{why}");
    }
}

/// The `shutdown` subcommand: `POST /quitquitquit` to a running proxy's `--health-addr`.
pub async fn request_quit(addr: &str, timeout: Duration) -> Result<(), String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
            format!(
                "cannot reach the proxy's health address {addr}: {e}; is rds-iam-proxy running \
                 with --health-addr {addr}?"
            )
        })?;
        s.write_all(
            b"POST /quitquitquit HTTP/1.1\r\nHost: rds-iam-proxy\r\nContent-Length: 0\r\n\
              Connection: close\r\n\r\n",
        )
        .await
        .map_err(|e| format!("{addr}: sending POST /quitquitquit: {e}"))?;
        let mut answer = Vec::new();
        s.take(4096)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("{addr}: reading the answer to POST /quitquitquit: {e}"))?;
        let text = String::from_utf8_lossy(&answer);
        let status = text.split_whitespace().nth(1).unwrap_or("");
        if status == "200" {
            Ok(())
        } else {
            let line = text.lines().next().unwrap_or("no answer");
            Err(format!(
                "{addr} answered POST /quitquitquit with `{line}`: is it an rds-iam-proxy health \
                 address (0.1.0 or newer)?"
            ))
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{addr} did not answer POST /quitquitquit within {timeout:?}"))?
}
