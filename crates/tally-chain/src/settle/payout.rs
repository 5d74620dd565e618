//! The pull step after a claim (spec/CHAIN.md §4.4, §9 "Payouts"): what a channel's payee is
//! owed becomes transferable once the claimed state's challenge window has passed, and the
//! worker sends one `payoutMany` for every channel that reached that point.

use super::*;

/// After a refused payout (a paused token, say), how long (chain seconds) the worker waits
/// before trying those channels again, so a token that stays paused costs one failed
/// estimate per interval rather than one per tick.
pub(crate) const PAYOUT_RETRY_SECONDS: u64 = 300;

impl<S: CheckpointSource> SettlementWorker<S> {
    /// Records, from a fresh read, whether `state`'s payee is owed more than was paid out
    /// and from when a payout pays it.
    pub(super) fn note_unpaid(&mut self, state: &ChannelFunding, now: u64) {
        if state.payee != self.client.sender() || state.claimed <= state.paid {
            self.unpaid.remove(&state.channel_id);
            return;
        }
        let from = if state.payable_at(now) > 0 {
            now
        } else {
            state.settle_at
        };
        self.unpaid.insert(state.channel_id, from);
    }

    /// Sends one `payoutMany` for every channel whose payout is due at chain time `now`
    /// (at most `max_batch`, earliest first). A refusal is reported in `payout_error` and
    /// those channels wait [`PAYOUT_RETRY_SECONDS`]; it never fails the tick.
    pub(super) async fn pay_out(
        &mut self,
        now: u64,
        report: &mut TickReport,
    ) -> Result<(), ChainError> {
        let mut due: Vec<(u64, ChannelId)> = self
            .unpaid
            .iter()
            .filter(|(_, from)| **from <= now)
            .map(|(id, from)| (*from, *id))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        due.sort();
        due.truncate(self.config.max_batch.max(1));
        // A fresh read decides: an entry may be a guess (0 after our own claim), the window
        // may have been restarted by someone else's post, or someone else paid it out.
        let mut ids = Vec::new();
        for (_, id) in due {
            match self.client.channel(&id).await {
                Ok(state) => {
                    self.note_unpaid(&state, now);
                    if state.payee == self.client.sender() && state.payable_at(now) > 0 {
                        ids.push(id);
                    }
                }
                Err(ChainError::UnknownChannel(_)) => {
                    self.unpaid.remove(&id);
                }
                Err(e) => return Err(e),
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        let words: Vec<B256> = ids.iter().map(|id| B256::from(id.0)).collect();
        let call = self
            .client
            .contract()
            .payoutMany(words)
            .from(self.client.sender())
            .into_transaction_request();
        match self
            .send_call(call, Vec::new(), ids.clone(), false, None, None)
            .await
        {
            Ok(hash) => {
                report.payout = Some((hash, ids));
                self.broadcast_and_check(report).await
            }
            Err(e) if e.is_transient() => Err(e),
            Err(e) => {
                report.payout_error = Some(e.to_string());
                for id in &ids {
                    self.unpaid.insert(*id, now + PAYOUT_RETRY_SECONDS);
                }
                Ok(())
            }
        }
    }
}
