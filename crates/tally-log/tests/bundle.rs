//! A proof bundle verifies exactly when every claim in it holds: the committed vector bundle
//! verifies, and each kind of tampering is refused with the error naming the failed check.

use serde_json::Value;
use tally_core::checkpoint::SignedCheckpoint;
use tally_core::{ProofBundle, SecretKey};
use tally_log::bundle::{verify_bundle, BundleError};
use tally_log::Hash;

fn vector_bundle() -> ProofBundle {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../spec/vectors/messages.json"
    );
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json");
    ProofBundle::from_json(&v["bundle"].to_string()).expect("bundle")
}

fn flip_hex(hex_text: &str, nibble: usize) -> String {
    let mut chars: Vec<char> = hex_text.chars().collect();
    chars[nibble] = if chars[nibble] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

#[test]
fn the_vector_bundle_verifies() {
    let b = vector_bundle();
    let v = verify_bundle(&b).expect("valid");
    assert_eq!(v.record.outcome.index, b.index);
    assert!(v.checkpoint.provider_cosignature.is_some());
}

#[test]
fn each_tampering_names_its_check() {
    let good = vector_bundle();

    let mut b = good.clone();
    b.record = b.record[..b.record.len() - 2].to_string();
    assert!(
        matches!(verify_bundle(&b), Err(BundleError::Record(_))),
        "truncated record"
    );

    let mut b = good.clone();
    b.record.push('0');
    assert!(
        matches!(verify_bundle(&b), Err(BundleError::Record(_))),
        "odd hex"
    );

    // Byte 100 of the record lies inside the authorization's max_amount (prefix 13, version 1,
    // channel 32, seq 8, request hash 32, then max_amount at 86..102): the record stays
    // consistent, but the client's signature no longer matches.
    let mut b = good.clone();
    b.record = flip_hex(&b.record, 2 * 100);
    assert!(
        matches!(verify_bundle(&b), Err(BundleError::Authorization(_))),
        "authorization"
    );

    // The outcome's time (the record's last 8 bytes): consistent, client-signed part intact,
    // so only the provider's signature breaks.
    let mut b = good.clone();
    let n = b.record.len();
    b.record = flip_hex(&b.record, n - 1);
    assert!(
        matches!(verify_bundle(&b), Err(BundleError::Receipt(_))),
        "outcome time"
    );

    let mut b = good.clone();
    b.provider_signature.0[5] ^= 1;
    assert!(
        matches!(verify_bundle(&b), Err(BundleError::Receipt(_))),
        "provider signature"
    );

    let mut b = good.clone();
    b.provider_key = SecretKey::from_seed(&[9; 32]).public();
    assert!(
        matches!(verify_bundle(&b), Err(BundleError::Receipt(_))),
        "provider key"
    );

    let mut b = good.clone();
    b.client_key = SecretKey::from_seed(&[9; 32]).public();
    assert!(
        matches!(verify_bundle(&b), Err(BundleError::Authorization(_))),
        "client key"
    );

    let mut b = good.clone();
    b.checkpoint = b.checkpoint.replacen("\n3\n", "\n4\n", 1);
    assert!(
        matches!(verify_bundle(&b), Err(BundleError::Checkpoint(_))),
        "checkpoint size"
    );

    // A checkpoint without the provider's cosignature is not enough for a bundle.
    let mut b = good.clone();
    let lines: Vec<&str> = b
        .checkpoint
        .lines()
        .filter(|l| !l.contains("tally-provider"))
        .collect();
    b.checkpoint = lines.join("\n") + "\n";
    assert!(
        matches!(verify_bundle(&b), Err(BundleError::Checkpoint(_))),
        "no cosignature"
    );

    let mut b = good.clone();
    b.index += 1;
    assert!(
        matches!(verify_bundle(&b), Err(BundleError::IndexMismatch { .. })),
        "index"
    );

    let mut b = good.clone();
    b.inclusion_proof[0].0[0] ^= 1;
    assert!(
        matches!(verify_bundle(&b), Err(BundleError::Inclusion(_))),
        "proof hash"
    );

    let mut b = good.clone();
    b.inclusion_proof.pop();
    assert!(
        matches!(verify_bundle(&b), Err(BundleError::Inclusion(_))),
        "truncated proof"
    );

    let mut b = good.clone();
    b.inclusion_proof.push(Hash([0; 32]));
    assert!(
        matches!(verify_bundle(&b), Err(BundleError::Inclusion(_))),
        "extended proof"
    );
}

#[test]
fn a_checkpoint_of_another_channel_is_refused() {
    let good = vector_bundle();
    let client = SecretKey::from_seed(&[1; 32]);
    let provider = SecretKey::from_seed(&[2; 32]);
    let signed =
        SignedCheckpoint::from_note(&good.checkpoint, &good.client_key, &good.provider_key, true)
            .expect("vector checkpoint");
    let mut cp = signed.checkpoint;
    cp.channel_id.0[0] ^= 1;
    let other = SignedCheckpoint {
        checkpoint: cp,
        client_signature: cp.sign_client(&client),
        provider_cosignature: Some((7, cp.cosign_provider(&provider, 7))),
    };
    let mut b = good.clone();
    b.checkpoint = other.to_note(&client.public(), &provider.public());
    assert!(matches!(
        verify_bundle(&b),
        Err(BundleError::ChannelMismatch { .. })
    ));
}

#[test]
fn malformed_json_is_refused_before_verification() {
    let good = vector_bundle();
    let json = good.to_json();
    assert!(ProofBundle::from_json(&json).is_ok());
    assert!(ProofBundle::from_json(
        &json.replace("tally-proof-bundle/v2", "tally-proof-bundle/v1")
    )
    .is_err());
    assert!(
        ProofBundle::from_json(&json.replacen('{', "{\"extra\": 1,", 1)).is_err(),
        "unknown field"
    );
    assert!(
        ProofBundle::from_json(&json[..json.len() / 2]).is_err(),
        "truncated"
    );
    assert!(
        ProofBundle::from_json(&" ".repeat(70_000)).is_err(),
        "oversized"
    );
}
