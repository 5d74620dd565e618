//! Gasless deposits (spec/CHAIN.md §2.1, §3.5): a payer that holds the token but no ETH signs
//! an open or a top-up, and anyone (the provider's relay, spec/HTTP.md §12) submits it and
//! pays the gas.
//!
//! Two token-level authorizations are supported:
//! - **EIP-3009** `receiveWithAuthorization` (USDC has it): one signature, in the token's
//!   domain, whose nonce the contract derives from the channel, so a submitter cannot point
//!   the funds at another channel, payee, signer or delay;
//! - **EIP-2612** `permit`: the token signature only grants an allowance, so the payer also
//!   signs a Tally-domain `Open` or `TopUp` naming what the funds are for.
//!
//! What this module must never do: produce or accept a request whose signatures leave any
//! channel parameter to the submitter's choice.

mod amount;
mod sign;
mod submit;

use alloy::primitives::{Address, B256};
use alloy::sol_types::Eip712Domain;
use serde::{Deserialize, Serialize};

use crate::eip712::Eip712Sig;

pub use sign::{open_nonce, top_up_nonce};
pub use submit::token_domain;

/// How a payer authorized a gasless deposit's token movement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DepositAuth {
    /// EIP-3009 `ReceiveWithAuthorization` (to = the Tally contract) over the nonce the
    /// contract derives ([`open_nonce`], [`top_up_nonce`]); usable while
    /// `valid_after < now < valid_before`.
    Eip3009 {
        /// Unix seconds after which it is valid.
        valid_after: u64,
        /// Unix seconds before which it is valid.
        valid_before: u64,
        /// The payer's signature in the token's EIP-712 domain.
        sig: Eip712Sig,
    },
    /// EIP-2612 `Permit` (spender = the Tally contract, value = the amount) and the payer's
    /// Tally-domain `Open` or `TopUp` signature, both with `deadline`.
    Permit {
        /// Unix seconds after which neither is accepted.
        deadline: u64,
        /// The permit signature (token domain).
        permit: Eip712Sig,
        /// The intent signature (Tally domain, CHAIN.md §3.5).
        intent: Eip712Sig,
    },
}

/// A signed, submittable `openWithAuthorization` / `openWithPermit`: the body of the relay's
/// `POST /tally/v1/relay/open` (spec/HTTP.md §12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaslessOpen {
    /// Who funds the channel and may withdraw it; signed every authorization.
    pub payer: Address,
    /// Who gets paid.
    pub payee: Address,
    /// The ERC-20 of the deposit.
    pub token: Address,
    /// The deposit in token base units (a decimal string on the wire).
    #[serde(with = "amount")]
    pub amount: u128,
    /// The payer's checkpoint key.
    pub signer: Address,
    /// Seconds of the exit delay.
    pub withdraw_delay: u32,
    /// Makes the channel id unique.
    pub salt: B256,
    /// The payer's authorization.
    pub auth: DepositAuth,
}

/// A signed, submittable `topUpWithAuthorization` / `topUpWithPermit`: the body of the
/// relay's `POST /tally/v1/relay/topup` (spec/HTTP.md §12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaslessTopUp {
    /// The channel to fund.
    pub channel_id: B256,
    /// Who pays (anyone may fund a channel).
    pub from: Address,
    /// Token base units (a decimal string on the wire).
    #[serde(with = "amount")]
    pub amount: u128,
    /// A fresh random value: makes this top-up's authorization single-use.
    pub salt: B256,
    /// `from`'s authorization.
    pub auth: DepositAuth,
}

/// The two EIP-712 domains a gasless deposit is signed in: the Tally deployment's (chain id
/// and contract) and the token's (read from the token by [`token_domain`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepositDomains {
    /// The chain id.
    pub chain_id: u64,
    /// The Tally contract (the EIP-3009 `to`, the permit's spender).
    pub contract: Address,
    /// The token's domain.
    pub token: Eip712Domain,
}
