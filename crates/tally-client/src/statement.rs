//! Auditing a bill: a run of records checked offline with public keys only, every
//! signature batch-verified (spec/PROTOCOL.md §4.2, audits are what batches are for).

use tally_core::encoding::Canonical;
use tally_core::hash::Hash;
use tally_core::signature::{verify_batch, BatchItem};
use tally_core::{PublicKey, Record, Signature};
use tally_log::{Blake3Hasher, MemoryTree};
use thiserror::Error;

/// What a valid statement adds up to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// Records checked.
    pub records: u64,
    /// Root over them.
    pub root: Hash,
    /// Final cumulative net amount.
    pub cumulative: u128,
    /// Sum of charges.
    pub charged: u128,
    /// Sum of credits (absolute).
    pub credited: u128,
}

/// Why a statement was refused, naming the first bad record.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum StatementError {
    /// Record `index` is inconsistent or out of order.
    #[error("record {index}: {why}")]
    Record {
        /// Its index.
        index: u64,
        /// Why.
        why: String,
    },
    /// A signature fails; `client` tells whose.
    #[error("record {index}: {} signature does not verify", if *client { "client" } else { "provider" })]
    Signature {
        /// The record.
        index: u64,
        /// Client's (true) or provider's.
        client: bool,
    },
}

/// Verifies records `0..n` of one channel: each is consistent (R1–R4) and in its place
/// (R5, R7, R8: index, cumulative, acknowledgement, lane), and both signatures
/// verify (batched). Returns the root and totals, to compare with a checkpoint.
pub fn verify_statement(
    records: &[(Record, Signature)],
    client: &PublicKey,
    provider: &PublicKey,
) -> Result<Statement, StatementError> {
    let mut tree = MemoryTree::new(Blake3Hasher);
    let mut sequence = tally_core::Sequence::new(tree.root());
    let (mut cumulative, mut charged, mut credited) = (0u128, 0u128, 0u128);
    let mut auth_bytes = Vec::with_capacity(records.len());
    let mut outcome_bytes = Vec::with_capacity(records.len());
    for (i, (r, _)) in records.iter().enumerate() {
        let index = i as u64;
        let bad = |why: String| StatementError::Record { index, why };
        r.check_consistency().map_err(|e| bad(e.to_string()))?;
        let a = &r.authorization;
        cumulative = sequence.check_next(r).map_err(|e| bad(e.to_string()))?;
        if r.outcome.amount >= 0 {
            charged = charged.saturating_add(r.outcome.amount.unsigned_abs());
        } else {
            credited = credited.saturating_add(r.outcome.amount.unsigned_abs());
        }
        tree.push(&r.to_bytes());
        sequence.push(r, tree.root());
        auth_bytes.push(a.to_bytes());
        outcome_bytes.push(r.outcome.to_bytes());
    }
    let mut items = Vec::with_capacity(records.len() * 2);
    for (i, (r, provider_sig)) in records.iter().enumerate() {
        items.push(BatchItem {
            key: client,
            message: &auth_bytes[i],
            signature: &r.client_signature,
        });
        items.push(BatchItem {
            key: provider,
            message: &outcome_bytes[i],
            signature: provider_sig,
        });
    }
    if let Err(e) = verify_batch(&items) {
        let at = match e {
            tally_core::Error::InvalidSignatureAt(at) => at,
            _ => 0,
        };
        return Err(StatementError::Signature {
            index: (at / 2) as u64,
            client: at % 2 == 0,
        });
    }
    Ok(Statement {
        records: records.len() as u64,
        root: tree.root(),
        cumulative,
        charged,
        credited,
    })
}
