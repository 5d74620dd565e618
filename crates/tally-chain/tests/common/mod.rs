//! Shared setup for the chain tests: a real anvil, a deployed Tally and TestToken, and
//! separate wallets for deployer, payer and payee.
#![allow(dead_code)]

pub mod proxy;

use alloy::node_bindings::AnvilInstance;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use tally_chain::channel::{connect, finish};
use tally_chain::contract::{Tally::TallyErrors, TestToken};
use tally_chain::{anvil, ChainCheckpoint, ChainError, OpenParams, TallyClient};
use tally_core::{ChannelId, Checkpoint, Hash};

pub const DELAY: u32 = 3600;

pub struct Env {
    pub anvil: AnvilInstance,
    pub payer_key: PrivateKeySigner,
    pub payee_key: PrivateKeySigner,
    /// The payer's checkpoint key (not an account: it never sends transactions).
    pub signer: PrivateKeySigner,
    pub payer: TallyClient,
    pub payee: TallyClient,
    pub token: TestToken::TestTokenInstance<DynProvider>,
    salt: u64,
}

pub fn key(anvil: &AnvilInstance, i: usize) -> PrivateKeySigner {
    PrivateKeySigner::from(anvil.nth_key(i).unwrap().clone())
}

/// Spawns the project-local anvil; a missing binary fails the test with install advice.
pub fn spawn(
    builder: impl FnOnce(alloy::node_bindings::Anvil) -> alloy::node_bindings::Anvil,
) -> AnvilInstance {
    let b = anvil::builder().unwrap_or_else(|e| panic!("{e}"));
    anvil::spawn(builder(b)).unwrap_or_else(|e| panic!("{e}"))
}

impl Env {
    pub async fn new() -> Env {
        Self::with_anvil(spawn(|b| b), 0).await
    }

    /// Deploys token (with `mode`, see TestToken.sol) and Tally on `anvil`.
    pub async fn with_anvil(anvil: AnvilInstance, mode: u8) -> Env {
        let url = anvil.endpoint_url();
        let payer_key = key(&anvil, 1);
        let payee_key = key(&anvil, 2);
        let payer_p = connect(url.clone(), payer_key.clone());
        let payee_p = connect(url, payee_key.clone());
        let token = TestToken::deploy(payer_p.clone(), "Tally Test USD".into(), mode)
            .await
            .unwrap();
        let payer = TallyClient::deploy(payer_p, payer_key.address())
            .await
            .unwrap();
        let payee = payer.as_party(payee_p, payee_key.address()).await.unwrap();
        finish(
            token
                .mint(payer_key.address(), U256::from(1u128 << 100))
                .send()
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        payer.approve(*token.address(), u128::MAX).await.unwrap();
        let signer = PrivateKeySigner::random();
        Env {
            anvil,
            payer_key,
            payee_key,
            signer,
            payer,
            payee,
            token,
            salt: 0,
        }
    }

    pub fn next_salt(&mut self) -> B256 {
        self.salt += 1;
        B256::from(U256::from(self.salt))
    }

    /// `open`'s arguments for a new channel of `amount` from payer to payee in the token,
    /// with a fresh salt; tests change a field to probe the contract's checks.
    pub fn params(&mut self, amount: u128) -> OpenParams {
        OpenParams {
            payee: self.payee_key.address(),
            token: *self.token.address(),
            amount,
            signer: self.signer.address(),
            withdraw_delay: DELAY,
            salt: self.next_salt(),
        }
    }

    pub async fn open(&mut self, amount: u128) -> ChannelId {
        let params = self.params(amount);
        self.payer.open(params).await.unwrap().0
    }

    pub fn sign(&self, id: ChannelId, size: u64, cumulative: u128) -> ChainCheckpoint {
        self.payer
            .sign_checkpoint(&self.signer, cp(id, size, cumulative))
            .unwrap()
    }

    pub async fn balance(&self, who: Address) -> u128 {
        self.token.balanceOf(who).call().await.unwrap().to::<u128>()
    }

    /// The payee's wallet, for the settlement worker.
    pub fn payee_wallet(&self) -> alloy::network::EthereumWallet {
        alloy::network::EthereumWallet::from(self.payee_key.clone())
    }

    /// Turns anvil's automine on or off.
    pub async fn automine(&self, on: bool) {
        self.payer
            .provider()
            .raw_request::<_, serde_json::Value>("evm_setAutomine".into(), (on,))
            .await
            .unwrap();
    }

    /// Mines one block now.
    pub async fn mine(&self) {
        self.payer
            .provider()
            .raw_request::<_, serde_json::Value>("evm_mine".into(), ())
            .await
            .unwrap();
    }

    /// Lets the channel's challenge window pass (the delay plus a second) and pays out what
    /// is final (spec/CHAIN.md §4.4), sent by the payer: a payout is permissionless.
    pub async fn release(&self, id: &ChannelId) {
        self.warp(u64::from(DELAY) + 1).await;
        self.payer.payout(id).await.unwrap();
    }

    /// The payee's signature over a checkpoint's digest: what makes a state a cosigned credit.
    pub fn cosign(
        &self,
        id: ChannelId,
        size: u64,
        cumulative: u128,
    ) -> (ChainCheckpoint, tally_chain::Eip712Sig) {
        let signed = self.sign(id, size, cumulative);
        let payee = self
            .payer
            .sign_checkpoint(&self.payee_key, cp(id, size, cumulative))
            .unwrap();
        (signed, payee.sig)
    }

    pub async fn warp(&self, seconds: u64) {
        let p = self.payer.provider();
        p.raw_request::<_, serde_json::Value>("evm_increaseTime".into(), (seconds,))
            .await
            .unwrap();
        p.raw_request::<_, serde_json::Value>("evm_mine".into(), ())
            .await
            .unwrap();
    }
}

pub fn cp(id: ChannelId, size: u64, cumulative: u128) -> Checkpoint {
    let mut root = [0u8; 32];
    root[..8].copy_from_slice(&size.to_be_bytes());
    root[31] = 0xAB;
    Checkpoint {
        channel_id: id,
        size,
        root: Hash(root),
        cumulative,
    }
}

/// The contract error a failed call carried; panics (failing the test) on anything else.
pub fn revert<T: std::fmt::Debug>(r: Result<T, ChainError>) -> TallyErrors {
    match r {
        Err(ChainError::Reverted(e)) => e,
        other => panic!("expected a contract revert, got {other:?}"),
    }
}
