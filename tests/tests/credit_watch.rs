//! A credit the provider cosigned is never lost to the client, end to end on a real anvil
//! (spec/HTTP.md §7, CHAIN.md §4.2 and §4.6; issue 9, finding 2). The client pays, signs a
//! checkpoint, disputes a charged 5xx and gets the payee's signature over the state after the
//! credit (`TALLY-CREDIT-STATE`). The payee then claims the older, higher checkpoint; the
//! client's watcher answers with `claimCosigned` of the credit state within the window, so
//! the payee is paid the lower amount and the payer's refund includes the credit. A missing
//! anvil fails the test.

use std::sync::Arc;
use std::time::Duration;

use alloy::providers::Provider;
use tally_chain::{CheckpointSource, WithdrawState};
use tally_client::{ClaimAnswer, Quiet};
use tally_e2e::chain::{ChainEnv, WITHDRAW_DELAY};
use tally_e2e::*;

const DEPOSIT: u128 = 100_000;

async fn warp(env: &ChainEnv, seconds: u64) {
    let p = env.payer.provider();
    let r: Result<serde_json::Value, _> =
        p.raw_request("evm_increaseTime".into(), (seconds,)).await;
    r.unwrap_or_else(|e| panic!("evm_increaseTime: {e}"));
    let r: Result<serde_json::Value, _> = p.raw_request("evm_mine".into(), ()).await;
    r.unwrap_or_else(|e| panic!("evm_mine: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_answers_an_older_higher_claim_with_its_cosigned_credit() {
    let mut env = ChainEnv::new().await;
    let ch = env.open(DEPOSIT).await;
    let upstream = spawn_upstream().await;
    let (gdir, cdir) = (tmp(), tmp());
    let key = tally_core::SecretKey::generate(&mut rand::rngs::OsRng);
    let funding: Arc<dyn tally_chain::Funding> = Arc::new(env.funding().await);
    let mut settings = env.settings(gdir.path());
    settings.charge_server_errors = true;
    let (gw, server) =
        spawn_gateway_with_payee(settings, &key, funding, env.payee_key.clone(), &upstream).await;
    let client = connect(&server.url(), cdir.path(), &ch).await;
    for i in 0..3 {
        let r = client.post("/v1/echo").body(format!("c-{i}")).send().await;
        assert_eq!(r.unwrap_or_else(|e| panic!("call {i}: {e}")).status, 200);
    }
    let failed = client
        .post("/v1/fail")
        .send()
        .await
        .unwrap_or_else(|e| panic!("fail route: {e}"));
    assert_eq!(failed.status, 500);
    // The client signs the state with the 5xx charged: the payee can claim it.
    let signed = client
        .checkpoint()
        .await
        .unwrap_or_else(|e| panic!("checkpoint: {e}"));
    let higher = 4 * ECHO_PRICE;
    assert_eq!(
        (signed.checkpoint.size, signed.checkpoint.cumulative),
        (4, higher)
    );
    assert_eq!(client.credit_state().await.unwrap(), None);

    let granted = client
        .dispute(3, failed.exchange)
        .await
        .unwrap_or_else(|e| panic!("dispute: {e}"));
    assert_eq!(granted.amount.0, -(ECHO_PRICE as i128));
    let lower = higher - ECHO_PRICE;
    let credit = client
        .credit_state()
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no payee-cosigned credit state kept"));
    let (size, root, cumulative) = client.mirror_head().await;
    assert_eq!(
        (
            credit.checkpoint.size,
            credit.checkpoint.root,
            credit.checkpoint.cumulative
        ),
        (size, root, cumulative)
    );
    assert_eq!((size, cumulative), (5, lower));
    // Nothing claimed yet: nothing to answer.
    assert_eq!(
        client.answer_older_claim(&env.payer).await.unwrap(),
        ClaimAnswer::Quiet(Quiet::NotHigher)
    );

    // The client watches the chain from here on, paying gas from the payer's wallet.
    let watcher = {
        let (client, chain) = (client.clone(), env.payer.clone());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            let r = client
                .watch_claims(&chain, Duration::from_millis(100), |a| answers.push(*a))
                .await;
            (r, answers)
        })
    };
    // The payee claims the older, higher state it holds (the gateway's stored checkpoint).
    let stored = gw
        .latest_checkpoints()
        .await
        .unwrap_or_else(|e| panic!("checkpoints: {e}"));
    let old = stored
        .iter()
        .find(|c| c.checkpoint.channel_id == ch.id)
        .unwrap_or_else(|| panic!("no stored checkpoint"));
    assert_eq!(old.checkpoint.size, 4);
    env.payee
        .claim(old)
        .await
        .unwrap_or_else(|e| panic!("the payee's claim: {e}"));
    let mut state = env.channel(&ch.id).await;
    for _ in 0..100 {
        if state.credit_size == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = env.channel(&ch.id).await;
    }
    assert_eq!(
        (state.claimed_size, state.claimed, state.credit_size),
        (5, lower, 5),
        "the watcher did not post the credit"
    );
    // The older state can never come back.
    assert!(env.payee.claim(old).await.is_err());

    warp(&env, u64::from(WITHDRAW_DELAY) + 1).await;
    let payee = env.payee_key.address();
    let payee_before = env.balance(payee).await;
    env.payee
        .payout(&ch.id)
        .await
        .unwrap_or_else(|e| panic!("payout: {e}"));
    assert_eq!(env.balance(payee).await - payee_before, lower);

    let payer = env.payer_key.address();
    let payer_before = env.balance(payer).await;
    env.payer.initiate_withdraw(&ch.id).await.unwrap();
    warp(&env, u64::from(WITHDRAW_DELAY) + 1).await;
    env.payer.finalize_withdraw(&ch.id).await.unwrap();
    assert_eq!(env.balance(payer).await - payer_before, DEPOSIT - lower);
    assert_eq!(env.channel(&ch.id).await.withdraw, WithdrawState::Closed);

    // The watcher stops once the channel is closed, having answered exactly once.
    let (r, answers) = tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .unwrap_or_else(|_| panic!("the watcher did not stop at the close"))
        .unwrap();
    r.unwrap_or_else(|e| panic!("watcher: {e}"));
    match answers.as_slice() {
        [ClaimAnswer::Answered {
            credit: posted,
            replaced,
            ..
        }] => {
            assert_eq!(*posted, credit);
            assert_eq!(*replaced, (4, higher));
        }
        other => panic!("expected one answer, got {other:?}"),
    }
    // The credit state is in the mirror itself: a watcher without the gateway
    // (`tally channel watch`) reads it back from there, and finds the channel closed.
    drop(client);
    let mirror = tally_client::mirror::Mirror::open(cdir.path(), ch.id).unwrap();
    let kept = tally_client::client::credit::read_credit(&mirror, ch.id).unwrap();
    assert_eq!(kept, Some(credit));
    let key = ch.checkpoint.clone();
    let again = tally_client::client::credit::answer_claim(&env.payer, &key, ch.id, kept.as_ref())
        .await
        .unwrap();
    assert_eq!(again, ClaimAnswer::Quiet(Quiet::Closed));
    server.stop().await;
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credit_below_the_checkpoint_still_closes_cooperatively() {
    let mut env = ChainEnv::new().await;
    let ch = env.open(DEPOSIT).await;
    let upstream = spawn_upstream().await;
    let (gdir, cdir) = (tmp(), tmp());
    let key = tally_core::SecretKey::generate(&mut rand::rngs::OsRng);
    let funding: Arc<dyn tally_chain::Funding> = Arc::new(env.funding().await);
    let mut settings = env.settings(gdir.path());
    settings.charge_server_errors = true;
    let (_gw, server) =
        spawn_gateway_with_payee(settings, &key, funding, env.payee_key.clone(), &upstream).await;
    let client = connect(&server.url(), cdir.path(), &ch).await;
    let ok = client.post("/v1/echo").body("fine").send().await;
    assert_eq!(ok.unwrap_or_else(|e| panic!("call: {e}")).status, 200);
    let failed = client
        .post("/v1/fail")
        .send()
        .await
        .unwrap_or_else(|e| panic!("fail route: {e}"));
    client
        .checkpoint()
        .await
        .unwrap_or_else(|e| panic!("checkpoint: {e}"));
    client
        .dispute(1, failed.exchange)
        .await
        .unwrap_or_else(|e| panic!("dispute: {e}"));
    // The close is at the head, below the newest checkpoint: still agreed and accepted.
    let payee = env.payee_key.address();
    let close = client
        .close(payee)
        .await
        .unwrap_or_else(|e| panic!("close: {e}"));
    assert_eq!(
        (close.checkpoint.size, close.checkpoint.cumulative),
        (3, ECHO_PRICE)
    );
    env.payer
        .cooperative_close(&close.checkpoint, &close.signer_sig, &close.payee_sig)
        .await
        .unwrap_or_else(|e| panic!("cooperativeClose: {e}"));
    let state = env.channel(&ch.id).await;
    assert_eq!(
        (state.withdraw, state.paid),
        (WithdrawState::Closed, ECHO_PRICE)
    );
    server.stop().await;
    upstream.stop().await;
}
