//! The MySQL engine: everything of MySQL's wire protocol the proxy speaks (DESIGN.md decision 14).
//!
//! [`proto`] is the sans-IO part (packet framing, the connection-phase packets, OK/ERR, capability
//! rules, scrambles); the modules beside it are the I/O around it: [`framed`] reads and writes
//! whole packets during login, [`login`] bridges one client's login to the database,
//! [`splice`] relays bytes after login, and [`compressed`] carries the splice's database leg
//! through protocol compression when it is on. [`serve`], [`refusal`] and the MySQL check of the local
//! password are what the engine seam ([`crate::proxy::engine`]) dispatches to. What every engine
//! shares (the listener, limits, the token and password sources, TLS, transports) lives outside
//! this folder.

pub mod change_user;
pub mod compressed;
pub mod framed;
pub mod login;
pub mod proto;
pub mod splice;

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use crate::proxy::config::LocalPassword;
use crate::proxy::listener::Peer;
use crate::proxy::relay::DirError;
use crate::proxy::shared::Report;
use crate::proxy::shared::{Shared, Side};
use crate::tunnel::BoxStream;
use proto::{ErrPacket, codes, packet};

/// One accepted MySQL client: the login bridge, then the splice, reported through `report`.
pub(crate) async fn serve(
    inner: Arc<Shared>,
    client: BoxStream,
    peer: &Peer,
    pending: OwnedSemaphorePermit,
    report: Report<'_>,
) {
    let est = match login::run(&inner, client, peer, pending).await {
        Ok(est) => est,
        Err(f) => return report.login_failed(f.side, f.reason, &f.detail),
    };
    report.logged_in(
        &est.session.db_user,
        est.session.connection_id,
        est.round_trips,
    );
    let end = splice::run(
        inner.clone(),
        est.client,
        est.client_read_ahead,
        est.upstream,
        est.upstream_read_ahead,
        est.session,
    )
    .await;
    report.closed(
        end.closed_by,
        end.bytes_up,
        end.bytes_down,
        end.error.as_deref(),
    );
}

/// The refusal of a client over a limit: ERR 1040 (too many connections) in place of the
/// greeting, as sequence 0.
pub(crate) fn refusal(message: String) -> BytesMut {
    let err = ErrPacket::before_greeting(codes::TOO_MANY_CONNECTIONS, message);
    let mut payload = BytesMut::new();
    err.encode(&mut payload);
    let mut out = BytesMut::new();
    packet::encode(0, &payload, &mut out);
    out
}

/// MySQL's check of the local password (`--local-password`).
impl LocalPassword {
    /// True when `response` is the scramble of the local password for `nonce` under the client's
    /// auth plugin `plugin_name` (clients without pluggable auth use the native scramble).
    pub(crate) fn verify(&self, plugin_name: Option<&[u8]>, nonce: &[u8], response: &[u8]) -> bool {
        self.mysql.verify(plugin_name, nonce, response)
    }
}

/// Writes `bytes` to the client and flushes them.
pub(crate) async fn write_client<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
) -> Result<(), DirError> {
    let e = |e: std::io::Error| DirError::new(Side::Client, format!("writing to the client: {e}"));
    w.write_all(bytes).await.map_err(e)?;
    w.flush().await.map_err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_one_err_1040_in_place_of_the_greeting() {
        let mut bytes = refusal("rds-iam-proxy: too many connections".into());
        let p = packet::decode(&mut bytes, packet::MAX_LOGIN_PAYLOAD)
            .unwrap()
            .expect("a whole packet");
        assert!(bytes.is_empty(), "one packet only");
        assert_eq!(p.seq, 0);
        let err = ErrPacket::decode(&p.payload).unwrap();
        assert_eq!(err.code, codes::TOO_MANY_CONNECTIONS);
        assert_eq!(&err.message[..], b"rds-iam-proxy: too many connections");
    }

    #[test]
    fn the_local_password_is_checked_from_a_native_scramble() {
        let local = LocalPassword::new("s3cret");
        let nonce = [7u8; 20];
        let good = proto::scramble::native_scramble("s3cret", &nonce);
        let bad = proto::scramble::native_scramble("guess", &nonce);
        assert!(local.verify(None, &nonce, &good));
        assert!(!local.verify(None, &nonce, &bad));
        assert_eq!(format!("{local:?}"), "LocalPassword(<redacted>)");
    }
}
