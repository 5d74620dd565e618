//! Contract behaviour against a real anvil: every function's happy path, every rejection the
//! protocol relies on, and the Rust/Solidity agreement on ids and EIP-712 digests.

mod common;

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use common::{cp, revert, spawn, Env, DELAY};
use tally_chain::channel::connect;
use tally_chain::contract::Tally::TallyErrors;
use tally_chain::eip712::{self, Eip712Sig};
use tally_chain::{
    channel_id, ChainCheckpoint, ChainError, OpenParams, TallyClient, WithdrawState,
    MIN_WITHDRAW_DELAY,
};
use tally_core::{Checkpoint, Hash};

#[tokio::test]
async fn open_top_up_claim_read_happy_path() {
    let mut env = Env::new().await;
    let payer = env.payer_key.address();
    let payee = env.payee_key.address();
    let before = env.balance(payer).await;
    let id = env.open(1_000).await;

    let ch = env.payer.channel(&id).await.unwrap();
    assert_eq!(
        (ch.payer, ch.payee, ch.token),
        (payer, payee, *env.token.address())
    );
    assert_eq!(
        (ch.signer, ch.deposit, ch.claimed, ch.claimed_size),
        (env.signer.address(), 1_000, 0, 0)
    );
    assert_eq!(
        (ch.withdraw_delay, ch.withdraw),
        (DELAY, WithdrawState::None)
    );
    assert_eq!(env.balance(payer).await, before - 1_000);
    assert_eq!(env.balance(env.payer.address()).await, 1_000);

    env.payer.top_up(&id, 500).await.unwrap();
    assert_eq!(env.payer.channel(&id).await.unwrap().deposit, 1_500);

    env.payee.claim(&env.sign(id, 10, 300)).await.unwrap();
    let ch = env.payer.channel(&id).await.unwrap();
    assert_eq!(
        (ch.claimed, ch.claimed_size, ch.claimed_root),
        (300, 10, cp(id, 10, 300).root)
    );
    // A claim moves no tokens; the payout follows the challenge window.
    assert_eq!(env.balance(payee).await, 0);
    assert_eq!(ch.remaining(), 1_200);
    env.release(&id).await;
    assert_eq!(env.balance(payee).await, 300);

    // claimMany across two channels, one of them the same channel again.
    let id2 = env.open(100).await;
    env.payee
        .claim_many(&[env.sign(id, 20, 700), env.sign(id2, 3, 40)])
        .await
        .unwrap();
    assert_eq!(env.payer.channel(&id).await.unwrap().claimed, 700);
    assert_eq!(env.payer.channel(&id2).await.unwrap().claimed, 40);
    env.release(&id).await;
    env.payer.payout(&id2).await.unwrap();
    assert_eq!(env.balance(payee).await, 740);
    assert_eq!(env.balance(env.payer.address()).await, 1_500 + 100 - 740);
}

#[tokio::test]
async fn rust_channel_id_matches_contract() {
    let mut env = Env::new().await;
    let salt = env.next_salt();
    let (payer, payee, token) = (
        env.payer_key.address(),
        env.payee_key.address(),
        *env.token.address(),
    );
    let onchain = env
        .payer
        .contract()
        .channelIdOf(payer, payee, token, salt)
        .call()
        .await
        .unwrap();
    let rust = channel_id(
        env.payer.chain_id(),
        env.payer.address(),
        payer,
        payee,
        token,
        salt,
    );
    assert_eq!(onchain.0, rust.0);
    let (opened, _) = env
        .payer
        .open(OpenParams {
            payee,
            token,
            amount: 1,
            signer: env.signer.address(),
            withdraw_delay: DELAY,
            salt,
        })
        .await
        .unwrap();
    assert_eq!(opened, rust);
    // Same parameters again: the id is taken.
    env.payer.approve(token, u128::MAX).await.unwrap();
    let again = env
        .payer
        .open(OpenParams {
            payee,
            token,
            amount: 1,
            signer: env.signer.address(),
            withdraw_delay: DELAY,
            salt,
        })
        .await;
    assert!(matches!(revert(again), TallyErrors::ChannelExists(_)));
}

#[tokio::test]
async fn eip712_digest_matches_contract_differentially() {
    let env = Env::new().await;
    let domain = env.payer.domain();
    let onchain_sep = env.payer.contract().domainSeparator().call().await.unwrap();
    assert_eq!(onchain_sep, domain.separator());
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let edge = [0u128, 1, u64::MAX as u128, u128::MAX];
    for i in 0..24 {
        let mut id = [0u8; 32];
        let mut root = [0u8; 32];
        for c in id.chunks_mut(8).chain(root.chunks_mut(8)) {
            c.copy_from_slice(&next().to_le_bytes());
        }
        let size = if i % 3 == 0 { u64::MAX - i } else { next() };
        let cumulative = if i < 4 {
            edge[i as usize]
        } else {
            (u128::from(next()) << 64) | u128::from(next())
        };
        let c = Checkpoint {
            channel_id: tally_core::ChannelId(id),
            size,
            root: Hash(root),
            cumulative,
        };
        assert_eq!(
            env.payer.onchain_checkpoint_digest(&c).await.unwrap(),
            eip712::checkpoint_digest(&domain, &c)
        );
        assert_eq!(
            env.payer.onchain_close_digest(&c).await.unwrap(),
            eip712::close_digest(&domain, &c)
        );
        assert_ne!(
            eip712::checkpoint_digest(&domain, &c),
            eip712::close_digest(&domain, &c)
        );
    }
}

#[tokio::test]
async fn stale_and_replayed_checkpoints_are_rejected() {
    let mut env = Env::new().await;
    let id = env.open(1_000).await;
    let first = env.sign(id, 10, 100);
    env.payee.claim(&first).await.unwrap();

    // The same checkpoint again, and an older one.
    assert!(matches!(
        revert(env.payee.claim(&first).await),
        TallyErrors::StaleCheckpoint(_)
    ));
    assert!(matches!(
        revert(env.payee.claim(&env.sign(id, 9, 100)).await),
        TallyErrors::StaleCheckpoint(_)
    ));
    // Larger size but smaller cumulative.
    assert!(matches!(
        revert(env.payee.claim(&env.sign(id, 11, 99)).await),
        TallyErrors::CumulativeDecreased(_)
    ));

    // Across channels: a signature for channel 1 presented for channel 2 (same signer).
    let id2 = env.open(1_000).await;
    let mut moved = env.sign(id, 20, 200);
    moved.checkpoint.channel_id = id2;
    assert!(matches!(
        revert(env.payee.claim(&moved).await),
        TallyErrors::BadSignature(_)
    ));

    // Across contracts: a second deployment on the same chain, same parties and salt.
    let other = TallyClient::deploy(
        connect(env.anvil.endpoint_url(), env.payer_key.clone()),
        env.payer_key.address(),
    )
    .await
    .unwrap();
    other
        .approve(*env.token.address(), u128::MAX)
        .await
        .unwrap();
    let (other_id, _) = other
        .open(OpenParams {
            payee: env.payee_key.address(),
            token: *env.token.address(),
            amount: 1_000,
            signer: env.signer.address(),
            withdraw_delay: DELAY,
            salt: B256::from(U256::from(1u64)),
        })
        .await
        .unwrap();
    assert_ne!(other_id, id, "the contract address is part of the id");
    let other_payee = other
        .as_party(env.payee.provider().clone(), env.payee_key.address())
        .await
        .unwrap();
    // The original checkpoint: unknown id there.
    assert!(matches!(
        revert(other_payee.claim(&env.sign(id, 30, 300)).await),
        TallyErrors::UnknownChannel(_)
    ));
    // Right id, but signed under the first contract's domain.
    let mut cross = env.sign(other_id, 30, 300);
    cross.sig = ChainCheckpoint::sign(&env.signer, &env.payer.domain(), cross.checkpoint)
        .unwrap()
        .sig;
    assert!(matches!(
        revert(other_payee.claim(&cross).await),
        TallyErrors::BadSignature(_)
    ));
    other_payee
        .claim(
            &other
                .sign_checkpoint(&env.signer, cross.checkpoint)
                .unwrap(),
        )
        .await
        .unwrap();

    // Not the payee: anyone may post a state (a relay); the payout still goes to the payee.
    env.payer.claim(&env.sign(id, 40, 400)).await.unwrap();
    env.release(&id).await;
    assert_eq!(env.balance(env.payee_key.address()).await, 400);
    // Unknown channel.
    let ghost = tally_core::ChannelId([7; 32]);
    assert!(matches!(
        revert(env.payee.claim(&env.sign(ghost, 1, 1)).await),
        TallyErrors::UnknownChannel(_)
    ));
}

#[tokio::test]
async fn replay_across_chain_ids_is_rejected() {
    let mut a = Env::new().await;
    let mut b = Env::with_anvil(spawn(|x| x.chain_id(4242)), 0).await;
    b.signer = a.signer.clone();
    assert_eq!(
        a.payer.address(),
        b.payer.address(),
        "same deployer and nonce give the same address"
    );
    assert_ne!(a.payer.chain_id(), b.payer.chain_id());
    let ida = a.open(1_000).await;
    let idb = b.open(1_000).await;
    assert_ne!(ida, idb, "the chain id is part of the channel id");

    let on_a = a.sign(ida, 10, 100);
    assert!(matches!(
        revert(b.payee.claim(&on_a).await),
        TallyErrors::UnknownChannel(_)
    ));
    // Chain B's id, signed under chain A's domain.
    let mut forged = b.sign(idb, 10, 100);
    forged.sig = ChainCheckpoint::sign(&a.signer, &a.payer.domain(), forged.checkpoint)
        .unwrap()
        .sig;
    assert!(matches!(
        revert(b.payee.claim(&forged).await),
        TallyErrors::BadSignature(_)
    ));
    a.payee.claim(&on_a).await.unwrap();
    b.payee.claim(&b.sign(idb, 10, 100)).await.unwrap();
}

#[tokio::test]
async fn malleable_and_zero_recovering_signatures_are_rejected() {
    let mut env = Env::new().await;
    let id = env.open(1_000).await;
    let good = env.sign(id, 10, 100);
    // The high-s twin of a valid signature recovers to the same key, and must be refused.
    const N: U256 = U256::from_be_slice(&[
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFE, 0xBA, 0xAE, 0xDC, 0xE6, 0xAF, 0x48, 0xA0, 0x3B, 0xBF, 0xD2, 0x5E, 0x8C, 0xD0, 0x36,
        0x41, 0x41,
    ]);
    let mut twin = good;
    twin.sig.s = B256::from(N - U256::from_be_bytes(good.sig.s.0));
    twin.sig.v = if good.sig.v == 27 { 28 } else { 27 };
    assert!(matches!(
        revert(env.payee.claim(&twin).await),
        TallyErrors::BadSignature(_)
    ));
    assert!(twin
        .verify(&env.payer.domain(), env.signer.address())
        .is_err());

    // r = 0 makes ecrecover return the zero address.
    let mut zero = good;
    zero.sig = Eip712Sig {
        v: 27,
        r: B256::ZERO,
        s: B256::from(U256::from(1u64)),
    };
    assert!(matches!(
        revert(env.payee.claim(&zero).await),
        TallyErrors::BadSignature(_)
    ));
    // A v outside 27/28.
    let mut badv = good;
    badv.sig.v = 29;
    assert!(matches!(
        revert(env.payee.claim(&badv).await),
        TallyErrors::BadSignature(_)
    ));
    // A different key.
    let stranger = PrivateKeySigner::random();
    let wrong = env
        .payer
        .sign_checkpoint(&stranger, good.checkpoint)
        .unwrap();
    assert!(matches!(
        revert(env.payee.claim(&wrong).await),
        TallyErrors::BadSignature(_)
    ));
    assert!(matches!(
        wrong.verify(&env.payer.domain(), env.signer.address()),
        Err(ChainError::Signature(_))
    ));

    good.verify(&env.payer.domain(), env.signer.address())
        .unwrap();
    env.payee.claim(&good).await.unwrap();
}

#[tokio::test]
async fn claim_beyond_deposit_is_capped_and_resumes_after_top_up() {
    let mut env = Env::new().await;
    let payee = env.payee_key.address();
    let id = env.open(1_000).await;
    env.payee.claim(&env.sign(id, 10, 1_500)).await.unwrap();
    let ch = env.payer.channel(&id).await.unwrap();
    assert_eq!((ch.claimed, ch.remaining()), (1_000, 0));
    env.release(&id).await;
    assert_eq!(env.balance(payee).await, 1_000);
    // After a top-up, a newer checkpoint pays exactly what it adds over the capped claim.
    env.payer.top_up(&id, 1_000).await.unwrap();
    env.payee.claim(&env.sign(id, 11, 1_600)).await.unwrap();
    assert_eq!(env.payer.channel(&id).await.unwrap().claimed, 1_600);
    env.release(&id).await;
    assert_eq!(env.balance(payee).await, 1_600);
}

#[tokio::test]
async fn withdraw_race_payee_claim_inside_delay_wins() {
    let mut env = Env::new().await;
    let (payer, payee) = (env.payer_key.address(), env.payee_key.address());
    let id = env.open(1_000).await;
    let start = env.balance(payer).await;

    assert!(matches!(
        revert(env.payee.initiate_withdraw(&id).await),
        TallyErrors::NotPayer(_)
    ));
    assert!(matches!(
        revert(env.payer.finalize_withdraw(&id).await),
        TallyErrors::WithdrawNotInitiated(_)
    ));
    env.payer.initiate_withdraw(&id).await.unwrap();
    assert!(matches!(
        env.payer.channel(&id).await.unwrap().withdraw,
        WithdrawState::Pending { .. }
    ));
    assert!(matches!(
        revert(env.payer.initiate_withdraw(&id).await),
        TallyErrors::WithdrawPending(_)
    ));
    assert!(matches!(
        revert(env.payer.top_up(&id, 1).await),
        TallyErrors::WithdrawPending(_)
    ));
    // Too early to finalize.
    assert!(matches!(
        revert(env.payer.finalize_withdraw(&id).await),
        TallyErrors::WithdrawDelayActive(_)
    ));

    // Inside the delay the payee claims.
    env.warp(u64::from(DELAY) - 10).await;
    env.payee.claim(&env.sign(id, 10, 600)).await.unwrap();

    // After the delay: client-signed states stop; the claim's challenge window still runs,
    // so the payer cannot finalize before it could have answered with a credit.
    env.warp(20).await;
    assert!(matches!(
        revert(env.payee.claim(&env.sign(id, 11, 700)).await),
        TallyErrors::ClaimWindowClosed(_)
    ));
    assert!(matches!(
        revert(env.payer.finalize_withdraw(&id).await),
        TallyErrors::ChallengeWindowOpen(_)
    ));
    env.warp(u64::from(DELAY)).await;
    env.payer.finalize_withdraw(&id).await.unwrap();
    assert_eq!(env.balance(payer).await, start + 400);
    assert_eq!(env.balance(payee).await, 0, "owed, not yet paid out");
    // A closed channel's owed amount is still paid out, to the payee, by anyone.
    env.payer.payout(&id).await.unwrap();
    assert_eq!(env.balance(payee).await, 600);
    assert!(matches!(
        revert(env.payer.payout(&id).await),
        TallyErrors::NothingToPay(_)
    ));
    let ch = env.payer.channel(&id).await.unwrap();
    assert_eq!((ch.withdraw, ch.remaining()), (WithdrawState::Closed, 0));
    assert!(matches!(
        revert(env.payer.finalize_withdraw(&id).await),
        TallyErrors::ChannelClosed(_)
    ));
    assert!(matches!(
        revert(env.payee.claim(&env.sign(id, 12, 700)).await),
        TallyErrors::ChannelClosed(_)
    ));
    assert_eq!(env.balance(env.payer.address()).await, 0);
}

#[tokio::test]
async fn cooperative_close_is_immediate() {
    let mut env = Env::new().await;
    let (payer, payee) = (env.payer_key.address(), env.payee_key.address());
    let id = env.open(1_000).await;
    env.payee.claim(&env.sign(id, 10, 200)).await.unwrap();
    let start = env.balance(payer).await;

    let last = cp(id, 15, 450);
    let s_sig = env.payer.sign_close(&env.signer, &last).unwrap();
    let p_sig = env.payer.sign_close(&env.payee_key, &last).unwrap();
    // A checkpoint (claim) signature is not a close signature.
    let claim_sig = env.sign(id, 15, 450).sig;
    assert!(matches!(
        revert(env.payer.cooperative_close(&last, &claim_sig, &p_sig).await),
        TallyErrors::BadSignature(_)
    ));
    // Both signatures from the signer (payee never agreed).
    assert!(matches!(
        revert(env.payer.cooperative_close(&last, &s_sig, &s_sig).await),
        TallyErrors::BadSignature(_)
    ));
    // Older than what was claimed.
    let old = cp(id, 9, 450);
    assert!(matches!(
        revert(
            env.payer
                .cooperative_close(
                    &old,
                    &env.payer.sign_close(&env.signer, &old).unwrap(),
                    &env.payer.sign_close(&env.payee_key, &old).unwrap()
                )
                .await
        ),
        TallyErrors::StaleCheckpoint(_)
    ));

    env.payer
        .cooperative_close(&last, &s_sig, &p_sig)
        .await
        .unwrap();
    assert_eq!(env.balance(payee).await, 450);
    assert_eq!(env.balance(payer).await, start + 550);
    let ch = env.payer.channel(&id).await.unwrap();
    assert_eq!(
        (ch.withdraw, ch.claimed, ch.claimed_size),
        (WithdrawState::Closed, 450, 15)
    );
    assert_eq!(env.balance(env.payer.address()).await, 0);
    assert!(matches!(
        revert(env.payee.claim(&env.sign(id, 20, 500)).await),
        TallyErrors::ChannelClosed(_)
    ));
    // A closed id can never be reopened, so old signatures stay dead.
    let reopen = env
        .payer
        .open(OpenParams {
            payee,
            token: *env.token.address(),
            amount: 5,
            signer: env.signer.address(),
            withdraw_delay: DELAY,
            salt: B256::from(U256::from(1u64)),
        })
        .await;
    assert!(matches!(revert(reopen), TallyErrors::ChannelExists(_)));
}

#[tokio::test]
async fn tokens_without_return_value_work_and_false_returns_fail() {
    let mut quiet = Env::with_anvil(spawn(|b| b), 1).await;
    let id = quiet.open(1_000).await;
    quiet.payee.claim(&quiet.sign(id, 1, 250)).await.unwrap();
    quiet.release(&id).await;
    assert_eq!(quiet.balance(quiet.payee_key.address()).await, 250);

    let mut liar = Env::with_anvil(spawn(|b| b), 2).await;
    let params = liar.params(1_000);
    let r = liar.payer.open(params).await;
    assert!(matches!(revert(r), TallyErrors::TokenCallFailed(_)));
}

#[tokio::test]
async fn open_rejects_bad_arguments() {
    let mut env = Env::new().await;
    let base = env.params(10);
    let zero_amount = env.payer.open(OpenParams { amount: 0, ..base }).await;
    assert!(matches!(revert(zero_amount), TallyErrors::ZeroAmount(_)));
    let zero_signer = env
        .payer
        .open(OpenParams {
            signer: Address::ZERO,
            ..base
        })
        .await;
    assert!(matches!(revert(zero_signer), TallyErrors::ZeroAddress(_)));
    let zero_payee = env
        .payer
        .open(OpenParams {
            payee: Address::ZERO,
            ..base
        })
        .await;
    assert!(matches!(revert(zero_payee), TallyErrors::ZeroAddress(_)));
    assert!(matches!(
        revert(env.payee.claim_many(&[]).await),
        TallyErrors::EmptyBatch(_)
    ));
}

#[tokio::test]
async fn open_enforces_the_minimum_withdraw_delay() {
    let mut env = Env::new().await;
    let onchain = env
        .payer
        .contract()
        .MIN_WITHDRAW_DELAY()
        .call()
        .await
        .unwrap();
    assert_eq!(onchain, MIN_WITHDRAW_DELAY);
    let base = OpenParams {
        withdraw_delay: MIN_WITHDRAW_DELAY,
        ..env.params(10)
    };
    for short in [0, 1, MIN_WITHDRAW_DELAY - 1] {
        let r = env
            .payer
            .open(OpenParams {
                withdraw_delay: short,
                ..base
            })
            .await;
        match revert(r) {
            TallyErrors::WithdrawDelayTooShort(e) => {
                assert_eq!((e.minimum, e.withdrawDelay), (MIN_WITHDRAW_DELAY, short))
            }
            other => panic!("{other:?}"),
        }
    }
    let (id, _) = env.payer.open(base).await.unwrap();
    // At the minimum, initiate and finalize can never share a block.
    env.payer.initiate_withdraw(&id).await.unwrap();
    assert!(matches!(
        revert(env.payer.finalize_withdraw(&id).await),
        TallyErrors::WithdrawDelayActive(_)
    ));
    env.warp(u64::from(MIN_WITHDRAW_DELAY) - 5).await;
    assert!(matches!(
        revert(env.payer.finalize_withdraw(&id).await),
        TallyErrors::WithdrawDelayActive(_)
    ));
}

#[tokio::test]
async fn fee_on_transfer_deposits_credit_what_arrived_and_zero_arrivals_revert() {
    // Mode 3: every transfer burns a flat 10 units.
    let mut env = Env::with_anvil(spawn(|b| b), 3).await;
    let tally = env.payer.address();
    let id = env.open(1_000).await;
    let ch = env.payer.channel(&id).await.unwrap();
    assert_eq!(
        ch.deposit, 990,
        "credited the balance difference, not the amount"
    );
    assert_eq!(env.balance(tally).await, 990);

    // A top-up that delivers nothing reverts like an open that delivers nothing.
    for amount in [0, 1, 10] {
        assert!(matches!(
            revert(env.payer.top_up(&id, amount).await),
            TallyErrors::ZeroAmount(_)
        ));
    }
    let params = env.params(10);
    let nothing = env.payer.open(params).await;
    assert!(matches!(revert(nothing), TallyErrors::ZeroAmount(_)));
    env.payer.top_up(&id, 510).await.unwrap();
    assert_eq!(env.payer.channel(&id).await.unwrap().deposit, 1_490);

    // Payouts lose the fee on the way out; the books count what left the contract.
    env.payee.claim(&env.sign(id, 1, 100)).await.unwrap();
    let ch = env.payer.channel(&id).await.unwrap();
    assert_eq!((ch.claimed, ch.remaining()), (100, 1_390));
    env.release(&id).await;
    assert_eq!(env.balance(env.payee_key.address()).await, 90);
    assert!(env.balance(tally).await >= ch.remaining());
}
