//! tally-http: the HTTP binding of the tally protocol (spec/HTTP.md), shared by the gateway
//! (tally-server) and the client SDK (tally-client) so both sides parse and render exactly
//! the same bytes.
//!
//! It holds header names and their base64-JSON payloads (x402 v2 `PAYMENT-REQUIRED`,
//! `PAYMENT-SIGNATURE`, `PAYMENT-RESPONSE`), the terms document and its hash, the error
//! reasons and the JSON bodies of every endpoint.
//!
//! It must never do I/O, never define a signed byte (those are tally-core's, PROTOCOL.md),
//! and never hash a map or a float: the terms hash is over the exact bytes served.

pub mod amount;
pub mod api;
pub mod error;
pub mod headers;
pub mod meter;
pub mod path;
pub mod payment;
pub mod read_auth;
pub mod reason;
pub mod stream;
pub mod terms;
pub mod usage;
pub mod x402;

pub use amount::Amount;
pub use error::WireError;
pub use meter::{Meter, MeteredPrice, UnitSource};
pub use payment::{
    PaymentPayload, PaymentRequired, PaymentResponse, SessionBinding, WireCheckpoint, WireReceipt,
    WireRecord,
};
pub use read_auth::{ReadAuthError, ReadToken};
pub use reason::{ErrorBody, Reason};
pub use terms::{price_increases, Price, RoutePrice, Terms, TermsIncrease, Unmatched};

/// The `format` of proof bundles (re-exported so clients need not name tally-core's module).
pub fn bundle_format() -> &'static str {
    tally_core::bundle::BUNDLE_FORMAT
}
