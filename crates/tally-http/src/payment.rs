//! The wire forms of receipts and records, and the signed-checkpoint and session-key
//! documents (§6, §5.2); the x402 header payloads (§3) are in [`crate::x402`], re-exported
//! here.

use serde::{Deserialize, Serialize};
use tally_core::encoding::Canonical;
use tally_core::{Hash, Outcome, PublicKey, Receipt, Record, Signature};

use crate::error::WireError;

pub use crate::x402::{
    KeyBytes, PaymentPayload, PaymentRequired, PaymentResponse, Requirement, RequirementExtra,
    Resource, ResponseExtra, TallyPayment,
};

/// Lowercase hex, as `hex::encode` gives, without building the string char by char.
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    // The buffer is exactly twice the input, the only way encode_to_slice can fail.
    if hex::encode_to_slice(bytes, &mut out).is_err() {
        return hex::encode(bytes);
    }
    String::from_utf8(out).unwrap_or_else(|_| hex::encode(bytes))
}

/// Decodes lowercase hex (even length) into bytes; upper case is refused (one spelling).
pub(crate) fn hex_bytes(what: &'static str, text: &str) -> Result<Vec<u8>, WireError> {
    let malformed = |reason: String| WireError::Malformed { what, reason };
    if !text.len().is_multiple_of(2) {
        return Err(malformed(hex::FromHexError::OddLength.to_string()));
    }
    let mut out = vec![0u8; text.len() / 2];
    tally_core::encoding::decode_lower_hex(text, &mut out).map_err(malformed)?;
    Ok(out)
}

/// A receipt on the wire: the outcome's canonical bytes and the provider's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireReceipt {
    /// Hex of the outcome's canonical bytes, prefix included.
    pub outcome: String,
    /// The provider's signature over those bytes.
    pub signature: Signature,
}

impl WireReceipt {
    /// Renders a receipt.
    pub fn from_receipt(receipt: &Receipt) -> Self {
        Self::from_parts(&receipt.outcome.to_bytes(), receipt.signature)
    }

    /// Renders a receipt from the outcome's canonical bytes (as signed) and the signature.
    pub fn from_parts(outcome_bytes: &[u8], signature: Signature) -> Self {
        WireReceipt {
            outcome: hex_lower(outcome_bytes),
            signature,
        }
    }

    /// Decodes the outcome (the signature is not checked here).
    pub fn receipt(&self) -> Result<Receipt, WireError> {
        let bytes = hex_bytes("outcome", &self.outcome)?;
        let outcome = Outcome::from_bytes(&bytes).map_err(|source| WireError::Message {
            what: "outcome",
            source,
        })?;
        Ok(Receipt {
            outcome,
            signature: self.signature,
        })
    }
}

/// A record with its provider signature, as endpoints and errors return it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRecord {
    /// Hex of the record's canonical bytes (spec/PROTOCOL.md §5.3).
    pub record: String,
    /// The provider's signature over the record's outcome.
    pub provider_signature: Signature,
}

impl WireRecord {
    /// Renders a record and signature.
    pub fn new(record: &Record, provider_signature: Signature) -> Self {
        WireRecord {
            record: hex_lower(&record.to_bytes()),
            provider_signature,
        }
    }

    /// Decodes the record (signatures are not checked here).
    pub fn decode(&self) -> Result<Record, WireError> {
        let bytes = hex_bytes("record", &self.record)?;
        Record::from_bytes(&bytes).map_err(|source| WireError::Message {
            what: "record",
            source,
        })
    }
}

/// An EIP-712 signature `(v, r, s)` as JSON (spec/PROTOCOL.md §8.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEip712Sig {
    /// 27 or 28.
    pub v: u8,
    /// `r`, 32 bytes.
    pub r: Hash,
    /// `s`, 32 bytes.
    pub s: Hash,
}

impl WireEip712Sig {
    /// From `(v, r, s)`; tally-chain's `Eip712Sig::parts` gives them, so this crate needs
    /// no chain library to carry a signature.
    pub fn from_parts((v, r, s): (u8, [u8; 32], [u8; 32])) -> Self {
        WireEip712Sig {
            v,
            r: Hash(r),
            s: Hash(s),
        }
    }

    /// `(v, r, s)`, for tally-chain's `Eip712Sig::from_parts`.
    pub fn parts(&self) -> (u8, [u8; 32], [u8; 32]) {
        (self.v, self.r.0, self.s.0)
    }
}

/// A client-signed checkpoint: the C2SP note (§6.2) and the EIP-712 signature (§8.2) over the
/// same values. Sent in the `TALLY-CHECKPOINT` header or POSTed (spec/HTTP.md §6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireCheckpoint {
    /// The signed note; on the way back, also carrying the provider's cosignature.
    pub note: String,
    /// The checkpoint key's EIP-712 signature.
    pub eip712: WireEip712Sig,
}

/// Binds an ed25519 session key to a channel: the channel's checkpoint key signs the EIP-712
/// `SessionKey(bytes32 channelId,bytes32 sessionKey)` (spec/HTTP.md §5.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionBinding {
    /// The session key authorizations will be signed with.
    pub session_key: PublicKey,
    /// The checkpoint key's signature over the binding digest (tally-chain's
    /// `eip712::session_digest`, spec/HTTP.md §5.2).
    pub eip712: WireEip712Sig,
}
