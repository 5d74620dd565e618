//! The cap on paid requests in flight (spec/HTTP.md §10, `max_inflight_paid`; issue 8 item 2).
//!
//! A paid request is the expensive kind: its body (up to `max_request_bytes`) and its
//! response (up to `max_response_bytes`) are held whole in memory, and it takes a channel
//! lock and a durable commit. [`PaidCapLayer`] sits outside [`crate::MeteringLayer`] and
//! admits at most `max` of them at once; one more is refused at once with `overloaded`
//! (503, `Retry-After: 1`) before its body is read, never queued. The permit is held until
//! hyper drops the response body, so a client reading its response slowly still counts.
//!
//! A request counts as paid if it carries `PAYMENT-SIGNATURE` or the terms price its method
//! and path: the first catches every request the metering layer would authenticate (whatever
//! path form pricing later settles on), the second every one it would read a body for or
//! refuse with `payment_required`. Both are a header lookup and the same price-list scan the
//! metering layer does; free requests pass untouched and stream.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::OriginalUri;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Request};
use tally_http::headers::PAYMENT_SIGNATURE;
use tally_http::{Price, Reason};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::errors::GatewayError;
use crate::listen::body::Holding;
use crate::Gateway;

/// A tower [`Layer`] that admits at most `max` paid requests at once.
#[derive(Clone)]
pub struct PaidCapLayer {
    gateway: Gateway,
    permits: Arc<Semaphore>,
    max: usize,
}

impl PaidCapLayer {
    /// At most `max` paid requests of `gateway`'s terms in flight through this layer.
    pub fn new(gateway: Gateway, max: usize) -> Self {
        let max = max.min(Semaphore::MAX_PERMITS);
        PaidCapLayer {
            gateway,
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

impl<S> Layer<S> for PaidCapLayer {
    type Service = PaidCap<S>;
    fn layer(&self, inner: S) -> PaidCap<S> {
        PaidCap {
            cap: self.clone(),
            inner,
        }
    }
}

/// The service [`PaidCapLayer`] produces.
#[derive(Clone)]
pub struct PaidCap<S> {
    cap: PaidCapLayer,
    inner: S,
}

impl<S> Service<Request<Body>> for PaidCap<S>
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
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !is_paid(&self.cap.gateway, &req) {
            return Box::pin(inner.call(req));
        }
        let Ok(permit) = self.cap.permits.clone().try_acquire_owned() else {
            let refusal = overloaded(&self.cap.gateway, self.cap.max);
            return Box::pin(async move { Ok(refusal) });
        };
        let answer = inner.call(req);
        Box::pin(async move {
            let resp = answer.await?;
            Ok(resp.map(|b| Body::new(Holding::new(b, permit))))
        })
    }
}

/// Whether the metering layer would treat `req` as paid (see the module doc).
fn is_paid(gateway: &Gateway, req: &Request<Body>) -> bool {
    if req.headers().contains_key(PAYMENT_SIGNATURE) {
        return true;
    }
    let path = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| req.uri().path(), |o| o.0.path());
    gateway
        .route_of(req.method().as_str(), path)
        .is_ok_and(|(_, route)| route.is_some_and(|r| r.price != Price::Free))
}

/// The `overloaded` refusal: nothing was read, recorded or charged; retry in a second.
fn overloaded(gateway: &Gateway, max: usize) -> Response {
    let reason = Reason::Overloaded;
    gateway.metrics().refused(reason.code());
    let mut resp = GatewayError::new(
        reason,
        format!("the gateway is serving its limit of {max} paid requests; retry shortly"),
    )
    .into_response();
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}
