//! The client's per-request authorization (spec/PROTOCOL.md §5.1).
//!
//! One signature both authorizes request `seq` of lane `lane` and acknowledges a state of the
//! channel's log the client has verified (size, root, cumulative), so no separate
//! acknowledgement message exists. Many lanes may be in flight at once; the provider assigns
//! each record its log index when it appends (spec/PROTOCOL.md §5.1, DESIGN.md §7).

use serde::{Deserialize, Serialize};

use crate::encoding::Canonical;
use crate::error::Result;
use crate::hash::{blake3_of, ChannelId, Hash};
use crate::keys::{PublicKey, SecretKey};
use crate::signature::Signature;

/// What a client signs to pay for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    /// Always [`crate::VERSION`].
    pub version: u8,
    /// The channel paid from.
    pub channel_id: ChannelId,
    /// The lane this request travels on (`< max_lanes` of the terms, spec/PROTOCOL.md §5.4).
    pub lane: u32,
    /// The 0-based position of this request on its lane: strict, one more than the lane's
    /// previous recorded request.
    pub seq: u64,
    /// [`crate::request::request_hash`] of the request.
    pub request_hash: Hash,
    /// The most the client accepts to be charged for this call, in token base units.
    pub max_amount: u128,
    /// The size of the log state the client acknowledges (verified, record by record).
    pub ack_size: u64,
    /// The log root at `ack_size`, as the client computed it.
    pub ack_root: Hash,
    /// The cumulative net amount at `ack_size`.
    pub ack_cumulative: u128,
    /// The hash of the provider's terms the client agreed to (price list, credit limit).
    pub terms_hash: Hash,
}

impl Canonical for Authorization {
    const DOMAIN: &'static [u8] = b"tally\0authorization\0";
    const NAME: &'static str = "authorization";
    fn version(&self) -> u8 {
        self.version
    }
}

impl Authorization {
    /// Signs the canonical bytes with the client's session key.
    pub fn sign(&self, key: &SecretKey) -> Signature {
        key.sign(&self.to_bytes())
    }

    /// Checks the client's signature strictly.
    pub fn verify(&self, key: &PublicKey, signature: &Signature) -> Result<()> {
        key.verify(&self.to_bytes(), signature)
    }

    /// The hash an outcome carries to bind itself to this signed authorization:
    /// `BLAKE3(bytes(authorization) || signature)` (spec/PROTOCOL.md §5.2).
    pub fn signed_hash(&self, signature: &Signature) -> Hash {
        blake3_of(&[&self.to_bytes(), &signature.0])
    }
}
