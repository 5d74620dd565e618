//! The provider closes what the client agreed to (spec/CHAIN.md §9 "Agreed closes"): a
//! cooperative close both parties signed (the gateway keeps both signatures, spec/HTTP.md
//! §5.4) that nobody submitted within `close_timeout` is submitted by the worker itself, so
//! the payee is paid the agreed amount, and the payer refunded the rest, without waiting for
//! a client that may never come back. While a close is pending its channel is never claimed:
//! the close pays the agreed split at once, and a claim would only cost gas. A channel whose
//! payer starts a withdrawal instead gets its close submitted at once, as urgent as a claim
//! near its deadline.

use super::*;
use crate::eip712::{checkpoint_to_abi, CloseAgreement};

/// A cooperative close both parties signed, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgreedClose {
    /// The final state and both Close signatures, as `cooperativeClose` takes them.
    pub agreement: CloseAgreement,
    /// When the payee signed it (unix seconds), if the source knows; otherwise the worker
    /// counts `close_timeout` from the head block's time when it first sees the close.
    pub agreed_at: Option<u64>,
}

/// What the worker knows of one agreed close.
pub(super) struct Tracked {
    close: AgreedClose,
    /// Chain time from which the worker submits it (`agreed_at + close_timeout`).
    due: u64,
    /// After a refused simulation, chain time before which it is not tried again (and the
    /// channel is claimed as usual meanwhile).
    retry_at: u64,
    /// The channel is closed onchain (by anyone): nothing left to do.
    done: bool,
}

impl<S: CheckpointSource> SettlementWorker<S> {
    /// Takes in the source's agreed closes at chain time `now`; new ones become due
    /// `close_timeout` after they were agreed (or first seen).
    pub(super) async fn learn_closes(&mut self, now: u64) -> Result<(), ChainError> {
        let timeout = self.config.close_timeout.as_secs();
        for close in self.source.agreed_closes().await? {
            let id = close.agreement.checkpoint.channel_id;
            self.closes.entry(id).or_insert_with(|| Tracked {
                close,
                due: close.agreed_at.unwrap_or(now).saturating_add(timeout),
                retry_at: 0,
                done: false,
            });
        }
        Ok(())
    }

    /// Whether `id` has an agreed close the worker will submit, so it must not be claimed.
    pub(super) fn close_pending(&self, id: &ChannelId, now: u64) -> bool {
        self.closes
            .get(id)
            .is_some_and(|t| !t.done && t.retry_at <= now)
    }

    /// Submits the first due close (earliest due first; a withdrawing channel's at once)
    /// after a fresh read and a simulation. A refused simulation goes to `close_rejected` and
    /// is retried after [`payout::PAYOUT_RETRY_SECONDS`]. Returns whether one was sent.
    pub(super) async fn submit_due_close(
        &mut self,
        now: u64,
        report: &mut TickReport,
    ) -> Result<bool, ChainError> {
        let mut due: Vec<(u64, ChannelId)> = self
            .closes
            .iter()
            .filter(|(id, _)| self.close_pending(id, now))
            .filter(|(id, t)| t.due <= now || self.withdrawing.contains_key(*id))
            .map(|(id, t)| (t.due, *id))
            .collect();
        due.sort();
        for (_, id) in due {
            let state = match self.client.channel(&id).await {
                Ok(s) => s,
                Err(ChainError::UnknownChannel(_)) => {
                    self.closes.remove(&id);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let deadline = match state.withdraw {
                WithdrawState::Closed => {
                    self.mark_closed(&id);
                    continue;
                }
                WithdrawState::Pending { at } => Some(at),
                WithdrawState::None => None,
            };
            let Some(close) = self.closes.get(&id).map(|t| t.close.agreement) else {
                continue;
            };
            let call = self
                .client
                .contract()
                .cooperativeClose(
                    checkpoint_to_abi(&close.checkpoint),
                    close.signer_sig.to_abi(),
                    close.payee_sig.to_abi(),
                )
                .from(self.client.sender());
            match call.call().await.map_err(ChainError::from) {
                Ok(_) => {}
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    report.close_rejected.push((id, e.to_string()));
                    if let Some(t) = self.closes.get_mut(&id) {
                        t.retry_at = now.saturating_add(payout::PAYOUT_RETRY_SECONDS);
                    }
                    continue;
                }
            }
            let request = call.into_transaction_request();
            let hash = self
                .send_call(request, Vec::new(), Vec::new(), false, deadline, Some(id))
                .await?;
            report.close = Some((hash, id));
            self.broadcast_and_check(report).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The channel is closed onchain: its close needs nothing more, and nothing is owed
    /// through claims (a cooperative close pays out in the same transaction).
    pub(super) fn mark_closed(&mut self, id: &ChannelId) {
        if let Some(t) = self.closes.get_mut(id) {
            t.done = true;
        }
        self.withdrawing.remove(id);
    }
}
