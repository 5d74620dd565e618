//! Errors of the log: storage failures and proof-check failures are kept apart, because a
//! verifier has no storage and a store failure is never a verdict on a proof.

use tally_core::ChannelId;
use thiserror::Error;

/// Why a proof was refused (RFC 9162 §2.1.3.2 and §2.1.4.2).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The claimed index.
        index: u64,
        /// The claimed tree size.
        size: u64,
    },
    /// The old size is larger than the new size.
    #[error("old size {old} is larger than new size {new}")]
    SizeOrder {
        /// The older tree size.
        old: u64,
        /// The newer tree size.
        new: u64,
    },
    /// A consistency proof from the empty tree proves nothing, so none is accepted.
    #[error("a consistency proof from the empty tree is meaningless")]
    FromEmptyTree,
    /// The proof does not have the exact length the sizes determine.
    #[error("proof has {got} hashes, expected exactly {expected}")]
    WrongLength {
        /// The length the sizes determine.
        expected: usize,
        /// The length supplied.
        got: usize,
    },
    /// The proof recomputes a different root.
    #[error("proof does not lead to the claimed root")]
    RootMismatch,
    /// For a consistency proof, the recomputed old root differs.
    #[error("proof does not lead to the claimed old root")]
    OldRootMismatch,
}

/// A failure of the store or of reading it.
#[derive(Debug, Error)]
pub enum LogError {
    /// sled reported an I/O or corruption error.
    #[error("storage error: {0}")]
    Storage(#[from] sled::Error),
    /// The store's contents contradict themselves.
    #[error("log of channel {channel} is corrupt: {detail}")]
    Corrupt {
        /// The channel whose log is damaged.
        channel: ChannelId,
        /// What was found.
        detail: String,
    },
    /// Records built for one position reached the writer when the log had another size
    /// ([`crate::LogStore::append_keyed`]); nothing was written.
    #[error("records built for index {expected} but the log has size {size}")]
    WrongPosition {
        /// The index the first record was built for.
        expected: u64,
        /// The log's size.
        size: u64,
    },
    /// A read past the end of a channel's log.
    #[error("index {index} is not below log size {size}")]
    OutOfRange {
        /// The requested index or size.
        index: u64,
        /// The log's size.
        size: u64,
    },
    /// Requested sizes are out of order or exceed the log.
    #[error("invalid sizes {old} and {new} for a log of size {size}")]
    BadSizes {
        /// The older size.
        old: u64,
        /// The newer size.
        new: u64,
        /// The log's size.
        size: u64,
    },
    /// The append queue is full: back-pressure, retry shortly.
    #[error("the log writer is busy; retry")]
    Busy,
    /// The writer thread is gone (the store is shutting down or it failed to start).
    #[error("the log writer has stopped")]
    WriterStopped,
    /// A checkpoint's root is not the log's root at its size.
    #[error("checkpoint of channel {channel} at size {size} does not match the log's root")]
    CheckpointMismatch {
        /// The channel.
        channel: ChannelId,
        /// The checkpoint's size.
        size: u64,
    },
    /// The store was written with another hasher or layout.
    #[error("store format is {found:?}, expected {expected:?}")]
    Format {
        /// What the store says it is.
        found: String,
        /// What this build writes.
        expected: String,
    },
    /// A failed group commit: nothing of this append is durable, and it may be retried.
    #[error("group commit failed, nothing was written: {0}")]
    CommitFailed(String),
}
