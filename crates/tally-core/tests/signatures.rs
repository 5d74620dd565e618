//! Strict ed25519: malleated, small-order and weak-key signatures are refused, singly and in
//! batches, and a failing batch names the first bad signature.

use tally_core::signature::{verify_batch, BatchItem};
use tally_core::{Error, PublicKey, SecretKey, Signature};

/// The ed25519 group order L, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

fn add_l(sig: &Signature) -> Signature {
    let mut out = sig.0;
    let mut carry = 0u16;
    for i in 0..32 {
        let v = out[32 + i] as u16 + L[i] as u16 + carry;
        out[32 + i] = v as u8;
        carry = v >> 8;
    }
    Signature(out)
}

fn key(i: u8) -> SecretKey {
    SecretKey::from_seed(&[i; 32])
}

#[test]
fn strict_single_verification() {
    let k = key(9);
    let msg = b"tally test message";
    let sig = k.sign(msg);
    k.public().verify(msg, &sig).expect("valid signature");
    assert_eq!(
        k.public().verify(b"other", &sig),
        Err(Error::InvalidSignature)
    );
    assert_eq!(
        k.public().verify(msg, &add_l(&sig)),
        Err(Error::InvalidSignature),
        "s + L"
    );
    assert_eq!(
        key(8).public().verify(msg, &sig),
        Err(Error::InvalidSignature),
        "wrong key"
    );
}

#[test]
fn weak_and_invalid_keys_are_refused() {
    // The identity point (y = 1) and the order-2 point (y = -1) are small-order encodings.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    assert_eq!(
        PublicKey::from_bytes(&identity),
        Err(Error::InvalidPublicKey)
    );
    let mut minus_one = [0xffu8; 32];
    minus_one[0] = 0xec;
    minus_one[31] = 0x7f;
    assert_eq!(
        PublicKey::from_bytes(&minus_one),
        Err(Error::InvalidPublicKey)
    );
}

#[test]
fn small_order_r_is_refused() {
    // R = identity, s = 0 satisfies the cofactorless equation only for a weak key; we build
    // a signature whose R is the identity and check both paths refuse it.
    let k = key(3);
    let mut sig = [0u8; 64];
    sig[0] = 1;
    let sig = Signature(sig);
    assert!(k.public().verify(b"m", &sig).is_err());
    let pk = k.public();
    let items = [BatchItem {
        key: &pk,
        message: b"m",
        signature: &sig,
    }];
    assert_eq!(verify_batch(&items), Err(Error::InvalidSignatureAt(0)));
}

#[test]
fn batches_accept_good_and_name_the_first_bad() {
    let keys: Vec<SecretKey> = (1..=20).map(key).collect();
    let pks: Vec<PublicKey> = keys.iter().map(|k| k.public()).collect();
    let msgs: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("message {i}").into_bytes())
        .collect();
    let mut sigs: Vec<Signature> = keys.iter().zip(&msgs).map(|(k, m)| k.sign(m)).collect();
    let items = |sigs: &[Signature]| -> Vec<(usize, Signature)> {
        sigs.iter().copied().enumerate().collect()
    };
    let check = |sigs: &[Signature]| {
        let batch: Vec<BatchItem> = items(sigs)
            .iter()
            .map(|(i, _)| BatchItem {
                key: &pks[*i],
                message: &msgs[*i],
                signature: &sigs[*i],
            })
            .collect();
        verify_batch(&batch)
    };
    assert_eq!(check(&sigs), Ok(()));
    assert_eq!(check(&[]), Ok(()));
    for bad in [0usize, 7, 19] {
        let saved = sigs[bad];
        sigs[bad].0[40] ^= 0x01;
        assert_eq!(check(&sigs), Err(Error::InvalidSignatureAt(bad)));
        sigs[bad] = add_l(&saved);
        assert_eq!(
            check(&sigs),
            Err(Error::InvalidSignatureAt(bad)),
            "malleated s in a batch"
        );
        sigs[bad] = saved;
    }
}

#[test]
fn the_small_order_list_is_exactly_the_small_order_points() {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::edwards::CompressedEdwardsY;
    use curve25519_dalek::scalar::Scalar;
    use tally_core::signature::r_is_small_order;

    let as_r = |enc: [u8; 32]| {
        let mut s = [0u8; 64];
        s[..32].copy_from_slice(&enc);
        Signature(s)
    };
    // Every point of the 8-torsion subgroup is listed, whatever its sign bit.
    for t in EIGHT_TORSION {
        let enc = t.compress().to_bytes();
        assert!(r_is_small_order(&as_r(enc)), "{enc:?}");
        let mut flipped = enc;
        flipped[31] ^= 0x80;
        assert!(r_is_small_order(&as_r(flipped)));
    }
    // Every listed encoding that decodes at all decodes to a small-order point.
    let mut decodable = 0;
    for enc in small_order_candidates() {
        if let Some(p) = CompressedEdwardsY(enc).decompress() {
            decodable += 1;
            assert_eq!(p.is_small_order(), r_is_small_order(&as_r(enc)), "{enc:?}");
        }
    }
    assert!(decodable >= 8);
    // Ordinary points are not listed.
    for k in 1..200u64 {
        let p = ED25519_BASEPOINT_POINT * Scalar::from(k);
        assert!(!p.is_small_order());
        assert!(!r_is_small_order(&as_r(p.compress().to_bytes())));
    }
}

/// The 8-torsion encodings and the non-canonical encodings y = p, p + 1, each with both sign
/// bits.
fn small_order_candidates() -> Vec<[u8; 32]> {
    use curve25519_dalek::constants::EIGHT_TORSION;
    let mut out: Vec<[u8; 32]> = EIGHT_TORSION
        .iter()
        .map(|t| t.compress().to_bytes())
        .collect();
    for low in [0xedu8, 0xee] {
        let mut e = [0xffu8; 32];
        e[0] = low;
        e[31] = 0x7f;
        out.push(e);
    }
    let signed: Vec<[u8; 32]> = out
        .iter()
        .map(|e| {
            let mut f = *e;
            f[31] ^= 0x80;
            f
        })
        .collect();
    out.extend(signed);
    out
}
