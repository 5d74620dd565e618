//! End-to-end against a real anvil: the gateway's funding is the Tally contract itself
//! (tally-chain's `ChainFunding`), checkpoints are verified against the channel's onchain
//! signer, and the provider's settlement worker claims from the gateway's stored checkpoints
//! (the gateway is its `CheckpointSource`). A missing anvil fails the test.

use std::sync::Arc;
use std::time::Duration;

use tally_chain::{SettleConfig, SettlementWorker, TickReport, WithdrawState};
use tally_client::{Client, ClientError};
use tally_core::ChannelId;
use tally_e2e::chain::ChainEnv;
use tally_e2e::*;
use tally_http::{Amount, Reason};

/// `n` paid calls that must all succeed; returns the last receipt's cumulative.
async fn pay(client: &Client, tag: &str, n: usize) -> u128 {
    let mut cumulative = 0;
    for i in 0..n {
        let body = format!("{tag}-{i}");
        let r = match client.post("/v1/echo").body(body.clone()).send().await {
            Ok(r) => r,
            Err(e) => panic!("{tag} call {i}: {e}"),
        };
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body.as_bytes());
        let o = r
            .receipt
            .map(|r| r.outcome)
            .unwrap_or_else(|| panic!("{tag} call {i}: no receipt"));
        assert_eq!(o.amount, ECHO_PRICE as i128);
        cumulative = o.cumulative;
    }
    cumulative
}

/// Ticks the worker until a claim it sent is confirmed (at most `max` ticks); returns every
/// report. Panics if a tick fails or nothing is confirmed.
async fn tick_until_confirmed<S: tally_chain::CheckpointSource>(
    worker: &mut SettlementWorker<S>,
    max: usize,
) -> Vec<TickReport> {
    let mut reports = Vec::new();
    for _ in 0..max {
        let r = match worker.tick().await {
            Ok(r) => r,
            Err(e) => panic!("worker tick: {e}"),
        };
        let done = r.confirmed.is_some();
        reports.push(r);
        if done {
            return reports;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no claim confirmed in {max} ticks: {reports:?}")
}

fn submitted(reports: &[TickReport]) -> Vec<Vec<ChannelId>> {
    reports
        .iter()
        .filter_map(|r| r.submitted.as_ref().map(|(_, c)| c.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_funded_gateway_enforces_the_deposit_sees_top_ups_and_the_worker_settles() {
    let run = async {
        let mut env = ChainEnv::new().await;
        // Channel A: 55 deposited, so the sixth call at 10 does not fit.
        let a = env.open(55).await;
        // Channel B: settles in the same claimMany.
        let b = env.open(1_000).await;
        let upstream = spawn_upstream().await;
        let (gdir, adir, bdir) = (tmp(), tmp(), tmp());
        let mut s = env.settings(gdir.path());
        // Credit limit 30: the gateway demands client-signed checkpoints along the way,
        // whose EIP-712 signatures it checks against the signer registered onchain.
        s.credit_limit = 30;
        s.checkpoint.every_records = 0;
        s.checkpoint.every_seconds = 0;
        s.checkpoint.every_amount = Amount(0);
        s.funding_ttl = Duration::from_millis(200);
        let key = tally_core::SecretKey::generate(&mut rand::rngs::OsRng);
        let funding: Arc<dyn tally_chain::Funding> = Arc::new(env.funding().await);
        let (gw, server) = spawn_gateway_funded(s, &key, funding, &upstream).await;
        let url = server.url();
        // Binding the session key is checked against the onchain signer too.
        let ca = connect(&url, adir.path(), &a).await;
        let cb = connect(&url, bdir.path(), &b).await;

        // A channel that is not onchain is refused as unknown.
        let ghost = TestChannel {
            id: ChannelId([0x42; 32]),
            session: tally_core::SecretKey::generate(&mut rand::rngs::OsRng),
            checkpoint: alloy::signers::local::PrivateKeySigner::random(),
        };
        let gdir2 = tmp();
        match Client::connect(client_config(&url, gdir2.path(), &ghost)).await {
            Err(ClientError::Refused {
                reason: Reason::UnknownChannel,
                ..
            }) => {}
            Err(e) => panic!("expected unknown_channel, got {e}"),
            Ok(_) => panic!("expected unknown_channel, got a client"),
        }

        // Five calls fit in 55; the credit limit made the client sign checkpoints.
        assert_eq!(pay(&ca, "a", 5).await, 50);
        let cps = gw.store().unwrap().checkpoints(&a.id).unwrap_or_default();
        assert!(
            !cps.is_empty(),
            "no checkpoint was demanded under a 30 credit limit"
        );
        // The sixth: insufficient_funds with the remaining balance, nothing recorded.
        match ca.post("/v1/echo").body("a-over").send().await {
            Err(ClientError::Refused {
                reason: Reason::InsufficientFunds { remaining },
                ..
            }) => assert_eq!(remaining, Amount(5)),
            other => panic!("expected insufficient_funds, got {other:?}"),
        }
        assert_eq!(gw.store().unwrap().head(&a.id).map(|h| h.size), Some(5));

        // Top up onchain: the same request now goes through (a refusal re-reads the chain,
        // so the cached funding does not delay it).
        env.top_up(&a.id, 100).await;
        let r = match ca.post("/v1/echo").body("a-over").send().await {
            Ok(r) => r,
            Err(e) => panic!("after the top-up: {e}"),
        };
        assert_eq!(r.receipt.map(|r| r.outcome.cumulative), Some(60));
        assert_eq!(pay(&ca, "a2", 9).await, 150);
        match ca.post("/v1/echo").body("a-over2").send().await {
            Err(ClientError::Refused {
                reason: Reason::InsufficientFunds { remaining },
                ..
            }) => assert_eq!(remaining, Amount(5)),
            other => panic!("expected insufficient_funds again, got {other:?}"),
        }
        assert_eq!(pay(&cb, "b", 12).await, 120);

        // Checkpoints at the mirrors' heads.
        let cpa = match ca.checkpoint().await {
            Ok(c) => c.checkpoint,
            Err(e) => panic!("checkpoint a: {e}"),
        };
        assert_eq!((cpa.size, cpa.cumulative), (15, 150));
        let cpb = match cb.checkpoint().await {
            Ok(c) => c.checkpoint,
            Err(e) => panic!("checkpoint b: {e}"),
        };
        assert_eq!((cpb.size, cpb.cumulative), (12, 120));

        // The settlement worker claims both from the gateway's stored checkpoints, in one
        // claimMany; the claimed amounts are the checkpoints' cumulatives.
        let payee = env.payee_key.address();
        let before = env.balance(payee).await;
        let config = SettleConfig {
            threshold: 100,
            claim_interval: Duration::from_secs(3600),
            ..SettleConfig::default()
        };
        let mut worker = match SettlementWorker::new(
            env.payee.clone(),
            env.payee_wallet(),
            gw.clone(),
            config,
        ) {
            Ok(w) => w,
            Err(e) => panic!("worker: {e}"),
        };
        let reports = tick_until_confirmed(&mut worker, 20).await;
        let mut sent = submitted(&reports);
        assert_eq!(sent.len(), 1, "{reports:?}");
        sent[0].sort();
        let mut both = vec![a.id, b.id];
        both.sort();
        assert_eq!(sent[0], both, "one claimMany for both channels");
        assert!(reports.iter().all(|r| r.rejected.is_empty()), "{reports:?}");
        assert!(matches!(
            reports.last().and_then(|r| r.confirmed),
            Some((_, true))
        ));
        let onchain_a = env.channel(&a.id).await;
        assert_eq!(
            (
                onchain_a.claimed,
                onchain_a.claimed_size,
                onchain_a.claimed_root
            ),
            (cpa.cumulative, cpa.size, cpa.root)
        );
        let onchain_b = env.channel(&b.id).await;
        assert_eq!(
            (
                onchain_b.claimed,
                onchain_b.claimed_size,
                onchain_b.claimed_root
            ),
            (cpb.cumulative, cpb.size, cpb.root)
        );
        // Claims move no tokens (spec/CHAIN.md §4): 150 + 120 are owed, paid out by the
        // worker after the challenge windows (tested in tally-chain's settle tests).
        assert_eq!(env.balance(payee).await - before, 0);
        assert_eq!((onchain_a.paid, onchain_b.paid), (0, 0));
        // Nothing new: the worker does not claim again.
        for _ in 0..2 {
            match worker.tick().await {
                Ok(r) => assert!(r.submitted.is_none(), "claimed twice: {r:?}"),
                Err(e) => panic!("tick: {e}"),
            }
        }

        // More calls and a checkpoint below the threshold: no claim yet.
        env.top_up(&a.id, 50).await;
        assert_eq!(pay(&ca, "a3", 3).await, 180);
        let cpa2 = match ca.checkpoint().await {
            Ok(c) => c.checkpoint,
            Err(e) => panic!("checkpoint a2: {e}"),
        };
        assert_eq!((cpa2.size, cpa2.cumulative), (18, 180));
        match worker.tick().await {
            Ok(r) => assert!(
                r.submitted.is_none(),
                "30 < threshold 100 was claimed: {r:?}"
            ),
            Err(e) => panic!("tick: {e}"),
        }
        // The payer starts a withdrawal: the worker claims at once, below the threshold.
        if let Err(e) = env.payer.initiate_withdraw(&a.id).await {
            panic!("initiateWithdraw: {e}");
        }
        let reports = tick_until_confirmed(&mut worker, 20).await;
        assert!(
            reports.iter().any(|r| r.withdraw_seen.contains(&a.id)),
            "{reports:?}"
        );
        assert_eq!(submitted(&reports), vec![vec![a.id]], "{reports:?}");
        let onchain_a = env.channel(&a.id).await;
        assert!(matches!(onchain_a.withdraw, WithdrawState::Pending { .. }));
        assert_eq!(
            (
                onchain_a.claimed,
                onchain_a.claimed_size,
                onchain_a.claimed_root
            ),
            (cpa2.cumulative, cpa2.size, cpa2.root)
        );
        assert_eq!(env.balance(payee).await - before, 0);

        // Once the funding cache expires, the withdrawing channel gets no more credit.
        tokio::time::sleep(Duration::from_millis(300)).await;
        match ca.post("/v1/echo").body("a-late").send().await {
            Err(ClientError::Refused {
                reason: Reason::ChannelClosed,
                ..
            }) => {}
            other => panic!("expected channel_closed, got {other:?}"),
        }
        assert_eq!(gw.store().unwrap().head(&a.id).map(|h| h.size), Some(18));
        // Channel B is unaffected.
        assert_eq!(pay(&cb, "b2", 1).await, 130);
        let (size, root, _) = ca.mirror_head().await;
        assert_eq!(
            gw.store().unwrap().head(&a.id).map(|h| (h.size, h.root)),
            Some((size, root))
        );
        server.stop().await;
        upstream.stop().await;
    };
    if tokio::time::timeout(Duration::from_secs(50), run)
        .await
        .is_err()
    {
        panic!("the chain test took longer than 50 s");
    }
}
