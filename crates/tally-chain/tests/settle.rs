//! The settlement worker against a real anvil: threshold, timer, withdraw events, batching,
//! bad checkpoints, no double submission while a claim is pending, and retries through an
//! unreachable RPC endpoint. Also the Funding view.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::primitives::B256;
use alloy::providers::Provider;
use common::{spawn, Env};
use tally_chain::channel::connect;
use tally_chain::{
    BoxFuture, ChainCheckpoint, ChainError, ChainFunding, CheckpointSource, Funding, SettleConfig,
    SettlementWorker, TallyClient,
};
use tally_core::ChannelId;

#[derive(Clone, Default)]
struct Source(Arc<Mutex<Vec<ChainCheckpoint>>>);

impl Source {
    fn set(&self, cp: ChainCheckpoint) {
        let mut v = self.0.lock().unwrap();
        v.retain(|c| c.checkpoint.channel_id != cp.checkpoint.channel_id);
        v.push(cp);
    }
}

impl CheckpointSource for Source {
    fn latest_checkpoints(&self) -> BoxFuture<'_, Result<Vec<ChainCheckpoint>, ChainError>> {
        let v = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(v) })
    }
}

fn config(threshold: u128, interval: Duration) -> SettleConfig {
    SettleConfig {
        threshold,
        claim_interval: interval,
        poll_interval: Duration::from_millis(50),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(400),
        ..SettleConfig::default()
    }
}

fn covers(r: &tally_chain::TickReport, ids: &[ChannelId]) -> bool {
    r.submitted.as_ref().is_some_and(|(_, got)| {
        let mut got = got.clone();
        let mut want = ids.to_vec();
        got.sort();
        want.sort();
        got == want
    })
}

#[tokio::test]
async fn claims_on_threshold_and_withdraw_event_never_twice() {
    let mut env = Env::new().await;
    let source = Source::default();
    let mut w = SettlementWorker::new(
        env.payee.clone(),
        source.clone(),
        config(1_000, Duration::from_secs(3600)),
    );
    let a = env.open(10_000).await;
    let b = env.open(10_000).await;

    source.set(env.sign(a, 5, 500));
    let r = w.tick().await.unwrap();
    assert!(r.submitted.is_none(), "below threshold: {r:?}");

    source.set(env.sign(a, 9, 1_500));
    let r = w.tick().await.unwrap();
    assert!(covers(&r, &[a]), "{r:?}");
    assert!(matches!(r.confirmed, Some((_, true))), "{r:?}");
    assert_eq!(env.payer.channel(&a).await.unwrap().claimed, 1_500);

    // Same checkpoints again: nothing to send.
    let r = w.tick().await.unwrap();
    assert!(r.submitted.is_none(), "double submission: {r:?}");

    // b is below threshold until its payer starts a withdrawal.
    source.set(env.sign(b, 3, 40));
    assert!(w.tick().await.unwrap().submitted.is_none());
    env.payer.initiate_withdraw(&b).await.unwrap();
    let r = w.tick().await.unwrap();
    assert_eq!(r.withdraw_seen, vec![b]);
    assert!(covers(&r, &[b]), "{r:?}");
    assert_eq!(env.payer.channel(&b).await.unwrap().claimed, 40);
    // During the delay every newer checkpoint for b is claimed at once, whatever its size.
    source.set(env.sign(b, 4, 45));
    assert!(covers(&w.tick().await.unwrap(), &[b]));
    assert_eq!(env.payer.channel(&b).await.unwrap().claimed, 45);
    assert_eq!(env.balance(env.payee_key.address()).await, 1_545);
}

#[tokio::test]
async fn timer_claims_small_amounts_and_batches_with_claim_many() {
    let mut env = Env::new().await;
    let source = Source::default();
    let ids = [
        env.open(1_000).await,
        env.open(1_000).await,
        env.open(1_000).await,
    ];
    for (i, id) in ids.iter().enumerate() {
        source.set(env.sign(*id, 1, 10 + i as u128));
    }
    // A checkpoint signed by the wrong key is dropped; the others still go through.
    let bad = env.open(1_000).await;
    let stranger = alloy::signers::local::PrivateKeySigner::random();
    source.set(
        env.payer
            .sign_checkpoint(&stranger, common::cp(bad, 1, 10))
            .unwrap(),
    );

    let mut w = SettlementWorker::new(
        env.payee.clone(),
        source.clone(),
        config(u128::MAX, Duration::ZERO),
    );
    let r = w.tick().await.unwrap();
    assert!(
        covers(&r, &ids),
        "one claimMany for all good channels: {r:?}"
    );
    assert_eq!(r.rejected.len(), 1, "{r:?}");
    assert_eq!(r.rejected[0].0, bad);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(env.payer.channel(id).await.unwrap().claimed, 10 + i as u128);
    }
    assert_eq!(env.payer.channel(&bad).await.unwrap().claimed, 0);
}

#[tokio::test]
async fn never_double_submits_while_a_claim_is_pending() {
    let mut env = Env::new().await;
    let source = Source::default();
    let id = env.open(5_000).await;
    source.set(env.sign(id, 7, 2_000));
    let p = env.payer.provider().clone();
    p.raw_request::<_, serde_json::Value>("evm_setAutomine".into(), (false,))
        .await
        .unwrap();

    let mut w = SettlementWorker::new(
        env.payee.clone(),
        source.clone(),
        config(1_000, Duration::from_secs(3600)),
    );
    let r = w.tick().await.unwrap();
    let (hash, _) = r.submitted.clone().expect("claim sent");
    assert!(r.confirmed.is_none());
    for _ in 0..3 {
        let r = w.tick().await.unwrap();
        assert!(r.submitted.is_none(), "resubmitted while pending: {r:?}");
        assert_eq!(r.waiting_on, Some(hash));
    }
    // A newer checkpoint arrives meanwhile: still one claim in flight at a time.
    source.set(env.sign(id, 8, 3_500));
    assert!(w.tick().await.unwrap().submitted.is_none());

    p.raw_request::<_, serde_json::Value>("evm_mine".into(), ())
        .await
        .unwrap();
    let r = w.tick().await.unwrap();
    assert_eq!(r.confirmed, Some((hash, true)));
    let (next, _) = r
        .submitted
        .expect("the newer checkpoint goes out once the first landed");
    p.raw_request::<_, serde_json::Value>("evm_mine".into(), ())
        .await
        .unwrap();
    let r = w.tick().await.unwrap();
    assert_eq!(r.confirmed, Some((next, true)));
    let ch = env.payer.channel(&id).await.unwrap();
    assert_eq!((ch.claimed_size, ch.claimed), (8, 3_500));
    assert!(w.tick().await.unwrap().submitted.is_none());
}

#[tokio::test]
async fn retries_until_the_rpc_endpoint_comes_up() {
    // Reserve a port, then leave nothing listening on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url: alloy::transports::http::reqwest::Url =
        format!("http://127.0.0.1:{port}").parse().unwrap();
    let payee_key = alloy::signers::local::PrivateKeySigner::from(default_key(2));
    // Env::with_anvil deploys the token (payer nonce 0) then Tally (payer nonce 1).
    let payer_addr = alloy::signers::local::PrivateKeySigner::from(default_key(1)).address();
    let tally = payer_addr.create(1);
    let client = TallyClient::with_chain_id(
        connect(url.clone(), payee_key.clone()),
        payee_key.address(),
        tally,
        31337,
    );
    let source = Source::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(
        SettlementWorker::new(client, source.clone(), config(1, Duration::from_secs(3600)))
            .run(stopped),
    );

    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut env = Env::with_anvil(spawn(|b| b.port(port)), 0).await;
    assert_eq!(env.payer.address(), tally);
    let id = env.open(1_000).await;
    source.set(env.sign(id, 3, 300));

    let deadline = Instant::now() + Duration::from_secs(20);
    while env.payer.channel(&id).await.unwrap().claimed != 300 {
        assert!(Instant::now() < deadline, "worker never claimed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    let worker = worker.await.unwrap();
    assert!(
        worker.stats().errors >= 1,
        "the dead endpoint should have failed at least once"
    );
    assert_eq!(worker.stats().submitted.len(), 1);
}

/// The default anvil mnemonic's account keys ("test test ... junk"), index 1 and 2.
fn default_key(i: usize) -> alloy::signers::k256::ecdsa::SigningKey {
    let hex = match i {
        1 => "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        _ => "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    };
    let bytes = B256::from_slice(&alloy::primitives::hex::decode(hex).unwrap());
    alloy::signers::k256::ecdsa::SigningKey::from_slice(bytes.as_slice()).unwrap()
}

#[tokio::test]
async fn funding_reads_the_contract_through_a_trait_object() {
    let mut env = Env::new().await;
    let id = env.open(2_000).await;
    env.payee.claim(&env.sign(id, 2, 500)).await.unwrap();
    let funding: Arc<dyn Funding> = Arc::new(ChainFunding::new(env.payer.clone()));
    let f = funding.funding(&id).await.unwrap();
    assert_eq!(
        (f.deposit, f.claimed, f.claimed_size, f.remaining()),
        (2_000, 500, 2, 1_500)
    );
    assert_eq!(
        (f.payer, f.payee, f.signer),
        (
            env.payer_key.address(),
            env.payee_key.address(),
            env.signer.address()
        )
    );
    assert_eq!(f.payout_for(10_000), 1_500);
    let ghost = ChannelId([9; 32]);
    assert!(
        matches!(funding.funding(&ghost).await, Err(ChainError::UnknownChannel(g)) if g == ghost)
    );
}
