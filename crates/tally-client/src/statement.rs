//! Auditing a bill: a run of records checked offline with public keys only, by tally-audit's
//! engine — the same audit `tally verify` runs (one engine: decoding, R1–R8 with
//! `tally_core::Sequence`, every signature batch-verified, spec/PROTOCOL.md §4.2 and §5.3).

use tally_core::hash::Hash;
use tally_core::{ChannelId, PublicKey, Record, Signature};
use tally_http::WireRecord;
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

/// Verifies records `0..n` of one channel with [`tally_audit::audit`]: each decodes and is
/// consistent (R1–R4), sits at its index with the right cumulative (R5), acknowledges a state
/// the log had within the window (R7), keeps its lane's seqs strict and acknowledgements
/// non-decreasing (R8), and both signatures verify (batched). Returns the root and totals, to
/// compare with a checkpoint.
pub fn verify_statement(
    records: &[(Record, Signature)],
    client: &PublicKey,
    provider: &PublicKey,
) -> Result<Statement, StatementError> {
    let channel_id = records
        .first()
        .map_or(ChannelId([0; 32]), |(r, _)| r.authorization.channel_id);
    let header = tally_audit::StatementHeader {
        format: tally_audit::STATEMENT_FORMAT.into(),
        channel_id,
        client_key: *client,
        provider_key: *provider,
        terms: None,
        checkpoints: Vec::new(),
    };
    let wires: Vec<WireRecord> = records
        .iter()
        .map(|(r, s)| WireRecord::new(r, *s))
        .collect();
    let bad = |why: String| StatementError::Record { index: 0, why };
    let statement =
        tally_audit::Statement::from_records(header, &wires).map_err(|e| bad(e.to_string()))?;
    let report = tally_audit::audit(statement.reader(), &Default::default(), 0)
        .map_err(|e| bad(e.to_string()))?;
    if let Some(d) = report.discrepancies.first() {
        let index = d.index.unwrap_or(0);
        return Err(match d.kind {
            "client_signature" => StatementError::Signature {
                index,
                client: true,
            },
            "provider_signature" => StatementError::Signature {
                index,
                client: false,
            },
            _ => StatementError::Record {
                index,
                why: format!("[{}] {}", d.kind, d.detail),
            },
        });
    }
    let t = report.totals;
    Ok(Statement {
        records: report.records,
        root: t.root,
        cumulative: t.cumulative,
        charged: t.charged,
        credited: t.credited,
    })
}
