//! What the gateway needs to know about a channel's money, read from the contract.
//!
//! [`Funding`] is object-safe (it returns a boxed future), so the gateway can hold a
//! `Arc<dyn Funding>` and tests can substitute an in-memory implementation.

use alloy::primitives::{Address, B256};
use tally_core::{ChannelId, Hash};

use crate::channel::TallyClient;
use crate::contract::Tally;
use crate::error::ChainError;
use crate::BoxFuture;

/// Where a channel is in its exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WithdrawState {
    /// Open, no withdrawal requested.
    None,
    /// The payer called `initiateWithdraw`; the payee can claim until `at` (unix seconds,
    /// exclusive), after which `finalizeWithdraw` refunds the payer.
    Pending {
        /// Earliest finalize time; claims are refused from this time on.
        at: u64,
    },
    /// Closed by `finalizeWithdraw` or `cooperativeClose`; nothing more can move.
    Closed,
}

/// A channel's onchain state, as the gateway and the settlement worker consume it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelFunding {
    /// The channel.
    pub channel_id: ChannelId,
    /// Who funded it and gets refunds.
    pub payer: Address,
    /// Who gets paid on claims.
    pub payee: Address,
    /// The deposit's ERC-20.
    pub token: Address,
    /// The payer's checkpoint key.
    pub signer: Address,
    /// Total ever deposited.
    pub deposit: u128,
    /// Total ever paid to the payee (the capped cumulative of the last claim).
    pub claimed: u128,
    /// Log size of the last accepted checkpoint.
    pub claimed_size: u64,
    /// Merkle root of the last accepted checkpoint.
    pub claimed_root: Hash,
    /// Seconds between `initiateWithdraw` and `finalizeWithdraw`.
    pub withdraw_delay: u32,
    /// Exit state.
    pub withdraw: WithdrawState,
}

impl ChannelFunding {
    /// What the payee could still be paid: deposit minus claimed (0 once closed).
    pub fn remaining(&self) -> u128 {
        match self.withdraw {
            WithdrawState::Closed => 0,
            _ => self.deposit.saturating_sub(self.claimed),
        }
    }

    /// Whether a claim would be accepted at unix time `now` (open, or inside the delay).
    pub fn claimable_at(&self, now: u64) -> bool {
        match self.withdraw {
            WithdrawState::None => true,
            WithdrawState::Pending { at } => now < at,
            WithdrawState::Closed => false,
        }
    }

    /// What claiming a checkpoint with `cumulative` would pay out now (capped at the deposit).
    pub fn payout_for(&self, cumulative: u128) -> u128 {
        cumulative.min(self.deposit).saturating_sub(self.claimed)
    }

    /// Decodes the contract's `getChannel` result; an all-zero payee means no such channel.
    pub fn from_abi(channel_id: ChannelId, c: Tally::Channel) -> Result<Self, ChainError> {
        if c.payee == Address::ZERO {
            return Err(ChainError::UnknownChannel(channel_id));
        }
        let withdraw = if c.closed {
            WithdrawState::Closed
        } else if c.withdrawAt != 0 {
            WithdrawState::Pending { at: c.withdrawAt }
        } else {
            WithdrawState::None
        };
        Ok(ChannelFunding {
            channel_id,
            payer: c.payer,
            payee: c.payee,
            token: c.token,
            signer: c.signer,
            deposit: c.deposit,
            claimed: c.claimed,
            claimed_size: c.claimedSize,
            claimed_root: Hash(B256::from(c.root).0),
            withdraw_delay: c.withdrawDelay,
            withdraw,
        })
    }
}

/// The gateway's view of channel funding.
pub trait Funding: Send + Sync {
    /// The current onchain state of `channel`; [`ChainError::UnknownChannel`] if none.
    fn funding<'a>(
        &'a self,
        channel: &'a ChannelId,
    ) -> BoxFuture<'a, Result<ChannelFunding, ChainError>>;
}

/// [`Funding`] read straight from the Tally contract through alloy.
#[derive(Clone)]
pub struct ChainFunding {
    client: TallyClient,
}

impl ChainFunding {
    /// Reads through `client` (its sender is irrelevant: only view calls are made).
    pub fn new(client: TallyClient) -> Self {
        ChainFunding { client }
    }
}

impl Funding for ChainFunding {
    fn funding<'a>(
        &'a self,
        channel: &'a ChannelId,
    ) -> BoxFuture<'a, Result<ChannelFunding, ChainError>> {
        Box::pin(self.client.channel(channel))
    }
}
