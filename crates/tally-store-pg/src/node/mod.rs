//! One gateway node in cluster mode (spec/CLUSTER.md §3, §7, §8): its leases, kept renewed,
//! and its ordered commit queues. The gateway asks [`PgNode::owner`] who owns a channel's shard
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
use tokio_postgres::error::SqlState;

pub use writer::{Committed, QueueFull};

use crate::{shard_of, ChannelId, Holder, Lease, Limits, PgError, PgStore, Target};

/// How a node joins the cluster.
#[derive(Clone)]
pub struct NodeConfig {
    /// The database and its password.
    pub target: Target,
    /// Shards (CLUSTER.md §3), the same on every node.
    pub shards: u16,
    /// Lease length, ms; renewed every third of it.
    pub lease_ms: u64,
    /// This node's base URL as the other nodes reach it.
    pub node_url: String,
}

/// Commit connections per node. Each channel always commits through the same one (its
/// records stay in order); different channels commit in parallel, so PostgreSQL's own group
/// commit of the WAL batches their flushes.
const COMMIT_CONNECTIONS: usize = 4;
/// Read (and side-state) connections per node, used in turn: one would serialize every
/// channel's reads behind each other.
const READ_CONNECTIONS: usize = 4;

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
    /// Reads and the side state, used in turn.
    stores: Vec<PgStore>,
    next_store: std::sync::atomic::AtomicUsize,
    /// Lease lookups and acquisitions, on a connection of their own.
    leasing: PgStore,
    /// Renewals, on a connection of their own: an acquisition that waits for a lock never
    /// delays them.
    renewing: PgStore,
    held: HeldMap,
    /// Other nodes' leases, trusted for a moment, to spare a query per forwarded request.
    others: Mutex<HashMap<u32, (Holder, Instant)>>,
    /// One commit queue per commit connection.
    queues: Vec<writer::Queue>,
    /// Queued appends per channel, over all queues.
    in_queue: writer::InQueue,
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
        let (lease, t, shards) = (config.lease_ms, &config.target, config.shards);
        // No statement, lock wait or open transaction of this node may outlast a fraction of
        // a lease: a paused or cut-off node must not hold rows other nodes need.
        let reads = Limits {
            statement_ms: lease.max(1000),
            lock_ms: (lease / 2).max(100),
            idle_in_transaction_ms: (lease / 2).max(100),
        };
        // A lookup that would wait for a lock gives up quickly (the row is changing hands);
        // a renewal waits longer: this node's own commits hold its lease rows in share mode
        // for a moment each.
        let leases = Limits {
            statement_ms: (lease / 3).max(100),
            lock_ms: (lease / 10).max(50),
            idle_in_transaction_ms: (lease / 3).max(100),
        };
        let renewals = Limits {
            lock_ms: (lease / 4).max(50),
            ..leases
        };
        let mut stores = Vec::with_capacity(READ_CONNECTIONS);
        for _ in 0..READ_CONNECTIONS {
            stores.push(PgStore::connect_to(t, shards, reads).await?);
        }
        let store = &stores[0];
        store.init().await?;
        let leasing = PgStore::connect_to(t, shards, leases).await?;
        let renewing = PgStore::connect_to(t, shards, renewals).await?;
        let mut writes = Vec::with_capacity(COMMIT_CONNECTIONS);
        for _ in 0..COMMIT_CONNECTIONS {
            writes.push(PgStore::connect_to(t, shards, reads).await?);
        }
        let host = config
            .node_url
            .split("://")
            .nth(1)
            .unwrap_or(&config.node_url)
            .trim_end_matches('/');
        let id = format!("{host}-{:016x}", rand::random::<u64>());
        store.register_member(&id, &config.node_url).await?;
        let held: HeldMap = Arc::default();
        let in_queue: writer::InQueue = Arc::default();
        let queues = writes
            .into_iter()
            .map(|w| writer::spawn(w, held.clone(), in_queue.clone()))
            .collect();
        let node = Arc::new(PgNode {
            id,
            config,
            stores,
            next_store: std::sync::atomic::AtomicUsize::new(0),
            leasing,
            renewing,
            held,
            others: Mutex::default(),
            queues,
            in_queue,
        });
        tokio::spawn(renew_loop(Arc::downgrade(&node)));
        Ok(node)
    }

    /// This process's node id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A store for reads and the side state (the node's read connections in turn).
    pub fn store(&self) -> &PgStore {
        let k = self
            .next_store
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.stores[k % self.stores.len()]
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

    /// Who owns `shard`, without taking it: this node's trusted lease, or another node's live
    /// one (read without locking its row, cached for up to a third of `lease_ms`); `None` when
    /// the shard is free, expired, or this node's own but no longer trusted. Routing asks
    /// this, so a stranger's request for a random channel never makes the node take a shard
    /// (the gateway takes it only for a channel it has checked, [`PgNode::owner`]).
    pub async fn peek(&self, shard: u32) -> Result<Option<Owner>, PgError> {
        if let Some(lease) = self.held(shard) {
            return Ok(Some(Owner::Mine(lease)));
        }
        if let Some((holder, until)) = lock(&self.others).get(&shard) {
            if *until > Instant::now() {
                return Ok(Some(Owner::Other(holder.clone())));
            }
        }
        // On a read connection: a stranger's requests for many shards must not queue before
        // this node's acquisitions and takeovers on the leasing connection.
        match self.store().holder(shard).await? {
            Some(holder) if holder.expires_in_ms > 0 && holder.node != self.id => {
                let keep = holder.expires_in_ms.min(self.config.lease_ms / 3);
                let until = Instant::now() + Duration::from_millis(keep);
                lock(&self.others).insert(shard, (holder.clone(), until));
                Ok(Some(Owner::Other(holder)))
            }
            _ => Ok(None),
        }
    }

    /// Who owns `shard`, taking it if it is free or expired (epoch + 1) or extending this
    /// node's own live lease (same epoch). The holder is read first, without locks: a live
    /// lease of another node is answered without touching its row (an acquisition would wait
    /// behind the owner's commits, which hold the row in share mode).
    pub async fn owner(&self, shard: u32) -> Result<Owner, PgError> {
        // A lease that changes hands between the statements is looked up again.
        for _ in 0..3 {
            if let Some(owner) = self.peek(shard).await? {
                return Ok(owner);
            }
            let sent = Instant::now();
            match self
                .leasing
                .acquire(shard, &self.id, self.config.lease_ms)
                .await
            {
                Ok(Some(lease)) => {
                    self.trust(lease.clone(), sent);
                    lock(&self.others).remove(&shard);
                    return Ok(Owner::Mine(lease));
                }
                Ok(None) => {}
                // A lock wait past `lock_timeout` (or the statement's own limit): the row is
                // busy changing hands.
                Err(PgError::Db(e))
                    if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
                        || e.code() == Some(&SqlState::QUERY_CANCELED) =>
                {
                    return Err(PgError::Unsettled { shard });
                }
                Err(e) => return Err(e),
            }
        }
        Err(PgError::Unsettled { shard })
    }

    /// Forgets which other node owns `shard` (a forward could not reach it, or it answered
    /// that it no longer owns the shard); the next lookup asks the database. This node's own
    /// leases are untouched: only the database says those are gone.
    pub fn forget(&self, shard: u32) {
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
        // Bytes 2..4 of the id pick the queue (0..2 pick the shard): spread within a shard.
        let pick = usize::from(u16::from_be_bytes([channel.0[2], channel.0[3]]));
        let queue = self
            .queues
            .get(pick % self.queues.len().max(1))
            .ok_or(QueueFull)?;
        queue.send(lease, channel, start, records)
    }

    /// Appends of `channel` queued and not yet resolved (committed or refused). A channel's
    /// state is loaded from the database only at 0: a queued append may still commit after
    /// the read.
    pub fn queued_for(&self, channel: &ChannelId) -> usize {
        lock(&self.in_queue)
            .queued
            .get(channel)
            .copied()
            .unwrap_or(0)
    }

    /// Whether a commit of `channel` failed since the last call (and forgets it): records
    /// promised before the failure may be lost, so a state loaded now must not trust a
    /// promise mark of its own (spec/CLUSTER.md §8). Noted before the failed appends leave
    /// the queue count, so a caller that saw [`queued_for`](Self::queued_for) reach 0 sees
    /// it.
    pub fn take_failure(&self, channel: &ChannelId) -> bool {
        lock(&self.in_queue).failed.remove(channel)
    }

    /// Commits waiting in the queues.
    pub fn queued(&self) -> usize {
        self.queues.iter().map(writer::Queue::len).sum()
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
            match self.renewing.renew(&lease).await {
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
