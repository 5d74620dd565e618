//! Proof bundles: a self-contained JSON document that lets a third party check one record with
//! public keys only (spec/PROTOCOL.md §7.3).
//!
//! This module holds the format; the checks that need Merkle proofs live in
//! `tally_log::bundle`, which depends on this crate.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::keys::PublicKey;
use crate::signature::Signature;

/// The `format` field every bundle carries.
pub const BUNDLE_FORMAT: &str = "tally-proof-bundle/v2";
/// The largest bundle a parser reads (a 2^63-leaf proof is 63 hashes; this leaves room).
pub const MAX_BUNDLE_LEN: usize = 64 * 1024;

/// Where the channel settles, so a verifier can compare the checkpoint with the chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainRef {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The settlement contract, `0x`-prefixed hex.
    pub contract: String,
}

/// A record, both signatures, its inclusion proof and the checkpoint it is proven against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofBundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// The client's ed25519 session key.
    pub client_key: PublicKey,
    /// The provider's ed25519 key.
    pub provider_key: PublicKey,
    /// The record's canonical bytes, hex: the leaf data.
    pub record: String,
    /// The provider's signature over the record's outcome.
    pub provider_signature: Signature,
    /// The record's index in the log.
    pub index: u64,
    /// RFC 9162 §2.1.3 inclusion proof of `index` in the tree of the checkpoint's size.
    pub inclusion_proof: Vec<Hash>,
    /// The checkpoint as a signed note, with the client's signature and the provider's
    /// cosignature.
    pub checkpoint: String,
    /// Where the channel settles, if the bundle is meant to be checked against a chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainRef>,
}

impl ProofBundle {
    /// Parses bundle JSON, refusing oversized input, unknown fields and a wrong format tag.
    pub fn from_json(text: &str) -> Result<Self> {
        if text.len() > MAX_BUNDLE_LEN {
            return Err(Error::Malformed {
                what: "proof bundle",
                reason: format!(
                    "{} bytes exceeds the {MAX_BUNDLE_LEN}-byte limit",
                    text.len()
                ),
            });
        }
        let bundle: ProofBundle = serde_json::from_str(text).map_err(|e| Error::Malformed {
            what: "proof bundle",
            reason: e.to_string(),
        })?;
        if bundle.format != BUNDLE_FORMAT {
            return Err(Error::Malformed {
                what: "proof bundle",
                reason: format!("format {:?} is not {BUNDLE_FORMAT:?}", bundle.format),
            });
        }
        Ok(bundle)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising strings, integers and hex fields to JSON cannot fail.
        match serde_json::to_string_pretty(self) {
            Ok(s) => s,
            Err(e) => unreachable!("proof bundle JSON cannot fail: {e}"),
        }
    }
}
