//! The per-call alternative: how x402 "exact" settles one call (one EIP-3009
//! `transferWithAuthorization`), measured the same way by the gas report and `tally demo`.

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct};

use crate::channel::{finish, TxOutcome};
use crate::contract::TestToken;
use crate::eip712::sign_digest;
use crate::error::ChainError;

mod eip3009 {
    alloy::sol! {
        struct TransferWithAuthorization {
            address from;
            address to;
            uint256 value;
            uint256 validAfter;
            uint256 validBefore;
            bytes32 nonce;
        }
    }
}

/// How x402 "exact" settles one call: the payer signs an EIP-3009
/// `transferWithAuthorization` and a facilitator submits it, one token transfer per call.
/// Shared by the gas report and `tally demo`, so both measure the per-call alternative the
/// same way on the token they use.
pub struct X402Exact {
    token: TestToken::TestTokenInstance<DynProvider>,
    domain: Eip712Domain,
}

impl X402Exact {
    /// The token at `token`, submitting from `facilitator`'s wallet; reads the token's
    /// EIP-712 domain the way gasless deposits do ([`crate::gasless::token_domain`]).
    pub async fn new(facilitator: DynProvider, token: Address) -> Result<Self, ChainError> {
        let chain_id = facilitator.get_chain_id().await?;
        let domain = crate::gasless::token_domain(&facilitator, token, chain_id).await?;
        let token = TestToken::new(token, facilitator);
        Ok(X402Exact { token, domain })
    }

    /// Pays `value` from `payer` to `to` in one mined `transferWithAuthorization` (each
    /// `nonce` works once per payer).
    pub async fn pay(
        &self,
        payer: &PrivateKeySigner,
        to: Address,
        value: u128,
        nonce: B256,
    ) -> Result<TxOutcome, ChainError> {
        let auth = eip3009::TransferWithAuthorization {
            from: payer.address(),
            to,
            value: U256::from(value),
            validAfter: U256::ZERO,
            validBefore: U256::from(u64::MAX),
            nonce,
        };
        let sig = sign_digest(payer, &auth.eip712_signing_hash(&self.domain))?;
        let call = self.token.transferWithAuthorization(
            auth.from,
            auth.to,
            auth.value,
            auth.validAfter,
            auth.validBefore,
            auth.nonce,
            sig.v,
            sig.r,
            sig.s,
        );
        finish(call.send().await?).await
    }
}
