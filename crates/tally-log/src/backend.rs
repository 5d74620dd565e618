//! One interface over the log's backends: the sled [`LogStore`] (one node) and the
//! PostgreSQL store of cluster mode (spec/CLUSTER.md §2, §4, §5, crate `tally-store-pg`).
//!
//! Both must answer every call alike, because a client checks what either one serves against
//! the same roots and proofs (spec/PROTOCOL.md §3): the same records give the same roots,
//! proofs and refusals. The one conformance suite ([`crate::conformance`], feature
//! `conformance`) runs against each backend to hold them to it (CLUSTER.md §11).
//!
//! The trait covers the log (BLAKE3 trees, PROTOCOL.md §3.2), not the lease: a PostgreSQL
//! backend is a node's view under one lease, and its writes are fenced by it (CLUSTER.md §4).

use std::future::Future;
use std::ops::Range;

use tally_core::hash::{Blake3Hasher, Hash};
use tally_core::ChannelId;

use crate::error::LogError;
use crate::store::{Head, LogStore};

/// What a backend's refusal means, whatever the backend: the suite checks that both refuse
/// the same calls for the same reason. Storage failures and backend-only refusals (a fenced
/// PostgreSQL node) are [`ErrorKind::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// An index or size beyond the log's head.
    OutOfRange,
    /// Proof sizes out of order, zero, or beyond the head.
    BadSizes,
    /// Records built for one position, the log at another: nothing was written.
    WrongPosition,
    /// A checkpoint whose root is not the log's root at its size.
    CheckpointMismatch,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The kind of a [`LogError`].
    pub fn of(error: &LogError) -> ErrorKind {
        match error {
            LogError::OutOfRange { .. } => ErrorKind::OutOfRange,
            LogError::BadSizes { .. } => ErrorKind::BadSizes,
            LogError::WrongPosition { .. } => ErrorKind::WrongPosition,
            LogError::CheckpointMismatch { .. } => ErrorKind::CheckpointMismatch,
            _ => ErrorKind::Other,
        }
    }
}

/// A channel log store: appends at a stated position, the durable head, roots and proofs at
/// any size up to it, signed checkpoints checked against the log, and the keyed lane index.
///
/// Every method has the sled [`LogStore`]'s semantics (its docs say them once); the futures
/// are `Send` so a server can hold a backend in spawned tasks.
pub trait LogBackend {
    /// The backend's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// What `error` means to a caller of either backend.
    fn kind(error: &Self::Error) -> ErrorKind;

    /// Appends `records` at `start..` once durable ([`LogStore::append_at`]).
    fn append(
        &self,
        channel: &ChannelId,
        start: u64,
        records: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<Range<u64>, Self::Error>> + Send;

    /// Appends keyed records at `start..` ([`LogStore::append_keyed`]).
    fn append_keyed(
        &self,
        channel: &ChannelId,
        start: u64,
        records: Vec<(u32, Vec<u8>)>,
    ) -> impl Future<Output = Result<Range<u64>, Self::Error>> + Send;

    /// The durable head (size and root), `None` for a channel without records.
    fn head(
        &self,
        channel: &ChannelId,
    ) -> impl Future<Output = Result<Option<Head>, Self::Error>> + Send;

    /// The root at `size` ≤ head ([`LogStore::root_at`]).
    fn root_at(
        &self,
        channel: &ChannelId,
        size: u64,
    ) -> impl Future<Output = Result<Hash, Self::Error>> + Send;

    /// The record at `index` < head.
    fn record(
        &self,
        channel: &ChannelId,
        index: u64,
    ) -> impl Future<Output = Result<Vec<u8>, Self::Error>> + Send;

    /// The records in `range`, clamped to the head.
    fn records(
        &self,
        channel: &ChannelId,
        range: Range<u64>,
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, Self::Error>> + Send;

    /// The inclusion proof of `index` in the tree of `size` ≤ head (RFC 9162 §2.1.3).
    fn inclusion_proof(
        &self,
        channel: &ChannelId,
        index: u64,
        size: u64,
    ) -> impl Future<Output = Result<Vec<Hash>, Self::Error>> + Send;

    /// The consistency proof between `old` and `new` ≤ head (RFC 9162 §2.1.4).
    fn consistency_proof(
        &self,
        channel: &ChannelId,
        old: u64,
        new: u64,
    ) -> impl Future<Output = Result<Vec<Hash>, Self::Error>> + Send;

    /// Stores a checkpoint at `size`, refused unless `root` is the log's root there
    /// ([`LogStore::put_checkpoint`]).
    fn put_checkpoint(
        &self,
        channel: &ChannelId,
        size: u64,
        root: &Hash,
        body: &[u8],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The checkpoint of the largest size, as `(size, body)`.
    fn latest_checkpoint(
        &self,
        channel: &ChannelId,
    ) -> impl Future<Output = Result<Option<(u64, Vec<u8>)>, Self::Error>> + Send;

    /// Every checkpoint, smallest size first.
    fn checkpoints(
        &self,
        channel: &ChannelId,
    ) -> impl Future<Output = Result<Vec<(u64, Vec<u8>)>, Self::Error>> + Send;

    /// Each key's newest record index, in key order.
    fn keyed(
        &self,
        channel: &ChannelId,
    ) -> impl Future<Output = Result<Vec<(u32, u64)>, Self::Error>> + Send;
}

/// The sled store, as the reference backend: each call is the inherent method of the same
/// name (appends await their ticket).
impl LogBackend for LogStore<Blake3Hasher> {
    type Error = LogError;

    fn kind(error: &LogError) -> ErrorKind {
        ErrorKind::of(error)
    }

    async fn append(
        &self,
        channel: &ChannelId,
        start: u64,
        records: Vec<Vec<u8>>,
    ) -> Result<Range<u64>, LogError> {
        self.append_at(*channel, start, records).await
    }

    async fn append_keyed(
        &self,
        channel: &ChannelId,
        start: u64,
        records: Vec<(u32, Vec<u8>)>,
    ) -> Result<Range<u64>, LogError> {
        LogStore::append_keyed(self, *channel, start, records).await
    }

    async fn head(&self, channel: &ChannelId) -> Result<Option<Head>, LogError> {
        Ok(LogStore::head(self, channel))
    }

    async fn root_at(&self, channel: &ChannelId, size: u64) -> Result<Hash, LogError> {
        LogStore::root_at(self, channel, size)
    }

    async fn record(&self, channel: &ChannelId, index: u64) -> Result<Vec<u8>, LogError> {
        LogStore::record(self, channel, index)
    }

    async fn records(
        &self,
        channel: &ChannelId,
        range: Range<u64>,
    ) -> Result<Vec<Vec<u8>>, LogError> {
        LogStore::records(self, channel, range)
    }

    async fn inclusion_proof(
        &self,
        channel: &ChannelId,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, LogError> {
        LogStore::inclusion_proof(self, channel, index, size)
    }

    async fn consistency_proof(
        &self,
        channel: &ChannelId,
        old: u64,
        new: u64,
    ) -> Result<Vec<Hash>, LogError> {
        LogStore::consistency_proof(self, channel, old, new)
    }

    async fn put_checkpoint(
        &self,
        channel: &ChannelId,
        size: u64,
        root: &Hash,
        body: &[u8],
    ) -> Result<(), LogError> {
        LogStore::put_checkpoint(self, channel, size, root, body)
    }

    async fn latest_checkpoint(
        &self,
        channel: &ChannelId,
    ) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        LogStore::latest_checkpoint(self, channel)
    }

    async fn checkpoints(&self, channel: &ChannelId) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        LogStore::checkpoints(self, channel)
    }

    async fn keyed(&self, channel: &ChannelId) -> Result<Vec<(u32, u64)>, LogError> {
        LogStore::keyed(self, channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sled store passes the suite every backend must pass (the PostgreSQL store runs it
    /// in tally-store-pg's tests).
    #[tokio::test(flavor = "current_thread")]
    async fn the_sled_store_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(dir.path()).unwrap();
        crate::conformance::run_all(&log).await;
    }
}
