//! The demo's last step: the payer leaves unilaterally, so the run pays every transaction a
//! channel's whole life costs, the way GAS.md's "whole channel, unilateral exit" row counts
//! it (open, claim, payout, initiateWithdraw, finalizeWithdraw), plus the second claim and
//! payout that the usage after the first claim needs. `approve` is left out, as in GAS.md: a
//! payer approves a token once, not per channel.

use tally_chain::{TxOutcome, WithdrawState};
use tally_client::Client;
use tally_core::ChannelId;

use super::{claim_now, pay_out};
use crate::error::{CliError, Result};
use crate::output::Output;
use crate::{chain, gateway};

/// The exit's transactions and what it moved.
pub struct Exit {
    /// `initiateWithdraw`.
    pub withdraw: TxOutcome,
    /// The worker's claim of the final checkpoint (at once: the channel is withdrawing).
    pub claim: gateway::Settled,
    /// The payout of that claim, after its window.
    pub payout: TxOutcome,
    /// `finalizeWithdraw`.
    pub finalize: TxOutcome,
    /// Records in the final checkpoint.
    pub size: u64,
    /// Its cumulative: what the payee was paid in all.
    pub cumulative: u128,
    /// What the payer got back.
    pub refund: u128,
}

/// Signs the final checkpoint, starts the withdrawal, lets the settlement worker claim the
/// final state, moves the clock past both windows, pays out and finalizes; checks the
/// channel ends closed with the final cumulative paid and the rest refunded.
pub async fn leave(
    client: &Client,
    serving: &gateway::Serving,
    local: &chain::LocalChain,
    chain_id: u64,
    id: &ChannelId,
    deposit: u128,
    out: &Output,
) -> Result<Exit> {
    let cp = client.checkpoint().await?.checkpoint;
    let payer = chain::wallet(&local.rpc, local.contract, &local.payer).await?;
    let withdraw = payer.initiate_withdraw(id).await?;
    let claim = claim_now(
        serving,
        local,
        chain_id,
        "the worker did not claim the final state",
    )
    .await?;
    let claimed = read(&payer, id).await?;
    if (claimed.claimed_size, claimed.claimed) != (cp.size, cp.cumulative) {
        return Err(CliError::Verification(format!(
            "after the final claim the channel holds size {} and {}, expected {} and {}",
            claimed.claimed_size, claimed.claimed, cp.size, cp.cumulative
        )));
    }
    let payout = pay_out(local, id, claimed.withdraw_delay, cp.cumulative, out).await?;
    let before = payer
        .token_balance(local.token, local.payer.address())
        .await?;
    let finalize = payer.finalize_withdraw(id).await?;
    let refund = payer
        .token_balance(local.token, local.payer.address())
        .await?
        .saturating_sub(before);
    let closed = read(&payer, id).await?;
    if closed.withdraw != WithdrawState::Closed || refund != deposit - cp.cumulative {
        return Err(CliError::Verification(format!(
            "after finalizeWithdraw: refunded {refund}, expected {}",
            deposit - cp.cumulative
        )));
    }
    Ok(Exit {
        withdraw,
        claim,
        payout,
        finalize,
        size: cp.size,
        cumulative: cp.cumulative,
        refund,
    })
}

async fn read(
    chain: &tally_chain::TallyClient,
    id: &ChannelId,
) -> Result<tally_chain::ChannelFunding> {
    chain
        .channel(id)
        .await
        .map_err(|e| CliError::Service(format!("reading channel {}: {e}", id.to_hex())))
}
