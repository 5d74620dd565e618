//! Reading a statement into what a bill shows: the rows, the Merkle tree of the records as
//! the statement gives them, and the evidence of the chosen records. The statement is read
//! once, line by line; what is kept is a few dozen bytes per record (the columns and the
//! tree's hashes) plus the chosen records' bytes.

use std::io::BufRead;

use tally_audit::{AuditReport, StatementHeader, StatementReader};
use tally_core::encoding::Canonical;
use tally_core::{Record, SignedCheckpoint};
use tally_http::{Terms, WireRecord};
use tally_log::{Blake3Hasher, MemoryTree, TreeHasher};

use crate::evidence::{self, Entry};
use crate::rows::{Classes, Rows, UNREADABLE};
use crate::BillError;

/// What the bill is made of.
#[derive(Debug)]
pub struct Bill {
    /// The statement's header.
    pub header: StatementHeader,
    /// The terms, if the statement carries readable ones.
    pub terms: Option<Terms>,
    /// Class names, indexed by [`Rows::class`].
    pub classes: Vec<String>,
    /// The table.
    pub rows: Rows,
    /// The newest checkpoint that verifies under both keys and that the statement reaches:
    /// its note and size. Proofs are against it.
    pub checkpoint: Option<(String, u64)>,
    /// The evidence, encoded (spec/BILL.md §4).
    pub evidence: Vec<u8>,
    /// How many records it carries evidence for.
    pub evidence_count: usize,
}

/// How many records carry evidence: `None` means all of them.
#[derive(Debug, Clone, Copy)]
pub struct BillOptions {
    /// The evidence cap ([`evidence::DEFAULT_CAP`] by default).
    pub evidence_cap: Option<usize>,
}

impl Default for BillOptions {
    fn default() -> Self {
        BillOptions {
            evidence_cap: Some(evidence::DEFAULT_CAP),
        }
    }
}

/// Reads the statement `reader` streams (a second pass: `report` is its audit).
pub fn read_bill<R: BufRead>(
    reader: StatementReader<R>,
    report: &AuditReport,
    opts: BillOptions,
) -> Result<Bill, BillError> {
    let header = reader.header().clone();
    let terms = header
        .terms
        .as_deref()
        .and_then(|t| Terms::parse(t.as_bytes()).ok());
    let discrepant: Vec<u64> = report
        .discrepancies
        .iter()
        .filter_map(|d| d.index)
        .collect();
    let cap = opts.evidence_cap.unwrap_or(usize::MAX);
    let chosen = evidence::select(report.records, cap, &discrepant);
    let mut classes = Classes::new(terms.as_ref());
    let mut rows = Rows::default();
    let mut tree = MemoryTree::new(Blake3Hasher);
    let mut entries: Vec<Entry> = Vec::with_capacity(chosen.len());
    let mut next_chosen = chosen.iter().peekable();
    reader.for_each_line(|index, line| {
        let (bytes, signature) = match line.ok().and_then(wire_record) {
            Some((bytes, sig)) => (bytes, sig),
            None => (line.map(<[u8]>::to_vec).unwrap_or_default(), [0; 64]),
        };
        match Record::from_bytes(&bytes) {
            Ok(record) => {
                let class = classes.of(&record);
                rows.push(&record, class);
            }
            Err(_) => rows.push_unreadable(classes.id(UNREADABLE)),
        }
        tree.push_hash(Blake3Hasher.leaf(&bytes));
        if next_chosen.next_if_eq(&&index).is_some() {
            entries.push(Entry {
                index,
                record: bytes,
                provider_signature: signature,
            });
        }
    })?;
    let classes = classes.names().to_vec();
    let checkpoint = newest_checkpoint(&header, tree.size());
    let evidence = evidence::encode(&entries, &tree, checkpoint.as_ref().map(|c| c.1))?;
    Ok(Bill {
        header,
        terms,
        classes,
        rows,
        checkpoint,
        evidence,
        evidence_count: entries.len(),
    })
}

/// A statement line's record bytes and provider signature, if it is a wire record with hex
/// that decodes (the bytes need not be a valid record: the page shows why not).
fn wire_record(line: &[u8]) -> Option<(Vec<u8>, [u8; 64])> {
    let wire: WireRecord = serde_json::from_slice(line).ok()?;
    let bytes = hex::decode(&wire.record).ok()?;
    Some((bytes, wire.provider_signature.0))
}

/// The newest checkpoint of the header that both parties signed and that covers no more
/// records than the statement has (proofs need the tree at its size).
fn newest_checkpoint(h: &StatementHeader, records: u64) -> Option<(String, u64)> {
    h.checkpoints.iter().rev().find_map(|c| {
        let signed = SignedCheckpoint::from_note(&c.note, &h.client_key, &h.provider_key, true);
        let size = signed.ok()?.checkpoint.size;
        (size <= records).then(|| (c.note.clone(), size))
    })
}
