//! Request and response bodies of the gateway's endpoints (spec/HTTP.md §5).

use serde::{Deserialize, Serialize};
use tally_core::bundle::ProofBundle;
use tally_core::{ChannelId, Hash, PublicKey, RequestSalt};

use crate::amount::{Amount, SignedAmount};
use crate::payment::{WireCheckpoint, WireEip712Sig, WireRecord};

/// `GET /tally/v1/channels/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelState {
    /// The channel.
    pub channel_id: ChannelId,
    /// The bound session key, if any.
    pub session_key: Option<PublicKey>,
    /// The channel's request salt (spec/PROTOCOL.md §3.3), drawn when the key was bound.
    pub request_salt: Option<RequestSalt>,
    /// Durable log size.
    pub size: u64,
    /// Root at `size`.
    pub root: Hash,
    /// Cumulative net amount at `size`.
    pub cumulative: Amount,
    /// Size of the latest client-signed checkpoint (0 if none).
    pub checkpoint_size: u64,
    /// Cumulative of that checkpoint.
    pub checkpoint_cumulative: Amount,
    /// The last record and its provider signature, if any.
    pub last_record: Option<WireRecord>,
    /// Whether the channel waits for its client to restore the records it holds beyond
    /// `size` (spec/HTTP.md §5.6) before it takes appends again.
    #[serde(default)]
    pub restore_required: bool,
    /// While a restore is required: the nonce its statements must carry (spec/PROTOCOL.md
    /// §5.7).
    #[serde(default)]
    pub restore_nonce: Option<Hash>,
}

/// `GET /tally/v1/channels/{id}/records?from=&to=`: at most [`MAX_RECORDS_PER_PAGE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsPage {
    /// Index of the first record returned.
    pub from: u64,
    /// The records in order, each with its provider signature.
    pub records: Vec<WireRecord>,
    /// The log size when read.
    pub size: u64,
}

/// The answer to `POST /tally/v1/channels/{id}/session` (spec/HTTP.md §5.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionBound {
    /// The bound session key.
    pub bound: PublicKey,
    /// The channel's request salt: every request hash of the channel starts with it
    /// (spec/PROTOCOL.md §3.3). The same on every rebinding of the same key.
    pub request_salt: RequestSalt,
}

/// `POST /tally/v1/channels/{id}/restore` body (spec/HTTP.md §5.6): the co-signed records the
/// client holds beyond the provider's durable head, in index order from it, and the client's
/// signed statement of the state they lead to (spec/PROTOCOL.md §5.7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreUpload {
    /// The records, each with the provider's signature of its outcome; may be empty.
    pub records: Vec<WireRecord>,
    /// The restore statement's canonical bytes, hex.
    pub statement: String,
    /// The session key's signature over them.
    pub signature: tally_core::Signature,
}

impl RestoreUpload {
    /// An upload of `records` under `statement`, signed by the session key.
    pub fn new(
        records: Vec<WireRecord>,
        statement: &tally_core::Restore,
        key: &tally_core::SecretKey,
    ) -> Self {
        use tally_core::encoding::Canonical;
        RestoreUpload {
            records,
            statement: crate::payment::hex_lower(&statement.to_bytes()),
            signature: statement.sign(key),
        }
    }

    /// Decodes the statement (canonical bytes only; its signature is checked by the caller,
    /// who knows the session key).
    pub fn decode_statement(&self) -> Result<tally_core::Restore, crate::WireError> {
        use tally_core::encoding::Canonical;
        let bytes = crate::payment::hex_bytes("restore statement", &self.statement)?;
        tally_core::Restore::from_bytes(&bytes).map_err(|source| crate::WireError::Message {
            what: "restore statement",
            source,
        })
    }
}

/// The answer to a restore: the channel's durable state, now open to appends again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restored {
    /// How many uploaded records were appended.
    pub appended: u64,
    /// The durable log size.
    pub size: u64,
    /// Root at `size`.
    pub root: Hash,
    /// Cumulative net amount at `size`.
    pub cumulative: Amount,
}

/// `GET /tally/v1/channels/{id}/receipts?lane=L&seq=S` (spec/HTTP.md §5.7): the receipt of
/// a request whose response carried it at its end, for a client that lost that end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptFound {
    /// The lane asked for.
    pub lane: u32,
    /// The seq asked for.
    pub seq: u64,
    /// The record's index in the log.
    pub index: u64,
    /// Exactly what `PAYMENT-RESPONSE` carries (base64 of the SettlementResponse JSON).
    pub payment_response: String,
}

/// The most records one page returns.
pub const MAX_RECORDS_PER_PAGE: u64 = 1000;

/// `GET /tally/v1/channels/{id}/proofs/inclusion?index=&size=`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// Leaf index.
    pub index: u64,
    /// Tree size.
    pub size: u64,
    /// Root at `size`.
    pub root: Hash,
    /// RFC 9162 §2.1.3 path.
    pub proof: Vec<Hash>,
}

/// `GET /tally/v1/channels/{id}/proofs/consistency?old=&new=`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// Older size.
    pub old: u64,
    /// Newer size.
    pub new: u64,
    /// Root at `old`.
    pub old_root: Hash,
    /// Root at `new`.
    pub new_root: Hash,
    /// RFC 9162 §2.1.4 proof.
    pub proof: Vec<Hash>,
}

/// `GET /tally/v1/channels/{id}/checkpoints`: every stored checkpoint, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoints {
    /// Cosigned checkpoints.
    pub checkpoints: Vec<WireCheckpoint>,
}

/// What the disputed request and response were, so the gateway can apply its refund policy
/// to the record's hashes (spec/HTTP.md §7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputedExchange {
    /// Upper-case method.
    pub method: String,
    /// Path as sent.
    pub path: String,
    /// Raw query, without `?`.
    pub query: String,
    /// BLAKE3 of the request body.
    pub request_body_hash: Hash,
    /// HTTP status of the response received.
    pub status: u16,
    /// BLAKE3 of the response body received.
    pub response_body_hash: Hash,
}

/// `POST /tally/v1/channels/{id}/disputes` body; the request itself is paid with a
/// `max_amount = 0` authorization (spec/PROTOCOL.md §5.3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputeRequest {
    /// The disputed record, proven against a cosigned checkpoint.
    pub bundle: ProofBundle,
    /// The preimages of the record's request and response hashes.
    pub exchange: DisputedExchange,
}

/// A granted dispute: the body of the credit record's response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputeGranted {
    /// The disputed record's index.
    pub disputed_index: u64,
    /// The credit (negative).
    pub amount: SignedAmount,
    /// Why it was granted.
    pub rule: String,
}

/// The `TALLY-CREDIT-STATE` header of a granted dispute (spec/HTTP.md §7): the log's state
/// right after the credit record (`size` = its index + 1) and the payee's EIP-712 signature
/// over its **Checkpoint** struct (spec/CHAIN.md §3.2). With the client's own signature over
/// the same struct it is what `claimCosigned` takes (CHAIN.md §4.2), so the client can post
/// the credit onchain without the provider if the payee claims an older, higher state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditState {
    /// The log size after the credit record.
    pub size: u64,
    /// The root at `size`.
    pub root: Hash,
    /// The cumulative net amount at `size` (after the credit).
    pub cumulative: Amount,
    /// The payee's Checkpoint signature.
    pub payee_eip712: WireEip712Sig,
}

/// `POST /tally/v1/channels/{id}/close` body (spec/HTTP.md §5.4): the final state the client
/// verified record by record, and its checkpoint key's EIP-712 signature over the **Close**
/// struct of that state (spec/CHAIN.md §3.3), which the gateway cosigns as payee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    /// The log size; must be the gateway's durable log size.
    pub size: u64,
    /// The root at `size`.
    pub root: Hash,
    /// The cumulative net amount at `size`.
    pub cumulative: Amount,
    /// The checkpoint signer's Close signature.
    pub eip712: WireEip712Sig,
}

/// The answer to a close request: the state and both Close signatures, exactly what
/// `cooperativeClose` takes, so either party (or anyone) can submit it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseSigned {
    /// The log size closed at.
    pub size: u64,
    /// The root at `size`.
    pub root: Hash,
    /// The cumulative net amount at `size`.
    pub cumulative: Amount,
    /// The checkpoint signer's Close signature, as received.
    pub signer_eip712: WireEip712Sig,
    /// The payee's Close signature over the same digest.
    pub payee_eip712: WireEip712Sig,
}

/// The answer to `POST /tally/v1/relay/open` and `/relay/topup` (spec/HTTP.md §12): the
/// deposit's transaction, mined and successful. The client reads the channel from the chain
/// itself rather than trusting this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relayed {
    /// The channel opened or topped up.
    pub channel_id: ChannelId,
    /// The transaction hash.
    pub transaction: Hash,
    /// The block it was mined in.
    pub block: u64,
    /// The gas it used (the relay paid it).
    pub gas_used: u64,
}
