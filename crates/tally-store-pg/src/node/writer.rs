//! The node's commit queue: one task on one connection commits queued appends in the order
//! they were queued (spec/CLUSTER.md §4). A gateway queues a channel's records under the
//! channel's lock, in index order, and may queue the next before the previous committed
//! (lanes, promise mode); committing in queue order keeps each one's expected head right.
//! Consecutive appends of one channel under one lease go in one transaction.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::{lock, HeldMap};
use crate::{ChannelId, Lease, PgError, PgStore};

/// Most appends waiting at once; beyond, [`QueueFull`] (nothing queued).
const CAPACITY: usize = 8192;
/// Most records in one transaction.
const MAX_BATCH: usize = 256;

/// What became of a queued append: its range once committed, or why not. A failure is
/// shared by every append of the failed transaction. After [`PgError::Db`] whether it
/// committed is unknown: re-read the head (CLUSTER.md §4).
pub type Committed = Result<Range<u64>, Arc<PgError>>;

/// The queue was full: nothing was queued.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the commit queue is full")]
pub struct QueueFull;

struct Job {
    lease: Lease,
    channel: ChannelId,
    start: u64,
    records: Vec<(u32, Vec<u8>)>,
    done: oneshot::Sender<Committed>,
}

/// Appends queued and not yet resolved, per channel: a channel's state must not be loaded
/// from the database while some are (they may still commit after the read). Channels whose
/// commit failed are noted in `failed` *before* their count drops, so whoever waits for the
/// count to reach 0 also learns of the failure (records promised before it may be lost).
#[derive(Default)]
pub(super) struct Counts {
    pub(super) queued: HashMap<ChannelId, usize>,
    pub(super) failed: std::collections::HashSet<ChannelId>,
}

pub(super) type InQueue = Arc<Mutex<Counts>>;

/// The sending side, held by the node.
pub(super) struct Queue {
    tx: mpsc::Sender<Job>,
    len: Arc<AtomicUsize>,
    in_queue: InQueue,
}

impl Queue {
    pub(super) fn send(
        &self,
        lease: Lease,
        channel: ChannelId,
        start: u64,
        records: Vec<(u32, Vec<u8>)>,
    ) -> Result<oneshot::Receiver<Committed>, QueueFull> {
        let (done, rx) = oneshot::channel();
        let job = Job {
            lease,
            channel,
            start,
            records,
            done,
        };
        // Counted before the send, so the writer's decrement can never come first.
        self.len.fetch_add(1, Ordering::Relaxed);
        count(&self.in_queue, &channel, true);
        if self.tx.try_send(job).is_err() {
            self.len.fetch_sub(1, Ordering::Relaxed);
            count(&self.in_queue, &channel, false);
            return Err(QueueFull);
        }
        Ok(rx)
    }

    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// One more (`up`) or one fewer queued append of `channel`.
fn count(in_queue: &InQueue, channel: &ChannelId, up: bool) {
    let mut counts = lock(in_queue);
    let map = &mut counts.queued;
    if up {
        *map.entry(*channel).or_default() += 1;
    } else if let Some(n) = map.get_mut(channel) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(channel);
        }
    }
}

/// Starts the writer on `writes`; it ends when the queue's sender is dropped.
pub(super) fn spawn(writes: PgStore, held: HeldMap, in_queue: InQueue) -> Queue {
    let (tx, rx) = mpsc::channel(CAPACITY);
    let len = Arc::new(AtomicUsize::new(0));
    let shared = Shared {
        held,
        in_queue: in_queue.clone(),
        len: len.clone(),
    };
    tokio::spawn(run(writes, shared, rx));
    Queue { tx, len, in_queue }
}

/// What the writer shares with the node.
struct Shared {
    held: HeldMap,
    in_queue: InQueue,
    len: Arc<AtomicUsize>,
}

async fn run(writes: PgStore, shared: Shared, mut rx: mpsc::Receiver<Job>) {
    let mut next: Option<Job> = None;
    loop {
        let first = match next.take() {
            Some(job) => job,
            None => match rx.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let mut batch = vec![first];
        let mut count = batch[0].records.len();
        // Take what is already waiting while it extends this batch: same channel and lease,
        // the next index.
        while count < MAX_BATCH {
            let Ok(job) = rx.try_recv() else { break };
            let last = &batch[batch.len() - 1];
            if extends(last, &job) {
                count += job.records.len();
                batch.push(job);
            } else {
                next = Some(job);
                break;
            }
        }
        shared.len.fetch_sub(batch.len(), Ordering::Relaxed);
        commit(&writes, &shared, batch).await;
    }
}

/// Whether `job` continues `last` in one transaction.
fn extends(last: &Job, job: &Job) -> bool {
    job.channel == last.channel
        && job.lease == last.lease
        && job.start == last.start + last.records.len() as u64
}

async fn commit(writes: &PgStore, shared: &Shared, batch: Vec<Job>) {
    let lease = batch[0].lease.clone();
    let channel = batch[0].channel;
    let start = batch[0].start;
    let records: Vec<(u32, Vec<u8>)> = batch
        .iter()
        .flat_map(|j| j.records.iter().cloned())
        .collect();
    match writes.append_keyed(&lease, &channel, start, &records).await {
        Ok(_) => {
            for job in batch {
                let n = job.records.len() as u64;
                count(&shared.in_queue, &channel, false);
                let _gone = job.done.send(Ok(job.start..job.start + n));
            }
        }
        Err(e) => {
            if matches!(e, PgError::Fenced { .. }) {
                let mut held = lock(&shared.held);
                if held
                    .get(&lease.shard)
                    .is_some_and(|h| h.lease.epoch == lease.epoch)
                {
                    held.remove(&lease.shard);
                }
            }
            let e = Arc::new(e);
            lock(&shared.in_queue).failed.insert(channel);
            for job in batch {
                count(&shared.in_queue, &channel, false);
                let _gone = job.done.send(Err(e.clone()));
            }
        }
    }
}
