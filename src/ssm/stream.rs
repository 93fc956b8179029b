//! [`SsmStream`]: one byte stream through an SSM session, as `AsyncRead + AsyncWrite`.
//!
//! Writes are buffered in the stream table and sent by the session task; reads take what the
//! session task delivered. There is no half-close in smux v1 (spec §7.4): `poll_shutdown` sends
//! the buffered data and then a FIN, after which the agent closes its end of the destination
//! connection entirely. Reads still return what arrives until the agent's FIN.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::mux::{STREAM_SEND_BUFFER, Shared, Wakers};

/// A stream through an SSM session (a smux stream, or the session's one basic-mode stream).
#[derive(Debug)]
pub struct SsmStream {
    /// The session's table.
    shared: Arc<Shared>,
    /// The stream id (0 in basic mode).
    id: u32,
}

impl SsmStream {
    /// A handle for stream `id`, already registered in `shared`'s table.
    pub(crate) fn new(shared: Arc<Shared>, id: u32) -> Self {
        Self { shared, id }
    }

    /// The smux stream id (0 in basic mode).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The session this stream belongs to.
    pub fn session_id(&self) -> &str {
        &self.shared.session_id
    }

    fn closed_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::NotConnected,
            format!(
                "SSM stream {} of session {} is closed",
                self.id, self.shared.session_id
            ),
        )
    }
}

impl AsyncRead for SsmStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut t = this.shared.lock();
        let dead = t.dead.clone();
        let Some(s) = t.streams.get_mut(&this.id) else {
            return Poll::Ready(Err(this.closed_error()));
        };
        if s.recv.is_empty() {
            if let Some(f) = &s.failure {
                return Poll::Ready(Err(f.to_io()));
            }
            if s.remote_fin {
                return Poll::Ready(Ok(()));
            }
            if let Some(f) = dead {
                return Poll::Ready(Err(f.to_io()));
            }
            s.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut taken = 0;
        while buf.remaining() > 0 {
            let Some(front) = s.recv.front_mut() else {
                break;
            };
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            taken += n;
            if n == front.len() {
                s.recv.pop_front();
            } else {
                let _ = front.split_to(n);
            }
        }
        s.recv_len -= taken;
        s.last_read = Some(std::time::Instant::now());
        t.recv_buffered -= taken;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SsmStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let mut t = this.shared.lock();
        let dead = t.dead.clone();
        let Some(s) = t.streams.get_mut(&this.id) else {
            return Poll::Ready(Err(this.closed_error()));
        };
        if let Some(f) = s.failure.as_ref().or(dead.as_ref()) {
            return Poll::Ready(Err(f.to_io()));
        }
        if s.local_close {
            return Poll::Ready(Err(this.closed_error()));
        }
        if s.remote_fin {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the destination closed the connection (smux FIN from the SSM agent)",
            )));
        }
        let room = STREAM_SEND_BUFFER.saturating_sub(s.send.len());
        if room == 0 {
            s.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        s.send.extend_from_slice(&buf[..n]);
        let enqueue = !s.queued;
        s.queued = true;
        if enqueue {
            t.ready.push_back(this.id);
        }
        drop(t);
        if enqueue {
            this.shared.wake.notify_one();
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut t = this.shared.lock();
        let dead = t.dead.clone();
        let Some(s) = t.streams.get_mut(&this.id) else {
            return Poll::Ready(Ok(()));
        };
        if s.send.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if let Some(f) = s.failure.as_ref().or(dead.as_ref()) {
            return Poll::Ready(Err(f.to_io()));
        }
        s.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut t = this.shared.lock();
        let dead = t.dead.is_some();
        let Some(s) = t.streams.get_mut(&this.id) else {
            return Poll::Ready(Ok(()));
        };
        if s.fin_sent || s.failure.is_some() || dead {
            return Poll::Ready(Ok(()));
        }
        s.write_waker = Some(cx.waker().clone());
        if !s.local_close {
            s.local_close = true;
            let enqueue = !s.queued;
            s.queued = true;
            if enqueue {
                t.ready.push_back(this.id);
            }
            drop(t);
            this.shared.wake.notify_one();
        }
        Poll::Pending
    }
}

impl Drop for SsmStream {
    fn drop(&mut self) {
        let mut wakers = Wakers::default();
        let mut t = self.shared.lock();
        let dead = t.dead.is_some();
        let Some(s) = t.streams.get_mut(&self.id) else {
            return;
        };
        s.handle_dropped = true;
        // Unread data no longer counts against the budget.
        let unread = s.recv_len;
        s.recv.clear();
        s.recv_len = 0;
        t.recv_buffered -= unread;
        let s = t.streams.get_mut(&self.id).expect("looked up above");
        if dead || s.fin_sent {
            t.remove(self.id);
        } else {
            s.local_close = true;
            if !s.queued {
                s.queued = true;
                t.ready.push_back(self.id);
            }
        }
        wakers.push(None);
        drop(t);
        wakers.wake();
        self.shared.wake.notify_one();
    }
}
