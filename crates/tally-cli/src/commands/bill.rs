//! `tally bill` and `tally verify --html`: the audited statement written as one HTML page
//! ([`tally_bill`], spec/BILL.md). The statement is read a second time, after the audit,
//! since the page carries the audit's verdict and proofs of the discrepant records.

use std::io::{BufWriter, Write};
use std::path::Path;

use tally_audit::{AuditReport, Statement, StatementReader};
use tally_bill::{evidence::DEFAULT_CAP, read_bill, write_page, BillError, BillOptions};

use crate::cli::Evidence;
use crate::error::{CliError, Result};

/// Where the audited statement is, to be read again.
pub enum Audited<'a> {
    /// A statement file.
    File(&'a Path),
    /// A statement fetched from the provider.
    Fetched(&'a Statement),
}

/// Writes the bill of the audited statement to `out_path`; returns the number of records
/// it carries proofs for. `client_key_pinned`: the statement's client key was checked
/// against the client's profile.
pub fn write(
    out_path: &Path,
    source: Audited<'_>,
    report: &AuditReport,
    evidence: Option<Evidence>,
    client_key_pinned: bool,
) -> Result<usize> {
    let opts = BillOptions {
        evidence_cap: match evidence {
            None => Some(DEFAULT_CAP),
            Some(Evidence::All) => None,
            Some(Evidence::AtMost(n)) => Some(n),
        },
        client_key_pinned,
    };
    let bill = match source {
        Audited::File(p) => read_bill(StatementReader::open(p)?, report, opts),
        Audited::Fetched(s) => read_bill(s.reader(), report, opts),
    }
    .map_err(bill_error)?;
    let io = |source| CliError::Io {
        path: out_path.display().to_string(),
        source,
    };
    let file = std::fs::File::create(out_path).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    write_page(&bill, report, &mut w).map_err(bill_error)?;
    w.flush().map_err(io)?;
    Ok(bill.evidence_count)
}

fn bill_error(e: BillError) -> CliError {
    match e {
        BillError::Statement(s) => s.into(),
        other => CliError::Usage(other.to_string()),
    }
}
