//! Recording (DESIGN.md §3 steps 4–5, §7): the provider assigns the record's index when it
//! appends, under the channel's lock, then waits for durability without it.

use super::*;
use crate::durability::{may_promise, PromiseState};
use tally_core::Units;
use tally_log::{Blake3Hasher, TreeHasher};

/// What a record answers, besides the charge: the response delivered, and for a credit the
/// record it refunds.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `content-type`, kept with a held response.
    pub content_type: Option<HeaderValue>,
    /// The body delivered (held for a retry of the seq).
    pub body: Bytes,
    /// [`tally_core::request::body_hash`] of `body`, computed as it passed.
    pub body_hash: Hash,
    /// Metered units, one count per meter.
    pub units: Units,
    /// Net amount, already capped by the caller.
    pub amount: i128,
    /// For a dispute's credit: the disputed record's index, marked credited (with this
    /// record's index) before the append, so a crash can never credit it twice
    /// (spec/HTTP.md §7).
    pub credits: Option<u64>,
}

impl Gateway {
    /// Steps 4–5: under the channel's lock, give the record the next index and the
    /// cumulative after it, and hand it to the log; then, without the lock, wait until it is
    /// durable (P8) and sign the receipt.
    ///
    /// Cancel-safe: once handed to the log, the record's place is taken whether or not this
    /// future completes; the channel's durable head catches up from the store on its next
    /// use ([`ChannelState::sync_durable`]).
    pub async fn record(
        &self,
        mut admission: Admission,
        answer: Answer,
    ) -> Result<Recorded, GatewayError> {
        let i = &self.inner;
        let slot = admission.slot.clone();
        let auth = admission.authorization;
        let mut guard = slot.clone().lock_owned().await;
        // From here the reservation is settled below, not by the admission's drop.
        admission.consumed = true;
        let st = guard
            .as_mut()
            .filter(|s| s.load == admission.load && !s.stale)
            .ok_or_else(|| {
                GatewayError::new(
                    Reason::StoreUnavailable,
                    "the log was reopened while this request was served; nothing was recorded",
                )
            })?;
        release_reservation(st, &auth);
        let store = i
            .store
            .for_generation(&auth.channel_id, admission.generation)?;
        let index = st.next_index();
        let cumulative = apply_amount(st.tail_cumulative(), answer.amount).ok_or_else(|| {
            GatewayError::internal("the amount would take the cumulative out of range")
        })?;
        let outcome = Outcome {
            version: tally_core::VERSION,
            channel_id: auth.channel_id,
            lane: auth.lane,
            seq: auth.seq,
            index,
            authorization_hash: admission.authorization_hash,
            units: answer.units,
            amount: answer.amount,
            cumulative,
            response_hash: tally_core::request::response_hash_with_body_hash(
                answer.status,
                &answer.body_hash,
            ),
            time_ms: now_ms(),
        };
        let record = Record::new(auth, admission.signature, outcome);
        record
            .check_consistency()
            .map_err(|e| GatewayError::internal(format!("built an invalid record: {e}")))?;
        if let Some(disputed) = answer.credits {
            // Under the lock: two disputes of one record admitted at once (on two lanes)
            // both passed the check at admission; only the first may append its credit.
            if self.credited_here(st, disputed).await? {
                return Err(crate::dispute::refused(format!(
                    "record {disputed} was already credited"
                )));
            }
            self.mark_credit(&auth, disputed, index, admission.generation)
                .await?;
        }
        let bytes = Bytes::from(record.to_bytes());
        let mut frontier = st.frontier.clone();
        frontier.push(&Blake3Hasher, Blake3Hasher.leaf(&bytes));
        let commit_start = Instant::now();
        let ticket = store.append_keyed(auth.channel_id, index, vec![(auth.lane, bytes.to_vec())]);
        if ticket.refused_now() {
            // Nothing was queued: the state is as before this record.
            return Err(match ticket.await {
                Err(e) => e,
                Ok(_) => GatewayError::internal("log append refused"),
            });
        }
        st.push_pending(frontier, cumulative, bytes);
        let lane = st.lanes.entry(auth.lane).or_default();
        lane.tail.next_seq = auth.seq.saturating_add(1);
        lane.tail.ack_size = lane.tail.ack_size.max(auth.ack_size);
        lane.last = Some(channel::LaneLast {
            seq: auth.seq,
            request_hash: auth.request_hash,
            index,
            cached: None,
        });
        let promise = may_promise(
            i.settings.durability,
            PromiseState {
                channel_marked: st.promising,
                is_credit: answer.credits.is_some(),
            },
        )
        .and_then(|(max_delay, max_pending)| i.promises.try_open(max_pending, max_delay));
        if let Some(promise_id) = promise {
            // The receipt goes out now, as a promise (DESIGN.md §8); a retry of it is
            // answered from the held response even before the record is durable.
            let (receipt, payment_response) = self.sign_receipt(outcome, &admission.payer)?;
            st.hold_response(
                auth.lane,
                index,
                cached(&answer, &payment_response),
                i.settings.replay_cache_bytes,
            );
            let checkpoint_request = checkpoint_due(&i.settings.checkpoint, st);
            drop(guard);
            let load = admission.load;
            self.keep_promise(
                ticket,
                slot,
                (auth.channel_id, load),
                promise_id,
                commit_start,
            );
            self.count_metered(&answer);
            return Ok(Recorded {
                receipt,
                payment_response,
                checkpoint_request,
            });
        }
        drop(guard);
        if let Err(e) = ticket.await {
            // What reached the disk is unknown (the store is poisoned, or an earlier append
            // of this channel failed), or the cluster node lost the channel's shard: records
            // promised before this one may be lost with it, so the channel restores before
            // its next append; and this state is forgotten (a newer load is left alone).
            self.note_promising(auth.channel_id, None);
            let mut guard = slot.lock().await;
            if guard.as_ref().is_some_and(|s| s.load == admission.load) {
                *guard = None;
            }
            return Err(e);
        }
        i.metrics.commit.observe(commit_start.elapsed());
        let (receipt, payment_response) = self.sign_receipt(outcome, &admission.payer)?;
        let checkpoint_request = self
            .after_durable(&slot, &admission, &answer, &payment_response, index)
            .await?;
        self.count_metered(&answer);
        Ok(Recorded {
            receipt,
            payment_response,
            checkpoint_request,
        })
    }

    /// The provider's receipt over `outcome` and its `PAYMENT-RESPONSE` header value (with
    /// the channel's `payer` and the record's net amount, spec/HTTP.md §3.3).
    pub(super) fn sign_receipt(
        &self,
        outcome: Outcome,
        payer: &str,
    ) -> Result<(Receipt, HeaderValue), GatewayError> {
        let outcome_bytes = outcome.to_bytes();
        let receipt = Receipt {
            outcome,
            signature: self.inner.key.sign(&outcome_bytes),
        };
        let payment_response = PaymentResponse::receipt_header(
            &self.inner.network,
            payer,
            outcome.amount,
            &outcome_bytes,
            &receipt.signature,
        )
        .ok()
        .and_then(|t| HeaderValue::from_maybe_shared(Bytes::from(t)).ok())
        .ok_or_else(|| GatewayError::internal("rendering PAYMENT-RESPONSE"))?;
        Ok((receipt, payment_response))
    }

    fn count_metered(&self, answer: &Answer) {
        let m = &self.inner.metrics;
        m.metered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        m.add_amount(answer.amount);
    }

    /// Waits, off the request, for a promised record's group commit. A failed commit
    /// leaves the promise to the client's restore: the store is poisoned or the channel's
    /// state is stale, so the state is dropped (it reloads from the log, and the channel
    /// restores before its next append once the store is reopened).
    ///
    /// The channel also leaves this run's set of promising channels before its state is
    /// dropped: its durable mark stays, so the reload requires a restore and a clean shutdown
    /// does not clear the mark. Without that, the lost index could be given a new outcome.
    fn keep_promise(
        &self,
        ticket: crate::backend::Ticket,
        slot: channel::Slot,
        (channel, load): (ChannelId, u64),
        id: u64,
        started: Instant,
    ) {
        let gw = self.clone();
        tokio::spawn(async move {
            let done = ticket.await;
            match done {
                Ok(range) => {
                    gw.inner.promises.close(id);
                    gw.inner.metrics.commit.observe(started.elapsed());
                    // The state learns it without reading the store (a reloaded state: no).
                    let mut guard = slot.lock().await;
                    if let Some(st) = guard.as_mut().filter(|s| s.load == load) {
                        let _stale_marked = st.advance_to(range.end);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "a promised record's group commit failed");
                    // First, whatever holds the slot now: the next load of the channel must
                    // require a restore, even if another failure already emptied the slot.
                    gw.note_promising(channel, None);
                    let mut guard = slot.lock().await;
                    *guard = None;
                    drop(guard);
                    gw.inner.promises.close(id);
                }
            }
        });
    }

    /// Once a record is durable: moves the channel's durable head, holds the response for a
    /// retry, and says whether a checkpoint is due. Best effort: a reloaded state has nothing
    /// to update.
    async fn after_durable(
        &self,
        slot: &channel::Slot,
        admission: &Admission,
        answer: &Answer,
        payment_response: &HeaderValue,
        index: u64,
    ) -> Result<Option<u64>, GatewayError> {
        let mut guard = slot.lock().await;
        let Some(st) = guard.as_mut().filter(|s| s.load == admission.load) else {
            return Ok(None);
        };
        // The record's commit returned: the log holds everything up to it (commits of one
        // channel land in order), no read needed.
        if st.advance_to(index + 1).is_err() {
            return Ok(None);
        }
        st.hold_response(
            admission.authorization.lane,
            index,
            cached(answer, payment_response),
            self.inner.settings.replay_cache_bytes,
        );
        if matches!(self.inner.settings.durability, Durability::Promise { .. }) && !st.promising {
            self.mark_promising(st).await?;
        }
        Ok(checkpoint_due(&self.inner.settings.checkpoint, st))
    }

    /// Marks the channel, durably, as one whose receipts may be promised (spec/HTTP.md §5.6):
    /// once per channel and run, after a synchronous record, under the channel's lock.
    async fn mark_promising(&self, st: &mut ChannelState) -> Result<(), GatewayError> {
        let channel = st.id;
        self.side()
            .mark_promising(channel, st.generation)
            .await
            .map_err(|e| e.into_gateway("storing the promise mark"))?;
        self.note_promising(channel, Some(st.generation));
        st.promising = true;
        Ok(())
    }

    /// Whether record `disputed` already has a credit in this channel's log, durable or still
    /// pending: its mark names an index the log holds, whose record is a credit authorized by
    /// the very request the mark names (spec/HTTP.md §7). A mark whose credit never landed
    /// (its append failed) does not count.
    async fn credited_here(&self, st: &ChannelState, disputed: u64) -> Result<bool, GatewayError> {
        let mark = self
            .side()
            .credit_for(&st.id, disputed)
            .await
            .map_err(|e| e.into_gateway("reading credits"))?;
        let Some(mark) = mark.filter(|m| m.index < st.next_index()) else {
            return Ok(false);
        };
        let record = self.record_of(st, mark.index).await?;
        Ok(record.outcome.amount < 0 && record.authorization.request_hash == mark.request_hash)
    }

    /// Marks `disputed` as credited by the record about to be appended at `index`, durably,
    /// before the append (spec/HTTP.md §7).
    async fn mark_credit(
        &self,
        auth: &Authorization,
        disputed: u64,
        index: u64,
        generation: u64,
    ) -> Result<(), GatewayError> {
        let mark = crate::bindings::CreditMark {
            index,
            request_hash: auth.request_hash,
        };
        self.side()
            .mark_credited(auth.channel_id, disputed, mark, generation)
            .await
            .map_err(|e| e.into_gateway("storing credit mark"))
    }
}

/// The response a retry of the record's seq gets (spec/HTTP.md §9).
fn cached(answer: &Answer, payment_response: &HeaderValue) -> CachedResponse {
    CachedResponse {
        status: answer.status,
        content_type: answer.content_type.clone(),
        body: answer.body.clone(),
        payment_response: payment_response.clone(),
    }
}

/// Whether a checkpoint is due at the durable head (spec/HTTP.md §6).
fn checkpoint_due(policy: &CheckpointPolicy, st: &ChannelState) -> Option<u64> {
    let size = st.durable.size;
    if size <= st.checkpoint_size {
        return None;
    }
    let records = size - st.checkpoint_size;
    let amount = st
        .durable
        .cumulative
        .saturating_sub(st.checkpoint_cumulative);
    let due = (policy.every_records > 0 && records >= policy.every_records)
        || (policy.every_seconds > 0
            && st.checkpoint_at.elapsed() >= Duration::from_secs(policy.every_seconds))
        || (policy.every_amount.0 > 0 && amount >= policy.every_amount.0);
    due.then_some(size)
}
