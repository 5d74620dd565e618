//! issue 9, findings 2, 3 and 4, on a real anvil: anyone may post a state, a credit the
//! payee cosigned beats an older, higher state within the challenge window, and what the
//! payee is owed is paid out by a separate, permissionless step, so a paused token only
//! delays it (spec/CHAIN.md §4). Each attack also runs against the contract as it was before
//! (tests/fixtures/tally-before-issue9.hex) to show it succeeded there.

mod common;

use alloy::network::TransactionBuilder;
use alloy::primitives::Bytes;
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use common::{key, revert, Env, DELAY};
use tally_chain::channel::{connect, finish};
use tally_chain::contract::Tally::TallyErrors;
use tally_chain::{TallyClient, WithdrawState};
use tally_core::ChannelId;

/// Deploys the contract as it was before issue 9; returns (payer, payee) handles on it. Only
/// `open`, `claim`, `initiateWithdraw` and `finalizeWithdraw` are called there: their ABI is
/// unchanged (the channel struct is not, so nothing reads `getChannel`).
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
    let payee = TallyClient::new(
        env.payee.provider().clone(),
        env.payee_key.address(),
        address,
    )
    .await
    .unwrap();
    payer
        .approve(*env.token.address(), u128::MAX)
        .await
        .unwrap();
    (payer, payee)
}

/// A third account that is neither payer nor payee (a relay, a watchtower).
async fn stranger(env: &Env) -> TallyClient {
    let k = key(&env.anvil, 3);
    let p = connect(env.anvil.endpoint_url(), k.clone());
    env.payer.as_party(p, k.address()).await.unwrap()
}

async fn pause(env: &Env, on: bool) {
    finish(env.token.setPaused(on).send().await.unwrap())
        .await
        .unwrap();
}

/// Signs on `on`'s domain (the old contract has its own address).
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
async fn a_cosigned_credit_beats_an_older_higher_claim_and_the_client_is_refunded() {
    let mut env = Env::new().await;
    let (payer, payee) = (env.payer_key.address(), env.payee_key.address());
    let id = env.open(1_000).await;
    let start = env.balance(payer).await;
    // The client signs size 10 / 900, then the provider credits 300: size 11 / 600, cosigned.
    let older = env.sign(id, 10, 900);
    let (credit, payee_sig) = env.cosign(id, 11, 600);

    // The payee claims the older, higher state.
    env.payee.claim(&older).await.unwrap();
    assert_eq!(env.payer.channel(&id).await.unwrap().claimed, 900);
    // The client alone cannot lower the amount with its own signature (it could sign itself
    // anything): a client-signed size 11 / 600 is refused, so is a size-2^63 / 0 state.
    assert!(matches!(
        revert(env.payer.claim(&credit).await),
        TallyErrors::CumulativeDecreased(_)
    ));
    assert!(matches!(
        revert(env.payer.claim(&env.sign(id, 1 << 63, 0)).await),
        TallyErrors::CumulativeDecreased(_)
    ));
    // A state not cosigned by the payee cannot pass as a credit.
    let forged = env
        .payer
        .sign_checkpoint(&env.signer, common::cp(id, 11, 600))
        .unwrap();
    assert!(matches!(
        revert(env.payer.claim_cosigned(&credit, &forged.sig).await),
        TallyErrors::BadSignature(_)
    ));
    // The client posts the cosigned credit inside the window, without the provider.
    env.warp(u64::from(DELAY) - 60).await;
    env.payer.claim_cosigned(&credit, &payee_sig).await.unwrap();
    let ch = env.payer.channel(&id).await.unwrap();
    assert_eq!((ch.claimed, ch.claimed_size, ch.credit_size), (600, 11, 11));
    // Nothing was final yet, so nothing is payable; the older state can never come back.
    assert_eq!(env.payer.payable(&id).await.unwrap(), 0);
    assert!(matches!(
        revert(env.payee.claim(&older).await),
        TallyErrors::StaleCheckpoint(_)
    ));
    // The client exits: refunded deposit − 600. The payee ends with 600.
    env.payer.initiate_withdraw(&id).await.unwrap();
    env.warp(u64::from(DELAY) + 1).await;
    env.payer.finalize_withdraw(&id).await.unwrap();
    assert_eq!(env.balance(payer).await, start + 400);
    env.payee.payout(&id).await.unwrap();
    assert_eq!(env.balance(payee).await, 600);
    assert_eq!(env.balance(env.payer.address()).await, 0);

    // Before issue 9 the payee kept 900: the client could not post size 11 at all (NotPayee)
    // and the payee's own later claim of it was refused as a decrease.
    let (old_payer, old_payee) = old_contract(&env).await;
    let params = env.params(1_000);
    let (old_id, _) = old_payer.open(params).await.unwrap();
    let before = env.balance(payee).await;
    old_payee
        .claim(&sign_on(&env, &old_payee, old_id, 10, 900))
        .await
        .unwrap();
    assert!(old_payer
        .claim(&sign_on(&env, &old_payer, old_id, 11, 600))
        .await
        .is_err());
    assert!(matches!(
        revert(
            old_payee
                .claim(&sign_on(&env, &old_payee, old_id, 11, 600))
                .await
        ),
        TallyErrors::CumulativeDecreased(_)
    ));
    assert_eq!(env.balance(payee).await - before, 900);
}

#[tokio::test]
async fn a_paused_token_delays_the_payout_and_never_returns_it_to_the_payer() {
    let mut env = Env::new().await;
    let (payer, payee) = (env.payer_key.address(), env.payee_key.address());
    let id = env.open(1_000).await;
    let start = env.balance(payer).await;
    env.payer.initiate_withdraw(&id).await.unwrap();

    // The token pauses; the payee's claim inside the exit window still lands (it moves no
    // tokens).
    pause(&env, true).await;
    env.payee.claim(&env.sign(id, 5, 600)).await.unwrap();
    env.warp(2 * u64::from(DELAY) + 1).await;
    // The payout fails while paused and leaves the amount owed; so does the payer's refund.
    assert!(matches!(
        revert(env.payee.payout(&id).await),
        TallyErrors::TokenCallFailed(_)
    ));
    assert!(matches!(
        revert(env.payer.finalize_withdraw(&id).await),
        TallyErrors::TokenCallFailed(_)
    ));
    assert_eq!(env.payer.payable(&id).await.unwrap(), 600);
    // Later the token unpauses: the payer gets back only what was not claimed, and anyone
    // pays the payee what it is owed.
    pause(&env, false).await;
    env.payer.finalize_withdraw(&id).await.unwrap();
    assert_eq!(env.balance(payer).await, start + 400);
    let ch = env.payer.channel(&id).await.unwrap();
    assert_eq!(
        (ch.withdraw, ch.payable_at(u64::MAX)),
        (WithdrawState::Closed, 600)
    );
    stranger(&env).await.payout(&id).await.unwrap();
    assert_eq!(env.balance(payee).await, 600);

    // Before issue 9 the claim itself failed during the pause, and once the window closed the
    // payer got everything back.
    let (old_payer, old_payee) = old_contract(&env).await;
    let params = env.params(1_000);
    let (old_id, _) = old_payer.open(params).await.unwrap();
    let payer_before = env.balance(payer).await;
    old_payer.initiate_withdraw(&old_id).await.unwrap();
    pause(&env, true).await;
    assert!(old_payee
        .claim(&sign_on(&env, &old_payee, old_id, 5, 600))
        .await
        .is_err());
    env.warp(u64::from(DELAY) + 1).await;
    pause(&env, false).await;
    old_payer.finalize_withdraw(&old_id).await.unwrap();
    assert_eq!(env.balance(payer).await, payer_before + 1_000);
    assert_eq!(env.balance(payee).await, 600, "the payee got nothing more");
}

#[tokio::test]
async fn anyone_may_relay_a_claim_and_the_payout_goes_to_the_payee() {
    let mut env = Env::new().await;
    let payee = env.payee_key.address();
    let relay = stranger(&env).await;
    let a = env.open(1_000).await;
    let b = env.open(1_000).await;
    relay.claim(&env.sign(a, 3, 300)).await.unwrap();
    relay
        .claim_many(&[env.sign(b, 4, 200), env.sign(a, 5, 350)])
        .await
        .unwrap();
    assert_eq!(env.balance(relay.sender()).await, 0);
    // Not before the window has passed.
    assert!(matches!(
        revert(relay.payout(&a).await),
        TallyErrors::NothingToPay(_)
    ));
    env.warp(u64::from(DELAY) + 1).await;
    relay
        .send_payout_many(&[a, b, a])
        .await
        .unwrap()
        .get_receipt()
        .await
        .unwrap();
    assert_eq!(env.balance(payee).await, 550);
    assert_eq!(env.balance(relay.sender()).await, 0);
    let ch = env.payer.channel(&a).await.unwrap();
    assert_eq!((ch.paid, ch.claimed), (350, 350));
}

#[tokio::test]
async fn the_payer_cannot_exit_before_a_late_claim_can_be_answered() {
    let mut env = Env::new().await;
    let payer = env.payer_key.address();
    let id = env.open(1_000).await;
    let start = env.balance(payer).await;
    let (credit, payee_sig) = env.cosign(id, 11, 600);
    env.payer.initiate_withdraw(&id).await.unwrap();
    // The payee posts the older, higher state a minute before the deadline.
    env.warp(u64::from(DELAY) - 60).await;
    env.payee.claim(&env.sign(id, 10, 900)).await.unwrap();
    env.warp(120).await;
    // Past withdrawAt: no more client-signed states, and no finalize while the window runs.
    assert!(matches!(
        revert(env.payee.claim(&env.sign(id, 12, 950)).await),
        TallyErrors::ClaimWindowClosed(_)
    ));
    assert!(matches!(
        revert(env.payer.finalize_withdraw(&id).await),
        TallyErrors::ChallengeWindowOpen(_)
    ));
    // The credit is still accepted, because the window is open.
    env.payer.claim_cosigned(&credit, &payee_sig).await.unwrap();
    env.warp(u64::from(DELAY) + 1).await;
    // Once the window has passed, not even a credit is accepted any more.
    let (late, late_sig) = env.cosign(id, 12, 100);
    assert!(matches!(
        revert(env.payer.claim_cosigned(&late, &late_sig).await),
        TallyErrors::ClaimWindowClosed(_)
    ));
    env.payer.finalize_withdraw(&id).await.unwrap();
    assert_eq!(env.balance(payer).await, start + 400);
    env.payer.payout(&id).await.unwrap();
    assert_eq!(env.balance(env.payee_key.address()).await, 600);
}

#[tokio::test]
async fn a_client_cannot_freeze_the_channel_or_undo_what_is_final() {
    let mut env = Env::new().await;
    let payee = env.payee_key.address();
    let id = env.open(10_000).await;
    env.payee.claim(&env.sign(id, 10, 900)).await.unwrap();
    let settle_at = env.payer.channel(&id).await.unwrap().settle_at;
    // The client posts a state of huge size and the same amount: accepted (size only), and
    // it does not restart the window.
    env.payer.claim(&env.sign(id, u64::MAX, 900)).await.unwrap();
    let ch = env.payer.channel(&id).await.unwrap();
    assert_eq!((ch.claimed_size, ch.settle_at), (u64::MAX, settle_at));
    // Any higher amount still wins, whatever its size.
    env.payee.claim(&env.sign(id, 20, 1_500)).await.unwrap();
    assert_eq!(env.payer.channel(&id).await.unwrap().claimed, 1_500);
    // Once final, a credit cannot undo it, however it is signed.
    env.warp(u64::from(DELAY) + 1).await;
    let (credit, sig) = env.cosign(id, 21, 1_000);
    assert!(matches!(
        revert(env.payer.claim_cosigned(&credit, &sig).await),
        TallyErrors::CumulativeDecreased(_)
    ));
    // A newer state keeps the final 1,500 payable during its own window.
    env.payee.claim(&env.sign(id, 30, 2_000)).await.unwrap();
    let ch = env.payer.channel(&id).await.unwrap();
    assert_eq!((ch.settled, ch.claimed), (1_500, 2_000));
    env.payee.payout(&id).await.unwrap();
    assert_eq!(env.balance(payee).await, 1_500);
    // A credit may go down to what is final, not below.
    let (credit, sig) = env.cosign(id, 31, 1_500);
    env.payer.claim_cosigned(&credit, &sig).await.unwrap();
    env.warp(u64::from(DELAY) + 1).await;
    assert!(matches!(
        revert(env.payee.payout(&id).await),
        TallyErrors::NothingToPay(_)
    ));
}
