//! The chain side of the CLI, all through tally-chain: finding (or installing) the
//! project-local anvil, connecting with a wallet, deploying the contracts for the demo,
//! opening a channel and reading one.

use std::path::PathBuf;

use alloy::node_bindings::AnvilInstance;
use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::Eip712Domain;
use tally_chain::anvil;
use tally_chain::channel::{connect, finish};
use tally_chain::contract::TestToken;
use tally_chain::{ChainError, ChannelFunding, OpenParams, TallyClient};
use tally_core::ChannelId;

use crate::error::{CliError, Result};

/// Parses an RPC URL.
pub fn rpc_url(text: &str) -> Result<alloy::transports::http::reqwest::Url> {
    text.parse()
        .map_err(|e| CliError::Usage(format!("rpc url {text:?}: {e}")))
}

/// Parses an address.
pub fn address(what: &str, text: &str) -> Result<Address> {
    text.parse()
        .map_err(|e| CliError::Usage(format!("{what} {text:?} is not an address: {e}")))
}

/// A read-only handle on the contract at `contract` (a random key; never sends).
pub async fn reader(rpc: &str, contract: Address) -> Result<TallyClient> {
    let key = PrivateKeySigner::random();
    let sender = key.address();
    TallyClient::new(connect(rpc_url(rpc)?, key), sender, contract)
        .await
        .map_err(|e| CliError::Service(format!("chain at {rpc}: {e}")))
}

/// A channel's onchain state and the contract's EIP-712 domain.
pub async fn read_channel(
    rpc: &str,
    contract: Address,
    id: &ChannelId,
) -> Result<(ChannelFunding, Eip712Domain)> {
    let client = reader(rpc, contract).await?;
    let f = client
        .channel(id)
        .await
        .map_err(|e| CliError::Service(format!("reading channel {}: {e}", id.to_hex())))?;
    Ok((f, client.domain()))
}

/// Locates anvil through tally-chain's one install rule ([`anvil::ensure_anvil`]): unless
/// `TALLY_ANVIL` points elsewhere, the project-local tools are installed (once, under a lock)
/// when missing, which needs npm.
pub fn ensure_anvil(note: &dyn Fn(&str)) -> Result<PathBuf> {
    let overridden = std::env::var_os(anvil::ANVIL_ENV).is_some_and(|v| !v.is_empty());
    if !overridden && anvil::anvil_path().is_err() {
        note("anvil is not installed; running `bash tools/install.sh` (npm ci, project-local)");
    }
    anvil::ensure_anvil().map_err(CliError::from)
}

/// A local chain with both contracts deployed and the payer funded.
pub struct LocalChain {
    /// The node; dropping it stops anvil.
    pub anvil: AnvilInstance,
    /// Its RPC URL.
    pub rpc: String,
    /// The Tally contract.
    pub contract: Address,
    /// The test token.
    pub token: Address,
    /// The client's wallet (funds the channel).
    pub payer: PrivateKeySigner,
    /// The provider's wallet (claims).
    pub payee: PrivateKeySigner,
    /// The provider's relay wallet: pays the gas of gasless deposits (spec/HTTP.md §12), a
    /// wallet apart from the payee's so their transactions never race for nonces.
    pub relayer: PrivateKeySigner,
}

impl LocalChain {
    /// The chain section of a gateway's terms on this chain: the contract, the test token and
    /// the payee, on chain `chain_id`.
    pub fn chain_terms(&self, chain_id: u64) -> tally_http::terms::ChainTerms {
        tally_http::terms::ChainTerms {
            chain_id,
            contract: self.contract.to_string(),
            asset: self.token.to_string(),
            pay_to: self.payee.address().to_string(),
        }
    }
}

fn dev_key(node: &AnvilInstance, i: usize) -> Result<PrivateKeySigner> {
    node.nth_key(i)
        .map(|k| PrivateKeySigner::from(k.clone()))
        .ok_or_else(|| CliError::Service("anvil has too few dev accounts".into()))
}

/// Starts anvil, deploys the test token and Tally, and mints `mint` tokens to the payer.
pub async fn start_local(mint: u128, note: &dyn Fn(&str)) -> Result<LocalChain> {
    ensure_anvil(note)?;
    let node = tokio::task::spawn_blocking(|| anvil::spawn(anvil::builder()?))
        .await
        .map_err(|e| CliError::Service(format!("starting anvil: {e}")))??;
    let rpc = node.endpoint_url().to_string();
    let payer = dev_key(&node, 1)?;
    let payee = dev_key(&node, 2)?;
    let relayer = dev_key(&node, 3)?;
    let provider = connect(rpc_url(&rpc)?, payer.clone());
    let token = TestToken::deploy(provider.clone(), "Tally Test USD".to_string(), 0)
        .await
        .map_err(ChainError::from)?;
    finish(
        token
            .mint(payer.address(), U256::from(mint))
            .send()
            .await
            .map_err(ChainError::from)?,
    )
    .await?;
    let tally = TallyClient::deploy(provider, payer.address()).await?;
    Ok(LocalChain {
        rpc,
        contract: tally.address(),
        token: *token.address(),
        payer,
        payee,
        relayer,
        anvil: node,
    })
}

/// A handle on the contract at `contract` that sends from `wallet`.
pub async fn wallet(
    rpc: &str,
    contract: Address,
    wallet: &PrivateKeySigner,
) -> Result<TallyClient> {
    TallyClient::new(
        connect(rpc_url(rpc)?, wallet.clone()),
        wallet.address(),
        contract,
    )
    .await
    .map_err(|e| CliError::Service(format!("chain at {rpc}: {e}")))
}

/// The withdraw delay the demo opens channels with (a day).
pub const DEFAULT_WITHDRAW_DELAY: u32 = tally_chain::MIN_WITHDRAW_DELAY * 24;

/// A fresh random salt for `open`.
pub fn random_salt() -> B256 {
    B256::from(rand::random::<[u8; 32]>())
}

/// What `open` is asked for, besides the parties.
#[derive(Clone, Copy, Debug)]
pub struct OpenTerms {
    /// The deposit's ERC-20.
    pub token: Address,
    /// The initial deposit.
    pub deposit: u128,
    /// Seconds the payee keeps to claim after a withdraw starts.
    pub withdraw_delay: u32,
    /// Makes the channel id unique.
    pub salt: B256,
}

/// Approves and opens a channel from `payer` to `payee` with checkpoint key `signer`.
pub async fn open_channel(
    rpc: &str,
    contract: Address,
    payer: &PrivateKeySigner,
    payee: Address,
    signer: Address,
    terms: OpenTerms,
) -> Result<(ChannelId, tally_chain::TxOutcome)> {
    let client = wallet(rpc, contract, payer).await?;
    client.approve(terms.token, terms.deposit).await?;
    Ok(client
        .open(OpenParams {
            payee,
            token: terms.token,
            amount: terms.deposit,
            signer,
            withdraw_delay: terms.withdraw_delay,
            salt: terms.salt,
        })
        .await?)
}

/// Lets a local (anvil) chain's clock pass `seconds` and mines a block: how the demo gets
/// past a claim's challenge window (spec/CHAIN.md §4) to show the payout.
pub async fn warp(rpc: &str, seconds: u64) -> Result<()> {
    use alloy::providers::Provider;
    let node = connect(rpc_url(rpc)?, PrivateKeySigner::random());
    let fail =
        |e: alloy::transports::TransportError| CliError::Service(format!("anvil at {rpc}: {e}"));
    node.raw_request::<_, serde_json::Value>("evm_increaseTime".into(), (seconds,))
        .await
        .map_err(fail)?;
    node.raw_request::<_, serde_json::Value>("evm_mine".into(), ())
        .await
        .map_err(fail)?;
    Ok(())
}
