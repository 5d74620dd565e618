//! tally-bill: the bill people look at. A statement and its audit become one self-contained
//! HTML file (spec/BILL.md): the audit's verdict, usage over time, a table of every record
//! with filters, and, for the records it carries evidence for, a proof that the page checks
//! itself — BLAKE3, SHA-256 and ed25519 run in the browser from a bundled, pinned library,
//! following the proof-bundle rules of spec/PROTOCOL.md §7.3. A changed byte turns the
//! record red, whoever changed it.
//!
//! - [`read`]: the statement, read once into columns, a Merkle tree and evidence;
//! - [`rows`]: the table's columns and what each row is (its class);
//! - [`evidence`]: which records carry proofs, and their encoding;
//! - [`summary`]: usage over time and breakdowns, as SVG (tally-chart);
//! - [`verdict`]: the audit report as HTML;
//! - [`page`]: the file itself.
//!
//! This crate must never fetch anything, at build time of a bill or in the page (no network,
//! no CDN: everything is inline), never decide a verdict itself (the verdict is
//! `tally_audit::audit`'s; the page only re-checks records), and never write a value into
//! the page unescaped.

pub mod evidence;
pub mod page;
pub mod read;
pub mod rows;
pub mod summary;
pub mod verdict;

pub use page::write_page;
pub use read::{read_bill, Bill, BillOptions};

use thiserror::Error;

/// Why a bill could not be written.
#[derive(Debug, Error)]
pub enum BillError {
    /// The statement could not be read.
    #[error(transparent)]
    Statement(#[from] tally_audit::StatementError),
    /// A proof could not be built (the tree is shorter than a checkpoint says).
    #[error("building a proof: {0}")]
    Proof(#[from] tally_log::LogError),
    /// The statement read for the page is not the one the audit read (it changed in
    /// between, or is a stream that cannot be read twice).
    #[error("the statement changed between the audit and the bill; write the bill from a file that stays put")]
    Changed,
    /// Writing the page failed.
    #[error("writing the bill: {0}")]
    Io(#[from] std::io::Error),
}
