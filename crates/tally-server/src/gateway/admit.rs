//! Admission (DESIGN.md §3 steps 1–2, spec/HTTP.md §9): everything decided before the
//! upstream is called.
//!
//! The order is chosen so that a stranger costs little: the payment header is decoded and its
//! signature checked against the channel's bound session key before any per-channel state is
//! created, and the request body is read only after admission (the caller then checks it
//! against the signed request hash with [`Admitted::check_body`]).

use super::*;
use tally_core::sequence::{LogState, SequenceError};

/// What a paid request pays for.
#[derive(Clone, Copy, Debug)]
pub enum Purpose<'a> {
    /// A priced route: `max_amount` must cover the route's minimum
    /// ([`Price::min_authorization`]).
    Route(&'a Price),
    /// The dispute endpoint, the one place a zero `max_amount` is valid (spec/HTTP.md §7).
    Dispute,
}

impl Purpose<'_> {
    /// The price quoted in a 402's requirements.
    fn quoted(&self) -> Price {
        match self {
            Purpose::Route(p) => (*p).clone(),
            Purpose::Dispute => Price::Fixed { amount: Amount(0) },
        }
    }
}

impl Admitted {
    /// The request hash the client signed, and the channel's salt.
    fn signed_request_hash(&self) -> (Hash, &tally_core::RequestSalt) {
        match self {
            Admitted::Fresh(a) => (a.authorization.request_hash, &a.salt),
            Admitted::Replay {
                request_hash, salt, ..
            } => (*request_hash, salt),
        }
    }

    /// Checks the body read after admission against the signed request hash: a mismatch
    /// drops the admission (and the channel's lock) and records nothing.
    pub fn check_body(&self, req: &RequestView<'_>, body: &[u8]) -> Result<(), GatewayError> {
        let (signed, salt) = self.signed_request_hash();
        let computed = request_hash(salt, req.method, req.path, req.query, body);
        if signed != computed {
            return Err(GatewayError::new(
                Reason::RequestMismatch {
                    request_hash: computed,
                },
                "the authorization signs a different request than the one received",
            ));
        }
        Ok(())
    }
}

pub(super) fn unbound() -> GatewayError {
    GatewayError::new(
        Reason::UnknownChannel,
        "no session key is bound to this channel; POST it to /tally/v1/channels/{id}/session",
    )
}

/// Strict single verification: a fresh authorization is a non-repudiation decision
/// (spec/PROTOCOL.md §4.2).
fn verify_authorization(
    key: &PublicKey,
    message: &[u8],
    sig: &tally_core::Signature,
) -> Result<(), GatewayError> {
    key.verify(message, sig).map_err(|_| {
        GatewayError::new(
            Reason::InvalidSignature,
            "authorization signature does not verify",
        )
    })
}

impl Gateway {
    /// Steps 1–2 of DESIGN.md §3: parse the payment, verify its signature against the bound
    /// session key, take the channel's lock, check terms, seq, acknowledged state, the
    /// purpose's minimum and the channel's funding. A refusal records nothing.
    pub async fn admit(
        &self,
        req: &RequestView<'_>,
        purpose: Purpose<'_>,
    ) -> Result<Admitted, GatewayError> {
        let i = &self.inner;
        let required = || self.required_for(req, &purpose);
        let header = req.headers.get(PAYMENT_SIGNATURE).ok_or_else(|| {
            GatewayError::new(
                Reason::PaymentRequired,
                "this route is priced; send PAYMENT-SIGNATURE",
            )
            .with_required(required())
        })?;
        let payload: PaymentPayload =
            decode_header("PAYMENT-SIGNATURE", header.as_bytes()).map_err(wire_error)?;
        // The decoder only accepts canonical bytes, so these are `auth.to_bytes()`.
        let (auth, auth_bytes) = payload.authorization_and_bytes().map_err(wire_error)?;
        let sig = payload.payload.signature;
        self.check_accepted(&payload, &auth, &purpose)
            .map_err(|e| e.with_required(required()))?;
        let checkpoint = match req.headers.get(CHECKPOINT) {
            Some(v) => Some(
                decode_header::<WireCheckpoint>("TALLY-CHECKPOINT", v.as_bytes())
                    .map_err(wire_error)?,
            ),
            None => None,
        };
        let mut guard = self
            .lock_verified(&auth.channel_id, &auth_bytes, &sig)
            .await?;
        let generation = loaded(&mut guard)?.generation;
        let store = i.store.for_generation(&auth.channel_id, generation)?;
        let st = loaded(&mut guard)?;
        st.sync_durable(&store).await?;
        if st.restore_required {
            return Err(restore::restore_required(st));
        }
        // Held in the channel's state (loaded with the binding): no database read per request.
        let salt = match st.salt {
            Some(salt) => salt,
            None => self.request_salt(&auth.channel_id).await?,
        };
        if auth.terms_hash != i.terms_hash {
            return Err(GatewayError::new(
                Reason::TermsChanged {
                    terms_hash: i.terms_hash,
                },
                "the terms changed; fetch /.well-known/tally again",
            )
            .with_required(required()));
        }
        if let Some(cp) = &checkpoint {
            self.accept_checkpoint_locked(st, cp).await?;
        }
        if let Some(replay) = self.retried(st, &auth, salt).await? {
            return Ok(replay);
        }
        if let Some(c) = &st.closing {
            return Err(GatewayError::new(
                Reason::ChannelClosed,
                format!(
                    "the payee agreed to a cooperative close at size {}; nothing more is recorded",
                    c.size
                ),
            )
            .with_required(required()));
        }
        if let Err(e) = check_lane(st, &auth, i.settings.max_lanes) {
            return Err(match *e.reason {
                // A seq gap is answered with the lane's last record, like any stale seq.
                Reason::StaleSeq { .. } => self.stale_seq(st, &auth).await,
                _ => e,
            });
        }
        check_acknowledgement(st, &auth, &store).await?;
        check_minimum(&purpose, auth.max_amount).map_err(|e| match e.reason.status() {
            402 => e.with_required(required()),
            _ => e,
        })?;
        let payer = self.check_funding(st, &auth).await.map_err(|e| {
            if e.reason.status() == 402 {
                e.with_required(required())
            } else {
                e
            }
        })?;
        // Reserve: from here until recorded or dropped, this request counts against the
        // deposit and the credit limit at its maximum (P5), and holds its lane.
        st.reserved = st.reserved.saturating_add(auth.max_amount);
        st.in_flight += 1;
        st.lanes.entry(auth.lane).or_default().busy = Some((auth.seq, auth.request_hash));
        let session_key = st.session_key.ok_or_else(unbound)?;
        let cumulatives = (st.checkpoint_cumulative, st.tail_cumulative());
        let load = st.load;
        let slot = ChannelGuard::mutex(&guard).clone();
        drop(guard);
        Ok(Admitted::Fresh(Admission {
            slot,
            generation,
            load,
            authorization: auth,
            signature: sig,
            authorization_hash: tally_core::hash::blake3_of(&[&auth_bytes, &sig.0]),
            price: purpose.quoted(),
            salt,
            session_key,
            payer: payer.to_string(),
            checkpoint_cumulative: cumulatives.0,
            tail_cumulative: cumulatives.1,
            consumed: false,
        }))
    }

    /// The PaymentRequired a 402 for this request carries, with the route's declared response
    /// type as `resource.mimeType` (spec/HTTP.md §3.1); a dispute has none.
    fn required_for(&self, req: &RequestView<'_>, purpose: &Purpose<'_>) -> PaymentRequired {
        let mime_type = match purpose {
            Purpose::Route(_) => self
                .route_of(req.method, req.path)
                .ok()
                .and_then(|(_, route)| route.and_then(|r| r.mime_type.clone())),
            Purpose::Dispute => None,
        };
        self.payment_required(&url_of(req), &purpose.quoted(), mime_type)
    }

    /// The payment's `accepted` must be the requirement this route advertises (spec/HTTP.md
    /// §3.2). One exception: a client still on the previous terms names their hash in
    /// both `accepted` and its authorization; that is left to the terms check, which answers
    /// `terms_changed` (a refusal the client recovers from by itself).
    fn check_accepted(
        &self,
        payload: &PaymentPayload,
        auth: &Authorization,
        purpose: &Purpose<'_>,
    ) -> Result<(), GatewayError> {
        let ours = self.requirement(&purpose.quoted());
        let theirs = &payload.accepted;
        match ours.mismatch(theirs) {
            None => Ok(()),
            Some("extra.terms_hash") if theirs.extra.terms_hash == auth.terms_hash => Ok(()),
            Some(member) => Err(GatewayError::new(
                Reason::RequirementsMismatch {
                    member: member.into(),
                },
                format!(
                    "the payment's accepted.{member} is not this route's requirement; pay under \
                     the one in PAYMENT-REQUIRED (scheme {SCHEME:?} on {:?})",
                    self.inner.network
                ),
            )),
        }
    }

    /// Takes the lock of a channel whose bound session key signed `message`. A channel not
    /// yet in memory gets its state (and a slot in the bounded map) only once the signature
    /// has verified against the binding read from the database, so random channel ids and
    /// forged signatures cost a database read and a signature check, never memory.
    async fn lock_verified(
        &self,
        channel: &ChannelId,
        message: &[u8],
        sig: &tally_core::Signature,
    ) -> Result<ChannelGuard, GatewayError> {
        let checked = match self.inner.channels.existing(channel) {
            Some(_) => false,
            None => {
                let key = self.stored_session(channel).await?.ok_or_else(unbound)?;
                verify_authorization(&key, message, sig)?;
                true
            }
        };
        let guard = self.lock_slot(channel).await?;
        let session = guard
            .as_ref()
            .and_then(|s| s.session_key)
            .ok_or_else(unbound)?;
        if !checked {
            verify_authorization(&session, message, sig)?;
        }
        Ok(guard)
    }

    /// A request at a seq its lane already recorded: a retry of the lane's last request is
    /// answered from the held response, or with its record; anything else below the lane's
    /// next seq is a stale seq. `None`: not a retry.
    async fn retried(
        &self,
        st: &ChannelState,
        auth: &Authorization,
        salt: tally_core::RequestSalt,
    ) -> Result<Option<Admitted>, GatewayError> {
        let Some(lane) = st.lanes.get(&auth.lane) else {
            return Ok(None);
        };
        if auth.seq >= lane.tail.next_seq {
            return Ok(None);
        }
        let Some(last) = lane
            .last
            .as_ref()
            .filter(|l| l.seq == auth.seq && l.request_hash == auth.request_hash)
        else {
            return Err(self.stale_seq(st, auth).await);
        };
        if let Some(c) = &last.cached {
            // Held once its receipt was sent: when durable, or at once when promised.
            self.inner
                .metrics
                .replays
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(Some(Admitted::Replay {
                cached: c.clone(),
                channel: auth.channel_id,
                index: last.index,
                request_hash: auth.request_hash,
                salt,
            }));
        }
        if last.index >= st.durable.size {
            // Recorded, no receipt sent yet: the original request is about to be answered.
            return Err(lane_busy(auth));
        }
        self.inner
            .metrics
            .replays
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stored = self.stored_record(&st.id, last.index).await?;
        Err(GatewayError::new(
            Reason::AlreadyRecorded {
                record: Box::new(self.wire_record(&stored)),
            },
            format!(
                "lane {} seq {} is already recorded; its response is no longer held",
                auth.lane, auth.seq
            ),
        ))
    }

    /// `stale_seq`, with the lane's last record so the client can resync the lane.
    async fn stale_seq(&self, st: &ChannelState, auth: &Authorization) -> GatewayError {
        let lane = st.lanes.get(&auth.lane);
        let expected = lane.map_or(0, |l| l.tail.next_seq);
        // Only a record whose receipt was already sent: durable, or promised (its response
        // held). A pending record nobody has a receipt for is never signed out (P8), since a
        // failed commit may yet give its index another outcome.
        let sent = lane
            .and_then(|l| l.last.as_ref())
            .filter(|l| l.index < st.durable.size || l.cached.is_some());
        let last_record = match sent {
            Some(l) => self.record_of(st, l.index).await.ok(),
            None => None,
        }
        .map(|r| Box::new(self.wire_record(&r)));
        GatewayError::new(
            Reason::StaleSeq {
                lane: auth.lane,
                expected_seq: expected,
                last_record,
            },
            format!(
                "lane {} seq {} is not the lane's next seq {expected}",
                auth.lane, auth.seq
            ),
        )
    }

    /// The channel's funding must be acceptable for every paid request, disputes included
    /// (open, not withdrawing, paying this payee in this token, a long enough withdraw
    /// delay); a non-zero maximum must also be covered by the deposit and stay within the
    /// credit limit past the last client-signed checkpoint (P5).
    async fn check_funding(
        &self,
        st: &ChannelState,
        auth: &Authorization,
    ) -> Result<Address, GatewayError> {
        let i = &self.inner;
        // Every record handed to the log, and every admitted request at its maximum (P5).
        let committed = st.tail_cumulative().saturating_add(st.reserved);
        let need = committed.checked_add(auth.max_amount);
        let mut funding = i.funding.get(&st.id).await?;
        let short = |f: &tally_chain::ChannelFunding| need.is_none_or(|n| n > f.deposit);
        if auth.max_amount > 0 && short(&funding) {
            funding = i.funding.refresh(&st.id).await?;
        }
        let min_delay = i
            .settings
            .min_withdraw_delay
            .max(tally_chain::funding::MIN_WITHDRAW_DELAY);
        if let Err(refusal) = funding.acceptable(min_delay, i.payee, i.token) {
            use tally_chain::funding::FundingRefusal as F;
            let reason = match refusal {
                F::Closed | F::Withdrawing { .. } => Reason::ChannelClosed,
                _ => Reason::UnknownChannel,
            };
            return Err(GatewayError::new(reason, refusal.to_string()));
        }
        if auth.max_amount == 0 {
            return Ok(funding.payer);
        }
        if short(&funding) {
            return Err(GatewayError::new(
                Reason::InsufficientFunds {
                    remaining: Amount(funding.deposit.saturating_sub(committed)),
                },
                "the deposit does not cover this call's maximum on top of what is charged and in flight",
            ));
        }
        let exposure = need
            .unwrap_or(u128::MAX)
            .saturating_sub(st.checkpoint_cumulative);
        if exposure > i.settings.credit_limit {
            return Err(GatewayError::new(
                Reason::CheckpointRequired {
                    size: st.durable.size,
                },
                format!(
                    "serving would put {exposure} beyond the last checkpoint (limit {})",
                    i.settings.credit_limit
                ),
            ));
        }
        Ok(funding.payer)
    }
}

fn lane_busy(auth: &Authorization) -> GatewayError {
    GatewayError::new(
        Reason::LaneBusy {
            lane: auth.lane,
            seq: auth.seq,
        },
        format!(
            "lane {} has a request in flight; retry once it is answered",
            auth.lane
        ),
    )
}

/// R8 at admission (spec/PROTOCOL.md §5.4): the lane exists under the terms, is free, and
/// this is its next seq; a lane never acknowledges less than it did before.
fn check_lane(st: &ChannelState, auth: &Authorization, max_lanes: u32) -> Result<(), GatewayError> {
    let lane = st.lanes.get(&auth.lane);
    if lane.is_some_and(|l| l.busy.is_some()) {
        return Err(lane_busy(auth));
    }
    let mut lanes = tally_core::sequence::Lanes::default();
    if let Some(l) = lane {
        lanes.set(auth.lane, l.tail);
    }
    lanes.check(auth, max_lanes).map_err(|e| match e {
        SequenceError::LaneOutOfRange { max_lanes, .. } => {
            GatewayError::new(Reason::LaneOutOfRange { max_lanes }, e.to_string())
        }
        SequenceError::SeqGap { expected, .. } => GatewayError::new(
            Reason::StaleSeq {
                lane: auth.lane,
                expected_seq: expected,
                last_record: None,
            },
            e.to_string(),
        ),
        other => state_mismatch(st, other.to_string()),
    })
}

/// R7 at admission: the acknowledged state is one the log has (durable, or appended in memory
/// and promised), recent enough that the record this request may become stays within the
/// acknowledgement window even if every request now in flight is appended first.
async fn check_acknowledgement(
    st: &mut ChannelState,
    auth: &Authorization,
    store: &Log,
) -> Result<(), GatewayError> {
    let worst_index = st.next_index().saturating_add(st.in_flight);
    tally_core::sequence::check_ack_bounds(auth.ack_size, worst_index, st.next_index())
        .map_err(|e| state_mismatch(st, e.to_string()))?;
    let claimed = LogState::acknowledged_by(auth);
    let actual = if let Some(state) = st.state_at(auth.ack_size) {
        state
    } else if st.acked.is_some_and(|a| a.size == auth.ack_size) {
        st.acked.unwrap_or(st.durable)
    } else {
        let state = state_at(store, &st.id, auth.ack_size).await?;
        st.acked = Some(state);
        state
    };
    // Roots are compared in constant time (they are MACs of the log's content to whoever
    // holds it); sizes and cumulatives are public to both parties.
    use subtle::ConstantTimeEq;
    let same_root: bool = actual.root.0.ct_eq(&claimed.root.0).into();
    if !same_root || actual.cumulative != claimed.cumulative {
        return Err(state_mismatch(
            st,
            format!(
                "the acknowledged state at size {} is not the log's",
                auth.ack_size
            ),
        ));
    }
    Ok(())
}

/// The durable log's state at `size` (≤ its head): the root from the tiles, the cumulative
/// from the record before it.
pub(super) async fn state_at(
    store: &Log,
    channel: &ChannelId,
    size: u64,
) -> Result<LogState, GatewayError> {
    let root = store.root_at(channel, size).await?;
    let cumulative = match size {
        0 => 0,
        n => {
            crate::channel::read_record(store, channel, n - 1)
                .await?
                .outcome
                .cumulative
        }
    };
    Ok(LogState {
        size,
        root,
        cumulative,
    })
}

/// A route needs a `max_amount` of at least its minimum charge; a dispute needs exactly 0
/// (spec/HTTP.md §7, §9). Pure, so the rule is tested on its own.
fn check_minimum(purpose: &Purpose<'_>, max_amount: u128) -> Result<(), GatewayError> {
    match purpose {
        Purpose::Dispute if max_amount != 0 => Err(GatewayError::malformed(
            "a dispute is authorized with max_amount 0 (spec/PROTOCOL.md §5.3)",
        )),
        Purpose::Dispute => Ok(()),
        Purpose::Route(price) => {
            let min = price.min_authorization().unwrap_or(0);
            if max_amount < min {
                return Err(GatewayError::new(
                    Reason::AmountTooLow { price: Amount(min) },
                    format!("max_amount {max_amount} is below this route's minimum {min}"),
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metered(unit: u128, min_charge: u128) -> Price {
        let mut m = tally_http::MeteredPrice::header("x-units", unit, 1000);
        m.min_charge = Amount(min_charge);
        Price::Metered(m)
    }

    #[test]
    fn zero_maximum_is_only_for_disputes() {
        let fixed = Price::Fixed { amount: Amount(5) };
        assert!(check_minimum(&Purpose::Route(&fixed), 0).is_err());
        assert!(check_minimum(&Purpose::Route(&fixed), 4).is_err());
        assert!(check_minimum(&Purpose::Route(&fixed), 5).is_ok());
        assert!(check_minimum(&Purpose::Route(&metered(3, 0)), 0).is_err());
        assert!(check_minimum(&Purpose::Route(&metered(3, 0)), 2).is_err());
        assert!(check_minimum(&Purpose::Route(&metered(3, 0)), 3).is_ok());
        assert!(check_minimum(&Purpose::Route(&metered(3, 50)), 49).is_err());
        assert!(check_minimum(&Purpose::Route(&metered(0, 0)), 0).is_err());
        assert!(check_minimum(&Purpose::Route(&metered(0, 0)), 1).is_ok());
        assert!(check_minimum(&Purpose::Dispute, 0).is_ok());
        assert!(check_minimum(&Purpose::Dispute, 1).is_err());
    }
}
