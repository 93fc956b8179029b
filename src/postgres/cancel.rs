//! Cancel requests (psql's Ctrl-C, every driver's cancel): the client opens a NEW connection and
//! sends `CancelRequest` with the process id and secret key it was given in `BackendKeyData`.
//!
//! The proxy gives each client the server's real process id (so `PQbackendPID` and
//! `pg_backend_pid()` agree, and `pg_stat_activity` shows the same number) but a secret key it
//! minted itself, of the same length as the server's. [`CancelKeys`] maps (process id, minted
//! key) to the real key for as long as the session lives. A `CancelRequest` for a known pair is
//! forwarded upstream over a fresh connection through the same connector, `SSLRequest` and
//! verified TLS first (RDS requires TLS on every connection); an unknown pair is dropped without
//! opening anything, so a guessing client costs no tunnel stream and learns nothing, and the
//! server's real key never leaves the proxy.
//!
//! Why mint rather than hand the real key through: the proxy alone decides what reaches the
//! database (unknown keys stop here), and a future pool of warm connections (DESIGN.md decision
//! 13) can re-key a connection handed to another client without the old client's key still
//! cancelling its queries.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::keys::CancelKeys;
use super::login::open_upstream;
use super::proto::CancelRequest;
use crate::proxy::shared::Shared;

/// How long a forwarded cancel waits for the server to close the connection (it answers
/// nothing; closing says it has read the request).
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// Forwards a client's `request` upstream when it names a live session, with the server's key;
/// drops it otherwise. Nothing is ever answered to the client (PostgreSQL answers nothing
/// either: the client sees the cancelled query fail on its own connection).
pub(crate) async fn forward(inner: &Shared, request: CancelRequest) {
    let Some(real) = inner
        .engine_state::<CancelKeys>()
        .and_then(|k| k.real_key(request.process_id, &request.secret_key))
    else {
        tracing::info!(
            process_id = request.process_id,
            "cancel request for a key this proxy did not give out (or whose session ended); dropped"
        );
        return;
    };
    let forwarded = CancelRequest {
        process_id: request.process_id,
        secret_key: real,
    };
    let mut out = BytesMut::new();
    if forwarded.encode(&mut out).is_err() {
        return;
    }
    let mut up = match open_upstream(inner).await {
        Ok((up, _)) => up,
        Err(f) => {
            tracing::warn!(
                process_id = request.process_id,
                "could not forward a cancel request: {}",
                f.detail
            );
            return;
        }
    };
    if let Err(e) = up.send(&out).await {
        tracing::warn!(
            process_id = request.process_id,
            "could not forward a cancel request: {e}"
        );
        return;
    }
    // The server reads the request, signals the backend and closes.
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(CANCEL_WAIT, async {
        while matches!(up.io_mut().read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    tracing::info!(
        process_id = request.process_id,
        "cancel request forwarded to the database"
    );
}
