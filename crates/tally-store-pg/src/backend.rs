//! The PostgreSQL store behind tally-log's [`LogBackend`] interface (spec/CLUSTER.md §11): the
//! same calls as the sled store, answered alike, so one conformance suite runs on both.

use std::ops::Range;

use tally_log::{ErrorKind, Hash, Head, LogBackend};

use crate::{ChannelId, Lease, PgError, PgStore};

/// One node's view of the log under one lease: reads of any channel, and appends and
/// checkpoints of the lease's shard, fenced by it (CLUSTER.md §4). The lease is taken as
/// given; renewing it, and stopping when that fails, is the node's job (CLUSTER.md §3).
pub struct LeasedLog<'a> {
    store: &'a PgStore,
    lease: Lease,
}

impl<'a> LeasedLog<'a> {
    /// The view of `store` through `lease`.
    pub fn new(store: &'a PgStore, lease: Lease) -> Self {
        LeasedLog { store, lease }
    }

    /// The lease writes name.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }
}

impl LogBackend for LeasedLog<'_> {
    type Error = PgError;

    /// A head that moved under the caller is the sled store's `WrongPosition`: records built
    /// for one index reached a log of another size.
    fn kind(error: &PgError) -> ErrorKind {
        match error {
            PgError::Log(e) => ErrorKind::of(e),
            PgError::SizeMismatch { .. } => ErrorKind::WrongPosition,
            _ => ErrorKind::Other,
        }
    }

    /// An empty batch writes nothing and answers as the sled store does: `start..start` at
    /// the head, a moved head otherwise (the store's own `append` refuses it as
    /// [`PgError::EmptyBatch`], since a commit of nothing proves nothing about the lease).
    async fn append(
        &self,
        channel: &ChannelId,
        start: u64,
        records: Vec<Vec<u8>>,
    ) -> Result<Range<u64>, PgError> {
        if records.is_empty() {
            let actual = self.store.head(channel).await?.map_or(0, |h| h.size);
            if actual != start {
                return Err(PgError::SizeMismatch {
                    expected: start,
                    actual,
                });
            }
            return Ok(start..start);
        }
        self.store
            .append(&self.lease, channel, start, &records)
            .await
    }

    async fn append_keyed(
        &self,
        channel: &ChannelId,
        start: u64,
        records: Vec<(u32, Vec<u8>)>,
    ) -> Result<Range<u64>, PgError> {
        self.store
            .append_keyed(&self.lease, channel, start, &records)
            .await
    }

    /// The head with its root: history never changes, so a root read after the size is the
    /// root at that size even if the head moved in between.
    async fn head(&self, channel: &ChannelId) -> Result<Option<Head>, PgError> {
        let Some(head) = self.store.head(channel).await? else {
            return Ok(None);
        };
        let root = self.store.root_at(channel, head.size).await?;
        Ok(Some(Head {
            size: head.size,
            root,
        }))
    }

    async fn root_at(&self, channel: &ChannelId, size: u64) -> Result<Hash, PgError> {
        self.store.root_at(channel, size).await
    }

    async fn record(&self, channel: &ChannelId, index: u64) -> Result<Vec<u8>, PgError> {
        self.store.record(channel, index).await
    }

    async fn records(
        &self,
        channel: &ChannelId,
        range: Range<u64>,
    ) -> Result<Vec<Vec<u8>>, PgError> {
        self.store.records(channel, range).await
    }

    async fn inclusion_proof(
        &self,
        channel: &ChannelId,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, PgError> {
        self.store.inclusion_proof(channel, index, size).await
    }

    async fn consistency_proof(
        &self,
        channel: &ChannelId,
        old: u64,
        new: u64,
    ) -> Result<Vec<Hash>, PgError> {
        self.store.consistency_proof(channel, old, new).await
    }

    async fn put_checkpoint(
        &self,
        channel: &ChannelId,
        size: u64,
        root: &Hash,
        body: &[u8],
    ) -> Result<(), PgError> {
        self.store
            .put_checkpoint(&self.lease, channel, size, root, body)
            .await
    }

    async fn latest_checkpoint(
        &self,
        channel: &ChannelId,
    ) -> Result<Option<(u64, Vec<u8>)>, PgError> {
        self.store.latest_checkpoint(channel).await
    }

    async fn checkpoints(&self, channel: &ChannelId) -> Result<Vec<(u64, Vec<u8>)>, PgError> {
        self.store.checkpoints(channel).await
    }

    async fn keyed(&self, channel: &ChannelId) -> Result<Vec<(u32, u64)>, PgError> {
        self.store.keyed(channel).await
    }
}
