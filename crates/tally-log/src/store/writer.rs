//! The single writer thread and its group commit.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};

use tally_core::hash::{Hash, TreeHasher};
use tally_core::ChannelId;
use tokio::sync::oneshot;

/// Where a job's answer goes.
type Reply = oneshot::Sender<Result<Range<u64>, LogError>>;

use super::layout::*;
use super::reader::{ChannelReader, Memories, Memory, Partial};
use super::{poisoned, Head, Heads, Poison};
use crate::error::LogError;
use crate::tile_cache::TileCache;
use crate::tree::Frontier;

pub(super) struct Job {
    pub(super) channel: ChannelId,
    /// Each record's data, and the key it updates in the keyed index, if any.
    pub(super) records: Vec<(Option<u32>, Vec<u8>)>,
    /// The index the first record must get, if the caller built the records for it: the
    /// writer refuses the job (writing nothing) when the log has another size.
    pub(super) expected_start: Option<u64>,
    pub(super) reply: Reply,
}

/// The writer's view of a channel's right edge: the frontier and the incomplete block.
pub(super) struct Tip {
    pub(super) frontier: Frontier,
    pub(super) partial: Partial,
}

pub(super) struct Writer<H: TreeHasher> {
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
    pub(super) hasher: H,
    pub(super) heads: Heads,
    pub(super) memories: Memories,
    pub(super) tiles: Arc<TileCache>,
    pub(super) tips: HashMap<ChannelId, Tip>,
    pub(super) max_group: usize,
    /// Set when a group commit failed: what is on disk is then unknown until the store is
    /// reopened (and checked), so no further write is accepted.
    pub(super) poisoned: Poison,
    /// sled's data file, synced after each flush (see [`StoreConfig::sync_data`]).
    pub(super) data_file: Option<Arc<std::fs::File>>,
    /// What is queued and not yet answered ([`super::LogStore::pending`]).
    pub(super) pending: Arc<PendingQueue>,
}

impl<H: TreeHasher> Writer<H> {
    pub(super) fn run(mut self, jobs: Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut group = vec![first];
            let mut count = group[0].records.len();
            while count < self.max_group {
                match jobs.try_recv() {
                    Ok(job) => {
                        count += job.records.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
    }

    /// The tip of `channel`, loaded from the durable state if the writer has none.
    pub(super) fn tip(&mut self, channel: &ChannelId) -> Result<&mut Tip, LogError> {
        if !self.tips.contains_key(channel) {
            let size = self
                .heads
                .read()
                .ok()
                .and_then(|h| h.get(channel).map(|h| h.size))
                .unwrap_or(0);
            let memory = self
                .memories
                .read()
                .ok()
                .and_then(|m| m.get(channel).cloned());
            let partial = match &memory {
                Some(m) => m
                    .partial
                    .read()
                    .map(|p| (**p).clone())
                    .map_err(|_| LogError::WriterStopped)?,
                None => Partial::new(0),
            };
            let reader = ChannelReader::new(&self.tree, channel, memory);
            let frontier = Frontier::load(&reader, size)?;
            self.tips.insert(*channel, Tip { frontier, partial });
        }
        self.tips.get_mut(channel).ok_or(LogError::WriterStopped)
    }

    pub(super) fn poison(&self, reason: &str) {
        if let Ok(mut p) = self.poisoned.write() {
            p.get_or_insert_with(|| reason.to_string());
        }
    }

    /// One group commit: one batch, one flush, then the replies; the group leaves the
    /// pending report before its tickets resolve.
    pub(super) fn commit(&mut self, group: Vec<Job>) {
        let jobs = group.len();
        let replies = self.commit_group(group);
        self.pending.pop(jobs);
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
    }

    /// The group commit itself; returns each job's answer, sent by [`commit`](Self::commit).
    fn commit_group(&mut self, group: Vec<Job>) -> Vec<(Reply, Result<Range<u64>, LogError>)> {
        if let Some(reason) = poisoned(&self.poisoned) {
            return group
                .into_iter()
                .map(|job| (job.reply, Err(LogError::CommitFailed(reason.clone()))))
                .collect();
        }
        let mut batch = sled::Batch::default();
        let mut replies = Vec::with_capacity(group.len());
        let mut touched: HashMap<ChannelId, Head> = HashMap::new();
        let mut new_upper: Vec<(ChannelId, u8, u64, Hash)> = Vec::new();
        let mut new_tiles: Vec<(ChannelId, u64, sled::IVec)> = Vec::new();
        let mut failed: Option<String> = None;
        let hasher = self.hasher.clone();
        for job in group {
            let channel = job.channel;
            let tip = match self.tip(&channel) {
                Ok(tip) => tip,
                Err(e) => {
                    failed.get_or_insert(e.to_string());
                    replies.push((job.reply, Err(LogError::WriterStopped)));
                    continue;
                }
            };
            let start = tip.frontier.size();
            if job.expected_start.is_some_and(|e| e != start) {
                let expected = job.expected_start.unwrap_or_default();
                replies.push((
                    job.reply,
                    Err(LogError::WrongPosition {
                        expected,
                        size: start,
                    }),
                ));
                continue;
            }
            for (key, record) in &job.records {
                let index = tip.frontier.size();
                if let Some(key) = key {
                    batch.insert(
                        keyed_key(&channel, *key).to_vec(),
                        index.to_be_bytes().to_vec(),
                    );
                }
                for (level, k, hash) in tip.frontier.push_record(&hasher, record) {
                    if level < TILE_HEIGHT {
                        tip.partial.levels[level as usize].push(hash);
                    } else {
                        batch.insert(upper_key(&channel, level, k).to_vec(), hash.0.to_vec());
                        new_upper.push((channel, level, k, hash));
                    }
                }
                batch.insert(entry_key(&channel, index).to_vec(), record.as_slice());
                if index % BLOCK == BLOCK - 1 {
                    let tile = sled::IVec::from(tip.partial.tile_bytes());
                    batch.insert(tile_key(&channel, index / BLOCK).to_vec(), tile.clone());
                    new_tiles.push((channel, index / BLOCK, tile));
                    tip.partial = Partial::new(index / BLOCK + 1);
                }
            }
            let head = Head {
                size: tip.frontier.size(),
                root: tip.frontier.root(&hasher),
            };
            if !job.records.is_empty() {
                touched.insert(channel, head);
            }
            replies.push((job.reply, Ok(start..head.size)));
        }
        for (channel, head) in &touched {
            batch.insert(head_key(channel).to_vec(), encode_head(head).to_vec());
        }
        let outcome = match failed {
            // A channel's tip could not be loaded: what the store holds is in doubt, so no
            // write is accepted until it is reopened and checked (a caller that promised
            // a record of this group learns of it only through the poison).
            Some(e) => {
                let reason = format!("group commit failed ({e}); reopen the store");
                self.poison(&reason);
                Err(reason)
            }
            None if touched.is_empty() => Ok(()),
            // sled 0.34 applies a batch key by key in memory, so a failed apply may leave a
            // prefix of it that a later flush persists; a failed flush leaves it unknown what
            // reached the disk. Either way the writer stops until the store is reopened.
            None => self
                .tree
                .apply_batch(batch)
                .and_then(|()| self.db.flush().map(|_| ()))
                .and_then(|()| match &self.data_file {
                    Some(f) => f.sync_data().map_err(sled::Error::from),
                    None => Ok(()),
                })
                .map_err(|e| {
                    let reason = format!("group commit failed ({e}); reopen the store");
                    self.poison(&reason);
                    reason
                }),
        };
        match outcome {
            Ok(()) => {
                for (channel, block, tile) in new_tiles {
                    self.tiles.insert(channel, block, tile);
                }
                self.publish(&touched, new_upper);
                if let Ok(mut heads) = self.heads.write() {
                    heads.extend(touched);
                }
                replies
            }
            Err(e) => {
                // Whether any of this group reached the disk is unknown; reopening decides.
                // Forget the advanced tips so nothing builds on them.
                for channel in touched.keys() {
                    self.tips.remove(channel);
                }
                replies
                    .into_iter()
                    .map(|(reply, _)| (reply, Err(LogError::CommitFailed(e.clone()))))
                    .collect()
            }
        }
    }

    /// Makes a durable group's in-memory hashes visible to readers: each touched channel's
    /// incomplete block, and the new upper-level hashes of channels whose upper levels are
    /// loaded (a cache that would fall out of order is dropped and reloads).
    pub(super) fn publish(
        &self,
        touched: &HashMap<ChannelId, Head>,
        new_upper: Vec<(ChannelId, u8, u64, Hash)>,
    ) {
        let mut targets: HashMap<ChannelId, Arc<Memory>> = HashMap::new();
        if let Ok(mut memories) = self.memories.write() {
            for channel in touched.keys() {
                let Some(tip) = self.tips.get(channel) else {
                    continue;
                };
                let partial = Arc::new(tip.partial.clone());
                let memory = memories.entry(*channel).or_insert_with(|| {
                    Arc::new(Memory {
                        partial: RwLock::new(partial.clone()),
                        upper: RwLock::new(None),
                    })
                });
                if let Ok(mut p) = memory.partial.write() {
                    *p = partial;
                }
                targets.insert(*channel, memory.clone());
            }
        }
        for (channel, level, k, hash) in new_upper {
            let Some(memory) = targets.get(&channel) else {
                continue;
            };
            let Ok(mut upper) = memory.upper.write() else {
                continue;
            };
            let Some(levels) = upper.as_mut() else {
                continue;
            };
            if !self.extend_level(&channel, levels, level, k, hash) {
                // Something disagrees with sled; let the next reader load afresh.
                *upper = None;
            }
        }
    }

    /// Puts the durable hash `(level, k)` into a loaded upper cache. A cache loaded behind the
    /// writer is brought up to date from sled (every hash below `k` is durable); one loaded
    /// ahead must already hold the same hash. Returns false if the cache cannot be trusted.
    pub(super) fn extend_level(
        &self,
        channel: &ChannelId,
        levels: &mut Vec<Vec<Hash>>,
        level: u8,
        k: u64,
        hash: Hash,
    ) -> bool {
        let j = (level - TILE_HEIGHT) as usize;
        while levels.len() <= j {
            levels.push(Vec::new());
        }
        let l = &mut levels[j];
        if (l.len() as u64) > k {
            return usize::try_from(k).ok().and_then(|i| l.get(i)) == Some(&hash);
        }
        let reader = ChannelReader::new(&self.tree, channel, None);
        while (l.len() as u64) < k {
            match reader.upper_hash(level, l.len() as u64) {
                Ok(h) => l.push(h),
                Err(_) => return false,
            }
        }
        l.push(hash);
        true
    }
}

/// The jobs queued and not yet answered, oldest first, with their record counts: what
/// [`super::LogStore::pending`] reports (issue 11: the durable head and what is still pending
/// are reported apart).
#[derive(Debug, Default)]
pub(super) struct PendingQueue {
    inner: std::sync::Mutex<(std::collections::VecDeque<(std::time::Instant, u64)>, u64)>,
}

impl PendingQueue {
    /// Runs `send` and, if it queued the job, notes it; under one lock so the notes keep the
    /// queue's order.
    pub(super) fn push<T>(
        &self,
        records: u64,
        send: impl FnOnce() -> Result<(), T>,
    ) -> Result<(), T> {
        let Ok(mut q) = self.inner.lock() else {
            return send();
        };
        send()?;
        q.0.push_back((std::time::Instant::now(), records));
        q.1 += records;
        Ok(())
    }

    /// Forgets the `jobs` oldest jobs (answered).
    pub(super) fn pop(&self, jobs: usize) {
        if let Ok(mut q) = self.inner.lock() {
            for _ in 0..jobs {
                match q.0.pop_front() {
                    Some((_, n)) => q.1 -= n,
                    None => break,
                }
            }
        }
    }

    /// Records queued, and the age of the oldest queued job.
    pub(super) fn report(&self) -> (u64, Option<std::time::Duration>) {
        match self.inner.lock() {
            Ok(q) => (q.1, q.0.front().map(|(t, _)| t.elapsed())),
            Err(_) => (0, None),
        }
    }
}
