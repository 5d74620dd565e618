//! A client for every contract operation: deploy, open, topUp, claim, claimMany, the two
//! withdraw steps, cooperative close, reading a channel and a token balance.

use alloy::network::{Ethereum, EthereumWallet};
use alloy::primitives::{keccak256, Address, B256, U256};
use alloy::providers::{DynProvider, PendingTransactionBuilder, Provider, ProviderBuilder};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolValue};
use tally_core::{ChannelId, Checkpoint};

use crate::contract::{Tally, IERC20};
use crate::eip712::{self, ChainCheckpoint, Eip712Sig};
use crate::error::ChainError;
use crate::funding::ChannelFunding;

/// The channel id `open` assigns:
/// `keccak256(abi.encode(chainId, contract, payer, payee, token, salt))`.
/// Computing it offline lets a client sign for a channel before the open transaction lands.
pub fn channel_id(
    chain_id: u64,
    contract: Address,
    payer: Address,
    payee: Address,
    token: Address,
    salt: B256,
) -> ChannelId {
    let encoded = (U256::from(chain_id), contract, payer, payee, token, salt).abi_encode();
    ChannelId(keccak256(encoded).0)
}

/// What a mined transaction cost; the gas report and tests read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxOutcome {
    /// Transaction hash.
    pub tx_hash: B256,
    /// Gas used by the transaction, including the 21000 base cost.
    pub gas_used: u64,
    /// Block it was mined in.
    pub block: u64,
}

/// Arguments of `open`, named so call sites stay readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenParams {
    /// Who gets paid.
    pub payee: Address,
    /// The ERC-20 the deposit is in.
    pub token: Address,
    /// The initial deposit.
    pub amount: u128,
    /// The payer's checkpoint key (secp256k1 address).
    pub signer: Address,
    /// Seconds the payee keeps to claim after `initiateWithdraw`.
    pub withdraw_delay: u32,
    /// Makes the id unique among channels of the same parties and token.
    pub salt: B256,
}

/// Connects to `url` with `key` as the sending wallet.
///
/// Nonces come from the node's pending count for every transaction. alloy's default cached
/// nonce manager hands out a nonce even when gas estimation then fails (a revert), leaving a
/// gap that strands every later transaction; asking the node each time cannot drift.
pub fn connect(url: alloy::transports::http::reqwest::Url, key: PrivateKeySigner) -> DynProvider {
    ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(key))
        .connect_http(url)
        .erased()
}

/// One party's handle on one deployed Tally contract. Transactions are sent from `sender`,
/// which must be the provider's wallet.
#[derive(Clone)]
pub struct TallyClient {
    provider: DynProvider,
    contract: Tally::TallyInstance<DynProvider>,
    sender: Address,
    chain_id: u64,
}

impl TallyClient {
    /// A handle on the contract at `address`; asks the node for its chain id once.
    pub async fn new(
        provider: DynProvider,
        sender: Address,
        address: Address,
    ) -> Result<Self, ChainError> {
        let chain_id = provider.get_chain_id().await?;
        let contract = Tally::new(address, provider.clone());
        Ok(TallyClient {
            provider,
            contract,
            sender,
            chain_id,
        })
    }

    /// A handle when the chain id is already known; makes no RPC call, so it works while
    /// the node is still unreachable (the settlement worker retries until it is up).
    pub fn with_chain_id(
        provider: DynProvider,
        sender: Address,
        address: Address,
        chain_id: u64,
    ) -> Self {
        let contract = Tally::new(address, provider.clone());
        TallyClient {
            provider,
            contract,
            sender,
            chain_id,
        }
    }

    /// Deploys a new Tally contract from `sender` and returns a handle on it.
    pub async fn deploy(provider: DynProvider, sender: Address) -> Result<Self, ChainError> {
        let deployed = Tally::deploy(provider.clone()).await?;
        Self::new(provider, sender, *deployed.address()).await
    }

    /// The same contract seen by another party (another wallet).
    pub async fn as_party(
        &self,
        provider: DynProvider,
        sender: Address,
    ) -> Result<Self, ChainError> {
        Self::new(provider, sender, self.address()).await
    }

    /// The contract address.
    pub fn address(&self) -> Address {
        *self.contract.address()
    }

    /// The address transactions are sent from.
    pub fn sender(&self) -> Address {
        self.sender
    }

    /// The chain id the node reported.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The node connection, for reads the client does not wrap.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The raw bindings, for calls the client does not wrap.
    pub fn contract(&self) -> &Tally::TallyInstance<DynProvider> {
        &self.contract
    }

    /// This deployment's EIP-712 domain.
    pub fn domain(&self) -> Eip712Domain {
        eip712::domain(self.chain_id, self.address())
    }

    /// The id of the channel `sender` would open with these parameters.
    pub fn channel_id_for(
        &self,
        payer: Address,
        payee: Address,
        token: Address,
        salt: B256,
    ) -> ChannelId {
        channel_id(self.chain_id, self.address(), payer, payee, token, salt)
    }

    /// Signs a checkpoint for this deployment with a checkpoint key.
    pub fn sign_checkpoint(
        &self,
        key: &PrivateKeySigner,
        cp: Checkpoint,
    ) -> Result<ChainCheckpoint, ChainError> {
        ChainCheckpoint::sign(key, &self.domain(), cp)
    }

    /// Signs a cooperative-close agreement for this deployment (checkpoint key or payee key).
    pub fn sign_close(
        &self,
        key: &PrivateKeySigner,
        cp: &Checkpoint,
    ) -> Result<Eip712Sig, ChainError> {
        eip712::sign_close(key, &self.domain(), cp)
    }

    /// Lets the contract pull `amount` of `token` from `sender` (needed before open/topUp).
    pub async fn approve(&self, token: Address, amount: u128) -> Result<TxOutcome, ChainError> {
        let erc20 = IERC20::new(token, self.provider.clone());
        finish(
            erc20
                .approve(self.address(), U256::from(amount))
                .from(self.sender)
                .send()
                .await?,
        )
        .await
    }

    /// Opens a channel paid by `sender`; the deposit must be approved first.
    pub async fn open(&self, p: OpenParams) -> Result<(ChannelId, TxOutcome), ChainError> {
        let id = self.channel_id_for(self.sender, p.payee, p.token, p.salt);
        let call = self
            .contract
            .open(
                p.payee,
                p.token,
                U256::from(p.amount),
                p.signer,
                p.withdraw_delay,
                p.salt,
            )
            .from(self.sender);
        let outcome = finish(call.send().await?).await?;
        Ok((id, outcome))
    }

    /// Adds to a channel's deposit; the amount must be approved first.
    pub async fn top_up(&self, id: &ChannelId, amount: u128) -> Result<TxOutcome, ChainError> {
        let call = self
            .contract
            .topUp(B256::from(id.0), U256::from(amount))
            .from(self.sender);
        finish(call.send().await?).await
    }

    /// Posts one client-signed state (spec/CHAIN.md §4.1). Anyone may send it (a relay, the
    /// payer): what the state makes owed always goes to the channel's payee, by `payout`.
    pub async fn claim(&self, cp: &ChainCheckpoint) -> Result<TxOutcome, ChainError> {
        finish(self.send_claim(cp).await?).await
    }

    /// Submits a claim without waiting for it to be mined (the worker tracks it itself).
    pub async fn send_claim(
        &self,
        cp: &ChainCheckpoint,
    ) -> Result<PendingTransactionBuilder<Ethereum>, ChainError> {
        Ok(self
            .contract
            .claim(cp.to_abi())
            .from(self.sender)
            .send()
            .await?)
    }

    /// Posts a state signed by the checkpoint key and, over the same digest, by the payee
    /// (spec/CHAIN.md §4.2): the way a client gets a credit back when the payee posted an
    /// older, higher state. `payee_sig` is `sign_checkpoint(payee_key, cp).sig`.
    pub async fn claim_cosigned(
        &self,
        cp: &ChainCheckpoint,
        payee_sig: &Eip712Sig,
    ) -> Result<TxOutcome, ChainError> {
        let call = self
            .contract
            .claimCosigned(cp.to_abi(), payee_sig.to_abi())
            .from(self.sender);
        finish(call.send().await?).await
    }

    /// Transfers what one channel's payee is owed for good (spec/CHAIN.md §4.4); anyone may
    /// send it. Reverts with `NothingToPay` when nothing is payable.
    pub async fn payout(&self, id: &ChannelId) -> Result<TxOutcome, ChainError> {
        let call = self.contract.payout(B256::from(id.0)).from(self.sender);
        finish(call.send().await?).await
    }

    /// Submits a `payoutMany` without waiting for it (ids with nothing payable are passed over).
    pub async fn send_payout_many(
        &self,
        ids: &[ChannelId],
    ) -> Result<PendingTransactionBuilder<Ethereum>, ChainError> {
        let ids: Vec<B256> = ids.iter().map(|id| B256::from(id.0)).collect();
        Ok(self
            .contract
            .payoutMany(ids)
            .from(self.sender)
            .send()
            .await?)
    }

    /// What `payout` would transfer now, as the contract computes it.
    pub async fn payable(&self, id: &ChannelId) -> Result<u128, ChainError> {
        let v = self.contract.payableOf(B256::from(id.0)).call().await?;
        u128::try_from(v).map_err(|_| ChainError::OutOfRange("payable"))
    }

    /// Posts many client-signed states in one transaction.
    pub async fn claim_many(&self, batch: &[ChainCheckpoint]) -> Result<TxOutcome, ChainError> {
        finish(self.send_claim_many(batch).await?).await
    }

    /// Submits a claimMany without waiting for it to be mined.
    pub async fn send_claim_many(
        &self,
        batch: &[ChainCheckpoint],
    ) -> Result<PendingTransactionBuilder<Ethereum>, ChainError> {
        let items: Vec<Tally::SignedCheckpoint> =
            batch.iter().map(ChainCheckpoint::to_abi).collect();
        Ok(self
            .contract
            .claimMany(items)
            .from(self.sender)
            .send()
            .await?)
    }

    /// Simulates a claimMany with eth_call. `Ok(n)` means it would be mined now with `n`
    /// entries skipped (spec/CHAIN.md §4: claimMany skips entries `claim` would reject), so
    /// `Ok(0)` means every entry would settle.
    pub async fn simulate_claim_many(&self, batch: &[ChainCheckpoint]) -> Result<u64, ChainError> {
        let items: Vec<Tally::SignedCheckpoint> =
            batch.iter().map(ChainCheckpoint::to_abi).collect();
        let skipped = self
            .contract
            .claimMany(items)
            .from(self.sender)
            .call()
            .await?;
        Ok(u64::try_from(skipped).unwrap_or(u64::MAX))
    }

    /// Simulates a single `claim` with eth_call; an error carries the revert reason.
    pub async fn simulate_claim(&self, cp: &ChainCheckpoint) -> Result<(), ChainError> {
        self.contract
            .claim(cp.to_abi())
            .from(self.sender)
            .call()
            .await?;
        Ok(())
    }

    /// The payer starts the withdraw delay.
    pub async fn initiate_withdraw(&self, id: &ChannelId) -> Result<TxOutcome, ChainError> {
        finish(
            self.contract
                .initiateWithdraw(B256::from(id.0))
                .from(self.sender)
                .send()
                .await?,
        )
        .await
    }

    /// After the delay, returns the unclaimed deposit to the payer.
    pub async fn finalize_withdraw(&self, id: &ChannelId) -> Result<TxOutcome, ChainError> {
        finish(
            self.contract
                .finalizeWithdraw(B256::from(id.0))
                .from(self.sender)
                .send()
                .await?,
        )
        .await
    }

    /// Closes a channel at once with both parties' signatures over the final state.
    pub async fn cooperative_close(
        &self,
        cp: &Checkpoint,
        signer_sig: &Eip712Sig,
        payee_sig: &Eip712Sig,
    ) -> Result<TxOutcome, ChainError> {
        let call = self
            .contract
            .cooperativeClose(
                eip712::checkpoint_to_abi(cp),
                signer_sig.to_abi(),
                payee_sig.to_abi(),
            )
            .from(self.sender);
        finish(call.send().await?).await
    }

    /// `owner`'s balance of the ERC-20 `token`: what a payout or refund is checked against.
    pub async fn token_balance(&self, token: Address, owner: Address) -> Result<u128, ChainError> {
        let erc20 = IERC20::new(token, self.provider.clone());
        let balance = erc20.balanceOf(owner).call().await?;
        u128::try_from(balance).map_err(|_| ChainError::OutOfRange("token balance"))
    }

    /// A channel's state as the contract holds it.
    pub async fn channel(&self, id: &ChannelId) -> Result<ChannelFunding, ChainError> {
        let c = self.contract.getChannel(B256::from(id.0)).call().await?;
        ChannelFunding::from_abi(*id, c)
    }

    /// The contract's digest for a checkpoint (the differential test compares it to Rust's).
    pub async fn onchain_checkpoint_digest(&self, cp: &Checkpoint) -> Result<B256, ChainError> {
        Ok(self
            .contract
            .checkpointDigest(eip712::checkpoint_to_abi(cp))
            .call()
            .await?)
    }

    /// The contract's digest for a close agreement.
    pub async fn onchain_close_digest(&self, cp: &Checkpoint) -> Result<B256, ChainError> {
        Ok(self
            .contract
            .closeDigest(eip712::checkpoint_to_abi(cp))
            .call()
            .await?)
    }
}

/// Waits for a sent transaction and fails on a reverted receipt.
pub async fn finish(pending: PendingTransactionBuilder<Ethereum>) -> Result<TxOutcome, ChainError> {
    let receipt = pending.get_receipt().await?;
    if !receipt.status() {
        return Err(ChainError::TxFailed(receipt.transaction_hash));
    }
    Ok(TxOutcome {
        tx_hash: receipt.transaction_hash,
        gas_used: receipt.gas_used,
        block: receipt.block_number.unwrap_or_default(),
    })
}
