//! The provider closes what the client agreed to, end to end on a real anvil (spec/CHAIN.md
//! §9, "Agreed closes"): a client pays, obtains the payee's Close signature from the gateway
//! (`POST /tally/v1/close`) and then does nothing; the settlement worker, whose checkpoint
//! source is the gateway, leaves the channel alone until `close_timeout` has passed, then
//! submits the stored close, and the channel ends closed at the agreed split. A missing anvil
//! fails the test.

use std::sync::Arc;
use std::time::Duration;

use alloy::providers::Provider;
use tally_chain::{SettleConfig, SettlementWorker, WithdrawState};
use tally_e2e::chain::ChainEnv;
use tally_e2e::*;

const TIMEOUT: u64 = 900;

async fn warp(env: &ChainEnv, seconds: u64) {
    let p = env.payer.provider();
    let r: Result<serde_json::Value, _> =
        p.raw_request("evm_increaseTime".into(), (seconds,)).await;
    r.unwrap_or_else(|e| panic!("evm_increaseTime: {e}"));
    let r: Result<serde_json::Value, _> = p.raw_request("evm_mine".into(), ()).await;
    r.unwrap_or_else(|e| panic!("evm_mine: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_submits_a_close_the_client_obtained_and_never_sent() {
    let mut env = ChainEnv::new().await;
    let ch = env.open(1_000).await;
    let upstream = spawn_upstream().await;
    let (gdir, cdir) = (tmp(), tmp());
    let key = tally_core::SecretKey::generate(&mut rand::rngs::OsRng);
    let funding: Arc<dyn tally_chain::Funding> = Arc::new(env.funding().await);
    let (gw, server) = spawn_gateway_with_payee(
        env.settings(gdir.path()),
        &key,
        funding,
        env.payee_key.clone(),
        &upstream,
    )
    .await;
    let client = connect(&server.url(), cdir.path(), &ch).await;
    for i in 0..7 {
        let r = client.post("/v1/echo").body(format!("c-{i}")).send().await;
        assert_eq!(r.unwrap_or_else(|e| panic!("call {i}: {e}")).status, 200);
    }
    let agreed = 7 * ECHO_PRICE;
    let payee = env.payee_key.address();
    let close = client
        .close(payee)
        .await
        .unwrap_or_else(|e| panic!("close: {e}"));
    assert_eq!(close.checkpoint.cumulative, agreed);
    // The client walks away with both signatures and submits nothing.

    let (payer_before, payee_before) = (
        env.balance(env.payer_key.address()).await,
        env.balance(payee).await,
    );
    let config = SettleConfig {
        threshold: 1,
        close_timeout: Duration::from_secs(TIMEOUT),
        ..SettleConfig::default()
    };
    let mut worker =
        SettlementWorker::new(env.payee.clone(), env.payee_wallet(), gw.clone(), config)
            .unwrap_or_else(|e| panic!("worker: {e}"));
    let r = worker.tick().await.unwrap_or_else(|e| panic!("tick: {e}"));
    assert_eq!((r.close, r.submitted.clone()), (None, None), "{r:?}");
    assert_eq!(env.channel(&ch.id).await.withdraw, WithdrawState::None);

    warp(&env, TIMEOUT + 5).await;
    let r = worker.tick().await.unwrap_or_else(|e| panic!("tick: {e}"));
    let (hash, id) = r.close.unwrap_or_else(|| panic!("no close sent: {r:?}"));
    assert_eq!(id, ch.id);
    let mut closed = r.closed == Some(ch.id);
    for _ in 0..100 {
        if closed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = worker.tick().await.unwrap_or_else(|e| panic!("tick: {e}"));
        assert!(r.confirmed.is_none_or(|c| c == (hash, true)), "{r:?}");
        closed = r.closed == Some(ch.id);
    }
    assert!(closed, "the worker never saw its close confirmed");

    let state = env.channel(&ch.id).await;
    assert_eq!(state.withdraw, WithdrawState::Closed);
    assert_eq!(
        (state.claimed_size, state.claimed, state.paid),
        (close.checkpoint.size, agreed, agreed)
    );
    assert_eq!(env.balance(payee).await - payee_before, agreed);
    assert_eq!(
        env.balance(env.payer_key.address()).await - payer_before,
        1_000 - agreed
    );
    assert!(worker.stats().submitted.is_empty(), "no claim was sent");
    server.stop().await;
    upstream.stop().await;
}
