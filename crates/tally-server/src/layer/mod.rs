//! The tower layer: wrap any axum routes with it and every priced route is metered
//! (DESIGN.md §3). Free routes pass through and stream.
//!
//! Every request is priced on its canonical path (spec/HTTP.md §4.3), which is also what is
//! forwarded, so spellings of one resource cannot reach it unpriced. For a paid request the
//! payment header is verified first (admission), and only then is the body read, whole, up
//! to the terms' limit (a declared `Content-Length` over it is refused unread), because the
//! client's signature covers its hash. A response is read whole (up to the limit) when its
//! receipt goes in the response headers; a server-sent event stream, or any response to a
//! client that accepts trailers, streams instead, with the receipt after its last byte
//! (spec/HTTP.md §5.7; [`stream`]).
//!
//! Once admitted, forwarding and recording run in a task of their own: a client that hangs
//! up after sending its request does not stop the record (the upstream did the work), and a
//! retry of the same seq gets the held response or the stored record.

mod forward;
mod stream;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::OriginalUri;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tally_http::{Price, Reason, Unmatched};
use tower::{Layer, Service};

use crate::errors::GatewayError;
use crate::gateway::{Admitted, Gateway, Purpose, RequestView};

/// Marks a response that the upstream never produced (the proxy could not reach it): the
/// layer passes it on without recording or charging.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamFailed;

/// A tower [`Layer`] that meters the services it wraps.
#[derive(Clone)]
pub struct MeteringLayer {
    gateway: Gateway,
}

impl MeteringLayer {
    /// Meters with `gateway`.
    pub fn new(gateway: Gateway) -> Self {
        MeteringLayer { gateway }
    }
}

impl<S> Layer<S> for MeteringLayer {
    type Service = Metering<S>;
    fn layer(&self, inner: S) -> Metering<S> {
        Metering {
            gateway: self.gateway.clone(),
            inner,
        }
    }
}

/// The service [`MeteringLayer`] produces.
#[derive(Clone)]
pub struct Metering<S> {
    gateway: Gateway,
    inner: S,
}

impl<S> Service<Request<Body>> for Metering<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // Take the service that was polled ready; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let gateway = self.gateway.clone();
        Box::pin(async move { Ok(meter(gateway, inner, req).await) })
    }
}

async fn meter<S>(gateway: Gateway, inner: S, mut req: Request<Body>) -> Response
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let uri = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().clone(), |o| o.0.clone());
    let method = req.method().as_str().to_string();
    let (path, route) = match gateway.route_of(&method, uri.path()) {
        Ok((path, route)) => (path, route.cloned()),
        Err(e) => return refuse(&gateway, GatewayError::malformed(format!("path: {e}"))),
    };
    let query = uri.query().unwrap_or("").to_string();
    if let Err(e) = forward_canonical(&mut req, &path) {
        return refuse(&gateway, e);
    }
    if route.is_none() && gateway.terms().unmatched == Unmatched::Deny {
        return refuse(
            &gateway,
            GatewayError::new(Reason::NotFound, "no route of the price list matches"),
        );
    }
    let price = route.map_or(Price::Free, |r| r.price);
    if price == Price::Free {
        gateway
            .metrics()
            .free
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut inner = inner;
        return match inner.call(req).await {
            Ok(r) => strip_payment_headers(r),
            Err(never) => match never {},
        };
    }
    let raw_path = uri.path().to_string();
    match meter_paid(&gateway, inner, req, &method, &raw_path, &query, &price).await {
        Ok(resp) => resp,
        Err(e) => refuse(&gateway, e),
    }
}

/// Counts, logs and renders a refusal.
fn refuse(gateway: &Gateway, e: GatewayError) -> Response {
    gateway.metrics().refused(e.reason.code());
    tracing::info!(reason = e.reason.code(), message = %e.message, "refused");
    e.into_response()
}

/// Rewrites the request's path to its canonical form (query kept), so the upstream serves
/// exactly what was priced.
fn forward_canonical(req: &mut Request<Body>, path: &str) -> Result<(), GatewayError> {
    if req.uri().path() == path {
        return Ok(());
    }
    let pq = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(
        pq.parse()
            .map_err(|_| GatewayError::malformed("the canonical path is not a valid URI"))?,
    );
    *req.uri_mut() = http::Uri::from_parts(parts)
        .map_err(|_| GatewayError::malformed("the canonical path is not a valid URI"))?;
    Ok(())
}

/// Drops every `payment-*` and `tally-*` header an upstream sets: only the gateway speaks
/// the payment protocol, so an upstream cannot forge a receipt or a checkpoint request.
fn strip_payment_headers(mut resp: Response) -> Response {
    strip_payment_fields(resp.headers_mut());
    resp
}

/// As [`strip_payment_headers`], for a header or trailer map.
fn strip_payment_fields(fields: &mut http::HeaderMap) {
    let forged: Vec<http::HeaderName> = fields
        .keys()
        .filter(|k| k.as_str().starts_with("payment-") || k.as_str().starts_with("tally-"))
        .cloned()
        .collect();
    for name in forged {
        fields.remove(name);
    }
}

/// Refuses a declared body over the limit before reading a byte of it.
fn check_declared_length(headers: &http::HeaderMap, limit: u64) -> Result<(), GatewayError> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => Err(too_large(limit)),
        _ => Ok(()),
    }
}

fn too_large(limit: u64) -> GatewayError {
    GatewayError::new(
        Reason::PayloadTooLarge { limit },
        format!("request body exceeds {limit} bytes"),
    )
}

async fn meter_paid<S>(
    gateway: &Gateway,
    inner: S,
    req: Request<Body>,
    method: &str,
    path: &str,
    query: &str,
    price: &Price,
) -> Result<Response, GatewayError>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let started = std::time::Instant::now();
    gateway.ensure_writable()?;
    let (parts, body) = req.into_parts();
    let limit = gateway.settings().max_request_bytes;
    check_declared_length(&parts.headers, limit)?;
    let view = RequestView {
        method,
        path,
        query,
        headers: &parts.headers,
    };
    let admitted = gateway.admit(&view, Purpose::Route(price)).await?;
    let body = read_limited(body, limit).await.map_err(|too_big| {
        if too_big {
            too_large(limit)
        } else {
            GatewayError::malformed("could not read the request body")
        }
    })?;
    admitted.check_body(&view, &body)?;
    let admission = match admitted {
        Admitted::Replay { cached, .. } => return Ok(cached.into_response()),
        Admitted::Fresh(a) => a,
    };
    let delivery = forward::Delivery::asked(&parts.headers);
    let upstream_req = Request::from_parts(parts, Body::from(body));
    let task = tokio::spawn(forward::forward_and_record(
        gateway.clone(),
        inner,
        upstream_req,
        admission,
        forward::Paid {
            price: price.clone(),
            delivery,
            started,
        },
    ));
    task.await
        .map_err(|e| GatewayError::internal(format!("metering task: {e}")))?
}

/// Reads a whole body, failing with `true` if it exceeds `limit` bytes and `false` on a
/// transport error.
async fn read_limited(body: Body, limit: u64) -> Result<Bytes, bool> {
    read_whole(body, limit).await.map(|(bytes, _)| bytes)
}

/// As [`read_limited`], keeping the trailers (a meter may read its units there).
async fn read_whole(body: Body, limit: u64) -> Result<(Bytes, Option<http::HeaderMap>), bool> {
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(c) => {
            let trailers = c.trailers().cloned();
            Ok((c.to_bytes(), trailers))
        }
        Err(e) => Err(e
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn upstream_cannot_speak_the_payment_protocol() {
        let mut resp = Response::new(Body::empty());
        for name in [
            "payment-response",
            "tally-checkpoint-request",
            "tally-x",
            "x-ok",
        ] {
            resp.headers_mut().insert(
                http::HeaderName::from_static(name),
                HeaderValue::from_static("1"),
            );
        }
        let resp = strip_payment_headers(resp);
        let left: Vec<&str> = resp.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["x-ok"]);
    }

    #[test]
    fn declared_oversize_bodies_are_refused_unread() {
        let mut h = http::HeaderMap::new();
        assert!(check_declared_length(&h, 10).is_ok());
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        assert!(check_declared_length(&h, 10).is_ok());
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("11"));
        assert_eq!(
            check_declared_length(&h, 10).unwrap_err().reason.code(),
            "payload_too_large"
        );
    }
}
