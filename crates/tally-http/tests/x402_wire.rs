//! The x402 v2 payloads (spec/HTTP.md §3): what a payment's `accepted` must match, what a
//! stock client may add, the header size budget and the x402 error reasons (§8).

use base64::Engine;
use tally_core::{Authorization, ChannelId, Hash, Outcome, SecretKey};
use tally_http::headers::{decode_header, encode_header, MAX_HEADER_BYTES};
use tally_http::payment::Requirement;
use tally_http::terms::{ChainTerms, Price};
use tally_http::{Amount, PaymentPayload, PaymentResponse, Reason};

fn chain() -> ChainTerms {
    ChainTerms {
        chain_id: 84532,
        contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3".into(),
        asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e".into(),
        pay_to: "0x209693Bc6afc0C5328bA36FaF03C514EF312287C".into(),
    }
}

fn requirement() -> Requirement {
    let key = SecretKey::from_seed(&[2; 32]).public();
    let price = Price::Fixed { amount: Amount(10) };
    Requirement::tally(&chain(), key, Hash([7; 32]), &price)
}

/// The largest authorization: every integer at its widest.
fn widest_authorization() -> Authorization {
    Authorization {
        version: tally_core::VERSION,
        channel_id: ChannelId([0xff; 32]),
        lane: u32::MAX,
        seq: u64::MAX,
        request_hash: Hash([0xff; 32]),
        max_amount: u128::MAX,
        ack_size: u64::MAX,
        ack_root: Hash([0xff; 32]),
        ack_cumulative: u128::MAX,
        terms_hash: Hash([0xff; 32]),
    }
}

#[test]
fn accepted_mismatch_names_the_first_differing_member() {
    let ours = requirement();
    assert_eq!(ours.mismatch(&ours.clone()), None);
    // Addresses compare without case; the advisory members are not compared.
    let mut same = ours.clone();
    same.asset = same.asset.to_lowercase();
    same.pay_to = same.pay_to.to_uppercase().replacen("0X", "0x", 1);
    same.extra.contract = same.extra.contract.to_lowercase();
    same.max_timeout_seconds = 5;
    same.extra.terms_url = "https://elsewhere/terms".into();
    assert_eq!(ours.mismatch(&same), None);
    let other_key = SecretKey::from_seed(&[3; 32]).public();
    type Change = Box<dyn Fn(&mut Requirement)>;
    let cases: Vec<(&str, Change)> = vec![
        ("scheme", Box::new(|r| r.scheme = "exact".into())),
        ("network", Box::new(|r| r.network = "eip155:1".into())),
        (
            "extra.terms_hash",
            Box::new(|r| r.extra.terms_hash = Hash([8; 32])),
        ),
        ("amount", Box::new(|r| r.amount = Amount(11))),
        ("asset", Box::new(|r| r.asset.replace_range(2..4, "00"))),
        ("payTo", Box::new(|r| r.pay_to.replace_range(2..4, "00"))),
        (
            "extra.contract",
            Box::new(|r| r.extra.contract.replace_range(2..4, "00")),
        ),
        (
            "extra.provider_key",
            Box::new(move |r| r.extra.provider_key = other_key.into()),
        ),
    ];
    for (member, change) in cases {
        let mut theirs = ours.clone();
        change(&mut theirs);
        assert_eq!(ours.mismatch(&theirs), Some(member));
    }
}

#[test]
fn a_stock_payment_with_resource_and_extensions_decodes() {
    let key = SecretKey::from_seed(&[4; 32]);
    let auth = widest_authorization();
    let p = PaymentPayload::new(requirement(), &auth, auth.sign(&key));
    let mut json = serde_json::to_value(&p).unwrap();
    assert!(json.get("resource").is_none() && json.get("extensions").is_none());
    json["resource"] = serde_json::json!({"url": "https://api.example/v1/items",
        "description": "d", "mimeType": "application/json", "serviceName": "items"});
    json["extensions"] = serde_json::json!({"bazaar": {"info": {}, "schema": {}}});
    let text = base64::engine::general_purpose::STANDARD.encode(json.to_string());
    let back: PaymentPayload = decode_header("PAYMENT-SIGNATURE", text.as_bytes()).unwrap();
    assert_eq!(back.accepted, p.accepted);
    assert_eq!(back.authorization().unwrap(), auth);
    assert!(back.resource.is_some() && back.extensions.is_some());
    // Members x402 v2 does not define are refused, as is the old `accepted` without the
    // requirement's other members.
    let mut extra = json.clone();
    extra["scheme"] = "tally".into();
    assert!(serde_json::from_value::<PaymentPayload>(extra).is_err());
    let mut old = json;
    old["accepted"] = serde_json::json!({"scheme": "tally", "network": "eip155:84532"});
    assert!(serde_json::from_value::<PaymentPayload>(old).is_err());
}

#[test]
fn the_widest_headers_fit_the_limit_with_room_for_a_resource() {
    let key = SecretKey::from_seed(&[5; 32]);
    let auth = widest_authorization();
    let bare = PaymentPayload::new(requirement(), &auth, auth.sign(&key));
    let bare_len = encode_header("PAYMENT-SIGNATURE", &bare).unwrap().len();
    // A stock client copies the 402's `resource`: an absolute URL, the description and type.
    let mut stock = bare.clone();
    let url = format!("https://api.example.com/{}", "p".repeat(512));
    let resource = serde_json::json!({"url": url, "description": "tally-metered resource",
        "mimeType": "application/json"});
    stock.resource = resource.as_object().cloned();
    let stock_len = encode_header("PAYMENT-SIGNATURE", &stock).unwrap().len();
    let outcome = Outcome {
        version: tally_core::VERSION,
        channel_id: ChannelId([0xff; 32]),
        lane: u32::MAX,
        seq: u64::MAX,
        index: u64::MAX,
        authorization_hash: Hash([0xff; 32]),
        units: [u64::MAX; tally_core::METERS],
        amount: i128::MIN + 1,
        cumulative: u128::MAX,
        response_hash: Hash([0xff; 32]),
        time_ms: u64::MAX,
    };
    let receipt = outcome.sign(&key);
    let response = PaymentResponse::receipt_header(
        "eip155:18446744073709551615",
        "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
        outcome.amount,
        &tally_core::encoding::Canonical::to_bytes(&outcome),
        &receipt.signature,
    )
    .unwrap();
    println!(
        "PAYMENT-SIGNATURE {bare_len} bytes bare, {stock_len} with a 536-byte resource URL; \
         PAYMENT-RESPONSE {} bytes; limit {MAX_HEADER_BYTES}",
        response.len()
    );
    assert!(stock_len <= MAX_HEADER_BYTES, "{stock_len}");
    // 2 KiB of header (1.5 KiB of `resource` JSON) fit beside the widest authorization.
    assert!(MAX_HEADER_BYTES - bare_len >= 2048 + 200, "{bare_len}");
    // One byte over the limit is refused before anything is decoded.
    let over = "A".repeat(MAX_HEADER_BYTES + 1);
    let err = decode_header::<PaymentPayload>("PAYMENT-SIGNATURE", over.as_bytes());
    assert!(matches!(err, Err(tally_http::WireError::TooLarge { .. })));
}

#[test]
fn reasons_map_onto_x402_error_reasons() {
    let mismatch = |m: &str| Reason::RequirementsMismatch { member: m.into() };
    let cases = [
        (Reason::Malformed, "invalid_payload"),
        (
            Reason::InsufficientFunds {
                remaining: Amount(1),
            },
            "insufficient_funds",
        ),
        (mismatch("scheme"), "unsupported_scheme"),
        (mismatch("network"), "invalid_network"),
        (mismatch("amount"), "invalid_payment_requirements"),
        (mismatch("extra.contract"), "invalid_payment_requirements"),
        (Reason::PaymentRequired, "payment_required"),
        (
            Reason::TermsChanged {
                terms_hash: Hash([1; 32]),
            },
            "terms_changed",
        ),
    ];
    for (reason, x402) in cases {
        assert_eq!(reason.x402_reason(), x402, "{reason:?}");
    }
    assert_eq!(mismatch("payTo").code(), "requirements_mismatch");
    assert_eq!(mismatch("payTo").status(), 402);
}
