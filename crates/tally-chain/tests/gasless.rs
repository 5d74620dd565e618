//! Gasless deposits (spec/CHAIN.md §2.1, §3.5) against a real anvil: a payer with tokens and
//! no ETH opens and tops up channels through a submitter that pays the gas, and no submitter
//! can bend what the payer signed.

mod common;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use common::{revert, spawn, Env, DELAY};
use tally_chain::channel::finish;
use tally_chain::contract::Tally::TallyErrors;
use tally_chain::gasless::{open_nonce, token_domain};
use tally_chain::{
    ChainError, DepositAuth, DepositDomains, GaslessOpen, GaslessTopUp, OpenParams, TallyClient,
};

/// A payer holding `tokens` of the test token and no ETH at all.
async fn broke_payer(env: &Env, tokens: u128) -> PrivateKeySigner {
    let key = PrivateKeySigner::random();
    let mint = env.token.mint(key.address(), U256::from(tokens));
    finish(mint.send().await.unwrap()).await.unwrap();
    key
}

async fn domains(env: &Env) -> DepositDomains {
    let c = &env.payee;
    DepositDomains {
        chain_id: c.chain_id(),
        contract: c.address(),
        token: token_domain(c.provider(), *env.token.address(), c.chain_id())
            .await
            .unwrap(),
    }
}

/// `key`'s EIP-2612 nonce at the test token: what its next permit signs.
async fn permit_nonce(env: &Env, key: &PrivateKeySigner) -> U256 {
    let token = *env.token.address();
    env.payee.permit_nonce(token, key.address()).await.unwrap()
}

async fn now(c: &TallyClient) -> u64 {
    let block = c.provider().get_block_number().await.unwrap();
    let b = c
        .provider()
        .get_block_by_number(block.into())
        .await
        .unwrap();
    b.unwrap().header.timestamp
}

async fn eth(c: &TallyClient, who: Address) -> U256 {
    c.provider().get_balance(who).await.unwrap()
}

/// A named change a submitter might make to a signed open (the address is a thief's).
type Bend = (&'static str, fn(&mut GaslessOpen, Address));

/// The token's refusal surfaces as TokenCallFailed, whatever the token's own error was.
fn token_refused(r: Result<impl std::fmt::Debug, ChainError>) {
    assert!(
        matches!(revert(r), TallyErrors::TokenCallFailed(_)),
        "expected TokenCallFailed"
    );
}

#[tokio::test]
async fn a_payer_without_eth_opens_and_tops_up_through_a_relay_with_eip3009() {
    let mut env = Env::new().await;
    let d = domains(&env).await;
    let payer = broke_payer(&env, 10_000).await;
    let t = now(&env.payee).await;
    let params = env.params(4_000);
    let open = GaslessOpen::sign_eip3009(&payer, &d, params, (0, t + 600)).unwrap();
    open.verify(&d).unwrap();

    // The payee's wallet submits and pays the gas; the channel belongs to the payer.
    let (id, tx) = env.payee.open_gasless(&open).await.unwrap();
    assert!(tx.gas_used > 0);
    let ch = env.payee.channel(&id).await.unwrap();
    assert_eq!(
        (ch.payer, ch.payee, ch.signer),
        (payer.address(), params.payee, params.signer)
    );
    assert_eq!((ch.deposit, ch.withdraw_delay), (4_000, DELAY));
    assert_eq!(env.balance(payer.address()).await, 6_000);
    assert_eq!(eth(&env.payee, payer.address()).await, U256::ZERO);

    // The same request again: the channel exists (and the nonce is spent).
    assert!(matches!(
        revert(env.payee.open_gasless(&open).await),
        TallyErrors::ChannelExists(_)
    ));

    // A top-up signed for this channel funds it, once; submitted by anyone (the payer's
    // wallet here).
    let salt = B256::repeat_byte(7);
    let top = GaslessTopUp::sign_eip3009(&payer, &d, &id, 1_500, salt, (0, t + 600)).unwrap();
    top.verify(&d).unwrap();
    env.payer.top_up_gasless(&top).await.unwrap();
    assert_eq!(env.payee.channel(&id).await.unwrap().deposit, 5_500);
    token_refused(env.payer.top_up_gasless(&top).await);
    assert_eq!(env.balance(payer.address()).await, 4_500);
    assert_eq!(eth(&env.payee, payer.address()).await, U256::ZERO);
}

#[tokio::test]
async fn a_submitter_cannot_change_what_an_eip3009_open_or_top_up_names() {
    let mut env = Env::new().await;
    let d = domains(&env).await;
    let payer = broke_payer(&env, 10_000).await;
    let t = now(&env.payee).await;
    let params = env.params(1_000);
    let open = GaslessOpen::sign_eip3009(&payer, &d, params, (0, t + 600)).unwrap();
    let thief = PrivateKeySigner::random().address();
    let variants: [Bend; 6] = [
        ("payee", |o, a| o.payee = a),
        ("signer", |o, a| o.signer = a),
        ("delay", |o, _| o.withdraw_delay += 1),
        ("amount", |o, _| o.amount += 1),
        ("salt", |o, _| o.salt = B256::repeat_byte(9)),
        ("payer", |o, a| o.payer = a),
    ];
    for (what, change) in variants {
        let mut bent = open;
        change(&mut bent, thief);
        assert!(
            bent.verify(&d).is_err(),
            "offline check accepted a changed {what}"
        );
        token_refused(env.payee.open_gasless(&bent).await);
    }
    assert_eq!(env.balance(payer.address()).await, 10_000);

    // Nor can anyone use the authorization at the token directly: receive needs msg.sender
    // to be the Tally contract, and transferWithAuthorization's type hash differs.
    let DepositAuth::Eip3009 { sig, .. } = open.auth else {
        unreachable!()
    };
    let nonce = open_nonce(&open.channel_id(&d), params.signer, params.withdraw_delay);
    let args = (
        payer.address(),
        env.payee.address(),
        U256::from(1_000u64),
        U256::ZERO,
        U256::from(t + 600),
        nonce,
        sig.v,
        sig.r,
        sig.s,
    );
    let direct = env.token.receiveWithAuthorization(
        args.0, args.1, args.2, args.3, args.4, args.5, args.6, args.7, args.8,
    );
    assert!(direct.send().await.is_err());
    let transfer = env.token.transferWithAuthorization(
        args.0, args.1, args.2, args.3, args.4, args.5, args.6, args.7, args.8,
    );
    assert!(transfer.send().await.is_err());

    // The untouched request still works; a top-up signed for it cannot fund another channel.
    let (id, _) = env.payee.open_gasless(&open).await.unwrap();
    let other = env.open(10).await;
    let salt = B256::repeat_byte(1);
    let mut top = GaslessTopUp::sign_eip3009(&payer, &d, &id, 500, salt, (0, t + 600)).unwrap();
    top.channel_id = B256::from(other.0);
    assert!(top.verify(&d).is_err());
    token_refused(env.payee.top_up_gasless(&top).await);
    assert_eq!(env.payee.channel(&other).await.unwrap().deposit, 10);
}

#[tokio::test]
async fn an_expired_or_early_eip3009_authorization_is_refused() {
    let mut env = Env::new().await;
    let d = domains(&env).await;
    let payer = broke_payer(&env, 1_000).await;
    let t = now(&env.payee).await;
    let late = GaslessOpen::sign_eip3009(&payer, &d, env.params(100), (0, t + 30)).unwrap();
    let early =
        GaslessOpen::sign_eip3009(&payer, &d, env.params(100), (t + 3_000, t + 9_000)).unwrap();
    env.warp(60).await;
    token_refused(env.payee.open_gasless(&late).await);
    token_refused(env.payee.open_gasless(&early).await);
    assert_eq!(env.balance(payer.address()).await, 1_000);
}

#[tokio::test]
async fn a_payer_without_eth_opens_and_tops_up_with_a_permit() {
    let mut env = Env::new().await;
    let d = domains(&env).await;
    let payer = broke_payer(&env, 10_000).await;
    let deadline = now(&env.payee).await + 600;
    let nonce = permit_nonce(&env, &payer).await;
    let params = env.params(2_000);
    let open = GaslessOpen::sign_permit(&payer, &d, params, nonce, deadline).unwrap();
    open.verify(&d).unwrap();

    // Someone front-runs the permit itself at the token: the open still goes through.
    let DepositAuth::Permit { permit, .. } = open.auth else {
        unreachable!()
    };
    let front = env.token.permit(
        payer.address(),
        env.payee.address(),
        U256::from(2_000u64),
        U256::from(deadline),
        permit.v,
        permit.r,
        permit.s,
    );
    finish(front.send().await.unwrap()).await.unwrap();
    let (id, _) = env.payee.open_gasless(&open).await.unwrap();
    let ch = env.payee.channel(&id).await.unwrap();
    assert_eq!(
        (ch.payer, ch.deposit, ch.signer),
        (payer.address(), 2_000, params.signer)
    );
    assert_eq!(eth(&env.payee, payer.address()).await, U256::ZERO);

    // A permit top-up works once; after a fresh allowance the same intent is still refused.
    let salt = B256::repeat_byte(3);
    let nonce = permit_nonce(&env, &payer).await;
    let top = GaslessTopUp::sign_permit(&payer, &d, &id, (700, salt), nonce, deadline).unwrap();
    top.verify(&d).unwrap();
    env.payee.top_up_gasless(&top).await.unwrap();
    assert_eq!(env.payee.channel(&id).await.unwrap().deposit, 2_700);
    let nonce = permit_nonce(&env, &payer).await;
    let again = GaslessTopUp::sign_permit(
        &payer,
        &d,
        &id,
        (700, B256::repeat_byte(4)),
        nonce,
        deadline,
    )
    .unwrap();
    let DepositAuth::Permit { permit, .. } = again.auth else {
        unreachable!()
    };
    let mut replay = top;
    if let DepositAuth::Permit { permit: p, .. } = &mut replay.auth {
        *p = permit;
    }
    assert!(matches!(
        revert(env.payee.top_up_gasless(&replay).await),
        TallyErrors::IntentUsed(_)
    ));
    assert_eq!(env.balance(payer.address()).await, 7_300);
}

#[tokio::test]
async fn a_permit_open_names_its_channel_and_expires() {
    let mut env = Env::new().await;
    let d = domains(&env).await;
    let payer = broke_payer(&env, 5_000).await;
    let deadline = now(&env.payee).await + 600;
    let nonce = permit_nonce(&env, &payer).await;
    let open = GaslessOpen::sign_permit(&payer, &d, env.params(1_000), nonce, deadline).unwrap();
    let mut bent = open;
    bent.payee = PrivateKeySigner::random().address();
    assert!(bent.verify(&d).is_err());
    assert!(matches!(
        revert(env.payee.open_gasless(&bent).await),
        TallyErrors::BadSignature(_)
    ));
    let mut bent = open;
    bent.signer = PrivateKeySigner::random().address();
    assert!(matches!(
        revert(env.payee.open_gasless(&bent).await),
        TallyErrors::BadSignature(_)
    ));
    // Signed by someone else for the payer's tokens.
    let forger = PrivateKeySigner::random();
    let mut forged = GaslessOpen::sign_permit(&forger, &d, open.params(), nonce, deadline).unwrap();
    forged.payer = payer.address();
    assert!(forged.verify(&d).is_err());
    assert!(matches!(
        revert(env.payee.open_gasless(&forged).await),
        TallyErrors::BadSignature(_)
    ));
    env.warp(601).await;
    assert!(matches!(
        revert(env.payee.open_gasless(&open).await),
        TallyErrors::IntentExpired(_)
    ));
    assert_eq!(env.balance(payer.address()).await, 5_000);
}

#[tokio::test]
async fn a_fee_on_transfer_token_credits_what_arrived_through_eip3009() {
    let mut env = Env::with_anvil(spawn(|b| b), 3).await;
    let d = domains(&env).await;
    let payer = broke_payer(&env, 1_000).await;
    let t = now(&env.payee).await;
    let open = GaslessOpen::sign_eip3009(&payer, &d, env.params(500), (0, t + 600)).unwrap();
    let (id, _) = env.payee.open_gasless(&open).await.unwrap();
    let fee = env.token.FLAT_FEE().call().await.unwrap().to::<u128>();
    assert_eq!(env.payee.channel(&id).await.unwrap().deposit, 500 - fee);
}

#[tokio::test]
async fn a_top_up_intent_signed_by_someone_else_does_not_use_up_the_funders() {
    let mut env = Env::new().await;
    let d = domains(&env).await;
    let (funder, griefer) = (
        broke_payer(&env, 5_000).await,
        broke_payer(&env, 5_000).await,
    );
    let id = env.open(1_000).await;
    let deadline = now(&env.payee).await + 600;
    let what = (700, B256::repeat_byte(6));
    let sign = |key: &PrivateKeySigner, nonce| {
        GaslessTopUp::sign_permit(key, &d, &id, what, nonce, deadline).unwrap()
    };
    let nonce = permit_nonce(&env, &funder).await;
    let honest = sign(&funder, nonce);
    // The griefer signs the very same TopUp (same digest) with its own key and lands first.
    let nonce = permit_nonce(&env, &griefer).await;
    env.payee
        .top_up_gasless(&sign(&griefer, nonce))
        .await
        .unwrap();
    env.payee.top_up_gasless(&honest).await.unwrap();
    assert_eq!(env.payee.channel(&id).await.unwrap().deposit, 2_400);
    assert_eq!(env.balance(funder.address()).await, 4_300);
}

#[tokio::test]
async fn only_this_builds_tally_code_passes_the_code_check() {
    let env = Env::new().await;
    tally_chain::deploy::check_tally_code(&env.payee)
        .await
        .unwrap();
    let impostor = TallyClient::new(
        env.payee.provider().clone(),
        env.payee.sender(),
        *env.token.address(),
    )
    .await
    .unwrap();
    let err = tally_chain::deploy::check_tally_code(&impostor)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not this build's Tally"), "{err}");
    let nobody = TallyClient::new(
        env.payee.provider().clone(),
        env.payee.sender(),
        Address::repeat_byte(9),
    )
    .await
    .unwrap();
    assert!(tally_chain::deploy::check_tally_code(&nobody)
        .await
        .is_err());
}

#[test]
fn the_wire_form_round_trips_and_refuses_loose_input() {
    let key = PrivateKeySigner::random();
    let d = DepositDomains {
        chain_id: 31337,
        contract: Address::repeat_byte(1),
        token: alloy::sol_types::Eip712Domain::new(
            Some("USD Coin".into()),
            Some("2".into()),
            Some(U256::from(31337)),
            Some(Address::repeat_byte(2)),
            None,
        ),
    };
    let p = OpenParams {
        payee: Address::repeat_byte(3),
        token: Address::repeat_byte(2),
        amount: u128::MAX,
        signer: Address::repeat_byte(4),
        withdraw_delay: 7_200,
        salt: B256::repeat_byte(5),
    };
    let open = GaslessOpen::sign_eip3009(&key, &d, p, (0, 1_000)).unwrap();
    let json = serde_json::to_value(open).unwrap();
    assert_eq!(json["amount"], u128::MAX.to_string());
    assert_eq!(json["auth"]["kind"], "eip3009");
    let back: GaslessOpen = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, open);
    back.verify(&d).unwrap();
    for bad in [
        serde_json::json!(5),
        serde_json::json!("-5"),
        serde_json::json!("1e3"),
        serde_json::json!(" 5"),
        serde_json::json!("340282366920938463463374607431768211456"),
    ] {
        let mut j = json.clone();
        j["amount"] = bad.clone();
        assert!(
            serde_json::from_value::<GaslessOpen>(j).is_err(),
            "accepted amount {bad}"
        );
    }
    let mut j = json.clone();
    j["extra"] = serde_json::json!(1);
    assert!(serde_json::from_value::<GaslessOpen>(j).is_err());
    let mut j = json;
    j["auth"]["kind"] = serde_json::json!("permit");
    assert!(serde_json::from_value::<GaslessOpen>(j).is_err());
}
