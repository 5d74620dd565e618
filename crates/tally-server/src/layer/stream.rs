//! Streamed paid responses (DESIGN.md §9, spec/HTTP.md §5.7). The head goes to the client as
//! soon as the upstream sends it; every body chunk is forwarded as it arrives, hashed and
//! scanned for usage on the way; after the last one the record is made and its receipt goes
//! out as a final `payment-response` event (event streams) and as a `PAYMENT-RESPONSE`
//! trailer (clients that sent `TE: trailers`). It is also kept for the receipts endpoint.
//!
//! The stream holds its lane and its reservation, never the channel: other lanes go on.
//!
//! Cut streams:
//! - the client leaves (or stops reading for longer than the upstream timeout): forwarding
//!   stops, the upstream is still read to its end for its usage (it did the work), and the
//!   record covers the bytes forwarded until then;
//! - the upstream breaks (an error, silence past the timeout, a body over the limit): the
//!   record is made with status 502 over the bytes forwarded, so the server-error rule
//!   applies (free unless `charge_server_errors`).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body::Frame;
use http_body_util::BodyExt;
use tally_core::BodyHasher;
use tally_http::headers::{CHECKPOINT_REQUEST, PAYMENT_RESPONSE};
use tally_http::stream::{final_event, ERROR_EVENT, RECEIPT_EVENT};
use tally_http::usage::UsageReader;
use tally_http::ErrorBody;

use super::forward::{checkpoint_request_value, is_event_stream, observe, settle, Answered, Paid};
use super::strip_payment_fields;
use crate::channel_body::{channel_body, FrameSender};
use crate::gateway::{Admission, Gateway};

/// Frames buffered between the upstream and a slow client: enough to keep both busy, small
/// enough that a slow client pushes back on the upstream instead of on memory.
const FRAMES_IN_FLIGHT: usize = 8;

/// The most bytes of ready frames joined into one write.
const COALESCE_BYTES: usize = 64 * 1024;

/// The status a stream the upstream broke is recorded with (RFC 9110 §15.6.3).
const BROKEN: u16 = 502;

/// Answers with the upstream's head now and streams its body from a task that records the
/// call at the end.
pub(super) fn start(
    gateway: Gateway,
    admission: Admission,
    paid: Paid,
    mut parts: http::response::Parts,
    body: Body,
    admitted_at: Instant,
) -> Response {
    let sse = is_event_stream(&parts.headers);
    let trailers = paid.delivery.trailers;
    // The gateway appends after the upstream's last byte: no length can be promised.
    parts.headers.remove(http::header::CONTENT_LENGTH);
    if trailers {
        parts.headers.insert(
            http::header::TRAILER,
            HeaderValue::from_static(PAYMENT_RESPONSE),
        );
    }
    let (tx, rx) = channel_body::<Infallible>(FRAMES_IN_FLIGHT);
    let limit = gateway.settings().max_response_bytes;
    let reader = UsageReader::for_price(&paid.price, limit);
    let pump = Pump {
        status: parts.status.as_u16(),
        content_type: parts.headers.get(http::header::CONTENT_TYPE).cloned(),
        sse,
        trailers,
        client: Some(tx),
        gateway,
        limit,
    };
    tokio::spawn(pump.run(body, reader, admission, paid, admitted_at));
    Response::from_parts(parts, Body::new(rx))
}

/// How the upstream's body ended.
enum End {
    Complete(Option<HeaderMap>),
    Broken(String),
}

struct Pump {
    status: u16,
    content_type: Option<HeaderValue>,
    sse: bool,
    trailers: bool,
    /// `None` once the client has left.
    client: Option<FrameSender<Infallible>>,
    gateway: Gateway,
    limit: u64,
}

impl Pump {
    async fn run(
        mut self,
        body: Body,
        mut reader: UsageReader,
        admission: Admission,
        paid: Paid,
        admitted_at: Instant,
    ) {
        let channel = admission.channel();
        let (lane, seq) = admission.lane_seq();
        let mut hasher = BodyHasher::default();
        let mut forwarded = Vec::new();
        let end = self
            .pump(body, &mut reader, &mut hasher, &mut forwarded)
            .await;
        let upstream_time = admitted_at.elapsed();
        let (status, upstream_trailers) = match end {
            End::Complete(t) => (self.status, t),
            End::Broken(why) => {
                tracing::warn!(%channel, lane, seq, why, "the upstream broke the stream");
                (BROKEN, None)
            }
        };
        let answered = Answered {
            status,
            content_type: self.content_type.clone(),
            body: Bytes::from(forwarded),
            body_hash: hasher.finish(),
            reported: reader.finish(),
        };
        match settle(&self.gateway, admission, &paid.price, answered).await {
            Ok(recorded) => {
                observe(
                    &self.gateway,
                    channel,
                    (lane, seq),
                    paid.started,
                    upstream_time,
                );
                if self.sse {
                    let data = recorded.payment_response.to_str().unwrap_or_default();
                    self.send(final_event(RECEIPT_EVENT, data).into()).await;
                }
                if self.trailers {
                    let mut t = upstream_trailers.unwrap_or_default();
                    strip_payment_fields(&mut t);
                    t.insert(PAYMENT_RESPONSE, recorded.payment_response.clone());
                    if let Some(v) = checkpoint_request_value(&recorded) {
                        t.insert(CHECKPOINT_REQUEST, v);
                    }
                    self.send_frame(Frame::trailers(t)).await;
                }
            }
            Err(e) => {
                tracing::warn!(%channel, lane, seq, reason = e.reason.code(), "a streamed call was not recorded");
                if self.sse {
                    let body = ErrorBody::new(*e.reason, e.message);
                    let json = serde_json::to_string(&body).unwrap_or_default();
                    self.send(final_event(ERROR_EVENT, &json).into()).await;
                }
            }
        }
    }

    /// Forwards the upstream's body, feeding the hasher and the usage reader, until it ends.
    /// Whatever the upstream already has ready (a burst of events) goes out as one write:
    /// one hand-off per burst, not per event.
    async fn pump(
        &mut self,
        mut body: Body,
        reader: &mut UsageReader,
        hasher: &mut BodyHasher,
        forwarded: &mut Vec<u8>,
    ) -> End {
        let idle = self.gateway.settings().upstream_timeout;
        let mut seen: u64 = 0;
        loop {
            let mut batch = Vec::new();
            let mut next = tokio::time::timeout(idle, body.frame()).await;
            let mut first = true;
            let end = loop {
                let frame = match next {
                    Err(_) if first => {
                        break Some(End::Broken(format!("silent for {} ms", idle.as_millis())))
                    }
                    Err(_) => break None,
                    Ok(None) => break Some(End::Complete(None)),
                    Ok(Some(Err(e))) => break Some(End::Broken(e.to_string())),
                    Ok(Some(Ok(frame))) => frame,
                };
                if let Some(end) = self.take(frame, &mut batch, reader, &mut seen) {
                    break Some(end);
                }
                if batch.len() >= COALESCE_BYTES {
                    break None;
                }
                // Polled once: a frame the upstream already sent, or none ready.
                first = false;
                next = tokio::time::timeout(Duration::ZERO, body.frame()).await;
            };
            if !batch.is_empty() {
                let data = Bytes::from(batch);
                if self.send(data.clone()).await {
                    hasher.update(&data);
                    forwarded.extend_from_slice(&data);
                }
            }
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// One frame of the upstream's body: data joins the batch (read for usage on the way);
    /// trailers end the body.
    fn take(
        &self,
        frame: Frame<Bytes>,
        batch: &mut Vec<u8>,
        reader: &mut UsageReader,
        seen: &mut u64,
    ) -> Option<End> {
        match frame.into_data() {
            Ok(data) => {
                *seen = seen.saturating_add(data.len() as u64);
                if *seen > self.limit {
                    return Some(End::Broken(format!(
                        "the body exceeds {} bytes",
                        self.limit
                    )));
                }
                reader.chunk(&data);
                batch.extend_from_slice(&data);
                None
            }
            Err(frame) => {
                let t = frame.into_trailers().ok()?;
                reader.trailers(&t);
                Some(End::Complete(Some(t)))
            }
        }
    }

    /// Forwards bytes; `false` once the client has left.
    async fn send(&mut self, data: Bytes) -> bool {
        self.send_frame(Frame::data(data)).await
    }

    /// A client that takes nothing for the upstream timeout has left as surely as one that
    /// closed its connection: it must not hold the upstream, the lane and the reservation.
    async fn send_frame(&mut self, frame: Frame<Bytes>) -> bool {
        let Some(tx) = &self.client else {
            return false;
        };
        let idle = self.gateway.settings().upstream_timeout;
        match tokio::time::timeout(idle, tx.send(Ok(frame))).await {
            Ok(Ok(())) => true,
            _ => {
                self.client = None;
                false
            }
        }
    }
}
