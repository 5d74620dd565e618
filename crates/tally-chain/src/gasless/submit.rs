//! Submitting gasless deposits, and reading the token's EIP-712 domain they are signed in.
//! Anyone may submit (spec/CHAIN.md §2.1): the sender pays the gas, the payer's signatures
//! decide everything else.

use alloy::network::Ethereum;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, PendingTransactionBuilder, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::Eip712Domain;
use tally_core::ChannelId;

use super::{DepositAuth, GaslessOpen, GaslessTopUp};
use crate::channel::{finish, TallyClient, TxOutcome};
use crate::contract::{IERC20Authorizable, Tally};
use crate::error::ChainError;

/// Reads `token`'s EIP-712 domain (name, version, chain id, address) and checks it against
/// the token's own `DOMAIN_SEPARATOR()`: a token whose domain cannot be reproduced would
/// reject every signature made here, so it is refused before anyone signs.
pub async fn token_domain(
    provider: &DynProvider,
    token: Address,
    chain_id: u64,
) -> Result<Eip712Domain, ChainError> {
    let t = IERC20Authorizable::new(token, provider.clone());
    let name = t.name().call().await?;
    let version = t.version().call().await?;
    let separator = t.DOMAIN_SEPARATOR().call().await?;
    let domain = Eip712Domain::new(
        Some(name.into()),
        Some(version.into()),
        Some(U256::from(chain_id)),
        Some(token),
        None,
    );
    if domain.separator() != separator {
        return Err(ChainError::Unsupported(format!(
            "token {token}: its DOMAIN_SEPARATOR is not the EIP-712 domain of its name and version"
        )));
    }
    Ok(domain)
}

/// The ABI form of a deposit authorization.
enum AbiAuth {
    Eip3009(Tally::Authorization),
    Permit(Tally::PermitAuth),
}

fn abi_auth(a: &DepositAuth) -> AbiAuth {
    match *a {
        DepositAuth::Eip3009 {
            valid_after,
            valid_before,
            sig,
        } => AbiAuth::Eip3009(Tally::Authorization {
            validAfter: U256::from(valid_after),
            validBefore: U256::from(valid_before),
            sig: sig.to_abi(),
        }),
        DepositAuth::Permit {
            deadline,
            permit,
            intent,
        } => AbiAuth::Permit(Tally::PermitAuth {
            deadline: U256::from(deadline),
            permit: permit.to_abi(),
            intent: intent.to_abi(),
        }),
    }
}

impl GaslessOpen {
    /// The ABI `OpenRequest`.
    pub fn to_abi(&self) -> Tally::OpenRequest {
        Tally::OpenRequest {
            payer: self.payer,
            payee: self.payee,
            token: self.token,
            amount: U256::from(self.amount),
            signer: self.signer,
            withdrawDelay: self.withdraw_delay,
            salt: self.salt,
        }
    }
}

impl TallyClient {
    /// The transaction that submits `open` (not sent).
    pub fn gasless_open_tx(&self, open: &GaslessOpen) -> TransactionRequest {
        let o = open.to_abi();
        let c = self.contract();
        match abi_auth(&open.auth) {
            AbiAuth::Eip3009(a) => c.openWithAuthorization(o, a).into_transaction_request(),
            AbiAuth::Permit(a) => c.openWithPermit(o, a).into_transaction_request(),
        }
        .from(self.sender())
    }

    /// The transaction that submits `top_up` (not sent).
    pub fn gasless_top_up_tx(&self, t: &GaslessTopUp) -> TransactionRequest {
        let c = self.contract();
        let amount = U256::from(t.amount);
        match abi_auth(&t.auth) {
            AbiAuth::Eip3009(a) => c
                .topUpWithAuthorization(t.channel_id, t.from, amount, t.salt, a)
                .into_transaction_request(),
            AbiAuth::Permit(a) => c
                .topUpWithPermit(t.channel_id, t.from, amount, t.salt, a)
                .into_transaction_request(),
        }
        .from(self.sender())
    }

    /// Simulates `tx` and returns its gas; a revert comes back decoded
    /// ([`ChainError::Reverted`]), so a relay refuses it without paying for it.
    pub async fn estimate(&self, tx: &TransactionRequest) -> Result<u64, ChainError> {
        Ok(self.provider().estimate_gas(tx.clone()).await?)
    }

    /// Sends `tx` with a gas limit of `gas` and waits for it to be mined.
    pub async fn submit(&self, tx: TransactionRequest, gas: u64) -> Result<TxOutcome, ChainError> {
        finish(self.broadcast(tx, gas).await?).await
    }

    /// Sends `tx` with a gas limit of `gas` and returns once the node has it (not mined): a
    /// relay broadcasts under its lock and waits for the receipt outside it.
    pub async fn broadcast(
        &self,
        tx: TransactionRequest,
        gas: u64,
    ) -> Result<PendingTransactionBuilder<Ethereum>, ChainError> {
        Ok(self.provider().send_transaction(tx.gas_limit(gas)).await?)
    }

    /// Submits a gasless open from this client's wallet (which pays the gas) and waits for
    /// it; returns the new channel's id.
    pub async fn open_gasless(
        &self,
        open: &GaslessOpen,
    ) -> Result<(ChannelId, TxOutcome), ChainError> {
        let id = self.channel_id_for(open.payer, open.payee, open.token, open.salt);
        let tx = self.gasless_open_tx(open);
        let gas = self.estimate(&tx).await?;
        Ok((id, self.submit(tx, gas).await?))
    }

    /// Submits a gasless top-up from this client's wallet and waits for it.
    pub async fn top_up_gasless(&self, t: &GaslessTopUp) -> Result<TxOutcome, ChainError> {
        let tx = self.gasless_top_up_tx(t);
        let gas = self.estimate(&tx).await?;
        self.submit(tx, gas).await
    }

    /// `owner`'s EIP-2612 permit nonce at `token` (what the next permit must sign).
    pub async fn permit_nonce(&self, token: Address, owner: Address) -> Result<U256, ChainError> {
        let t = IERC20Authorizable::new(token, self.provider().clone());
        Ok(t.nonces(owner).call().await?)
    }

    /// Whether `authorizer` has used (or cancelled) the EIP-3009 nonce `nonce` at `token`.
    pub async fn authorization_used(
        &self,
        token: Address,
        authorizer: Address,
        nonce: B256,
    ) -> Result<bool, ChainError> {
        let t = IERC20Authorizable::new(token, self.provider().clone());
        Ok(t.authorizationState(authorizer, nonce).call().await?)
    }
}
