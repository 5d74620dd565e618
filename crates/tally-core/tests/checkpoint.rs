//! Checkpoint notes: the exact C2SP text form round-trips, non-canonical bodies are refused,
//! and signatures bind the body and the keys.

use tally_core::checkpoint::SignedCheckpoint;
use tally_core::{ChannelId, Checkpoint, Error, Hash, SecretKey};

fn sample() -> (Checkpoint, SecretKey, SecretKey) {
    let cp = Checkpoint {
        channel_id: ChannelId([0xab; 32]),
        size: 1234,
        root: Hash([0x5a; 32]),
        cumulative: 987_654_321,
    };
    (
        cp,
        SecretKey::from_seed(&[1; 32]),
        SecretKey::from_seed(&[2; 32]),
    )
}

fn signed(cp: &Checkpoint, c: &SecretKey, p: &SecretKey) -> SignedCheckpoint {
    SignedCheckpoint {
        checkpoint: *cp,
        client_signature: cp.sign_client(c),
        provider_cosignature: Some((1_800_000_000, cp.cosign_provider(p, 1_800_000_000))),
    }
}

#[test]
fn note_round_trips() {
    let (cp, c, p) = sample();
    let s = signed(&cp, &c, &p);
    let note = s.to_note(&c.public(), &p.public());
    assert!(note.starts_with(&format!("tally/channel/{}\n1234\n", "ab".repeat(32))));
    let back = SignedCheckpoint::from_note(&note, &c.public(), &p.public(), true).expect("valid");
    assert_eq!(back, s);
    assert_eq!(Checkpoint::parse_body(&cp.body()), Ok(cp));
}

#[test]
fn non_canonical_bodies_are_refused() {
    let (cp, _, _) = sample();
    let body = cp.body();
    let variants = [
        body.replace("\n1234\n", "\n01234\n"),
        body.replace("\n1234\n", "\n+1234\n"),
        body.replace("abab", "ABAB"),
        body.trim_end().to_string(),
        format!("{body}extra line\n"),
        body.replace("cumulative ", "cumulative  "),
        body.replace("cumulative ", "total "),
        body.replace("tally/channel/", "tally/chan/"),
        body.replace('=', ""),
    ];
    for v in variants {
        assert!(Checkpoint::parse_body(&v).is_err(), "accepted {v:?}");
    }
}

#[test]
fn signatures_bind_body_and_keys() {
    let (cp, c, p) = sample();
    let s = signed(&cp, &c, &p);
    let note = s.to_note(&c.public(), &p.public());
    // A changed body breaks the client's signature.
    let tampered = note.replace("\n1234\n", "\n1235\n");
    assert_eq!(
        SignedCheckpoint::from_note(&tampered, &c.public(), &p.public(), true),
        Err(Error::InvalidSignature)
    );
    // Other keys: their lines are not ours, so the client signature is missing.
    let other = SecretKey::from_seed(&[3; 32]);
    assert_eq!(
        SignedCheckpoint::from_note(&note, &other.public(), &p.public(), true),
        Err(Error::MissingNoteSignature("tally-client"))
    );
    // Without a cosignature, requiring the provider fails and not requiring it succeeds.
    let unsigned = SignedCheckpoint {
        provider_cosignature: None,
        ..s
    };
    let note = unsigned.to_note(&c.public(), &p.public());
    assert_eq!(
        SignedCheckpoint::from_note(&note, &c.public(), &p.public(), true),
        Err(Error::MissingNoteSignature("tally-provider"))
    );
    assert!(SignedCheckpoint::from_note(&note, &c.public(), &p.public(), false).is_ok());
    // Unknown signers' lines are ignored.
    let with_witness = format!("{note}\u{2014} some-witness AAAAAAAA\n");
    assert!(SignedCheckpoint::from_note(&with_witness, &c.public(), &p.public(), false).is_ok());
}
