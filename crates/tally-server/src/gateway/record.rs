//! Recording (DESIGN.md §3 steps 4–5).

use super::*;

impl Gateway {
    /// Steps 4–5: build the outcome, append the record, wait until it is durable (P8), sign
    /// the receipt. `charge` is `(units, amount)`; `amount` is already capped by the caller.
    ///
    /// Cancel-safe: if the caller is dropped (a client that hangs up) while the record is
    /// being committed, the channel stays locked until the record is durable and its state is
    /// then reloaded from the log ([`Committing`]), so the next request of the channel is
    /// never admitted at a seq the log already holds.
    pub async fn record(
        &self,
        admission: Admission,
        status: u16,
        content_type: Option<HeaderValue>,
        body: Bytes,
        units: u64,
        amount: i128,
    ) -> Result<Recorded, GatewayError> {
        let i = &self.inner;
        let auth = admission.authorization;
        let cumulative = apply_amount(auth.prev_cumulative, amount).ok_or_else(|| {
            GatewayError::internal("the amount would take the cumulative out of range")
        })?;
        let outcome = Outcome {
            version: tally_core::VERSION,
            channel_id: auth.channel_id,
            seq: auth.seq,
            authorization_hash: admission.authorization_hash,
            units,
            amount,
            cumulative,
            response_hash: tally_core::request::response_hash(status, &body),
            time_ms: now_ms(),
        };
        let record = Record::new(auth, admission.signature, outcome);
        record
            .check_consistency()
            .map_err(|e| GatewayError::internal(format!("built an invalid record: {e}")))?;
        let store = i.store.for_generation(
            admission
                .state()
                .map(|s| s.generation)
                .ok_or_else(|| GatewayError::internal("channel state missing under its lock"))?,
        )?;
        let commit_start = Instant::now();
        let mut committing = Committing {
            ticket: Some(store.append(auth.channel_id, vec![record.to_bytes()])),
            guard: Some(admission.guard),
        };
        let range = committing
            .durable()
            .await
            .map_err(|e| GatewayError::internal(format!("log append: {e}")))?;
        let mut guard = committing
            .into_guard()
            .ok_or_else(|| GatewayError::internal("channel lock lost while committing"))?;
        i.metrics.commit.observe(commit_start.elapsed());
        if range.start != auth.seq || range.end != auth.seq + 1 {
            return Err(GatewayError::internal(format!(
                "the log appended at {range:?}, expected seq {}",
                auth.seq
            )));
        }
        let head = store
            .head(&auth.channel_id)
            .ok_or_else(|| GatewayError::internal("no head after a durable append"))?;
        // Encode the outcome once: it is both the signed message and the receipt's payload.
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
        let st = guard
            .as_mut()
            .ok_or_else(|| GatewayError::internal("channel state missing under its lock"))?;
        st.size = head.size;
        st.root = head.root;
        st.cumulative = cumulative;
        st.last = Some((record, receipt.signature));
        st.cached = (body.len() <= i.settings.replay_cache_bytes).then(|| CachedResponse {
            seq: auth.seq,
            status,
            content_type,
            body,
            payment_response: payment_response.clone(),
        });
        let checkpoint_request = checkpoint_due(&i.settings.checkpoint, st);
        i.metrics
            .metered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        i.metrics.add_amount(amount);
        Ok(Recorded {
            receipt,
            payment_response,
            checkpoint_request,
        })
    }
}

/// A record handed to the log, with its channel's lock. Dropped before the append resolved
/// (the request's future was cancelled), it forgets the channel's in-memory state, which is
/// then rebuilt from the durable log on next use, and keeps the channel locked until the
/// append has resolved, so nothing is admitted against a log that is about to grow.
struct Committing {
    ticket: Option<tally_log::Ticket>,
    guard: Option<OwnedMutexGuard<Option<ChannelState>>>,
}

impl Committing {
    /// Waits until the record is durable.
    async fn durable(&mut self) -> Result<std::ops::Range<u64>, tally_log::LogError> {
        let result = match self.ticket.as_mut() {
            Some(ticket) => ticket.await,
            None => Err(tally_log::LogError::WriterStopped),
        };
        self.ticket = None;
        result
    }

    fn into_guard(mut self) -> Option<OwnedMutexGuard<Option<ChannelState>>> {
        self.guard.take()
    }
}

impl Drop for Committing {
    fn drop(&mut self) {
        let (Some(mut guard), Some(ticket)) = (self.guard.take(), self.ticket.take()) else {
            return;
        };
        *guard = None;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = ticket.await;
                    drop(guard);
                });
            }
            // Outside a runtime nothing else can take the lock meanwhile.
            Err(_) => {
                let _ = ticket.wait();
                drop(guard);
            }
        }
    }
}

/// Whether a checkpoint is due after the record just appended (spec/HTTP.md §6).
fn checkpoint_due(policy: &CheckpointPolicy, st: &ChannelState) -> Option<u64> {
    if st.size <= st.checkpoint_size {
        return None;
    }
    let records = st.size - st.checkpoint_size;
    let amount = st.cumulative.saturating_sub(st.checkpoint_cumulative);
    let due = (policy.every_records > 0 && records >= policy.every_records)
        || (policy.every_seconds > 0
            && st.checkpoint_at.elapsed() >= Duration::from_secs(policy.every_seconds))
        || (policy.every_amount.0 > 0 && amount >= policy.every_amount.0);
    due.then_some(st.size)
}
