//! Gas measurements behind GAS.md and the gas regression test: every contract operation on a
//! real anvil, plus the per-call alternative x402 "exact" uses (one EIP-3009
//! `transferWithAuthorization` per call) for comparison.

mod measure;
mod render;
mod x402;

use std::time::Duration;

pub use measure::measure;
pub use render::{baseline_json, recorded_claim_gas, render_markdown};
pub use x402::X402Exact;

/// Channel counts the claimMany rows are measured at.
pub const BATCH_SIZES: [usize; 3] = [1, 10, 100];

/// Measured gas (total transaction gas, including the 21000 base) and latencies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GasReport {
    /// `open` of a new channel.
    pub open: u64,
    /// `topUp`.
    pub top_up: u64,
    /// First `claim` on a channel (root and claimed slots go from zero to non-zero).
    pub claim_first: u64,
    /// A later `claim` on a channel, after the previous state's challenge window (so it also
    /// promotes that state to final): the steady state a provider pays per checkpoint.
    pub claim: u64,
    /// `claimCosigned` (two signatures) lowering a state inside its window: a client's credit.
    pub claim_cosigned: u64,
    /// First `payout` to a payee (its token balance goes from zero to non-zero).
    pub payout_first: u64,
    /// A later `payout`: the pull step after each claim's window.
    pub payout: u64,
    /// (channels, total gas) of a `payoutMany` over steady-state channels of one payee.
    pub payout_many: Vec<(usize, u64)>,
    /// (channels, total gas) of a steady-state `claimMany`.
    pub claim_many: Vec<(usize, u64)>,
    /// claimMany of 10 steady-state channels, and the same plus one entry whose claim window
    /// closed (skipped with `ClaimSkipped`), placed last: (without, with).
    pub claim_many_skip: (u64, u64),
    /// `initiateWithdraw`.
    pub initiate_withdraw: u64,
    /// `finalizeWithdraw` (refund transfer included).
    pub finalize_withdraw: u64,
    /// `cooperativeClose` (two signatures, two transfers).
    pub cooperative_close: u64,
    /// `openWithAuthorization`: a gasless open with EIP-3009 (spec/CHAIN.md §2.1).
    pub open_eip3009: u64,
    /// `openWithPermit`: a gasless open with an EIP-2612 permit and the intent signature.
    pub open_permit: u64,
    /// `topUpWithAuthorization`.
    pub top_up_eip3009: u64,
    /// `topUpWithPermit` (marks its intent used).
    pub top_up_permit: u64,
    /// One EIP-3009 `transferWithAuthorization`, the per-call cost of x402 exact.
    pub x402_transfer: u64,
    /// Median wall time of one x402 exact call's settlement (sign, send, receipt) on anvil.
    pub x402_latency_median: Duration,
    /// Slowest of the measured x402 settlements.
    pub x402_latency_max: Duration,
    /// How many x402 settlements the latency figures cover.
    pub x402_samples: usize,
}

impl GasReport {
    /// Gas per additional channel in a claimMany of `n` channels versus one channel.
    pub fn claim_many_marginal(&self, n: usize) -> Option<u64> {
        let one = self.claim_many.iter().find(|(k, _)| *k == 1)?.1;
        let at = self.claim_many.iter().find(|(k, _)| *k == n)?.1;
        if n < 2 {
            return None;
        }
        Some((at.saturating_sub(one)) / (n as u64 - 1))
    }

    /// Gas per additional channel in a payoutMany of `n` channels versus one channel.
    pub fn payout_many_marginal(&self, n: usize) -> Option<u64> {
        let one = self.payout_many.iter().find(|(k, _)| *k == 1)?.1;
        let at = self.payout_many.iter().find(|(k, _)| *k == n)?.1;
        if n < 2 {
            return None;
        }
        Some((at.saturating_sub(one)) / (n as u64 - 1))
    }

    /// A whole channel's onchain life with one checkpoint: open, the first claim,
    /// initiateWithdraw, finalizeWithdraw and the payout.
    pub fn lifecycle(&self) -> u64 {
        self.open + self.claim_first + self.initiate_withdraw + self.finalize_withdraw + self.payout
    }

    /// A whole channel's onchain life when both parties agree: open, then one
    /// `cooperativeClose` (which pays the payee and refunds the payer in the same transaction).
    pub fn cooperative_lifecycle(&self) -> u64 {
        self.open + self.cooperative_close
    }
}
