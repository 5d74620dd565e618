//! ed25519 keys (spec/PROTOCOL.md §4).
//!
//! A [`PublicKey`] can only be built from a valid, non-weak point, so every verifier in tally
//! starts from a key that cannot sign "for every message".

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::encoding::fixed_bytes;
use crate::error::{Error, Result};
use crate::signature::Signature;

/// An ed25519 signing key. Its `Debug` never prints the secret, and the secret is wiped on
/// drop (ed25519-dalek's `ZeroizeOnDrop`).
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Builds a key from its 32-byte seed (RFC 8032 §5.1.5).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(seed))
    }

    /// Draws a fresh key from a cryptographic random source the caller provides.
    pub fn generate<R: rand_core::CryptoRngCore + ?Sized>(rng: &mut R) -> Self {
        SecretKey(SigningKey::generate(rng))
    }

    /// The 32-byte seed, for writing a key file. Handle with care.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `message` (deterministic, RFC 8032 §5.1.6).
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public={})", self.public())
    }
}

/// An ed25519 public key that is a valid, non-small-order point.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(pub(crate) VerifyingKey);

impl PublicKey {
    /// Parses 32 bytes, refusing non-points and weak (small-order) keys.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| Error::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(Error::InvalidPublicKey);
        }
        Ok(PublicKey(key))
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self> {
        Self::from_bytes(&crate::encoding::parse_hex("public key", text)?)
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        fixed_bytes::serialize(&self.to_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bytes: [u8; 32] = fixed_bytes::deserialize(d)?;
        PublicKey::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}
