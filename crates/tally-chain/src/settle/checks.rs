//! The offchain checks that keep a checkpoint the contract would refuse out of a claim
//! (spec/CHAIN.md §4.1).

use super::*;

impl<S: CheckpointSource> SettlementWorker<S> {
    /// Why the contract would refuse `cp` for `state`, checked offchain; None if it would not.
    pub(super) fn unclaimable(
        &self,
        state: &ChannelFunding,
        cp: &ChainCheckpoint,
    ) -> Option<String> {
        if state.payee != self.client.sender() {
            return Some(format!(
                "payee is {}, not this worker's {}",
                state.payee,
                self.client.sender()
            ));
        }
        if cp.checkpoint.size <= state.credit_size {
            return Some(format!(
                "size {} not above the last credit's {}",
                cp.checkpoint.size, state.credit_size
            ));
        }
        if cp.checkpoint.cumulative.min(state.deposit) < state.claimed {
            return Some(format!(
                "cumulative {} below claimed {}",
                cp.checkpoint.cumulative, state.claimed
            ));
        }
        if let Err(e) = cp.verify(&self.client.domain(), state.signer) {
            return Some(e.to_string());
        }
        None
    }
}
