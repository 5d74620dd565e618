//! tally-log: the append-only Merkle log of each payment channel.
//!
//! The tree is RFC 6962's (RFC 9162 §2.1), generic over a [`TreeHasher`]: BLAKE3 for tally,
//! SHA-256 to check against the RFC's published vectors. Following Go's sumdb/tlog, the store
//! keeps every record and the hash of every complete subtree; those hashes never change, so
//! the root or any proof at any historical size costs O(log n) reads with no versioning.
//!
//! - [`tree`]: subtree arithmetic, the right-edge [`tree::Frontier`] and an in-memory tree;
//! - [`proof`]: inclusion and consistency proofs, each generator paired with its checker;
//! - [`store`]: the sled store with a single group-committing writer, and `fsck`;
//! - [`bundle`]: the checks behind a proof bundle;
//! - [`backend`]: the interface every log backend (this sled store, the PostgreSQL store of
//!   spec/CLUSTER.md) implements, and, with the `conformance` feature, the one suite they all
//!   pass;
//! - [`bindings`]: the interface, value shapes and rules of the gateway's side state (session
//!   bindings, credit and close marks, promise marks, restores, terms), which the gateway's
//!   sled database and the PostgreSQL store both implement, with its own conformance suite.
//!
//! This crate must never report an append as durable before `flush()` has returned for the
//! batch holding it, and must never rewrite a stored hash.

pub mod backend;
pub mod bindings;
#[cfg(any(test, feature = "conformance"))]
pub mod bindings_conformance;
pub mod bundle;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod edge;
pub mod error;
pub mod proof;
pub mod store;
mod tile_cache;
pub mod tree;

pub use backend::{ErrorKind, LogBackend};
pub use bindings::{BindingsBackend, BindingsErrorKind, CloseMark, CreditMark, RuleError};
pub use edge::frontier_at;
pub use error::{LogError, ProofError};
pub use proof::{consistency_proof, inclusion_proof, verify_consistency, verify_inclusion};
pub use store::{FsckReport, Head, LogStore, Pending, StoreConfig, Ticket};
pub use tally_core::hash::{Blake3Hasher, Hash, Sha256Hasher, TreeHasher};
pub use tree::{Frontier, HashReader, MemoryTree};
