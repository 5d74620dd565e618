//! tally-cli: the `tally` command line — what providers, clients and dispute tooling run —
//! and `tally demo`, the whole protocol end to end on one machine.
//!
//! The library holds everything; the binary (`main.rs`) only parses arguments, calls
//! [`commands::run`] and turns a [`CliError`] into a message and an exit code (0 ok,
//! 1 verification failed, 2 usage or I/O error). All protocol logic is the other crates':
//! tally-core's messages, tally-log's proofs and fsck, tally-chain's contract client and
//! settlement worker, tally-server's gateway, tally-client's paying client and mirror,
//! tally-audit's bill audit. This crate only wires them together and renders their results.
//!
//! What it must never do: print or log a secret key, write a key file readable by group or
//! others (or read one), report success for a check that did not run, or bind anything but
//! the address the user configured (the demo binds 127.0.0.1 only).

pub mod chain;
pub mod cli;
pub mod commands;
pub mod demo;
pub mod error;
pub mod gateway;
pub mod keys;
pub mod mock_llm;
pub mod output;
pub mod profile;
pub mod proof;
pub mod statement;
pub mod upstream;

pub use error::{CliError, EXIT_OK, EXIT_USAGE, EXIT_VERIFY};
