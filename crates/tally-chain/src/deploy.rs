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

/// Checks that the contract at `client.address()` runs exactly the Tally code of this
/// build (the committed artifact's runtime code), so a client never signs for, approves or
/// sends funds to a contract someone else named (a provider's terms, spec/HTTP.md §12) that
/// only looks like Tally. The runtime code holds two immutables the artifact leaves as zero
/// words: the chain id and the EIP-712 domain separator, both known offline for this address;
/// they are zeroed in the deployed code before the comparison.
pub async fn check_tally_code(client: &TallyClient) -> Result<(), ChainError> {
    let code = client.provider().get_code_at(client.address()).await?;
    let separator = eip712::domain(client.chain_id(), client.address()).separator();
    let chain_id = alloy::primitives::U256::from(client.chain_id()).to_be_bytes::<32>();
    if !matches_artifact(&code, &Tally::DEPLOYED_BYTECODE, &[separator.0, chain_id]) {
        return Err(ChainError::Unsupported(format!(
            "the code at {} is not this build's Tally contract",
            client.address()
        )));
    }
    Ok(())
}

/// Whether `deployed` is `artifact` once every 32-byte word of `immutables` found in it
/// where the artifact has a zero word is zeroed. Words are matched at every offset, since an
/// immutable may begin with zero bytes (a small chain id does).
fn matches_artifact(deployed: &[u8], artifact: &[u8], immutables: &[[u8; 32]]) -> bool {
    if deployed.len() != artifact.len() || deployed.is_empty() {
        return false;
    }
    let mut i = 0;
    while i < deployed.len() {
        let zero_slot = artifact
            .get(i..i + 32)
            .is_some_and(|w| w.iter().all(|b| *b == 0));
        let holds_immutable = || {
            deployed.get(i..i + 32).is_some_and(|w| {
                w.iter().any(|b| *b != 0) && immutables.iter().any(|m| m[..] == *w)
            })
        };
        if zero_slot && holds_immutable() {
            i += 32;
        } else if deployed[i] == artifact[i] {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// The read-back of [`deploy_tally`].
async fn check_deployed(client: &TallyClient) -> Result<(), ChainError> {
    check_tally_code(client).await?;
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

#[cfg(test)]
mod tests {
    use super::matches_artifact;

    #[test]
    fn only_the_immutable_words_may_differ_from_the_artifact() {
        let m = [7u8; 32];
        let artifact: Vec<u8> = [vec![1, 2], vec![0; 32], vec![3]].concat();
        let deployed: Vec<u8> = [vec![1, 2], m.to_vec(), vec![3]].concat();
        assert!(matches_artifact(&deployed, &artifact, &[m]));
        assert!(
            matches_artifact(&artifact, &artifact, &[m]),
            "a zero immutable is fine too"
        );
        let other: Vec<u8> = [vec![1, 2], vec![8; 32], vec![3]].concat();
        assert!(!matches_artifact(&other, &artifact, &[m]), "another word");
        let small = {
            let mut w = [0u8; 32];
            w[31] = 0x69;
            w
        };
        let at_small: Vec<u8> = [vec![1, 2], small.to_vec(), vec![3]].concat();
        assert!(
            matches_artifact(&at_small, &artifact, &[m, small]),
            "a word starting with zeros"
        );
        let changed: Vec<u8> = [vec![1, 9], m.to_vec(), vec![3]].concat();
        assert!(
            !matches_artifact(&changed, &artifact, &[m]),
            "a changed opcode"
        );
        assert!(
            !matches_artifact(&deployed[..34], &artifact, &[m]),
            "another length"
        );
        assert!(!matches_artifact(&[], &[], &[m]), "no code");
    }
}
