//! The one error type of tally-core. Every decoder and verifier returns it; none panics.

use thiserror::Error;

/// What went wrong while decoding or verifying a tally message.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// The bytes do not start with the domain-separation prefix of the expected message type
    /// (spec/PROTOCOL.md §2.1).
    #[error("wrong domain prefix: expected {expected}")]
    WrongDomain {
        /// The message type whose prefix was expected.
        expected: &'static str,
    },
    /// bincode could not decode the body: truncated, trailing bytes, or an invalid value.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// The message type being decoded.
        what: &'static str,
        /// What the decoder reported.
        reason: String,
    },
    /// The body decoded but does not re-encode to the same bytes (spec/PROTOCOL.md §2.3).
    #[error("non-canonical encoding of {0}")]
    NonCanonical(&'static str),
    /// The version byte is not [`crate::VERSION`].
    #[error("unsupported version {found} (this implementation speaks {expected})")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// The version this implementation supports.
        expected: u8,
    },
    /// A public key is not a valid, non-weak ed25519 point.
    #[error("invalid public key")]
    InvalidPublicKey,
    /// A signature failed strict verification.
    #[error("invalid signature")]
    InvalidSignature,
    /// In a batch, the signature at this position (0-based) is the first that fails.
    #[error("invalid signature at batch position {0}")]
    InvalidSignatureAt(usize),
    /// Hex or base64 text could not be decoded into the expected number of bytes.
    #[error("bad {what} text encoding: {reason}")]
    BadText {
        /// The field being parsed.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A checkpoint note is not in the C2SP form spec/PROTOCOL.md §6 requires.
    #[error("malformed checkpoint note: {0}")]
    MalformedNote(String),
    /// A checkpoint note lacks a valid signature from a required key.
    #[error("checkpoint note has no valid signature by {0}")]
    MissingNoteSignature(&'static str),
    /// Two fields that must agree do not (for example the channel of an outcome and of its
    /// authorization).
    #[error("inconsistent {0}")]
    Inconsistent(String),
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
