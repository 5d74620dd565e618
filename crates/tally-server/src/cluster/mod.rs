//! Cluster mode's HTTP side (spec/CLUSTER.md §6, §7, §9): every request that names a channel
//! is served by the node that owns the channel's shard. A node that owns it (or takes it,
//! when it is free or expired) serves it and says so in `TALLY-EPOCH`; a node that does not
//! forwards the request, payment headers and body untouched, to the owner's registered URL
//! and streams the answer back. The load balancer and the SDKs see one provider.
//!
//! Forwarding, not redirecting: a client's payment headers never go to an origin it did not
//! choose, and no SDK has to follow a redirect with them (CLUSTER.md §7). A forwarded
//! request carries `TALLY-FORWARDED`; a node never forwards such a request again (a stale
//! view of who owns what cannot make a loop), it answers `store_unavailable` with
//! `Retry-After` instead, as it does when the owner cannot be reached.

mod route;
mod settle;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{HOST, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tally_http::headers::{EPOCH, FORWARDED};
use tally_http::Reason;
use tally_store_pg::{Holder, Owner, PgNode};

pub use route::channel_of;
pub use settle::run_while_leader;

use crate::errors::GatewayError;

const EPOCH_NAME: HeaderName = HeaderName::from_static(EPOCH);
const FORWARDED_NAME: HeaderName = HeaderName::from_static(FORWARDED);

/// What the routing middleware needs: this node, and a client for forwarding.
#[derive(Clone)]
pub struct Router {
    node: Arc<PgNode>,
    client: Client<HttpConnector, Body>,
    /// Most time a forwarded request may take (the owner's own upstream timeout, and a
    /// margin): an owner that stopped answering (a SIGSTOP) must not hold requests forever.
    timeout: Duration,
}

impl Router {
    /// Routes through `node`, giving a forwarded request at most `timeout`.
    pub fn new(node: Arc<PgNode>, timeout: Duration) -> Router {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build(connector);
        Router {
            node,
            client,
            timeout,
        }
    }
}

/// The middleware: serve here, or forward to the owner.
pub async fn route(State(router): State<Router>, req: Request, next: Next) -> Response {
    let Some(channel) = channel_of(req.uri().path(), req.headers()) else {
        return next.run(req).await;
    };
    let node = &router.node;
    let shard = node.shard_of(&channel);
    match node.peek(shard).await {
        Ok(Some(Owner::Other(holder))) => {
            if req.headers().contains_key(FORWARDED_NAME) {
                return moved(&holder, "this node does not own the channel's shard");
            }
            forward(&router, shard, holder, req).await
        }
        // This node's, or nobody's: served here. The gateway takes a free shard only for a
        // channel it has checked (a bound session, a valid binding), never for a stranger's
        // random id.
        Ok(_) => {
            let mut resp = next.run(req).await;
            if let Some(lease) = node.held(shard) {
                if let Ok(v) = HeaderValue::from_str(&format!("{}.{}", lease.shard, lease.epoch)) {
                    resp.headers_mut().insert(EPOCH_NAME, v);
                }
            }
            resp
        }
        Err(e) => {
            tracing::warn!(shard, error = %e, "routing a request: the shard's owner is unknown");
            retry_soon(1, "the channel's owner is unknown right now")
        }
    }
}

/// Sends `req` to `holder`'s node and returns its answer.
async fn forward(router: &Router, shard: u32, holder: Holder, req: Request) -> Response {
    let Some(base) = holder.url.as_deref() else {
        return moved(&holder, "the channel's owner registered no address");
    };
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{base}{path}").parse::<Uri>() else {
        return moved(&holder, "the channel's owner registered a bad address");
    };
    if let Some(authority) = uri.authority() {
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(HOST, v);
        }
    }
    parts.uri = uri;
    crate::proxy::strip_hop_by_hop(&mut parts.headers);
    if let Ok(v) = HeaderValue::from_str(router.node.id()) {
        parts.headers.insert(FORWARDED_NAME, v);
    }
    let sent = router.client.request(Request::from_parts(parts, body));
    match tokio::time::timeout(router.timeout, sent).await {
        Ok(Ok(resp)) => {
            if resp.status() == http::StatusCode::SERVICE_UNAVAILABLE {
                // Possibly "no longer the owner": ask the database next time.
                router.node.forget(shard);
            }
            let (mut parts, body) = resp.into_parts();
            crate::proxy::strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) => {
            // The owner is gone or unreachable: ask the database again next time.
            router.node.forget(shard);
            tracing::warn!(shard, owner = %holder.node, error = %e, "forwarding failed");
            moved(
                &holder,
                "the channel's owner cannot be reached; its lease runs out soon",
            )
        }
        Err(_) => {
            router.node.forget(shard);
            tracing::warn!(shard, owner = %holder.node, "forwarding timed out");
            moved(&holder, "the channel's owner did not answer in time")
        }
    }
}

/// `store_unavailable`, retry once `holder`'s lease may have run out.
fn moved(holder: &Holder, why: &str) -> Response {
    retry_soon(holder.expires_in_ms.div_ceil(1000).max(1), why)
}

fn retry_soon(seconds: u64, why: &str) -> Response {
    let mut resp = GatewayError::new(
        Reason::StoreUnavailable,
        format!("{why}; nothing was recorded; retry"),
    )
    .into_response();
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    resp
}
