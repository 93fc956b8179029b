//! The PostgreSQL engine (issue 15; DESIGN.md decision 14: engines share the listener, transports,
//! token, TLS rules, discovery, config and metrics, and each owns only its connection-phase codec,
//! login bridge and post-login relay).
//!
//! [`proto`] is the sans-IO connection-phase codec; the modules beside it are the I/O around it:
//! [`login`] bridges one client's startup to an IAM login upstream, [`cancel`] keeps the cancel
//! keys handed to clients and forwards their `CancelRequest`s, and [`relay`] copies bytes after
//! `ReadyForQuery`. [`serve`] and [`refusal`] are what the engine seam
//! ([`crate::proxy::engine`]) dispatches to.

pub mod cancel;
pub mod keys;
pub mod login;
pub mod proto;
pub mod relay;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::OwnedSemaphorePermit;

use crate::proxy::listener::Peer;
use crate::proxy::shared::{Report, Shared};
use crate::tunnel::BoxStream;
use proto::{ErrorResponse, sqlstate};

/// One accepted PostgreSQL client: its startup (or its cancel request), the login bridge, then
/// the relay, reported through `report`.
pub(crate) async fn serve(
    inner: Arc<Shared>,
    client: BoxStream,
    peer: &Peer,
    pending: OwnedSemaphorePermit,
    report: Report<'_>,
) {
    let est = match login::run(&inner, client, peer, pending).await {
        Ok(login::Outcome::Established(est)) => est,
        Ok(login::Outcome::Cancel(request, mut client)) => {
            cancel::forward(&inner, request).await;
            // As a server does once the request is handled: close (inside TLS, close_notify).
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), client.shutdown()).await;
            return;
        }
        Err(f) => return report.login_failed(f.side, f.reason, &f.detail),
    };
    report.logged_in(&est.db_user, est.backend_pid, est.round_trips);
    let end = relay::run(
        inner.clone(),
        est.client,
        est.client_read_ahead,
        est.upstream,
        est.upstream_read_ahead,
    )
    .await;
    drop(est.cancel_key);
    report.closed(
        end.closed_by,
        end.bytes_up,
        end.bytes_down,
        end.error.as_deref(),
    );
}

/// The refusal of a client over a limit: `ErrorResponse` FATAL 53300 (too many connections), in
/// place of anything else. A client that sent `SSLRequest` first reads it as the server's
/// failure to start a backend, as libpq and the drivers do for a real server.
pub(crate) fn refusal(message: String) -> BytesMut {
    let mut out = BytesMut::new();
    // The proxy's own message holds no NUL, the only thing encoding refuses.
    let _ = ErrorResponse::fatal(sqlstate::TOO_MANY_CONNECTIONS, message).encode(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::frame::{MAX_LOGIN_MESSAGE_LEN, take_message};

    #[test]
    fn a_refusal_is_one_fatal_53300() {
        let mut bytes = refusal("rds-iam-proxy: too many connections".into());
        let m = take_message(&mut bytes, MAX_LOGIN_MESSAGE_LEN)
            .unwrap()
            .expect("a whole message");
        assert!(bytes.is_empty(), "one message only");
        assert_eq!(m.tag, b'E');
        let e = ErrorResponse::decode(&m.body).unwrap();
        assert_eq!(e.sqlstate().as_deref(), Some("53300"));
        assert_eq!(e.severity().as_deref(), Some("FATAL"));
        assert_eq!(
            e.message().as_deref(),
            Some("rds-iam-proxy: too many connections")
        );
    }
}
