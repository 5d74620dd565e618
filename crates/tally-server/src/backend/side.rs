//! The gateway's side state (session bindings, salts, close, credit and promise marks,
//! restores, terms), whichever store holds it: the node's sled [`Bindings`] or the cluster's
//! PostgreSQL tables (spec/CLUSTER.md §2, version 3). The rules are tally-log's, once, and
//! both stores pass one conformance suite; this type only routes each call, fencing the
//! owner's writes on PostgreSQL by this node's lease of the channel's shard. sled writes are
//! flushed and synced, so they run on the blocking pool.

use std::sync::Arc;

use tally_core::{ChannelId, Hash, PublicKey, RequestSalt, Signature};
use tally_log::bindings::{BindingsErrorKind, CloseMark};
use tally_store_pg::{PgError, PgNode};

use super::log::fenced;
use crate::bindings::{Bindings, BindingsError, Closing, CreditMark};
use crate::errors::GatewayError;

/// The side state's store, cheap to clone.
#[derive(Clone)]
pub(crate) enum Side {
    Sled(Arc<Bindings>),
    Pg(Arc<PgNode>),
}

/// A side-state failure: what it means ([`BindingsErrorKind`], the same for both stores) and
/// a message for the log line.
#[derive(Debug)]
pub(crate) struct SideError {
    pub(crate) kind: BindingsErrorKind,
    message: String,
    /// The database failed (a dropped connection, a restart): worth a retry, and its text
    /// is for the log, not for the client.
    transient: bool,
}

impl std::fmt::Display for SideError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl SideError {
    /// The gateway's answer: a lost lease is `store_unavailable` (retry), the rest internal
    /// with `what` for context.
    pub(crate) fn into_gateway(self, what: &str) -> GatewayError {
        match self.kind {
            BindingsErrorKind::Fenced => fenced(),
            _ if self.transient => {
                tracing::warn!(error = %self.message, "{what}: the cluster database failed");
                GatewayError::new(
                    tally_http::Reason::StoreUnavailable,
                    format!("the cluster database failed ({what}); retry shortly"),
                )
            }
            _ => GatewayError::internal(format!("{what}: {}", self.message)),
        }
    }
}

impl From<BindingsError> for SideError {
    fn from(e: BindingsError) -> Self {
        let kind = match &e {
            BindingsError::Rule(r) => BindingsErrorKind::of(r),
            BindingsError::Db(_) => BindingsErrorKind::Other,
        };
        SideError {
            kind,
            message: e.to_string(),
            transient: false,
        }
    }
}

impl From<PgError> for SideError {
    fn from(e: PgError) -> Self {
        let kind = match &e {
            PgError::Rule(r) => BindingsErrorKind::of(r),
            PgError::Fenced { .. } | PgError::Unsettled { .. } => BindingsErrorKind::Fenced,
            _ => BindingsErrorKind::Other,
        };
        SideError {
            kind,
            message: e.to_string(),
            transient: matches!(e, PgError::Db(_)),
        }
    }
}

fn lost() -> SideError {
    SideError {
        kind: BindingsErrorKind::Fenced,
        message: "this node does not hold the channel's shard".into(),
        transient: false,
    }
}

/// Runs a sled write on the blocking pool.
async fn blocking<T: Send + 'static>(
    b: &Arc<Bindings>,
    f: impl FnOnce(&Bindings) -> Result<T, BindingsError> + Send + 'static,
) -> Result<T, SideError> {
    let b = b.clone();
    tokio::task::spawn_blocking(move || f(&b))
        .await
        .map_err(|e| SideError {
            kind: BindingsErrorKind::Other,
            message: format!("side-state writer: {e}"),
            transient: false,
        })?
        .map_err(SideError::from)
}

/// The lease this node holds for `channel`'s shard at epoch `generation` (the one the
/// channel's state was loaded under), or a fenced refusal: a shard lost and retaken since is
/// a newer epoch, whose writes this state must not make.
fn lease(
    n: &PgNode,
    channel: &ChannelId,
    generation: u64,
) -> Result<tally_store_pg::Lease, SideError> {
    n.held(n.shard_of(channel))
        .filter(|l| l.epoch == generation)
        .ok_or_else(lost)
}

impl Side {
    pub(crate) async fn remember_terms(&self, hash: Hash, bytes: Vec<u8>) -> Result<(), SideError> {
        match self {
            Side::Sled(b) => blocking(b, move |b| Ok(b.remember_terms(&hash, &bytes)?)).await,
            Side::Pg(n) => Ok(n.store().remember_terms(&hash, &bytes).await?),
        }
    }

    pub(crate) async fn terms(&self, hash: &Hash) -> Result<Option<Vec<u8>>, SideError> {
        match self {
            Side::Sled(b) => Ok(b.terms(hash).map_err(BindingsError::from)?),
            Side::Pg(n) => Ok(n.store().terms(hash).await?),
        }
    }

    pub(crate) async fn session(
        &self,
        channel: &ChannelId,
    ) -> Result<Option<PublicKey>, SideError> {
        match self {
            Side::Sled(b) => Ok(b.session(channel)?),
            Side::Pg(n) => Ok(n.store().session(channel).await?),
        }
    }

    /// First writer wins; another key is `SessionConflict` (unfenced: CLUSTER.md §2).
    pub(crate) async fn bind(&self, channel: ChannelId, key: PublicKey) -> Result<(), SideError> {
        match self {
            Side::Sled(b) => blocking(b, move |b| b.bind(&channel, &key)).await,
            Side::Pg(n) => Ok(n.store().bind(&channel, &key).await?),
        }
    }

    pub(crate) async fn salt(&self, channel: &ChannelId) -> Result<Option<RequestSalt>, SideError> {
        match self {
            Side::Sled(b) => Ok(b.salt(channel)?),
            Side::Pg(n) => Ok(n.store().salt(channel).await?),
        }
    }

    /// The stored salt, `fresh` stored first if none was (unfenced: CLUSTER.md §2).
    pub(crate) async fn salt_or_insert(
        &self,
        channel: ChannelId,
        fresh: RequestSalt,
    ) -> Result<RequestSalt, SideError> {
        match self {
            Side::Sled(b) => blocking(b, move |b| b.salt_or_insert(&channel, fresh)).await,
            Side::Pg(n) => Ok(n.store().salt_or_insert(&channel, fresh).await?),
        }
    }

    pub(crate) async fn closing(&self, channel: &ChannelId) -> Result<Option<Closing>, SideError> {
        match self {
            Side::Sled(b) => Ok(b.closing(channel)?),
            Side::Pg(n) => Ok(n.store().closing(channel).await?.map(Closing::from)),
        }
    }

    /// First writer wins; fenced on PostgreSQL (CLUSTER.md §2) by the lease of the state's
    /// `generation`.
    pub(crate) async fn mark_closing(
        &self,
        channel: ChannelId,
        closing: Closing,
        generation: u64,
    ) -> Result<(), SideError> {
        match self {
            Side::Sled(b) => blocking(b, move |b| b.mark_closing(&channel, &closing)).await,
            Side::Pg(n) => {
                let lease = lease(n, &channel, generation)?;
                let mark = CloseMark::from(closing);
                Ok(n.store().mark_closing(&lease, &channel, &mark).await?)
            }
        }
    }

    /// Every stored close, with when it was agreed (unix seconds).
    pub(crate) async fn closings(
        &self,
    ) -> Result<Vec<(ChannelId, Closing, Option<u64>)>, SideError> {
        match self {
            Side::Sled(b) => Ok(b.closings()?),
            Side::Pg(n) => Ok(n
                .store()
                .closings()
                .await?
                .into_iter()
                .map(|(id, mark, at)| (id, Closing::from(mark), at))
                .collect()),
        }
    }

    pub(crate) async fn credit_for(
        &self,
        channel: &ChannelId,
        index: u64,
    ) -> Result<Option<CreditMark>, SideError> {
        match self {
            Side::Sled(b) => Ok(b.credit_for(channel, index)?),
            Side::Pg(n) => Ok(n.store().credit_for(channel, index).await?),
        }
    }

    /// Replaces the record's mark; fenced on PostgreSQL by the lease of `generation`.
    pub(crate) async fn mark_credited(
        &self,
        channel: ChannelId,
        index: u64,
        mark: CreditMark,
        generation: u64,
    ) -> Result<(), SideError> {
        match self {
            Side::Sled(b) => blocking(b, move |b| b.mark_credited(&channel, index, &mark)).await,
            Side::Pg(n) => {
                let lease = lease(n, &channel, generation)?;
                Ok(n.store()
                    .mark_credited(&lease, &channel, index, &mark)
                    .await?)
            }
        }
    }

    /// Set once, before the channel's first promise; fenced on PostgreSQL by the lease of
    /// `generation`.
    pub(crate) async fn mark_promising(
        &self,
        channel: ChannelId,
        generation: u64,
    ) -> Result<(), SideError> {
        match self {
            Side::Sled(b) => blocking(b, move |b| b.mark_promising(&channel)).await,
            Side::Pg(n) => {
                let lease = lease(n, &channel, generation)?;
                Ok(n.store().mark_promising(&lease, &channel).await?)
            }
        }
    }

    pub(crate) async fn is_promising(&self, channel: &ChannelId) -> Result<bool, SideError> {
        match self {
            Side::Sled(b) => Ok(b.is_promising(channel)?),
            Side::Pg(n) => Ok(n.store().is_promising(channel).await?),
        }
    }

    /// Clears the marks of `channels` (each with the generation its promises were made
    /// under) once every promise made for them is durable; on PostgreSQL one fenced write per
    /// shard, skipping channels whose shard this node no longer holds at that epoch (their
    /// marks stay: the next owner requires a restore, which is always safe).
    pub(crate) async fn clear_promising(
        &self,
        channels: Vec<(ChannelId, u64)>,
    ) -> Result<(), SideError> {
        match self {
            Side::Sled(b) => {
                let ids: Vec<ChannelId> = channels.into_iter().map(|(c, _)| c).collect();
                blocking(b, move |b| b.clear_promising(ids.iter())).await
            }
            Side::Pg(n) => {
                let mut by_shard: std::collections::BTreeMap<u32, (u64, Vec<ChannelId>)> =
                    std::collections::BTreeMap::new();
                for (c, generation) in channels {
                    let entry = by_shard
                        .entry(n.shard_of(&c))
                        .or_insert((generation, Vec::new()));
                    if entry.0 == generation {
                        entry.1.push(c);
                    }
                }
                for (shard, (generation, chans)) in by_shard {
                    if let Some(lease) = n.held(shard).filter(|l| l.epoch == generation) {
                        n.store().clear_promising(&lease, &chans).await?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Keeps a client's restore statement (unfenced: CLUSTER.md §2).
    pub(crate) async fn keep_restore(
        &self,
        channel: ChannelId,
        nonce: Hash,
        size: u64,
        statement: Vec<u8>,
        signature: Signature,
    ) -> Result<(), SideError> {
        match self {
            Side::Sled(b) => {
                blocking(b, move |b| {
                    b.keep_restore(&channel, &nonce, size, &statement, &signature)
                })
                .await
            }
            Side::Pg(n) => Ok(n
                .store()
                .keep_restore(&channel, &nonce, size, &statement, &signature)
                .await?),
        }
    }
}
