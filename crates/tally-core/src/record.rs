//! A usage record: the data of one Merkle leaf (spec/PROTOCOL.md §5.3).
//!
//! A record holds the client's signed authorization and the provider's outcome, so any third
//! party with both public keys can attribute it to both parties (P2).

use serde::{Deserialize, Serialize};

use crate::authorization::Authorization;
use crate::encoding::Canonical;
use crate::error::{Error, Result};
use crate::hash::{Blake3Hasher, Hash, TreeHasher};
use crate::keys::PublicKey;
use crate::outcome::{Outcome, Receipt};
use crate::signature::Signature;

/// One co-signed usage record. Its canonical bytes are the leaf data of the channel's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Always [`crate::VERSION`].
    pub version: u8,
    /// The client's authorization.
    pub authorization: Authorization,
    /// The client's signature over the authorization.
    pub client_signature: Signature,
    /// The provider's outcome.
    pub outcome: Outcome,
}

impl Canonical for Record {
    const DOMAIN: &'static [u8] = b"tally\0record\0";
    const NAME: &'static str = "record";
    fn version(&self) -> u8 {
        self.version
    }
}

impl Record {
    /// Assembles a record.
    pub fn new(
        authorization: Authorization,
        client_signature: Signature,
        outcome: Outcome,
    ) -> Self {
        Record {
            version: crate::VERSION,
            authorization,
            client_signature,
            outcome,
        }
    }

    /// The Merkle leaf hash of this record in tally's BLAKE3 tree (spec/PROTOCOL.md §3.2).
    pub fn leaf_hash(&self) -> Hash {
        Blake3Hasher.leaf(&self.to_bytes())
    }

    /// Checks that the outcome answers this authorization and obeys its limits, without
    /// looking at signatures or at the record's place in the log (spec/PROTOCOL.md §5.3 rules
    /// R1–R4; [`crate::sequence::Sequence`] checks R5, R7 and R8).
    pub fn check_consistency(&self) -> Result<()> {
        let a = &self.authorization;
        let o = &self.outcome;
        if a.channel_id != o.channel_id {
            return Err(Error::Inconsistent(
                "channel id of outcome and authorization".into(),
            ));
        }
        if a.lane != o.lane || a.seq != o.seq {
            return Err(Error::Inconsistent(format!(
                "lane/seq: authorization {}/{} but outcome {}/{}",
                a.lane, a.seq, o.lane, o.seq
            )));
        }
        if a.signed_hash(&self.client_signature) != o.authorization_hash {
            return Err(Error::Inconsistent("outcome's authorization hash".into()));
        }
        if o.amount > 0 && o.amount.unsigned_abs() > a.max_amount {
            return Err(Error::Inconsistent(format!(
                "amount {} exceeds authorized maximum {}",
                o.amount, a.max_amount
            )));
        }
        Ok(())
    }

    /// Checks consistency and the client's signature. The provider's signature is not part of
    /// the leaf; see [`Record::verify_receipt`].
    pub fn verify(&self, client: &PublicKey) -> Result<()> {
        self.check_consistency()?;
        self.authorization.verify(client, &self.client_signature)
    }

    /// Checks the provider's signature over this record's outcome.
    pub fn verify_receipt(&self, provider: &PublicKey, signature: &Signature) -> Result<()> {
        Receipt {
            outcome: self.outcome,
            signature: *signature,
        }
        .verify(provider)
    }
}

/// `cumulative + amount`, or `None` if it would leave `0..=u128::MAX`.
pub fn apply_amount(cumulative: u128, amount: i128) -> Option<u128> {
    if amount >= 0 {
        cumulative.checked_add(amount.unsigned_abs())
    } else {
        cumulative.checked_sub(amount.unsigned_abs())
    }
}
