//! The three x402 v2 header payloads with the tally scheme (spec/HTTP.md §3): the 402's
//! PaymentRequired, the client's PaymentPayload and the gateway's SettleResponse.
//!
//! They follow the official x402 v2 types member for member, so a stock x402 SDK decodes
//! every header tally sends (tests/tests/x402_conformance.rs checks this with `@x402/core`).
//! tally's own data rides where v2 puts scheme data: `extra` of a requirement, `payload` of a
//! payment, `extra` of a settle response.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tally_core::encoding::Canonical;
use tally_core::{Authorization, Hash, PublicKey, Signature};

use crate::amount::{Amount, SignedAmount};
use crate::error::WireError;
use crate::payment::{hex_bytes, hex_lower, WireReceipt};
use crate::terms::{ChainTerms, Price};

/// `maxTimeoutSeconds` of every tally requirement: x402 requires a positive number; a tally
/// authorization does not expire, so this only says how long a 402's quote stands.
pub const MAX_TIMEOUT_SECONDS: u64 = 60;

/// The `payload` member of a payment: the signed authorization (spec/PROTOCOL.md §5.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TallyPayment {
    /// Hex of the authorization's canonical bytes, prefix included.
    pub authorization: String,
    /// The session key's signature over those bytes.
    pub signature: Signature,
}

/// An x402 v2 PaymentRequirements with the tally scheme: one entry of a 402's `accepts`, and
/// the `accepted` member of every payment (spec/HTTP.md §3.1, §3.2).
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

/// A provider key as a requirement carries it: the key's 32 bytes in lowercase hex, not
/// checked to be a curve point. A payment's `accepted` only has to equal the gateway's own
/// key byte for byte, and decompressing the point would cost every paid request a few
/// microseconds for nothing; clients take the key they verify receipts with from the terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBytes(#[serde(with = "tally_core::encoding::fixed_bytes")] pub [u8; 32]);

impl From<PublicKey> for KeyBytes {
    fn from(key: PublicKey) -> Self {
        KeyBytes(key.to_bytes())
    }
}

/// The `extra` member of a tally requirement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequirementExtra {
    /// The settlement contract.
    pub contract: String,
    /// The provider's ed25519 key (the terms' `provider_key`).
    pub provider_key: KeyBytes,
    /// The hash of the terms document authorizations must sign.
    pub terms_hash: Hash,
    /// Where the terms document is served.
    pub terms_url: String,
}

/// Two `0x` addresses name the same account: equal ignoring ASCII case (EIP-55 checksums
/// only change case).
fn same_address(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

impl Requirement {
    /// The requirement of a route priced `price` under the terms with this `chain`, provider
    /// key and hash (spec/HTTP.md §3.1): `amount` is the most one call costs (0 for a free
    /// price, which the dispute endpoint quotes). The gateway advertises exactly this and a
    /// client derives exactly this from the terms, so neither needs a 402 to agree on it.
    pub fn tally(
        chain: &ChainTerms,
        provider_key: PublicKey,
        terms_hash: Hash,
        price: &Price,
    ) -> Requirement {
        Requirement {
            scheme: crate::headers::SCHEME.into(),
            network: crate::headers::network(chain.chain_id),
            amount: Amount(price.max_per_call().unwrap_or(0)),
            asset: chain.asset.clone(),
            pay_to: chain.pay_to.clone(),
            max_timeout_seconds: MAX_TIMEOUT_SECONDS,
            extra: RequirementExtra {
                contract: chain.contract.clone(),
                provider_key: provider_key.into(),
                terms_hash,
                terms_url: crate::headers::WELL_KNOWN_PATH.into(),
            },
        }
    }

    /// The first member of a payment's `accepted` that does not match this requirement, in
    /// the order of spec/HTTP.md §3.2: `scheme`, `network`, `extra.terms_hash`, `amount`
    /// exactly; `asset`, `payTo`, `extra.contract` as addresses (case-insensitive);
    /// `extra.provider_key` exactly. `maxTimeoutSeconds` and `extra.terms_url` are advisory
    /// and not compared. `None` when it matches.
    pub fn mismatch(&self, accepted: &Requirement) -> Option<&'static str> {
        let (ours, theirs) = (&self.extra, &accepted.extra);
        if accepted.scheme != self.scheme {
            Some("scheme")
        } else if accepted.network != self.network {
            Some("network")
        } else if theirs.terms_hash != ours.terms_hash {
            Some("extra.terms_hash")
        } else if accepted.amount != self.amount {
            Some("amount")
        } else if !same_address(&accepted.asset, &self.asset) {
            Some("asset")
        } else if !same_address(&accepted.pay_to, &self.pay_to) {
            Some("payTo")
        } else if !same_address(&theirs.contract, &ours.contract) {
            Some("extra.contract")
        } else if theirs.provider_key != ours.provider_key {
            Some("extra.provider_key")
        } else {
            None
        }
    }
}

/// `PAYMENT-SIGNATURE`: x402 v2 PaymentPayload with the tally scheme (spec/HTTP.md §3.2).
/// `resource` and `extensions` are what stock x402 clients may send; the gateway accepts any
/// JSON object there and ignores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentPayload {
    /// Always 2.
    #[serde(rename = "x402Version")]
    pub x402_version: u32,
    /// The resource paid for, as a stock client copies it from a 402 (optional, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<Map<String, Value>>,
    /// The requirement the client pays under, exactly as the gateway advertises it.
    pub accepted: Requirement,
    /// The authorization.
    pub payload: TallyPayment,
    /// x402 extensions data (optional, ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Map<String, Value>>,
}

impl PaymentPayload {
    /// Wraps a signed authorization paid under `accepted` (no `resource`, no `extensions`:
    /// the gateway needs neither, and each byte counts against the header limit).
    pub fn new(accepted: Requirement, authorization: &Authorization, signature: Signature) -> Self {
        PaymentPayload {
            x402_version: crate::headers::X402_VERSION,
            resource: None,
            accepted,
            payload: TallyPayment {
                authorization: hex_lower(&authorization.to_bytes()),
                signature,
            },
            extensions: None,
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

/// The `extra` member of a tally settle response: the provider's receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseExtra {
    /// The receipt.
    pub receipt: WireReceipt,
}

/// `PAYMENT-RESPONSE`: x402 v2 SettleResponse carrying the receipt (spec/HTTP.md §3.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentResponse {
    /// Always true: a failed payment has no PAYMENT-RESPONSE, only an error.
    pub success: bool,
    /// Always empty: nothing per request goes onchain (P7).
    pub transaction: String,
    /// CAIP-2 network.
    pub network: String,
    /// The channel's payer (the address that funded it), `0x` hex.
    pub payer: String,
    /// The record's net amount: what it charged, negative for a dispute's credit.
    pub amount: SignedAmount,
    /// The receipt.
    pub extra: ResponseExtra,
}

/// Whether `text` can go into a JSON string as is: no quote, backslash or control byte.
fn plain(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_'))
}

impl PaymentResponse {
    /// The `PAYMENT-RESPONSE` header text of a tally receipt: exactly
    /// `encode_header("PAYMENT-RESPONSE", &PaymentResponse { success: true, transaction: "",
    /// network, payer, amount, extra: { receipt } })`, written directly (no JSON serializer,
    /// no intermediate strings). `network` (CAIP-2) and `payer` (`0x` hex) need no JSON
    /// escaping; anything else goes through the serializer.
    pub fn receipt_header(
        network: &str,
        payer: &str,
        amount: i128,
        outcome_bytes: &[u8],
        signature: &Signature,
    ) -> Result<String, WireError> {
        use base64::Engine;
        if !plain(network) || !plain(payer) {
            let response = PaymentResponse {
                success: true,
                transaction: String::new(),
                network: network.into(),
                payer: payer.into(),
                amount: SignedAmount(amount),
                extra: ResponseExtra {
                    receipt: WireReceipt::from_parts(outcome_bytes, *signature),
                },
            };
            return crate::headers::encode_header("PAYMENT-RESPONSE", &response);
        }
        let bad = |e: hex::FromHexError| WireError::Malformed {
            what: "PAYMENT-RESPONSE",
            reason: e.to_string(),
        };
        let mut json = Vec::with_capacity(256 + 2 * outcome_bytes.len());
        json.extend_from_slice(b"{\"success\":true,\"transaction\":\"\",\"network\":\"");
        json.extend_from_slice(network.as_bytes());
        json.extend_from_slice(b"\",\"payer\":\"");
        json.extend_from_slice(payer.as_bytes());
        json.extend_from_slice(b"\",\"amount\":\"");
        json.extend_from_slice(amount.to_string().as_bytes());
        json.extend_from_slice(b"\",\"extra\":{\"receipt\":{\"outcome\":\"");
        let at = json.len();
        json.resize(at + 2 * outcome_bytes.len(), 0);
        hex::encode_to_slice(outcome_bytes, &mut json[at..]).map_err(bad)?;
        json.extend_from_slice(b"\",\"signature\":\"");
        let at = json.len();
        json.resize(at + 128, 0);
        hex::encode_to_slice(signature.0, &mut json[at..]).map_err(bad)?;
        json.extend_from_slice(b"\"}}}");
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

/// The resource a 402 is about (x402 v2 ResourceInfo).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// The request's path and query.
    pub url: String,
    /// Human-readable.
    pub description: String,
    /// The response type, when the route declares one (omitted otherwise).
    #[serde(rename = "mimeType", default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// `PAYMENT-REQUIRED`: x402 v2 PaymentRequired (spec/HTTP.md §3.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequired {
    /// Always 2.
    #[serde(rename = "x402Version")]
    pub x402_version: u32,
    /// The refusal's x402 error reason, or tally's code where x402 has none (spec/HTTP.md §8).
    pub error: String,
    /// The resource.
    pub resource: Resource,
    /// One tally requirement.
    pub accepts: Vec<Requirement>,
}
