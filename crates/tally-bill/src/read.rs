//! Reading a statement into what a bill shows: the rows, the Merkle tree of the records as
//! the statement gives them, and the evidence of the chosen records. The statement is read
//! once, line by line; what is kept is a few dozen bytes per record (the columns and the
//! tree's hashes) plus the chosen records' bytes.

use std::io::BufRead;

use tally_audit::{AuditReport, StatementHeader, StatementReader};
use tally_core::encoding::Canonical;
use tally_core::{Record, SignedCheckpoint};
use tally_http::Terms;
use tally_log::{Blake3Hasher, Hash, MemoryTree, TreeHasher};

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
    /// See [`BillOptions::client_key_pinned`].
    pub client_key_pinned: bool,
}

/// How the bill is made.
#[derive(Debug, Clone, Copy)]
pub struct BillOptions {
    /// How many records carry evidence ([`evidence::DEFAULT_CAP`] by default; `None`: all).
    pub evidence_cap: Option<usize>,
    /// Whether the statement's client key was checked against the client's own profile.
    /// Without that, the keys are the ones the provider wrote, and the page says so.
    pub client_key_pinned: bool,
}

impl Default for BillOptions {
    fn default() -> Self {
        BillOptions {
            evidence_cap: Some(evidence::DEFAULT_CAP),
            client_key_pinned: false,
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
    let mut build = Builder {
        classes: Classes::new(terms.as_ref()),
        rows: Rows::default(),
        tree: MemoryTree::new(Blake3Hasher),
        entries: Vec::with_capacity(chosen.len()),
        chosen,
        next: 0,
    };
    let mut batch: Vec<Option<Vec<u8>>> = Vec::with_capacity(BATCH);
    let mut first = 0u64;
    reader.for_each_line(|_, line| {
        batch.push(line.ok().map(<[u8]>::to_vec));
        if batch.len() == BATCH {
            build.apply(first, parse_all(&batch));
            first += BATCH as u64;
            batch.clear();
        }
    })?;
    build.apply(first, parse_all(&batch));
    let Builder {
        classes,
        rows,
        tree,
        entries,
        ..
    } = build;
    // The audit read the same statement first; a file changed in between (or a pipe read
    // twice) would pair its verdict with other bytes.
    let changed =
        rows.len() as u64 != report.records || (report.ok() && tree.root().to_hex() != report.root);
    if changed {
        return Err(BillError::Changed);
    }
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
        client_key_pinned: opts.client_key_pinned,
    })
}

/// Lines parsed at once, on all cores.
const BATCH: usize = 4096;

/// A record's length, prefix included (spec/PROTOCOL.md §5.3).
const RECORD_LEN: usize = 448;

/// One statement line, parsed: the part of reading that runs on all cores.
struct Parsed {
    bytes: Vec<u8>,
    signature: [u8; 64],
    record: Option<Record>,
    leaf: Hash,
}

fn parse(line: &Option<Vec<u8>>) -> Parsed {
    let (bytes, signature) = match line.as_deref().and_then(wire_record) {
        Some(wire) => wire,
        // Not a record: keep no more than a record's length, enough to show why.
        None => {
            let mut raw = line.clone().unwrap_or_default();
            raw.truncate(RECORD_LEN);
            (raw, [0; 64])
        }
    };
    Parsed {
        record: Record::from_bytes(&bytes).ok(),
        leaf: Blake3Hasher.leaf(&bytes),
        bytes,
        signature,
    }
}

/// Parses a batch of lines, split over the machine's cores, in order.
fn parse_all(batch: &[Option<Vec<u8>>]) -> Vec<Parsed> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = batch.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = batch
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(parse).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// What the lines are folded into, in log order.
struct Builder<'t> {
    classes: Classes<'t>,
    rows: Rows,
    tree: MemoryTree<Blake3Hasher>,
    entries: Vec<Entry>,
    chosen: Vec<u64>,
    next: usize,
}

impl Builder<'_> {
    /// Folds the parsed lines of records `first..`.
    fn apply(&mut self, first: u64, parsed: Vec<Parsed>) {
        for (k, p) in parsed.into_iter().enumerate() {
            let index = first + k as u64;
            match &p.record {
                Some(record) => {
                    let class = self.classes.of(record);
                    self.rows.push(record, class);
                }
                None => {
                    let class = self.classes.id(UNREADABLE);
                    self.rows.push_unreadable(class);
                }
            }
            self.tree.push_hash(p.leaf);
            if self.chosen.get(self.next) == Some(&index) {
                self.next += 1;
                self.entries.push(Entry {
                    index,
                    record: p.bytes,
                    provider_signature: p.signature,
                });
            }
        }
    }
}

/// A statement line's record bytes and provider signature, if it is a wire record with hex
/// that decodes (the bytes need not be a valid record: the page shows why not). The line is
/// read borrowed: a bill reads a million of them.
fn wire_record(line: &[u8]) -> Option<(Vec<u8>, [u8; 64])> {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        record: &'a str,
        #[serde(borrow)]
        provider_signature: &'a str,
    }
    let wire: Line<'_> = serde_json::from_slice(line).ok()?;
    if wire.record.len() != 2 * RECORD_LEN {
        return None;
    }
    let mut bytes = vec![0; RECORD_LEN];
    hex::decode_to_slice(wire.record, &mut bytes).ok()?;
    let mut signature = [0; 64];
    hex::decode_to_slice(wire.provider_signature, &mut signature).ok()?;
    Some((bytes, signature))
}

/// The largest checkpoint of the header that is for its channel, that both parties signed,
/// and that covers no more records than the statement has (proofs need the tree at its
/// size). The header's order is the provider's word, so the size decides.
fn newest_checkpoint(h: &StatementHeader, records: u64) -> Option<(String, u64)> {
    h.checkpoints
        .iter()
        .filter_map(|c| {
            let signed =
                SignedCheckpoint::from_note(&c.note, &h.client_key, &h.provider_key, true).ok()?;
            let cp = signed.checkpoint;
            (cp.channel_id == h.channel_id && cp.size <= records).then(|| (c.note.clone(), cp.size))
        })
        .max_by_key(|c| c.1)
}
