//! Header names, paths and limits of the HTTP binding (spec/HTTP.md §2).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::WireError;

/// x402 v2: the server's payment requirements, on a 402 (spec/HTTP.md §3.1).
pub const PAYMENT_REQUIRED: &str = "payment-required";
/// x402 v2: the client's payment, on every paid request (spec/HTTP.md §3.2).
pub const PAYMENT_SIGNATURE: &str = "payment-signature";
/// x402 v2: the provider's receipt, on every metered response (spec/HTTP.md §3.3).
pub const PAYMENT_RESPONSE: &str = "payment-response";
/// The provider asks for a checkpoint at the given log size (spec/HTTP.md §6).
pub const CHECKPOINT_REQUEST: &str = "tally-checkpoint-request";
/// The client hands over a signed checkpoint with a request (spec/HTTP.md §6).
pub const CHECKPOINT: &str = "tally-checkpoint";
/// On a granted dispute: the payee's EIP-712 signature over the checkpoint state right after
/// the credit, `base64(JSON(CreditState))` (spec/HTTP.md §7, CHAIN.md §4.2).
pub const CREDIT_STATE: &str = "tally-credit-state";
/// Which writer served a channel in cluster mode: `<shard>.<epoch>` of the serving node's
/// lease (spec/CLUSTER.md §6). Informational: safety is the database's fence, not this.
pub const EPOCH: &str = "tally-epoch";
/// Set by a cluster node on a request it forwards to the channel's owner (spec/CLUSTER.md
/// §7): the owner never forwards such a request again, so a stale view cannot loop.
pub const FORWARDED: &str = "tally-forwarded";
/// Every header payload above is at most this long (base64 text), so proofs never travel
/// in headers (spec/HTTP.md §2). The widest tally payment is about 1.4 KB once `accepted`
/// carries the full x402 requirement; the rest is room for the `resource` a stock x402
/// client copies from the 402 (about 1.9 KB of URL), well under common 8 KiB header limits.
pub const MAX_HEADER_BYTES: usize = 4096;
/// Where the terms document is served (spec/HTTP.md §4).
pub const WELL_KNOWN_PATH: &str = "/.well-known/tally";
/// The prefix of every gateway endpoint (spec/HTTP.md §5).
pub const API_PREFIX: &str = "/tally/v1";
/// The x402 protocol version these payloads follow.
pub const X402_VERSION: u32 = 2;
/// The x402 scheme name of tally payments.
pub const SCHEME: &str = "tally";

/// `base64(JSON(value))`, refusing to produce a header over the limit.
pub fn encode_header<T: Serialize>(header: &'static str, value: &T) -> Result<String, WireError> {
    let json = serde_json::to_vec(value).map_err(|e| WireError::Malformed {
        what: header,
        reason: e.to_string(),
    })?;
    let text = B64.encode(json);
    if text.len() > MAX_HEADER_BYTES {
        return Err(WireError::TooLarge {
            header,
            len: text.len(),
            limit: MAX_HEADER_BYTES,
        });
    }
    Ok(text)
}

/// Reads `base64(JSON)` from a header value, checking the size before decoding anything.
pub fn decode_header<T: DeserializeOwned>(
    header: &'static str,
    value: &[u8],
) -> Result<T, WireError> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(WireError::TooLarge {
            header,
            len: value.len(),
            limit: MAX_HEADER_BYTES,
        });
    }
    let json = B64.decode(value).map_err(|e| WireError::Malformed {
        what: header,
        reason: format!("not base64: {e}"),
    })?;
    serde_json::from_slice(&json).map_err(|e| WireError::Malformed {
        what: header,
        reason: e.to_string(),
    })
}

/// The CAIP-2 network id of an EVM chain: `eip155:<chain id>`.
pub fn network(chain_id: u64) -> String {
    format!("eip155:{chain_id}")
}
