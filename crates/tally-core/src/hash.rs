//! Hashes and the Merkle hashers (spec/PROTOCOL.md §3).
//!
//! The tree hashes follow RFC 6962 §2.1 domain separation: a leaf is `H(0x00 || data)` and an
//! interior node `H(0x01 || left || right)`. tally's own trees use BLAKE3; a SHA-256 hasher
//! exists so the same tree code can be checked against the published RFC 6962 vectors.

use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::encoding::fixed_bytes;

/// A 32-byte digest: a Merkle root, a leaf or node hash, or a message hash.
///
/// Equality is constant-time, because roots are compared against values an adversary
/// supplies (a forged root must not be found byte by byte through timing).
#[derive(Clone, Copy, Default, Serialize, Deserialize)]
pub struct Hash(#[serde(with = "fixed_bytes")] pub [u8; 32]);

impl Hash {
    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, as used in JSON and on the command line.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> crate::error::Result<Self> {
        crate::encoding::parse_hex("hash", text).map(Hash)
    }
}

impl PartialEq for Hash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}
impl Eq for Hash {}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The id of a payment channel. The contract derives it from chain id, contract, payer,
/// payee, token and salt (spec/PROTOCOL.md §8.1), so a message bound to one channel can never
/// be replayed on another chain, contract or pair of parties.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct ChannelId(#[serde(with = "fixed_bytes")] pub [u8; 32]);

impl ChannelId {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits (an optional `0x` is accepted).
    pub fn from_hex(text: &str) -> crate::error::Result<Self> {
        let t = text.trim();
        let t = t.strip_prefix("0x").unwrap_or(t);
        crate::encoding::parse_hex("channel id", t).map(ChannelId)
    }
}

impl fmt::Debug for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChannelId({})", self.to_hex())
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// BLAKE3 of `parts` concatenated: the hash of every tally message (spec/PROTOCOL.md §3.1).
pub fn blake3_of(parts: &[&[u8]]) -> Hash {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    Hash(*h.finalize().as_bytes())
}

/// The hash function of a Merkle tree, with RFC 6962 §2.1 domain separation.
///
/// The tree code in tally-log is generic over it, so one implementation serves tally's BLAKE3
/// trees and the SHA-256 conformance mode.
pub trait TreeHasher: Clone + Send + Sync + 'static {
    /// A short name, recorded by stores so a log is never reopened with another hash.
    fn name(&self) -> &'static str;
    /// `MTH({})`: the hash of the empty tree, `H("")`.
    fn empty(&self) -> Hash;
    /// `H(0x00 || data)`.
    fn leaf(&self, data: &[u8]) -> Hash;
    /// `H(0x01 || left || right)`.
    fn node(&self, left: &Hash, right: &Hash) -> Hash;
}

/// tally's tree hasher: BLAKE3 with RFC 6962 prefixes (spec/PROTOCOL.md §3.2).
#[derive(Clone, Copy, Debug, Default)]
pub struct Blake3Hasher;

impl TreeHasher for Blake3Hasher {
    fn name(&self) -> &'static str {
        "blake3"
    }
    fn empty(&self) -> Hash {
        blake3_of(&[])
    }
    fn leaf(&self, data: &[u8]) -> Hash {
        blake3_of(&[&[0x00], data])
    }
    fn node(&self, left: &Hash, right: &Hash) -> Hash {
        blake3_of(&[&[0x01], &left.0, &right.0])
    }
}

/// SHA-256 with RFC 6962 prefixes: exactly RFC 6962's tree hash, for conformance tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sha256Hasher;

impl TreeHasher for Sha256Hasher {
    fn name(&self) -> &'static str {
        "sha256"
    }
    fn empty(&self) -> Hash {
        use sha2::Digest;
        Hash(sha2::Sha256::digest([]).into())
    }
    fn leaf(&self, data: &[u8]) -> Hash {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update([0x00]);
        h.update(data);
        Hash(h.finalize().into())
    }
    fn node(&self, left: &Hash, right: &Hash) -> Hash {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update([0x01]);
        h.update(left.0);
        h.update(right.0);
        Hash(h.finalize().into())
    }
}
