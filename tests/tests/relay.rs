//! The gateway's gasless-deposit relay (spec/HTTP.md §12) over real HTTP and a real anvil:
//! a payer with tokens and no ETH gets a channel opened and topped up, and every request the
//! relay must not pay for is refused before a transaction is sent (the relay wallet's nonce
//! does not move). A missing anvil fails the test.

use std::sync::Arc;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use tally_chain::channel::{connect, finish};
use tally_chain::gasless::token_domain;
use tally_chain::{DepositDomains, GaslessOpen, GaslessTopUp, OpenParams, TallyClient};
use tally_e2e::chain::{ChainEnv, WITHDRAW_DELAY};
use tally_e2e::*;
use tally_http::api::Relayed;
use tally_server::relay::{Relay, RelayLimits, RelayPolicy};

const MIN_DEPOSIT: u128 = 100;

struct Fixture {
    env: ChainEnv,
    server: Server,
    upstream: Server,
    relayer: Address,
    domains: DepositDomains,
    salt: u64,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A gateway over a fresh chain; `limits` = None runs no relay.
    async fn start(limits: Option<RelayLimits>) -> Fixture {
        let env = ChainEnv::new().await;
        let upstream = spawn_upstream().await;
        let dir = tmp();
        let key = tally_core::SecretKey::generate(&mut rand::rngs::OsRng);
        let funding: Arc<dyn tally_chain::Funding> = Arc::new(env.funding().await);
        let (gw, server) =
            spawn_gateway_funded(env.settings(dir.path()), &key, funding, &upstream).await;
        let relay_key = match env.anvil.nth_key(3) {
            Some(k) => PrivateKeySigner::from(k.clone()),
            None => panic!("anvil has no dev account 3"),
        };
        let relayer = relay_key.address();
        let client = TallyClient::new(
            connect(env.anvil.endpoint_url(), relay_key),
            relayer,
            env.payer.address(),
        )
        .await
        .unwrap_or_else(|e| panic!("relay client: {e}"));
        if let Some(limits) = limits {
            let policy = RelayPolicy {
                payee: env.payee_key.address(),
                token: env.token_address(),
                min_withdraw_delay: WITHDRAW_DELAY,
                min_deposit: MIN_DEPOSIT,
            };
            let relay = Relay::new(client, policy, limits)
                .await
                .unwrap_or_else(|e| panic!("relay: {e}"));
            gw.enable_relay(relay)
                .unwrap_or_else(|e| panic!("enable: {e}"));
        }
        let token = token_domain(
            env.payer.provider(),
            env.token_address(),
            env.payer.chain_id(),
        )
        .await
        .unwrap_or_else(|e| panic!("token domain: {e}"));
        let domains = DepositDomains {
            chain_id: env.payer.chain_id(),
            contract: env.payer.address(),
            token,
        };
        Fixture {
            env,
            server,
            upstream,
            relayer,
            domains,
            salt: 0,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.server.stop().await;
        self.upstream.stop().await;
    }

    /// A payer holding `tokens` and no ETH.
    async fn broke_payer(&self, tokens: u128) -> PrivateKeySigner {
        let key = PrivateKeySigner::random();
        let mint = self.env.token.mint(key.address(), U256::from(tokens));
        let sent = mint.send().await.unwrap_or_else(|e| panic!("mint: {e}"));
        finish(sent).await.unwrap_or_else(|e| panic!("mint: {e}"));
        key
    }

    fn params(&mut self, amount: u128) -> OpenParams {
        self.salt += 1;
        OpenParams {
            payee: self.env.payee_key.address(),
            token: self.env.token_address(),
            amount,
            signer: PrivateKeySigner::random().address(),
            withdraw_delay: WITHDRAW_DELAY,
            salt: B256::from(U256::from(self.salt)),
        }
    }

    fn sign(&self, payer: &PrivateKeySigner, p: OpenParams) -> GaslessOpen {
        GaslessOpen::sign_eip3009(payer, &self.domains, p, (0, u64::MAX / 2))
            .unwrap_or_else(|e| panic!("sign: {e}"))
    }

    /// A fresh open of `amount` signed by `payer`.
    fn signed(&mut self, payer: &PrivateKeySigner, amount: u128) -> GaslessOpen {
        let p = self.params(amount);
        self.sign(payer, p)
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> reqwest::Response {
        post_relay(self.server.url(), path, body).await
    }

    async fn post_open(&self, open: &GaslessOpen) -> reqwest::Response {
        let body = serde_json::to_vec(open).unwrap_or_else(|e| panic!("json: {e}"));
        self.post("open", body).await
    }

    async fn post_top_up(&self, top_up: &GaslessTopUp) -> reqwest::Response {
        let body = serde_json::to_vec(top_up).unwrap_or_else(|e| panic!("json: {e}"));
        self.post("topup", body).await
    }

    async fn relayer_nonce(&self) -> u64 {
        let p = self.env.payer.provider();
        p.get_transaction_count(self.relayer)
            .await
            .unwrap_or_else(|e| panic!("nonce: {e}"))
    }

    async fn eth(&self, who: Address) -> U256 {
        let p = self.env.payer.provider();
        p.get_balance(who)
            .await
            .unwrap_or_else(|e| panic!("balance: {e}"))
    }
}

/// POSTs `body` to the relay endpoint `path` of the gateway at `base`.
async fn post_relay(base: String, path: &str, body: Vec<u8>) -> reqwest::Response {
    let sent = reqwest::Client::new()
        .post(format!("{base}/tally/v1/relay/{path}"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    sent.unwrap_or_else(|e| panic!("POST {path}: {e}"))
}

/// The answer's status and reason code.
async fn refusal(r: reqwest::Response) -> (u16, String, String) {
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap_or_else(|e| panic!("error body: {e}"));
    let reason = body["error"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (status, reason, body.to_string())
}

fn limits(per_minute: u32) -> Option<RelayLimits> {
    Some(RelayLimits {
        gas_limit: 300_000,
        max_per_minute: per_minute,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_without_eth_gets_a_channel_opened_and_topped_up_by_the_relay() {
    let mut f = Fixture::start(limits(10)).await;
    let payer = f.broke_payer(10_000).await;
    let p = f.params(4_000);
    let open = f.sign(&payer, p);
    let r = f.post_open(&open).await;
    assert_eq!(r.status().as_u16(), 200);
    let relayed: Relayed = r.json().await.unwrap_or_else(|e| panic!("answer: {e}"));
    assert_eq!(relayed.channel_id, open.channel_id(&f.domains));
    assert!(relayed.gas_used > 100_000, "{relayed:?}");
    let ch = f.env.channel(&relayed.channel_id).await;
    assert_eq!(
        (ch.payer, ch.payee, ch.signer, ch.deposit),
        (payer.address(), p.payee, p.signer, 4_000)
    );
    assert_eq!(f.eth(payer.address()).await, U256::ZERO);
    assert_eq!(
        f.relayer_nonce().await,
        1,
        "the relay sent the one transaction"
    );

    // The same request again: the simulation reverts (ChannelExists), nothing is sent.
    let (status, reason, body) = refusal(f.post_open(&open).await).await;
    assert_eq!((status, reason.as_str()), (422, "relay_refused"), "{body}");
    assert!(body.contains("ChannelExists"), "{body}");
    assert_eq!(f.relayer_nonce().await, 1);

    let top = GaslessTopUp::sign_eip3009(
        &payer,
        &f.domains,
        &relayed.channel_id,
        1_000,
        B256::repeat_byte(5),
        (0, u64::MAX / 2),
    )
    .unwrap_or_else(|e| panic!("sign: {e}"));
    let r = f.post_top_up(&top).await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(f.env.channel(&relayed.channel_id).await.deposit, 5_000);
    assert_eq!(f.env.balance(payer.address()).await, 5_000);
    assert_eq!(f.eth(payer.address()).await, U256::ZERO);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_pays_for_nothing_it_should_not() {
    let mut f = Fixture::start(limits(10)).await;
    let payer = f.broke_payer(10_000).await;
    let stranger = PrivateKeySigner::random().address();
    let mut refused = Vec::new();

    // Policy: another payee, another token, a short delay, dust.
    let mut p = f.params(1_000);
    p.payee = stranger;
    refused.push(("another payee", f.sign(&payer, p)));
    let mut p = f.params(1_000);
    p.token = stranger;
    refused.push(("another token", f.sign(&payer, p)));
    let mut p = f.params(1_000);
    p.withdraw_delay = WITHDRAW_DELAY - 1;
    refused.push(("a short delay", f.sign(&payer, p)));
    let p = f.params(MIN_DEPOSIT - 1);
    refused.push(("dust", f.sign(&payer, p)));
    // Signatures: a changed field, a request signed by someone else for the payer.
    let mut bent = f.signed(&payer, 1_000);
    bent.signer = stranger;
    refused.push(("a changed signer", bent));
    let mut forged = f.signed(&PrivateKeySigner::random(), 1_000);
    forged.payer = payer.address();
    refused.push(("a forged payer", forged));
    // The chain would revert: a payer without the tokens.
    let poor = PrivateKeySigner::random();
    refused.push(("no tokens", f.signed(&poor, 1_000)));
    // An authorization about to expire: it could expire between simulation and mining.
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 60;
    let p = f.params(1_000);
    let expiring = GaslessOpen::sign_eip3009(&payer, &f.domains, p, (0, soon))
        .unwrap_or_else(|e| panic!("sign: {e}"));
    refused.push(("an authorization about to expire", expiring));
    for (what, open) in &refused {
        let (status, reason, body) = refusal(f.post_open(open).await).await;
        assert_eq!(
            (status, reason.as_str()),
            (422, "relay_refused"),
            "{what}: {body}"
        );
    }
    assert_eq!(f.relayer_nonce().await, 0, "no transaction was sent");

    // Malformed bodies: not JSON, an unknown field, a number amount; an oversized body.
    let good = serde_json::to_value(f.signed(&payer, 1_000)).unwrap_or_default();
    let mut extra = good.clone();
    extra["gas_price"] = serde_json::json!(1);
    let mut number = good.clone();
    number["amount"] = serde_json::json!(1000);
    for body in [
        b"{".to_vec(),
        serde_json::to_vec(&extra).unwrap_or_default(),
        serde_json::to_vec(&number).unwrap_or_default(),
    ] {
        let (status, reason, _) = refusal(f.post("open", body).await).await;
        assert_eq!((status, reason.as_str()), (400, "malformed"));
    }
    let (status, reason, _) = refusal(f.post("open", vec![b' '; 200 * 1024]).await).await;
    assert_eq!((status, reason.as_str()), (413, "payload_too_large"));

    // A top-up of a channel that is not this provider's.
    let other_id = {
        let mut p = f.params(1_000);
        p.payee = stranger;
        f.env
            .payer
            .open(p)
            .await
            .unwrap_or_else(|e| panic!("open: {e}"))
            .0
    };
    let top = GaslessTopUp::sign_eip3009(
        &payer,
        &f.domains,
        &other_id,
        1_000,
        B256::ZERO,
        (0, u64::MAX / 2),
    )
    .unwrap_or_else(|e| panic!("sign: {e}"));
    let (status, reason, body) = refusal(f.post_top_up(&top).await).await;
    assert_eq!((status, reason.as_str()), (422, "relay_refused"), "{body}");
    assert_eq!(f.relayer_nonce().await, 0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_keeps_to_its_rate_and_gas_limits_and_is_off_unless_configured() {
    let mut f = Fixture::start(limits(1)).await;
    let payer = f.broke_payer(10_000).await;
    let first = f.signed(&payer, 1_000);
    assert_eq!(f.post_open(&first).await.status().as_u16(), 200);
    let second = f.signed(&payer, 1_000);
    let r = f.post_open(&second).await;
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (status, reason, _) = refusal(r).await;
    assert_eq!((status, reason.as_str()), (429, "rate_limited"));
    let wait: u64 = retry_after.and_then(|v| v.parse().ok()).unwrap_or_default();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(f.relayer_nonce().await, 1);
    f.stop().await;

    let mut f = Fixture::start(Some(RelayLimits {
        gas_limit: 100_000,
        max_per_minute: 10,
    }))
    .await;
    let payer = f.broke_payer(10_000).await;
    let open = f.signed(&payer, 1_000);
    let (status, reason, body) = refusal(f.post_open(&open).await).await;
    assert_eq!((status, reason.as_str()), (422, "relay_refused"), "{body}");
    assert!(body.contains("over this relay's limit"), "{body}");
    assert_eq!(f.relayer_nonce().await, 0);
    f.stop().await;

    let mut f = Fixture::start(None).await;
    let payer = f.broke_payer(10_000).await;
    let open = f.signed(&payer, 1_000);
    let (status, reason, _) = refusal(f.post_open(&open).await).await;
    assert_eq!((status, reason.as_str()), (404, "not_found"));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_payer_has_one_relayed_deposit_in_flight() {
    let mut f = Fixture::start(limits(10)).await;
    let payer = f.broke_payer(10_000).await;
    let p = f.env.payer.provider().clone();
    let automine = |on: bool| {
        let p = p.clone();
        async move {
            let r: Result<serde_json::Value, _> =
                p.raw_request("evm_setAutomine".into(), (on,)).await;
            r.unwrap_or_else(|e| panic!("evm_setAutomine: {e}"));
        }
    };
    automine(false).await;
    let first = f.signed(&payer, 6_000);
    let second = f.signed(&payer, 6_000);
    let (url, body) = (
        f.server.url(),
        serde_json::to_vec(&first).unwrap_or_default(),
    );
    let pending =
        tokio::spawn(async move { post_relay(url, "open", body).await.status().as_u16() });
    // Wait until the first deposit is broadcast (in the pool, not mined).
    let mut broadcast = false;
    for _ in 0..200 {
        let n = p
            .get_transaction_count(f.relayer)
            .pending()
            .await
            .unwrap_or_else(|e| panic!("nonce: {e}"));
        if n == 1 {
            broadcast = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(broadcast, "the first deposit was never broadcast");
    // Both need 6,000 of the payer's 10,000: the second is refused while the first is in flight.
    let (status, reason, body) = refusal(f.post_open(&second).await).await;
    assert_eq!((status, reason.as_str()), (429, "rate_limited"), "{body}");
    assert!(body.contains("already being relayed"), "{body}");
    automine(true).await;
    let r: Result<serde_json::Value, _> = p.raw_request("evm_mine".into(), ()).await;
    r.unwrap_or_else(|e| panic!("evm_mine: {e}"));
    assert_eq!(pending.await.unwrap_or_else(|e| panic!("join: {e}")), 200);
    assert_eq!(f.relayer_nonce().await, 1);
    assert_eq!(f.env.balance(payer.address()).await, 4_000);
    f.stop().await;
}
