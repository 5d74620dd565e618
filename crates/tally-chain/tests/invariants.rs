//! Random operation sequences against a real anvil. After every step:
//! - paid out (to payee and back to payer) never exceeds what was deposited;
//! - each channel's claimed size and claimed amount never decrease, claimed <= deposit;
//! - the contract's token balance equals the sum of the channels' remaining balances;
//! - a claim succeeds exactly when a model of the rules says it should;
//! - claimMany never reverts over a bad entry: each entry is claimed or skipped.

mod common;

use alloy::providers::Provider;
use common::{cp, Env, DELAY};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tally_chain::contract::Tally;
use tally_chain::{ChainError, WithdrawState};
use tally_core::ChannelId;

#[derive(Clone, Debug)]
enum Op {
    Open(u128),
    TopUp(usize, u128),
    Claim { ch: usize, dsize: u64, dcum: i64 },
    ClaimMany(Vec<(usize, u64, i64)>),
    InitiateWithdraw(usize),
    Warp(u64),
    FinalizeWithdraw(usize),
    Close { ch: usize, dsize: u64, dcum: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u128..5_000).prop_map(Op::Open),
        1 => (0usize..4, 1u128..3_000).prop_map(|(c, a)| Op::TopUp(c, a)),
        4 => (0usize..4, 0u64..4, -50i64..3_000).prop_map(|(ch, dsize, dcum)| Op::Claim { ch, dsize, dcum }),
        2 => prop::collection::vec((0usize..4, 0u64..3, -20i64..2_000), 1..4).prop_map(Op::ClaimMany),
        1 => (0usize..4).prop_map(Op::InitiateWithdraw),
        1 => prop_oneof![Just(1_000u64), Just(DELAY as u64 + 1)].prop_map(Op::Warp),
        1 => (0usize..4).prop_map(Op::FinalizeWithdraw),
        1 => (0usize..4, 0u64..3, 0i64..2_000).prop_map(|(ch, dsize, dcum)| Op::Close { ch, dsize, dcum }),
    ]
}

struct Model {
    ids: Vec<ChannelId>,
    /// The client's newest signed (size, cumulative) per channel.
    signed: Vec<(u64, u128)>,
    /// Last observed onchain (claimed_size, claimed) per channel.
    seen: Vec<(u64, u128)>,
    deposited: u128,
}

fn next(base: (u64, u128), dsize: u64, dcum: i64) -> (u64, u128) {
    let cum = if dcum >= 0 {
        base.1 + dcum as u128
    } else {
        base.1.saturating_sub(dcum.unsigned_abs() as u128)
    };
    (base.0 + dsize, cum)
}

fn check(cond: bool, msg: String) -> Result<(), TestCaseError> {
    if cond {
        Ok(())
    } else {
        Err(TestCaseError::fail(msg))
    }
}

async fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut env = Env::new().await;
    let (payer, payee) = (env.payer_key.address(), env.payee_key.address());
    let payer_start = env.balance(payer).await;
    let mut m = Model {
        ids: vec![],
        signed: vec![],
        seen: vec![],
        deposited: 0,
    };
    for op in ops {
        match op {
            Op::Open(a) => {
                m.ids.push(env.open(a).await);
                m.signed.push((0, 0));
                m.seen.push((0, 0));
                m.deposited += a;
            }
            Op::TopUp(c, a) => {
                if let Some(id) = m.ids.get(c).copied() {
                    if env.payer.top_up(&id, a).await.is_ok() {
                        m.deposited += a;
                    }
                }
            }
            Op::Claim { ch, dsize, dcum } => {
                let Some(id) = m.ids.get(ch).copied() else {
                    continue;
                };
                let (size, cum) = next(m.signed[ch], dsize, dcum);
                let state = env.payer.channel(&id).await.unwrap();
                let now = env
                    .payer
                    .provider()
                    .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest);
                let now = now.await.unwrap().unwrap().header.timestamp + 1;
                let should =
                    state.claimable_at(now) && size > state.claimed_size && cum >= state.claimed;
                let got = env.payee.claim(&env.sign(id, size, cum)).await;
                check(
                    got.is_ok() == should,
                    format!("claim {size}/{cum} on {state:?}: {got:?}"),
                )?;
                if let Err(e) = &got {
                    check(
                        matches!(e, ChainError::Reverted(_)),
                        format!("unexpected error {e:?}"),
                    )?;
                }
                if size >= m.signed[ch].0 {
                    m.signed[ch] = (size, cum);
                }
            }
            Op::ClaimMany(items) => {
                let mut batch = Vec::new();
                for (ch, dsize, dcum) in items {
                    if let Some(id) = m.ids.get(ch).copied() {
                        let (size, cum) = next(m.signed[ch], dsize, dcum);
                        batch.push(env.sign(id, size, cum));
                    }
                }
                if !batch.is_empty() {
                    // An entry `claim` would reject is skipped, never reverting the batch:
                    // every entry ends as exactly one Claimed or one ClaimSkipped.
                    let got = env.payee.claim_many(&batch).await;
                    let Ok(out) = got else {
                        return Err(TestCaseError::fail(format!("claimMany reverted: {got:?}")));
                    };
                    let receipt = env.payer.provider().get_transaction_receipt(out.tx_hash);
                    let receipt = receipt.await.unwrap().unwrap();
                    let outcomes = receipt
                        .inner
                        .logs()
                        .iter()
                        .filter(|l| {
                            l.log_decode::<Tally::Claimed>().is_ok()
                                || l.log_decode::<Tally::ClaimSkipped>().is_ok()
                        })
                        .count();
                    check(
                        outcomes == batch.len(),
                        format!("{outcomes} outcomes for {} entries", batch.len()),
                    )?;
                }
            }
            Op::InitiateWithdraw(c) => {
                if let Some(id) = m.ids.get(c) {
                    let _ = env.payer.initiate_withdraw(id).await;
                }
            }
            Op::Warp(s) => env.warp(s).await,
            Op::FinalizeWithdraw(c) => {
                if let Some(id) = m.ids.get(c) {
                    let _ = env.payer.finalize_withdraw(id).await;
                }
            }
            Op::Close { ch, dsize, dcum } => {
                let Some(id) = m.ids.get(ch).copied() else {
                    continue;
                };
                let state = env.payer.channel(&id).await.unwrap();
                let (size, cum) = next((state.claimed_size, state.claimed), dsize, dcum);
                let last = cp(id, size, cum);
                let s = env.payer.sign_close(&env.signer, &last).unwrap();
                let p = env.payer.sign_close(&env.payee_key, &last).unwrap();
                let got = env.payer.cooperative_close(&last, &s, &p).await;
                let should = state.withdraw != WithdrawState::Closed;
                check(
                    got.is_ok() == should,
                    format!("close on {state:?}: {got:?}"),
                )?;
            }
        }

        // Invariants.
        let mut remaining_sum = 0u128;
        let mut claimed_sum = 0u128;
        for (i, id) in m.ids.iter().enumerate() {
            let s = env.payer.channel(id).await.unwrap();
            check(
                s.claimed <= s.deposit,
                format!("claimed over deposit: {s:?}"),
            )?;
            check(
                s.claimed_size >= m.seen[i].0,
                format!("size decreased: {:?} -> {s:?}", m.seen[i]),
            )?;
            check(
                s.claimed >= m.seen[i].1,
                format!("claimed decreased: {:?} -> {s:?}", m.seen[i]),
            )?;
            m.seen[i] = (s.claimed_size, s.claimed);
            remaining_sum += s.remaining();
            claimed_sum += s.claimed;
        }
        let held = env.balance(env.payer.address()).await;
        check(
            held == remaining_sum,
            format!("contract holds {held}, channels say {remaining_sum}"),
        )?;
        let paid = env.balance(payee).await;
        check(
            paid == claimed_sum,
            format!("payee got {paid}, claims total {claimed_sum}"),
        )?;
        let refunded = env.balance(payer).await + m.deposited - payer_start;
        check(
            paid + refunded <= m.deposited,
            format!("paid {paid} + refunded {refunded} > {}", m.deposited),
        )?;
        check(
            paid + refunded + held == m.deposited,
            "tokens created or lost".into(),
        )?;
    }
    Ok(())
}

#[test]
fn random_operation_sequences_keep_invariants() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = prop::collection::vec(op(), 1..20).prop_map(|mut ops| {
        ops.insert(0, Op::Open(1_000));
        ops
    });
    runner
        .run(&strategy, |ops| rt.block_on(run_case(ops)))
        .unwrap();
}
