//! The provider closes what the client agreed to (spec/CHAIN.md §9, "Agreed closes"), on a
//! real anvil: a client that obtained the payee's Close signature and never submitted it gets
//! its channel closed by the settlement worker once `close_timeout` has passed (at once if the
//! payer starts a withdrawal instead), at the agreed split; the channel is not claimed
//! meanwhile; a close someone else submitted is never sent again; a close the contract would
//! refuse falls back to ordinary claims.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::B256;
use alloy::providers::Provider;
use common::{cp, Env};
use tally_chain::{
    AgreedClose, BoxFuture, ChainCheckpoint, ChainError, CheckpointSource, CloseAgreement,
    SettleConfig, SettlementWorker, TickReport, WithdrawState,
};
use tally_core::ChannelId;

const TIMEOUT: u64 = 600;

#[derive(Clone, Default)]
struct Source {
    checkpoints: Arc<Mutex<Vec<ChainCheckpoint>>>,
    closes: Arc<Mutex<Vec<AgreedClose>>>,
}

impl CheckpointSource for Source {
    fn latest_checkpoints(&self) -> BoxFuture<'_, Result<Vec<ChainCheckpoint>, ChainError>> {
        let v = self.checkpoints.lock().unwrap().clone();
        Box::pin(async move { Ok(v) })
    }

    fn agreed_closes(&self) -> BoxFuture<'_, Result<Vec<AgreedClose>, ChainError>> {
        let v = self.closes.lock().unwrap().clone();
        Box::pin(async move { Ok(v) })
    }
}

fn worker(env: &Env, source: &Source) -> SettlementWorker<Source> {
    let cfg = SettleConfig {
        threshold: 1,
        close_timeout: Duration::from_secs(TIMEOUT),
        ..SettleConfig::default()
    };
    SettlementWorker::new(env.payee.clone(), env.payee_wallet(), source.clone(), cfg).unwrap()
}

async fn chain_now(env: &Env) -> u64 {
    env.payer
        .provider()
        .get_block_by_number(BlockNumberOrTag::Latest)
        .await
        .unwrap()
        .unwrap()
        .header
        .timestamp
}

async fn wait_receipt(env: &Env, hash: B256) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = env
            .payer
            .provider()
            .get_transaction_receipt(hash)
            .await
            .unwrap();
        if let Some(r) = r {
            return r.status();
        }
        assert!(Instant::now() < deadline, "{hash} never mined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A channel of `deposit` with a client-signed checkpoint at (size 5, `agreed`) that the
/// worker would claim at once (threshold 1), and the close both parties signed at the same
/// state, as the gateway stores it after `POST /tally/v1/close`, agreed at chain time `at`.
async fn agreed(env: &mut Env, source: &Source, deposit: u128, agreed: u128, at: u64) -> ChannelId {
    let id = env.open(deposit).await;
    source
        .checkpoints
        .lock()
        .unwrap()
        .push(env.sign(id, 5, agreed));
    let state = cp(id, 5, agreed);
    let close = AgreedClose {
        agreement: CloseAgreement {
            checkpoint: state,
            signer_sig: env.payer.sign_close(&env.signer, &state).unwrap(),
            payee_sig: env.payer.sign_close(&env.payee_key, &state).unwrap(),
        },
        agreed_at: Some(at),
    };
    source.closes.lock().unwrap().push(close);
    id
}

/// Waits for the close that tick `sent` sent and ticks until the worker confirmed it (it
/// may have seen it mined within that very tick); returns the worker's stats afterwards.
async fn until_closed(env: &Env, w: &mut SettlementWorker<Source>, sent: &TickReport) {
    let (hash, id) = sent
        .close
        .unwrap_or_else(|| panic!("no close sent: {sent:?}"));
    assert!(wait_receipt(env, hash).await, "the close reverted");
    if sent.closed == Some(id) {
        assert_eq!(sent.confirmed, Some((hash, true)));
        return;
    }
    let r = w.tick().await.unwrap();
    assert_eq!(r.confirmed, Some((hash, true)), "{r:?}");
    assert_eq!(r.closed, Some(id), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agreed_close_nobody_submitted_is_submitted_after_the_timeout() {
    let mut env = Env::new().await;
    let source = Source::default();
    let now = chain_now(&env).await;
    let id = agreed(&mut env, &source, 1_000, 400, now).await;
    let (payer, payee) = (env.payer_key.address(), env.payee_key.address());
    let (payer_before, payee_before) = (env.balance(payer).await, env.balance(payee).await);
    let mut w = worker(&env, &source);

    // Within the timeout: neither closed nor claimed (a claim would only cost gas).
    let r = w.tick().await.unwrap();
    assert_eq!(r.close, None, "{r:?}");
    assert_eq!(
        r.submitted, None,
        "a channel with an agreed close is not claimed: {r:?}"
    );
    env.warp(TIMEOUT / 2).await;
    let r = w.tick().await.unwrap();
    assert_eq!((r.close, r.submitted.clone()), (None, None), "{r:?}");
    assert!(env.payer.channel(&id).await.unwrap().withdraw == WithdrawState::None);

    // Past it: the worker submits the stored close.
    env.warp(TIMEOUT / 2 + 1).await;
    let r = w.tick().await.unwrap();
    let (hash, closed) = r.close.unwrap_or_else(|| panic!("no close sent: {r:?}"));
    assert_eq!(closed, id);
    assert_eq!(r.submitted, None);
    until_closed(&env, &mut w, &r).await;
    assert_eq!(w.stats().closes, vec![hash]);
    assert!(w.stats().submitted.is_empty(), "no claim was ever sent");

    // The agreed split: 400 to the payee, 600 back to the payer, at once.
    let state = env.payer.channel(&id).await.unwrap();
    assert_eq!(state.withdraw, WithdrawState::Closed);
    assert_eq!((state.claimed, state.paid), (400, 400));
    assert_eq!(env.balance(payee).await - payee_before, 400);
    assert_eq!(env.balance(payer).await - payer_before, 600);

    // Nothing more is sent for it.
    env.warp(TIMEOUT * 2).await;
    let r = w.tick().await.unwrap();
    assert_eq!(
        (r.close, r.submitted.clone(), r.payout.clone()),
        (None, None, None),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_withdrawal_instead_of_the_close_gets_the_close_submitted_at_once() {
    let mut env = Env::new().await;
    let source = Source::default();
    let now = chain_now(&env).await;
    let id = agreed(&mut env, &source, 1_000, 700, now).await;
    let mut w = worker(&env, &source);
    let r = w.tick().await.unwrap();
    assert_eq!((r.close, r.submitted.clone()), (None, None), "{r:?}");

    // The payer tries to leave the slow way, long before the timeout.
    env.payer.initiate_withdraw(&id).await.unwrap();
    let r = w.tick().await.unwrap();
    let (_, closed) = r.close.unwrap_or_else(|| panic!("no close sent: {r:?}"));
    assert_eq!(closed, id);
    until_closed(&env, &mut w, &r).await;
    let state = env.payer.channel(&id).await.unwrap();
    assert_eq!(state.withdraw, WithdrawState::Closed);
    assert_eq!((state.claimed, state.paid), (700, 700));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_close_the_client_submitted_is_never_sent_again() {
    let mut env = Env::new().await;
    let source = Source::default();
    let now = chain_now(&env).await;
    let id = agreed(&mut env, &source, 1_000, 250, now).await;
    let close = source.closes.lock().unwrap()[0].agreement;
    env.payer
        .cooperative_close(&close.checkpoint, &close.signer_sig, &close.payee_sig)
        .await
        .unwrap();
    let mut w = worker(&env, &source);
    env.warp(TIMEOUT + 1).await;
    for _ in 0..2 {
        let r = w.tick().await.unwrap();
        assert_eq!((r.close, r.submitted.clone()), (None, None), "{r:?}");
        assert!(r.close_rejected.is_empty(), "{r:?}");
    }
    assert!(w.stats().closes.is_empty());
    assert_eq!(
        env.payer.channel(&id).await.unwrap().withdraw,
        WithdrawState::Closed
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_close_the_contract_refuses_falls_back_to_claims() {
    let mut env = Env::new().await;
    let source = Source::default();
    let now = chain_now(&env).await;
    let id = agreed(&mut env, &source, 1_000, 300, now).await;
    // The stored payee half is not the payee's: cooperativeClose would revert.
    {
        let mut closes = source.closes.lock().unwrap();
        let state = closes[0].agreement.checkpoint;
        closes[0].agreement.payee_sig = env.payer.sign_close(&env.signer, &state).unwrap();
    }
    let mut w = worker(&env, &source);
    env.warp(TIMEOUT + 1).await;
    let r = w.tick().await.unwrap();
    assert_eq!(r.close, None, "{r:?}");
    assert_eq!(r.close_rejected.len(), 1, "{r:?}");
    assert_eq!(r.close_rejected[0].0, id);
    // Not closable, so claimed as usual from the next tick on: the payee keeps its money.
    assert_eq!(r.submitted, None, "{r:?}");
    let r = w.tick().await.unwrap();
    let (hash, ids) = r
        .submitted
        .clone()
        .unwrap_or_else(|| panic!("no claim: {r:?}"));
    assert_eq!(ids, vec![id]);
    assert!(wait_receipt(&env, hash).await);
    assert_eq!(env.payer.channel(&id).await.unwrap().claimed, 300);
}
