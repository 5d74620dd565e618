//! One gateway node in cluster mode (spec/CLUSTER.md §3, §7, §8): its leases, kept renewed,
//! and its ordered commit queue. The gateway asks [`PgNode::owner`] who owns a channel's shard
//! before it loads or writes the channel: this node (a [`Lease`] it holds, taking a free or
//! expired shard on the way), or another node, to which the request is forwarded.
//!
//! Safety does not rest on anything here. A lease this node believes it holds is only a
//! *local* belief, kept conservatively (it lapses a tenth of `lease_ms` before the database's
//! expiry, counted from before the renewal was sent); every write is fenced by the database
//! (CLUSTER.md §4), which refuses a node that lost its lease even while it still believes it.

mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use writer::{Committed, QueueFull};

use crate::{shard_of, ChannelId, Holder, Lease, PgError, PgStore};

/// How a node joins the cluster.
#[derive(Clone)]
pub struct NodeConfig {
    /// The libpq connection string (password included if any: never logged).
    pub url: String,
    /// Shards (CLUSTER.md §3), the same on every node.
    pub shards: u16,
    /// Lease length, ms; renewed every third of it.
    pub lease_ms: u64,
    /// This node's base URL as the other nodes reach it.
    pub node_url: String,
}

/// Who owns a shard, as this node sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node, through this lease.
    Mine(Lease),
    /// Another node holds a live lease.
    Other(Holder),
}

/// A lease this node holds and until when it trusts it, by its own monotonic clock.
#[derive(Clone)]
struct Held {
    lease: Lease,
    trusted_until: Instant,
}

/// Leases this node holds, by shard.
type HeldMap = Arc<Mutex<HashMap<u32, Held>>>;

/// One node's handle on the cluster: connections for reads, leases and commits, its leases,
/// and a cache of other nodes' leases.
pub struct PgNode {
    id: String,
    config: NodeConfig,
    /// Reads and the side state.
    store: PgStore,
    /// Lease acquisition and renewal, on a connection of their own so a slow query never
    /// delays a renewal.
    leasing: PgStore,
    held: HeldMap,
    /// Other nodes' leases, trusted for a moment, to spare a query per forwarded request.
    others: Mutex<HashMap<u32, (Holder, Instant)>>,
    queue: writer::Queue,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl PgNode {
    /// Connects (three connections), creates or migrates the schema, registers this node
    /// under a fresh id (`<node_url host>-<random>`: unique per process start, CLUSTER.md §3)
    /// and starts the renewal task and the commit writer. Both end when the node is dropped.
    pub async fn start(config: NodeConfig) -> Result<Arc<PgNode>, PgError> {
        let store = PgStore::connect(&config.url, config.shards).await?;
        store.init().await?;
        let leasing = PgStore::connect(&config.url, config.shards).await?;
        let writes = PgStore::connect(&config.url, config.shards).await?;
        let host = config
            .node_url
            .split("://")
            .nth(1)
            .unwrap_or(&config.node_url)
            .trim_end_matches('/');
        let id = format!("{host}-{:016x}", rand::random::<u64>());
        store.register_member(&id, &config.node_url).await?;
        let held: HeldMap = Arc::default();
        let queue = writer::spawn(writes, held.clone());
        let node = Arc::new(PgNode {
            id,
            config,
            store,
            leasing,
            held,
            others: Mutex::default(),
            queue,
        });
        tokio::spawn(renew_loop(Arc::downgrade(&node)));
        Ok(node)
    }

    /// This process's node id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The store for reads and the side state.
    pub fn store(&self) -> &PgStore {
        &self.store
    }

    /// The shard count.
    pub fn shards(&self) -> u16 {
        self.config.shards
    }

    /// The lease length, ms.
    pub fn lease_ms(&self) -> u64 {
        self.config.lease_ms
    }

    /// The shard of `channel`.
    pub fn shard_of(&self, channel: &ChannelId) -> u32 {
        shard_of(channel, self.config.shards)
    }

    /// The lease of `shard` this node holds and still trusts, without asking the database.
    pub fn held(&self, shard: u32) -> Option<Lease> {
        let held = lock(&self.held);
        held.get(&shard)
            .filter(|h| h.trusted_until > Instant::now())
            .map(|h| h.lease.clone())
    }

    /// Who owns `shard`: this node's trusted lease; else the database is asked: a free or
    /// expired lease is taken (epoch + 1), this node's own live one extended; else the live
    /// holder is returned (cached for up to a third of `lease_ms`).
    pub async fn owner(&self, shard: u32) -> Result<Owner, PgError> {
        if let Some(lease) = self.held(shard) {
            return Ok(Owner::Mine(lease));
        }
        if let Some((holder, until)) = lock(&self.others).get(&shard) {
            if *until > Instant::now() {
                return Ok(Owner::Other(holder.clone()));
            }
        }
        // A lease that changes hands between the two statements is looked up again.
        for _ in 0..3 {
            let sent = Instant::now();
            if let Some(lease) = self
                .leasing
                .acquire(shard, &self.id, self.config.lease_ms)
                .await?
            {
                self.trust(lease.clone(), sent);
                lock(&self.others).remove(&shard);
                return Ok(Owner::Mine(lease));
            }
            if let Some(holder) = self.leasing.holder(shard).await? {
                if holder.expires_in_ms > 0 && holder.node != self.id {
                    let keep = holder.expires_in_ms.min(self.config.lease_ms / 3);
                    let until = Instant::now() + Duration::from_millis(keep);
                    lock(&self.others).insert(shard, (holder.clone(), until));
                    return Ok(Owner::Other(holder));
                }
            }
        }
        Err(PgError::Unsettled { shard })
    }

    /// Forgets what this node believed about `shard`: after a write was fenced, or a
    /// forwarded request found the cached owner gone.
    pub fn forget(&self, shard: u32) {
        lock(&self.held).remove(&shard);
        lock(&self.others).remove(&shard);
    }

    /// The settlement lease (CLUSTER.md §9): the lease row of shard number `shards`, which
    /// no channel maps to; exactly one node holds it, and only that node runs the
    /// settlement worker.
    pub async fn settlement_lease(&self) -> Result<Option<Lease>, PgError> {
        match self.owner(u32::from(self.config.shards)).await? {
            Owner::Mine(lease) => Ok(Some(lease)),
            Owner::Other(_) => Ok(None),
        }
    }

    /// Queues keyed records for `channel` at `start..` under `lease`; the receiver resolves
    /// once they are committed (or refused). Commits leave in queue order, so records a
    /// caller queues in index order under the channel's lock commit in that order.
    pub fn enqueue(
        &self,
        lease: Lease,
        channel: ChannelId,
        start: u64,
        records: Vec<(u32, Vec<u8>)>,
    ) -> Result<oneshot::Receiver<Committed>, QueueFull> {
        self.queue.send(lease, channel, start, records)
    }

    /// Commits waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Gives up every lease at once (a clean shutdown), so other nodes take the shards over
    /// without waiting out `lease_ms`.
    pub async fn release_all(&self) {
        let leases: Vec<Lease> = lock(&self.held).drain().map(|(_, h)| h.lease).collect();
        for lease in leases {
            if let Err(e) = self.leasing.release(&lease).await {
                tracing::warn!(shard = lease.shard, error = %e, "releasing a lease failed");
            }
        }
    }

    /// Trusts `lease` until a tenth of its length before it expires, counted from `sent`
    /// (before the statement left), so the database's expiry is never earlier.
    fn trust(&self, lease: Lease, sent: Instant) {
        let ms = lease.lease_ms - lease.lease_ms / 10;
        let trusted_until = sent + Duration::from_millis(ms);
        lock(&self.held).insert(
            lease.shard,
            Held {
                lease,
                trusted_until,
            },
        );
    }

    /// Renews every held lease once; a lease the database no longer gives this node is
    /// forgotten (its channels reload, or are forwarded, on next use).
    async fn renew_all(&self) {
        let leases: Vec<Lease> = lock(&self.held).values().map(|h| h.lease.clone()).collect();
        for lease in leases {
            let sent = Instant::now();
            match self.leasing.renew(&lease).await {
                Ok(renewed) => self.trust(renewed, sent),
                Err(PgError::Fenced { .. }) => {
                    tracing::warn!(
                        shard = lease.shard,
                        epoch = lease.epoch,
                        "lost a shard lease"
                    );
                    let mut held = lock(&self.held);
                    if held
                        .get(&lease.shard)
                        .is_some_and(|h| h.lease.epoch == lease.epoch)
                    {
                        held.remove(&lease.shard);
                    }
                }
                // The database is unreachable: the lease lapses locally when its trust ends.
                Err(e) => {
                    tracing::warn!(shard = lease.shard, error = %e, "renewing a lease failed")
                }
            }
        }
    }
}

/// Renews every third of `lease_ms` while the node lives.
async fn renew_loop(node: Weak<PgNode>) {
    let every = match node.upgrade() {
        Some(n) => Duration::from_millis((n.config.lease_ms / 3).max(1)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(node) = node.upgrade() else { return };
        node.renew_all().await;
    }
}
