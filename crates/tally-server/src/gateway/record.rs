//! Recording (DESIGN.md §3 steps 4–5, §7): the provider assigns the record's index when it
//! appends, under the channel's lock, then waits for durability without it.

use super::*;

/// What a record answers, besides the charge: the response delivered, and for a credit the
/// record it refunds.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `content-type`, kept with a held response.
    pub content_type: Option<HeaderValue>,
    /// The body delivered.
    pub body: Bytes,
    /// Metered units.
    pub units: u64,
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
            .filter(|s| s.generation == admission.generation)
            .ok_or_else(|| {
                GatewayError::new(
                    Reason::StoreUnavailable,
                    "the log was reopened while this request was served; nothing was recorded",
                )
            })?;
        release_reservation(st, &auth);
        let store = i.store.for_generation(admission.generation)?;
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
            response_hash: tally_core::request::response_hash(answer.status, &answer.body),
            time_ms: now_ms(),
        };
        let record = Record::new(auth, admission.signature, outcome);
        record
            .check_consistency()
            .map_err(|e| GatewayError::internal(format!("built an invalid record: {e}")))?;
        if let Some(disputed) = answer.credits {
            self.mark_credit(&auth, disputed, index).await?;
        }
        let commit_start = Instant::now();
        let ticket =
            store.append_keyed(auth.channel_id, index, vec![(auth.lane, record.to_bytes())]);
        if ticket.refused_now() {
            // Nothing was queued: the state is as before this record.
            return Err(match ticket.await {
                Err(tally_log::LogError::Busy) => GatewayError::new(
                    Reason::Overloaded,
                    "the log's queue is full; nothing was recorded",
                ),
                Err(e) => GatewayError::internal(format!("log append: {e}")),
                Ok(_) => GatewayError::internal("log append refused"),
            });
        }
        st.pending.push_back(cumulative);
        let lane = st.lanes.entry(auth.lane).or_default();
        lane.tail.next_seq = auth.seq.saturating_add(1);
        lane.tail.ack_size = lane.tail.ack_size.max(auth.ack_size);
        lane.last = Some(channel::LaneLast {
            seq: auth.seq,
            request_hash: auth.request_hash,
            index,
            cached: None,
        });
        drop(guard);
        if let Err(e) = ticket.await {
            // What reached the disk is unknown (the store is poisoned, or an earlier append
            // of this channel failed): forget the state; it reloads from the log.
            *slot.lock().await = None;
            return Err(GatewayError::internal(format!("log append: {e}")));
        }
        i.metrics.commit.observe(commit_start.elapsed());
        let outcome_bytes = outcome.to_bytes();
        let receipt = Receipt {
            outcome,
            signature: i.key.sign(&outcome_bytes),
        };
        let payment_response =
            PaymentResponse::receipt_header(&i.network, &outcome_bytes, &receipt.signature)
                .ok()
                .and_then(|t| HeaderValue::from_maybe_shared(Bytes::from(t)).ok())
                .ok_or_else(|| GatewayError::internal("rendering PAYMENT-RESPONSE"))?;
        let checkpoint_request = self
            .after_durable(&slot, &admission, &answer, &payment_response, index, &store)
            .await;
        i.metrics
            .metered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        i.metrics.add_amount(answer.amount);
        Ok(Recorded {
            receipt,
            payment_response,
            checkpoint_request,
        })
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
        store: &LogStore,
    ) -> Option<u64> {
        let mut guard = slot.lock().await;
        let st = guard
            .as_mut()
            .filter(|s| s.generation == admission.generation)?;
        st.sync_durable(store).ok()?;
        st.hold_response(
            admission.authorization.lane,
            index,
            CachedResponse {
                status: answer.status,
                content_type: answer.content_type.clone(),
                body: answer.body.clone(),
                payment_response: payment_response.clone(),
            },
            self.inner.settings.replay_cache_bytes,
        );
        checkpoint_due(&self.inner.settings.checkpoint, st)
    }

    /// Marks `disputed` as credited by the record about to be appended at `index`, durably,
    /// before the append (spec/HTTP.md §7).
    async fn mark_credit(
        &self,
        auth: &Authorization,
        disputed: u64,
        index: u64,
    ) -> Result<(), GatewayError> {
        let mark = crate::bindings::CreditMark {
            index,
            request_hash: auth.request_hash,
        };
        let gw = self.clone();
        let channel = auth.channel_id;
        tokio::task::spawn_blocking(move || gw.bindings().mark_credited(&channel, disputed, &mark))
            .await
            .map_err(|e| GatewayError::internal(format!("credit writer: {e}")))?
            .map_err(|e| GatewayError::internal(format!("storing credit mark: {e}")))
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
