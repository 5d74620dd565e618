//! The tower layer: wrap any axum routes with it and every priced route is metered
//! (DESIGN.md §3). Free routes pass through untouched and stream.
//!
//! A paid request's body is read whole (up to the terms' limit) before anything is
//! forwarded, because the client's signature covers its hash; the response body is read
//! whole (up to the limit) because the receipt in the response headers covers its hash.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::OriginalUri;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::BodyExt;
use tally_http::headers::{CHECKPOINT_REQUEST, PAYMENT_RESPONSE};
use tally_http::{Price, Reason};
use tower::{Layer, Service};

use crate::errors::GatewayError;
use crate::gateway::{Admitted, Gateway, RequestView};
use crate::pricing::charge;

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

async fn meter<S>(gateway: Gateway, mut inner: S, req: Request<Body>) -> Response
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    let uri = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().clone(), |o| o.0.clone());
    let method = req.method().as_str().to_string();
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let price = gateway.terms().price_for(&method, &path).clone();
    if price == Price::Free {
        gateway
            .metrics()
            .free
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return match inner.call(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
    }
    match meter_paid(&gateway, &mut inner, req, &method, &path, &query, &price).await {
        Ok(resp) => resp,
        Err(e) => {
            gateway.metrics().refused(e.reason.code());
            e.into_response()
        }
    }
}

async fn meter_paid<S>(
    gateway: &Gateway,
    inner: &mut S,
    req: Request<Body>,
    method: &str,
    path: &str,
    query: &str,
    price: &Price,
) -> Result<Response, GatewayError>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    let settings = gateway.settings();
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let limit = settings.max_request_bytes;
    let body = read_limited(body, limit).await.map_err(|too_big| {
        if too_big {
            GatewayError::new(
                Reason::PayloadTooLarge { limit },
                format!("request body exceeds {limit} bytes"),
            )
        } else {
            GatewayError::malformed("could not read the request body")
        }
    })?;
    let view = RequestView {
        method,
        path,
        query,
        headers: &parts.headers,
        body: &body,
    };
    let admission = match gateway.admit(&view, price).await? {
        Admitted::Replay(cached) => return Ok(cached.into_response()),
        Admitted::Fresh(a) => a,
    };
    let max_amount = admission.authorization().max_amount;
    let admitted_at = std::time::Instant::now();
    let upstream_req = Request::from_parts(parts, Body::from(body.clone()));
    let resp = match inner.call(upstream_req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if resp.extensions().get::<UpstreamFailed>().is_some() {
        // Nothing was served: drop the admission (and the lock), record nothing.
        return Ok(resp);
    }
    let (mut resp_parts, resp_body) = resp.into_parts();
    let limit = settings.max_response_bytes;
    let resp_body = read_limited(resp_body, limit).await.map_err(|_| {
        GatewayError::new(
            Reason::ResponseTooLarge { limit },
            format!("the upstream's response exceeds {limit} bytes; nothing was charged"),
        )
    })?;
    let upstream_time = admitted_at.elapsed();
    let status = resp_parts.status.as_u16();
    let c = charge(
        price,
        status,
        &resp_parts.headers,
        max_amount,
        settings.charge_server_errors,
    );
    let amount = i128::try_from(c.amount)
        .map_err(|_| GatewayError::internal("charge exceeds the signed amount range"))?;
    let content_type = resp_parts.headers.get(http::header::CONTENT_TYPE).cloned();
    let recorded = gateway
        .record(
            admission,
            status,
            content_type,
            resp_body.clone(),
            c.units,
            amount,
        )
        .await?;
    resp_parts
        .headers
        .insert(PAYMENT_RESPONSE, recorded.payment_response);
    if let Some(size) = recorded.checkpoint_request {
        if let Ok(v) = HeaderValue::from_str(&size.to_string()) {
            resp_parts.headers.insert(CHECKPOINT_REQUEST, v);
        }
    }
    resp_parts.headers.remove(http::header::CONTENT_LENGTH);
    let total = started.elapsed();
    gateway.metrics().total.observe(total);
    gateway
        .metrics()
        .overhead
        .observe(total.saturating_sub(upstream_time));
    Ok(Response::from_parts(resp_parts, Body::from(resp_body)))
}

/// Reads a whole body, failing with `true` if it exceeds `limit` bytes and `false` on a
/// transport error.
async fn read_limited(body: Body, limit: u64) -> Result<Bytes, bool> {
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(e
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()),
    }
}
