//! Paying for one request (spec/PROTOCOL.md §5, HTTP.md §9): lease a lane, sign under the
//! mirror's head, send without holding the client's state (so many requests are in flight
//! at once), verify the receipt, and put the record in its place in the mirror, holding
//! receipts that arrive ahead of a gap until the gap is filled (§5.5).

use std::sync::atomic::{AtomicU64, Ordering};

use super::transmit::Transmitted;
use super::*;
use crate::lanes::Lease;
use tally_http::stream::{FinalEvent, FinalEventSplitter};

/// Counts a request in flight for as long as it lives, cancelled or not: a gap in the mirror
/// is left to requests in flight to fill only while there are some. Owned, since a stream
/// outlives the call that started it.
pub(super) struct InFlight(Arc<AtomicU64>);

impl InFlight {
    pub(super) fn start(counter: Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        InFlight(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the client saw of a response, for checking its receipt.
pub(super) struct Seen {
    /// The status the receipt is checked against.
    pub status: u16,
    /// The hash of the body received.
    pub body_hash: Hash,
    /// The units the response reported, per meter of the route.
    pub reported: tally_core::Units,
    /// For a dispute: the credit the body states.
    pub credit: i128,
}

impl Seen {
    fn whole(price: &Price, raw: &Raw, receipt: &HeaderValue) -> Seen {
        let body_hash = body_hash(&raw.body);
        Seen {
            status: recorded_status(raw.status.as_u16(), receipt, &body_hash),
            body_hash,
            reported: reported_units(price, &raw.headers, &raw.body),
            credit: serde_json::from_slice::<DisputeGranted>(&raw.body)
                .map(|g| g.amount.0)
                .unwrap_or(0),
        }
    }
}

/// The status a stream the upstream broke is recorded with (spec/HTTP.md §5.7).
const BROKEN: u16 = 502;

/// The status to check a receipt against: the response's, unless the receipt's outcome
/// says the stream was broken (recorded as 502 over the bytes forwarded, spec/HTTP.md
/// §5.7). Peeks at the outcome before any check, only to choose the status the checks then
/// hold it to.
pub(super) fn recorded_status(head: u16, receipt: &HeaderValue, body_hash: &Hash) -> u16 {
    let stated = decode_header::<PaymentResponse>("PAYMENT-RESPONSE", receipt.as_bytes())
        .ok()
        .and_then(|pr| pr.extra.receipt.receipt().ok())
        .map(|r| r.outcome.response_hash);
    let broken = tally_core::request::response_hash_with_body_hash(BROKEN, body_hash);
    if head != BROKEN && stated == Some(broken) {
        BROKEN
    } else {
        head
    }
}

/// An event stream answered whole (`send`, or a retry): its final event comes off the
/// body (spec/HTTP.md §5.7).
fn take_final_event(raw: &mut Raw) -> Option<FinalEvent> {
    if !super::stream::streamed(&raw.headers) {
        return None;
    }
    let mut split = FinalEventSplitter::default();
    let mut body = split.feed(&raw.body);
    let (rest, end) = split.finish();
    body.extend(rest);
    if end.is_some() {
        raw.body = Bytes::from(body);
    }
    end
}

/// How a paid request was answered: whole, or as a stream whose receipt comes at its end.
pub(super) enum Answered {
    Whole(Box<PaidResponse>),
    Stream(super::stream::PaidStream),
}

/// What one attempt signed and sent.
pub(super) struct Sent {
    pub auth: Authorization,
    pub sig: tally_core::Signature,
    pub price: Price,
    pub max: u128,
    pub charge_server_errors: bool,
    pub provider: PublicKey,
    pub sent_checkpoint: bool,
    /// The client's restore count when this attempt was signed.
    pub restores: u64,
}

impl Client {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn send_paid(
        &self,
        method: Method,
        path: &str,
        query: &str,
        headers: HeaderMap,
        body: Vec<u8>,
        max_amount: Option<u128>,
        expect: Expect,
        stream: bool,
    ) -> Result<Answered, ClientError> {
        let url = if query.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{query}", self.base)
        };
        let salt = {
            let st = self.state.lock().await;
            st.salt.ok_or_else(|| {
                ClientError::Protocol("no request salt: the key is not bound".into())
            })?
        };
        let req_hash = request_hash(&salt, method.as_str(), path, query, &body);
        // The same request sent again after its answer was lost goes to the lane and seq it
        // was sent at: the provider answers it as a retry, never as a new charge.
        let mut lease = self.lanes.lease_for(&req_hash).await;
        if let Some((seq, _)) = lease.slot.unanswered.filter(|(_, h)| *h == req_hash) {
            lease.slot.next_seq = Some(seq);
        }
        // Resolutions (resync, checkpoint, new terms) each allow one more try. Waiting for a
        // busy lane is not one: our own earlier request on it (before a restart, or whose
        // answer was lost) may take as long as the upstream does, so it is waited for up to
        // one request's timeout.
        let busy_until = std::time::Instant::now() + self.timeout;
        let mut busy_waits = 0u32;
        let mut attempt = 0u32;
        while attempt < 6 {
            attempt += 1;
            let (sent, h) = self
                .sign_attempt(
                    &mut lease, &method, path, &headers, req_hash, max_amount, &expect,
                )
                .await?;
            // Until answered, the lane's seq is unknown: if this future is dropped mid-flight
            // the request may yet be recorded, and the lane resyncs before its next use.
            lease.slot.next_seq = None;
            let raw = {
                let _in_flight = InFlight::start(self.in_flight.clone());
                self.transmit_answer(&method, &url, &h, &body, stream).await
            };
            let mut st = self.state.lock().await;
            let raw = match raw {
                Ok(Transmitted::Whole(raw)) => raw,
                Ok(Transmitted::Stream(resp)) => {
                    // The receipt comes at the end of the stream; until then the lane's seq
                    // is unknown (a stream dropped unfinished resyncs the lane).
                    drop(st);
                    let request = (method.as_str(), path, query, body_hash(&body));
                    return Ok(Answered::Stream(super::stream::PaidStream::paid(
                        self.clone(),
                        resp,
                        lease,
                        sent,
                        request,
                    )));
                }
                Err(e) => {
                    // The provider may have recorded it: the lane learns its seq from the log
                    // before its next use, and a resend of this request comes back here.
                    lease.unanswered(sent.auth.seq, req_hash);
                    self.fill_gaps(&mut st).await?;
                    return Err(e);
                }
            };
            // Answered: unless it was recorded, the seq is still the lane's next.
            lease.slot.next_seq = Some(sent.auth.seq);
            let mut raw = raw;
            let end = take_final_event(&mut raw);
            let receipt_header = match &end {
                Some(FinalEvent::Receipt(v)) => Some(header_value(v)?),
                _ => raw.headers.get(PAYMENT_RESPONSE).cloned(),
            };
            if let Some(v) = receipt_header {
                let seen = Seen::whole(&sent.price, &raw, &v);
                let receipt = self.paid_receipt(&mut st, &v, &sent, &seen, &expect)?;
                let asked = raw.headers.contains_key(CHECKPOINT_REQUEST);
                self.accept(&mut st, &mut lease, &sent, &receipt, asked)
                    .await?;
                let exchange = DisputedExchange {
                    method: method.as_str().to_string(),
                    path: path.to_string(),
                    query: query.to_string(),
                    request_body_hash: body_hash(&body),
                    status: seen.status,
                    response_body_hash: seen.body_hash,
                };
                return Ok(Answered::Whole(Box::new(PaidResponse {
                    status: raw.status,
                    headers: raw.headers,
                    body: raw.body,
                    receipt: Some(receipt),
                    exchange,
                })));
            }
            if let Some(FinalEvent::Error(json)) = end {
                raw.body = Bytes::from(json.into_bytes());
            }
            let err: ErrorBody = serde_json::from_slice(&raw.body).map_err(|_| {
                ClientError::Protocol(format!(
                    "status {} without a receipt or a reason",
                    raw.status
                ))
            })?;
            match err.error.reason {
                Reason::StaleSeq { .. } => {
                    self.resync(&mut st).await?;
                    // Another request holds this seq, so ours was not recorded at it.
                    lease.answered(&req_hash, st.mirror.lanes().tail(lease.slot.lane).next_seq);
                }
                Reason::LaneBusy { .. } if std::time::Instant::now() < busy_until => {
                    // Our own earlier request on this lane (before a restart, or whose
                    // answer was lost) is still being served.
                    drop(st);
                    tokio::time::sleep(Duration::from_millis(20u64 << busy_waits.min(5))).await;
                    busy_waits += 1;
                    attempt -= 1;
                }
                Reason::StateMismatch { size, root, .. } => {
                    if size == st.mirror.size() && root != st.mirror.root() {
                        let ours = st.mirror.root();
                        return Err(Self::stop(
                            &mut st,
                            Misbehavior::Fork {
                                size,
                                ours,
                                theirs: root,
                            },
                        ));
                    }
                    self.resync(&mut st).await?;
                }
                Reason::CheckpointRequired { .. } if st.mirror.size() == 0 => {
                    // Nothing to checkpoint yet (an empty log has no checkpoint): the credit
                    // is held by our own requests in flight, whose records will free it.
                    drop(st);
                    tokio::time::sleep(Duration::from_millis(20u64 << attempt.min(5))).await;
                }
                Reason::CheckpointRequired { .. } => {
                    self.post_checkpoint(&mut st).await?;
                }
                Reason::TermsChanged { .. } => self.adopt_terms(&mut st).await?,
                Reason::RestoreRequired { .. } => self.restore(&mut st).await?,
                Reason::AlreadyRecorded { record } => {
                    self.recorded_elsewhere(&mut st, &sent, &record).await?;
                    lease.answered(&req_hash, sent.auth.seq + 1);
                    return Err(ClientError::ResponseLost { seq: sent.auth.seq });
                }
                reason => {
                    // Refused, so not recorded, nor in flight.
                    lease.answered(&req_hash, sent.auth.seq);
                    return Err(ClientError::Refused {
                        reason,
                        message: err.error.message,
                    });
                }
            }
        }
        Err(ClientError::Protocol(
            "the provider kept refusing after resync".into(),
        ))
    }

    /// Signs one attempt under the mirror's head (its acknowledged state) on the leased
    /// lane.
    #[allow(clippy::too_many_arguments)]
    async fn sign_attempt(
        &self,
        lease: &mut Lease,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        request_hash: Hash,
        max_amount: Option<u128>,
        expect: &Expect,
    ) -> Result<(Sent, HeaderMap), ClientError> {
        let mut st = self.state.lock().await;
        if let Some(m) = &st.stopped {
            return Err(ClientError::Stopped(m.clone()));
        }
        if let Expect::Terms = expect {
            st.guard.check_pay()?;
        }
        let seq = match lease.slot.next_seq {
            Some(seq) => seq,
            None => {
                self.resync(&mut st).await?;
                st.mirror.lanes().tail(lease.slot.lane).next_seq
            }
        };
        lease.slot.next_seq = Some(seq);
        let price = match expect {
            Expect::Terms => st.terms.terms.price_for(method.as_str(), path).clone(),
            Expect::Credit => Price::Fixed {
                amount: Default::default(),
            },
        };
        let route_max = price.max_per_call().unwrap_or(0);
        let max = max_amount.map_or(route_max, |m| m.min(route_max));
        let head = st.mirror.head();
        let auth = Authorization {
            version: tally_core::VERSION,
            channel_id: self.channel,
            lane: lease.slot.lane,
            seq,
            request_hash,
            max_amount: max,
            ack_size: head.size,
            ack_root: head.root,
            ack_cumulative: head.cumulative,
            terms_hash: st.terms.hash,
        };
        let sig = auth.sign(&self.session_key);
        // `accepted` is the requirement the gateway advertises for this route, derived from
        // the terms as the gateway derives it (spec/HTTP.md §3.2), so no 402 is needed.
        let accepted = Requirement::tally(
            &st.terms.terms.chain,
            st.terms.terms.provider_key,
            st.terms.hash,
            &price,
        );
        let payment = PaymentPayload::new(accepted, &auth, sig);
        let mut h = headers.clone();
        let text = encode_header("PAYMENT-SIGNATURE", &payment)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        h.insert(PAYMENT_SIGNATURE, header_value(&text)?);
        let sent_checkpoint = st.checkpoint_due;
        if sent_checkpoint {
            // A checkpoint is signed only over a durable, contiguous mirror.
            st.mirror.sync().await?;
            let cp = self.sign_checkpoint(&st)?;
            let text = encode_header("TALLY-CHECKPOINT", &cp)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            h.insert(CHECKPOINT, header_value(&text)?);
        }
        let sent = Sent {
            auth,
            sig,
            price,
            max,
            charge_server_errors: st.terms.terms.charge_server_errors,
            provider: st.terms.terms.provider_key,
            sent_checkpoint,
            restores: st.restores,
        };
        Ok((sent, h))
    }

    /// Decodes and verifies the receipt of an answered request (signature, our
    /// authorization, the amount the terms give, the response's hash).
    pub(super) fn paid_receipt(
        &self,
        st: &mut State,
        header: &HeaderValue,
        sent: &Sent,
        seen: &Seen,
        expect: &Expect,
    ) -> Result<Receipt, ClientError> {
        let pr: PaymentResponse = decode_header("PAYMENT-RESPONSE", header.as_bytes())
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let receipt = match pr.extra.receipt.receipt() {
            Ok(r) => r,
            Err(e) => {
                return Err(Self::stop(
                    st,
                    Misbehavior::WrongAuthorization(format!("unreadable receipt: {e}")),
                ))
            }
        };
        let expected = match expect {
            Expect::Terms => Some(expected_charge(
                sent.charge_server_errors,
                &sent.price,
                seen.status,
                seen.reported,
                sent.max,
            )),
            Expect::Credit => Some(([0; tally_core::METERS], seen.credit)),
        };
        match check_receipt(
            &receipt,
            &sent.provider,
            &sent.auth,
            &sent.sig,
            seen.status,
            &seen.body_hash,
            expected,
        ) {
            Ok(_) => Ok(receipt),
            Err(m) => Err(Self::stop(st, m)),
        }
    }

    /// A verified receipt's record takes its place in the mirror and the lane moves on:
    /// the end of every paid request that was answered with a receipt.
    pub(super) async fn accept(
        &self,
        st: &mut State,
        lease: &mut Lease,
        sent: &Sent,
        receipt: &Receipt,
        checkpoint_requested: bool,
    ) -> Result<(), ClientError> {
        let record = Record::new(sent.auth, sent.sig, receipt.outcome);
        lease.answered(&sent.auth.request_hash, sent.auth.seq + 1);
        if sent.restores == st.restores {
            self.take_place(st, record, receipt.signature).await?;
        }
        // Else a restore since this was signed disowned it (spec/HTTP.md §5.6): the
        // response is the caller's, the record is not the client's to mirror.
        if sent.sent_checkpoint {
            st.checkpoint_due = false;
        }
        if checkpoint_requested {
            st.checkpoint_due = true;
        }
        Ok(())
    }

    /// The provider says our request was recorded but its response is gone: the record must
    /// be exactly ours; it takes its place in the mirror.
    async fn recorded_elsewhere(
        &self,
        st: &mut State,
        sent: &Sent,
        record: &tally_http::WireRecord,
    ) -> Result<(), ClientError> {
        let bad = |why: String| Misbehavior::BadRecord {
            index: record.decode().map_or(0, |r| r.outcome.index),
            why,
        };
        let decoded = match record.decode() {
            Ok(r) => r,
            Err(e) => return Err(Self::stop(st, bad(e.to_string()))),
        };
        if decoded.authorization.request_hash != sent.auth.request_hash
            || decoded.authorization.lane != sent.auth.lane
            || decoded.authorization.seq != sent.auth.seq
        {
            return Err(Self::stop(
                st,
                bad("already_recorded for another request".into()),
            ));
        }
        if let Err(e) = decoded
            .verify(&self.session_public)
            .and_then(|()| decoded.verify_receipt(&sent.provider, &record.provider_signature))
        {
            return Err(Self::stop(st, bad(e.to_string())));
        }
        self.take_place(st, decoded, record.provider_signature)
            .await
    }

    /// Puts a verified record in the mirror at its index: now if it is the next one, else
    /// held until the records before it arrive. A gap no request in flight can fill (its
    /// answer was lost) is filled from the provider's log.
    pub(super) async fn take_place(
        &self,
        st: &mut State,
        record: Record,
        provider_signature: tally_core::Signature,
    ) -> Result<(), ClientError> {
        if record.outcome.index >= st.mirror.size() {
            st.ahead
                .insert(record.outcome.index, (record, provider_signature));
        }
        self.drain_ahead(st).await?;
        self.fill_gaps(st).await
    }

    /// Mirrors held records that are now next in line.
    pub(super) async fn drain_ahead(&self, st: &mut State) -> Result<(), ClientError> {
        let size = st.mirror.size();
        st.ahead = st.ahead.split_off(&size);
        while let Some((record, sig)) = st.ahead.remove(&st.mirror.size()) {
            if let Err(e) = st.mirror.check_order(&record) {
                let index = record.outcome.index;
                let m = match e {
                    tally_core::SequenceError::WrongCumulative {
                        previous,
                        amount,
                        cumulative,
                    } => Misbehavior::WrongCumulative {
                        expected: tally_core::record::apply_amount(previous, amount)
                            .unwrap_or_default(),
                        got: cumulative,
                    },
                    other => Misbehavior::BadRecord {
                        index,
                        why: other.to_string(),
                    },
                };
                return Err(Self::stop(st, m));
            }
            // Verified; durable with the mirror's next group commit, off this request's
            // critical path (spec/DESIGN-DECISIONS.md).
            st.mirror.append_pipelined(&record, sig).await?;
        }
        Ok(())
    }

    /// Fetches what the provider holds beyond the mirror when receipts wait behind a gap
    /// and nothing in flight can fill it.
    async fn fill_gaps(&self, st: &mut State) -> Result<(), ClientError> {
        if !st.ahead.is_empty() && self.in_flight.load(Ordering::Acquire) == 0 {
            self.resync(st).await?;
        }
        Ok(())
    }

    /// Adopts new terms after `terms_changed`, unless they raise prices without consent.
    async fn adopt_terms(&self, st: &mut State) -> Result<(), ClientError> {
        let fresh = discover(&self.http, &self.base).await?;
        if fresh.terms.provider_key != st.terms.terms.provider_key {
            let m = Misbehavior::ProviderKeyChanged {
                pinned: st.terms.terms.provider_key.to_hex(),
                served: fresh.terms.provider_key.to_hex(),
            };
            return Err(Self::stop(st, m));
        }
        // A raising change refuses the retry unless opted in.
        let State { guard, mirror, .. } = &mut *st;
        guard.review(mirror, &fresh)?;
        st.terms = fresh;
        Ok(())
    }
}
