//! Connection and request limits of a real gateway on loopback (spec/HTTP.md §10
//! `[limits]`; issue 8 item 2): slow-loris clients on raw TCP sockets are cut off by the
//! header and body read timeouts, connections over `max_connections` are refused while the
//! earlier ones are open, and paid requests over `max_inflight_paid` are refused with
//! `overloaded`. Timing bounds are generous (5x or more) because the machine is shared.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::any;
use axum::Router;
use tally_core::SecretKey;
use tally_e2e::*;
use tally_http::headers::PAYMENT_SIGNATURE;
use tally_http::{ErrorBody, Reason};
use tally_server::{Gateway, Proxy, ServerLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};

fn limits(header_ms: u64, body_ms: u64, idle_ms: u64, conns: usize, paid: usize) -> ServerLimits {
    ServerLimits {
        header_read_timeout: Duration::from_millis(header_ms),
        body_read_timeout: Duration::from_millis(body_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        max_connections: conns,
        max_inflight_paid: paid,
    }
}

/// Holds `/v1/echo/hold` requests at the upstream until the test releases them.
#[derive(Clone)]
struct Gate {
    arrived: mpsc::UnboundedSender<()>,
    open: Arc<Semaphore>,
}

impl Gate {
    async fn pass(&self) {
        let _ = self.arrived.send(());
        let permit = self.open.acquire().await;
        drop(permit);
    }
}

/// The upstream: `/v1/echo/hold` (priced) and `/slow` (free) report their arrival and wait
/// for the gate, `/v1/echo*` echoes, `/free` is unpriced.
fn upstream(gate: Gate) -> Router {
    let slow = gate.clone();
    Router::new()
        .route(
            "/v1/echo/hold",
            any(move |body: axum::body::Bytes| {
                let gate = gate.clone();
                async move {
                    gate.pass().await;
                    body
                }
            }),
        )
        .route(
            "/slow",
            any(move || {
                let gate = slow.clone();
                async move {
                    gate.pass().await;
                    "slow"
                }
            }),
        )
        .route(
            "/v1/echo",
            any(|body: axum::body::Bytes| async move { body }),
        )
        .route("/free", any(|| async { "free" }))
}

/// A gateway over in-memory funding serving the reverse proxy under `limits`.
struct Limited {
    funding: MemFunding,
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    upstream: Server,
    arrived: mpsc::UnboundedReceiver<()>,
    gate: Arc<Semaphore>,
    _gateway: Gateway,
    _dir: tempfile::TempDir,
}

impl Limited {
    async fn start(limits: ServerLimits) -> Limited {
        let (tx, arrived) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        let upstream = spawn(upstream(Gate {
            arrived: tx,
            open: gate.clone(),
        }))
        .await;
        let funding = MemFunding::default();
        let dir = tmp();
        let key = SecretKey::generate(&mut rand::rngs::OsRng);
        let gateway = Gateway::open(settings(dir.path()), key, Arc::new(funding.clone())).unwrap();
        let proxy = Proxy::new(&upstream.url().parse().unwrap()).unwrap();
        let app = tally_server::proxy_app_with_limits(&gateway, proxy, &limits);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tally_server::serve_with_limits(
            listener,
            app,
            limits,
            async {
                let _ = stopped.await;
            },
        ));
        Limited {
            funding,
            addr,
            stop: Some(stop),
            task,
            upstream,
            arrived,
            gate,
            _gateway: gateway,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let served = tokio::time::timeout(Duration::from_secs(20), self.task).await;
        assert!(
            matches!(served, Ok(Ok(Ok(())))),
            "graceful shutdown: {served:?}"
        );
        self.upstream.stop().await;
    }
}

/// Reads until the server closes the connection (EOF or reset) or `bound` passes; returns
/// what was read and whether it was closed.
async fn read_until_closed(stream: &mut TcpStream, bound: Duration) -> (Vec<u8>, bool) {
    let deadline = tokio::time::Instant::now() + bound;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A GET of `/healthz` on a fresh connection, through reqwest.
async fn healthz(url: &str) -> Result<u16, reqwest::Error> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    Ok(client
        .get(format!("{url}/healthz"))
        .send()
        .await?
        .status()
        .as_u16())
}

fn reason(body: &[u8]) -> Reason {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.error.reason,
        Err(e) => panic!("not an error body ({e}): {}", String::from_utf8_lossy(body)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_are_closed_after_the_header_read_timeout() {
    let g = Limited::start(limits(300, 5_000, 10_000, 1024, 256)).await;
    let started = Instant::now();
    let mut loris = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(g.addr).await.unwrap();
        s.write_all(b"GET /free HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .unwrap();
        loris.push(s);
    }
    // Every one is closed well within 5x the timeout, with no response to a request that
    // never finished.
    for s in &mut loris {
        let bound = Duration::from_millis(300 * 10).saturating_sub(started.elapsed());
        let (got, closed) = read_until_closed(s, bound.max(Duration::from_millis(100))).await;
        assert!(
            closed,
            "a half-sent header was kept open for {:?}",
            started.elapsed()
        );
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
            "unexpected answer: {}",
            String::from_utf8_lossy(&got)
        );
    }
    // One that trickles its header a byte at a time is closed too: the timeout runs from the
    // first byte, not the last.
    let mut trickle = TcpStream::connect(g.addr).await.unwrap();
    let trickled = Instant::now();
    let mut closed = false;
    for b in b"GET /free HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if trickle.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !closed {
        closed = read_until_closed(&mut trickle, Duration::from_millis(1500))
            .await
            .1;
    }
    assert!(
        closed,
        "a trickled header was kept open {:?}",
        trickled.elapsed()
    );
    // A connection that sends nothing at all is closed on the same deadline.
    let mut silent = TcpStream::connect(g.addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_millis(3_000)).await;
    assert!(closed, "a silent connection was kept open");
    // The gateway still serves.
    assert_eq!(healthz(&g.url()).await.unwrap(), 200);
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_a_slow_upstream_answer_is_not_cut() {
    let mut g = Limited::start(limits(300, 300, 300, 1024, 256)).await;
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), g.arrived.recv())
        .await
        .expect("the request reached the upstream")
        .expect("upstream alive");
    // In flight for several times every timeout: the connection has no deadline meanwhile.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    g.gate.add_permits(1);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"slow") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the slow answer arrives")
            .unwrap();
        assert!(
            n > 0,
            "closed mid-request: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // Then the kept-alive connection sits idle, and is closed.
    let idle = Instant::now();
    let (rest, closed) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(closed, "an idle keep-alive connection was kept open");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        idle.elapsed() >= Duration::from_millis(250),
        "{:?}",
        idle.elapsed()
    );
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dribbled_body_is_cut_off_after_the_body_read_timeout() {
    let g = Limited::start(limits(5_000, 400, 10_000, 1024, 256)).await;
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    // The session binding endpoint reads its whole body before looking at it.
    let channel = "00".repeat(32);
    let head = format!(
        "POST /tally/v1/channels/{channel}/session HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let sent_head = Instant::now();
    let (mut rd, mut wr) = s.into_split();
    let dribble = tokio::spawn(async move {
        let mut sent = 0usize;
        while sent < 1000 {
            if wr.write_all(b" ").await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sent
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Err(_) => panic!("the dribbled body was still being read after 5 s"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let answered = sent_head.elapsed();
    assert!(
        got.starts_with(b"HTTP/1.1 4"),
        "expected a 4xx refusal, got {:?}",
        String::from_utf8_lossy(&got)
    );
    // Never before the body's deadline (timers do not fire early).
    assert!(
        answered >= Duration::from_millis(400),
        "answered after {answered:?}"
    );
    drop(rd);
    let sent = dribble.await.unwrap();
    assert!(sent < 1000, "the whole body was accepted");
    assert_eq!(healthz(&g.url()).await.unwrap(), 200);
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_are_refused_and_service_resumes() {
    let g = Limited::start(limits(10_000, 10_000, 10_000, 4, 256)).await;
    let mut holders = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(g.addr).await.unwrap();
        s.write_all(b"GET /free HTTP/1.1\r\n").await.unwrap();
        holders.push(s);
    }
    // Let the accept loop take all four.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..3 {
        let mut extra = TcpStream::connect(g.addr).await.unwrap();
        let (got, closed) = read_until_closed(&mut extra, Duration::from_secs(3)).await;
        assert!(closed, "a connection over the cap was kept open");
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 503"),
            "unexpected answer: {}",
            String::from_utf8_lossy(&got)
        );
    }
    // The holders were not disturbed: each still completes its request.
    let mut first = holders.remove(0);
    first
        .write_all(b"host: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = read_until_closed(&mut first, Duration::from_secs(5)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    drop(holders);
    // Once they are gone, new connections are served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match healthz(&g.url()).await {
            Ok(200) => break,
            other => assert!(
                Instant::now() < deadline,
                "not served after the holders left: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    g.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_requests_over_max_inflight_paid_are_refused_with_overloaded() {
    let mut g = Limited::start(limits(5_000, 5_000, 30_000, 1024, 2)).await;
    let url = g.url();
    let mut held = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..2 {
        let ch = open_channel(&g.funding, 1_000_000);
        let dir = tmp();
        let client = connect(&url, dir.path(), &ch).await;
        dirs.push(dir);
        held.push(tokio::spawn(async move {
            let r = client
                .post("/v1/echo/hold")
                .body(format!("held {i}"))
                .send()
                .await;
            (
                r.map(|r| (r.status.as_u16(), r.body, r.receipt.is_some())),
                client,
            )
        }));
    }
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), g.arrived.recv())
            .await
            .expect("a paid request reached the upstream")
            .expect("upstream alive");
    }
    // Both slots taken: a third paid request is refused before its body is read, whether it
    // carries a payment header or not; free routes are unaffected.
    let http = reqwest::Client::new();
    let refused = http
        .post(format!("{url}/v1/echo"))
        .header(PAYMENT_SIGNATURE, "not-even-base64")
        .body("third")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(
        refused.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_eq!(reason(&refused.bytes().await.unwrap()), Reason::Overloaded);
    let unpaid = http
        .post(format!("{url}/v1/echo"))
        .body("fourth")
        .send()
        .await
        .unwrap();
    assert_eq!(unpaid.status().as_u16(), 503);
    assert_eq!(reason(&unpaid.bytes().await.unwrap()), Reason::Overloaded);
    let free = http.get(format!("{url}/free")).send().await.unwrap();
    assert_eq!(free.status().as_u16(), 200);
    // Release them: both are served and receipted, and the slots are free again.
    g.gate.add_permits(2);
    let mut clients = Vec::new();
    for (i, h) in held.into_iter().enumerate() {
        let (r, client) = h.await.unwrap();
        let (status, body, receipted) = r.unwrap_or_else(|e| panic!("held request {i}: {e}"));
        assert_eq!((status, receipted), (200, true));
        assert_eq!(&body[..], format!("held {i}").as_bytes());
        clients.push(client);
    }
    let again = clients[0]
        .post("/v1/echo")
        .body("again")
        .send()
        .await
        .unwrap();
    assert_eq!(
        (again.status.as_u16(), &again.body[..]),
        (200, &b"again"[..])
    );
    drop(clients);
    g.stop().await;
}
