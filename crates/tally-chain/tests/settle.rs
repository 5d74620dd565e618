//! The settlement worker against a real anvil: threshold, timer, withdraw events, batching
//! and its priorities, bad checkpoints, chunked log scans that fail without blocking claims,
//! shrink when the node refuses a range and ask for this payee's events only, urgent single
//! claims near a deadline, quarantine of entries a mined batch skipped,
//! fee-bumped replacement of a stuck claim, no second claim after a lost send answer or while
//! a claim is pending, confirmations and re-reads after a reorg, a withdraw event in a block a
//! reorg replaced (rescan of the last blocks), a withdrawing channel whose claim a reorg
//! dropped (re-read every tick), urgent claims that bid more near their deadline and are
//! replaced sooner, and retries through an unreachable RPC endpoint. Also the Funding view and
//! its admission check.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::consensus::Transaction as _;
use alloy::network::TransactionBuilder;
use alloy::primitives::{B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use common::proxy::{Fault, RpcProxy};
use common::{spawn, Env, DELAY};
use tally_chain::channel::{connect, finish};
use tally_chain::{
    BoxFuture, ChainCheckpoint, ChainError, ChainFunding, CheckpointSource, Funding,
    FundingRefusal, SettleConfig, SettlementWorker, TallyClient, TickReport, WithdrawState,
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

fn worker(env: &Env, source: &Source, cfg: SettleConfig) -> SettlementWorker<Source> {
    SettlementWorker::new(env.payee.clone(), env.payee_wallet(), source.clone(), cfg).unwrap()
}

/// The payee's client talking through a fault-injecting proxy instead of straight to anvil.
async fn via_proxy(env: &Env) -> (RpcProxy, TallyClient) {
    let proxy = RpcProxy::start(env.anvil.endpoint_url()).await;
    let client = TallyClient::new(
        connect(proxy.url.clone(), env.payee_key.clone()),
        env.payee_key.address(),
        env.payer.address(),
    )
    .await
    .unwrap();
    (proxy, client)
}

/// The payee account's (mined, pending) nonces, asked of anvil directly.
async fn nonces(env: &Env) -> (u64, u64) {
    let p = env.payer.provider();
    let who = env.payee_key.address();
    (
        p.get_transaction_count(who).latest().await.unwrap(),
        p.get_transaction_count(who).pending().await.unwrap(),
    )
}

/// (max fee, priority fee) of a transaction anvil knows, or None.
async fn fees_of(env: &Env, hash: B256) -> Option<(u128, u128)> {
    let tx = env
        .payer
        .provider()
        .get_transaction_by_hash(hash)
        .await
        .unwrap()?;
    Some((
        tx.max_fee_per_gas(),
        tx.max_priority_fee_per_gas().unwrap_or(0),
    ))
}

/// One tick, then, because anvil's automine mines asynchronously, a wait on anvil (not on
/// more ticks, which could do the next step's work early under load) until the claim that
/// tick sent is mined. A tick can both confirm the previous claim and send the next one, so
/// the wait is on the claim sent (or, if none was sent, the one still in flight), never
/// skipped because `confirmed` is already set. Returns that tick's report with `confirmed`
/// describing the claim waited for; the worker itself notices it on its next tick.
async fn tick_mined(env: &Env, w: &mut SettlementWorker<Source>) -> TickReport {
    let mut r = w.tick().await.unwrap();
    let sent = r.submitted.as_ref().map(|(hash, _)| *hash).or(r.resent);
    let waited = sent.or_else(|| r.confirmed.is_none().then(|| w.in_flight()).flatten());
    if let Some(hash) = waited {
        wait_receipt(env, hash).await;
        let receipt = env
            .payer
            .provider()
            .get_transaction_receipt(hash)
            .await
            .unwrap()
            .expect("mined");
        r.confirmed = Some((hash, receipt.status()));
    }
    r
}

/// Waits until anvil has mined `hash`.
async fn wait_receipt(env: &Env, hash: B256) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while env
        .payer
        .provider()
        .get_transaction_receipt(hash)
        .await
        .unwrap()
        .is_none()
    {
        assert!(Instant::now() < deadline, "{hash} never mined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn covers(r: &TickReport, ids: &[ChannelId]) -> bool {
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
    let mut w = worker(&env, &source, config(1_000, Duration::from_secs(3600)));
    let a = env.open(10_000).await;
    let b = env.open(10_000).await;

    source.set(env.sign(a, 5, 500));
    let r = tick_mined(&env, &mut w).await;
    assert!(r.submitted.is_none(), "below threshold: {r:?}");

    source.set(env.sign(a, 9, 1_500));
    let r = tick_mined(&env, &mut w).await;
    assert!(covers(&r, &[a]), "{r:?}");
    assert!(matches!(r.confirmed, Some((_, true))), "{r:?}");
    assert_eq!(env.payer.channel(&a).await.unwrap().claimed, 1_500);

    // Same checkpoints again: nothing to send.
    let r = tick_mined(&env, &mut w).await;
    assert!(r.submitted.is_none(), "double submission: {r:?}");

    // b is below threshold until its payer starts a withdrawal.
    source.set(env.sign(b, 3, 40));
    assert!(tick_mined(&env, &mut w).await.submitted.is_none());
    env.payer.initiate_withdraw(&b).await.unwrap();
    let r = tick_mined(&env, &mut w).await;
    assert_eq!(r.withdraw_seen, vec![b]);
    assert!(covers(&r, &[b]), "{r:?}");
    assert_eq!(env.payer.channel(&b).await.unwrap().claimed, 40);
    // During the delay every newer checkpoint for b is claimed at once, whatever its size.
    source.set(env.sign(b, 4, 45));
    assert!(covers(&tick_mined(&env, &mut w).await, &[b]));
    assert_eq!(env.payer.channel(&b).await.unwrap().claimed, 45);
    // Claims move nothing; once the windows have passed the worker pulls both payouts in one
    // payoutMany (spec/CHAIN.md §4.4).
    assert_eq!(env.balance(env.payee_key.address()).await, 0);
    env.warp(u64::from(DELAY) + 1).await;
    let r = tick_mined(&env, &mut w).await;
    let (_, mut paid) = r.payout.clone().expect("payout sent");
    paid.sort();
    let mut both = vec![a, b];
    both.sort();
    assert_eq!(paid, both, "{r:?}");
    let r = tick_mined(&env, &mut w).await;
    assert!(r.payout.is_none() && r.submitted.is_none(), "{r:?}");
    assert_eq!(env.balance(env.payee_key.address()).await, 1_545);
    assert_eq!(w.stats().payouts.len(), 1);
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

    let mut w = worker(&env, &source, config(u128::MAX, Duration::ZERO));
    let r = tick_mined(&env, &mut w).await;
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
    env.automine(false).await;

    let mut w = worker(&env, &source, config(1_000, Duration::from_secs(3600)));
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

    env.mine().await;
    let r = w.tick().await.unwrap();
    assert_eq!(r.confirmed, Some((hash, true)));
    // The first claim's challenge window is open: claiming now would restart it.
    assert!(r.submitted.is_none(), "{r:?}");
    assert_eq!(r.in_window, vec![id]);
    env.warp(u64::from(DELAY) + 1).await;
    let r = w.tick().await.unwrap();
    let (next, _) = r
        .submitted
        .expect("the newer checkpoint goes out once the first window passed");
    env.mine().await;
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
    // The tick hook sees each failure as it happens (what the gateway logs), then the claim.
    let seen = std::sync::Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let seen_by_hook = seen.clone();
    let worker = tokio::spawn(
        SettlementWorker::new(
            client,
            alloy::network::EthereumWallet::from(payee_key),
            source.clone(),
            config(1, Duration::from_secs(3600)),
        )
        .unwrap()
        .on_tick(move |outcome| {
            let mut seen = seen_by_hook.lock().unwrap();
            match outcome {
                Err(_) => seen.0 += 1,
                Ok(r) if r.submitted.is_some() => seen.1 += 1,
                Ok(_) => {}
            }
        })
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
    let seen = *seen.lock().unwrap();
    assert_eq!(
        seen.0,
        worker.stats().errors,
        "the hook saw every failed tick"
    );
    assert_eq!(seen.1, 1, "the hook saw the claim sent");
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

    // The admission check, on real chain state.
    let (payee, token) = (env.payee_key.address(), *env.token.address());
    assert_eq!(f.acceptable(common::DELAY, payee, token), Ok(()));
    assert_eq!(
        f.acceptable(2 * common::DELAY, payee, token),
        Err(FundingRefusal::DelayTooShort {
            delay: common::DELAY,
            minimum: 2 * common::DELAY
        })
    );
    assert!(matches!(
        f.acceptable(common::DELAY, env.payer_key.address(), token),
        Err(FundingRefusal::WrongPayee { .. })
    ));
    assert!(matches!(
        f.acceptable(common::DELAY, payee, env.payer.address()),
        Err(FundingRefusal::WrongToken { .. })
    ));
    env.payer.initiate_withdraw(&id).await.unwrap();
    let f = funding.funding(&id).await.unwrap();
    let WithdrawState::Pending { at } = f.withdraw else {
        panic!("{f:?}")
    };
    assert_eq!(
        f.acceptable(common::DELAY, payee, token),
        Err(FundingRefusal::Withdrawing { at })
    );
    env.warp(u64::from(common::DELAY)).await;
    env.payer.finalize_withdraw(&id).await.unwrap();
    let f = funding.funding(&id).await.unwrap();
    assert_eq!(
        f.acceptable(common::DELAY, payee, token),
        Err(FundingRefusal::Closed)
    );
    // Closing keeps the deposit total; nothing is left or claimable.
    assert_eq!(
        (f.deposit, f.remaining(), f.payout_for(10_000)),
        (2_000, 0, 0)
    );
}

#[tokio::test]
async fn the_wallet_must_sign_for_the_sender() {
    let env = Env::new().await;
    let payer_wallet = alloy::network::EthereumWallet::from(env.payer_key.clone());
    let r = SettlementWorker::new(
        env.payee.clone(),
        payer_wallet,
        Source::default(),
        SettleConfig::default(),
    );
    assert!(matches!(
        r.err(),
        Some(ChainError::WalletMismatch { wallet, sender })
            if wallet == env.payer_key.address() && sender == env.payee_key.address()
    ));
}

#[tokio::test]
async fn a_withdraw_event_before_the_first_checkpoint_still_makes_the_channel_urgent() {
    let mut env = Env::new().await;
    let source = Source::default();
    let mut w = worker(&env, &source, config(1_000, Duration::from_secs(3600)));
    let b = env.open(10_000).await;
    assert_eq!(tick_mined(&env, &mut w).await, TickReport::default());
    // The payer starts the exit before any checkpoint for the channel reached the worker.
    env.payer.initiate_withdraw(&b).await.unwrap();
    let r = tick_mined(&env, &mut w).await;
    assert_eq!(r.withdraw_seen, vec![b]);
    assert!(r.submitted.is_none(), "{r:?}");
    // Far below the threshold, but the channel is withdrawing: claimed at once.
    source.set(env.sign(b, 3, 40));
    let r = tick_mined(&env, &mut w).await;
    assert!(covers(&r, &[b]), "{r:?}");
    assert!(r.withdraw_seen.is_empty(), "seen once only: {r:?}");
    assert_eq!(env.payer.channel(&b).await.unwrap().claimed, 40);
}

fn hex_u64(v: &serde_json::Value) -> u64 {
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

#[tokio::test]
async fn log_scan_goes_in_chunks_resumes_after_a_failure_and_never_blocks_claims() {
    let mut env = Env::new().await;
    let source = Source::default();
    let (proxy, client) = via_proxy(&env).await;
    let cfg = SettleConfig {
        log_chunk_blocks: 3,
        log_chunks_per_tick: 100,
        // Exact ranges are asserted below; the reorg rescan has its own test.
        reorg_depth_blocks: 0,
        ..config(1_000, Duration::from_secs(3600))
    };
    let mut w =
        SettlementWorker::new(client, env.payee_wallet(), source.clone(), cfg.clone()).unwrap();
    let a = env.open(10_000).await;
    let b = env.open(10_000).await;
    for _ in 0..6 {
        env.open(1).await;
    }
    env.payer.initiate_withdraw(&b).await.unwrap();
    source.set(env.sign(a, 5, 2_000));
    source.set(env.sign(b, 3, 40));

    proxy.fail("eth_getLogs", Fault::Error, 1);
    let r = tick_mined(&env, &mut w).await;
    assert!(r.scan_error.is_some(), "{r:?}");
    // The claim over the threshold went out anyway, and so did b's: with the scan behind,
    // every channel with news was read, and the read shows b's pending withdrawal.
    assert!(covers(&r, &[a, b]), "{r:?}");
    assert_eq!(r.withdraw_seen, vec![b]);
    assert_eq!(w.stats().scan_errors, 1);

    let r = tick_mined(&env, &mut w).await;
    assert_eq!(r.scan_error, None);
    assert!(r.withdraw_seen.is_empty(), "{r:?}");
    assert_eq!(w.stats().scan_errors, 1);
    let head = env.payer.provider().get_block_number().await.unwrap();
    assert_eq!(w.scan_cursor(), head + 1);
    let ranges: Vec<(u64, u64)> = proxy
        .calls("eth_getLogs")
        .iter()
        .map(|p| (hex_u64(&p[0]["fromBlock"]), hex_u64(&p[0]["toBlock"])))
        .collect();
    assert_eq!(ranges[0], (0, 2), "the failed request");
    // Retried from the same block, half as wide, then growing back.
    assert_eq!(&ranges[1..3], &[(0, 0), (1, 2)]);
    let mut next = 0;
    for &(from, to) in &ranges[1..] {
        assert_eq!(from, next, "contiguous: {ranges:?}");
        assert!(to >= from && to - from < 3, "at most 3 blocks: {ranges:?}");
        next = to + 1;
    }
    assert_eq!(next, head + 1);

    // A bounded number of requests per tick: catching up spreads over ticks.
    let slow = SettleConfig {
        log_chunks_per_tick: 2,
        ..cfg
    };
    let mut w2 = worker(&env, &Source::default(), slow);
    w2.tick().await.unwrap();
    assert_eq!(w2.scan_cursor(), 6.min(head + 1));
    w2.tick().await.unwrap();
    assert_eq!(w2.scan_cursor(), 12.min(head + 1));
}

#[tokio::test]
async fn batches_take_withdrawing_then_threshold_then_timer_and_keep_the_timer_when_cut() {
    let mut env = Env::new().await;
    let source = Source::default();
    // Long enough that a tick_mined (one claim mined) under load surely fits inside it.
    let interval = Duration::from_secs(3);
    let cfg = SettleConfig {
        max_batch: 2,
        ..config(1_000, interval)
    };
    let mut w = worker(&env, &source, cfg);
    let t1 = env.open(10_000).await;
    let t2 = env.open(10_000).await;
    let wd = env.open(10_000).await;
    let hi = env.open(10_000).await;
    env.payer.initiate_withdraw(&wd).await.unwrap();
    source.set(env.sign(t1, 1, 10));
    source.set(env.sign(t2, 1, 20));
    source.set(env.sign(wd, 1, 5));
    source.set(env.sign(hi, 1, 5_000));
    tokio::time::sleep(interval + Duration::from_millis(100)).await;

    // Four channels due, room for two: the withdrawing one and the one over the threshold.
    let r = tick_mined(&env, &mut w).await;
    assert!(covers(&r, &[wd, hi]), "{r:?}");
    assert_eq!(r.deferred, 2);
    // Timer-due channels were cut, so the timer is still due on the next tick.
    let r = tick_mined(&env, &mut w).await;
    assert!(covers(&r, &[t1, t2]), "{r:?}");
    assert_eq!(r.deferred, 0);
    // Nothing was cut: the timer restarted, and a small new payout waits for it.
    source.set(env.sign(t1, 2, 15));
    let r = tick_mined(&env, &mut w).await;
    assert!(r.submitted.is_none(), "timer should have restarted: {r:?}");
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    // t1's first claim is still in its challenge window: the timer waits for it.
    let r = tick_mined(&env, &mut w).await;
    assert!(r.submitted.is_none() && r.in_window == vec![t1], "{r:?}");
    // After the window, the next timer claims it.
    env.warp(u64::from(DELAY) + 1).await;
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let r = tick_mined(&env, &mut w).await;
    assert!(covers(&r, &[t1]), "{r:?}");
    for (id, claimed) in [(t1, 15), (t2, 20), (wd, 5), (hi, 5_000)] {
        assert_eq!(env.payer.channel(&id).await.unwrap().claimed, claimed);
    }
}

#[tokio::test]
async fn a_stuck_underpriced_claim_is_replaced_with_the_same_nonce_and_higher_fees() {
    let mut env = Env::new().await;
    let source = Source::default();
    let id = env.open(10_000).await;
    let timeout = Duration::from_millis(300);
    let mut w = worker(
        &env,
        &source,
        SettleConfig {
            pending_timeout: timeout,
            ..config(1_000, Duration::from_secs(3600))
        },
    );
    env.automine(false).await;
    source.set(env.sign(id, 5, 2_000));
    let r = w.tick().await.unwrap();
    let (first, _) = r.submitted.expect("claim sent");
    let (max1, tip1) = fees_of(&env, first).await.expect("in anvil's pool");

    // The node keeps the claim but does not mine it. Before the timeout the worker waits.
    let r = w.tick().await.unwrap();
    assert_eq!(
        (r.waiting_on, r.resent, r.submitted),
        (Some(first), None, None)
    );
    tokio::time::sleep(timeout + Duration::from_millis(50)).await;
    let r = w.tick().await.unwrap();
    let second = r.resent.expect("replaced after the timeout");
    assert!(r.submitted.is_none());
    assert_ne!(second, first);
    let (max2, tip2) = fees_of(&env, second)
        .await
        .expect("replacement in the pool");
    assert!(
        max2 * 8 >= max1 * 9 && tip2 * 8 >= tip1 * 9,
        "{max1}/{tip1} -> {max2}/{tip2}"
    );
    assert!(
        fees_of(&env, first).await.is_none(),
        "the old version was replaced"
    );
    assert_eq!(nonces(&env).await, (0, 1), "one transaction, one nonce");

    // Now the base fee jumps far above the bid: anvil drops the claim and refuses it again.
    let p = env.payer.provider();
    p.raw_request::<_, serde_json::Value>(
        "anvil_setNextBlockBaseFeePerGas".into(),
        (U256::from(max2 * 4),),
    )
    .await
    .unwrap();
    env.mine().await;
    assert!(p.get_transaction_receipt(second).await.unwrap().is_none());
    assert!(fees_of(&env, second).await.is_none(), "dropped by the node");
    // Before the timeout: the same bytes are offered again (and refused); nothing new.
    let e = w.tick().await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    assert_eq!(w.in_flight(), Some(second));
    tokio::time::sleep(timeout + Duration::from_millis(50)).await;
    let r = w.tick().await.unwrap();
    let third = r.resent.expect("replaced at the market rate");
    let (max3, _) = fees_of(&env, third).await.expect("accepted");
    let base = p
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap()
        .header
        .base_fee_per_gas
        .unwrap();
    assert!(
        u128::from(base) < max3,
        "bids above the base fee: {base} vs {max3}"
    );
    assert_eq!(nonces(&env).await, (0, 1));

    env.mine().await;
    let r = w.tick().await.unwrap();
    assert_eq!(r.confirmed, Some((third, true)));
    assert_eq!(env.payer.channel(&id).await.unwrap().claimed, 2_000);
    assert_eq!(nonces(&env).await, (1, 1));
    assert_eq!(w.stats().submitted, vec![first]);
    assert_eq!(w.stats().resent, vec![second, third]);
    assert!(w.tick().await.unwrap().submitted.is_none());
}

#[tokio::test]
async fn a_lost_send_answer_never_leads_to_a_second_claim() {
    let mut env = Env::new().await;
    let source = Source::default();
    let a = env.open(10_000).await;
    let b = env.open(10_000).await;
    let (proxy, client) = via_proxy(&env).await;
    let mut w = SettlementWorker::new(
        client,
        env.payee_wallet(),
        source.clone(),
        config(1_000, Duration::from_secs(3600)),
    )
    .unwrap();
    env.automine(false).await;

    // The node accepts the claim but the answer never arrives, and the follow-up lookup fails.
    proxy.fail("eth_sendRawTransaction", Fault::AnswerLost, 1);
    proxy.fail("eth_getTransactionByHash", Fault::Error, 1);
    source.set(env.sign(a, 5, 2_000));
    let err = w.tick().await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let first = w.in_flight().expect("recorded before sending");
    assert!(fees_of(&env, first).await.is_some(), "the node has it");
    // The next tick finds it in flight and sends nothing, not even the same bytes.
    let r = w.tick().await.unwrap();
    assert_eq!(
        (r.submitted, r.rebroadcast, r.waiting_on),
        (None, None, Some(first))
    );
    assert_eq!(proxy.calls("eth_sendRawTransaction").len(), 1);
    env.mine().await;
    let r = w.tick().await.unwrap();
    assert_eq!(r.confirmed, Some((first, true)));
    assert_eq!(nonces(&env).await, (1, 1));

    // This time the claim never reaches the node: the same signed bytes go out again.
    proxy.fail("eth_sendRawTransaction", Fault::NotDelivered, 1);
    proxy.fail("eth_getTransactionByHash", Fault::Error, 1);
    source.set(env.sign(b, 5, 3_000));
    assert!(w.tick().await.unwrap_err().is_transient());
    let second = w.in_flight().expect("recorded before sending");
    assert!(
        fees_of(&env, second).await.is_none(),
        "the node never saw it"
    );
    let r = w.tick().await.unwrap();
    assert_eq!((r.submitted, r.rebroadcast), (None, Some(second)));
    let sent = proxy.calls("eth_sendRawTransaction");
    assert_eq!(sent.len(), 3);
    assert_eq!(
        sent[1], sent[2],
        "identical bytes, so identical hash and nonce"
    );
    assert_eq!(nonces(&env).await, (1, 2));
    env.mine().await;
    let r = w.tick().await.unwrap();
    assert_eq!(r.confirmed, Some((second, true)));
    assert!(w.tick().await.unwrap().submitted.is_none());
    assert_eq!(env.payer.channel(&a).await.unwrap().claimed, 2_000);
    assert_eq!(env.payer.channel(&b).await.unwrap().claimed, 3_000);
    assert_eq!(nonces(&env).await, (2, 2));
}

#[tokio::test]
async fn a_claim_whose_nonce_was_taken_is_abandoned_and_claimed_again() {
    let mut env = Env::new().await;
    let source = Source::default();
    let id = env.open(10_000).await;
    let mut w = worker(&env, &source, config(1_000, Duration::from_secs(3600)));
    env.automine(false).await;
    source.set(env.sign(id, 5, 2_000));
    let (first, _) = w.tick().await.unwrap().submitted.expect("claim sent");
    let (max1, tip1) = fees_of(&env, first).await.unwrap();
    // Someone else with the payee's key uses the nonce (outbidding the claim).
    let payee = env.payee_key.address();
    let other = TransactionRequest::default()
        .with_from(payee)
        .with_to(payee)
        .with_nonce(0)
        .with_gas_limit(21_000)
        .with_max_fee_per_gas(max1 * 3)
        .with_max_priority_fee_per_gas(tip1 * 3 + 1);
    let other = *env
        .payee
        .provider()
        .send_transaction(other)
        .await
        .unwrap()
        .tx_hash();
    env.mine().await;
    assert!(env
        .payer
        .provider()
        .get_transaction_receipt(other)
        .await
        .unwrap()
        .is_some());

    let r = w.tick().await.unwrap();
    assert_eq!(r.abandoned, Some(first));
    let (again, _) = r.submitted.expect("re-read and claimed again");
    assert_ne!(again, first);
    env.mine().await;
    assert_eq!(w.tick().await.unwrap().confirmed, Some((again, true)));
    assert_eq!(env.payer.channel(&id).await.unwrap().claimed, 2_000);
}

#[tokio::test]
async fn waits_for_confirmations_and_rereads_on_the_timer_after_a_reorg() {
    let mut env = Env::new().await;
    let source = Source::default();
    let id = env.open(10_000).await;
    // Long enough that the steps before the timer surely finish first.
    let interval = Duration::from_secs(4);
    let mut w = worker(
        &env,
        &source,
        SettleConfig {
            confirmations: 3,
            ..config(1_000, interval)
        },
    );
    let p = env.payer.provider().clone();
    let snapshot: U256 = p.raw_request("evm_snapshot".into(), ()).await.unwrap();
    source.set(env.sign(id, 5, 2_000));
    let r = w.tick().await.unwrap();
    let (hash, _) = r.submitted.clone().expect("claim sent");
    assert_eq!(r.confirmed, None);
    wait_receipt(&env, hash).await;
    assert_eq!(w.tick().await.unwrap().waiting_on, Some(hash), "1 of 3");
    env.mine().await;
    assert_eq!(w.tick().await.unwrap().waiting_on, Some(hash), "2 of 3");
    env.mine().await;
    assert_eq!(w.tick().await.unwrap().confirmed, Some((hash, true)));

    // A reorg takes the claim away again.
    let reverted: bool = p
        .raw_request("evm_revert".into(), (snapshot,))
        .await
        .unwrap();
    assert!(reverted);
    assert_eq!(env.payer.channel(&id).await.unwrap().claimed, 0);
    // The worker believes the checkpoint claimed, so nothing happens before the timer...
    assert!(w.tick().await.unwrap().submitted.is_none());
    // ...which re-reads every channel and finds the claim missing.
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let r = w.tick().await.unwrap();
    let (again, _) = r.submitted.expect("claimed again after the re-read");
    wait_receipt(&env, again).await;
    env.mine().await;
    env.mine().await;
    assert_eq!(w.tick().await.unwrap().confirmed, Some((again, true)));
    assert_eq!(env.payer.channel(&id).await.unwrap().claimed, 2_000);
}

/// An eth_getLogs request's (fromBlock, toBlock).
fn range(p: &serde_json::Value) -> (u64, u64) {
    (hex_u64(&p[0]["fromBlock"]), hex_u64(&p[0]["toBlock"]))
}

#[tokio::test]
async fn log_scan_asks_for_this_payee_only_and_shrinks_ranges_the_node_refuses() {
    let mut env = Env::new().await;
    let source = Source::default();
    let (proxy, client) = via_proxy(&env).await;
    // Like a hosted node: ranges over two blocks are refused, every time.
    proxy.refuse_log_ranges_over(2);
    let cfg = SettleConfig {
        log_chunk_blocks: 8,
        log_chunks_per_tick: 100,
        ..config(1_000_000, Duration::from_secs(3600))
    };
    let mut w = SettlementWorker::new(client, env.payee_wallet(), source, cfg).unwrap();
    let ours = env.open(10_000).await;
    // Someone else's channel from the same payer, withdrawing too.
    let other = alloy::signers::local::PrivateKeySigner::random().address();
    let params = tally_chain::OpenParams {
        payee: other,
        ..env.params(10_000)
    };
    let (theirs, _) = env.payer.open(params).await.unwrap();
    for _ in 0..5 {
        env.open(1).await;
    }
    env.payer.initiate_withdraw(&theirs).await.unwrap();
    env.payer.initiate_withdraw(&ours).await.unwrap();
    let head = env.payer.provider().get_block_number().await.unwrap();

    let r = w.tick().await.unwrap();
    // One tick got through: the chunk shrank instead of failing on the same range forever.
    assert_eq!(w.scan_cursor(), head + 1, "{r:?}");
    assert_eq!(r.withdraw_seen, vec![ours], "only this payee's channel");
    assert!(w.stats().scan_errors >= 1);
    let calls = proxy.calls("eth_getLogs");
    assert_eq!(range(&calls[0]), (0, 7), "starts at the configured width");
    let mut next = 0;
    for p in &calls {
        let (from, to) = range(p);
        assert_eq!(from, next, "never skips a block: {calls:?}");
        if to - from < 2 {
            next = to + 1;
        }
        // The node is asked for WithdrawInitiated of this payee only.
        assert_eq!(
            p[0]["topics"][2].as_str().unwrap().parse::<B256>().unwrap(),
            env.payee_key.address().into_word()
        );
    }
    assert_eq!(next, head + 1);
    // Successes grow the chunk back towards the configured width.
    assert!(w.scan_chunk() > 1, "chunk {}", w.scan_chunk());
}

#[tokio::test]
async fn a_channel_near_its_deadline_is_claimed_alone_before_the_batch() {
    let mut env = Env::new().await;
    let source = Source::default();
    let cfg = SettleConfig {
        // Every withdrawing channel of this test is inside the margin.
        deadline_margin: Duration::from_secs(u64::from(common::DELAY) + 60),
        ..config(1_000, Duration::from_secs(3600))
    };
    let mut w = worker(&env, &source, cfg);
    let a = env.open(10_000).await;
    let b = env.open(10_000).await;
    let near = env.open(10_000).await;
    env.payer.initiate_withdraw(&near).await.unwrap();
    for id in [a, b, near] {
        source.set(env.sign(id, 5, 2_000));
    }
    let r = tick_mined(&env, &mut w).await;
    assert!(covers(&r, &[near]), "alone: {r:?}");
    assert_eq!(r.urgent, Some(near));
    assert_eq!(r.deferred, 2);
    let r = tick_mined(&env, &mut w).await;
    assert!(covers(&r, &[a, b]), "then the batch: {r:?}");
    assert_eq!(r.urgent, None);
    assert_eq!(w.stats().urgent, 1);
}

#[tokio::test]
async fn a_batch_mined_after_an_entrys_deadline_pays_the_rest_and_quarantines_it() {
    let mut env = Env::new().await;
    let source = Source::default();
    let mut w = worker(&env, &source, config(1_000, Duration::from_secs(3600)));
    let honest = [env.open(10_000).await, env.open(10_000).await];
    let bad = env.open(10_000).await;
    env.payer.initiate_withdraw(&bad).await.unwrap();
    for id in honest {
        source.set(env.sign(id, 5, 2_000));
    }
    source.set(env.sign(bad, 5, 2_000));
    // Built and simulated with the window open (deadline beyond the margin)...
    env.automine(false).await;
    let r = w.tick().await.unwrap();
    assert!(covers(&r, &[honest[0], honest[1], bad]), "{r:?}");
    // ...mined after the deadline.
    env.warp(u64::from(common::DELAY)).await;
    env.automine(true).await;
    let r = w.tick().await.unwrap();
    assert!(matches!(r.confirmed, Some((_, true))), "{r:?}");
    assert_eq!(r.skipped, vec![(bad, "ClaimWindowClosed".to_string())]);
    for id in honest {
        assert_eq!(env.payer.channel(&id).await.unwrap().claimed, 2_000);
    }
    assert_eq!(env.payer.channel(&bad).await.unwrap().claimed, 0);
    assert_eq!(w.stats().skipped, 1);
    assert_eq!(w.stats().quarantined, vec![bad]);
    assert!(w.quarantined().contains_key(&bad));

    // Quarantined: never batched again, though it has a newer checkpoint.
    let fresh = env.open(10_000).await;
    source.set(env.sign(fresh, 5, 2_000));
    source.set(env.sign(bad, 6, 3_000));
    let r = tick_mined(&env, &mut w).await;
    assert!(covers(&r, &[fresh]), "{r:?}");
}

#[tokio::test]
async fn a_withdraw_event_in_a_block_replaced_by_a_reorg_is_still_found() {
    let mut env = Env::new().await;
    let source = Source::default();
    let mut w = worker(&env, &source, config(1_000, Duration::from_secs(3600)));
    let id = env.open(10_000).await;
    // Below the threshold: only a withdrawal makes it due.
    source.set(env.sign(id, 3, 40));
    let p = env.payer.provider().clone();
    let snapshot: U256 = p.raw_request("evm_snapshot".into(), ()).await.unwrap();
    for _ in 0..3 {
        env.mine().await;
    }
    assert_eq!(tick_mined(&env, &mut w).await, TickReport::default());
    let head = p.get_block_number().await.unwrap();
    assert_eq!(w.scan_cursor(), head + 1);
    // A reorg: the blocks the scan read are replaced by a shorter chain whose new block
    // carries the payer's WithdrawInitiated, below the scan's cursor.
    let reverted: bool = p
        .raw_request("evm_revert".into(), (snapshot,))
        .await
        .unwrap();
    assert!(reverted);
    env.payer.initiate_withdraw(&id).await.unwrap();
    assert!(p.get_block_number().await.unwrap() < head);
    let r = tick_mined(&env, &mut w).await;
    assert_eq!(r.withdraw_seen, vec![id], "{r:?}");
    assert!(covers(&r, &[id]), "{r:?}");
    assert_eq!(env.payer.channel(&id).await.unwrap().claimed, 40);
}

#[tokio::test]
async fn a_withdrawing_channel_whose_claim_a_reorg_dropped_is_claimed_again_at_once() {
    let mut env = Env::new().await;
    let source = Source::default();
    // The claim timer never runs out during the test: only the per-tick re-read can help.
    let mut w = worker(&env, &source, config(1_000, Duration::from_secs(3600)));
    let id = env.open(10_000).await;
    env.payer.initiate_withdraw(&id).await.unwrap();
    let p = env.payer.provider().clone();
    let snapshot: U256 = p.raw_request("evm_snapshot".into(), ()).await.unwrap();
    source.set(env.sign(id, 3, 40));
    let r = tick_mined(&env, &mut w).await;
    assert!(covers(&r, &[id]), "{r:?}");
    // The worker has seen it mined (in the tick that sent it, or in this one).
    let r = w.tick().await.unwrap();
    assert!(w.in_flight().is_none() && r.submitted.is_none(), "{r:?}");
    assert_eq!(env.payer.channel(&id).await.unwrap().claimed, 40);

    // A reorg drops the claim; the withdrawal stays.
    let reverted: bool = p
        .raw_request("evm_revert".into(), (snapshot,))
        .await
        .unwrap();
    assert!(reverted);
    assert_eq!(env.payer.channel(&id).await.unwrap().claimed, 0);
    let r = tick_mined(&env, &mut w).await;
    assert!(covers(&r, &[id]), "claimed again on the next tick: {r:?}");
    assert_eq!(env.payer.channel(&id).await.unwrap().claimed, 40);
}

#[tokio::test]
async fn an_urgent_claim_bids_more_as_its_deadline_nears_and_is_replaced_sooner() {
    let mut env = Env::new().await;
    let source = Source::default();
    let margin = u64::from(common::DELAY) + 60;
    let cfg = SettleConfig {
        deadline_margin: Duration::from_secs(margin),
        // Ordinary claims would wait an hour before a replacement; urgent ones do not.
        pending_timeout: Duration::from_secs(3600),
        urgent_pending_timeout: Duration::from_millis(300),
        ..config(1_000, Duration::from_secs(3600))
    };
    let mut w = worker(&env, &source, cfg);
    let id = env.open(10_000).await;
    env.payer.initiate_withdraw(&id).await.unwrap();
    assert!(matches!(
        env.payer.channel(&id).await.unwrap().withdraw,
        WithdrawState::Pending { .. }
    ));
    // About 100 s of the window left, of a margin of an hour: close to 4x the market.
    env.warp(u64::from(common::DELAY) - 100).await;
    env.automine(false).await;
    // anvil updates its fee history after a block asynchronously; let it settle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let market = env.payer.provider().estimate_eip1559_fees().await.unwrap();
    // 100 s of 3,660 left: 1 + 3 * 3,560 / 3,660 = 3.92x.
    let scaled = tally_chain::settle::urgent_fees(
        tally_chain::FeeBid {
            max_fee_per_gas: market.max_fee_per_gas,
            max_priority_fee_per_gas: market.max_priority_fee_per_gas,
        },
        100,
        margin,
    );
    assert!(scaled.max_fee_per_gas * 100 >= market.max_fee_per_gas * 391);

    source.set(env.sign(id, 3, 40));
    let r = w.tick().await.unwrap();
    assert_eq!(r.urgent, Some(id));
    let (first, _) = r.submitted.expect("urgent claim sent");
    let (max1, tip1) = fees_of(&env, first).await.expect("in the pool");
    // Well above the market estimate (the old worker bid exactly that), though a block's
    // worth of base-fee drift between the two estimates is allowed.
    assert!(
        max1 >= 3 * market.max_fee_per_gas && tip1 >= 3 * market.max_priority_fee_per_gas,
        "bid {max1}/{tip1}, market {market:?}"
    );
    assert!(max1 <= scaled.max_fee_per_gas + scaled.max_fee_per_gas / 8);

    // Not mined: replaced after the short urgent timeout, bidding more again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let r = w.tick().await.unwrap();
    let second = r.resent.expect("replaced after urgent_pending_timeout");
    let (max2, tip2) = fees_of(&env, second).await.expect("in the pool");
    assert!(
        max2 * 8 >= max1 * 9 && tip2 * 8 >= tip1 * 9,
        "{max1}/{tip1} -> {max2}/{tip2}"
    );
    env.mine().await;
    assert_eq!(w.tick().await.unwrap().confirmed, Some((second, true)));
    assert_eq!(env.payer.channel(&id).await.unwrap().claimed, 40);
}

#[tokio::test]
async fn a_paused_token_delays_the_workers_payout_without_stopping_its_claims() {
    let mut env = Env::new().await;
    let source = Source::default();
    let mut w = worker(&env, &source, config(100, Duration::from_secs(3600)));
    let a = env.open(10_000).await;
    let b = env.open(10_000).await;
    source.set(env.sign(a, 5, 500));
    assert!(covers(&tick_mined(&env, &mut w).await, &[a]));
    tick_mined(&env, &mut w).await;
    // The token pauses; the window passes. The payout is refused and reported, the tick
    // does not fail, and a new claim still goes out.
    finish(env.token.setPaused(true).send().await.unwrap())
        .await
        .unwrap();
    env.warp(u64::from(DELAY) + 1).await;
    let r = w.tick().await.unwrap();
    assert!(r.payout.is_none() && r.payout_error.is_some(), "{r:?}");
    source.set(env.sign(b, 3, 300));
    let r = tick_mined(&env, &mut w).await;
    assert!(covers(&r, &[b]), "{r:?}");
    tick_mined(&env, &mut w).await;
    assert_eq!(env.payer.payable(&a).await.unwrap(), 500);
    // Unpaused, the payout goes out after the retry interval; nothing was lost.
    finish(env.token.setPaused(false).send().await.unwrap())
        .await
        .unwrap();
    env.warp(u64::from(DELAY) + 1).await;
    let mut paid = false;
    for _ in 0..4 {
        let r = tick_mined(&env, &mut w).await;
        paid |= r.payout.is_some();
    }
    assert!(paid);
    assert_eq!(env.balance(env.payee_key.address()).await, 800);
}
