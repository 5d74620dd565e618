//! The PostgreSQL side state behind tally-log's [`BindingsBackend`] interface (spec/CLUSTER.md
//! §2, version 3): the same calls as the gateway's sled `Bindings`, answered alike, so one
//! conformance suite (`tally_log::bindings_conformance`) runs on both.

use tally_core::{PublicKey, RequestSalt, Signature};
use tally_log::bindings::{BindingsBackend, BindingsErrorKind, CloseMark, CreditMark};
use tally_log::Hash;

use crate::{ChannelId, Lease, PgError, PgStore};

/// One node's view of the side state under one lease: reads of any channel, the unfenced
/// first-writer-wins writes of any channel, and the owner's writes of the lease's shard,
/// fenced by it (CLUSTER.md §2, §4). As with `LeasedLog`, renewing the lease is the node's
/// job (CLUSTER.md §3).
pub struct LeasedBindings<'a> {
    store: &'a PgStore,
    lease: Lease,
}

impl<'a> LeasedBindings<'a> {
    /// The view of `store` through `lease`.
    pub fn new(store: &'a PgStore, lease: Lease) -> Self {
        LeasedBindings { store, lease }
    }

    /// The lease the owner's writes name.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }
}

impl BindingsBackend for LeasedBindings<'_> {
    type Error = PgError;

    /// A lost lease is `Fenced`; the rules' refusals are the sled store's.
    fn kind(error: &PgError) -> BindingsErrorKind {
        match error {
            PgError::Rule(e) => BindingsErrorKind::of(e),
            PgError::Fenced { .. } => BindingsErrorKind::Fenced,
            _ => BindingsErrorKind::Other,
        }
    }

    async fn remember_terms(&self, hash: &Hash, bytes: &[u8]) -> Result<(), PgError> {
        self.store.remember_terms(hash, bytes).await
    }

    async fn terms(&self, hash: &Hash) -> Result<Option<Vec<u8>>, PgError> {
        self.store.terms(hash).await
    }

    async fn session(&self, channel: &ChannelId) -> Result<Option<PublicKey>, PgError> {
        self.store.session(channel).await
    }

    async fn bind(&self, channel: &ChannelId, key: &PublicKey) -> Result<(), PgError> {
        self.store.bind(channel, key).await
    }

    async fn salt(&self, channel: &ChannelId) -> Result<Option<RequestSalt>, PgError> {
        self.store.salt(channel).await
    }

    async fn salt_or_insert(
        &self,
        channel: &ChannelId,
        fresh: RequestSalt,
    ) -> Result<RequestSalt, PgError> {
        self.store.salt_or_insert(channel, fresh).await
    }

    async fn closing(&self, channel: &ChannelId) -> Result<Option<CloseMark>, PgError> {
        self.store.closing(channel).await
    }

    async fn mark_closing(&self, channel: &ChannelId, close: &CloseMark) -> Result<(), PgError> {
        self.store.mark_closing(&self.lease, channel, close).await
    }

    async fn closings(&self) -> Result<Vec<(ChannelId, CloseMark, Option<u64>)>, PgError> {
        self.store.closings().await
    }

    async fn credit_for(
        &self,
        channel: &ChannelId,
        index: u64,
    ) -> Result<Option<CreditMark>, PgError> {
        self.store.credit_for(channel, index).await
    }

    async fn mark_credited(
        &self,
        channel: &ChannelId,
        index: u64,
        mark: &CreditMark,
    ) -> Result<(), PgError> {
        self.store
            .mark_credited(&self.lease, channel, index, mark)
            .await
    }

    async fn mark_promising(&self, channel: &ChannelId) -> Result<(), PgError> {
        self.store.mark_promising(&self.lease, channel).await
    }

    async fn is_promising(&self, channel: &ChannelId) -> Result<bool, PgError> {
        self.store.is_promising(channel).await
    }

    async fn clear_promising(&self, channels: &[ChannelId]) -> Result<(), PgError> {
        self.store.clear_promising(&self.lease, channels).await
    }

    async fn keep_restore(
        &self,
        channel: &ChannelId,
        nonce: &Hash,
        size: u64,
        statement: &[u8],
        signature: &Signature,
    ) -> Result<(), PgError> {
        self.store
            .keep_restore(channel, nonce, size, statement, signature)
            .await
    }

    async fn restores(&self, channel: &ChannelId) -> Result<Vec<(Vec<u8>, Signature)>, PgError> {
        self.store.restores(channel).await
    }
}
