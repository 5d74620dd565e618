//! Checking a proof bundle with public keys only (spec/PROTOCOL.md §7.3).

use tally_core::bundle::ProofBundle;
use tally_core::checkpoint::SignedCheckpoint;
use tally_core::encoding::Canonical;
use tally_core::hash::{Blake3Hasher, TreeHasher};
use tally_core::Record;
use thiserror::Error;

use crate::error::ProofError;
use crate::proof::verify_inclusion;

/// Why a bundle was refused, naming the first check that failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// The record bytes are not a canonical record.
    #[error("record: {0}")]
    Record(tally_core::Error),
    /// The record is internally inconsistent or the client's signature fails.
    #[error("client authorization: {0}")]
    Authorization(tally_core::Error),
    /// The provider's signature over the outcome fails.
    #[error("provider receipt: {0}")]
    Receipt(tally_core::Error),
    /// The checkpoint note is malformed or lacks a valid signature.
    #[error("checkpoint: {0}")]
    Checkpoint(tally_core::Error),
    /// The record belongs to another channel than the checkpoint.
    #[error("record is for channel {record} but the checkpoint is for {checkpoint}")]
    ChannelMismatch {
        /// The record's channel.
        record: String,
        /// The checkpoint's channel.
        checkpoint: String,
    },
    /// The record's own index is not the index the bundle claims.
    #[error("record index {record} is not the bundle index {index}")]
    IndexMismatch {
        /// The index the record's outcome states.
        record: u64,
        /// The bundle's index.
        index: u64,
    },
    /// The inclusion proof fails.
    #[error("inclusion proof: {0}")]
    Inclusion(ProofError),
}

/// What a valid bundle proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedBundle {
    /// The record, now known to be signed by both parties.
    pub record: Record,
    /// The checkpoint the record is included in, signed by the client and the provider.
    pub checkpoint: SignedCheckpoint,
}

/// Checks everything a bundle claims, offline: the record's encoding and consistency, both
/// signatures, the checkpoint's note signatures, and the inclusion of the record's leaf under
/// the checkpoint root.
pub fn verify_bundle(bundle: &ProofBundle) -> Result<VerifiedBundle, BundleError> {
    let bytes = hex::decode(&bundle.record).map_err(|e| {
        BundleError::Record(tally_core::Error::BadText {
            what: "record",
            reason: e.to_string(),
        })
    })?;
    let record = Record::from_bytes(&bytes).map_err(BundleError::Record)?;
    record
        .verify(&bundle.client_key)
        .map_err(BundleError::Authorization)?;
    record
        .verify_receipt(&bundle.provider_key, &bundle.provider_signature)
        .map_err(BundleError::Receipt)?;
    let checkpoint = SignedCheckpoint::from_note(
        &bundle.checkpoint,
        &bundle.client_key,
        &bundle.provider_key,
        true,
    )
    .map_err(BundleError::Checkpoint)?;
    let cp = &checkpoint.checkpoint;
    if cp.channel_id != record.outcome.channel_id {
        return Err(BundleError::ChannelMismatch {
            record: record.outcome.channel_id.to_hex(),
            checkpoint: cp.channel_id.to_hex(),
        });
    }
    if record.outcome.index != bundle.index {
        return Err(BundleError::IndexMismatch {
            record: record.outcome.index,
            index: bundle.index,
        });
    }
    verify_inclusion(
        &Blake3Hasher,
        bundle.index,
        cp.size,
        &Blake3Hasher.leaf(&bytes),
        &bundle.inclusion_proof,
        &cp.root,
    )
    .map_err(BundleError::Inclusion)?;
    Ok(VerifiedBundle { record, checkpoint })
}
