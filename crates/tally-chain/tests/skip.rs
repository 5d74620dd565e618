//! issue 9, findings 1 and 5, on the contract: `claimMany` skips an entry `claim` would reject
//! (with `ClaimSkipped`) and settles the rest at no extra cost to them; `WithdrawInitiated`
//! indexes the payee; `open` caps the withdraw delay. Each attack also runs against the
//! contract as it was before (tests/fixtures/tally-before-issue9.hex) to show it failed there.

mod common;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Bytes, B256};
use alloy::providers::Provider;
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::sol_types::{SolError, SolEvent};
use common::{revert, Env, DELAY};
use tally_chain::contract::Tally::{self, TallyErrors};
use tally_chain::{skipped_in, OpenParams, TallyClient};
use tally_core::ChannelId;

/// Deploys the contract as it was before issue 9 and returns (payer, payee) handles on it.
async fn old_contract(env: &Env) -> (TallyClient, TallyClient) {
    let hex = include_str!("fixtures/tally-before-issue9.hex").trim();
    let code: Bytes = hex.parse().unwrap();
    let p = env.payer.provider();
    let tx = TransactionRequest::default()
        .with_from(env.payer_key.address())
        .with_deploy_code(code);
    let receipt = p
        .send_transaction(tx)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    let address = receipt.contract_address.expect("deployed");
    let payer = TallyClient::new(p.clone(), env.payer_key.address(), address)
        .await
        .unwrap();
    let payee = env
        .payee
        .as_party(env.payee.provider().clone(), env.payee_key.address())
        .await
        .unwrap();
    let payee = TallyClient::new(payee.provider().clone(), payee.sender(), address)
        .await
        .unwrap();
    payer
        .approve(*env.token.address(), u128::MAX)
        .await
        .unwrap();
    (payer, payee)
}

async fn receipt(env: &Env, hash: B256) -> TransactionReceipt {
    env.payer
        .provider()
        .get_transaction_receipt(hash)
        .await
        .unwrap()
        .unwrap()
}

/// Opens `honest` channels plus one whose payer starts a withdrawal, on `payer`'s contract.
async fn attack_setup(
    env: &mut Env,
    payer: &TallyClient,
    honest: usize,
) -> (Vec<ChannelId>, ChannelId) {
    let mut ids = Vec::new();
    for _ in 0..honest {
        let params = env.params(10_000);
        ids.push(payer.open(params).await.unwrap().0);
    }
    let params = env.params(10_000);
    let bad = payer.open(params).await.unwrap().0;
    payer.initiate_withdraw(&bad).await.unwrap();
    (ids, bad)
}

fn sign_on(
    env: &Env,
    on: &TallyClient,
    id: ChannelId,
    size: u64,
    cum: u128,
) -> tally_chain::ChainCheckpoint {
    on.sign_checkpoint(&env.signer, common::cp(id, size, cum))
        .unwrap()
}

#[tokio::test]
async fn claim_many_skips_an_entry_whose_window_closed_and_settles_the_honest_ones() {
    let mut env = Env::new().await;
    let (payer, payee) = (env.payer.clone(), env.payee.clone());
    let (honest, bad) = attack_setup(&mut env, &payer, 3).await;
    // The batch is built (and would simulate) while the attacker's window is open; its
    // deadline passes before it is mined. The attacker sorts last.
    let mut batch: Vec<_> = honest
        .iter()
        .map(|id| sign_on(&env, &payee, *id, 5, 700))
        .collect();
    batch.push(sign_on(&env, &payee, bad, 9, 900));
    assert_eq!(payee.simulate_claim_many(&batch).await.unwrap(), 0);
    env.warp(u64::from(DELAY)).await;
    assert_eq!(payee.simulate_claim_many(&batch).await.unwrap(), 1);

    let out = payee.claim_many(&batch).await.unwrap();
    for id in &honest {
        assert_eq!(payee.channel(id).await.unwrap().claimed, 700);
    }
    assert_eq!(payee.channel(&bad).await.unwrap().claimed, 0);
    env.warp(u64::from(DELAY) + 1).await;
    payee
        .send_payout_many(&honest)
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert_eq!(env.balance(env.payee_key.address()).await, 2_100);
    let r = receipt(&env, out.tx_hash).await;
    assert_eq!(
        skipped_in(&r, payee.address()),
        vec![(bad, "ClaimWindowClosed".to_string())]
    );
    let raw = r
        .inner
        .logs()
        .iter()
        .find_map(|l| l.log_decode::<Tally::ClaimSkipped>().ok())
        .unwrap();
    assert_eq!(raw.inner.data.reason.0, Tally::ClaimWindowClosed::SELECTOR);
    // The single claim still reverts with the reason.
    assert!(matches!(
        revert(payee.claim(&sign_on(&env, &payee, bad, 10, 950)).await),
        TallyErrors::ClaimWindowClosed(_)
    ));

    // The contract before issue 9 reverted the whole batch: nobody was paid.
    let (old_payer, old_payee) = old_contract(&env).await;
    let (honest, bad) = attack_setup(&mut env, &old_payer, 3).await;
    let mut batch: Vec<_> = honest
        .iter()
        .map(|id| sign_on(&env, &old_payee, *id, 5, 700))
        .collect();
    batch.push(sign_on(&env, &old_payee, bad, 9, 900));
    env.warp(u64::from(DELAY)).await;
    let before = env.balance(env.payee_key.address()).await;
    assert!(matches!(
        revert(old_payee.claim_many(&batch).await),
        TallyErrors::ClaimWindowClosed(_)
    ));
    // (The old channel struct has another layout, so the payee's balance, which the old
    // contract paid at claim time, shows that nothing settled.)
    assert_eq!(env.balance(env.payee_key.address()).await, before);
}

#[tokio::test]
async fn every_rejection_is_skipped_with_its_selector_and_costs_the_honest_entries_nothing() {
    let mut env = Env::new().await;
    let (payer, payee) = (env.payer.clone(), env.payee.clone());
    // Two sets of five channels in the steady state (claimed once before).
    let mut sets = Vec::new();
    for _ in 0..2 {
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(env.open(10_000).await);
        }
        let first: Vec<_> = ids.iter().map(|id| env.sign(*id, 1, 10)).collect();
        payee.claim_many(&first).await.unwrap();
        sets.push(ids);
    }
    let clean: Vec<_> = sets[0].iter().map(|id| env.sign(*id, 2, 20)).collect();
    let clean_gas = payee.claim_many(&clean).await.unwrap().gas_used;

    // The same five honest entries plus one bad entry of each kind, each in its own batch
    // position after the honest ones.
    let stale = sets[0][0];
    let closed = env.open(10_000).await;
    let s = payer
        .sign_close(&env.signer, &common::cp(closed, 1, 1))
        .unwrap();
    let p = payer
        .sign_close(&env.payee_key, &common::cp(closed, 1, 1))
        .unwrap();
    payer
        .cooperative_close(&common::cp(closed, 1, 1), &s, &p)
        .await
        .unwrap();
    let stranger = alloy::signers::local::PrivateKeySigner::random();
    let bad_sig = payer
        .sign_checkpoint(&stranger, common::cp(sets[1][0], 9, 90))
        .unwrap();
    let unknown = ChannelId([7; 32]);
    let bad = [
        (env.sign(stale, 2, 20), Tally::StaleCheckpoint::SELECTOR),
        (
            env.sign(sets[0][1], 3, 5),
            Tally::CumulativeDecreased::SELECTOR,
        ),
        (env.sign(closed, 2, 2), Tally::ChannelClosed::SELECTOR),
        (env.sign(unknown, 1, 1), Tally::UnknownChannel::SELECTOR),
        (bad_sig, Tally::BadSignature::SELECTOR),
    ];
    for (size, (entry, selector)) in (3u64..).zip(bad) {
        let mut batch: Vec<_> = sets[1]
            .iter()
            .map(|id| env.sign(*id, size, size as u128 * 10))
            .collect();
        batch.push(entry);
        let out = payee.claim_many(&batch).await.unwrap();
        let r = receipt(&env, out.tx_hash).await;
        let skips: Vec<_> = r
            .inner
            .logs()
            .iter()
            .filter_map(|l| l.log_decode::<Tally::ClaimSkipped>().ok())
            .map(|e| (ChannelId(e.inner.data.channelId.0), e.inner.data.reason.0))
            .collect();
        assert_eq!(skips, vec![(entry.checkpoint.channel_id, selector)]);
        for id in &sets[1] {
            assert_eq!(payee.channel(id).await.unwrap().claimed_size, size);
        }
        // The honest five cost what they cost alone; the skip adds a bounded amount (its
        // calldata, three cold slot reads or a signature check, one event).
        let skip = out.gas_used.saturating_sub(clean_gas);
        assert!(
            out.gas_used >= clean_gas && skip <= 13_000,
            "{selector:?}: {} with the bad entry vs {clean_gas} without",
            out.gas_used
        );
    }
}

#[tokio::test]
async fn withdraw_initiated_indexes_the_payee() {
    let mut env = Env::new().await;
    let id = env.open(1_000).await;
    let out = env.payer.initiate_withdraw(&id).await.unwrap();
    let r = receipt(&env, out.tx_hash).await;
    let log = r
        .inner
        .logs()
        .iter()
        .find(|l| l.topics().first() == Some(&Tally::WithdrawInitiated::SIGNATURE_HASH));
    let topics = log.expect("event").topics();
    assert_eq!(topics.len(), 3, "signature, channelId, payee");
    assert_eq!(topics[1], B256::from(id.0));
    assert_eq!(topics[2], env.payee_key.address().into_word());
}

#[tokio::test]
async fn open_refuses_a_withdraw_delay_above_the_maximum() {
    let mut env = Env::new().await;
    let max = env
        .payer
        .contract()
        .MAX_WITHDRAW_DELAY()
        .call()
        .await
        .unwrap();
    assert_eq!(max, tally_chain::MAX_WITHDRAW_DELAY);
    assert_eq!(max, 30 * 24 * 3600);
    for long in [max + 1, u32::MAX] {
        let params = OpenParams {
            withdraw_delay: long,
            ..env.params(10)
        };
        match revert(env.payer.open(params).await) {
            TallyErrors::WithdrawDelayTooLong(e) => {
                assert_eq!((e.maximum, e.withdrawDelay), (max, long))
            }
            other => panic!("{other:?}"),
        }
    }
    let params = OpenParams {
        withdraw_delay: max,
        ..env.params(10)
    };
    env.payer.open(params).await.unwrap();

    // The contract before issue 9 let a payer pick any delay, up to 136 years.
    let (old_payer, _) = old_contract(&env).await;
    let params = OpenParams {
        withdraw_delay: u32::MAX,
        ..env.params(10)
    };
    old_payer.open(params).await.unwrap();
}
