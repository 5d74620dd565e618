//! The gateway's HTTP/1 accept loop, hardened against clients that hold connections open
//! without finishing a request (spec/HTTP.md §10, "Connection limits"; issue 8 item 2).
//!
//! `axum::serve` keeps a connection for as long as the client likes: a half-sent header, an
//! idle keep-alive connection or a body sent one byte at a time each pin a task and its
//! buffers forever, so a few hundred sockets exhaust the gateway's memory before anything is
//! authenticated. [`serve_with_limits`] bounds every phase of a connection instead:
//!
//! - at most `max_connections` are served at once; one more is answered with a bare `503`
//!   (a single non-blocking write) and closed at once, never queued;
//! - a request's header must arrive within `header_read_timeout` of its first byte (and a
//!   fresh connection's within `header_read_timeout` of the accept);
//! - a connection with no request in flight is closed after `idle_timeout`;
//! - every request body must arrive whole within `body_read_timeout` of its header, or the
//!   body fails (the metering layer then refuses it as `malformed`; nothing is forwarded);
//! - on shutdown, the listener closes, idle connections close, and the loop returns once the
//!   requests in flight are done.

pub(crate) mod body;
mod clock;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use body::{Holding, TimedBody};
use clock::{Clock, Watched};

/// How long connections and requests may take, and how many may be open (spec/HTTP.md §10,
/// `[limits]`). The defaults are safe for a gateway facing the internet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Most time from a request's first byte (or from the accept, for a connection's first
    /// request) until its whole header has arrived.
    pub header_read_timeout: Duration,
    /// Most time from a request's header until its whole body has arrived.
    pub body_read_timeout: Duration,
    /// Most time a connection stays open with no request in flight.
    pub idle_timeout: Duration,
    /// Most connections served at once; more are refused and closed immediately.
    pub max_connections: usize,
    /// Most paid requests in flight at once, enforced by the layer [`crate::app_with_limits`]
    /// and [`crate::proxy_app_with_limits`] add; more are refused with `overloaded` (503).
    pub max_inflight_paid: usize,
}

impl ServerLimits {
    /// Longest timeout honoured: longer ones are cut to this, so deadline arithmetic cannot
    /// overflow.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

    /// These limits with timeouts at most [`Self::MAX_TIMEOUT`] and counts at most what a
    /// tokio semaphore holds.
    fn bounded(&self) -> ServerLimits {
        let t = |d: Duration| d.min(Self::MAX_TIMEOUT);
        ServerLimits {
            header_read_timeout: t(self.header_read_timeout),
            body_read_timeout: t(self.body_read_timeout),
            idle_timeout: t(self.idle_timeout),
            max_connections: self.max_connections.min(Semaphore::MAX_PERMITS),
            max_inflight_paid: self.max_inflight_paid.min(Semaphore::MAX_PERMITS),
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_inflight_paid: 256,
        }
    }
}

/// Serves `app` on `listener` with the default [`ServerLimits`] until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_limits(listener, app, ServerLimits::default(), shutdown).await
}

/// Serves `app` on `listener` under `limits` until `shutdown` resolves, then stops accepting,
/// closes idle connections and returns once every request in flight has been answered.
/// Requests carry axum's [`ConnectInfo<SocketAddr>`] with the peer's address.
pub async fn serve_with_limits(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = limits.bounded();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // Each connection task holds a receiver: `closed()` resolves when the last one is gone.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    accept_failed(&e).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(stream);
            continue;
        };
        // Small request/response exchanges: do not wait to coalesce writes.
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            peer,
            app.clone(),
            limits.clone(),
            slot,
            stop_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    stop_tx.closed().await;
    Ok(())
}

/// A connection over the cap: one best-effort, non-blocking `503` and close. Nothing is read
/// and nothing waits, so refusing costs the gateway no more than the accept did.
fn refuse(stream: TcpStream) {
    const BUSY: &[u8] =
        b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
    let _ = stream.try_write(BUSY);
    drop(stream);
}

/// An accept error. Per-connection ones (the peer reset before the accept) are ignored; the
/// others (out of file descriptors) back off briefly so the loop does not spin while
/// connections close.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Serves one connection until it ends, a deadline of its [`Clock`] passes (the connection is
/// then dropped, which closes the socket), or shutdown has let its requests finish.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ServerLimits,
    _slot: OwnedSemaphorePermit,
    mut stop: watch::Receiver<bool>,
) {
    let clock = Arc::new(Clock::new(limits.header_read_timeout, limits.idle_timeout));
    let io = TokioIo::new(Watched::new(stream, clock.clone()));
    let body_timeout = limits.body_read_timeout;
    let service_clock = clock.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let busy = service_clock.begin();
        let mut req = req.map(|b| axum::body::Body::new(TimedBody::new(b, body_timeout)));
        req.extensions_mut().insert(ConnectInfo(peer));
        let answer = app.clone().oneshot(req);
        async move {
            let resp = answer.await?;
            Ok::<_, Infallible>(resp.map(|b| Holding::new(b, busy)))
        }
    });
    let mut builder = http1::Builder::new();
    // hyper's own header timer runs from the moment it waits for a request, so it can only
    // fire after the clock's deadlines; it is a backstop should the clock miss a phase.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout + limits.header_read_timeout);
    let mut conn = std::pin::pin!(builder.serve_connection(io, service));
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let deadline = clock.deadline();
        tokio::select! {
            _ = conn.as_mut() => break,
            () = clock.changed() => {}
            () = sleep_until(deadline) => {
                if clock.expired() {
                    break;
                }
            }
            _ = stop.changed(), if !stopping => {
                // Shutdown, or the accept loop is gone: either way, no new requests.
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
