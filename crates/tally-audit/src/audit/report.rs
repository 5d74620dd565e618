//! What the audit reports: totals and every discrepancy, each named with its record index.
//! The JSON shape is what `tally verify --json` prints.

use serde::Serialize;
use tally_core::Hash;

/// The most discrepancies listed one by one; beyond it they are only counted, so a
/// statement with millions of bad records is still audited in bounded memory.
pub const MAX_LISTED: usize = 10_000;

/// One thing found wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Discrepancy {
    /// The record it concerns, if it concerns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// A stable short name: `record`, `client_signature`, `provider_signature`, `sequence`
    /// (index, lane, seq), `cumulative`, `acknowledgement`, `price`, `terms`, `checkpoint`,
    /// `consistency`, `mirror`, `chain`.
    pub kind: &'static str,
    /// What is wrong, with the values involved.
    pub detail: String,
}

/// A discrepancy about record `index`.
pub(crate) fn at(index: u64, kind: &'static str, detail: String) -> Discrepancy {
    Discrepancy {
        index: Some(index),
        kind,
        detail,
    }
}

/// A discrepancy about the statement as a whole.
pub(crate) fn whole(kind: &'static str, detail: String) -> Discrepancy {
    Discrepancy {
        index: None,
        kind,
        detail,
    }
}

/// Discrepancies found so far: the first [`MAX_LISTED`] kept, all counted.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub listed: Vec<Discrepancy>,
    pub total: u64,
}

impl Findings {
    pub fn push(&mut self, d: Discrepancy) {
        self.total += 1;
        if self.listed.len() < MAX_LISTED {
            self.listed.push(d);
        }
    }

    pub fn extend(&mut self, ds: impl IntoIterator<Item = Discrepancy>) {
        for d in ds {
            self.push(d);
        }
    }
}

/// What the chain says about the channel, for the audit to compare.
#[derive(Clone, Debug, Serialize)]
pub struct OnchainView {
    /// Log size of the last claim.
    pub claimed_size: u64,
    /// Root of the last claim, hex.
    pub claimed_root: String,
    /// Total paid to the provider.
    pub claimed: String,
    /// Total deposited.
    pub deposit: String,
    /// Whether a client-signed checkpoint of the statement matches the claim.
    pub matches_checkpoint: bool,
}

/// What the records add up to, as recomputed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Records folded into the recomputed log (all of them, unless one did not decode).
    pub size: u64,
    /// The root at `size`.
    pub root: Hash,
    /// The cumulative at `size`.
    pub cumulative: u128,
    /// Sum of charges of every decoded record.
    pub charged: u128,
    /// Sum of credits (absolute) of every decoded record.
    pub credited: u128,
}

/// The audit's result.
#[derive(Clone, Debug, Serialize)]
pub struct AuditReport {
    /// The channel, hex.
    pub channel_id: String,
    /// Records in the statement.
    pub records: u64,
    /// Recomputed root over them, hex.
    pub root: String,
    /// Final cumulative net amount.
    pub cumulative: String,
    /// Sum of charges.
    pub charged: String,
    /// Sum of credits (absolute).
    pub credited: String,
    /// Checkpoints checked.
    pub checkpoints: usize,
    /// Lanes the records used.
    pub lanes: usize,
    /// Whether prices were checked against the terms.
    pub prices_checked: bool,
    /// The chain's view, if it was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onchain: Option<OnchainView>,
    /// The mirror size compared, if a mirror was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_size: Option<u64>,
    /// Everything found wrong, the first [`MAX_LISTED`]; empty means the bill verifies.
    pub discrepancies: Vec<Discrepancy>,
    /// How many discrepancies were found in all (may exceed the list).
    pub discrepancy_count: u64,
    /// The recomputed values as numbers (the string fields above are their JSON form).
    #[serde(skip)]
    pub totals: Totals,
    /// Wall time of the audit, seconds.
    pub seconds: f64,
    /// Records audited per second.
    pub records_per_second: f64,
}

impl AuditReport {
    /// Whether nothing was found wrong.
    pub fn ok(&self) -> bool {
        self.discrepancy_count == 0
    }

    /// The discrepancies about record `index`.
    pub fn about(&self, index: u64) -> impl Iterator<Item = &Discrepancy> {
        self.discrepancies
            .iter()
            .filter(move |d| d.index == Some(index))
    }

    /// The human form: totals, then each discrepancy (the first 50, then a count).
    pub fn render(&self) -> String {
        let mut s = format!(
            "channel     {}\nrecords     {}\nlanes       {}\nroot        {}\ncharged     {}\ncredited    {}\nnet total   {}\ncheckpoints {}\n",
            self.channel_id, self.records, self.lanes, self.root, self.charged, self.credited, self.cumulative, self.checkpoints
        );
        if let Some(o) = &self.onchain {
            s += &format!(
                "onchain     claimed {} of deposit {} at size {} ({})\n",
                o.claimed,
                o.deposit,
                o.claimed_size,
                if o.matches_checkpoint {
                    "matches a checkpoint the client signed"
                } else {
                    "no matching client-signed checkpoint"
                }
            );
        }
        if let Some(m) = self.mirror_size {
            s += &format!("mirror      compared at size {m}\n");
        }
        s += &format!(
            "audited in {:.2} s ({:.0} records/s)\n",
            self.seconds, self.records_per_second
        );
        if self.ok() {
            s += "VERIFIED: no discrepancies\n";
            return s;
        }
        s += &format!("FAILED: {} discrepancies\n", self.discrepancy_count);
        for d in self.discrepancies.iter().take(50) {
            match d.index {
                Some(i) => s += &format!("  record {i}: [{}] {}\n", d.kind, d.detail),
                None => s += &format!("  [{}] {}\n", d.kind, d.detail),
            }
        }
        let shown = self.discrepancies.len().min(50) as u64;
        if self.discrepancy_count > shown {
            s += &format!("  … and {} more\n", self.discrepancy_count - shown);
        }
        s
    }
}
