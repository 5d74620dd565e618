//! tally-client: the client SDK of tally (DESIGN.md §3, spec/HTTP.md).
//!
//! [`Client`] pays for each request transparently (`client.get(url).send().await`),
//! verifies every receipt against its own request, the body it received and its own mirror
//! of the channel's log (a sled file of its own), signs checkpoints when asked, agrees a
//! cooperative close at its verified head ([`Client::close`]), resumes after its own or the
//! provider's crash, and stops with a precise [`Misbehavior`] when the provider cheats.
//! [`verify_statement`] audits a bill offline.
//!
//! What it must never do: authorize more than the terms' maximum for a call, sign an
//! authorization that acknowledges a state it has not verified, keep paying a provider
//! caught misbehaving, or write key material anywhere.

pub mod client;
pub mod discovery;
pub mod error;
mod lanes;
pub mod mirror;
pub mod receipt;
pub mod relay;
pub mod statement;
mod terms_guard;

pub use client::{
    ClaimAnswer, Client, ClientConfig, CosignedCredit, PaidResponse, PaidStream, Quiet,
    RequestBuilder, StreamPaid,
};
pub use error::{ClientError, Misbehavior};
pub use statement::{verify_statement, Statement, StatementError};
