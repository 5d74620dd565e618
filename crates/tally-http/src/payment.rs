//! The x402 header payloads (spec/HTTP.md §3) and the signed-checkpoint and session-key
//! documents that travel with them (§6, §5.2).

use serde::{Deserialize, Serialize};
use tally_core::encoding::Canonical;
use tally_core::{Authorization, Hash, Outcome, PublicKey, Receipt, Record, Signature};

use crate::amount::Amount;
use crate::error::WireError;

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

/// The `accepted` member of a payment: which requirement the client pays under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    /// Always `tally`.
    pub scheme: String,
    /// CAIP-2 network, `eip155:<chain id>`.
    pub network: String,
}

/// The tally part of a payment: the signed authorization (spec/PROTOCOL.md §5.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TallyPayment {
    /// Hex of the authorization's canonical bytes, prefix included.
    pub authorization: String,
    /// The session key's signature over those bytes.
    pub signature: Signature,
}

/// `PAYMENT-SIGNATURE`: x402 v2 PaymentPayload with the tally scheme (spec/HTTP.md §3.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentPayload {
    /// Always 2.
    #[serde(rename = "x402Version")]
    pub x402_version: u32,
    /// Scheme and network.
    pub accepted: Accepted,
    /// The authorization.
    pub payload: TallyPayment,
}

impl PaymentPayload {
    /// Wraps a signed authorization.
    pub fn new(chain_id: u64, authorization: &Authorization, signature: Signature) -> Self {
        PaymentPayload {
            x402_version: crate::headers::X402_VERSION,
            accepted: Accepted {
                scheme: crate::headers::SCHEME.into(),
                network: crate::headers::network(chain_id),
            },
            payload: TallyPayment {
                authorization: hex_lower(&authorization.to_bytes()),
                signature,
            },
        }
    }

    /// Decodes the authorization, refusing anything tally-core refuses.
    pub fn authorization(&self) -> Result<Authorization, WireError> {
        self.authorization_and_bytes().map(|(a, _)| a)
    }

    /// Decodes the authorization and also returns its canonical bytes (the signed message):
    /// tally-core's decoder accepts only bytes that re-encode identically, so they are
    /// `authorization.to_bytes()` without encoding it again.
    /// The payload must be exactly x402 version 2 (spec/HTTP.md §3.2): another version may
    /// mean other fields, so it is refused rather than guessed at.
    pub fn authorization_and_bytes(&self) -> Result<(Authorization, Vec<u8>), WireError> {
        if self.x402_version != crate::headers::X402_VERSION {
            return Err(WireError::Malformed {
                what: "x402Version",
                reason: format!(
                    "{} is not {}",
                    self.x402_version,
                    crate::headers::X402_VERSION
                ),
            });
        }
        let bytes = hex_bytes("authorization", &self.payload.authorization)?;
        let auth = Authorization::from_bytes(&bytes).map_err(|source| WireError::Message {
            what: "authorization",
            source,
        })?;
        Ok((auth, bytes))
    }
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

/// `PAYMENT-RESPONSE`: x402 v2 SettlementResponse carrying the receipt (spec/HTTP.md §3.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentResponse {
    /// Always true: a failed payment has no PAYMENT-RESPONSE, only an error.
    pub success: bool,
    /// Always `tally`.
    pub scheme: String,
    /// CAIP-2 network.
    pub network: String,
    /// Always empty: nothing per request goes onchain (P7).
    pub transaction: String,
    /// The receipt.
    pub receipt: WireReceipt,
}

impl PaymentResponse {
    /// The `PAYMENT-RESPONSE` header text of a tally receipt: exactly
    /// `encode_header("PAYMENT-RESPONSE", &PaymentResponse { success: true, scheme: "tally",
    /// network, transaction: "", receipt })`, written directly (no JSON serializer, no
    /// intermediate strings). `network` must be a CAIP-2 id (`eip155:<digits>`), which needs
    /// no JSON escaping; anything else goes through the serializer.
    pub fn receipt_header(
        network: &str,
        outcome_bytes: &[u8],
        signature: &Signature,
    ) -> Result<String, WireError> {
        use base64::Engine;
        let plain = network
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b':' || b == b'-' || b == b'_');
        if !plain {
            let response = PaymentResponse {
                success: true,
                scheme: crate::headers::SCHEME.into(),
                network: network.into(),
                transaction: String::new(),
                receipt: WireReceipt::from_parts(outcome_bytes, *signature),
            };
            return crate::headers::encode_header("PAYMENT-RESPONSE", &response);
        }
        let mut json = Vec::with_capacity(128 + 2 * outcome_bytes.len() + 128);
        json.extend_from_slice(b"{\"success\":true,\"scheme\":\"");
        json.extend_from_slice(crate::headers::SCHEME.as_bytes());
        json.extend_from_slice(b"\",\"network\":\"");
        json.extend_from_slice(network.as_bytes());
        json.extend_from_slice(b"\",\"transaction\":\"\",\"receipt\":{\"outcome\":\"");
        let at = json.len();
        json.resize(at + 2 * outcome_bytes.len(), 0);
        hex::encode_to_slice(outcome_bytes, &mut json[at..]).map_err(|e| WireError::Malformed {
            what: "PAYMENT-RESPONSE",
            reason: e.to_string(),
        })?;
        json.extend_from_slice(b"\",\"signature\":\"");
        let at = json.len();
        json.resize(at + 128, 0);
        hex::encode_to_slice(signature.0, &mut json[at..]).map_err(|e| WireError::Malformed {
            what: "PAYMENT-RESPONSE",
            reason: e.to_string(),
        })?;
        json.extend_from_slice(b"\"}}");
        let text = base64::engine::general_purpose::STANDARD.encode(json);
        if text.len() > crate::headers::MAX_HEADER_BYTES {
            return Err(WireError::TooLarge {
                header: "PAYMENT-RESPONSE",
                len: text.len(),
                limit: crate::headers::MAX_HEADER_BYTES,
            });
        }
        Ok(text)
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

/// One requirement of a 402 (x402 v2 PaymentRequirements, tally scheme).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// `tally`.
    pub scheme: String,
    /// CAIP-2 network.
    pub network: String,
    /// The most one call on this route costs.
    pub amount: Amount,
    /// The token.
    pub asset: String,
    /// The payee.
    #[serde(rename = "payTo")]
    pub pay_to: String,
    /// How long the requirement stands, seconds.
    #[serde(rename = "maxTimeoutSeconds")]
    pub max_timeout_seconds: u64,
    /// What a tally client needs beyond x402's fields.
    pub extra: RequirementExtra,
}

/// The `extra` member of a tally requirement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequirementExtra {
    /// The settlement contract.
    pub contract: String,
    /// The provider's ed25519 key.
    pub provider_key: PublicKey,
    /// The hash of the terms document authorizations must sign.
    pub terms_hash: Hash,
    /// Where the terms document is served.
    pub terms_url: String,
}

/// The resource a 402 is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// The request's path and query.
    pub url: String,
    /// Human-readable.
    pub description: String,
    /// The response type, if known (empty otherwise).
    #[serde(rename = "mimeType")]
    pub mime_type: String,
}

/// `PAYMENT-REQUIRED`: x402 v2 PaymentRequired (spec/HTTP.md §3.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequired {
    /// Always 2.
    #[serde(rename = "x402Version")]
    pub x402_version: u32,
    /// The reason code (spec/HTTP.md §8).
    pub error: String,
    /// The resource.
    pub resource: Resource,
    /// One tally requirement.
    pub accepts: Vec<Requirement>,
}
