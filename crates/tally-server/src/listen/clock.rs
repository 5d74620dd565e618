//! A connection's deadlines: which phase it is in (reading a header, serving requests, idle
//! between them) and when that phase must end (spec/HTTP.md §10, `[limits]`).
//!
//! The phases are observed from the two places a server sees them without parsing HTTP
//! itself: the socket ([`Watched`] reports bytes arriving) and the service (a request's
//! header has been parsed when hyper calls it; its response is done when hyper drops the
//! response body, which holds a [`Busy`] guard).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The phase clock of one connection.
pub(crate) struct Clock {
    header: Duration,
    idle: Duration,
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    /// Requests whose responses are not done.
    busy: usize,
    /// Idle since the last response: the next byte starts a header.
    idle: bool,
    /// When the current phase must have ended; none while a request is in flight (its body
    /// has its own deadline, and the upstream may take its time).
    deadline: Option<Instant>,
}

impl Clock {
    /// A fresh connection: its first header is due `header` after the accept, whether or not
    /// any byte arrives.
    pub(crate) fn new(header: Duration, idle: Duration) -> Self {
        Clock {
            header,
            idle,
            state: Mutex::new(State {
                busy: 0,
                idle: false,
                deadline: Some(Instant::now() + header),
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few plain fields, always consistent: a panic elsewhere cannot have
        // left it half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes arrived. On an idle connection they begin a header, due `header` from now.
    fn bytes_read(&self) {
        let mut s = self.lock();
        if s.busy == 0 && s.idle {
            s.idle = false;
            s.deadline = Some(Instant::now() + self.header);
            drop(s);
            self.changed.notify_one();
        }
    }

    /// A request's header was parsed: no deadline until its response is done.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        let mut s = self.lock();
        s.busy += 1;
        s.idle = false;
        s.deadline = None;
        drop(s);
        self.changed.notify_one();
        Busy(self.clone())
    }

    fn end(&self) {
        let mut s = self.lock();
        s.busy = s.busy.saturating_sub(1);
        if s.busy == 0 {
            s.idle = true;
            s.deadline = Some(Instant::now() + self.idle);
        }
        drop(s);
        self.changed.notify_one();
    }

    /// The current phase's deadline.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.lock().deadline
    }

    /// Whether the current phase's deadline has passed.
    pub(crate) fn expired(&self) -> bool {
        self.lock().deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Resolves after the phase changed (at once if it changed since the last call).
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Held while a request is in flight, until hyper drops its response body.
pub(crate) struct Busy(Arc<Clock>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A socket that tells its [`Clock`] when bytes arrive.
pub(crate) struct Watched<S> {
    inner: S,
    clock: Arc<Clock>,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, clock: Arc<Clock>) -> Self {
        Watched { inner, clock }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.clock.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
