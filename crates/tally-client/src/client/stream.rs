//! Paying for a streamed response (spec/HTTP.md §5.7): the body is handed to the caller as
//! it arrives, hashed and scanned for usage on the way; at its end the receipt (the final
//! `payment-response` event, or the receipts endpoint when the end was lost) is checked
//! against exactly the bytes received and the usage they reported, and the record takes
//! its place in the mirror like any other.

use super::paid::{recorded_status, InFlight, Seen, Sent};
use super::*;
use crate::lanes::Lease;
use tally_core::BodyHasher;
use tally_http::api::ReceiptFound;
use tally_http::stream::{FinalEvent, FinalEventSplitter};
use tally_http::usage::UsageReader;

/// Whether a response carries its receipt after its body: an event stream without a
/// `PAYMENT-RESPONSE` header (a retry of a streamed call is answered whole, with it).
pub(super) fn streamed(headers: &HeaderMap) -> bool {
    let sse = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"));
    sse && !headers.contains_key(PAYMENT_RESPONSE)
}

/// A response being received. Read it with [`PaidStream::chunk`] until `None`, then
/// [`PaidStream::finish`] for the verified receipt.
pub struct PaidStream {
    status: StatusCode,
    headers: HeaderMap,
    inner: Inner,
}

enum Inner {
    /// Answered whole (a free route, a buffered answer, a retry): the body is handed out
    /// once and the receipt, if any, is already verified.
    Whole(Option<Bytes>, Option<Box<PaidResponse>>),
    /// A streamed paid answer.
    Live(Box<Live>),
}

struct Live {
    client: Client,
    resp: reqwest::Response,
    lease: Lease,
    sent: Sent,
    /// Method, path, query and request body hash, for the dispute exchange.
    request: (String, String, String, Hash),
    splitter: FinalEventSplitter,
    hasher: BodyHasher,
    usage: UsageReader,
    end: Option<FinalEvent>,
    /// The transport failed before the end.
    cut: bool,
    done: bool,
    /// Counted as a request in flight until finished or dropped, so the mirror does not
    /// fetch the record this stream will bring.
    in_flight: Option<InFlight>,
}

/// What a finished stream paid.
#[derive(Clone, Debug)]
pub struct StreamPaid {
    /// The verified receipt (`None` on free routes).
    pub receipt: Option<Receipt>,
    /// The request and response behind the receipt's hashes, kept for a dispute.
    pub exchange: DisputedExchange,
    /// The upstream broke the stream: it is recorded as a 502 (free unless the terms
    /// charge server errors).
    pub broken: bool,
}

impl PaidStream {
    pub(super) fn whole(resp: PaidResponse) -> Self {
        PaidStream {
            status: resp.status,
            headers: resp.headers.clone(),
            inner: Inner::Whole(Some(resp.body.clone()), Some(Box::new(resp))),
        }
    }

    pub(super) fn paid(
        client: Client,
        resp: reqwest::Response,
        lease: Lease,
        sent: Sent,
        request: (&str, &str, &str, Hash),
    ) -> Self {
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut usage = UsageReader::for_price(&sent.price, u64::MAX);
        usage.headers(&headers);
        let in_flight = InFlight::start(client.in_flight.clone());
        let live = Live {
            client,
            resp,
            lease,
            sent,
            request: (
                request.0.to_string(),
                request.1.to_string(),
                request.2.to_string(),
                request.3,
            ),
            splitter: FinalEventSplitter::default(),
            hasher: BodyHasher::default(),
            usage,
            end: None,
            cut: false,
            done: false,
            in_flight: Some(in_flight),
        };
        PaidStream {
            status,
            headers,
            inner: Inner::Live(Box::new(live)),
        }
    }

    /// The response's status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response's headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The next bytes of the body, as they arrive; `None` at its end. A transport error is
    /// returned once; [`finish`](Self::finish) then looks for the receipt at the gateway.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        let live = match &mut self.inner {
            Inner::Whole(body, _) => return Ok(body.take().filter(|b| !b.is_empty())),
            Inner::Live(live) => live,
        };
        while !live.done {
            match live.resp.chunk().await {
                Ok(Some(bytes)) => {
                    let body = live.splitter.feed(&bytes);
                    if !body.is_empty() {
                        return Ok(Some(live.take(body)));
                    }
                }
                Ok(None) => {
                    live.done = true;
                    let (rest, end) = std::mem::take(&mut live.splitter).finish();
                    live.end = end;
                    if !rest.is_empty() {
                        return Ok(Some(live.take(rest)));
                    }
                }
                Err(e) => {
                    live.done = true;
                    live.cut = true;
                    let (rest, _) = std::mem::take(&mut live.splitter).finish();
                    live.take(rest);
                    return Err(e.into());
                }
            }
        }
        Ok(None)
    }

    /// Reads what is left, then verifies the receipt against every byte received and puts
    /// its record in the mirror.
    pub async fn finish(mut self) -> Result<StreamPaid, ClientError> {
        while let Ok(Some(_)) = self.chunk().await {}
        let status = self.status.as_u16();
        let live = match self.inner {
            Inner::Whole(_, resp) => {
                let resp = resp.ok_or_else(|| ClientError::Protocol("finished twice".into()))?;
                return Ok(StreamPaid {
                    receipt: resp.receipt,
                    exchange: resp.exchange,
                    broken: false,
                });
            }
            Inner::Live(live) => live,
        };
        live.settle(status).await
    }
}

impl Live {
    /// Body bytes for the caller, hashed and scanned for usage on the way.
    fn take(&mut self, body: Vec<u8>) -> Bytes {
        self.hasher.update(&body);
        self.usage.chunk(&body);
        Bytes::from(body)
    }

    async fn settle(mut self: Box<Self>, status: u16) -> Result<StreamPaid, ClientError> {
        let body_hash = self.hasher.finish();
        let header = match self.end.take() {
            Some(FinalEvent::Receipt(v)) => v,
            Some(FinalEvent::Error(json)) => {
                // Nothing was recorded: the seq is still the lane's next.
                self.lease
                    .answered(&self.sent.auth.request_hash, self.sent.auth.seq);
                return Err(refusal(json.as_bytes()));
            }
            // The connection broke before the end: the gateway recorded what it handed to
            // the connection, which may be more than arrived, so no receipt can be held to
            // these bytes. Not a misbehavior: the record comes into the mirror from the log
            // (verified there) before the lane's next use, and the caller may dispute it.
            None if self.cut => {
                self.lease
                    .unanswered(self.sent.auth.seq, self.sent.auth.request_hash);
                return Err(ClientError::StreamCut {
                    seq: self.sent.auth.seq,
                });
            }
            None => match self.fetch_receipt().await {
                Ok(v) => v,
                Err(e) => {
                    // The provider may have recorded it: the lane learns its seq from the
                    // log before its next use.
                    self.lease
                        .unanswered(self.sent.auth.seq, self.sent.auth.request_hash);
                    return Err(e);
                }
            },
        };
        let header = header_value(&header)?;
        let recorded = recorded_status(status, &header, &body_hash);
        let broken = recorded != status;
        let usage = std::mem::replace(&mut self.usage, UsageReader::new(&[], 0));
        let seen = Seen {
            status: recorded,
            body_hash,
            reported: usage.finish(),
            credit: 0,
        };
        // Answered: no longer in flight, so a gap behind this record is filled from the log.
        self.in_flight.take();
        let client = self.client.clone();
        let mut st = client.state.lock().await;
        let receipt = client.paid_receipt(&mut st, &header, &self.sent, &seen, &Expect::Terms)?;
        client
            .accept(&mut st, &mut self.lease, &self.sent, &receipt, false)
            .await?;
        let (method, path, query, request_body_hash) = self.request.clone();
        Ok(StreamPaid {
            receipt: Some(receipt),
            exchange: DisputedExchange {
                method,
                path,
                query,
                request_body_hash,
                status: seen.status,
                response_body_hash: body_hash,
            },
            broken,
        })
    }

    /// The receipt from the receipts endpoint, when the stream's end was lost: waits while
    /// the gateway is still recording it (`lane_busy`), up to the client's timeout.
    async fn fetch_receipt(&self) -> Result<String, ClientError> {
        let c = &self.client;
        let a = &self.sent.auth;
        let url = format!(
            "{}{API_PREFIX}/channels/{}/receipts?lane={}&seq={}",
            c.base,
            c.channel.to_hex(),
            a.lane,
            a.seq
        );
        let until = std::time::Instant::now() + c.timeout;
        let mut wait = 0u32;
        loop {
            match c.get_json::<ReceiptFound>(url.clone()).await {
                Ok(found) => return Ok(found.payment_response),
                Err(ClientError::Refused {
                    reason: Reason::LaneBusy { .. },
                    ..
                }) if std::time::Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(10u64 << wait.min(6))).await;
                    wait += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
