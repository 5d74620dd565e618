//! What the gateway needs to know about a channel's money, read from the contract.
//!
//! [`Funding`] is object-safe (it returns a boxed future), so the gateway can hold a
//! `Arc<dyn Funding>` and tests can substitute an in-memory implementation.
//! [`ChannelFunding::acceptable`] is the gateway's admission check: right payee and token, not
//! exiting, and a withdraw delay at least as long as the provider's own policy.

use alloy::primitives::{Address, B256};
use tally_core::{ChannelId, Hash};

use crate::channel::TallyClient;
use crate::contract::Tally;
use crate::error::ChainError;
use crate::BoxFuture;

/// The contract's `MIN_WITHDRAW_DELAY` (seconds): `open` refuses shorter delays. A test checks
/// it against the deployed contract.
pub const MIN_WITHDRAW_DELAY: u32 = 3600;

/// The shortest withdraw delay a provider's gateway accepts unless configured otherwise
/// (`min_withdraw_delay`): six hours. The delay is also every challenge window (spec/CHAIN.md
/// §5), so it is the time a provider's worker has to claim after a payer starts an exit, with
/// room for an RPC outage, a stuck claim and a restart; the contract's one-hour floor leaves
/// no margin for an operator who must intervene by hand (issue 9, finding 3).
pub const DEFAULT_MIN_WITHDRAW_DELAY: u32 = 6 * 3600;

/// The contract's `MAX_WITHDRAW_DELAY` (seconds, 30 days): `open` refuses longer delays, so a
/// payee never watches a withdrawing channel for longer (spec/CHAIN.md §5).
pub const MAX_WITHDRAW_DELAY: u32 = 30 * 24 * 3600;

/// Why a gateway should not serve a channel; returned by [`ChannelFunding::acceptable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FundingRefusal {
    /// The channel pays someone else.
    #[error("channel pays {actual}, not this provider's {expected}")]
    WrongPayee {
        /// This provider's payee address.
        expected: Address,
        /// The channel's payee.
        actual: Address,
    },
    /// The deposit is in a token this provider does not take.
    #[error("channel is funded in {actual}, this provider takes {expected}")]
    WrongToken {
        /// The token this provider takes.
        expected: Address,
        /// The channel's token.
        actual: Address,
    },
    /// The channel is closed; nothing more can be claimed.
    #[error("channel is closed")]
    Closed,
    /// The payer started a withdrawal; claims stop at `at`.
    #[error("a withdrawal is pending; claims stop at unix time {at}")]
    Withdrawing {
        /// Earliest finalize time (unix seconds).
        at: u64,
    },
    /// The payer could exit faster than this provider's settlement can react.
    #[error("withdraw delay {delay} s is shorter than this provider's minimum {minimum} s")]
    DelayTooShort {
        /// The channel's `withdrawDelay`.
        delay: u32,
        /// The provider's policy.
        minimum: u32,
    },
}

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
    /// Total ever deposited (what actually arrived). Kept unchanged when the channel closes;
    /// [`remaining`](Self::remaining) is what is still held.
    pub deposit: u128,
    /// The capped cumulative of the current (last accepted) state: what the payee is owed in
    /// total once that state is final (spec/CHAIN.md §1).
    pub claimed: u128,
    /// Log size of the current state.
    pub claimed_size: u64,
    /// Merkle root of the current state.
    pub claimed_root: Hash,
    /// Size of the last accepted cosigned state (a credit); 0 if none.
    pub credit_size: u64,
    /// End of the current state's challenge window (unix seconds; 0 before any state).
    pub settle_at: u64,
    /// What was already final when the current state was posted inside its window.
    pub settled: u128,
    /// Total ever transferred to the payee.
    pub paid: u128,
    /// Seconds between `initiateWithdraw` and `finalizeWithdraw`.
    pub withdraw_delay: u32,
    /// Exit state.
    pub withdraw: WithdrawState,
}

impl ChannelFunding {
    /// What the channel still holds: deposit minus claimed, or 0 once closed.
    ///
    /// During a pending withdrawal this is the balance either party may still end up with: the
    /// payee by claiming before `at`, the payer through `finalizeWithdraw`. Once `at` has
    /// passed, the payee can no longer claim any of it (see [`claimable_at`](Self::claimable_at)),
    /// but it stays non-zero until someone calls `finalizeWithdraw`.
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

    /// Whether the contract's rules for a client-signed state (spec/CHAIN.md §4.1, rules 3
    /// and 4) let a checkpoint of `size` and `cumulative` replace the current state: above the
    /// last credit, and a higher capped amount, or the same amount at a larger size.
    pub fn accepts_claim(&self, size: u64, cumulative: u128) -> bool {
        let capped = cumulative.min(self.deposit);
        size > self.credit_size
            && (capped > self.claimed || (capped == self.claimed && size > self.claimed_size))
    }

    /// What the payee is owed for good at unix time `now`: the current state once its
    /// challenge window has passed, else `settled` (spec/CHAIN.md §1).
    pub fn final_at(&self, now: u64) -> u128 {
        if now >= self.settle_at {
            self.claimed
        } else {
            self.settled
        }
    }

    /// What `payout` would transfer at unix time `now` (`final − paid`), also once closed.
    pub fn payable_at(&self, now: u64) -> u128 {
        self.final_at(now).saturating_sub(self.paid)
    }

    /// What claiming a checkpoint with `cumulative` would add to the payee's total (capped at the deposit),
    /// provided the claim is accepted at all ([`claimable_at`](Self::claimable_at)).
    pub fn payout_for(&self, cumulative: u128) -> u128 {
        match self.withdraw {
            WithdrawState::Closed => 0,
            _ => cumulative.min(self.deposit).saturating_sub(self.claimed),
        }
    }

    /// Whether a gateway whose settlement needs at least `min_delay` seconds to react to a
    /// withdrawal should serve this channel for `payee` in `token`.
    ///
    /// Checks, in this order: the payee, the token, that the channel is neither closed nor
    /// withdrawing, and that its withdraw delay is at least `min_delay`. The contract already
    /// refuses delays below [`MIN_WITHDRAW_DELAY`]; `min_delay` is the provider's own, usually
    /// longer, policy. Whether the deposit covers a particular call is a separate question
    /// ([`remaining`](Self::remaining)).
    pub fn acceptable(
        &self,
        min_delay: u32,
        payee: Address,
        token: Address,
    ) -> Result<(), FundingRefusal> {
        if self.payee != payee {
            return Err(FundingRefusal::WrongPayee {
                expected: payee,
                actual: self.payee,
            });
        }
        if self.token != token {
            return Err(FundingRefusal::WrongToken {
                expected: token,
                actual: self.token,
            });
        }
        match self.withdraw {
            WithdrawState::Closed => return Err(FundingRefusal::Closed),
            WithdrawState::Pending { at } => return Err(FundingRefusal::Withdrawing { at }),
            WithdrawState::None => {}
        }
        if self.withdraw_delay < min_delay {
            return Err(FundingRefusal::DelayTooShort {
                delay: self.withdraw_delay,
                minimum: min_delay,
            });
        }
        Ok(())
    }

    /// Decodes the contract's `getChannel` result; an all-zero signer means no such channel.
    pub fn from_abi(channel_id: ChannelId, c: Tally::Channel) -> Result<Self, ChainError> {
        if c.signer == Address::ZERO {
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
            credit_size: c.creditSize,
            settle_at: c.settleAt,
            settled: c.settled,
            paid: c.paid,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(withdraw: WithdrawState, delay: u32) -> ChannelFunding {
        ChannelFunding {
            channel_id: ChannelId([1; 32]),
            payer: Address::repeat_byte(1),
            payee: Address::repeat_byte(2),
            token: Address::repeat_byte(3),
            signer: Address::repeat_byte(4),
            deposit: 1_000,
            claimed: 400,
            claimed_size: 7,
            claimed_root: Hash([0; 32]),
            credit_size: 0,
            settle_at: 100,
            settled: 300,
            paid: 250,
            withdraw_delay: delay,
            withdraw,
        }
    }

    #[test]
    fn acceptable_checks_payee_token_exit_and_delay_in_order() {
        let (payee, token) = (Address::repeat_byte(2), Address::repeat_byte(3));
        let open = channel(WithdrawState::None, 7_200);
        assert_eq!(open.acceptable(7_200, payee, token), Ok(()));
        assert_eq!(open.acceptable(MIN_WITHDRAW_DELAY, payee, token), Ok(()));
        assert_eq!(
            open.acceptable(7_201, payee, token),
            Err(FundingRefusal::DelayTooShort {
                delay: 7_200,
                minimum: 7_201
            })
        );
        let other = Address::repeat_byte(9);
        assert_eq!(
            open.acceptable(0, other, other),
            Err(FundingRefusal::WrongPayee {
                expected: other,
                actual: payee
            })
        );
        assert_eq!(
            open.acceptable(0, payee, other),
            Err(FundingRefusal::WrongToken {
                expected: other,
                actual: token
            })
        );
        let exiting = channel(WithdrawState::Pending { at: 99 }, 1);
        assert_eq!(
            exiting.acceptable(7_200, payee, token),
            Err(FundingRefusal::Withdrawing { at: 99 })
        );
        let closed = channel(WithdrawState::Closed, 7_200);
        assert_eq!(
            closed.acceptable(0, payee, token),
            Err(FundingRefusal::Closed)
        );
    }

    #[test]
    fn a_closed_channel_holds_and_pays_nothing_whatever_its_deposit() {
        let closed = channel(WithdrawState::Closed, 3_600);
        assert_eq!((closed.remaining(), closed.payout_for(900)), (0, 0));
        assert!(!closed.claimable_at(0));
        let pending = channel(WithdrawState::Pending { at: 50 }, 3_600);
        assert_eq!((pending.remaining(), pending.payout_for(900)), (600, 500));
        assert!(pending.claimable_at(49) && !pending.claimable_at(50));
        // Past `at` the balance is still there until finalizeWithdraw, but not claimable.
        assert_eq!(pending.remaining(), 600);
    }

    #[test]
    fn the_current_state_is_payable_only_after_its_window_also_once_closed() {
        let open = channel(WithdrawState::None, 3_600);
        // Before settle_at only `settled` is final; from it on, `claimed`.
        assert_eq!((open.final_at(99), open.payable_at(99)), (300, 50));
        assert_eq!((open.final_at(100), open.payable_at(100)), (400, 150));
        let closed = channel(WithdrawState::Closed, 3_600);
        assert_eq!(closed.payable_at(100), 150);
    }
}
