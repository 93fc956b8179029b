//! The MySQL engine: everything of MySQL's wire protocol the proxy speaks (DESIGN.md decision 14).
//!
//! [`proto`] is the sans-IO part (packet framing, the connection-phase packets, OK/ERR, capability
//! rules, scrambles); the modules beside it are the I/O around it: [`framed`] reads and writes
//! whole packets during login, [`login`] bridges one client's login to the database, and
//! [`splice`] relays bytes after login. What every engine shares (the listener, limits, the
//! token and password sources, TLS, transports) lives outside this folder.

pub mod change_user;
pub mod framed;
pub mod login;
pub mod proto;
pub mod splice;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::proxy::Side;

/// Why one direction of a relayed connection ended: whose side failed, and how.
#[derive(Clone, Debug)]
pub struct DirError {
    /// Whose side failed.
    pub side: Side,
    /// What happened, for the log line.
    pub reason: String,
}

impl DirError {
    /// A failure of `side`.
    pub fn new(side: Side, reason: String) -> Self {
        DirError { side, reason }
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
