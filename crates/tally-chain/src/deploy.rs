//! Deploying the settlement contract on a real chain (spec/CHAIN.md §10), for
//! `tally contract deploy`: a provider starts on any chain that meets the contract's needs
//! without running the demo.
//!
//! The contract's reentrancy lock is a `transient` variable (spec/CHAIN.md §8), compiled for
//! EVM version cancun, so it needs `TSTORE`/`TLOAD` (EIP-1153), and the compiler emits
//! `PUSH0` (EIP-3855). Creating the contract on a chain without them succeeds (the
//! constructor uses neither), but every state-changing call would then fail: so a deploy
//! first proves the chain runs both opcodes ([`supports_cancun`]) and refuses otherwise.

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;

use crate::channel::{TallyClient, TxOutcome};
use crate::contract::Tally;
use crate::eip712;
use crate::error::ChainError;
use crate::funding::MIN_WITHDRAW_DELAY;

/// Init code `PUSH0 PUSH0 TSTORE STOP`: an `eth_call` of it as a contract creation succeeds
/// exactly when the chain's EVM has `PUSH0` (Shanghai) and `TSTORE` (Cancun).
pub const CANCUN_PROBE: [u8; 4] = [0x5f, 0x5f, 0x5d, 0x00];

/// Whether the chain behind `provider` runs the opcodes the contract needs, by simulating
/// [`CANCUN_PROBE`] as a contract creation. `Ok(false)` when the node answers that the
/// execution failed (an undefined opcode); an unreachable node is an error, never `false`.
pub async fn supports_cancun(provider: &DynProvider) -> Result<bool, ChainError> {
    let probe = TransactionRequest::default().with_deploy_code(Bytes::from(CANCUN_PROBE.to_vec()));
    match provider.call(probe).await {
        Ok(_) => Ok(true),
        Err(e) if e.as_error_resp().is_some() => Ok(false),
        Err(e) => Err(ChainError::from(e)),
    }
}

/// Deploys `Tally` from the committed artifact (`artifacts/Tally.json`, kept equal to the
/// source by the artifact test), sending from `sender` through `provider`'s wallet, after
/// checking [`supports_cancun`]. Before returning it reads the new contract back: code at
/// the address, `MIN_WITHDRAW_DELAY` as this crate knows it, and the EIP-712 domain
/// separator this crate computes for the chain, so a deployment that answers differently
/// from what the gateway and clients sign for is an error, not an address.
pub async fn deploy_tally(
    provider: DynProvider,
    sender: Address,
) -> Result<(TallyClient, TxOutcome), ChainError> {
    if !supports_cancun(&provider).await? {
        return Err(ChainError::Unsupported(
            "the chain does not run PUSH0 and TSTORE (EVM version cancun, EIP-1153); \
             the contract's reentrancy lock uses transient storage"
                .into(),
        ));
    }
    let pending = Tally::deploy_builder(provider.clone())
        .from(sender)
        .send()
        .await?;
    let receipt = pending.get_receipt().await?;
    if !receipt.status() {
        return Err(ChainError::TxFailed(receipt.transaction_hash));
    }
    let address = receipt.contract_address.ok_or_else(|| {
        ChainError::Unsupported("the deploy receipt names no contract address".into())
    })?;
    let outcome = TxOutcome {
        tx_hash: receipt.transaction_hash,
        gas_used: receipt.gas_used,
        block: receipt.block_number.unwrap_or_default(),
    };
    let client = TallyClient::new(provider, sender, address).await?;
    check_deployed(&client).await?;
    Ok((client, outcome))
}

/// The read-back of [`deploy_tally`].
async fn check_deployed(client: &TallyClient) -> Result<(), ChainError> {
    let code = client.provider().get_code_at(client.address()).await?;
    if code.is_empty() {
        return Err(ChainError::Unsupported(format!(
            "no code at {} after the deploy",
            client.address()
        )));
    }
    let min = client.contract().MIN_WITHDRAW_DELAY().call().await?;
    if u64::from(min) != u64::from(MIN_WITHDRAW_DELAY) {
        return Err(ChainError::Unsupported(format!(
            "the deployed MIN_WITHDRAW_DELAY is {min}, this build expects {MIN_WITHDRAW_DELAY}"
        )));
    }
    let onchain = client.contract().domainSeparator().call().await?;
    let offline = eip712::domain(client.chain_id(), client.address()).separator();
    if onchain != offline {
        return Err(ChainError::Unsupported(format!(
            "the deployed EIP-712 domain separator {onchain} is not {offline}"
        )));
    }
    Ok(())
}
