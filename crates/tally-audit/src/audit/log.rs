//! The sequential stage: records folded in index order into a [`Sequence`] (R5, R7, R8:
//! spec/PROTOCOL.md §5.3) and a Merkle [`Frontier`], in bounded memory — the last
//! `ACK_WINDOW + 1` states, one position per lane (at most `MAX_LANES`) and O(log n) hashes.

use tally_core::hash::TreeHasher;
use tally_core::record::apply_amount;
use tally_core::sequence::{LogState, SequenceError, MAX_LANES};
use tally_core::{Record, Sequence};
use tally_log::{Blake3Hasher, Frontier};

use super::report::{at, Discrepancy, Findings};
use super::signatures::Placed;

/// How an acknowledgement of a state the log never had ends its detail.
const NEVER_HAD: &str = ", which the log never had";

/// The log recomputed so far.
pub(crate) struct LogFold {
    sequence: Sequence,
    frontier: Frontier,
    /// The first record that did not decode: the log cannot be recomputed past it.
    pub broken_at: Option<u64>,
    pub charged: u128,
    pub credited: u128,
    /// The first acknowledgement of a root the log never had (its place in the listed
    /// discrepancies, if listed), and how many later ones followed: one altered leaf changes
    /// every later root, so the rest are counted, not listed one by one.
    ack_break: Option<(Option<usize>, u64)>,
}

impl LogFold {
    pub fn new() -> Self {
        LogFold {
            sequence: Sequence::new(Blake3Hasher.empty()),
            frontier: Frontier::default(),
            broken_at: None,
            charged: 0,
            credited: 0,
            ack_break: None,
        }
    }

    /// The recomputed state (size, root, cumulative after the last folded record).
    pub fn head(&self) -> LogState {
        self.sequence.head()
    }

    /// The number of lanes seen.
    pub fn lanes(&self) -> usize {
        self.sequence.lanes().iter().count()
    }

    /// Folds record `index` (or notes that it did not decode). Returns the new state when
    /// the record entered the recomputed log.
    pub fn push(
        &mut self,
        index: u64,
        item: Option<&Placed>,
        found: &mut Findings,
    ) -> Option<LogState> {
        if self.broken_at.is_some() {
            if let Some((r, _)) = item {
                self.add_amount(r.outcome.amount);
            }
            return None;
        }
        let Some((record, leaf)) = item else {
            self.broken_at = Some(index);
            found.push(at(
                index,
                "record",
                "the log cannot be recomputed past an undecodable record; later records are checked on their own only".into(),
            ));
            return None;
        };
        let mut here = Vec::new();
        check_place(&self.sequence, index, record, &mut here);
        for d in here {
            self.report(d, found);
        }
        self.add_amount(record.outcome.amount);
        self.frontier.push(&Blake3Hasher, *leaf);
        let root = self.frontier.root(&Blake3Hasher);
        // The stated cumulative carries on: one wrong cumulative is one discrepancy, not one
        // per later record.
        self.sequence.push(record, root);
        Some(self.sequence.head())
    }

    /// Lists a discrepancy, folding acknowledgements of roots the log never had after the
    /// first into its count.
    fn report(&mut self, d: Discrepancy, found: &mut Findings) {
        if d.kind == "acknowledgement" && d.detail.ends_with(NEVER_HAD) {
            match &mut self.ack_break {
                Some((_, later)) => {
                    *later += 1;
                    return;
                }
                None => {
                    let listed = (found.listed.len() < super::report::MAX_LISTED)
                        .then_some(found.listed.len());
                    self.ack_break = Some((listed, 0));
                }
            }
        }
        found.push(d);
    }

    /// Says how many later acknowledgements differ too, on the first one.
    pub fn finish(&self, found: &mut Findings) {
        if let Some((Some(at), later)) = self.ack_break {
            if later > 0 {
                if let Some(d) = found.listed.get_mut(at) {
                    d.detail += &format!(
                        "; {later} later records acknowledge states that differ from the recomputed log too (one altered record changes every later root)"
                    );
                }
            }
        }
    }

    fn add_amount(&mut self, amount: i128) {
        if amount >= 0 {
            self.charged = self.charged.saturating_add(amount.unsigned_abs());
        } else {
            self.credited = self.credited.saturating_add(amount.unsigned_abs());
        }
    }
}

/// Runs the sequence rules on `record` and reports every rule it breaks, not only the
/// first: [`Sequence::check_next`] stops at the first, so the field it names is corrected
/// in a probe copy and the rules run again.
fn check_place(seq: &Sequence, index: u64, record: &Record, found: &mut Vec<Discrepancy>) {
    let mut probe = *record;
    for _ in 0..4 {
        let Err(e) = seq.check_next(&probe) else {
            return;
        };
        found.push(describe(index, &e, &probe));
        let fixed = match e {
            SequenceError::WrongIndex { position, .. } => {
                probe.outcome.index = position;
                true
            }
            SequenceError::WrongCumulative {
                previous, amount, ..
            } => match apply_amount(previous, amount) {
                Some(c) => {
                    probe.outcome.cumulative = c;
                    true
                }
                None => false,
            },
            _ => false,
        };
        if fixed {
            continue;
        }
        if matches!(
            e,
            SequenceError::WrongCumulative { .. }
                | SequenceError::AckOutOfWindow { .. }
                | SequenceError::AckMismatch { .. }
        ) {
            // The lane rules come after the acknowledgement's in check_next.
            if let Err(e) = seq.lanes().check(&probe.authorization, MAX_LANES) {
                found.push(describe(index, &e, &probe));
            }
        }
        return;
    }
}

/// A sequence error as a discrepancy.
fn describe(index: u64, e: &SequenceError, r: &Record) -> Discrepancy {
    let a = &r.authorization;
    match e {
        SequenceError::WrongIndex { .. }
        | SequenceError::SeqGap { .. }
        | SequenceError::LaneOutOfRange { .. } => at(index, "sequence", e.to_string()),
        SequenceError::WrongCumulative { .. } => at(index, "cumulative", e.to_string()),
        SequenceError::AckMismatch { size } => at(
            index,
            "acknowledgement",
            format!(
                "acknowledges root {} and cumulative {} at size {size}{NEVER_HAD}",
                a.ack_root.to_hex(),
                a.ack_cumulative
            ),
        ),
        SequenceError::AckBackwards { .. } | SequenceError::AckOutOfWindow { .. } => {
            at(index, "acknowledgement", e.to_string())
        }
    }
}
