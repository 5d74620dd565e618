//! Strict ed25519 verification, single and batched (spec/PROTOCOL.md §4).
//!
//! Single verification is ed25519-dalek's `verify_strict`: it rejects a non-canonical `s`
//! (malleability), a small-order `R` and a small-order key. Batch verification applies the same
//! up-front checks, then one multiscalar check; if that fails it falls back to verifying each
//! signature strictly, so the caller learns which one is bad.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::encoding::fixed_bytes;
use crate::error::{Error, Result};
use crate::keys::PublicKey;

/// A 64-byte ed25519 signature `R || s` (RFC 8032 §5.1.6).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "fixed_bytes")] pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

impl Signature {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 128 hex digits.
    pub fn from_hex(text: &str) -> Result<Self> {
        crate::encoding::parse_hex("signature", text).map(Signature)
    }
}

impl PublicKey {
    /// Verifies `signature` over `message` strictly: canonical `s`, `R` and key not of small
    /// order, cofactorless equation.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<()> {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0
            .verify_strict(message, &sig)
            .map_err(|_| Error::InvalidSignature)
    }
}

/// One item of a batch: who signed, what, and the signature.
#[derive(Clone, Copy, Debug)]
pub struct BatchItem<'a> {
    /// The claimed signer.
    pub key: &'a PublicKey,
    /// The signed bytes.
    pub message: &'a [u8],
    /// The signature to check.
    pub signature: &'a Signature,
}

/// Verifies every item, at roughly half the cost of verifying them one by one.
///
/// On failure it reports the position of the first signature that fails strict verification.
/// Items whose `R` is of small order are refused before the batch equation, as
/// [`PublicKey::verify`] refuses them (spec/PROTOCOL.md §4.2 states the residual difference).
pub fn verify_batch(items: &[BatchItem<'_>]) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        if r_is_small_order(item.signature) {
            return Err(Error::InvalidSignatureAt(i));
        }
    }
    let messages: Vec<&[u8]> = items.iter().map(|i| i.message).collect();
    let sigs: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|i| ed25519_dalek::Signature::from_bytes(&i.signature.0))
        .collect();
    let keys: Vec<ed25519_dalek::VerifyingKey> = items.iter().map(|i| i.key.0).collect();
    if ed25519_dalek::verify_batch(&messages, &sigs, &keys).is_ok() {
        return Ok(());
    }
    for (i, item) in items.iter().enumerate() {
        if item.key.verify(item.message, item.signature).is_err() {
            return Err(Error::InvalidSignatureAt(i));
        }
    }
    // The batch equation failed yet each signature verifies alone. That happens only when
    // torsion components did not cancel under the random weights; strict single
    // verification is the rule of record (spec/PROTOCOL.md §4.2), so the batch is valid.
    Ok(())
}

/// Encodings (sign bit cleared) of the points of small order, canonical and not: `y = 1`
/// (identity), `y = -1` (order 2), `y = 0` (order 4), the two `y` of order 8, and the
/// non-canonical `y = p` and `y = p + 1`. Comparing against them costs nothing, where
/// decompressing `R` would cost a square root per signature.
const SMALL_ORDER: [[u8; 32]; 7] = [
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [0; 32],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// Whether the `R` half of a signature encodes a point of small order.
pub fn r_is_small_order(signature: &Signature) -> bool {
    let mut r = [0u8; 32];
    r.copy_from_slice(&signature.0[..32]);
    r[31] &= 0x7f;
    SMALL_ORDER.contains(&r)
}
