//! The provider's outcome of a request and the signed receipt (spec/PROTOCOL.md §5.2).

use serde::{Deserialize, Serialize};

use crate::encoding::Canonical;
use crate::error::Result;
use crate::hash::{ChannelId, Hash};
use crate::keys::{PublicKey, SecretKey};
use crate::signature::Signature;

/// How many meters a route may have (input and output tokens, and two more).
pub const METERS: usize = 4;

/// Units per meter, signed in every outcome (spec/PROTOCOL.md §5.2).
pub type Units = [u64; METERS];

/// The units of a fixed-price call: one call.
pub const ONE_CALL: Units = [1, 0, 0, 0];

/// What the provider charged for one authorized request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Always [`crate::VERSION`].
    pub version: u8,
    /// The channel; equal to the authorization's.
    pub channel_id: ChannelId,
    /// The lane; equal to the authorization's.
    pub lane: u32,
    /// The lane seq; equal to the authorization's.
    pub seq: u64,
    /// The record's index in the channel's log, assigned by the provider when it appended.
    pub index: u64,
    /// [`crate::Authorization::signed_hash`] of the authorization this answers.
    pub authorization_hash: Hash,
    /// Units per meter, in the order the route's terms list its meters (spec/HTTP.md §4.1):
    /// a fixed price records `[1, 0, 0, 0]`, a credit or an uncharged call all zeros. Each
    /// meter is here, not only their priced sum, so the client can redo the arithmetic.
    pub units: Units,
    /// The net amount of this record: positive for a charge, negative for a credit, never
    /// above the authorization's `max_amount`.
    pub amount: i128,
    /// The cumulative net amount after this record: the cumulative after record `index - 1`
    /// (0 for the first) plus `amount`, never negative.
    pub cumulative: u128,
    /// [`crate::request::response_hash`] of the response delivered.
    pub response_hash: Hash,
    /// Provider time, milliseconds since the Unix epoch.
    pub time_ms: u64,
}

impl Canonical for Outcome {
    const DOMAIN: &'static [u8] = b"tally\0outcome\0";
    const NAME: &'static str = "outcome";
    fn version(&self) -> u8 {
        self.version
    }
}

impl Outcome {
    /// Signs the canonical bytes with the provider's key, making a receipt.
    pub fn sign(self, key: &SecretKey) -> Receipt {
        let signature = key.sign(&self.to_bytes());
        Receipt {
            outcome: self,
            signature,
        }
    }
}

/// An outcome with the provider's signature: what the client gets back with the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The signed outcome.
    pub outcome: Outcome,
    /// The provider's ed25519 signature over `bytes(outcome)`.
    pub signature: Signature,
}

impl Receipt {
    /// Checks the provider's signature strictly.
    pub fn verify(&self, provider: &PublicKey) -> Result<()> {
        provider.verify(&self.outcome.to_bytes(), &self.signature)
    }
}
