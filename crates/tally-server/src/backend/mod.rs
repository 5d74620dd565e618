//! Where the gateway keeps its state: the sled stores of one node, or the PostgreSQL store
//! shared by a cluster's nodes (spec/CLUSTER.md). The gateway talks to [`Backend`] for "the
//! log this channel is written to now, and its generation", to [`Log`] for the log's reads
//! and appends, and to [`Side`] for the side state; nothing above this module knows which
//! store is underneath.
//!
//! A channel's in-memory state carries the *generation* it was loaded under and may append
//! only while that generation is current: on sled, the store's reopen count (a poisoned store
//! is reopened in place, `slot.rs`); on PostgreSQL, the epoch of this node's lease of the
//! channel's shard. A lease lost and retaken has a new epoch, so state loaded before a
//! takeover by another node can never append after it: it reloads from the database.

mod log;
mod side;
mod slot;

use std::sync::Arc;

use tally_core::ChannelId;
use tally_store_pg::{Owner, PgNode};

pub(crate) use log::{fenced, pg_error, Log, Ticket};
pub(crate) use side::Side;
pub(crate) use slot::StoreSlot;

use crate::errors::GatewayError;

/// The store the gateway runs on.
pub(crate) enum Backend {
    Sled(Arc<StoreSlot>),
    Pg(Arc<PgNode>),
}

impl Backend {
    /// The log `channel` is written to now and its generation, for loading the channel's
    /// state. On PostgreSQL this takes the channel's shard if it is free or expired; a shard
    /// another node holds is `store_unavailable` here (requests for it are forwarded before
    /// they reach the gateway, `crate::cluster`).
    pub(crate) async fn current(&self, channel: &ChannelId) -> Result<(Log, u64), GatewayError> {
        match self {
            Backend::Sled(slot) => {
                let (store, generation) = slot.current()?;
                Ok((Log::Sled(store), generation))
            }
            Backend::Pg(node) => match node.owner(node.shard_of(channel)).await {
                Ok(Owner::Mine(lease)) => {
                    let epoch = lease.epoch;
                    Ok((Log::Pg(node.clone(), Some(lease)), epoch))
                }
                Ok(Owner::Other(_)) => Err(fenced()),
                Err(e) => Err(pg_error("taking the channel's shard", &e)),
            },
        }
    }

    /// The log, if `generation` is still current for `channel`: state loaded under an older
    /// one must not append.
    pub(crate) fn for_generation(
        &self,
        channel: &ChannelId,
        generation: u64,
    ) -> Result<Log, GatewayError> {
        match self {
            Backend::Sled(slot) => Ok(Log::Sled(slot.for_generation(generation)?)),
            Backend::Pg(node) => match node.held(node.shard_of(channel)) {
                Some(lease) if lease.epoch == generation => Ok(Log::Pg(node.clone(), Some(lease))),
                _ => Err(fenced()),
            },
        }
    }

    /// The log for reads that concern no one channel's ownership (listings, the console).
    pub(crate) fn reader(&self) -> Result<Log, GatewayError> {
        match self {
            Backend::Sled(slot) => Ok(Log::Sled(slot.current()?.0)),
            Backend::Pg(node) => Ok(Log::Pg(node.clone(), None)),
        }
    }

    /// Why the store refuses writes, if it does (sled only: a cluster node's writes are
    /// refused per shard, by the database).
    pub(crate) fn problem(&self) -> Option<String> {
        match self {
            Backend::Sled(slot) => slot.problem(),
            Backend::Pg(_) => None,
        }
    }

    /// Whether the store answers now: always for sled (its problems are [`Backend::problem`]);
    /// on PostgreSQL one trivial query, within a second.
    pub(crate) async fn reachable(&self) -> Result<(), GatewayError> {
        let Backend::Pg(node) = self else {
            return Ok(());
        };
        let ping = node.store().ping();
        match tokio::time::timeout(std::time::Duration::from_secs(1), ping).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(pg_error("health check", &e)),
            Err(_) => Err(GatewayError::new(
                tally_http::Reason::StoreUnavailable,
                "the cluster database did not answer within a second",
            )),
        }
    }

    /// Fails fast while the sled store cannot take writes (starting a recovery).
    pub(crate) fn ensure_writable(
        &self,
        on_reopen: impl FnOnce() + Send + 'static,
    ) -> Result<(), GatewayError> {
        match self {
            Backend::Sled(slot) => slot.ensure_writable(on_reopen),
            Backend::Pg(_) => Ok(()),
        }
    }
}
