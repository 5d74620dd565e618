//! Forwarding an admitted request and recording its answer (DESIGN.md §3 steps 3–5). The
//! part that runs in a task of its own, so a client that hangs up does not stop the record.
//!
//! The upstream's head decides how the receipt travels ([`Delivery`]): in the response
//! headers, after reading the body whole, or after the last byte of a streamed body
//! ([`super::stream`]).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use tally_core::{ChannelId, Units};
use tally_http::headers::{CHECKPOINT_REQUEST, PAYMENT_RESPONSE};
use tally_http::usage::UsageReader;
use tally_http::{Price, Reason};
use tower::Service;

use super::{read_whole, strip_payment_headers, UpstreamFailed};
use crate::errors::GatewayError;
use crate::gateway::{Admission, Answer, Gateway, Recorded};

/// What a paid request carries into its task besides the admission.
pub(super) struct Paid {
    /// The route's price.
    pub price: Price,
    /// What the client accepts.
    pub delivery: Delivery,
    /// When the gateway started on the request.
    pub started: Instant,
}

/// How the client can take its receipt (spec/HTTP.md §5.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Delivery {
    /// The request said `TE: trailers` (RFC 9110 §10.1.4).
    pub trailers: bool,
}

impl Delivery {
    /// What the request's headers accept.
    pub fn asked(headers: &HeaderMap) -> Self {
        let trailers = headers
            .get_all(http::header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| {
                let t = t.split(';').next().unwrap_or("").trim();
                t.eq_ignore_ascii_case("trailers")
            });
        Delivery { trailers }
    }

    /// Whether a response with these headers streams: an event stream always (its receipt
    /// is its last event), anything else when the client takes trailers.
    pub fn streams(&self, response: &HeaderMap) -> bool {
        self.trailers || is_event_stream(response)
    }
}

/// `content-type: text/event-stream` (WHATWG HTML §9.2), parameters ignored.
pub(super) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// Calls the upstream with an admitted request, meters the answer and records it.
pub(super) async fn forward_and_record<S>(
    gateway: Gateway,
    mut inner: S,
    req: Request<Body>,
    admission: Admission,
    paid: Paid,
) -> Result<Response, GatewayError>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible>,
{
    let settings = gateway.settings();
    let channel = admission.channel();
    let (lane, seq) = admission.lane_seq();
    let admitted_at = Instant::now();
    let timeout = settings.upstream_timeout;
    let head = tokio::time::timeout(timeout, inner.call(req))
        .await
        .map_err(|_| upstream_silent(timeout))?;
    let resp = match head {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if resp.extensions().get::<UpstreamFailed>().is_some() {
        // Nothing was served: drop the admission (releasing its reservation and lane),
        // record nothing.
        tracing::warn!(%channel, lane, seq, "upstream unavailable; nothing recorded");
        return Ok(resp);
    }
    let (parts, body) = strip_payment_headers(resp).into_parts();
    if paid.delivery.streams(&parts.headers) {
        return Ok(super::stream::start(
            gateway,
            admission,
            paid,
            parts,
            body,
            admitted_at,
        ));
    }
    // A buffered answer is read whole within what is left of the timeout: a hung upstream
    // must not hold the lane and its reservation forever (the task outlives the client).
    let limit = settings.max_response_bytes;
    let left = timeout.saturating_sub(admitted_at.elapsed());
    let read = tokio::time::timeout(left, read_whole(body, limit))
        .await
        .map_err(|_| upstream_silent(timeout))
        .inspect_err(
            |_| tracing::warn!(%channel, lane, seq, "upstream timed out; nothing recorded"),
        )?;
    let (body, trailers) = read.map_err(|_| {
        GatewayError::new(
            Reason::ResponseTooLarge { limit },
            format!("the upstream's response exceeds {limit} bytes; nothing was charged"),
        )
    })?;
    let upstream_time = admitted_at.elapsed();
    let mut reader = UsageReader::for_price(&paid.price, limit);
    reader.headers(&parts.headers);
    reader.chunk(&body);
    if let Some(t) = &trailers {
        reader.trailers(t);
    }
    let body_hash = tally_core::request::body_hash(&body);
    let status = parts.status.as_u16();
    let content_type = parts.headers.get(http::header::CONTENT_TYPE).cloned();
    let answered = Answered {
        status,
        content_type,
        body: body.clone(),
        body_hash,
        reported: reader.finish(),
    };
    let recorded = settle(&gateway, admission, &paid.price, answered).await?;
    let mut parts = parts;
    parts
        .headers
        .insert(PAYMENT_RESPONSE, recorded.payment_response.clone());
    if let Some(v) = checkpoint_request_value(&recorded) {
        parts.headers.insert(CHECKPOINT_REQUEST, v);
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    observe(&gateway, channel, (lane, seq), paid.started, upstream_time);
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// What the upstream answered, as delivered to the client.
pub(super) struct Answered {
    pub status: u16,
    pub content_type: Option<HeaderValue>,
    /// The bytes delivered (held for a retry of the seq).
    pub body: Bytes,
    pub body_hash: tally_core::Hash,
    /// Units per meter as the upstream reported them.
    pub reported: Units,
}

/// Charges an answer under `price` (spec/HTTP.md §4.1) and records it: the one step both
/// deliveries end with.
pub(super) async fn settle(
    gateway: &Gateway,
    admission: Admission,
    price: &Price,
    answered: Answered,
) -> Result<Recorded, GatewayError> {
    let settings = gateway.settings();
    let max_amount = admission.authorization().max_amount;
    let (lane, seq) = admission.lane_seq();
    let channel = admission.channel();
    let (units, amount) = price.charge_answer(
        answered.status,
        answered.reported,
        max_amount,
        settings.charge_server_errors,
    );
    let signed = i128::try_from(amount)
        .map_err(|_| GatewayError::internal("charge exceeds the signed amount range"))?;
    let recorded = gateway
        .record(
            admission,
            Answer {
                status: answered.status,
                content_type: answered.content_type,
                body: answered.body,
                body_hash: answered.body_hash,
                units,
                amount: signed,
                credits: None,
            },
        )
        .await?;
    tracing::info!(
        %channel,
        lane,
        seq,
        status = answered.status,
        units = ?units,
        amount,
        "metered"
    );
    Ok(recorded)
}

/// `TALLY-CHECKPOINT-REQUEST` for a record after which a checkpoint is due.
pub(super) fn checkpoint_request_value(recorded: &Recorded) -> Option<HeaderValue> {
    let size = recorded.checkpoint_request?;
    HeaderValue::from_str(&size.to_string()).ok()
}

/// Latency metrics of a metered call: the whole call, and the gateway's part of it.
pub(super) fn observe(
    gateway: &Gateway,
    channel: ChannelId,
    (lane, seq): (u32, u64),
    started: Instant,
    upstream_time: Duration,
) {
    let total = started.elapsed();
    let overhead = total.saturating_sub(upstream_time);
    gateway.metrics().total.observe(total);
    gateway.metrics().overhead.observe(overhead);
    tracing::debug!(
        %channel,
        lane,
        seq,
        upstream_us = upstream_time.as_micros() as u64,
        overhead_us = overhead.as_micros() as u64,
        "timing"
    );
}

fn upstream_silent(timeout: Duration) -> GatewayError {
    GatewayError::new(
        Reason::UpstreamUnavailable,
        format!(
            "the upstream did not answer within {} ms; nothing was recorded or charged",
            timeout.as_millis()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn trailers_are_taken_only_when_the_client_says_so() {
        assert!(!Delivery::asked(&headers(&[])).trailers);
        assert!(!Delivery::asked(&headers(&[("te", "gzip")])).trailers);
        assert!(Delivery::asked(&headers(&[("te", "gzip, Trailers")])).trailers);
        assert!(Delivery::asked(&headers(&[("te", "deflate"), ("te", "trailers;q=1")])).trailers);
        assert!(!Delivery::asked(&headers(&[("te", "trailersx")])).trailers);
    }

    #[test]
    fn event_streams_stream_and_others_only_with_trailers() {
        let sse = headers(&[("content-type", "text/event-stream; charset=utf-8")]);
        let json = headers(&[("content-type", "application/json")]);
        let none = Delivery { trailers: false };
        assert!(none.streams(&sse) && !none.streams(&json) && !none.streams(&HeaderMap::new()));
        assert!(Delivery { trailers: true }.streams(&json));
    }
}
