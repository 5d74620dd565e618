//! A real anvil (tally-chain's `anvil::spawn`, the project-local binary; a missing one fails
//! the test) with the Tally contract and a TestToken deployed, for the tests where the chain
//! is part of what is tested. The payer opens channels whose checkpoint signer is a fresh
//! key per channel; the payee is the provider's settlement account.

use std::path::Path;

use alloy::network::EthereumWallet;
use alloy::node_bindings::AnvilInstance;
use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use tally_chain::channel::{connect, finish};
use tally_chain::contract::TestToken;
use tally_chain::{anvil, ChainFunding, ChannelFunding, OpenParams, TallyClient};
use tally_core::{ChannelId, SecretKey};
use tally_http::terms::ChainTerms;
use tally_server::Settings;

use crate::{routes, TestChannel};

/// The withdraw delay of every channel opened here (the contract's minimum).
pub const WITHDRAW_DELAY: u32 = tally_chain::MIN_WITHDRAW_DELAY;

/// anvil plus the deployed contracts and the parties' handles.
pub struct ChainEnv {
    /// The node; dropping it stops anvil.
    pub anvil: AnvilInstance,
    /// The payer's account (dev account 1): deploys, mints, opens and tops up.
    pub payer_key: PrivateKeySigner,
    /// The payee's account (dev account 2): the provider's settlement wallet.
    pub payee_key: PrivateKeySigner,
    /// The contract as the payer sees it.
    pub payer: TallyClient,
    /// The contract as the payee sees it.
    pub payee: TallyClient,
    /// The TestToken.
    pub token: TestToken::TestTokenInstance<alloy::providers::DynProvider>,
    salt: u64,
}

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

impl ChainEnv {
    /// The config of a `tally serve` process on `127.0.0.1:port` in front of `upstream` with
    /// its funding read from this chain: the test routes, uncharged 5xx, and channels served
    /// at the contract's minimum withdraw delay (the test chain opens them there). The
    /// process tests (crash, promise crash, cluster) each add what they test.
    pub fn gateway_file(&self, port: u16, upstream: &str) -> tally_cli::gateway::GatewayFile {
        let mut file = tally_cli::gateway::GatewayFile::new(
            &format!("127.0.0.1:{port}"),
            upstream,
            &self.rpc_url(),
            self.chain_terms(),
            routes(),
        );
        file.charge_server_errors = false;
        file.min_withdraw_delay = Some(WITHDRAW_DELAY);
        file
    }

    /// Spawns anvil and deploys; panics (failing the test) if anvil is missing.
    pub async fn new() -> ChainEnv {
        let builder = ok("locating anvil", anvil::builder());
        let node = ok("spawning anvil", anvil::spawn(builder));
        let url = node.endpoint_url();
        let key = |i: usize| match node.nth_key(i) {
            Some(k) => PrivateKeySigner::from(k.clone()),
            None => panic!("anvil has no dev account {i}"),
        };
        let (payer_key, payee_key) = (key(1), key(2));
        let payer_p = connect(url.clone(), payer_key.clone());
        let payee_p = connect(url, payee_key.clone());
        let token = ok(
            "deploying TestToken",
            TestToken::deploy(payer_p.clone(), "Tally Test USD".into(), 0).await,
        );
        let payer = ok(
            "deploying Tally",
            TallyClient::deploy(payer_p, payer_key.address()).await,
        );
        let payee = ok(
            "payee handle",
            payer.as_party(payee_p, payee_key.address()).await,
        );
        let minted = ok(
            "mint",
            token
                .mint(payer_key.address(), U256::from(1u128 << 100))
                .send()
                .await,
        );
        ok("mint receipt", finish(minted).await);
        ok("approve", payer.approve(*token.address(), u128::MAX).await);
        ChainEnv {
            anvil: node,
            payer_key,
            payee_key,
            payer,
            payee,
            token,
            salt: 0,
        }
    }

    /// The node's JSON-RPC URL.
    pub fn rpc_url(&self) -> String {
        self.anvil.endpoint()
    }

    /// The token's address.
    pub fn token_address(&self) -> Address {
        *self.token.address()
    }

    /// The chain section of the provider's terms: this contract, token and payee.
    pub fn chain_terms(&self) -> ChainTerms {
        ChainTerms {
            chain_id: self.payer.chain_id(),
            contract: self.payer.address().to_string(),
            asset: self.token_address().to_string(),
            pay_to: self.payee_key.address().to_string(),
        }
    }

    /// Gateway settings over this chain, in `dir`, with the test price list.
    /// Channels here are opened at the contract's floor ([`WITHDRAW_DELAY`]), so the gateway
    /// is set to accept it (its default is six hours).
    pub fn settings(&self, dir: &Path) -> Settings {
        let mut s = Settings::new(dir.to_path_buf(), self.chain_terms(), routes());
        s.min_withdraw_delay = WITHDRAW_DELAY;
        s
    }

    /// `ChainFunding` reading this contract through its own connection, as a gateway does
    /// (a random reader key: only view calls are made).
    pub async fn funding(&self) -> ChainFunding {
        let reader = PrivateKeySigner::random();
        let sender = reader.address();
        let provider = connect(self.anvil.endpoint_url(), reader);
        ChainFunding::new(ok(
            "reader",
            TallyClient::new(provider, sender, self.payer.address()).await,
        ))
    }

    /// The payee's wallet, for the settlement worker.
    pub fn payee_wallet(&self) -> EthereumWallet {
        EthereumWallet::from(self.payee_key.clone())
    }

    /// Opens a channel onchain from the payer to the payee with `deposit`, its checkpoint
    /// signer a fresh key; returns it with a fresh session key.
    pub async fn open(&mut self, deposit: u128) -> TestChannel {
        self.salt += 1;
        let checkpoint = PrivateKeySigner::random();
        let (id, _) = ok(
            "open",
            self.payer
                .open(OpenParams {
                    payee: self.payee_key.address(),
                    token: self.token_address(),
                    amount: deposit,
                    signer: checkpoint.address(),
                    withdraw_delay: WITHDRAW_DELAY,
                    salt: B256::from(U256::from(self.salt)),
                })
                .await,
        );
        TestChannel {
            id,
            session: SecretKey::generate(&mut rand::rngs::OsRng),
            checkpoint,
        }
    }

    /// Adds `amount` to the channel's deposit onchain.
    pub async fn top_up(&self, id: &ChannelId, amount: u128) {
        ok("topUp", self.payer.top_up(id, amount).await);
    }

    /// The channel as the contract holds it.
    pub async fn channel(&self, id: &ChannelId) -> ChannelFunding {
        ok("getChannel", self.payer.channel(id).await)
    }

    /// A token balance.
    pub async fn balance(&self, who: Address) -> u128 {
        ok("balanceOf", self.token.balanceOf(who).call().await).to::<u128>()
    }
}
