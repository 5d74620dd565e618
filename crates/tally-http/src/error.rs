//! Why a header payload or a JSON document could not be read.

use thiserror::Error;

/// A wire payload that is not what spec/HTTP.md allows. The gateway maps every variant to
/// the `malformed` or `payload_too_large` reason.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A header value is longer than [`crate::headers::MAX_HEADER_BYTES`].
    #[error("{header} is {len} bytes, above the {limit}-byte limit")]
    TooLarge {
        /// Which header.
        header: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// Not base64, not JSON, or JSON of the wrong shape.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// A field holds bytes that tally-core refuses (bad encoding or version).
    #[error("{what}: {source}")]
    Message {
        /// Which field.
        what: &'static str,
        /// tally-core's verdict.
        source: tally_core::Error,
    },
}
