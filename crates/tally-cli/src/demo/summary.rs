//! What `tally demo` prints at the end: every number it measured, as JSON (`--json`) or a
//! short text summary.

use serde::Serialize;

use super::stream;

/// What the demo did, for the summary.
#[derive(Clone, Debug, Serialize)]
pub struct DemoSummary {
    /// Paid calls made.
    pub calls: u64,
    /// Of which fixed-price.
    pub fixed_calls: u64,
    /// Of which metered.
    pub metered_calls: u64,
    /// Of which answered 500 (charged, then disputed).
    pub failed_calls: u64,
    /// Total charged up to the claim.
    pub charged: String,
    /// Paid calls made after the claim, so the dispute's credit nets against usage the chain
    /// has not settled yet (spec/HTTP.md §7).
    pub calls_after_claim: u64,
    /// What they charged.
    pub charged_after_claim: String,
    /// Net after the dispute's credit: charged + charged after the claim + the credit.
    pub net_after_dispute: String,
    /// Records in the log at the checkpoint.
    pub checkpoint_size: u64,
    /// Checkpoints the client signed.
    pub checkpoints: usize,
    /// The one claim transaction.
    pub claim_transaction: String,
    /// Its gas.
    pub claim_gas: u64,
    /// Claim gas divided by the calls it settled.
    pub gas_per_call: f64,
    /// The `payout` that transferred what the claim made owed, once its challenge window
    /// passed (the demo moves the local chain's clock past it; spec/CHAIN.md §4.4).
    pub payout_transaction: String,
    /// Its gas.
    pub payout_gas: u64,
    /// Claim and payout gas together, divided by the calls they settled.
    pub settle_gas_per_call: f64,
    /// `open` (the token pull included; `approve` is not counted, as in GAS.md).
    pub open_gas: u64,
    /// `initiateWithdraw`: the payer leaves at the end (spec/CHAIN.md §5).
    pub withdraw_gas: u64,
    /// The worker's claim of the final checkpoint (usage after the first claim, the
    /// credit, the streamed completions), at once since the channel is withdrawing.
    pub final_claim_transaction: String,
    /// Its gas.
    pub final_claim_gas: u64,
    /// The payout of the final claim, after its window.
    pub final_payout_gas: u64,
    /// `finalizeWithdraw`, which refunded the rest and closed the channel.
    pub finalize_gas: u64,
    /// Records in the final checkpoint.
    pub final_size: u64,
    /// Paid to the payee in all (the final checkpoint's cumulative).
    pub paid_onchain: String,
    /// Refunded to the payer.
    pub refund: String,
    /// Paid calls over the channel's whole life: every record but the credit.
    pub channel_calls: u64,
    /// Every transaction of the channel's life: open, both claims, both payouts,
    /// initiateWithdraw and finalizeWithdraw (GAS.md, "whole channel, unilateral exit").
    pub channel_gas: u64,
    /// `channel_gas` divided by `channel_calls`.
    pub channel_gas_per_call: f64,
    /// What one-per-call settlement pays each call with ([`PER_CALL_TRANSFER`]).
    pub per_call_transfer: String,
    /// The one such transfer the demo made on its chain, for its gas.
    pub per_call_transfer_transaction: String,
    /// Its gas, measured.
    pub per_call_transfer_gas: u64,
    /// Transactions one-per-call settlement would need: one per paid call of the channel.
    pub one_per_call_transactions: u64,
    /// Their gas: the transactions times the measured transfer's gas.
    pub one_per_call_gas: u64,
    /// How many times the channel's whole-life gas (`channel_gas`) that is: the same calls
    /// paid one transfer each, against open, claims, payouts and the exit.
    pub one_per_call_ratio: f64,
    /// Paid onchain by the claim.
    pub claimed_onchain: String,
    /// Audit throughput.
    pub audit_records_per_second: f64,
    /// Discrepancies the audit found (0).
    pub audit_discrepancies: usize,
    /// Index of the disputed record.
    pub disputed_index: u64,
    /// The credit granted.
    pub credit: String,
    /// Rule that granted it.
    pub credit_rule: String,
    /// The streamed completions paid per input and output token after the dispute.
    pub streamed: stream::Streamed,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Where the artifacts are, when kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
}

impl DemoSummary {
    /// Counts the channel's `open` into its whole-life gas and sets the per-call figures and
    /// the one-per-call comparison from it (the other transactions are already in).
    pub fn count_channel(&mut self, open_gas: u64) {
        self.open_gas = open_gas;
        self.channel_gas = open_gas
            + self.claim_gas
            + self.payout_gas
            + self.withdraw_gas
            + self.final_claim_gas
            + self.final_payout_gas
            + self.finalize_gas;
        self.channel_gas_per_call = self.channel_gas as f64 / self.channel_calls.max(1) as f64;
        self.one_per_call_transactions = self.channel_calls;
        self.one_per_call_gas = self.channel_calls * self.per_call_transfer_gas;
        self.one_per_call_ratio = self.one_per_call_gas as f64 / self.channel_gas.max(1) as f64;
    }

    /// The short readable summary.
    pub fn render(&self) -> String {
        let kept = self
            .kept
            .as_ref()
            .map(|k| format!("\n  artifacts kept in {k} (open {k}/bill.html to see the bill)\n"))
            .unwrap_or_default();
        format!(
            "tally demo: done in {:.1} s\n\n\
             \x20 calls          {} paid ({} fixed-price, {} metered, {} failed upstream)\n\
             \x20 amount         {} charged, {} more by {} call(s) after the claim, {} net after the dispute's credit\n\
             \x20 onchain        1 claim settled {} calls ({} paid): {} gas, {:.1} gas per call\n\
             \x20 payout         after the challenge window: {} gas; claim + payout {:.1} gas per call\n\
             \x20 exit           initiateWithdraw, final claim of {} records, payout, finalizeWithdraw: {} paid, {} refunded\n\
             \x20 whole channel  open + 2 claims + 2 payouts + withdraw + finalize: {} gas for {} calls, {:.1} gas per call\n\
             \x20 one per call   {} transfers x {} gas = {} gas, {:.0}x the whole channel\n\
             \x20                (each an {}, measured in this run)\n\
             \x20 audit          {} records verified, {} discrepancies ({:.0} records/s)\n\
             \x20 proof bundle   record {} verified offline and against the onchain root\n\
             \x20 dispute        record {} refunded: credit {} ({})\n\
             \x20 streamed       {} completions forwarded token by token: {} input + {} output tokens charged {} ({} and {} per token); first token after {:.1} ms at most\n{kept}",
            self.seconds,
            self.calls,
            self.fixed_calls,
            self.metered_calls,
            self.failed_calls,
            self.charged,
            self.charged_after_claim,
            self.calls_after_claim,
            self.net_after_dispute,
            self.checkpoint_size,
            self.claimed_onchain,
            thousands(self.claim_gas),
            self.gas_per_call,
            thousands(self.payout_gas),
            self.settle_gas_per_call,
            self.final_size,
            self.paid_onchain,
            self.refund,
            thousands(self.channel_gas),
            self.channel_calls,
            self.channel_gas_per_call,
            self.one_per_call_transactions,
            thousands(self.per_call_transfer_gas),
            thousands(self.one_per_call_gas),
            self.one_per_call_ratio,
            self.per_call_transfer,
            self.checkpoint_size,
            self.audit_discrepancies,
            self.audit_records_per_second,
            self.disputed_index,
            self.disputed_index,
            self.credit,
            self.credit_rule,
            self.streamed.completions,
            self.streamed.input_tokens,
            self.streamed.output_tokens,
            self.streamed.charged,
            crate::upstream::INPUT_TOKEN_PRICE,
            crate::upstream::OUTPUT_TOKEN_PRICE,
            self.streamed.first_token_ms,
        )
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
