//! What every engine's post-login relay shares, engine-neutral: how one direction's failure is
//! told ([`DirError`]), how the ends of the two directions become one outcome ([`settle`]: who
//! closed first, a half-close that may linger, a broken database leg that gets a moment to tell
//! the client), what a relayed connection reports ([`RelayEnd`]), how a direction sizes its
//! reads ([`next_buf_size`]), and how what a spool holds reaches the client (`deliver_all`).
//! Each engine owns its copy loops and what it tells a client in its
//! own wire format (`crate::mysql::splice`, `crate::postgres::relay`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::shared::{Shared, Side};
use crate::spool::Spool;

/// Largest read buffer of each direction, reached while data streams.
pub const COPY_BUF: usize = 64 * 1024;

/// Read buffer of an idle direction: idle connections cost little memory, busy ones grow to
/// [`COPY_BUF`] after a few full reads.
pub const IDLE_BUF: usize = 4 * 1024;

/// How long the second direction may run on after the first ended cleanly (half-close).
pub const HALF_CLOSE_LINGER: Duration = Duration::from_secs(300);

/// How long the reading half may take to notice a database leg that failed under a write, and
/// to write the proxy's own last word to a waiting client, before the connection closes.
pub const LAST_WORD_GRACE: Duration = Duration::from_secs(5);

/// The next buffer size after a read of `n` bytes into a buffer of `cap`: grow when the read
/// filled it, fall back to [`IDLE_BUF`] when the stream went quiet.
pub fn next_buf_size(cap: usize, n: usize) -> usize {
    if n >= cap {
        (cap * 4).min(COPY_BUF)
    } else if n < IDLE_BUF {
        IDLE_BUF
    } else {
        cap
    }
}

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

/// How a relayed connection ended.
#[derive(Debug)]
pub struct RelayEnd {
    /// Who ended it first.
    pub closed_by: Side,
    /// Bytes from the client to the database.
    pub bytes_up: u64,
    /// Bytes from the database to the client.
    pub bytes_down: u64,
    /// The error that ended it, if it was not a clean close.
    pub error: Option<String>,
}

/// Runs the two directions (`up`: client → database, `down`: database → client) until the
/// connection is over and says who closed it and why. The first direction to end decides: a
/// clean end lets the other finish (a half-close, for at most [`HALF_CLOSE_LINGER`]); the
/// database leg breaking under a write gives the reading half [`LAST_WORD_GRACE`] to meet the
/// same failure and tell a waiting client; any other error ends both. The database closing after
/// the client said goodbye (`client_quit`) is the client's doing.
pub async fn settle<U, D>(
    mut up: Pin<&mut U>,
    mut down: Pin<&mut D>,
    client_quit: &AtomicBool,
) -> (Side, Option<String>)
where
    U: Future<Output = Result<(), DirError>>,
    D: Future<Output = Result<(), DirError>>,
{
    tokio::select! {
        r = up.as_mut() => match r {
            Ok(()) => (Side::Client, linger(down).await),
            Err(DirError { side: Side::Upstream, reason }) => {
                let _ = tokio::time::timeout(LAST_WORD_GRACE, down).await;
                (Side::Upstream, Some(reason))
            }
            Err(DirError { side, reason }) => (side, Some(reason)),
        },
        r = down.as_mut() => match r {
            Ok(()) if client_quit.load(Ordering::Relaxed) => (Side::Client, linger(up).await),
            Ok(()) => (Side::Upstream, linger(up).await),
            Err(DirError { side, reason }) => (side, Some(reason)),
        },
    }
}

/// A spool that cannot give back what it holds (an I/O error, a tampered file) ends the connection.
pub fn spool_err(e: crate::spool::Error) -> DirError {
    DirError::new(
        Side::Proxy,
        format!("reading back what was held for the client: {e}"),
    )
}

/// Writes everything the spool still holds to the client and flushes it (before the proxy speaks
/// for the server, or ends), counting the bytes for the connection (`counter`) and the proxy.
pub(crate) async fn deliver_all<W: AsyncWrite + Unpin>(
    inner: &Shared,
    spool: &mut Spool,
    client_w: &mut W,
    counter: &AtomicU64,
) -> Result<(), DirError> {
    let write_err =
        |e: std::io::Error| DirError::new(Side::Client, format!("writing to the client: {e}"));
    loop {
        let front = spool.front().map_err(spool_err)?;
        if front.is_empty() {
            return client_w.flush().await.map_err(write_err);
        }
        client_w.write_all(&front).await.map_err(write_err)?;
        spool.consume(front.len());
        counter.fetch_add(front.len() as u64, Ordering::Relaxed);
        inner
            .stats
            .bytes_down
            .fetch_add(front.len() as u64, Ordering::Relaxed);
    }
}

/// Lets the remaining direction finish, for at most [`HALF_CLOSE_LINGER`].
async fn linger<F>(rest: Pin<&mut F>) -> Option<String>
where
    F: Future<Output = Result<(), DirError>>,
{
    match tokio::time::timeout(HALF_CLOSE_LINGER, rest).await {
        Ok(Ok(())) => None,
        Ok(Err(DirError { reason, .. })) => Some(reason),
        Err(_) => Some(format!(
            "the other side stayed open {}s after a half-close",
            HALF_CLOSE_LINGER.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_grow_while_streaming_and_shrink_when_idle() {
        assert_eq!(next_buf_size(IDLE_BUF, IDLE_BUF), 16 * 1024);
        assert_eq!(next_buf_size(16 * 1024, 16 * 1024), COPY_BUF);
        assert_eq!(next_buf_size(COPY_BUF, COPY_BUF), COPY_BUF);
        assert_eq!(next_buf_size(COPY_BUF, 20_000), COPY_BUF);
        assert_eq!(next_buf_size(COPY_BUF, 11), IDLE_BUF);
    }

    #[tokio::test]
    async fn the_first_end_decides_who_closed() {
        let quit = AtomicBool::new(false);
        // The client ends cleanly; the database's answer still finishes.
        let up = std::pin::pin!(async { Ok(()) });
        let down = std::pin::pin!(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(())
        });
        assert_eq!(settle(up, down, &quit).await, (Side::Client, None));
        // The database leg breaks under a write: the reader gets its moment, then it is over.
        let up = std::pin::pin!(async { Err(DirError::new(Side::Upstream, "gone".into())) });
        let down = std::pin::pin!(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(DirError::new(Side::Upstream, "reset".into()))
        });
        assert_eq!(
            settle(up, down, &quit).await,
            (Side::Upstream, Some("gone".to_owned()))
        );
        // The database closes after the client's goodbye: the client's doing.
        quit.store(true, Ordering::Relaxed);
        let up = std::pin::pin!(async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(())
        });
        let down = std::pin::pin!(async { Ok(()) });
        assert_eq!(settle(up, down, &quit).await, (Side::Client, None));
    }
}
