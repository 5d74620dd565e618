//! Reading the entries a mined `claimMany` skipped (spec/CHAIN.md §4, `ClaimSkipped`).

use alloy::primitives::Address;
use alloy::rpc::types::TransactionReceipt;
use alloy::sol_types::SolError;
use tally_core::ChannelId;

use crate::contract::Tally;

/// The name of the contract error whose selector a `ClaimSkipped` event carries, or the
/// selector in hex when it is none of the errors `claim` reverts with.
pub fn skip_reason(selector: [u8; 4]) -> String {
    let known: [([u8; 4], &str); 6] = [
        (Tally::UnknownChannel::SELECTOR, "UnknownChannel"),
        (Tally::ChannelClosed::SELECTOR, "ChannelClosed"),
        (Tally::ClaimWindowClosed::SELECTOR, "ClaimWindowClosed"),
        (Tally::StaleCheckpoint::SELECTOR, "StaleCheckpoint"),
        (Tally::CumulativeDecreased::SELECTOR, "CumulativeDecreased"),
        (Tally::BadSignature::SELECTOR, "BadSignature"),
    ];
    known.iter().find(|(s, _)| *s == selector).map_or_else(
        || format!("0x{}", alloy::hex::encode(selector)),
        |(_, n)| (*n).to_string(),
    )
}

/// The channels `contract` reported as skipped in `receipt`, with why.
pub fn skipped_in(receipt: &TransactionReceipt, contract: Address) -> Vec<(ChannelId, String)> {
    receipt
        .inner
        .logs()
        .iter()
        .filter(|log| log.address() == contract)
        .filter_map(|log| log.log_decode::<Tally::ClaimSkipped>().ok())
        .map(|e| {
            let d = e.inner.data;
            (ChannelId(d.channelId.0), skip_reason(d.reason.0))
        })
        .collect()
}
