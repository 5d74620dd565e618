//! The reverse proxy: forwards every request to one upstream with hyper's client, streaming
//! bodies both ways and dropping hop-by-hop headers (RFC 9110 §7.6.1). Wrapped in
//! [`crate::layer::MeteringLayer`] it is the standalone gateway.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::header::{HeaderName, CONNECTION, HOST};
use http::{HeaderMap, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tally_http::headers::{CHECKPOINT, FORWARDED, PAYMENT_SIGNATURE};
use tally_http::Reason;
use tower::Service;

use crate::errors::GatewayError;
use crate::layer::UpstreamFailed;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1). Names, not strings, so
/// removing them parses nothing per request.
const HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];
/// The payment headers, which the upstream never sees.
const PAYMENT_SIGNATURE_NAME: HeaderName = HeaderName::from_static(PAYMENT_SIGNATURE);
const CHECKPOINT_NAME: HeaderName = HeaderName::from_static(CHECKPOINT);
const FORWARDED_NAME: HeaderName = HeaderName::from_static(FORWARDED);

/// Forwards requests to `upstream` (scheme and authority; the request's path and query are
/// kept).
#[derive(Clone)]
pub struct Proxy {
    client: Client<HttpConnector, Body>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
}

impl Proxy {
    /// A proxy to `upstream`, e.g. `http://127.0.0.1:9000`. Only `http` upstreams are
    /// supported (the upstream sits next to the gateway).
    pub fn new(upstream: &Uri) -> Result<Self, String> {
        let scheme = upstream
            .scheme()
            .cloned()
            .ok_or_else(|| format!("upstream {upstream} has no scheme"))?;
        if scheme != http::uri::Scheme::HTTP {
            return Err(format!("upstream {upstream}: only http is supported"));
        }
        let authority = upstream
            .authority()
            .cloned()
            .ok_or_else(|| format!("upstream {upstream} has no host"))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(connector);
        Ok(Proxy {
            client,
            scheme,
            authority,
        })
    }

    async fn forward(self, req: Request<Body>) -> Response {
        let (mut parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build();
        let uri = match uri {
            Ok(u) => u,
            Err(e) => {
                return GatewayError::malformed(format!("cannot build the upstream URI: {e}"))
                    .into_response()
            }
        };
        parts.uri = uri;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(PAYMENT_SIGNATURE_NAME);
        parts.headers.remove(CHECKPOINT_NAME);
        // Between cluster nodes only (spec/CLUSTER.md §7): it names a node.
        parts.headers.remove(FORWARDED_NAME);
        if let Ok(v) = http::HeaderValue::from_str(self.authority.as_str()) {
            parts.headers.insert(HOST, v);
        }
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body))
            }
            Err(e) => {
                let mut resp = GatewayError::new(
                    Reason::UpstreamUnavailable,
                    format!("the upstream did not answer: {e}"),
                )
                .into_response();
                resp.extensions_mut().insert(UpstreamFailed);
                resp
            }
        }
    }
}

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.contains_key(CONNECTION) {
        for name in &HOP_BY_HOP[1..] {
            headers.remove(name);
        }
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

impl Service<Request<Body>> for Proxy {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.forward(req).await) })
    }
}
