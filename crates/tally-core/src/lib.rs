//! tally-core: the signed vocabulary of tally.
//!
//! This crate defines every message that two parties sign or hash — authorizations,
//! outcomes (receipts), records (Merkle leaves), checkpoints and proof bundles — together
//! with their one canonical byte encoding (spec/PROTOCOL.md §2), the BLAKE3 hashes over them
//! (§3) and strict ed25519 signatures (§4).
//!
//! It must never do I/O, never read a clock or a random source on its own (callers pass
//! times and keys in), and never accept an encoding that does not re-encode to the same
//! bytes: a signature is only as good as the uniqueness of the bytes under it.

pub mod authorization;
pub mod bundle;
pub mod checkpoint;
pub mod encoding;
pub mod error;
pub mod hash;
pub mod keys;
pub mod outcome;
pub mod read;
pub mod record;
pub mod request;
pub mod restore;
pub mod sequence;
pub mod signature;

pub use authorization::Authorization;
pub use bundle::ProofBundle;
pub use checkpoint::{Checkpoint, SignedCheckpoint};
pub use error::Error;
pub use hash::{ChannelId, Hash};
pub use keys::{PublicKey, SecretKey};
pub use outcome::{Outcome, Receipt, Units, METERS, ONE_CALL};
pub use record::Record;
pub use request::{BodyHasher, RequestSalt};
pub use restore::Restore;
pub use sequence::{check_position, Lanes, LogState, Sequence, SequenceError};
pub use signature::Signature;

/// The protocol version carried as the first byte of every signed message body
/// (spec/PROTOCOL.md §2.2). A decoder rejects any other value.
pub const VERSION: u8 = 2;
