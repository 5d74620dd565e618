//! tally-audit: the bill audit. A provider's statement for one channel (its log of records,
//! the terms and the cosigned checkpoints) is checked with public keys only, against every
//! rule of spec/PROTOCOL.md §5–§6 and each charge against the terms, and optionally against
//! the client's mirror head and the chain's claimed state. `tally verify` renders its
//! report; the client SDK audits fetched logs with the same engine. There is one audit.
//!
//! - [`statement`]: the statement file (`tally-statement/v2`, JSON Lines), read and written
//!   as a stream;
//! - [`audit()`]: the engine, which streams the statement in chunks, batch-verifies
//!   signatures on all cores and folds each record into a [`tally_core::Sequence`] and a
//!   Merkle frontier, so its memory is bounded whatever the statement's length.
//!
//! This crate must never touch the network or read a clock for a decision (the report's
//! wall time is informational only): an audit's verdict depends on the statement and the
//! context given, nothing else. It must never hold a whole statement in memory, never stop
//! at the first discrepancy, and never compute a charge other than with
//! `tally_http::Price::charge_for`.

pub mod audit;
pub mod statement;

pub use audit::{audit, AuditContext, AuditReport, Discrepancy, OnchainView, Totals, CHUNK};
pub use statement::{
    Statement, StatementError, StatementHeader, StatementReader, StatementWriter, STATEMENT_FORMAT,
};
