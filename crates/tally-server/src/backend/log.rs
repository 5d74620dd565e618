//! One log, whichever store holds it: the sled [`LogStore`] of a single node, or the
//! PostgreSQL store of cluster mode seen through this node ([`PgNode`], spec/CLUSTER.md).
//! Every read answers alike on both (tally-log's conformance suite holds them to it); writes
//! on PostgreSQL name the lease this node holds for the channel's shard and are fenced by the
//! database (CLUSTER.md §4).

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tally_core::{ChannelId, Hash};
use tally_http::Reason;
use tally_log::{Blake3Hasher, Frontier, Head, LogStore};
use tally_store_pg::{Lease, PgError, PgNode};
use tokio::sync::oneshot;

use crate::errors::GatewayError;

/// A log store handle, cheap to clone. On PostgreSQL it carries the lease a channel's state
/// was loaded under, when it was got for writing ([`super::Backend::for_generation`]): its
/// appends and checkpoints are fenced by that very lease, so a shard lost and retaken in the
/// meantime (a newer epoch of this same node) refuses them.
#[derive(Clone)]
pub(crate) enum Log {
    Sled(Arc<LogStore>),
    Pg(Arc<PgNode>, Option<Lease>),
}

/// Why a store call failed, worded for the gateway: a lost lease is the client's
/// `store_unavailable` (retry: the channel moved to another node), anything else internal.
pub(crate) fn pg_error(what: &str, e: &PgError) -> GatewayError {
    match e {
        PgError::Fenced { .. } | PgError::Unsettled { .. } => fenced(),
        PgError::Db(e) => {
            // The server's text is for the log, never for the client.
            tracing::warn!(error = %e, "{what}: the cluster database failed");
            GatewayError::new(
                Reason::StoreUnavailable,
                format!("the cluster database failed ({what}); retry shortly"),
            )
        }
        _ => GatewayError::internal(format!("{what}: {e}")),
    }
}

/// The answer when this node no longer owns a channel's shard (spec/CLUSTER.md §7).
pub(crate) fn fenced() -> GatewayError {
    GatewayError::new(
        Reason::StoreUnavailable,
        "this channel moved to another gateway node; nothing was recorded; retry",
    )
}

fn sled_error(what: &str, e: tally_log::LogError) -> GatewayError {
    GatewayError::internal(format!("{what}: {e}"))
}

impl Log {
    /// Waits until no append of `channel` is queued any more (PostgreSQL: a queued append may
    /// commit after a read of the head, so a state loaded before would be behind the log).
    /// `true` if a commit of the channel failed meanwhile: promises made before it may be
    /// lost, so the state about to be loaded must require a restore if the channel is marked.
    pub(crate) async fn quiesce(&self, channel: &ChannelId) -> Result<bool, GatewayError> {
        let Log::Pg(n, _) = self else {
            // sled: a failed commit poisons the store, and the reopen starts a new generation.
            return Ok(false);
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while n.queued_for(channel) > 0 {
            if std::time::Instant::now() > deadline {
                return Err(GatewayError::new(
                    Reason::StoreUnavailable,
                    "the channel's earlier appends are still being committed; retry",
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        Ok(n.take_failure(channel))
    }

    /// The durable size alone: one read on PostgreSQL, where [`Log::head`] needs two.
    pub(crate) async fn size(&self, channel: &ChannelId) -> Result<u64, GatewayError> {
        match self {
            Log::Sled(s) => Ok(s.head(channel).map_or(0, |h| h.size)),
            Log::Pg(n, _) => Ok(n
                .store()
                .head(channel)
                .await
                .map_err(|e| pg_error("head", &e))?
                .map_or(0, |h| h.size)),
        }
    }

    /// The durable head (size and root), `None` for a channel without records.
    pub(crate) async fn head(&self, channel: &ChannelId) -> Result<Option<Head>, GatewayError> {
        match self {
            Log::Sled(s) => Ok(s.head(channel)),
            Log::Pg(n, _) => {
                let store = n.store();
                let Some(h) = store
                    .head(channel)
                    .await
                    .map_err(|e| pg_error("head", &e))?
                else {
                    return Ok(None);
                };
                let root = store
                    .root_at(channel, h.size)
                    .await
                    .map_err(|e| pg_error("root", &e))?;
                Ok(Some(Head { size: h.size, root }))
            }
        }
    }

    /// The root at `size` ≤ head.
    pub(crate) async fn root_at(
        &self,
        channel: &ChannelId,
        size: u64,
    ) -> Result<Hash, GatewayError> {
        match self {
            Log::Sled(s) => s.root_at(channel, size).map_err(|e| sled_error("root", e)),
            Log::Pg(n, _) => n
                .store()
                .root_at(channel, size)
                .await
                .map_err(|e| pg_error("root", &e)),
        }
    }

    /// The record at `index` < head.
    pub(crate) async fn record(
        &self,
        channel: &ChannelId,
        index: u64,
    ) -> Result<Vec<u8>, GatewayError> {
        match self {
            Log::Sled(s) => s
                .record(channel, index)
                .map_err(|e| sled_error("reading the log", e)),
            Log::Pg(n, _) => n
                .store()
                .record(channel, index)
                .await
                .map_err(|e| pg_error("reading the log", &e)),
        }
    }

    /// The records in `range`, clamped to the head.
    pub(crate) async fn records(
        &self,
        channel: &ChannelId,
        range: Range<u64>,
    ) -> Result<Vec<Vec<u8>>, GatewayError> {
        match self {
            Log::Sled(s) => s
                .records(channel, range)
                .map_err(|e| sled_error("reading the log", e)),
            Log::Pg(n, _) => n
                .store()
                .records(channel, range)
                .await
                .map_err(|e| pg_error("reading the log", &e)),
        }
    }

    /// The inclusion proof of `index` at `size`; the log's own refusals are kept as
    /// [`tally_log::LogError`] so the endpoints can word them.
    pub(crate) async fn inclusion_proof(
        &self,
        channel: &ChannelId,
        index: u64,
        size: u64,
    ) -> Result<Result<Vec<Hash>, tally_log::LogError>, GatewayError> {
        match self {
            Log::Sled(s) => Ok(s.inclusion_proof(channel, index, size)),
            Log::Pg(n, _) => match n.store().inclusion_proof(channel, index, size).await {
                Ok(p) => Ok(Ok(p)),
                Err(PgError::Log(e)) => Ok(Err(e)),
                Err(e) => Err(pg_error("proof", &e)),
            },
        }
    }

    /// The consistency proof between `old` and `new`, as [`Log::inclusion_proof`].
    pub(crate) async fn consistency_proof(
        &self,
        channel: &ChannelId,
        old: u64,
        new: u64,
    ) -> Result<Result<Vec<Hash>, tally_log::LogError>, GatewayError> {
        match self {
            Log::Sled(s) => Ok(s.consistency_proof(channel, old, new)),
            Log::Pg(n, _) => match n.store().consistency_proof(channel, old, new).await {
                Ok(p) => Ok(Ok(p)),
                Err(PgError::Log(e)) => Ok(Err(e)),
                Err(e) => Err(pg_error("proof", &e)),
            },
        }
    }

    /// The checkpoint of the largest size, as `(size, body)`.
    pub(crate) async fn latest_checkpoint(
        &self,
        channel: &ChannelId,
    ) -> Result<Option<(u64, Vec<u8>)>, GatewayError> {
        match self {
            Log::Sled(s) => s
                .latest_checkpoint(channel)
                .map_err(|e| sled_error("reading checkpoints", e)),
            Log::Pg(n, _) => n
                .store()
                .latest_checkpoint(channel)
                .await
                .map_err(|e| pg_error("reading checkpoints", &e)),
        }
    }

    /// Every checkpoint, smallest size first.
    pub(crate) async fn checkpoints(
        &self,
        channel: &ChannelId,
    ) -> Result<Vec<(u64, Vec<u8>)>, GatewayError> {
        match self {
            Log::Sled(s) => s
                .checkpoints(channel)
                .map_err(|e| sled_error("reading checkpoints", e)),
            Log::Pg(n, _) => n
                .store()
                .checkpoints(channel)
                .await
                .map_err(|e| pg_error("reading checkpoints", &e)),
        }
    }

    /// Each lane's newest record index.
    pub(crate) async fn keyed(&self, channel: &ChannelId) -> Result<Vec<(u32, u64)>, GatewayError> {
        match self {
            Log::Sled(s) => s.keyed(channel).map_err(|e| sled_error("reading lanes", e)),
            Log::Pg(n, _) => n
                .store()
                .keyed(channel)
                .await
                .map_err(|e| pg_error("reading lanes", &e)),
        }
    }

    /// Every channel with records.
    pub(crate) async fn channels(&self) -> Result<Vec<ChannelId>, GatewayError> {
        match self {
            Log::Sled(s) => Ok(s.channels()),
            Log::Pg(n, _) => n
                .store()
                .channels()
                .await
                .map_err(|e| pg_error("listing channels", &e)),
        }
    }

    /// How many channels have records and how many records they hold in all.
    pub(crate) async fn totals(&self) -> Result<(usize, u64), GatewayError> {
        match self {
            Log::Sled(s) => {
                let channels = s.channels();
                let records = channels
                    .iter()
                    .filter_map(|c| s.head(c))
                    .map(|h| h.size)
                    .sum();
                Ok((channels.len(), records))
            }
            Log::Pg(n, _) => {
                let (channels, records) = n
                    .store()
                    .totals()
                    .await
                    .map_err(|e| pg_error("counting records", &e))?;
                Ok((usize::try_from(channels).unwrap_or(usize::MAX), records))
            }
        }
    }

    /// Appends handed to the log and not yet durable (on PostgreSQL: this node's commit
    /// queue; the age of its oldest is not tracked there).
    pub(crate) fn pending(&self) -> tally_log::Pending {
        match self {
            Log::Sled(s) => s.pending(),
            Log::Pg(n, _) => tally_log::Pending {
                records: n.queued() as u64,
                oldest: None,
            },
        }
    }

    /// The tree's frontier at the durable head `size` with root `root`, checked against it.
    pub(crate) async fn frontier_at(
        &self,
        channel: &ChannelId,
        size: u64,
        root: &Hash,
    ) -> Result<Frontier, GatewayError> {
        let what = "loading the log's edge";
        match self {
            Log::Sled(s) => {
                tally_log::frontier_at(s, channel, size, root).map_err(|e| sled_error(what, e))
            }
            Log::Pg(n, _) => {
                let f = n
                    .store()
                    .frontier(channel, size)
                    .await
                    .map_err(|e| pg_error(what, &e))?;
                // `Hash` equality is constant-time.
                if f.root(&Blake3Hasher) != *root {
                    return Err(GatewayError::internal(format!(
                        "{what}: the frontier's root is not the head's"
                    )));
                }
                Ok(f)
            }
        }
    }

    /// Stores a checkpoint at `size`, refused unless `root` is the log's root there; on
    /// PostgreSQL fenced by this node's lease of the channel's shard.
    pub(crate) async fn put_checkpoint(
        &self,
        channel: &ChannelId,
        size: u64,
        root: &Hash,
        body: Vec<u8>,
    ) -> Result<(), GatewayError> {
        let what = "storing the checkpoint";
        match self {
            Log::Sled(s) => {
                let (s, channel, root) = (s.clone(), *channel, *root);
                tokio::task::spawn_blocking(move || s.put_checkpoint(&channel, size, &root, &body))
                    .await
                    .map_err(|e| GatewayError::internal(format!("checkpoint writer: {e}")))?
                    .map_err(|e| sled_error(what, e))
            }
            Log::Pg(n, lease) => {
                let lease = lease.as_ref().ok_or_else(fenced)?;
                n.store()
                    .put_checkpoint(lease, channel, size, root, &body)
                    .await
                    .map_err(|e| pg_error(what, &e))
            }
        }
    }

    /// Hands keyed records at `start..` to the log; the ticket resolves once they are
    /// durable. Refused now (nothing queued) when the queue is full or, on PostgreSQL, this
    /// node no longer holds the channel's shard.
    pub(crate) fn append_keyed(
        &self,
        channel: ChannelId,
        start: u64,
        records: Vec<(u32, Vec<u8>)>,
    ) -> Ticket {
        match self {
            Log::Sled(s) => Ticket::Sled(s.append_keyed(channel, start, records)),
            Log::Pg(n, lease) => {
                let Some(lease) = lease.clone() else {
                    return Ticket::Refused(Some(fenced()));
                };
                match n.enqueue(lease, channel, start, records) {
                    Ok(rx) => Ticket::Pg(rx),
                    Err(_) => Ticket::Refused(Some(GatewayError::new(
                        Reason::Overloaded,
                        "the log's queue is full; nothing was recorded",
                    ))),
                }
            }
        }
    }
}

/// A queued append.
pub(crate) enum Ticket {
    Sled(tally_log::Ticket),
    Pg(oneshot::Receiver<tally_store_pg::Committed>),
    Refused(Option<GatewayError>),
}

impl Ticket {
    /// Whether nothing was queued: the caller may undo what it prepared.
    pub(crate) fn refused_now(&self) -> bool {
        match self {
            Ticket::Sled(t) => t.refused_now(),
            Ticket::Pg(_) => false,
            Ticket::Refused(_) => true,
        }
    }
}

impl Future for Ticket {
    type Output = Result<Range<u64>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Ticket::Sled(t) => Pin::new(t).poll(cx).map(|r| {
                r.map_err(|e| match e {
                    tally_log::LogError::Busy => GatewayError::new(
                        Reason::Overloaded,
                        "the log's queue is full; nothing was recorded",
                    ),
                    e => GatewayError::internal(format!("log append: {e}")),
                })
            }),
            Ticket::Pg(rx) => Pin::new(rx).poll(cx).map(|r| match r {
                Ok(Ok(range)) => Ok(range),
                Ok(Err(e)) => Err(pg_error("log append", &e)),
                Err(_) => Err(GatewayError::internal("the commit writer stopped")),
            }),
            Ticket::Refused(e) => Poll::Ready(Err(e
                .take()
                .unwrap_or_else(|| GatewayError::internal("log append refused")))),
        }
    }
}
