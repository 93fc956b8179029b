//! After `ReadyForQuery`: copy bytes both ways until both sides are done (DESIGN.md decision 6).
//!
//! Both directions are raw copies; each only follows where messages begin
//! ([`Boundaries`]: the type byte and length word of each, never the bodies), which costs nothing
//! per byte and is all the proxy needs to speak for the server:
//!
//! - When the database leg breaks (the tunnel dropped, the session was terminated, the server
//!   went away) at a message boundary, the client gets a FATAL `ErrorResponse` (SQLSTATE 08006)
//!   naming the hop, as a server that shuts down sends one, instead of a bare "server closed the
//!   connection unexpectedly". Never inside a message, and not after the client's `Terminate`
//!   or the server's own closing `ErrorResponse`.
//! - Over a transport shared with other connections (SSM) the database leg is drained into a
//!   [`Spool`] whatever the client does (DESIGN.md decision 11); when a client stops reading past
//!   the spool's bounds, what it is given ends at the last whole message and a FATAL
//!   `ErrorResponse` says why.
//!
//! Half-close is kept: EOF from one side shuts down writing to the other, and the connection
//! ends when both directions have ended. COPY in and out are ordinary messages here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::proto::backend::tag;
use super::proto::frame::Boundaries;
use super::proto::frontend::TAG_TERMINATE;
use super::proto::{ErrorResponse, sqlstate};
use crate::proxy::relay::{
    COPY_BUF, DirError, IDLE_BUF, LAST_WORD_GRACE, RelayEnd, deliver_all, next_buf_size, settle,
    spool_err,
};
use crate::proxy::shared::{Shared, Side};
use crate::spool::Spool;
use crate::tunnel::BoxStream;

/// Relays two logged-in legs until both directions end.
pub(crate) async fn run(
    inner: Arc<Shared>,
    client: BoxStream,
    client_read_ahead: BytesMut,
    upstream: BoxStream,
    upstream_read_ahead: BytesMut,
) -> RelayEnd {
    let (client_r, client_w) = tokio::io::split(client);
    let (upstream_r, upstream_w) = tokio::io::split(upstream);
    let bytes_up = AtomicU64::new(0);
    let bytes_down = AtomicU64::new(0);
    let client_quit = AtomicBool::new(false);
    let up = client_to_upstream(
        &inner,
        client_r,
        client_read_ahead,
        upstream_w,
        &bytes_up,
        &client_quit,
    );
    let down = upstream_to_client(
        &inner,
        upstream_r,
        upstream_read_ahead,
        client_w,
        &bytes_down,
        &client_quit,
    );
    tokio::pin!(up);
    tokio::pin!(down);
    let (closed_by, error) = settle(up, down, &client_quit).await;
    RelayEnd {
        closed_by,
        bytes_up: bytes_up.load(Ordering::Relaxed),
        bytes_down: bytes_down.load(Ordering::Relaxed),
        error,
    }
}

/// Reads what one read gives into a buffer sized by the recent reads; empty at the end of the
/// stream. A TLS peer that closes without close_notify has still ended its stream.
async fn read_chunk<R: AsyncRead + Unpin>(r: &mut R, want: &mut usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(*want);
    let n = match r.read_buf(&mut buf).await {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
        Err(e) => return Err(e),
    };
    *want = next_buf_size(*want, n);
    Ok(buf.freeze())
}

/// Client → database: a copy that notes the client's `Terminate`.
async fn client_to_upstream<R, W>(
    inner: &Shared,
    mut client_r: R,
    read_ahead: BytesMut,
    mut upstream_w: W,
    counter: &AtomicU64,
    client_quit: &AtomicBool,
) -> Result<(), DirError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let up_err =
        |e: std::io::Error| DirError::new(Side::Upstream, format!("writing to the database: {e}"));
    let mut frames = Boundaries::default();
    let mut want = IDLE_BUF;
    let mut chunk = read_ahead.freeze();
    loop {
        if chunk.is_empty() {
            chunk = read_chunk(&mut client_r, &mut want).await.map_err(|e| {
                DirError::new(Side::Client, format!("reading from the client: {e}"))
            })?;
            if chunk.is_empty() {
                let _ = upstream_w.shutdown().await;
                return Ok(());
            }
        }
        frames.feed(&chunk);
        if frames.last_tag() == Some(TAG_TERMINATE) {
            client_quit.store(true, Ordering::Relaxed);
        }
        upstream_w.write_all(&chunk).await.map_err(up_err)?;
        // A TLS writer whose transport said "not now" still holds records only a flush pushes.
        upstream_w.flush().await.map_err(up_err)?;
        let n = chunk.len() as u64;
        counter.fetch_add(n, Ordering::Relaxed);
        inner.stats.bytes_up.fetch_add(n, Ordering::Relaxed);
        chunk = Bytes::new();
    }
}

/// Where a connection whose client stopped reading is ended.
#[derive(Debug)]
struct StallEnd {
    /// What bound was reached.
    reason: String,
    /// Whether the client will have been given exactly whole messages (only then may the
    /// proxy's `ErrorResponse` follow).
    clean: bool,
}

/// Database → client, through a spool (see the module documentation).
async fn upstream_to_client<R, W>(
    inner: &Shared,
    mut upstream_r: R,
    read_ahead: BytesMut,
    mut client_w: W,
    counter: &AtomicU64,
    client_quit: &AtomicBool,
) -> Result<(), DirError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let write_err =
        |e: std::io::Error| DirError::new(Side::Client, format!("writing to the client: {e}"));
    let mut spool = Spool::new(inner.spool.clone());
    let hold = if inner.connector.shared() {
        u64::MAX
    } else {
        COPY_BUF as u64
    };
    let mut frames = Boundaries::default();
    if !read_ahead.is_empty() {
        frames.feed(&read_ahead);
        let _ = spool.push(read_ahead.freeze());
    }
    let mut stalled: Option<StallEnd> = None;
    let mut want = IDLE_BUF;
    let mut spilled = false;
    loop {
        let front = spool.front().map_err(spool_err)?;
        if front.is_empty()
            && let Some(end) = stalled.take()
        {
            return finish_stalled(inner, &mut client_w, end).await;
        }
        let read = stalled.is_none() && spool.len() < hold;
        tokio::select! {
            biased;
            w = client_w.write(&front), if !front.is_empty() => {
                let n = w.map_err(write_err)?;
                if n == 0 {
                    return Err(write_err(std::io::ErrorKind::WriteZero.into()));
                }
                spool.consume(n);
                counter.fetch_add(n as u64, Ordering::Relaxed);
                inner.stats.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
                if spool.is_empty() {
                    // A local TLS writer may hold records back until flushed.
                    client_w.flush().await.map_err(write_err)?;
                }
            }
            r = read_chunk(&mut upstream_r, &mut want), if read => {
                let chunk = match r {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        let e = format!("reading from the database: {e}");
                        deliver_all(inner, &mut spool, &mut client_w, counter).await?;
                        last_word(inner, &frames, client_quit, &mut client_w, &e).await;
                        return Err(DirError::new(Side::Upstream, e));
                    }
                };
                if chunk.is_empty() {
                    deliver_all(inner, &mut spool, &mut client_w, counter).await?;
                    let e = "the database closed the connection";
                    let told = last_word(inner, &frames, client_quit, &mut client_w, e).await;
                    let _ = client_w.shutdown().await;
                    return if told {
                        Err(DirError::new(Side::Upstream, e.to_owned()))
                    } else {
                        Ok(())
                    };
                }
                let boundary_before = frames.boundary();
                frames.feed(&chunk);
                match spool.push(chunk) {
                    Ok(()) => {
                        if !spilled && spool.on_disk() > 0 {
                            spilled = true;
                            tracing::info!(
                                held = spool.len(),
                                "the client is not reading its results; holding them encrypted on disk so the other connections on the tunnel go on"
                            );
                        }
                    }
                    Err(e) => {
                        inner.stats.stalled_ends.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "the client stopped reading for too long; ending this connection");
                        let clean = boundary_before >= spool.delivered();
                        spool.cap_delivery(boundary_before);
                        stalled = Some(StallEnd { reason: e.to_string(), clean });
                    }
                }
            }
        }
    }
}

/// The client has been given everything up to the last whole message: tell it why the rest is
/// gone, and end.
async fn finish_stalled<W: AsyncWrite + Unpin>(
    inner: &Shared,
    client_w: &mut W,
    end: StallEnd,
) -> Result<(), DirError> {
    if end.clean {
        let limits = &inner.spool.limits;
        let err = ErrorResponse::fatal(
            sqlstate::CONNECTION_FAILURE,
            format!(
                "rds-iam-proxy: this connection stopped reading its results while the database \
                 kept sending them, and the room the proxy keeps for a paused client ran out \
                 ({}; --stall-spool-memory {} bytes, --stall-spool-disk {} bytes). The rest of \
                 the answer was discarded and this connection is closed. Read results as they \
                 arrive, or raise those limits.",
                end.reason, limits.memory, limits.disk
            ),
        );
        write_last(client_w, &err).await;
    }
    let _ = client_w.shutdown().await;
    Err(DirError::new(
        Side::Client,
        format!("the client stopped reading; {}", end.reason),
    ))
}

/// When the database leg ended under the client without a word of the server's own, at a
/// message boundary, tells the client which hop was lost. Returns whether it did.
async fn last_word<W: AsyncWrite + Unpin>(
    inner: &Shared,
    frames: &Boundaries,
    client_quit: &AtomicBool,
    client_w: &mut W,
    detail: &str,
) -> bool {
    if client_quit.load(Ordering::Relaxed)
        || !frames.at_boundary()
        || frames.last_tag() == Some(tag::ERROR_RESPONSE)
    {
        return false;
    }
    let err = link_lost(
        &inner.config.endpoint(),
        &inner.connector.describe(),
        detail,
    );
    tracing::warn!("database leg lost; told the client with a FATAL ErrorResponse");
    write_last(client_w, &err).await;
    true
}

/// Writes the proxy's last `err` to the client, bounded in time.
async fn write_last<W: AsyncWrite + Unpin>(client_w: &mut W, err: &ErrorResponse) {
    let mut out = BytesMut::new();
    if err.encode(&mut out).is_ok() {
        let _ = tokio::time::timeout(LAST_WORD_GRACE, async {
            client_w.write_all(&out).await?;
            client_w.flush().await
        })
        .await;
    }
}

/// The FATAL for a session whose database leg was lost: which hop, what happened, what to do.
fn link_lost(endpoint: &str, via: &str, detail: &str) -> ErrorResponse {
    ErrorResponse::fatal(
        sqlstate::CONNECTION_FAILURE,
        format!(
            "rds-iam-proxy: lost the link to the database {endpoint} via {via} ({detail}). A \
             statement in progress may or may not have run; this connection is closed: \
             reconnect, and check before retrying a change."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_lost_names_the_hop_and_what_to_do() {
        let e = link_lost(
            "db.example:5432",
            "ssm i-0123 (session s-1)",
            "reading from the database: session s-1 terminated",
        );
        assert_eq!(e.sqlstate().as_deref(), Some("08006"));
        assert_eq!(e.severity().as_deref(), Some("FATAL"));
        let msg = e.message().unwrap().into_owned();
        for part in [
            "db.example:5432",
            "via ssm i-0123",
            "terminated",
            "may or may not have run",
            "reconnect",
        ] {
            assert!(msg.contains(part), "{part:?} missing: {msg}");
        }
    }

    #[test]
    fn read_buffers_grow_while_streaming_and_shrink_when_idle() {
        let mut want = IDLE_BUF;
        let data = vec![7u8; 200_000];
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut r = &data[..];
            let first = read_chunk(&mut r, &mut want).await.unwrap();
            assert_eq!(first.len(), IDLE_BUF);
            assert_eq!(want, 4 * IDLE_BUF);
            let mut tiny = &b"ab"[..];
            read_chunk(&mut tiny, &mut want).await.unwrap();
            assert_eq!(want, IDLE_BUF);
            let mut done = &b""[..];
            assert!(read_chunk(&mut done, &mut want).await.unwrap().is_empty());
        });
    }
}
