//! The cluster scenario's load balancer (issue 15): an HTTP proxy in the bench process that
//! sends each request to the next node in turn, so every channel's requests reach every node
//! and the non-owners forward them (spec/CLUSTER.md §7). It names the node it chose in
//! [`NODE_HEADER`], so the bench can tell which answers were forwarded. A node taken out
//! ([`Balancer::set_alive`], as a health check would after a crash) gets nothing; a request
//! whose node cannot be reached goes to the next one (a load balancer's retry on connect).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;

use crate::fail;

/// The response header naming the node (its index) the balancer sent the request to.
pub const NODE_HEADER: &str = "x-bench-node";

/// Requests a body may carry through the balancer (the bench's are a few bytes).
const MAX_BODY: usize = 1 << 20;

struct Inner {
    nodes: Vec<String>,
    alive: Vec<AtomicBool>,
    next: AtomicUsize,
    http: reqwest::Client,
}

/// The balancer's handle.
#[derive(Clone)]
pub struct Balancer(Arc<Inner>);

impl Balancer {
    /// Takes node `i` in or out of the rotation.
    pub fn set_alive(&self, i: usize, alive: bool) {
        if let Some(a) = self.0.alive.get(i) {
            a.store(alive, Ordering::SeqCst);
        }
    }

    /// The next node in the rotation that is in it.
    fn pick(&self) -> Option<usize> {
        let n = self.0.nodes.len();
        for _ in 0..n {
            let i = self.0.next.fetch_add(1, Ordering::Relaxed) % n;
            if self.0.alive[i].load(Ordering::SeqCst) {
                return Some(i);
            }
        }
        None
    }
}

/// Serves the balancer over `nodes` (base URLs) on loopback.
pub async fn start(nodes: Vec<String>) -> (Balancer, tally_e2e::Server) {
    let http = match reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
    {
        Ok(c) => c,
        Err(e) => fail(&format!("balancer client: {e}")),
    };
    let alive = nodes.iter().map(|_| AtomicBool::new(true)).collect();
    let lb = Balancer(Arc::new(Inner {
        nodes,
        alive,
        next: AtomicUsize::new(0),
        http,
    }));
    let app = Router::new().fallback(relay).with_state(lb.clone());
    (lb, tally_e2e::spawn(app).await)
}

/// Sends `req` to the next node; on a transport failure, to the one after (at most once
/// round). A `502` if none answered.
async fn relay(State(lb): State<Balancer>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return status(400);
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    for _ in 0..lb.0.nodes.len() {
        let Some(i) = lb.pick() else { break };
        let mut headers = parts.headers.clone();
        headers.remove(http::header::HOST);
        let sent =
            lb.0.http
                .request(parts.method.clone(), format!("{}{path}", lb.0.nodes[i]))
                .headers(headers)
                .body(body.clone())
                .send()
                .await;
        let Ok(resp) = sent else { continue };
        let mut out = Response::builder().status(resp.status());
        if let Some(h) = out.headers_mut() {
            h.extend(resp.headers().clone());
            h.remove(http::header::TRANSFER_ENCODING);
            h.remove(http::header::CONNECTION);
            if let Ok(v) = http::HeaderValue::from_str(&i.to_string()) {
                h.insert(NODE_HEADER, v);
            }
        }
        let Ok(bytes) = resp.bytes().await else {
            return status(502);
        };
        return out.body(Body::from(bytes)).unwrap_or_else(|_| status(502));
    }
    status(502)
}

fn status(code: u16) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::BAD_GATEWAY);
    r
}
